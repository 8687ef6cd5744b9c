"""Identification round 5: the models round 4 named as unknown transformers are families.

FLUX.2 (``flux2``: transformers, LoRAs, VAE), Lumina Image 2.0 (``lumina2``), SANA (``sana``),
Wan 2.1/2.2 (``wan``), HunyuanVideo (``hunyuan-video``), HunyuanImage 2.1 (``hunyuanimage2.1``)
and Kandinsky 5 (``kandinsky5``) are what ``inspect`` says, ``ls --family`` and ``set --family``
take, ``resolve`` pairs by (a FLUX.2 LoRA or VAE fits FLUX.2, not Flux.1, and the other way
round) and ``generate`` refuses by name before loading anything. What their layouts do not tell
apart (HunyuanVideo 1.5 vs HunyuanImage 2.1's refiner, SANA-Video, PixArt) stays ``unknown``.
Every file is written full size with sparse data from the project's layouts.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
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

Cli = Callable[..., tuple[int, str, str]]
_COMFY = "model.diffusion_model."


def _write(folder: Path, name: str, specs: Specs) -> Path:
    return write_safetensors(folder / f"{name}.safetensors", specs, data="sparse")


def _evidence(report: Any) -> str:
    return " | ".join(report.evidence)


def _flux2_lora() -> Specs:
    """A PEFT LoRA of FLUX.2 [klein] 4B in diffusers names (``ff.linear_in``: FLUX.2's only)."""
    mods = ad.linears(rm.flux2_diffusers("klein-4b"), r"^transformer_blocks\.")
    return ad.peft_lora([("transformer.", mods)])


def _flux1_lora() -> Specs:
    return ad.comfy_lora(ad.linears(bm.bfl_flux(), r"(?:double|single)_blocks\."))


def _flux1_vae() -> Specs:
    return co.diffusers_vae(16, quant_conv=False)


@dataclass(frozen=True)
class Case:
    build: Callable[[], Specs]
    family: str
    kind: str
    variant: str | None
    says: str  # a phrase the evidence must hold
    score: float


CASES: dict[str, Case] = {
    "flux2_dev": Case(lambda: rm.flux2_bfl("dev"), "flux2", "transformer", "dev", "[dev]", 0.95),
    "flux2_klein_4b_comfy": Case(
        lambda: bm.prefixed(_COMFY, rm.flux2_bfl("klein-4b")),
        "flux2",
        "transformer",
        "klein-4b",
        "FLUX.2 [klein] 4B",
        0.95,
    ),
    "flux2_klein_9b_diffusers": Case(
        lambda: rm.flux2_diffusers("klein-9b"), "flux2", "transformer", "klein-9b", "9B", 0.95
    ),
    "flux2_vae": Case(rm.flux2_vae, "flux2", "vae", None, "the FLUX.2 VAE", 0.9),
    "flux2_lora": Case(_flux2_lora, "flux2", "lora", None, "model width 3072", 0.85),
    "lumina2_original": Case(
        lambda: rm.lumina2("original"), "lumina2", "transformer", None, "not Z-Image", 0.95
    ),
    "lumina2_diffusers": Case(
        lambda: rm.lumina2("diffusers"), "lumina2", "transformer", None, "Lumina Image 2.0", 0.95
    ),
    "sana_original": Case(lambda: rm.sana("original"), "sana", "transformer", None, "SANA", 0.9),
    "sana_diffusers": Case(lambda: rm.sana("diffusers"), "sana", "transformer", None, "SANA", 0.9),
    "wan_t2v_14b": Case(
        lambda: rm.wan_transformer("t2v-14b"), "wan", "transformer", None, "Wan", 0.9
    ),
    "wan_ti2v_5b_diffusers": Case(
        lambda: rm.wan_transformer("ti2v-5b", "diffusers"), "wan", "transformer", None, "48", 0.9
    ),
    "wan_lora": Case(
        lambda: ad.comfy_lora(
            ad.linears(rm.wan_transformer("t2v-14b"), r"blocks\.\d+\.(?:self|cross)_attn")
        ),
        "wan",
        "lora",
        None,
        "model width 5120",
        0.85,
    ),
    "hunyuan_video_original": Case(
        lambda: rm.hunyuan_video("original"),
        "hunyuan-video",
        "transformer",
        None,
        "1x2x2 patches of video latents",
        0.9,
    ),
    # The round-4 table took a diffusers HunyuanVideo for HunyuanImage 2.1 (two anchors matched).
    "hunyuan_video_diffusers": Case(
        lambda: rm.hunyuan_video("diffusers"),
        "hunyuan-video",
        "transformer",
        None,
        "the CLIP-L pooled vector",
        0.9,
    ),
    "hunyuanimage21_original": Case(
        lambda: rm.hunyuan_image21("original"),
        "hunyuanimage2.1",
        "transformer",
        None,
        "a 2-D patch embedding",
        0.9,
    ),
    "hunyuanimage21_diffusers": Case(
        lambda: rm.hunyuan_image21("diffusers"),
        "hunyuanimage2.1",
        "transformer",
        None,
        "a 2-D patch embedding",
        0.9,
    ),
    "kandinsky5": Case(rm.kandinsky5, "kandinsky5", "transformer", None, "Kandinsky 5.0", 0.9),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_new_families_are_what_inspect_says(tmp_path: Path, name: str) -> None:
    case = CASES[name]
    report = inspect_path(_write(tmp_path, name, case.build()))
    got = (report.family, report.kind, report.variant, report.confidence)
    assert got == (case.family, case.kind, case.variant, case.score), report.evidence
    assert case.says in _evidence(report)
    assert "no family" not in _evidence(report) and "is unknown" not in _evidence(report)


@pytest.mark.parametrize(
    ("name", "build", "architecture", "says"),
    [
        (
            "hunyuan_video_15",
            rm.hunyuan_video15,
            "hunyuan",
            "HunyuanVideo 1.5 and HunyuanImage 2.1's refiner (1x1x1 patches)",
        ),
        ("pixart_sigma", rm.pixart_sigma, "pixart", "no GLUMBConv MLP"),
        (
            "sana_video",
            lambda: co.meta_state_dict("SanaVideoTransformer3DModel", {}, "BF16"),
            "sana-video",
            "SANA-Video",
        ),
    ],
)
def test_what_the_layouts_do_not_tell_stays_unknown(
    tmp_path: Path, name: str, build: Callable[[], Specs], architecture: str, says: str
) -> None:
    """HunyuanVideo 1.5 shares HunyuanImage 2.1's diffusers names, PixArt and SANA-Video SANA's:
    a family only when the patch embedding (or SANA's GLUMBConv MLP) says which."""
    report = inspect_path(_write(tmp_path, name, build()))
    assert (report.family, report.kind, report.confidence) == ("unknown", "transformer", 0.6)
    assert report.facts["architecture"] == architecture and says in _evidence(report)
    assert not report.candidates


def test_inspect_names_flux2_and_gives_no_flux1_candidate(tmp_path: Path, run_cli: Cli) -> None:
    path = _write(tmp_path, "flux2-dev", rm.flux2_bfl("dev"))
    code, out, err = run_cli("inspect", str(path))
    assert code == 0, err
    assert "what       flux2/transformer/dev  (confidence 0.95)" in out
    code, out, _ = run_cli("inspect", str(path), "--json")
    report = json.loads(out)
    assert report["facts"]["latent_channels"] == 32
    assert all(c["family"] != "flux1" for c in report["candidates"])


def test_ls_and_set_take_the_new_families(tmp_path: Path, run_cli: Cli) -> None:
    models = tmp_path / "models"
    models.mkdir()
    _write(models, "flux-2-klein-4b", rm.flux2_bfl("klein-4b"))
    _write(models, "flux2-vae", rm.flux2_vae())
    _write(models, "flux2-lora", _flux2_lora())
    _write(models, "ae", _flux1_vae())
    _write(models, "wan2.1_t2v_1.3b", rm.wan_transformer("t2v-1.3b"))
    catalog = f"sqlite:///{tmp_path / 'catalog.db'}"
    code, _, err = run_cli("--catalog", catalog, "scan", str(models), "--no-hash")
    assert code == 0, err
    code, out, err = run_cli("--catalog", catalog, "ls", "--family", "flux2", "--json")
    assert code == 0, err
    rows = json.loads(out)
    rows = rows["models"] if isinstance(rows, dict) else rows
    got = sorted((r["name"], r["kind"]) for r in rows)
    assert got == [("flux-2-klein-4b", "transformer"), ("flux2-lora", "lora"), ("flux2-vae", "vae")]
    # a user's correction may name a new family (it was "unknown family 'hunyuan-video'")
    wan = str(models / "wan2.1_t2v_1.3b.safetensors")
    code, _, err = run_cli("--catalog", catalog, "set", wan, "--family", "hunyuan-video")
    assert code == 0, err
    code, _, err = run_cli("--catalog", catalog, "set", wan, "--family", "flux3")
    assert code == 2 and "hunyuanimage2.1" in err and "kandinsky5" in err


def _statuses(result: Any) -> dict[str, tuple[str, str]]:
    """role -> (status, every reason) of each part."""
    return {p.role: (p.status, " | ".join(r.reason for r in p.reasons)) for p in result.parts}


def test_resolve_pairs_flux2_loras_and_vaes_with_flux2_only(tmp_path: Path) -> None:
    from modelsafe.runtime.resolve import resolve

    klein = _write(tmp_path, "flux-2-klein-4b", rm.flux2_bfl("klein-4b"))
    flux1 = _write(tmp_path, "flux1-dev", bm.bfl_flux())
    lora2, vae2 = _write(tmp_path, "l2", _flux2_lora()), _write(tmp_path, "v2", rm.flux2_vae())
    lora1, vae1 = _write(tmp_path, "l1", _flux1_lora()), _write(tmp_path, "v1", _flux1_vae())

    same = resolve(klein, loras=[str(lora2)], vae=vae2)
    statuses = _statuses(same)
    assert statuses["vae"] == ("accepted", "VAE latent channels 32 = checkpoint's 32")
    assert statuses["lora"][0] == "accepted"
    assert statuses["lora"][1].startswith("LoRA is for FLUX.2, like the checkpoint")
    # the VAE is given: only [klein] 4B's own text encoder (Qwen3-4B) is missing
    assert [(m.slot, m.kind) for m in same.missing] == [("qwen3_4b", "text_encoder")]
    assert not same.compatible

    flux2_on_flux1 = _statuses(resolve(flux1, loras=[str(lora2)], vae=vae2))
    assert flux2_on_flux1["lora"][0] == "rejected"
    assert "LoRA is for FLUX.2, checkpoint is Flux.1" in flux2_on_flux1["lora"][1]
    assert flux2_on_flux1["vae"] == ("rejected", "VAE latent channels 32 != 16 of the checkpoint")

    flux1_on_flux2 = _statuses(resolve(klein, loras=[str(lora1)], vae=vae1))
    assert flux1_on_flux2["lora"][0] == "rejected"
    assert flux1_on_flux2["lora"][1].startswith("LoRA is for Flux.1, checkpoint is FLUX.2")
    assert flux1_on_flux2["vae"] == ("rejected", "VAE latent channels 16 != 32 of the checkpoint")


def test_resolve_checks_video_vaes_by_latents_and_lineage(tmp_path: Path) -> None:
    """The Wan 2.1 VAE (Qwen-Image's) fits Wan's 16-channel models, not the 48-channel TI2V 5B
    nor HunyuanVideo (another 3-D VAE's latent space); an image VAE fits none of them."""
    from modelsafe.runtime.resolve import resolve

    wan_vae = _write(tmp_path, "wan_2.1_vae", co.qwen_image_vae())
    t2v = _write(tmp_path, "t2v", rm.wan_transformer("t2v-1.3b"))
    ti2v = _write(tmp_path, "ti2v", rm.wan_transformer("ti2v-5b"))
    hunyuan = _write(tmp_path, "hunyuan", rm.hunyuan_video("original"))
    assert _statuses(resolve(t2v, vae=wan_vae))["vae"][0] == "accepted"
    assert _statuses(resolve(ti2v, vae=wan_vae))["vae"] == (
        "rejected",
        "VAE latent channels 16 != 48 of the checkpoint",
    )
    status, why = _statuses(resolve(hunyuan, vae=wan_vae))["vae"]
    assert status == "rejected" and "HunyuanVideo uses HunyuanVideo's VAE" in why
    status, why = _statuses(resolve(t2v, vae=_write(tmp_path, "ae", _flux1_vae())))["vae"]
    assert status == "rejected" and "3-D (video) VAE" in why


@pytest.mark.parametrize(
    ("name", "build", "words"),
    [
        (
            "flux2",
            lambda: rm.flux2_bfl("klein-4b"),
            "flux2/transformer/klein-4b: modelsafe does not generate FLUX.2 models",
        ),  # fmt: skip
        ("lumina2", lambda: rm.lumina2("original"), "modelsafe does not generate Lumina 2"),
        ("wan", lambda: rm.wan_transformer("t2v-1.3b"), "modelsafe does not generate Wan"),
    ],
)
def test_generate_refuses_the_new_families_by_name_before_loading(
    tmp_path: Path,
    run_cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    build: Callable[[], Specs],
    words: str,
) -> None:
    from modelsafe.runtime import diffusers_loader

    def never(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("loaded or guessed at a model generate does not run")

    monkeypatch.setattr(diffusers_loader, "load_pipeline", never)
    monkeypatch.setattr(diffusers_loader, "guess_identity", never)
    path = _write(tmp_path, name, build())
    code, _, err = run_cli(
        "generate", "--checkpoint", str(path), "--prompt", "x", "--out", str(tmp_path / "out")
    )
    assert code == 2 and words in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("family", "warned"),
    [("stable-cascade", True), ("flux2", False), ("z-image", False), ("sdxl", False)]
    + [("a-plugin", False)],
)
def test_the_unchecked_needs_are_said_for_built_in_families_only(family: str, warned: bool) -> None:
    """A family with no table of needs is warned about; a plugin's family is its plugin's rules'
    to check, and a family with a table is checked (no warning)."""
    from modelsafe.runtime.resolve import _base_result
    from modelsafe.types import Part

    base = Part(role="checkpoint", ref="ck", family=family, kind="checkpoint", facts={})
    reasons = " | ".join(r.reason for r in _base_result(base).reasons)
    assert ("no table of the text encoders" in reasons) is warned, reasons
