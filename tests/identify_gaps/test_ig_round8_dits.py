"""Identification round 8: DiT derivatives and the prediction type of flow families.

OmniGen2 (Lumina 2's diffusers names plus reference-image modules) was ``lumina2``; Wan VACE,
Wan-Animate and Z-Image's SigLIP (Omni/Edit) layout were named without what they are, and a VACE
module file alone was "no detector recognised this layout"; Wan, HunyuanImage 2.1, Kandinsky 5
and SANA (rectified-flow models) had no prediction type. Layouts: diffusers classes on the meta
device, OmniGen2's and VACE's module names as ComfyUI's comfy/ldm code loads them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from modelsafe.registry.inspect import InspectReport, inspect_path
from modelsafe.testing import write_safetensors
from modelsafe.testing.layouts import base_models as bm
from modelsafe.testing.layouts import components as co
from modelsafe.testing.layouts import recent_models as rm
from modelsafe.testing.layouts.base_models import Specs


def _inspect(tmp_path: Path, name: str, specs: Specs) -> InspectReport:
    return inspect_path(write_safetensors(tmp_path / f"{name}.safetensors", specs, data="sparse"))


def _evidence(report: InspectReport) -> str:
    return " | ".join(report.evidence)


def _omnigen2() -> Specs:
    """OmniGen2's transformer: Lumina 2's diffusers blocks at 2520 wide with 2048-wide
    Qwen2.5-VL-3B captions, plus ``ref_image_patch_embedder``, ``ref_image_refiner`` and the
    ``image_index_embedding`` of up to 5 reference images."""
    config = {"hidden_size": 2520, "num_attention_heads": 21, "num_kv_heads": 7}
    specs = co.meta_state_dict(
        "Lumina2Transformer2DModel", {**config, "cap_feat_dim": 2048}, "BF16"
    )
    refiner = [(n.replace("noise_refiner.", "ref_image_refiner."), d, s) for n, d, s in specs]
    extra: Specs = [
        ("image_index_embedding", "BF16", (5, 2520)),
        ("ref_image_patch_embedder.weight", "BF16", (2520, 64)),
        ("ref_image_patch_embedder.bias", "BF16", (2520,)),
    ]
    return specs + [r for r in refiner if r[0].startswith("ref_image_refiner.")] + extra


def _vace_module(width: int = 5120) -> Specs:
    """Kijai's Wan2_1-VACE_module: ``vace_blocks.N`` (``before_proj`` on block 0) and the
    96-channel ``vace_patch_embedding``, without the Wan transformer."""
    specs: Specs = [
        ("vace_patch_embedding.weight", "BF16", (width, 96, 1, 2, 2)),
        ("vace_patch_embedding.bias", "BF16", (width,)),
        ("vace_blocks.0.before_proj.weight", "BF16", (width, width)),
    ]
    for i in range(8):
        b = f"vace_blocks.{i}"
        specs += [
            (f"{b}.after_proj.weight", "BF16", (width, width)),
            (f"{b}.self_attn.q.weight", "BF16", (width, width)),
            (f"{b}.modulation", "BF16", (1, 6, width)),
        ]
    return specs


def test_omnigen2_is_not_lumina2(tmp_path: Path) -> None:
    report = _inspect(tmp_path, "omnigen2", _omnigen2())
    assert (report.family, report.kind) == ("unknown", "transformer"), report.evidence
    assert report.facts["architecture"] == "omnigen2"
    assert report.facts["hidden_size"] == 2520
    assert "lumina2" not in {c["family"] for c in report.candidates}


def test_lumina2_without_omnigen2_modules_stays_lumina2(tmp_path: Path) -> None:
    report = _inspect(tmp_path, "lumina2", rm.lumina2("diffusers"))
    assert report.family == "lumina2"


def test_vace_module_alone_names_its_architecture(tmp_path: Path) -> None:
    report = _inspect(tmp_path, "vace_module", _vace_module())
    assert (report.family, report.kind) == ("unknown", "transformer"), report.evidence
    assert report.facts["architecture"] == "wan-vace"
    assert "Wan 2.1 VACE module" in _evidence(report)


@pytest.mark.parametrize("naming", ["original", "diffusers"])
def test_wan_vace_is_wan_and_says_vace(tmp_path: Path, naming: str) -> None:
    vace = _vace_module(1536)
    if naming == "diffusers":
        vace = [(n, d, s) for n, d, s in vace if not n.startswith("vace_blocks.0.before")]
        vace = [(n.replace(".self_attn.q.", ".attn1.to_q."), d, s) for n, d, s in vace]
    specs = rm.wan_transformer("t2v-1.3b", naming) + vace
    report = _inspect(tmp_path, f"wan_vace_{naming}", specs)
    assert report.family == "wan", report.evidence
    assert "Wan VACE" in _evidence(report)
    assert "unknown" not in {c["family"] for c in report.candidates}


def test_wan_animate_says_animate(tmp_path: Path) -> None:
    specs = rm.wan_transformer("t2v-1.3b", "diffusers") + [
        ("pose_patch_embedding.weight", "BF16", (1536, 16, 1, 2, 2)),
        ("motion_encoder.conv_in.weight", "BF16", (32, 3, 1, 1)),
        ("motion_encoder.motion_synthesis_weight", "BF16", (512, 20)),
    ]
    report = _inspect(tmp_path, "wan_animate", specs)
    assert report.family == "wan"
    assert "Wan 2.2 Animate" in _evidence(report)


def test_z_image_siglip_branch_is_named(tmp_path: Path) -> None:
    specs = bm.diffusers_denoiser("z-image", "BF16", siglip_feat_dim=1152)
    report = _inspect(tmp_path, "z_image_omni", specs)
    assert report.family == "z-image"
    evidence = _evidence(report)
    assert "SigLIP image-conditioning branch" in evidence
    assert "Z-Image base and Turbo share this layout" not in evidence


FLOW_CASES = {
    "wan_original": lambda: rm.wan_transformer("t2v-1.3b"),
    "wan_diffusers": lambda: rm.wan_transformer("t2v-1.3b", "diffusers"),
    "hunyuanimage_2_1": rm.hunyuan_image21,
    "kandinsky_5": rm.kandinsky5,
    "sana_diffusers": lambda: rm.sana("diffusers"),
}


@pytest.mark.parametrize("name", sorted(FLOW_CASES))
def test_flow_families_say_flow(tmp_path: Path, name: str) -> None:
    report = _inspect(tmp_path, name, FLOW_CASES[name]())
    assert report.prediction_type == "flow", (report.family, report.evidence)
    assert "rectified-flow model" in _evidence(report)


def test_sana_sprint_is_not_called_flow(tmp_path: Path) -> None:
    """SANA-Sprint (a guidance embedder) is distilled to TrigFlow: no prediction type."""
    specs = rm.sana("diffusers") + [
        ("time_embed.guidance_embedder.linear_1.weight", "BF16", (2240, 256)),
        ("time_embed.guidance_embedder.linear_2.weight", "BF16", (2240, 2240)),
    ]
    report = _inspect(tmp_path, "sana_sprint", specs)
    assert report.family == "sana"
    assert report.prediction_type is None
    assert "SANA-Sprint" in _evidence(report)
