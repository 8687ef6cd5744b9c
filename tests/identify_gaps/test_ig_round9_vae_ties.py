"""Identification round 9: VAEs whose layout several families share, as users download them.

The SD1/SD2 VAE and SDXL's retrained one (also TAESD/TAESDXL), Flux.1's ``ae`` and the SD3 VAE,
the Wan 2.1 VAE and Qwen-Image's fine-tune of it: the weights cannot tell them apart, so the
identity is a tie (``facts.tied_families``) unless the file says which. A Civitai sidecar
(``.civitai.info``) naming the base model the VAE was filed under said "filed under the wrong base
model" for an SDXL VAE under "SDXL 1.0" (the tie's first family, sd1, was compared); it now breaks
the tie as metadata does. The Wan 2.1 VAE was Qwen-Image's only (``qwen-image`` 0.85, never
``wan``). The files are the real layouts (header-only safetensors), read by the real detectors.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from modelsafe.registry.inspect import InspectReport, inspect_path
from modelsafe.testing import write_safetensors
from modelsafe.testing.layouts import base_models as bm
from modelsafe.testing.layouts import components as co
from modelsafe.testing.layouts import recent_models as rm
from modelsafe.testing.layouts.base_models import Specs


def _file(folder: Path, name: str, specs: Specs, meta: dict[str, str] | None = None) -> Path:
    return write_safetensors(folder / f"{name}.safetensors", specs, meta, data="sparse")


def _civitai_info(model: Path, base_model: str, kind: str = "VAE") -> None:
    """The ``.civitai.info`` Civitai Helper writes beside a download (the API's model version)."""
    info = {
        "id": 2,
        "modelId": 1,
        "name": "v1.0",
        "baseModel": base_model,
        "model": {"name": model.stem, "type": kind},
    }
    model.with_name(model.stem + ".civitai.info").write_text(json.dumps(info))


def _filed_wrong(report: InspectReport) -> list[str]:
    return [w for w in report.warnings if "filed under the wrong base model" in w]


def test_an_sdxl_vae_ties_with_sd1_when_nothing_says(tmp_path: Path) -> None:
    report = inspect_path(_file(tmp_path, "sdxl_vae", bm.ldm_vae(4, True)))
    assert (report.family, report.kind) == ("sd1", "vae"), report.evidence
    assert report.facts["tied_families"] == ["sd1", "sdxl"]


@pytest.mark.parametrize(
    ("base_model", "family"),
    [("SDXL 1.0", "sdxl"), ("Pony", "sdxl"), ("Illustrious", "sdxl"), ("SD 1.5", "sd1")],
)
def test_the_civitai_base_model_breaks_the_sd_vae_tie(
    tmp_path: Path, base_model: str, family: str
) -> None:
    vae = _file(tmp_path, "sdxl_vae", bm.ldm_vae(4, True))
    _civitai_info(vae, base_model)
    report = inspect_path(vae)
    assert (report.family, report.kind) == (family, "vae"), report.evidence
    assert "tied_families" not in report.facts
    assert report.confidence >= 0.9
    assert _filed_wrong(report) == [], report.warnings
    assert any("sdxl_vae.civitai.info" in e and "decides the tie" in e for e in report.evidence)
    assert report.facts["civitai"]["base_model"] == base_model


def test_the_civitai_base_model_breaks_the_taesd_tie(tmp_path: Path) -> None:
    taesdxl = _file(tmp_path, "taesdxl", co.taesd(4))
    _civitai_info(taesdxl, "Illustrious")
    report = inspect_path(taesdxl)
    assert (report.family, report.kind, report.variant) == ("sdxl", "vae", "taesd")
    assert _filed_wrong(report) == [], report.warnings


def test_a_family_that_decodes_with_the_vae_names_it(tmp_path: Path) -> None:
    """SD 2.x decodes with the SD1 VAE, Z-Image with Flux.1's ae: not tied families, but ones the
    VAE serves (``compatible_families``), so the sidecar names the VAE's family too."""
    sd2 = _file(tmp_path, "vae-ft-mse", bm.ldm_vae(4, True))
    _civitai_info(sd2, "SD 2.1 768")
    report = inspect_path(sd2)
    assert report.family == "sd2" and _filed_wrong(report) == [], report.warnings
    ae = _file(tmp_path, "ae", bm.ldm_vae(16, False))
    _civitai_info(ae, "ZImageTurbo")
    report = inspect_path(ae)
    assert report.family == "z-image" and _filed_wrong(report) == [], report.warnings


def test_a_sidecar_naming_another_family_still_warns(tmp_path: Path) -> None:
    """A 4-channel VAE filed under Flux.1 (whose VAE has 16 channels) is no tie to break."""
    vae = _file(tmp_path, "sdxl_vae", bm.ldm_vae(4, True))
    _civitai_info(vae, "Flux.1 D")
    report = inspect_path(vae)
    assert report.facts["tied_families"] == ["sd1", "sdxl"]
    assert len(_filed_wrong(report)) == 1, report.warnings


def test_metadata_comes_before_the_sidecar(tmp_path: Path) -> None:
    vae = _file(
        tmp_path, "vae", bm.ldm_vae(4, True), {"modelspec.architecture": "stable-diffusion-v1"}
    )
    _civitai_info(vae, "SDXL 1.0")
    report = inspect_path(vae)
    assert report.family == "sd1", report.evidence
    assert any("modelspec.architecture" in e and "decides the tie" in e for e in report.evidence)


# ------------------------------------------------------------------------ the Wan 2.1 VAE


def test_the_wan_21_vae_ties_qwen_image_and_wan(tmp_path: Path) -> None:
    """ComfyUI's wan_2.1_vae.safetensors and Qwen-Image's VAE (a fine-tune of it): one layout."""
    report = inspect_path(_file(tmp_path, "wan_2.1_vae", co.qwen_image_vae()))
    assert report.kind == "vae" and report.family in ("qwen-image", "wan"), report.evidence
    assert report.facts["tied_families"] == ["qwen-image", "wan"]
    assert report.facts["compatible_families"] == ["qwen-image", "wan"]
    assert any("cannot tell" in e for e in report.evidence)
    others = {c["family"] for c in report.candidates if c["kind"] == "vae"}
    assert {"qwen-image", "wan"} - {report.family} <= others


@pytest.mark.parametrize(
    ("base_model", "family"), [("Wan Video 14B t2v", "wan"), ("Qwen", "qwen-image")]
)
def test_the_civitai_base_model_breaks_the_wan_vae_tie(
    tmp_path: Path, base_model: str, family: str
) -> None:
    vae = _file(tmp_path, "wan_2.1_vae", co.qwen_image_vae())
    _civitai_info(vae, base_model)
    report = inspect_path(vae)
    assert (report.family, report.kind) == (family, "vae"), report.evidence
    assert "tied_families" not in report.facts
    assert _filed_wrong(report) == [], report.warnings


def test_the_diffusers_class_breaks_the_wan_vae_tie(tmp_path: Path) -> None:
    for class_name, family in (
        ("AutoencoderKLWan", "wan"),
        ("AutoencoderKLQwenImage", "qwen-image"),
    ):
        folder = tmp_path / class_name / "vae"
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({"_class_name": class_name, "z_dim": 16}))
        write_safetensors(
            folder / "diffusion_pytorch_model.safetensors", co.qwen_image_vae(), data="sparse"
        )
        report = inspect_path(folder)
        assert (report.family, report.kind) == (family, "vae"), report.evidence
        assert any("_class_name" in e and "decides the tie" in e for e in report.evidence)


