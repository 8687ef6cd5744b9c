"""What the serve tests share besides fixtures (conftest.py has those): the library's build,
job specs, a recording queue. A module of its own, not conftest, so that tests import it by a
name no other test folder uses."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modelsafe.testing import write_safetensors
from modelsafe.testing.tiny_models import Tiny

REQUIRE_ENV = "MODELSAFE_TEST_REQUIRE_SERVICES"
HOSTILE_NAME = "<script>alert('x')<script>"


def missing_service(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1)")
    pytest.skip(reason)


@dataclass(frozen=True)
class Library:
    root: Path
    catalog_url: str
    tiny: Tiny
    ids: dict[str, int]  # model name -> catalog id


def _build(root: Path, tiny: Tiny) -> None:
    from modelsafe.demo import _hostile_pickle_bytes, _write_torch_zip
    from modelsafe.testing.layouts import adapters, base_models

    models = root / "models"
    for sub in ("checkpoints", "loras", "vae", "embeddings"):
        (models / sub).mkdir(parents=True)
    shutil.copy(tiny.single, models / "checkpoints" / "tiny-sd1.safetensors")
    sd1_lora = adapters.kohya_lora([("lora_unet_", adapters.sd1_unet_modules())], rank=2)
    write_safetensors(models / "loras" / "sd1-style.safetensors", sd1_lora)
    write_safetensors(
        models / "loras" / f"{HOSTILE_NAME}.safetensors",
        adapters.kohya_lora([("lora_unet_", adapters.sd1_unet_modules())], rank=4),
    )
    write_safetensors(
        models / "loras" / "xl-detail.safetensors",
        adapters.kohya_lora([("lora_unet_", adapters.sdxl_unet_modules("sgm"))], rank=2),
    )
    write_safetensors(models / "vae" / "ft-mse.safetensors", base_models.ldm_vae())
    write_safetensors(
        models / "embeddings" / "emb.safetensors",
        adapters.embedding("sd1", vectors=2),
        data="random",
    )
    _write_torch_zip(models / "checkpoints" / "free-model.ckpt", _hostile_pickle_bytes())


def copy_catalog(library: Library, folder: Path) -> str:
    """A private copy of the library's catalog (tests that write must not share one)."""
    import sqlite3

    target = folder / f"catalog-{len(list(folder.glob('catalog-*.db')))}.db"
    source = sqlite3.connect(library.catalog_url.removeprefix("sqlite:///"))
    dest = sqlite3.connect(target)
    try:
        source.backup(dest)
    finally:
        dest.close()
        source.close()
    return f"sqlite:///{target}"


def job_spec(tiny: Tiny, **changes: Any) -> dict[str, Any]:
    """A job for the tiny sd1 single file: 2 steps, 32x32, its own tokenizers and configs."""
    spec: dict[str, Any] = {
        "checkpoint": str(tiny.single),
        "prompt": "a red cube",
        "steps": 2,
        "width": 32,
        "height": 32,
        "seed": 7,
        "family": "sd1",
        "tokenizers": str(tiny.tokenizers),
        "config_dir": str(tiny.configs),
    }
    spec.update(changes)
    return spec
