"""LoRA keys (kohya, PEFT, LyCORIS) mapped onto real checkpoint files, with shapes checked."""

from __future__ import annotations

from typing import Any

import rr_layouts as L

from modelsafe.registry.detect.lora_keys import parse_key
from modelsafe.registry.model_parts import split_components
from modelsafe.registry.read import read_index
from modelsafe.runtime.lora_mapping import map_lora


def _coverage(write: Any, ckpt: list[Any], lora: list[Any], family: str, kind: str) -> Any:
    base = read_index(write("base.safetensors", ckpt))
    adapter = read_index(write("lora.safetensors", lora))
    return map_lora(adapter, split_components(base, family, kind))


def test_parse_key_styles() -> None:
    k = parse_key("lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight")
    assert k and (k.target, k.dotted, k.stored_part, k.naming) == (
        "denoiser",
        False,
        "lora_down.weight",
        "kohya",
    )
    k = parse_key("lora_te2_text_model_encoder_layers_0_mlp_fc1.alpha")
    assert k and k.target == "text_encoder_2" and k.part == "alpha"
    k = parse_key("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight")
    assert k and (k.target, k.module) == (
        "denoiser",
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
    )
    k = parse_key("transformer_blocks.0.attn1.processor.to_out_lora.up.weight")
    assert k and k.module == "transformer_blocks.0.attn1.to_out.0" and k.processor
    assert parse_key("emb_params") is None


def test_kohya_sd1_lora_maps_fully_onto_ldm_checkpoint(pm: Any, write: Any) -> None:
    mods = L.diffusers_modules("UNet2DConditionModel", **L.SD1_UNET_CONFIG)
    lora = L.lora_specs(
        mods,
        style="kohya",
        prefix="lora_unet",
        only=(*L.ATTENTION, "proj_in", "proj_out", "ff.net.2"),
    )
    te = {
        f"text_model.encoder.layers.{i}.self_attn.{p}": (768, 768)
        for i in range(12)
        for p in ("q_proj", "v_proj")
    }
    lora += L.lora_specs(te, style="kohya", prefix="lora_te", only=("q_proj", "v_proj"))
    cov = _coverage(write, L.sd1_checkpoint(), lora, "sd1", "checkpoint")
    assert cov.lora_keys == len(lora)
    assert cov.mapped_keys == cov.lora_keys, (cov.unmapped, cov.shape_mismatches)
    assert cov.by_component["text_encoder.clip_l"] == (72, 72)
    assert cov.lora_format == "kohya"


def test_peft_sd1_lora_maps_fully(pm: Any, write: Any) -> None:
    mods = L.diffusers_modules("UNet2DConditionModel", **L.SD1_UNET_CONFIG)
    lora = L.lora_specs(mods, style="peft", prefix="unet.")
    cov = _coverage(write, L.sd1_checkpoint(), lora, "sd1", "checkpoint")
    assert cov.mapped_keys == cov.lora_keys == len(lora) > 0
    assert cov.lora_format == "peft"


def test_kohya_sdxl_ldm_named_lora_onto_diffusers_unet_file(pm: Any, write: Any) -> None:
    """kohya's SDXL LoRAs use the original (input_blocks) names; the UNet file uses diffusers'."""
    import diffusers
    import torch

    with torch.device("meta"):
        unet = diffusers.UNet2DConditionModel(**L.SDXL_UNET_CONFIG)
    unet_specs = [(n, "F16", tuple(p.shape)) for n, p in unet.state_dict().items()]
    ldm = {
        n[len("model.diffusion_model.") : -len(".weight")]: sh
        for n, _d, sh in L.sdxl_checkpoint()
        if n.startswith("model.diffusion_model.") and n.endswith(".weight") and len(sh) >= 2
    }
    lora = L.lora_specs(
        ldm,
        style="kohya",
        prefix="lora_unet",
        only=(*L.ATTENTION, "proj_in", "proj_out", "conv1", "conv2"),
    )
    cov = _coverage(write, unet_specs, lora, "sdxl", "unet")
    assert cov.mapped_keys == cov.lora_keys, (cov.unmapped[:3], cov.shape_mismatches[:3])


def test_sdxl_lora_on_sd1_fails_on_cross_attention_width(pm: Any, write: Any) -> None:
    ldm = {
        n[len("model.diffusion_model.") : -len(".weight")]: sh
        for n, _d, sh in L.sdxl_checkpoint()
        if n.startswith("model.diffusion_model.") and n.endswith(".weight") and len(sh) >= 2
    }
    lora = L.lora_specs(ldm, style="kohya", prefix="lora_unet")
    cov = _coverage(write, L.sd1_checkpoint(), lora, "sd1", "checkpoint")
    assert 0 < cov.mapped_keys < cov.lora_keys * 0.5
    assert any("x2048, checkpoint layer 640x768" in m for m in cov.shape_mismatches)