def test_the_wan_22_vae_stays_wans_alone(tmp_path: Path) -> None:
    report = inspect_path(_file(tmp_path, "wan2.2_vae", rm.wan22_vae()))
    assert (report.family, report.kind) == ("wan", "vae")
    assert "tied_families" not in report.facts


def test_resolve_pairs_the_tied_wan_vae_with_wan_and_qwen_image(tmp_path: Path) -> None:
    from modelsafe.runtime.resolve import resolve

    vae = str(_file(tmp_path, "wan_2.1_vae", co.qwen_image_vae()))
    wan = _file(tmp_path, "wan2.1_t2v_1.3B_bf16", rm.wan_transformer("t2v-1.3b"))
    qwen = _file(tmp_path, "qwen_image_bf16", bm.diffusers_denoiser("qwen-image", "BF16"))
    sdxl = _file(tmp_path, "sdxl_unet", bm.ldm_unet(**bm.UNET_PARAMS["sdxl"]))
    for checkpoint in (wan, qwen):
        part = resolve(checkpoint, vae=vae, catalog=None).parts[0]
        assert part.status == "accepted", (checkpoint, [r.reason for r in part.reasons])
    assert resolve(sdxl, vae=vae, catalog=None).parts[0].status == "rejected"


def test_scan_files_a_wan_vae_under_wan_when_its_sidecar_says(
    tmp_path: Path, run_cli: Callable[..., tuple[int, str, str]]
) -> None:
    """``ls --family wan`` lists the Wan 2.1 VAE its Civitai page filed under Wan Video (with
    nothing said, the tie's first family, Qwen-Image, is the catalog's)."""
    models = tmp_path / "ComfyUI" / "models" / "vae"
    models.mkdir(parents=True)
    _civitai_info(_file(models, "wan_2.1_vae", co.qwen_image_vae()), "Wan Video 14B t2v")
    _file(models, "qwen_image_vae", co.qwen_image_vae("F16"))  # (another file: another hash)
    catalog = f"sqlite:///{tmp_path / 'catalog.db'}"
    code, _, err = run_cli("--catalog", catalog, "scan", str(models), "--json")
    assert code == 0, err
    for family, names in (("wan", ["wan_2.1_vae"]), ("qwen-image", ["qwen_image_vae"])):
        code, out, err = run_cli("--catalog", catalog, "ls", "--family", family, "--json")
        assert code == 0, err
        rows = json.loads(out)
        rows = rows["models"] if isinstance(rows, dict) else rows
        assert [(r["name"], r["kind"]) for r in rows] == [(n, "vae") for n in names], rows
