"""The identification gaps, each written as a real file and identified with evidence."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from ig_build import CASES, write_case

from modelsafe.registry.inspect import inspect_path
from modelsafe.testing import write_safetensors
from modelsafe.testing.layouts import base_models as bm
from modelsafe.testing.layouts import components as co


@pytest.mark.parametrize("name", sorted(CASES))
def test_identified(tmp_path: Path, name: str) -> None:
    case = CASES[name]
    report = inspect_path(write_case(tmp_path, name))
    families = case.family if isinstance(case.family, tuple) else (case.family,)
    assert report.family in families, report.evidence
    assert (report.kind, report.variant) == (case.kind, case.variant), report.evidence
    for key, want in case.facts.items():
        assert report.facts.get(key) == want, (key, report.facts)
    assert any("shape [" in line for line in report.evidence), report.evidence
    if len(families) > 1:
        assert any("ambiguous" in line for line in report.evidence)
        assert any("cannot tell" in line for line in report.evidence)
        others = {c["family"] for c in report.candidates if c["kind"] == case.kind}
        assert set(families) - {report.family} <= others
    else:
        assert report.confidence >= 0.9, report.evidence


def test_multi_encoder_counts_each_encoder_and_names_the_candidates(tmp_path: Path) -> None:
    report = inspect_path(write_case(tmp_path, "te_sd3_incl_clips"))
    encoders = {e["name"]: e for e in report.facts["encoders"]}
    assert list(encoders) == ["clip_l", "clip_g", "t5xxl"]
    for name, prefix in (
        ("clip_l", "text_encoders.clip_l."),
        ("clip_g", "text_encoders.clip_g."),
        ("t5xxl", "text_encoders.t5xxl."),
    ):
        want = sum(math.prod(s) for n, _, s in bm.text_encoders_sd3() if n.startswith(prefix))
        assert encoders[name]["parameter_count"] == want
        assert encoders[name]["key_prefix"] == prefix
        assert any(line.startswith(prefix) and "M parameters" in line for line in report.evidence)
    assert sum(e["parameter_count"] for e in encoders.values()) == report.parameter_count
    assert encoders["t5xxl"]["hidden_size"] == 4096 and encoders["clip_g"]["num_layers"] == 32
    candidates = {(c["family"], c["kind"], c["variant"]) for c in report.candidates}
    assert ("sd3", "text_encoder", "clip_l+clip_g+t5xxl") in candidates
    assert ("sd3.5", "text_encoder", "clip_l+clip_g+t5xxl") in candidates
    assert any("fits sd3, sd3.5" in line for line in report.evidence)


def test_multi_encoder_shapes_win_over_a_lying_prefix(tmp_path: Path) -> None:
    specs = bm.prefixed("clip_l.transformer.", co.clip_g()) + bm.prefixed(
        "t5xxl.transformer.", co.t5xxl()
    )
    report = inspect_path(write_safetensors(tmp_path / "swapped.safetensors", specs))
    assert (report.kind, report.variant) == ("text_encoder", "clip_g+t5xxl")
    assert report.family == "any"  # no family uses exactly CLIP-G + T5-XXL
    assert any("its prefix says clip_l; the shapes win" in line for line in report.evidence)


def test_multi_encoder_with_an_unknown_part_is_weak(tmp_path: Path) -> None:
    odd = bm.clip_text(512, 6, None, "F16")  # no released text encoder is 512 x 6
    specs = bm.prefixed("clip_l.transformer.", co.clip_l()) + bm.prefixed(
        "mystery.transformer.", odd
    )
    report = inspect_path(write_safetensors(tmp_path / "odd.safetensors", specs))
    assert report.kind == "text_encoder"
    assert report.variant == "clip_l+unknown(mystery)"
    assert report.confidence < 0.7


@pytest.mark.parametrize(
    "encoders",
    [
        pytest.param(lambda: bm.text_encoders_sd3(t5_layers=2), id="sd3-incl-clips"),
        pytest.param(lambda: bm.text_encoders_flux(t5_layers=2), id="flux-all-in-one"),
    ],
)
def test_encoders_inside_a_checkpoint_stay_a_checkpoint(tmp_path: Path, encoders) -> None:  # type: ignore[no-untyped-def]
    from modelsafe.registry.identify import collect_candidates
    from modelsafe.registry.read import read_index

    specs = bm.dit_checkpoint(bm.sai_mmdit(depth=24), encoders())
    path = write_safetensors(tmp_path / "ckpt.safetensors", specs)
    mine = [
        c
        for c in collect_candidates(read_index(path))
        if c.detector == "family_components" and c.kind in ("text_encoder", "vae", "upscaler")
    ]
    assert mine == [], [(c.family, c.kind, c.variant) for c in mine]
    assert inspect_path(path).kind == "checkpoint"


def test_whole_clip_model_stays_a_text_encoder(tmp_path: Path) -> None:
    specs = co.clip_l() + co.clip_vision("clip_vit_l")
    report = inspect_path(write_safetensors(tmp_path / "clip.safetensors", specs))
    assert (report.kind, report.variant) == ("text_encoder", "clip_l")
    assert not any(c["kind"] == "image_encoder" for c in report.candidates)


def test_taesd_tie_broken_by_metadata(tmp_path: Path) -> None:
    path = write_safetensors(
        tmp_path / "taesdxl.safetensors",
        co.taesd(4),
        {"modelspec.architecture": "stable-diffusion-xl-v1-base/vae"},
    )
    report = inspect_path(path)
    assert (report.family, report.variant) == ("sdxl", "taesd")
    assert any("decides the tie" in line for line in report.evidence)
    assert report.facts["compatible_families"] == ["sd1", "sd2", "sdxl", "sdxl_refiner"]


def test_taesd_is_not_a_kl_vae_and_kl_vae_is_not_taesd(tmp_path: Path) -> None:
    kl = inspect_path(write_safetensors(tmp_path / "kl.safetensors", co.ldm_vae(4, True, "F16")))
    assert kl.kind == "vae" and kl.variant is None
    assert not any(c["variant"] == "taesd" for c in kl.candidates)
    tiny = inspect_path(write_safetensors(tmp_path / "tiny.safetensors", co.taesd(16)))
    assert tiny.facts.get("architecture") == "taesd"
    assert not any(c["variant"] is None and c["kind"] == "vae" for c in tiny.candidates)


def test_upscaler_with_an_odd_upsampler_has_no_scale(tmp_path: Path) -> None:
    specs = [
        (n, d, (40, 64, 3, 3) if n == "up.0.weight" else (40,) if n == "up.0.bias" else s)
        for n, d, s in co.omnisr(4)
    ]
    report = inspect_path(write_safetensors(tmp_path / "odd.safetensors", specs))
    assert (report.kind, report.variant) == ("upscaler", "omnisr")
    assert report.facts["scale"] is None
    assert any("not 3 x scale^2" in line for line in report.evidence)


def _torch_state(specs: bm.Specs) -> dict[str, object]:
    import torch

    dtypes = {"F32": torch.float32, "F16": torch.float16, "I64": torch.int64}
    return {n: torch.zeros(s, dtype=dtypes[d]) for n, d, s in specs}


@pytest.mark.parametrize(
    ("specs", "wrap", "variant"),
    [
        pytest.param(
            lambda: co.hat(4, embed=60, depths=(2, 2), window=8, squeeze=15),
            "params_ema",
            "hat x4",
            id="hat-x4-pth",
        ),
        pytest.param(lambda: co.span(4), "params", "span x4", id="span-x4-pth"),
    ],
)
def test_pth_upscalers(tmp_path: Path, specs, wrap: str, variant: str) -> None:  # type: ignore[no-untyped-def]
    import torch

    path = tmp_path / "upscaler.pth"
    torch.save({wrap: _torch_state(specs())}, path)
    report = inspect_path(path)
    assert (report.format, report.kind, report.variant) == ("torch-zip", "upscaler", variant)


def test_new_upscalers_are_refused_by_the_runner_with_a_reason(tmp_path: Path) -> None:
    from modelsafe.errors import UsageError
    from modelsafe.runtime.upscalers.select import describe_upscaler

    with pytest.raises(UsageError) as err:
        describe_upscaler(write_case(tmp_path, "upscaler_hat_x4"))
    assert "hat" in err.value.reason


@pytest.mark.parametrize(
    "name", ["te_sd3_incl_clips", "clip_vision_h", "taesd3_comfyui", "upscaler_dat_x4"]
)
def test_detectors_need_only_the_header_index(name: str) -> None:
    """Identification works on the tensor table alone: the index names a file that does not
    exist, so any attempt to read tensor data would fail."""
    from modelsafe.registry.identify import identify
    from modelsafe.types import TensorIndex, TensorInfo

    case = CASES[name]
    tensors = tuple(TensorInfo(n, d, s) for n, d, s in case.build())
    index = TensorIndex(Path("/nonexistent/model.safetensors"), "safetensors", tensors)
    identity = identify(index)
    assert (identity.kind, identity.variant) == (case.kind, case.variant)
