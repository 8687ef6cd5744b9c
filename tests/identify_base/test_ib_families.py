"""Every base family x kind, written as a real file (sparse, full size), read and identified."""

from __future__ import annotations

from pathlib import Path

import pytest
from ib_build import PIPELINES, SINGLE_FILES, write_pipeline, write_single

from modelsafe.registry.inspect import inspect_path


@pytest.mark.parametrize("name", sorted(SINGLE_FILES))
def test_single_file_identified(tmp_path: Path, name: str) -> None:
    _, family, kind, variant, prediction = SINGLE_FILES[name]
    path = write_single(tmp_path / f"{name}.safetensors", name)
    report = inspect_path(path)
    assert (report.family, report.kind, report.variant) == (family, kind, variant), report.evidence
    assert report.prediction_type == prediction
    assert report.confidence >= 0.9
    assert any("has shape [" in line for line in report.evidence), report.evidence
    present = report.facts["components_present"]
    assert present[0] in ("unet", "transformer")
    assert (len(present) > 1) == (kind == "checkpoint")
    assert report.facts["latent_channels"] in (4, 16)


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_pipeline_identified(tmp_path: Path, name: str) -> None:
    _, component, _, _, family, variant = PIPELINES[name]
    report = inspect_path(write_pipeline(tmp_path / name, name))
    assert (report.family, report.kind, report.variant) == (family, "pipeline", variant)
    assert report.facts["denoiser_component"] == component
    assert component in report.facts["components_present"]
    assert any(f"{component}/" in line for line in report.evidence)


def test_sd1_evidence_names_the_deciding_shape(tmp_path: Path) -> None:
    report = inspect_path(write_single(tmp_path / "sd15.safetensors", "sd15_checkpoint"))
    assert report.evidence[0] == (
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight "
        "has shape [320, 768]: cross-attention context 768 = sd1"
    )
    facts = report.facts
    assert facts["context_dim"] == 768 and facts["in_channels"] == 4
    assert facts["key_prefix"] == "model.diffusion_model."
    assert facts["components_present"] == ["unet", "vae", "text_encoder"]


def test_sdxl_facts(tmp_path: Path) -> None:
    facts = inspect_path(write_single(tmp_path / "x.safetensors", "sdxl_checkpoint")).facts
    assert facts["context_dim"] == 2048 and facts["adm_in_channels"] == 2816
    assert facts["components_present"] == ["unet", "vae", "text_encoder", "text_encoder_2"]
    refiner = inspect_path(write_single(tmp_path / "r.safetensors", "sdxl_refiner_checkpoint"))
    assert refiner.facts["context_dim"] == 1280 and refiner.facts["adm_in_channels"] == 2560
    assert refiner.facts["components_present"] == ["unet", "vae", "text_encoder_2"]


def test_sd3_checkpoint_lists_three_text_encoders(tmp_path: Path) -> None:
    facts = inspect_path(write_single(tmp_path / "s.safetensors", "sd3_medium_checkpoint")).facts
    assert facts["components_present"] == [
        "transformer",
        "vae",
        "text_encoder",
        "text_encoder_2",
        "text_encoder_3",
    ]
    assert facts["depth"] == 24 and facts["hidden_size"] == 1536


def test_sd2_without_metadata_is_ambiguous_with_both_candidates(tmp_path: Path) -> None:
    report = inspect_path(write_single(tmp_path / "sd2.safetensors", "sd2_checkpoint"))
    assert report.prediction_type == "ambiguous" and report.variant is None
    assert any("512-base" in e and "768-v" in e for e in report.evidence)
    alternatives = {(c["variant"], c["family"]) for c in report.candidates}
    assert {("512-base", "sd2"), ("768-v", "sd2")} <= alternatives


@pytest.mark.parametrize(
    ("metadata", "variant", "prediction"),
    [
        ({"modelspec.prediction_type": "v"}, "768-v", "v_prediction"),
        ({"modelspec.architecture": "stable-diffusion-v2-768-v"}, "768-v", "v_prediction"),
        ({"modelspec.prediction_type": "epsilon"}, "512-base", "epsilon"),
    ],
)
def test_sd2_metadata_decides(
    tmp_path: Path, metadata: dict[str, str], variant: str, prediction: str
) -> None:
    report = inspect_path(write_single(tmp_path / "sd2.safetensors", "sd2_checkpoint", metadata))
    assert (report.variant, report.prediction_type) == (variant, prediction)
    assert any("metadata modelspec." in e for e in report.evidence)
