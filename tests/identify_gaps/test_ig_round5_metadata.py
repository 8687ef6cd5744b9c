"""Identification round 5: trainer metadata that names the families round 5 added.

``ss_base_model_version`` and ``modelspec.architecture`` as sd-scripts, musubi-tuner and
ai-toolkit write them: every FLUX.2 value began with "flux", which meant Flux.1, so a FLUX.2 LoRA
whose keys could not tell its base was called Flux.1 by its metadata, and one whose keys said
FLUX.2 was marked down for disagreeing. Lumina 2, Wan, HunyuanVideo, HunyuanImage 2.1 and
Kandinsky 5 values named no family; HunyuanVideo 1.5 (another model) still names none.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from modelsafe.registry.detect.metadata_family import family_from_metadata
from modelsafe.registry.inspect import inspect_path
from modelsafe.testing import write_safetensors
from modelsafe.testing.layouts import adapters as ad
from modelsafe.testing.layouts import recent_models as rm
from modelsafe.testing.layouts.base_models import Specs

_VERSION = "ss_base_model_version"
_ARCH = "modelspec.architecture"


@pytest.mark.parametrize(
    ("key", "value", "family"),
    [
        # ai-toolkit get_base_model_version()
        (_VERSION, "flux2", "flux2"),
        (_VERSION, "flux2_klein_4b", "flux2"),
        (_VERSION, "flux2_klein_9b", "flux2"),
        (_VERSION, "flux.1", "flux1"),
        (_VERSION, "flux.1_kontext", "flux1"),
        (_VERSION, "lumina2", "lumina2"),
        (_VERSION, "wan_2.1", "wan"),
        (_VERSION, "wan_2.2_14b", "wan"),
        (_VERSION, "wan_2.2_5b", "wan"),
        # musubi-tuner architecture_full_name
        (_VERSION, "flux_2_dev", "flux2"),
        (_VERSION, "flux_2_klein_4b", "flux2"),
        (_VERSION, "flux_kontext", "flux1"),
        (_VERSION, "wan", "wan"),
        (_VERSION, "hunyuan_video", "hunyuan-video"),
        (_VERSION, "hunyuan_video_1_5", None),
        (_VERSION, "kandinsky5", "kandinsky5"),
        (_VERSION, "framepack", None),
        # sd-scripts model versions
        (_VERSION, "flux1", "flux1"),
        (_VERSION, "hunyuan-image-2.1", "hunyuanimage2.1"),
        # modelspec.architecture: musubi-tuner, sd-scripts
        (_ARCH, "Flux.2-dev", "flux2"),
        (_ARCH, "Flux.2-klein-9b", "flux2"),
        (_ARCH, "Flux.1-dev", "flux1"),
        (_ARCH, "wan2.1", "wan"),
        (_ARCH, "hunyuan-video", "hunyuan-video"),
        (_ARCH, "hunyuan-video-1.5", None),
        (_ARCH, "Kandinsky-5", "kandinsky5"),
        (_ARCH, "lumina-2", "lumina2"),
        (_ARCH, "hunyuan-image-2.1", "hunyuanimage2.1"),
        (_ARCH, "hunyuan-image", None),
    ],
)
def test_trainer_values_name_the_family(key: str, value: str, family: str | None) -> None:
    said = family_from_metadata({key: value})
    assert (said[0] if said else None) == family


def test_hunyuan_video_1_5_s_architecture_is_not_overridden_by_its_version() -> None:
    said = family_from_metadata({_ARCH: "hunyuan-video-1.5", _VERSION: "hunyuan_video_1_5"})
    assert said is None


def _write(tmp_path: Path, name: str, specs: Specs, meta: dict[str, str]) -> Path:
    return write_safetensors(tmp_path / f"{name}.safetensors", specs, meta, data="sparse")


def test_ai_toolkit_s_version_decides_a_bfl_named_flux2_lora_as_flux2(tmp_path: Path) -> None:
    """FLUX.2's original (BFL) block names are Flux.1's: FLUX.2's SwiGLU MLP widths tell them
    apart, and the metadata agrees. ``flux2_klein_4b`` made it Flux.1."""
    specs = ad.comfy_lora(ad.linears(rm.flux2_bfl("klein-4b"), r"(?:double|single)_blocks\."))
    report = inspect_path(_write(tmp_path, "klein", specs, {_VERSION: "flux2_klein_4b"}))
    assert (report.family, report.kind) == ("flux2", "lora") and report.confidence >= 0.6
    evidence = " | ".join(report.evidence)
    assert "ss_base_model_version='flux2_klein_4b' agrees" in evidence
    assert "6x the model width, FLUX.2's" in evidence
    assert report.facts["hidden_size"] == 3072


@pytest.mark.parametrize(
    ("name", "specs", "meta", "family"),
    [
        (
            "flux2-musubi",
            lambda: ad.peft_lora(
                [("transformer.", ad.linears(rm.flux2_diffusers("klein-4b"), r"^transformer_"))]
            ),
            {_VERSION: "flux_2_klein_4b", _ARCH: "Flux.2-klein-4b"},
            "flux2",
        ),
        (
            "wan-musubi",
            lambda: ad.comfy_lora(
                ad.linears(rm.wan_transformer("t2v-1.3b"), r"blocks\.\d+\.(?:self|cross)_attn")
            ),
            {_VERSION: "wan", _ARCH: "wan2.1"},
            "wan",
        ),
    ],
)
def test_the_trainer_s_metadata_agrees_with_the_keys(
    tmp_path: Path, name: str, specs: Callable[[], Specs], meta: dict[str, str], family: str
) -> None:
    report = inspect_path(_write(tmp_path, name, specs(), meta))
    assert (report.family, report.kind) == (family, "lora"), report.evidence
    assert report.confidence == pytest.approx(0.88)  # the keys' 0.85, raised by the agreement
    assert any(e.endswith("agrees") for e in report.evidence), report.evidence
