"""Serve tests: a small real library (scanned into a catalog once), a tiny sd1 model for jobs,
and an app over it.

The library: the tiny sd1 single file (a real checkpoint jobs can run), an SD1 and an SDXL kohya
LoRA, an SD VAE, an SD1 embedding, a hostile pickle, and a LoRA whose file name is HTML.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
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


@pytest.fixture(scope="session")
def library(tmp_path_factory: pytest.TempPathFactory) -> Library:
    from modelsafe.registry.catalog import open_catalog
    from modelsafe.registry.catalog.models import Model
    from modelsafe.registry.catalog.queries import set_overrides
    from modelsafe.registry.scan import scan
    from modelsafe.testing.tiny_models import tiny_model

    root = tmp_path_factory.mktemp("serve-lib")
    tiny = tiny_model("sd1", root / "tiny")
    _build(root, tiny)
    url = f"sqlite:///{root / 'catalog.db'}"
    catalog = open_catalog(url)
    try:
        scan(catalog, [root / "models"], jobs=2)
        with catalog.session() as session:
            ids = {m.name: m.id for m in session.query(Model)}
            # The tiny checkpoint is too small to be recognised: say what it is (`modelsafe set`).
            tiny_row = session.get(Model, ids["tiny-sd1"])
            assert tiny_row is not None
            set_overrides(session, tiny_row, {"family": "sd1", "kind": "checkpoint"})
    finally:
        catalog.close()
    return Library(root, url, tiny, ids)


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


@pytest.fixture
def make_client(library: Library, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """``make_client(token=None, queue=None, ...)``: a TestClient over a fresh app on a private
    copy of the library's catalog."""
    from fastapi.testclient import TestClient

    from modelsafe.serve import create_app

    clients: list[Any] = []

    def make(**kwargs: Any) -> Any:
        url = kwargs.pop("catalog_url", None) or copy_catalog(library, tmp_path)
        app = create_app(url, outputs=tmp_path / "outputs", **kwargs)
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., Any]) -> Any:
    return make_client()


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


class RecordingQueue:
    """A queue that keeps what it is given (for tests that must not run generation)."""

    def __init__(self) -> None:
        self.jobs: list[Any] = []

    def enqueue(self, job: Any) -> None:
        self.jobs.append(job)

    def close(self) -> None:
        pass
