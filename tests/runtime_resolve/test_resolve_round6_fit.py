"""LoRA fit, round 6: namings and layers the key mapping did not know.

- Z-Image LoRAs in diffusers names (ai-toolkit ``diffusion_model.layers.N.attention.to_q``,
  ``transformer.``, SimpleTuner ``lycoris_`` LoKr) on the ComfyUI single file (fused
  ``attention.qkv``, ``attention.out``), as ComfyUI's ``z_image_to_diffusers`` pairs them; Lumina 2
  diffusers LoRAs (``attn.to_k`` 768 rows: fewer K/V heads) on its original file.
- A text-encoder-only LoRA on a UNet-/transformer-only file is not checked there: a warning.
- A LoRA for blocks a checkpoint does not have (HunyuanVideo's 20 + 40 blocks in ComfyUI's names
  on Flux.1's 19 + 38) is rejected; on HunyuanVideo's own file those names are aliases.
- Flux.1 LoRAs on Chroma: Flux.1's modulation layers, which Chroma removed, do not count.
- A Wan I2V LoRA on a T2V model: its unmapped keys are the image cross-attention T2V lacks.
- SD1 files whose CLIP keys lack ``text_model.``; wording of labels, embeddings and rejections.

Every file is a header-only safetensors (or GGUF) of a real layout.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import rr_layouts as L

from modelsafe.runtime.resolve import resolve, resolve_parts
from modelsafe.testing import write_safetensors
from modelsafe.testing.layouts import adapters as A
from modelsafe.testing.layouts import base_models as B
from modelsafe.testing.layouts import recent_models as R
from modelsafe.testing.layouts.base_models import Specs

NO_CATALOG = "sqlite:////nonexistent-dir/none.db"


def _w(folder: Path, name: str, specs: Specs, meta: dict[str, str] | None = None) -> str:
    return str(write_safetensors(folder / name, specs, meta, data="sparse"))


def _lora(result: Any, index: int = 0) -> Any:
    return [p for p in result.parts if p.role == "lora"][index]


def _reasons(part: Any) -> dict[str, str]:
    return {r.rule: f"{r.status}: {r.reason}" for r in part.reasons if r.rule != "download"}


# -- 1. Z-Image and Lumina 2 in diffusers names on the original single file -----------------------

_ZIMAGE_LAYERS = re.compile(
    r"^(?:layers|noise_refiner|context_refiner)\.\d+\.(?:attention\.(?:to_q|to_k|to_v|to_out\.0)"
    r"|feed_forward\.w[123]|adaLN_modulation\.0)$"
)
_ZIMAGE_ATTN = re.compile(r"^layers\.\d+\.attention\.(?:to_q|to_k|to_v|to_out\.0)$")


def test_zimage_diffusers_loras_land_on_the_comfy_single_file(tmp_path: Path) -> None:
    diffusers = B.diffusers_denoiser("z-image", "BF16")
    single = _w(tmp_path, "z_image_turbo_bf16.safetensors", B.z_image_original(diffusers))
    loras = [
        # ai-toolkit: every block list, attention + feed-forward + adaLN
        _w(
            tmp_path,
            "zit_aitoolkit.safetensors",
            A.peft_lora([("diffusion_model.", A.modules(diffusers, _ZIMAGE_LAYERS))]),
        ),
        # diffusers/PEFT: attention only, ``transformer.``
        _w(
            tmp_path,
            "zit_attn.safetensors",
            A.peft_lora([("transformer.", A.modules(diffusers, _ZIMAGE_ATTN))]),
        ),
        # SimpleTuner LyCORIS LoKr: ``lycoris_`` + flat diffusers names
        _w(
            tmp_path,
            "zit_lokr.safetensors",
            A.lokr([("lycoris_", A.modules(diffusers, _ZIMAGE_ATTN))]),
        ),
    ]
    result = resolve(single, loras=loras, catalog=NO_CATALOG)
    for i, expected in enumerate((540, 240, 480)):
        part = _lora(result, i)
        assert part.status == "accepted", _reasons(part)
        assert _reasons(part)["lora_keys"] == (
            f"accept: {expected} of {expected} LoRA keys map onto this transformer"
        ), _reasons(part)


def test_zimage_original_named_lora_lands_on_a_diffusers_file(tmp_path: Path) -> None:
    diffusers = B.diffusers_denoiser("z-image", "BF16")
    folder = tmp_path / "transformer"
    folder.mkdir()
    write_safetensors(folder / "diffusion_pytorch_model.safetensors", diffusers, data="sparse")
    (folder / "config.json").write_text(
        __import__("json").dumps(
            {"_class_name": "ZImageTransformer2DModel", **B.diffusers_config("z-image")}
        )
    )
    original = A.modules(
        B.z_image_original(diffusers),
        re.compile(r"^layers\.\d+\.attention\.(?:qkv|out)$"),
    )
    lora = _w(tmp_path, "zit_comfy.safetensors", A.peft_lora([("diffusion_model.", original)]))
    part = _lora(resolve(str(folder), loras=[lora], catalog=NO_CATALOG))
    assert _reasons(part)["lora_keys"] == "accept: 120 of 120 LoRA keys map onto this transformer"


def test_lumina2_diffusers_lora_lands_on_the_original_file_with_its_narrow_kv(
    tmp_path: Path,
) -> None:
    single = _w(tmp_path, "lumina_2.safetensors", R.lumina2("original"))
    attn = re.compile(r"^layers\.\d+\.attn\.(?:to_q|to_k|to_v|to_out\.0)$")
    mods = A.modules(R.lumina2("diffusers"), attn)
    assert ("layers.0.attn.to_k", (768, 2304)) in mods  # fewer K/V heads than queries
    lora = _w(tmp_path, "lumina_lora.safetensors", A.peft_lora([("transformer.", mods)]))
    part = _lora(resolve(single, loras=[lora], catalog=NO_CATALOG))
    keys = 2 * len(mods)
    assert _reasons(part)["lora_keys"] == (
        f"accept: {keys} of {keys} LoRA keys map onto this transformer"
    ), _reasons(part)


# -- 2. text-encoder-only LoRAs on a denoiser-only file ------------------------------------------


def test_text_encoder_only_lora_on_a_unet_only_file_is_a_warning(tmp_path: Path) -> None:
    unet = _w(tmp_path, "sdxl_unet.safetensors", B.ldm_unet(**B.UNET_PARAMS["sdxl"]))
    te = A.kohya_lora(
        [("lora_te1_", A.clip_modules(768, 12)), ("lora_te2_", A.clip_modules(1280, 32))]
    )
    lora = _w(tmp_path, "xl_te.safetensors", te, {"ss_base_model_version": "sdxl_base_v1-0"})
    part = _lora(resolve(unet, loras=[lora], catalog=NO_CATALOG))
    assert part.status == "accepted", _reasons(part)
    assert _reasons(part)["lora_keys"] == (
        "warn: its 792 keys all patch text encoder 1 (CLIP-L), text encoder 2 (CLIP-G), which "
        "this file does not contain: not checked here (they apply to the text encoder loaded "
        "beside it)"
    )


def test_clip_only_flux_lora_warns_alone_and_lands_on_the_encoder_beside(tmp_path: Path) -> None:
    flux = _w(tmp_path, "flux1-dev.safetensors", B.bfl_flux())
    clip = _w(tmp_path, "clip_l.safetensors", B.clip_text(768, 12))
    te = A.kohya_lora([("lora_te1_", A.clip_modules(768, 12))])
    lora = _w(tmp_path, "flux_clip.safetensors", te, {"ss_base_model_version": "flux1"})
    alone = _lora(resolve(flux, loras=[lora], catalog=NO_CATALOG))
    assert alone.status == "accepted", _reasons(alone)
    assert _reasons(alone)["lora_keys"].startswith("warn: its 216 keys all patch text encoder 1")
    beside = _lora(resolve(flux, loras=[lora], text_encoders=[clip], catalog=NO_CATALOG))
    assert (
        _reasons(beside)["lora_keys"] == "accept: 216 of 216 LoRA keys map onto the text encoders"
    )


def test_text_encoder_only_lora_on_a_gguf_transformer_is_a_warning(
    part_of: Any, tmp_path: Path
) -> None:
    import gguf
    import numpy as np

    path = tmp_path / "flux-q8.gguf"
    writer = gguf.GGUFWriter(str(path), "flux")
    for name, _dt, shape in L.flux_bfl(d=64, double=1, single=1):
        data = np.zeros(shape, dtype=np.float32)
        if len(shape) == 2 and shape[1] % 32 == 0:
            q = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(name, data.astype(np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    base = part_of(path, "checkpoint", "flux1", "transformer")
    lora_path = tmp_path / "clip.safetensors"
    write_safetensors(lora_path, A.kohya_lora([("lora_te1_", A.clip_modules(768, 12))]))
    part = resolve_parts(base, [part_of(lora_path, "lora", "flux1", "lora")]).parts[0]
    assert part.status == "accepted", _reasons(part)
    assert _reasons(part)["lora_keys"].startswith("warn: its 216 keys all patch"), _reasons(part)


# -- 3. blocks past the checkpoint's last --------------------------------------------------------

_HV_ORIGINAL = re.compile(
    r"^(?:double_blocks\.\d+\.(?:img|txt)_(?:attn_qkv|attn_proj|mlp\.fc1|mlp\.fc2|mod\.linear)"
    r"|single_blocks\.\d+\.(?:linear1|linear2|modulation\.linear))$"
)


def _comfy_hunyuan_name(name: str) -> str:
    """ComfyUI's names for HunyuanVideo's layers (its process_unet_state_dict renames)."""
    for old, new in (
        ("_attn_qkv", "_attn.qkv"),
        ("_attn_proj", "_attn.proj"),
        ("mlp.fc1", "mlp.0"),
        ("mlp.fc2", "mlp.2"),
        ("_mod.linear", "_mod.lin"),
        (".modulation.linear", ".modulation.lin"),
    ):
        name = name.replace(old, new)
    return name


def test_hunyuan_video_lora_in_comfy_names_is_rejected_on_flux1(tmp_path: Path) -> None:
    hv = R.hunyuan_video("original")
    mods = [(_comfy_hunyuan_name(n), s) for n, s in A.modules(hv, _HV_ORIGINAL)]
    lora = _w(tmp_path, "hv_comfy.safetensors", A.peft_lora([("diffusion_model.", mods)]))
    flux = _w(tmp_path, "flux1-dev.safetensors", B.bfl_flux())
    on_flux = _lora(resolve(flux, loras=[lora], catalog=NO_CATALOG))
    assert on_flux.status == "rejected", _reasons(on_flux)
    assert _reasons(on_flux)["lora_keys"] == (
        "reject: 608 of 640 LoRA keys map onto this transformer; 32 keys patch blocks past this "
        "checkpoint's last (double_blocks 19, single_blocks 38-39; the checkpoint has 19 "
        "double_blocks and 38 single_blocks): it was made for a deeper model"
    )
    on_hv = _lora(resolve(_w(tmp_path, "hv.safetensors", hv), loras=[lora], catalog=NO_CATALOG))
    assert on_hv.status == "accepted", _reasons(on_hv)
    assert _reasons(on_hv)["lora_keys"] == "accept: 640 of 640 LoRA keys map onto this transformer"


def test_kohya_lora_for_deeper_blocks_is_rejected_too(tmp_path: Path) -> None:
    """The flat kohya spelling: ``lora_unet_double_blocks_19_...``."""
    hv = R.hunyuan_video("original")
    mods = [(_comfy_hunyuan_name(n), s) for n, s in A.modules(hv, _HV_ORIGINAL)]
    lora = _w(tmp_path, "hv_kohya.safetensors", A.kohya_lora([("lora_unet_", mods)]))
    flux = _w(tmp_path, "flux1-dev.safetensors", B.bfl_flux())
    part = _lora(resolve(flux, loras=[lora], catalog=NO_CATALOG))
    assert part.status == "rejected", _reasons(part)
    assert "double_blocks 19, single_blocks 38-39" in _reasons(part)["lora_keys"]


def test_a_lora_of_the_family_on_a_pruned_model_of_it_is_a_warning(tmp_path: Path) -> None:
    """A full Flux.1-dev LoRA on a Flux.1 with fewer double blocks (Flux.1-Lite 8B keeps 8 of
    19; Flex.1 likewise): loaders apply the blocks it has, so it is no rejection."""
    lite = _w(tmp_path, "flux.1-lite-8B.safetensors", B.bfl_flux(depth=8))
    lora = _w(
        tmp_path,
        "flux_kohya.safetensors",
        A.kohya_lora([("lora_unet_", A.flux_modules("bfl"))]),
        {"ss_base_model_version": "flux1"},
    )
    part = _lora(resolve(lite, loras=[lora], catalog=NO_CATALOG))
    assert part.status == "accepted", _reasons(part)
    why = _reasons(part)["lora_keys"]
    assert why.startswith("warn: ") and "double_blocks 8-18" in why, why
    assert "a Flux.1 model with fewer blocks (a pruned one) skips them" in why


# -- 4. Flux.1 LoRAs on Chroma -------------------------------------------------------------------


def test_kohya_flux_lora_on_chroma_is_accepted_without_the_modulation_layers(
    tmp_path: Path,
) -> None:
    chroma = _w(tmp_path, "chroma.safetensors", B.bfl_flux(chroma=True))
    lora = _w(
        tmp_path,
        "flux_kohya.safetensors",
        A.kohya_lora([("lora_unet_", A.flux_modules("bfl"))]),
        {"ss_base_model_version": "flux1"},
    )
    part = _lora(resolve(chroma, loras=[lora], catalog=NO_CATALOG))
    assert part.status == "accepted", _reasons(part)
    reasons = _reasons(part)
    assert reasons["family"].startswith("warn: LoRA is for Flux.1; Chroma is derived from it")
    assert reasons["lora_keys"].startswith(
        "accept: 684 of 912 LoRA keys map onto this transformer; 228 keys patch Flux.1's "
        "modulation layers"
    ), reasons
    assert "which Chroma removed by design" in reasons["lora_keys"]


# -- 5. a Wan I2V LoRA on a T2V model ------------------------------------------------------------


def _wan_i2v(specs: Specs, dim: int = 5120) -> Specs:
    out: Specs = []
    for name, dtype, shape in specs:
        out.append((name, dtype, shape))
        m = re.match(r"blocks\.(\d+)\.cross_attn\.v\.bias$", name)
        if m:
            b = f"blocks.{m.group(1)}.cross_attn"
            out += [
                (f"{b}.k_img.weight", dtype, (dim, dim)),
                (f"{b}.v_img.weight", dtype, (dim, dim)),
            ]
    return out


def test_wan_i2v_lora_on_t2v_names_the_layers_t2v_lacks(tmp_path: Path) -> None:
    t2v = R.wan_transformer("t2v-14b")
    target = re.compile(
        r"blocks\.\d+\.(?:self_attn|cross_attn)\.(?:q|k|v|o|k_img|v_img)$|blocks\.\d+\.ffn\.[02]$"
    )
    lora = _w(
        tmp_path,
        "wan_i2v_lora.safetensors",
        A.peft_lora([("diffusion_model.", A.modules(_wan_i2v(t2v), target))]),
    )
    ckpt = _w(tmp_path, "wan2.2_t2v_low_noise_14B_fp16.safetensors", t2v)
    part = _lora(resolve(ckpt, loras=[lora], catalog=NO_CATALOG))
    reason = _reasons(part)["lora_keys"]
    assert reason == (
        "warn: 800 of 960 LoRA keys map onto this transformer; 160 keys patch layers this "
        "checkpoint does not have (e.g. blocks.0.cross_attn.k_img, blocks.0.cross_attn.v_img: "
        "an image-to-video model's image cross-attention): loaders skip them"
    ), reason


# -- 7. SD1 files whose CLIP lacks "text_model." -------------------------------------------------


def test_sd1_lora_text_encoder_keys_land_on_clip_without_text_model(tmp_path: Path) -> None:
    old = [
        (
            n.replace("cond_stage_model.transformer.text_model.", "cond_stage_model.transformer."),
            d,
            s,
        )
        for n, d, s in B.unet_checkpoint("sd1")
    ]
    assert any(n.startswith("cond_stage_model.transformer.encoder.") for n, _, _ in old)
    ckpt = _w(tmp_path, "sd1_old_te_names.safetensors", old)
    lora = _w(
        tmp_path,
        "sd1_lora.safetensors",
        A.kohya_lora([("lora_unet_", A.sd1_unet_modules()), ("lora_te_", A.clip_modules())]),
        {"ss_base_model_version": "sd_v1"},
    )
    part = _lora(resolve(ckpt, loras=[lora], catalog=NO_CATALOG))
    assert _reasons(part)["lora_keys"] == "accept: 792 of 792 LoRA keys map onto this UNet"


# -- 8. wording ----------------------------------------------------------------------------------


def test_comfy_named_clip_g_keys_are_labelled_like_kohya_ones(tmp_path: Path) -> None:
    sd1 = _w(tmp_path, "sd1.safetensors", L.sd1_checkpoint())
    clip_g = [(f"text_model.{m}", s) for m, s in A.clip_modules(1280, 2)]
    comfy = _w(
        tmp_path,
        "comfy_g.safetensors",
        A.peft_lora([("text_encoders.clip_g.transformer.", clip_g)])
        + A.peft_lora([("diffusion_model.", [("input_blocks.1.1.proj_in", (320, 320, 1, 1))])]),
    )
    part = _lora(resolve(sd1, loras=[comfy], catalog=NO_CATALOG))
    assert "patch text encoder 2 (CLIP-G), which SD1 does not have" in _reasons(part)["lora_keys"]


def test_sdxl_embedding_on_sd2_says_it_holds_clip_l_and_clip_g(tmp_path: Path) -> None:
    sd2 = _w(tmp_path, "sd2.safetensors", B.unet_checkpoint("sd2"))
    emb = _w(tmp_path, "xl_emb.safetensors", A.embedding("sdxl"))
    result = resolve(sd2, embeddings=[emb], catalog=NO_CATALOG)
    part = next(p for p in result.parts if p.role == "embedding")
    reason = _reasons(part)["embedding_width"]
    assert reason.startswith("reject: this embedding holds one vector per text encoder"), reason
    assert "(clip_l 768 + clip_g 1280)" in reason and "none fits SD2's" in reason


def test_a_rejection_names_keys_with_no_layer(tmp_path: Path) -> None:
    sd1 = _w(tmp_path, "sd1.safetensors", L.sd1_checkpoint())
    ghosts = [(f"ghost_blocks.{i}.attn.to_q", (320, 320)) for i in range(40)]
    real = [("input_blocks.1.1.proj_in", (320, 320, 1, 1))]
    lora = _w(tmp_path, "ghost.safetensors", A.peft_lora([("diffusion_model.", ghosts + real)]))
    part = _lora(resolve(sd1, loras=[lora], catalog=NO_CATALOG))
    assert part.status == "rejected", _reasons(part)
    assert _reasons(part)["lora_keys"].endswith(
        "; no layer here for ghost_blocks.0.attn.to_q, ghost_blocks.1.attn.to_q"
    ), _reasons(part)
