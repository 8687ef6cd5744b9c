"""Text-encoder LoRA keys land on the encoder they name (identity first, position after): Flux's
T5 (kohya ``lora_te3_``/older ``lora_te2_``, ComfyUI ``text_encoders.t5xxl.``, diffusers'
``text_encoder_2.``) on an all-in-one file with only CLIP-L + T5; SD3 and SDXL by position as
before; older diffusers ``<module>_lora.down.weight`` keys (0.15-0.17) on an SD1 checkpoint."""

from __future__ import annotations

from typing import Any

import rr_layouts as L

from modelsafe.registry.model_parts import split_components
from modelsafe.registry.read import read_index
from modelsafe.runtime.lora_mapping import map_lora
from modelsafe.testing.layouts import base_models as bm

T5 = {
    **{
        f"encoder.block.{i}.layer.0.SelfAttention.{p}": (4096, 4096)
        for i in range(2)
        for p in "qkvo"
    },
    **{f"encoder.block.{i}.layer.1.DenseReluDense.wi_0": (10240, 4096) for i in range(2)},
    **{f"encoder.block.{i}.layer.1.DenseReluDense.wo": (4096, 10240) for i in range(2)},
}
T5_ONLY = ("SelfAttention.q", "SelfAttention.k", "SelfAttention.v", "SelfAttention.o", "wi_0", "wo")


def _clip(width: int, layers: int = 2) -> dict[str, tuple[int, ...]]:
    return {
        f"text_model.encoder.layers.{i}.self_attn.{p}": (width, width)
        for i in range(layers)
        for p in ("q_proj", "k_proj", "v_proj", "out_proj")
    }


CLIP_ONLY = ("q_proj", "k_proj", "v_proj", "out_proj")


def _comfy(prefix: str, modules: dict[str, tuple[int, ...]], rank: int = 4) -> list[Any]:
    return [
        spec
        for name, (out, inn) in sorted(modules.items())
        for spec in (
            (f"{prefix}{name}.lora_down.weight", "F16", (rank, inn)),
            (f"{prefix}{name}.lora_up.weight", "F16", (out, rank)),
            (f"{prefix}{name}.alpha", "F16", ()),
        )
    ]


def _map(
    write: Any, ckpt: list[Any], lora: list[Any], family: str, kind: str = "checkpoint"
) -> Any:
    base = read_index(write("base.safetensors", ckpt))
    comps = split_components(base, family, kind)
    return map_lora(read_index(write("lora.safetensors", lora)), comps)


def _flux_aio(t5: bool = True) -> list[Any]:
    specs = L.flux_bfl("BF16", double=1, single=1, d=64, prefix="model.diffusion_model.")
    specs += L.vae(16)
    specs += bm.prefixed("text_encoders.clip_l.transformer.", bm.clip_text(768, 2))
    if t5:
        specs += bm.prefixed("text_encoders.t5xxl.transformer.", bm.t5_encoder(2))
    return specs


def _flux_unet_lora() -> list[Any]:
    bfl = {
        n[len("model.diffusion_model.") : -len(".weight")]: sh
        for n, _d, sh in L.flux_bfl(d=64, double=1, single=1, prefix="model.diffusion_model.")
        if n.endswith(".weight") and len(sh) == 2
    }
    return L.lora_specs(bfl, style="kohya", prefix="lora_unet", only=("qkv", "proj", "linear1"))


def _assert_full(cov: Any) -> None:
    assert cov.mapped_keys == cov.lora_keys > 0, (
        cov.unmapped[:3],
        cov.shape_mismatches[:3],
        cov.absent_components,
    )
    assert cov.absent_components == () and cov.absent_keys == 0


def test_flux_kohya_lora_te3_t5_keys_land_on_t5xxl(pm: Any, write: Any) -> None:
    te1 = L.lora_specs(_clip(768), style="kohya", prefix="lora_te1", only=CLIP_ONLY)
    te3 = L.lora_specs(T5, style="kohya", prefix="lora_te3", only=T5_ONLY)
    cov = _map(write, _flux_aio(), _flux_unet_lora() + te1 + te3, "flux1")
    _assert_full(cov)
    assert cov.by_component["text_encoder.t5xxl"] == (len(te3), len(te3)) == (36, 36)
    assert cov.by_component["text_encoder.clip_l"] == (len(te1), len(te1))
    assert cov.lora_format == "kohya"


