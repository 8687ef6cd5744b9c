"""Identification round 9: layouts as users download them that were unknown or misnamed.

- Wan's own UMT5-XXL naming (``wan/modules/t5.py``: Wan-AI's ``models_t5_umt5-xxl-enc-bf16.pth``,
  Kijai's ``umt5-xxl-enc-bf16.safetensors`` / ``-fp8_e4m3fn``) was unknown/unknown.
- Diffusers folders whose pipeline class names the model its weights' layout shares with another
  (``FluxKontextPipeline``, ``QwenImageEditPipeline``, ``QwenImageEditPlusPipeline``) were named
  after the layout (Flux.1 dev, plain Qwen-Image).
- PuLID's SDXL IDEncoder was an IP-Adapter "base" at 0.95, and any unknown image projection too.
- sd-scripts' SD3.5 LoRA metadata (``stable-diffusion-3-3-5-medium/lora``) was read as SD3, and a
  medium LoRA without attn2 layers was rejected on SD3.5 Medium though all its keys map.
- lightx2v's Wan LoRAs (``.diff`` on norm weights, ``.diff_b``, ``.diff_m`` beside low-rank pairs)
  were LyCORIS "full".
- A whole transformers ``CLIPModel`` used as CLIP-L counted its vision tower in the text
  encoder's VRAM.

The files are the real layouts (header-only safetensors), read by the real detectors.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from modelsafe.registry.inspect import inspect_path
from modelsafe.testing import write_safetensors
from modelsafe.testing.layouts import adapters as ad
from modelsafe.testing.layouts import base_models as bm
from modelsafe.testing.layouts import components as co
from modelsafe.testing.layouts import recent_models as rm
from modelsafe.testing.layouts.base_models import Specs


def _file(folder: Path, name: str, specs: Specs, meta: dict[str, str] | None = None) -> Path:
    return write_safetensors(folder / f"{name}.safetensors", specs, meta, data="sparse")


# ------------------------------------------------------------------ Wan's own UMT5-XXL naming

# transformers' T5 encoder names -> wan/modules/t5.py's (as Wan's converters map them)
_WAN_T5_NAMES = (
    (r"^shared\.weight$", "token_embedding.weight"),
    (r"^encoder\.final_layer_norm\.", "norm."),
    (r"\.layer\.0\.SelfAttention\.relative_attention_bias\.", ".pos_embedding.embedding."),
    (r"\.layer\.0\.SelfAttention\.", ".attn."),
    (r"\.layer\.0\.layer_norm\.", ".norm1."),
    (r"\.layer\.1\.layer_norm\.", ".norm2."),
    (r"\.layer\.1\.DenseReluDense\.wi_0\.", ".ffn.gate.0."),
    (r"\.layer\.1\.DenseReluDense\.wi_1\.", ".ffn.fc1."),
    (r"\.layer\.1\.DenseReluDense\.wo\.", ".ffn.fc2."),
    (r"^encoder\.block\.", "blocks."),
)


def _wan_t5(fp8: bool = False) -> Specs:
    out: Specs = []
    for name, dtype, shape in co.umt5xxl():
        for pattern, new in _WAN_T5_NAMES:
            name = re.sub(pattern, new, name)
        if fp8 and len(shape) == 2 and name.startswith("blocks."):
            dtype = "F8_E4M3"
        out.append((name, dtype, shape))
    return out


@pytest.mark.parametrize("fp8", [False, True])
def test_wans_own_umt5_xxl_naming(tmp_path: Path, fp8: bool) -> None:
    specs = _wan_t5(fp8)
    assert "blocks.0.ffn.gate.0.weight" in {n for n, _, _ in specs}
    name = "umt5-xxl-enc-fp8_e4m3fn" if fp8 else "umt5-xxl-enc-bf16"
    report = inspect_path(_file(tmp_path, name, specs))
    assert (report.family, report.kind, report.variant) == ("any", "text_encoder", "umt5xxl")
    assert report.confidence >= 0.9, report.evidence
    assert report.facts["used_by"] == ["wan"]
    assert report.facts["naming"] == "wan-t5"
    assert (report.facts["hidden_size"], report.facts["num_layers"]) == (4096, 24)
    assert list(report.vram["components"]) == ["text_encoder.umt5xxl"]


# ------------------------------------------------------- pipeline classes that name the model


def _pipeline(
    root: Path, key: str, pipeline_class: str, transformer_config: dict[str, Any] | None = None
) -> Path:
    class_name = bm.DIFFUSERS_DENOISERS[key][0]
    index = {
        "_class_name": pipeline_class,
        "_diffusers_version": "0.35.0",
        "transformer": ["diffusers", class_name],
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
    }
    root.mkdir(parents=True)
    (root / "model_index.json").write_text(json.dumps(index))
    (root / "transformer").mkdir()
    config = {**bm.diffusers_config(key), **(transformer_config or {})}
    (root / "transformer" / "config.json").write_text(json.dumps(config))
    write_safetensors(
        root / "transformer" / "diffusion_pytorch_model.safetensors",
        bm.diffusers_denoiser(key, "BF16"),
        data="sparse",
    )
    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text(
        json.dumps({"_class_name": "FlowMatchEulerDiscreteScheduler"})
    )
    return root


@pytest.mark.parametrize(
    ("name", "key", "pipeline_class", "config", "family", "variant"),
    [
        ("FLUX.1-Kontext-dev", "flux1/dev", "FluxKontextPipeline", None, "flux1", "kontext"),
        ("FLUX.1-Krea-dev", "flux1/dev", "FluxPipeline", None, "flux1", "dev"),
        ("Qwen-Image-Edit", "qwen-image", "QwenImageEditPipeline", None, "qwen-image", "edit"),
        (
            "Qwen-Image-Edit-2509",
            "qwen-image",
            "QwenImageEditPlusPipeline",
            None,
            "qwen-image",
            "edit-2509",
        ),
        (
            "Qwen-Image-Edit-2511",
            "qwen-image",
            "QwenImageEditPlusPipeline",
            {"zero_cond_t": True},
            "qwen-image",
            "edit-2511",
        ),
        ("Qwen-Image", "qwen-image", "QwenImagePipeline", None, "qwen-image", None),
    ],
)
def test_the_pipeline_class_names_the_variant(
    tmp_path: Path,
    name: str,
    key: str,
    pipeline_class: str,
    config: dict[str, Any] | None,
    family: str,
    variant: str | None,
) -> None:
    report = inspect_path(_pipeline(tmp_path / name, key, pipeline_class, config))
    assert (report.family, report.kind, report.variant) == (family, "pipeline", variant)
    named = [e for e in report.evidence if "model_index.json _class_name" in e]
    assert bool(named) == (variant not in ("dev", None)), report.evidence
    assert report.confidence >= 0.9


# ---------------------------------------------------------------------------------- PuLID


def _lin(name: str, out: int, inp: int) -> Specs:
    return [(f"{name}.weight", "F16", (out, inp)), (f"{name}.bias", "F16", (out,))]


def _norm(name: str, width: int) -> Specs:
    return [(f"{name}.weight", "F16", (width,)), (f"{name}.bias", "F16", (width,))]


def _mlp(name: str, inp: int, out: int) -> Specs:
    """Linear, LayerNorm, LeakyReLU, Linear, LayerNorm, LeakyReLU, Linear (PuLID's MLPs)."""
    return (
        _lin(f"{name}.0", 1024, inp)
        + _norm(f"{name}.1", 1024)
        + _lin(f"{name}.3", 1024, 1024)
        + _norm(f"{name}.4", 1024)
        + _lin(f"{name}.6", out, 1024)
    )


def _ip_layers(family: str) -> Specs:
    return [s for s in ad.ip_adapter(family) if s[0].startswith("ip_adapter.")]


def test_pulid_sdxl_is_pulid_not_an_ip_adapter_base(tmp_path: Path) -> None:
    """ip-adapter_pulid_sdxl_fp16.safetensors: PuLID's IDEncoder beside IP-Adapter layers."""
    specs = _mlp("image_proj.body", 1280, 5 * 2048)
    for i in range(5):
        specs += _mlp(f"image_proj.mapping_{i}", 1024, 2048)
        specs += _mlp(f"image_proj.mapping_patch_{i}", 1024, 2048)
    report = inspect_path(_file(tmp_path, "ip-adapter_pulid_sdxl_fp16", specs + _ip_layers("sdxl")))
    assert (report.family, report.kind, report.variant) == ("sdxl", "ip_adapter", "pulid")
    assert report.facts["face_encoder"] == "insightface"
    assert report.facts["image_encoder"] == "eva02_clip_l_14_336"
    assert report.facts["image_embed_dim"] == 1280
    assert any("PuLID's IDEncoder" in e for e in report.evidence)


def test_an_unknown_image_projection_is_no_base_ip_adapter(tmp_path: Path) -> None:
    specs = _lin("image_proj.encoder.0", 2048, 768) + _ip_layers("sdxl")
    report = inspect_path(_file(tmp_path, "ip-adapter_something", specs))
    assert (report.family, report.kind, report.variant) == ("sdxl", "ip_adapter", None)
    assert report.confidence < 0.9
    assert "image_encoder" not in report.facts
    assert any("none of the IP-Adapter projections" in e for e in report.evidence)
    base = inspect_path(_file(tmp_path, "ip-adapter_sdxl", ad.ip_adapter("sdxl")))
    assert (base.variant, base.confidence) == ("base", 0.95)


# ------------------------------------------------------------------- sd-scripts SD3.5 LoRAs

_MMDIT_LAYERS = re.compile(
    r"joint_blocks\.\d+\.(x_block|context_block)\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)$"
)


@pytest.mark.parametrize(
    ("size", "architecture", "family"),
    [
        ("sd3.5/large", "stable-diffusion-3-3-5-large/lora", "sd3.5"),
        ("sd3.5/medium", "stable-diffusion-3-3-5-medium/lora", "sd3.5"),
        ("sd3/medium", "stable-diffusion-3-3-medium/lora", "sd3"),
    ],
)
def test_sd_scripts_sd35_lora_metadata(
    tmp_path: Path, size: str, architecture: str, family: str
) -> None:
    # attn2 layers are not trained: only the shared joint-block layers
    mods = ad.modules(bm.sai_mmdit(**bm.SD3_PARAMS[size]), _MMDIT_LAYERS)
    meta = {"modelspec.architecture": architecture, "ss_base_model_version": "sd3"}
    report = inspect_path(_file(tmp_path, "lora", ad.kohya_lora([("lora_unet_", mods)]), meta))
    assert (report.family, report.kind) == (family, "lora"), report.evidence
    assert not any("keys win" in e for e in report.evidence), report.evidence


def test_an_sd35_medium_lora_without_attn2_fits_sd35_medium(tmp_path: Path) -> None:
    from modelsafe.runtime.resolve import resolve

    medium = bm.sai_mmdit(**bm.SD3_PARAMS["sd3.5/medium"])
    checkpoint = _file(tmp_path, "sd3.5_medium", medium)
    meta = {"modelspec.architecture": "stable-diffusion-3-3-5-medium/lora"}
    lora = _file(
        tmp_path, "lora", ad.kohya_lora([("lora_unet_", ad.modules(medium, _MMDIT_LAYERS))]), meta
    )
    part = resolve(checkpoint, loras=[str(lora)], catalog=None).parts[0]
    assert (part.family, part.status) == ("sd3.5", "accepted"), [r.reason for r in part.reasons]


# ------------------------------------------------------------- lightx2v Wan LoRAs vs LyCORIS full

_WAN_LINEARS = re.compile(
    r"^blocks\.\d+\.(self_attn|cross_attn)\.(q|k|v|o)$|^blocks\.\d+\.ffn\.(0|2)$"
)


def _lightx2v(wan: Specs) -> Specs:
    """lightx2v's CFG/step-distill LoRA: low-rank pairs on the linears, ``.diff_b`` on biases,
    ``.diff`` on the norms' 1-D weights, ``.diff_m`` of each block's modulation."""
    specs = ad.comfy_lora(ad.modules(wan, _WAN_LINEARS), rank=8)
    for name, _, shape in wan:
        module = "diffusion_model." + name.rsplit(".", 1)[0]
        if name.startswith("blocks.") and name.endswith(".bias"):
            specs.append((module + ".diff_b", "BF16", shape))
        elif name.startswith("blocks.") and "norm" in name and name.endswith(".weight"):
            specs.append((module + ".diff", "BF16", shape))
        elif name.startswith("blocks.") and name.endswith(".modulation"):
            specs.append((f"diffusion_model.{name[: -len('.modulation')]}.diff_m", "BF16", shape))
    return specs


def test_lightx2v_wan_lora_is_a_lora(tmp_path: Path) -> None:
    wan = rm.wan_transformer("t2v-1.3b")
    specs = _lightx2v(wan)
    assert any(n.endswith(".norm_q.diff") and len(s) == 1 for n, _, s in specs)
    report = inspect_path(_file(tmp_path, "wan_lightx2v_cfg_step_distill_lora_rank8", specs))
    assert (report.family, report.kind, report.variant) == ("wan", "lora", None), report.evidence
    assert any(".diff on 1-D weights" in e for e in report.evidence), report.evidence
    assert any(".diff_m tensors" in e for e in report.evidence), report.evidence


def test_lycoris_full_stays_full_and_both_resolve_on_wan(tmp_path: Path) -> None:
    from modelsafe.runtime.resolve import resolve

    wan = rm.wan_transformer("t2v-1.3b")
    linears = ad.modules(wan, _WAN_LINEARS)
    full = [(f"diffusion_model.{m}.diff", "BF16", s) for m, s in linears]
    full += [(f"diffusion_model.{m}.diff_b", "BF16", (s[0],)) for m, s in linears]
    lycoris = _file(tmp_path, "wan_lycoris_full", full)
    report = inspect_path(lycoris)
    assert (report.family, report.kind, report.variant) == ("wan", "lycoris", "full")
    checkpoint = _file(tmp_path, "wan2.1_t2v_1.3B_bf16", wan)
    lightx2v = _file(tmp_path, "lightx2v", _lightx2v(wan))
    for path, kind in ((lycoris, "lycoris"), (lightx2v, "lora")):
        part = resolve(checkpoint, loras=[str(path)], catalog=None).parts[0]
        assert (part.kind, part.status) == (kind, "accepted"), [r.reason for r in part.reasons]


# --------------------------------------------------------------- a whole CLIPModel as CLIP-L


def test_a_whole_clip_model_counts_its_text_tower_only(tmp_path: Path) -> None:
    """openai/clip-vit-large-patch14's model.safetensors (CLIPModel: text and vision towers) in
    models/clip/: ComfyUI's CLIPLoader loads the text tower (123M parameters), not the 304M
    vision tower."""
    specs = co.transformers_state_dict(
        "CLIPModel",
        "CLIPConfig",
        text_config={"hidden_size": 768, "num_hidden_layers": 12, "intermediate_size": 3072},
        vision_config={
            "hidden_size": 1024,
            "num_hidden_layers": 24,
            "intermediate_size": 4096,
            "num_attention_heads": 16,
            "patch_size": 14,
        },
        projection_dim=768,
    )
    if specs is None:
        pytest.skip("transformers has no CLIPModel")
    report = inspect_path(_file(tmp_path, "clip-vit-large-patch14", specs))
    assert (report.kind, report.variant) == ("text_encoder", "clip_l"), report.evidence
    components = report.vram["components"]
    assert list(components) == ["text_encoder.clip_l"]
    text = sum(
        math.prod(s) for n, _, s in specs if n.startswith(("text_model.", "text_projection."))
    )
    assert components["text_encoder.clip_l"]["parameters"] == text
    assert report.vram["not_loaded_bytes"] > 0
    assert report.parameter_count > 3 * text  # (the file's own count keeps both towers)