def test_partial_coverage_is_counted(pm: Any, write: Any) -> None:
    mods = L.diffusers_modules("UNet2DConditionModel", **L.SD1_UNET_CONFIG)
    good = L.lora_specs(mods, style="kohya", prefix="lora_unet")
    ghost = {
        f"down_blocks.9.attentions.0.transformer_blocks.{i}.attn1.to_q": (320, 320)
        for i in range(10)
    }
    bad = L.lora_specs(ghost, style="kohya", prefix="lora_unet")
    cov = _coverage(write, L.sd1_checkpoint(), good + bad, "sd1", "checkpoint")
    assert cov.lora_keys == len(good) + len(bad)
    assert cov.mapped_keys == len(good)
    assert any("down_blocks_9" in k for k in cov.unmapped)


def test_lycoris_loha_and_lokr_map(pm: Any, write: Any) -> None:
    mods = L.diffusers_modules("UNet2DConditionModel", **L.SD1_UNET_CONFIG)
    for style in ("loha", "lokr"):
        lora = L.lora_specs(mods, style=style, prefix="lora_unet")
        cov = _coverage(write, L.sd1_checkpoint(), lora, "sd1", "checkpoint")
        assert cov.mapped_keys == cov.lora_keys > 0, (style, cov.shape_mismatches[:2])
        assert cov.lora_format == "lycoris"


def _flux_diffusers_modules(d: int) -> dict[str, tuple[int, ...]]:
    return L.diffusers_modules(
        "FluxTransformer2DModel",
        num_layers=2,
        num_single_layers=2,
        attention_head_dim=d // 2,
        num_attention_heads=2,
        joint_attention_dim=4096,
        pooled_projection_dim=768,
        guidance_embeds=True,
        axes_dims_rope=(8, 12, 12),  # sums to the head dim (32 for d=64)
    )


def test_peft_flux_lora_onto_bfl_fp8_checkpoint(pm: Any, write: Any) -> None:
    """Diffusers-named Flux LoRA (split q/k/v) onto an fp8 BFL-named file (fused qkv)."""
    mods = _flux_diffusers_modules(64)
    lora = L.lora_specs(
        mods,
        style="peft",
        prefix="transformer.",
        only=(
            "to_q",
            "to_k",
            "to_v",
            "proj_mlp",
            "proj_out",
            "add_q_proj",
            "to_add_out",
            "ff.net.2",
        ),
    )
    ckpt = L.flux_bfl("F8_E4M3", double=2, single=2, d=64, prefix="model.diffusion_model.")
    cov = _coverage(write, ckpt, lora, "flux1", "checkpoint")
    assert cov.mapped_keys == cov.lora_keys > 0, (cov.unmapped[:3], cov.shape_mismatches[:3])


def test_kohya_bfl_flux_lora_onto_diffusers_transformer(pm: Any, write: Any) -> None:
    import diffusers
    import torch

    with torch.device("meta"):
        model = diffusers.FluxTransformer2DModel(
            num_layers=2,
            num_single_layers=2,
            attention_head_dim=32,
            num_attention_heads=2,
            axes_dims_rope=(8, 12, 12),
        )
    specs = [(n, "BF16", tuple(p.shape)) for n, p in model.state_dict().items()]
    bfl = {
        n[: -len(".weight")]: sh
        for n, _d, sh in L.flux_bfl(d=64, double=2, single=2)
        if n.endswith(".weight") and len(sh) == 2
    }
    lora = L.lora_specs(
        bfl, style="kohya", prefix="lora_unet", only=("qkv", "proj", "linear1", "linear2", "mlp.0")
    )
    cov = _coverage(write, specs, lora, "flux1", "transformer")
    assert cov.mapped_keys == cov.lora_keys > 0, (cov.unmapped[:3], cov.shape_mismatches[:3])


def test_gguf_flux_checkpoint_maps(pm: Any, tmp_path: Any) -> None:
    import numpy as np

    gguf = __import__("gguf")
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
    base = read_index(path)
    assert base.format == "gguf"
    mods = _flux_diffusers_modules(64)
    mods = {
        k: v
        for k, v in mods.items()
        if k.startswith(("transformer_blocks.0.", "single_transformer_blocks.0."))
    }
    from modelsafe.testing import write_safetensors

    lora = read_index(
        write_safetensors(
            tmp_path / "l.safetensors",
            L.lora_specs(
                mods, style="peft", prefix="transformer.", only=("to_q", "to_k", "to_v", "proj_mlp")
            ),
        )
    )
    cov = map_lora(lora, split_components(base, "flux1", "transformer"))
    assert cov.mapped_keys == cov.lora_keys > 0, (cov.unmapped[:3], cov.shape_mismatches[:3])
