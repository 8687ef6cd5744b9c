"""Renamed/prefixed keys, fp8 (incl. ComfyUI scaled fp8), GGUF quants, unknown layouts, CLI JSON."""

from __future__ import annotations

import json
from pathlib import Path

from ib_build import write_gguf, write_single

from modelsafe.registry.detect.prefixes import KeyView, find_prefix
from modelsafe.registry.inspect import inspect_path
from modelsafe.testing import write_safetensors
from modelsafe.testing.layouts import base_models as bm
from modelsafe.types import TensorIndex, TensorInfo


def test_find_prefix_takes_whatever_sits_before_the_anchors() -> None:
    names = {"x.y.double_blocks.0.img_attn.qkv.weight", "x.y.img_in.weight", "vae.img_in.weight"}
    assert find_prefix(names, ("double_blocks.0.img_attn.qkv.weight", "img_in.weight")) == "x.y."
    assert find_prefix({"ximg_in.weight"}, ("img_in.weight",)) is None  # not at a key boundary
    view = KeyView.of(
        TensorIndex(Path("f"), "safetensors", (TensorInfo("p.a.1.w", "F16", (2, 3)),)), "p."
    )
    assert view.says("a.1.w") == "p.a.1.w has shape [2, 3]" and view.count_blocks("a.") == 2


def test_renamed_prefixes(tmp_path: Path) -> None:
    unet = bm.prefixed("diffusion_model.", bm.ldm_unet(**bm.UNET_PARAMS["sdxl"]))
    report = inspect_path(write_safetensors(tmp_path / "u.safetensors", unet))
    assert (report.family, report.kind, report.variant) == ("sdxl", "unet", "base")
    assert report.facts["key_prefix"] == "diffusion_model."
    # ComfyUI single-transformer save: model.diffusion_model. prefix but nothing beside it.
    flux = bm.prefixed("model.diffusion_model.", bm.bfl_flux(guidance=False))
    report = inspect_path(write_safetensors(tmp_path / "f.safetensors", flux))
    assert (report.family, report.kind, report.variant) == ("flux1", "transformer", "schnell")
    assert any("'model.diffusion_model.'" in e for e in report.evidence)


def test_v_pred_marker_key_decides_sd2(tmp_path: Path) -> None:
    specs = bm.unet_checkpoint("sd2") + [("v_pred", "F32", ())]
    report = inspect_path(write_safetensors(tmp_path / "v.safetensors", specs))
    assert (report.variant, report.prediction_type) == ("768-v", "v_prediction")
    assert any("'v_pred'" in e for e in report.evidence)


def test_comfy_scaled_fp8_flux(tmp_path: Path) -> None:
    specs: list[tuple[str, str, tuple[int, ...]]] = []
    for name, dtype, shape in bm.prefixed("model.diffusion_model.", bm.bfl_flux()):
        if name.endswith(".weight") and len(shape) == 2:
            specs += [
                (name, "F8_E4M3", shape),
                (name[: -len("weight")] + "scale_weight", "F32", ()),
            ]
        else:
            specs.append((name, dtype, shape))
    specs.append(("model.diffusion_model.scaled_fp8", "F8_E4M3", (0,)))
    report = inspect_path(write_safetensors(tmp_path / "fp8.safetensors", specs))
    assert (report.family, report.kind, report.variant) == ("flux1", "transformer", "dev")
    assert report.precision == "fp8_e4m3fn"
    assert report.facts["quantization"] == "comfy-scaled-fp8"
    assert any(
        "scaled fp8" in e and "model.diffusion_model.scaled_fp8" in e for e in report.evidence
    )


def test_gguf_flux_partial(tmp_path: Path) -> None:
    specs = [
        ("img_in.weight", "Q8_0", (3072, 64)),
        ("img_in.bias", "F32", (3072,)),
        ("time_in.in_layer.weight", "Q8_0", (3072, 256)),
        ("vector_in.in_layer.weight", "Q4_K", (3072, 768)),
        ("guidance_in.in_layer.weight", "Q4_K", (3072, 256)),
        ("double_blocks.0.img_mod.lin.bias", "F32", (18432,)),
        ("double_blocks.0.img_attn.norm.query_norm.scale", "F32", (128,)),
        ("single_blocks.0.norm.query_norm.scale", "F32", (128,)),
        ("final_layer.linear.weight", "Q8_0", (64, 3072)),
    ]
    report = inspect_path(write_gguf(tmp_path / "flux-Q4_K.gguf", "flux", specs))
    assert report.format == "gguf"
    assert (report.family, report.kind, report.variant) == ("flux1", "transformer", "dev")
    assert report.facts["quantization"] == "gguf"
    assert set(report.facts["quant_types"]) == {"Q4_K", "Q8_0"}
    assert report.facts["hidden_size"] == 3072


def test_gguf_sdxl_partial(tmp_path: Path) -> None:
    specs = [
        ("input_blocks.0.0.weight", "F16", (320, 4, 3, 3)),
        ("time_embed.0.weight", "Q8_0", (1280, 320)),
        ("label_emb.0.0.weight", "Q8_0", (1280, 2816)),
        ("input_blocks.4.1.proj_in.weight", "Q8_0", (640, 640)),
        ("input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight", "Q4_K", (640, 2048)),
        ("out.2.weight", "F16", (4, 320, 3, 3)),
    ]
    report = inspect_path(write_gguf(tmp_path / "sdxl-Q8_0.gguf", "sdxl", specs))
    assert (report.family, report.kind, report.variant) == ("sdxl", "unet", "base")
    assert report.precision == "Q8_0"
    assert report.facts["context_dim"] == 2048 and report.facts["adm_in_channels"] == 2816


def test_unknown_unet_layout_via_cli(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    specs = bm.ldm_unet(context_dim=512)  # a cross-attention width no released family has
    path = write_safetensors(tmp_path / "odd.safetensors", specs)
    code, out, _ = run_cli("inspect", str(path), "--json")
    assert code == 0
    report = json.loads(out)
    assert (report["family"], report["kind"]) == ("unknown", "unknown")
    closest = report["candidates"][0]
    assert closest["family"] == "sd1" and closest["score"] < 0.3
    assert any("context width 512 matches no known" in why for why in closest["why"])


def test_cli_json_sd15_and_flux(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    sd15 = write_single(tmp_path / "sd15.safetensors", "sd15_checkpoint")
    code, out, _ = run_cli("inspect", str(sd15), "--json")
    assert code == 0
    report = json.loads(out)
    for key in (
        "path format family kind variant prediction_type precision parameter_count weight_bytes "
        "tensor_count dtype_histogram vram evidence confidence candidates warnings"
    ).split():
        assert key in report
    assert (report["family"], report["kind"], report["variant"]) == ("sd1", "checkpoint", "normal")
    assert report["prediction_type"] == "epsilon" and report["precision"] == "fp16"
    assert report["tensor_count"] == len(bm.unet_checkpoint("sd1"))
    assert report["facts"]["context_dim"] == 768

    flux = write_single(tmp_path / "flux1-dev.safetensors", "flux1_dev_transformer")
    code, out, _ = run_cli("inspect", str(flux), "--json")
    report = json.loads(out)
    assert code == 0
    assert (report["family"], report["kind"], report["variant"]) == ("flux1", "transformer", "dev")
    assert report["prediction_type"] == "flow" and report["precision"] == "bf16"
    assert report["parameter_count"] == 11_901_408_320  # the released flux1-dev's count
    assert report["evidence"][0].startswith("guidance_in.in_layer.weight has shape [3072, 256]")
