"""Folder-name hints for the families identified since round 5 (FLUX.2, Lumina 2, Wan, ...).

A ``flux2/`` folder says FLUX.2 (it said Flux.1: every "flux" folder did), a plain ``flux/``
folder may hold Flux.1 or FLUX.2, and names that do not say one family (``hunyuan``, ``sana``,
``kandinsky``, ``lumina``) give no hint, so they never cause a "wrong folder" warning. A VAE kept
with the family that decodes with it (the Wan 2.1 VAE, identified as Qwen-Image's, in a ``wan``
folder; Flux.1's ae in a Lumina 2 folder; a VAE whose layout two families share in either one's
folder) is in the right folder.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelsafe.registry.folders import convention_of, family_hint, folder_report
from modelsafe.testing import write_safetensors
from modelsafe.testing.layouts import adapters as ad
from modelsafe.testing.layouts import base_models as bm
from modelsafe.testing.layouts import components as co
from modelsafe.testing.layouts import recent_models as rm
from modelsafe.testing.layouts.base_models import Specs


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("flux2", "flux2"),
        ("FLUX.2-dev", "flux2"),
        ("flux-2-klein-4b", "flux2"),
        ("Flux.1-dev", "flux1"),
        ("flux1", "flux1"),
        ("flux-schnell", "flux1"),
        ("flux", "flux"),
        ("Flux-dev", "flux"),  # FLUX.2 has a [dev] too
        ("Lumina-Image-2.0", "lumina2"),
        ("lumina2", "lumina2"),
        ("wan", "wan"),
        ("Wan2.1", "wan"),
        ("Wan2.2-T2V-A14B", "wan"),
        ("WanVideo", "wan"),
        ("HunyuanVideo", "hunyuan-video"),
        ("HunyuanImage-2.1", "hunyuanimage2.1"),
        ("Kandinsky-5.0", "kandinsky5"),
        ("sana_1.5", "sana"),
        ("Sana_Sprint", "sana"),
        # names that do not say one family: no hint, never a "wrong folder"
        ("lumina", None),
        ("Lumina-Next", None),
        ("swan", None),
        ("wan2.5", None),
        ("hunyuan", None),
        ("HunyuanVideo-1.5", None),
        ("HunyuanImage-3.0", None),
        ("kandinsky", None),
        ("kandinsky3", None),
        ("Sana", None),  # a character's name as often as the model
        ("sana-video", None),
    ],
)
def test_folder_names_of_the_new_families(name: str, family: str | None) -> None:
    assert family_hint(name) == family


@pytest.mark.parametrize(
    ("path", "family", "kind", "problem"),
    [
        ("diffusion_models/flux2/x.safetensors", "flux2", "transformer", None),
        ("diffusion_models/flux/x.safetensors", "flux2", "transformer", None),
        ("diffusion_models/flux/x.safetensors", "flux1", "transformer", None),
        (
            "loras/flux2/x.safetensors",
            "flux1",
            "lora",
            "a flux1 lora in flux2/ (the folder name says flux2)",
        ),
        ("loras/Flux.1-dev/x.safetensors", "flux2", "lora", "(the folder name says flux1)"),
        ("loras/flux/x.safetensors", "sdxl", "lora", "(the folder name says flux1 or flux2)"),
        ("vae/wan2.1/x.safetensors", "qwen-image", "vae", None),
        # the Wan 2.1 VAE named Wan's (its sidecar says so) in a Qwen-Image folder; Flux.1's ae
        # named Z-Image's in a flux folder: the same files
        ("vae/qwen-image/x.safetensors", "wan", "vae", None),
        ("vae/flux/x.safetensors", "z-image", "vae", None),
        ("vae/flux2/x.safetensors", "z-image", "vae", "a z-image vae in flux2/"),
        ("diffusion_models/wan2.1/x.safetensors", "qwen-image", "transformer", "says wan)"),
        ("vae/Lumina-Image-2.0/x.safetensors", "flux1", "vae", None),
        ("vae/SD3.5/x.safetensors", "flux1", "vae", None),  # SD3's VAE: Flux.1's ae's layout
        ("vae/SDXL/x.safetensors", "sd1", "vae", None),  # SDXL's VAE: SD1's layout
        ("loras/SDXL/x.safetensors", "sd1", "lora", "a sd1 lora in SDXL/"),
        ("vae/flux2/x.safetensors", "flux1", "vae", "a flux1 vae in flux2/"),
        ("loras/Lumina-Image-2.0/x.safetensors", "z-image", "lora", "says lumina2)"),
        ("loras/HunyuanVideo/x.safetensors", "wan", "lora", "says hunyuan-video)"),
        ("loras/Sana/x.safetensors", "sdxl", "lora", None),
        ("loras/hunyuan/x.safetensors", "flux1", "lora", None),
    ],
)
def test_wrong_folder_for_the_new_families(
    path: str, family: str, kind: str, problem: str | None
) -> None:
    report = folder_report("/home/u/ComfyUI/models/" + path, family, kind)
    if problem is None:
        assert report == []
    else:
        assert len(report) == 1 and problem in report[0], report


def test_invokeai_has_a_flux2_base() -> None:
    conv = convention_of("/x/invokeai/models/flux2/lora/a.safetensors")
    assert conv is not None and (conv.app, conv.family) == ("InvokeAI", "flux2")
    report = folder_report("/x/invokeai/models/flux/lora/a.safetensors", "flux2", "lora")
    assert report == ["wrong folder: a flux2 lora in flux/ (the folder name says flux1)"]


def _linears(specs: Specs, pattern: str) -> list[tuple[str, tuple[int, ...]]]:
    return [
        (n[: -len(".weight")], s)
        for n, _, s in specs
        if n.endswith(".weight") and len(s) == 2 and re.search(pattern, n)
    ]


def test_scan_reports_only_the_files_in_another_family_s_folder(
    tmp_path: Path, run_cli: Callable[..., tuple[int, str, str]], catalog_url: str
) -> None:
    """Real layouts, identified by the built-in detectors: FLUX.2 transformers in ``flux2/``
    and ``flux/`` folders, the Wan 2.1 VAE in ``wan2.1/``, Flux.1's ae in a Lumina 2 folder are
    where they belong; a Flux.1 LoRA in ``flux2/`` is not."""
    models = tmp_path / "ComfyUI" / "models"
    files: dict[str, Specs] = {
        "diffusion_models/flux2/klein-4b.safetensors": rm.flux2_bfl("klein-4b"),
        "diffusion_models/flux/klein-9b.safetensors": rm.flux2_bfl("klein-9b"),
        "vae/wan2.1/wan_2.1_vae.safetensors": co.qwen_image_vae(),
        "vae/Lumina-Image-2.0/ae.safetensors": co.diffusers_vae(16, quant_conv=False),
        "loras/flux2/flux1-style.safetensors": ad.comfy_lora(
            _linears(bm.bfl_flux(), r"(?:double|single)_blocks\.")
        ),
    }
    for rel, specs in files.items():
        (models / rel).parent.mkdir(parents=True, exist_ok=True)
        write_safetensors(models / rel, specs, data="sparse")
    code, out, err = run_cli("--catalog", catalog_url, "scan", str(models), "--no-hash", "--json")
    assert code == 0, err
    summary: dict[str, Any] = json.loads(out)
    problems = {Path(w["path"]).name: w["problem"] for w in summary["wrong_folder"]}
    assert problems == {
        "flux1-style.safetensors": "wrong folder: a flux1 lora in flux2/ (the folder name says "
        "flux2)"
    }