def test_flux_older_kohya_lora_te2_t5_keys_land_on_t5xxl(pm: Any, write: Any) -> None:
    """Some sd-scripts builds wrote Flux's T5 as lora_te2_: the module path says T5."""
    te2 = L.lora_specs(T5, style="kohya", prefix="lora_te2", only=T5_ONLY)
    te1 = L.lora_specs(_clip(768), style="kohya", prefix="lora_te1", only=CLIP_ONLY)
    cov = _map(write, _flux_aio(), te1 + te2, "flux1")
    _assert_full(cov)
    assert cov.by_component["text_encoder.t5xxl"] == (36, 36)


def test_flux_comfy_text_encoders_t5xxl_keys_land_on_t5xxl(pm: Any, write: Any) -> None:
    t5 = _comfy("text_encoders.t5xxl.transformer.", T5)
    clip = _comfy("text_encoders.clip_l.transformer.", _clip(768))
    flux = _comfy(
        "diffusion_model.",
        {"double_blocks.0.img_attn.qkv": (192, 64), "single_blocks.0.linear1": (448, 64)},
    )
    cov = _map(write, _flux_aio(), flux + clip + t5, "flux1")
    _assert_full(cov)
    assert cov.by_component["text_encoder.t5xxl"] == (len(t5), len(t5))
    assert cov.by_component["text_encoder.clip_l"] == (len(clip), len(clip))
    assert cov.by_component["transformer"] == (len(flux), len(flux))


def test_flux_diffusers_text_encoder_2_is_t5(pm: Any, write: Any) -> None:
    """diffusers' FluxPipeline: text_encoder is CLIP-L, text_encoder_2 is T5."""
    lora = L.lora_specs(_clip(768), style="peft", prefix="text_encoder.", only=CLIP_ONLY)
    lora += L.lora_specs(T5, style="peft", prefix="text_encoder_2.", only=T5_ONLY)
    cov = _map(write, _flux_aio(), lora, "flux1")
    _assert_full(cov)
    assert cov.by_component["text_encoder.t5xxl"] == (24, 24)


def test_flux_checkpoint_without_t5_names_t5_absent(pm: Any, write: Any) -> None:
    te1 = L.lora_specs(_clip(768), style="kohya", prefix="lora_te1", only=CLIP_ONLY)
    te3 = L.lora_specs(T5, style="kohya", prefix="lora_te3", only=T5_ONLY)
    cov = _map(write, _flux_aio(t5=False), te1 + te3, "flux1")
    assert cov.absent_components == ("T5 text encoder",)
    assert cov.absent_keys == len(te3)
    assert cov.mapped_keys == len(te1)
    # T5 keys never land on the CLIP encoder by position.
    assert cov.by_component["text_encoder.clip_l"] == (len(te1), len(te1))


def _sd3_aio() -> list[Any]:
    specs = [("model.diffusion_model.x_embedder.proj.weight", "F16", (1536, 16, 2, 2))]
    specs += L.vae(16)
    specs += bm.prefixed("text_encoders.clip_l.transformer.", bm.clip_text(768, 2, 768))
    specs += bm.prefixed("text_encoders.clip_g.transformer.", bm.clip_text(1280, 2, 1280))
    return specs + bm.prefixed("text_encoders.t5xxl.transformer.", bm.t5_encoder(2))


def test_sd3_kohya_te1_te2_te3_by_position(pm: Any, write: Any) -> None:
    te1 = L.lora_specs(_clip(768), style="kohya", prefix="lora_te1", only=CLIP_ONLY)
    te2 = L.lora_specs(_clip(1280), style="kohya", prefix="lora_te2", only=CLIP_ONLY)
    te3 = L.lora_specs(T5, style="kohya", prefix="lora_te3", only=T5_ONLY)
    cov = _map(write, _sd3_aio(), te1 + te2 + te3, "sd3")
    _assert_full(cov)
    assert cov.by_component == {
        "text_encoder.clip_l": (len(te1), len(te1)),
        "text_encoder.clip_g": (len(te2), len(te2)),
        "text_encoder.t5xxl": (len(te3), len(te3)),
    }


