"""Every component and add-on kind, written as a real file, read and identified with evidence."""

from __future__ import annotations

from pathlib import Path

import pytest
from ic_build import CASES, write_case

from modelsafe.registry.inspect import inspect_path


@pytest.mark.parametrize("name", sorted(CASES))
def test_identified(tmp_path: Path, name: str) -> None:
    case = CASES[name]
    report = inspect_path(write_case(tmp_path, name))
    families = case.family if isinstance(case.family, tuple) else (case.family,)
    assert report.family in families, report.evidence
    assert report.kind == case.kind, report.evidence
    assert report.variant == case.variant, report.evidence
    for key, want in case.facts.items():
        assert report.facts.get(key) == want, (key, report.facts)
    assert any("shape [" in line for line in report.evidence), report.evidence
    if len(families) > 1:
        # A real tie is said out loud, with the other family as a candidate.
        assert any("ambiguous" in line for line in report.evidence)
        assert any("cannot tell" in line for line in report.evidence)
        others = {c["family"] for c in report.candidates if c["kind"] == case.kind}
        assert set(families) - {report.family} <= others
    else:
        assert report.confidence >= 0.85, report.evidence


def test_lora_metadata_supports_but_keys_decide(tmp_path: Path) -> None:
    from modelsafe.testing import write_safetensors

    case = CASES["lora_kohya_sd15"]
    wrong = {"ss_base_model_version": "sdxl_base_v1-0"}
    path = write_safetensors(tmp_path / "mislabelled.safetensors", case.build(), wrong)
    report = inspect_path(path)
    assert report.family == "sd1"
    assert any("keys win" in line for line in report.evidence), report.evidence
    agreeing = inspect_path(write_case(tmp_path, "lora_kohya_sd15"))
    assert any("agrees" in line for line in agreeing.evidence)
    assert agreeing.confidence > report.confidence


def test_kohya_alpha_read_from_the_tensor_when_metadata_is_silent(tmp_path: Path) -> None:
    import struct

    from modelsafe.testing import write_safetensors

    specs = [
        (
            "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight",
            "F16",
            (4, 768),
        ),
        (
            "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight",
            "F16",
            (320, 4),
        ),
        ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.alpha", "F16", ()),
    ]
    path = write_safetensors(tmp_path / "tiny.safetensors", specs, data="zeros")
    raw = bytearray(path.read_bytes())
    raw[-2:] = struct.pack("<e", 2.0)  # the alpha scalar is the last tensor
    path.write_bytes(bytes(raw))
    report = inspect_path(path)
    assert (report.family, report.kind) == ("sd1", "lora")
    assert report.facts["alpha"] == 2.0
    assert report.facts["rank"] == 4


def test_vae_tie_broken_by_metadata_says_why(tmp_path: Path) -> None:
    report = inspect_path(write_case(tmp_path, "vae_sdxl_diffusers_with_metadata"))
    assert report.family == "sdxl"
    assert any("decides the tie" in line for line in report.evidence)
    assert not any("ambiguous" in line for line in report.evidence)


def test_vae_evidence_names_the_latent_shape(tmp_path: Path) -> None:
    report = inspect_path(write_case(tmp_path, "vae_flux_ae"))
    assert report.evidence[0] == (
        "decoder.conv_in.weight has shape [512, 16, 3, 3]: 16 latent channels"
    )
