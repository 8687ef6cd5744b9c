"""Files that look like a known family but are another model, and odd forms of known ones.

A confident wrong family is the worst answer `inspect` can give, so each model here that shares
block names with a family modelsafe knows (HunyuanVideo and FLUX.2 with Flux.1, LTX-Video with a
UNet's attn2 widths, Kolors with SDXL) must come out `unknown`, unless its width tells which
(Lumina 2 has Z-Image's names at its own width); the odd forms of known families (BFL control
LoRAs, Stability control-LoRAs, Playground v2.5, XLabs and attention-only Qwen-Image LoRAs) must
be named.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelsafe.registry.inspect import inspect_path
from modelsafe.testing import write_safetensors
from modelsafe.testing.layouts import base_models

Spec = tuple[str, str, tuple[int, ...]]
Module = tuple[str, tuple[int, int]]


def _kohya(mods: list[Module], rank: int = 16) -> list[Spec]:
    specs: list[Spec] = []
    for module, (out, inn) in mods:
        name = "lora_unet_" + module.replace(".", "_")
        specs += [(f"{name}.lora_down.weight", "BF16", (rank, inn))]
        specs += [(f"{name}.lora_up.weight", "BF16", (out, rank)), (f"{name}.alpha", "BF16", ())]
    return specs


def _peft(mods: list[Module], prefix: str, rank: int = 16) -> list[Spec]:
    specs: list[Spec] = []
    for module, (out, inn) in mods:
        specs += [(f"{prefix}{module}.lora_A.weight", "BF16", (rank, inn))]
        specs += [(f"{prefix}{module}.lora_B.weight", "BF16", (out, rank))]
    return specs


def _inspect(
    tmp_path: Path, name: str, specs: list[Any], meta: dict[str, str] | None = None
) -> Any:
    return inspect_path(write_safetensors(tmp_path / f"{name}.safetensors", specs, meta))


def _evidence(report: Any) -> str:
    return " | ".join(report.evidence)


def _hunyuan_video(h: int = 3072) -> list[Module]:
    mods: list[Module] = []
    for i in range(20):
        for s in ("img", "txt"):
            mods += [(f"double_blocks.{i}.{s}_attn_qkv", (3 * h, h))]
            mods += [(f"double_blocks.{i}.{s}_mlp.fc1", (4 * h, h))]
            mods += [(f"double_blocks.{i}.{s}_mod.linear", (6 * h, h))]
    for i in range(40):
        mods += [
            (f"single_blocks.{i}.linear1", (7 * h, h)),
            (f"single_blocks.{i}.linear2", (h, 5 * h)),
        ]
    return mods


def _flux2(h: int, double: int, single: int) -> list[Module]:
    mods: list[Module] = []
    for i in range(double):
        for s in ("img", "txt"):
            mods += [(f"double_blocks.{i}.{s}_attn.qkv", (3 * h, h))]
            mods += [(f"double_blocks.{i}.{s}_mlp.0", (6 * h, h))]
    for i in range(single):
        mods += [
            (f"single_blocks.{i}.linear1", (9 * h, h)),
            (f"single_blocks.{i}.linear2", (h, 4 * h)),
        ]
    return mods


def test_flux_shaped_loras_of_other_models_are_not_flux1(tmp_path: Path) -> None:
    # HunyuanVideo in Tencent's names (musubi-tuner, kohya, ComfyUI): its own layer names
    for name, specs in (
        ("hunyuan-kohya", _kohya(_hunyuan_video())),
        ("hunyuan-comfy", _peft(_hunyuan_video(), "diffusion_model.")),
    ):
        report = _inspect(tmp_path, name, specs)
        assert (report.family, report.kind) == ("hunyuan-video", "lora"), (name, report.evidence)
        assert "the HunyuanVideo lineage's layer names" in _evidence(report)
        assert "model width 3072 = HunyuanVideo" in _evidence(report)
    wider = _inspect(tmp_path, "hunyuanimage", _kohya(_hunyuan_video(3584)))
    assert wider.family == "hunyuanimage2.1", wider.evidence
    for name, specs, why in (
        ("flux2-klein", _peft(_flux2(3072, 5, 20), "diffusion_model."), "FLUX.2 [klein] 4B"),
        ("flux2-dev", _peft(_flux2(6144, 8, 48), "diffusion_model."), "FLUX.2 [dev]"),
    ):
        report = _inspect(tmp_path, name, specs)
        assert (report.family, report.kind) == ("flux2", "lora"), (name, report.evidence)
        assert why in _evidence(report), (name, report.evidence)
    few = _kohya([(m, s) for m, s in _hunyuan_video() if ".0." in m and "mlp" in m])
    report = _inspect(tmp_path, "hunyuan-first-block", few)
    assert report.family == "unknown" and "HunyuanVideo's layer names" in _evidence(report)


def test_real_flux1_loras_still_are(tmp_path: Path) -> None:
    flux: list[Module] = []
    for i in range(19):
        flux += [(f"double_blocks.{i}.img_attn.qkv", (9216, 3072))]
        flux += [(f"double_blocks.{i}.img_mlp.0", (12288, 3072))]
    flux += [(f"single_blocks.{i}.linear1", (21504, 3072)) for i in range(38)]
    report = _inspect(tmp_path, "flux", _kohya(flux))
    assert (report.family, report.kind) == ("flux1", "lora"), report.evidence


def test_dit_cross_attention_is_no_unet_context(tmp_path: Path) -> None:
    ltx = [
        (f"transformer_blocks.{i}.{a}.{p}", (2048, 2048))
        for i in range(28)
        for a in ("attn1", "attn2")
        for p in ("to_q", "to_k", "to_v", "to_out.0")
    ]
    report = _inspect(tmp_path, "ltx", _peft(ltx, "diffusion_model."))
    assert (report.family, report.kind) == ("unknown", "lora"), report.evidence
    assert "outside any UNet level" in _evidence(report)


def _nextdit(width: int) -> list[Module]:
    """Z-Image's (and Lumina 2's) NextDiT attention layers at ``width``."""
    return [
        (f"{g}.{i}.attention.qkv", (3 * width, width))
        for g, n in (("noise_refiner", 2), ("context_refiner", 2), ("layers", 26))
        for i in range(n)
    ]


def test_a_width_other_than_the_family_s_gives_no_family(tmp_path: Path) -> None:
    report = _inspect(tmp_path, "nextdit-3072", _kohya(_nextdit(3072)))
    assert (report.family, report.kind) == ("unknown", "lora"), report.evidence
    assert "z-image is 3840 wide" in _evidence(report)


def test_z_image_s_names_at_lumina_2_s_width_are_lumina2(tmp_path: Path) -> None:
    """Lumina Image 2.0 (2304 wide, Gemma-2-2B) shares Z-Image's names; sd-scripts' metadata
    (ss_base_model_version lumina2) agrees with the width, and decides nothing."""
    meta = {"ss_base_model_version": "lumina2", "ss_network_module": "networks.lora_lumina"}
    for name, with_meta in (("no-meta", None), ("with-meta", meta)):
        report = _inspect(tmp_path, name, _kohya(_nextdit(2304)), with_meta)
        assert (report.family, report.kind) == ("lumina2", "lora"), report.evidence
        assert report.facts["hidden_size"] == 2304
        assert "model width 2304 = Lumina Image 2.0" in _evidence(report)
    assert "ss_base_model_version='lumina2' agrees" in _evidence(report)


def test_attention_only_qwen_image_lora(tmp_path: Path) -> None:
    mods = [
        (f"transformer_blocks.{i}.attn.{p}", (3072, 3072))
        for i in range(60)
        for p in ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj", "to_out.0")
    ]
    report = _inspect(tmp_path, "qwen", _peft(mods, "transformer."))
    assert (report.family, report.kind) == ("qwen-image", "lora"), report.evidence


def test_bfl_flux_control_lora(tmp_path: Path) -> None:
    specs: list[Spec] = []
    for name, dtype, shape in base_models.bfl_flux(in_features=128):
        if name.endswith(".weight") and len(shape) == 2:
            module = name[: -len(".weight")]
            specs += [(f"{module}.lora_A.weight", "BF16", (128, shape[1]))]
            specs += [(f"{module}.lora_B.weight", "BF16", (shape[0], 128))]
            specs += [(f"{module}.lora_B.bias", "BF16", (shape[0],))]
        elif name.endswith(("query_norm.scale", "key_norm.scale")):
            specs.append((name, dtype, shape))
    report = _inspect(tmp_path, "flux-depth-lora", specs)
    assert (report.family, report.kind) == ("flux1", "lora"), report.evidence
    assert report.facts.get("control_lora") is True


def test_stability_control_lora_is_an_sdxl_controlnet(tmp_path: Path) -> None:
    specs: list[Spec] = [("lora_controlnet", "F32", (0,))]
    for name, dtype, shape in base_models.ldm_unet(**base_models.UNET_PARAMS["sdxl"]):
        if name.startswith(("output_blocks.", "out.")):
            continue
        if name.endswith(".weight") and len(shape) in (2, 4):
            base = name[: -len(".weight")]
            up = (shape[0], 128, *((1, 1) if len(shape) == 4 else ()))
            specs += [(f"{base}.up", "F16", up), (f"{base}.down", "F16", (128, *shape[1:]))]
        else:
            specs.append((name, dtype, shape))
    specs += [
        ("input_hint_block.0.weight", "F16", (16, 3, 3, 3)),
        ("zero_convs.0.0.weight", "F16", (320, 320, 1, 1)),
        ("middle_block_out.0.weight", "F16", (1280, 1280, 1, 1)),
    ]
    report = _inspect(tmp_path, "control-lora", specs)
    assert (report.family, report.kind) == ("sdxl", "controlnet"), report.evidence


def test_kolors_unet_is_not_sdxl(tmp_path: Path) -> None:
    specs = [
        (n, d, (s[0], 5632) if n == "add_embedding.linear_1.weight" else s)
        for n, d, s in base_models.diffusers_denoiser("sdxl")
    ]
    specs += [
        ("encoder_hid_proj.weight", "F16", (2048, 4096)),
        ("encoder_hid_proj.bias", "F16", (2048,)),
    ]
    report = _inspect(tmp_path, "kolors", specs)
    assert report.family == "unknown", report.evidence
    assert any(c["family"] == "sdxl" for c in report.candidates)


def test_playground_v25_is_named(tmp_path: Path) -> None:
    specs = list(base_models.unet_checkpoint("sdxl"))
    specs += [("edm_mean", "F32", (1, 4, 1, 1)), ("edm_std", "F32", (1, 4, 1, 1))]
    report = _inspect(tmp_path, "playground", specs)
    assert (report.family, report.kind, report.variant) == ("sdxl", "checkpoint", "playground-v2.5")
    assert report.facts.get("noise_schedule") == "edm"


def test_comfyui_gguf_unet_with_flattened_tensors(tmp_path: Path) -> None:
    """ComfyUI-GGUF's converter flattens tensors to rows of 256 and keeps the real shape under
    comfy.gguf.orig_shape.<name>; without it conv_in reads 2-D and nothing is identified."""
    gguf = __import__("pytest").importorskip("gguf")
    import math

    import numpy as np

    writer = gguf.GGUFWriter(str(tmp_path / "sd15-Q8_0.gguf"), "sd1")
    flattened = data_bytes = 0
    for name, _dtype, shape in base_models.ldm_unet(**base_models.UNET_PARAMS["sd1"]):
        numel = math.prod(shape)
        if len(shape) > 1 and numel % 256 == 0 and shape[-1] % 256:
            writer.add_array(f"comfy.gguf.orig_shape.{name}", list(shape))
            shape, flattened = (numel // 256, 256), flattened + 1
        writer.add_tensor_info(name, shape, np.dtype(np.float16), numel * 2)
        data_bytes += -(-numel * 2 // 32) * 32
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    path = tmp_path / "sd15-Q8_0.gguf"
    with open(path, "r+b") as fh:  # the data region, sparse (aligned to 32 after the header)
        fh.truncate(fh.seek(0, 2) + 32 + data_bytes)
    report = inspect_path(path)
    assert flattened > 10
    assert (report.family, report.kind, report.variant) == ("sd1", "unet", "normal"), (
        report.evidence
    )
    assert any("comfy.gguf.orig_shape" in e for e in report.evidence)


def test_video_models_are_not_image_families(tmp_path: Path) -> None:
    from modelsafe.testing.layouts import components, recent_models

    # a 3-D VAE of neither Wan VAE's latent channels (HunyuanVideo 1.5's has 32)
    other = [
        (n, d, (s[0], 32, *s[2:]) if n == "decoder.conv_in.weight" else s)
        for n, d, s in components.qwen_image_vae()
    ]
    report = _inspect(tmp_path, "video-vae", other)
    assert (report.family, report.kind) == ("unknown", "vae"), report.evidence
    wan21 = _inspect(tmp_path, "wan21-vae", components.qwen_image_vae())
    assert (wan21.family, wan21.kind) == ("qwen-image", "vae")
    wan22 = _inspect(tmp_path, "wan22-vae", recent_models.wan22_vae())
    assert (wan22.family, wan22.kind, wan22.facts["latent_channels"]) == ("wan", "vae", 48)
    assert "the Wan 2.2 VAE" in _evidence(wan22)
    svd = list(base_models.ldm_unet(**base_models.UNET_PARAMS["sd2"]))
    svd += [("input_blocks.1.0.time_stack.in_layers.2.weight", "F16", (320, 320, 3, 1, 1))]
    report = _inspect(tmp_path, "svd", svd)
    assert report.family == "unknown", report.evidence
    assert any("video UNet" in e for c in report.candidates for e in c["why"]), report.candidates


def test_swinir_look_alike_upscalers_are_named(tmp_path: Path) -> None:
    from modelsafe.testing.layouts import components

    swinir = list(components.swinir(scale=4))
    attn = "layers.0.residual_group.blocks.0.attn."
    swin2sr = [*swinir, (attn + "logit_scale", "F32", (6, 1, 1))]
    srformer = [*swinir, (attn + "aligned_relative_position_index", "I64", (64, 64))]
    for name, specs, arch in (
        ("swinir", swinir, "swinir"),
        ("swin2sr", swin2sr, "swin2sr"),
        ("srformer", srformer, "srformer"),
    ):
        report = _inspect(tmp_path, name, specs)
        assert report.kind == "upscaler" and report.facts["architecture"] == arch, name
        assert report.facts["scale"] == 4


def test_a_4096_wide_llm_encoder_is_no_t5_in_the_vram_table(tmp_path: Path) -> None:
    from modelsafe.testing.layouts import components

    llama = _inspect(tmp_path, "llama", components.llm_text_encoder("llama3.1_8b", layers=2))
    assert llama.kind == "text_encoder"
    assert list(llama.vram["components"]) == ["text_encoder.unknown"]
    t5 = _inspect(tmp_path, "t5", components.t5xxl())
    assert list(t5.vram["components"]) == ["text_encoder.t5xxl"]


def _gguf_encoder(path: Path, arch: str, vocab: int, width: int, layers: int, kv: bool) -> Path:
    """A GGUF text encoder in llama.cpp naming, data region sparse."""
    gguf = __import__("pytest").importorskip("gguf")
    import numpy as np

    writer = gguf.GGUFWriter(str(path), arch)
    if kv:
        writer.add_uint32(f"{arch}.embedding_length", width)
        writer.add_uint32(f"{arch}.block_count", layers)
    block = "enc.blk" if arch == "t5encoder" else "blk"
    shapes = [("token_embd.weight", (vocab, width))]
    shapes += [(f"{block}.{i}.attn_q.weight", (width, width)) for i in range(layers)]
    total = 0
    for name, shape in shapes:
        writer.add_tensor_info(name, shape, np.dtype(np.float16), shape[0] * shape[1] * 2)
        total += -(-shape[0] * shape[1] * 2 // 32) * 32
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    with open(path, "r+b") as fh:
        fh.truncate(fh.seek(0, 2) + 32 + total)
    return path


def test_gguf_text_encoders_are_named(tmp_path: Path) -> None:
    for name, args, variant in (
        ("t5", ("t5encoder", 32128, 4096, 24, True), "t5xxl"),
        ("umt5", ("t5encoder", 256384, 4096, 24, False), "umt5xxl"),  # tensors alone decide
        ("llama", ("llama", 128256, 4096, 32, True), "llama3.1_8b"),
    ):
        report = inspect_path(_gguf_encoder(tmp_path / f"{name}.gguf", *args))
        assert (report.family, report.kind, report.variant) == ("any", "text_encoder", variant), (
            name,
            report.evidence,
        )
        assert list(report.vram["components"]) == [f"text_encoder.{variant}"], name