def test_sd3_peft_text_encoders_by_position(pm: Any, write: Any) -> None:
    lora = L.lora_specs(_clip(768), style="peft", prefix="text_encoder.", only=CLIP_ONLY)
    lora += L.lora_specs(_clip(1280), style="peft", prefix="text_encoder_2.", only=CLIP_ONLY)
    lora += L.lora_specs(T5, style="peft", prefix="text_encoder_3.", only=T5_ONLY)
    cov = _map(write, _sd3_aio(), lora, "sd3")
    _assert_full(cov)
    assert cov.by_component["text_encoder.clip_g"] == (16, 16)
    assert cov.by_component["text_encoder.t5xxl"] == (24, 24)


def test_sdxl_te1_te2_map_onto_clip_l_and_openclip_g(pm: Any, write: Any) -> None:
    te1 = L.lora_specs(_clip(768, 12), style="kohya", prefix="lora_te1", only=CLIP_ONLY)
    te2 = L.lora_specs(_clip(1280, 32), style="kohya", prefix="lora_te2", only=CLIP_ONLY)
    cov = _map(write, L.sdxl_checkpoint(), te1 + te2, "sdxl")
    _assert_full(cov)
    assert cov.by_component == {
        "text_encoder.clip_g": (len(te2), len(te2)),
        "text_encoder.clip_l": (len(te1), len(te1)),
    }
    comfy = _comfy("text_encoders.clip_g.transformer.", _clip(1280, 32))
    comfy += _comfy("text_encoders.clip_l.transformer.", _clip(768, 12))
    cov = _map(write, L.sdxl_checkpoint(), comfy, "sdxl")
    _assert_full(cov)
    assert cov.by_component["text_encoder.clip_g"] == (32 * 4 * 3, 32 * 4 * 3)


def test_sdxl_te2_on_sd1_is_still_an_absent_second_encoder(pm: Any, write: Any) -> None:
    te1 = L.lora_specs(_clip(768, 12), style="kohya", prefix="lora_te1", only=CLIP_ONLY)
    te2 = L.lora_specs(_clip(1280, 2), style="kohya", prefix="lora_te2", only=CLIP_ONLY)
    cov = _map(write, L.sd1_checkpoint(), te1 + te2, "sd1")
    assert cov.absent_components == ("text encoder 2 (CLIP-G)",)
    assert cov.mapped_keys == len(te1) and cov.absent_keys == len(te2)


def test_old_diffusers_suffixed_lora_keys_map_onto_sd1(pm: Any, write: Any) -> None:
    """diffusers 0.15-0.17: text_encoder ...self_attn.to_q_lora (CLIP's q_proj) and UNet
    attention ...attn1.to_out_lora (to_out.0), with and without ``.processor``."""
    lora: list[Any] = []
    for i in range(12):
        for p in ("q", "k", "v", "out"):
            base = f"text_encoder.text_model.encoder.layers.{i}.self_attn.to_{p}_lora"
            lora += [
                (f"{base}.down.weight", "F16", (4, 768)),
                (f"{base}.up.weight", "F16", (768, 4)),
            ]
    mods = L.diffusers_modules("UNet2DConditionModel", **L.SD1_UNET_CONFIG)
    attn = sorted(n for n in mods if n.endswith(L.ATTENTION))
    for k, name in enumerate(attn):
        proj = name.rsplit(".", 2 if name.endswith("to_out.0") else 1)[0]
        leaf = "to_out" if name.endswith("to_out.0") else name.rsplit(".", 1)[1]
        processor = ".processor" if (k // 4) % 2 else ""  # attn2: processor naming
        out, inn = mods[name][:2]
        base = f"unet.{proj}{processor}.{leaf}_lora"
        lora += [(f"{base}.down.weight", "F16", (4, inn)), (f"{base}.up.weight", "F16", (out, 4))]
    assert any("attn1.to_out_lora" in n for n, _d, _s in lora)
    assert any("processor.to_out_lora" in n for n, _d, _s in lora)
    cov = _map(write, L.sd1_checkpoint(), lora, "sd1")
    _assert_full(cov)
    assert cov.by_component["text_encoder.clip_l"] == (96, 96)
