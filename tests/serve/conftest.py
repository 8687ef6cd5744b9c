"""Serve tests: a small real library (scanned into a catalog once), a tiny sd1 model for jobs,
and an app over it (helpers in serve_support.py).

The library: the tiny sd1 single file (a real checkpoint jobs can run), an SD1 and an SDXL kohya
LoRA, an SD VAE, an SD1 embedding, a hostile pickle, and a LoRA whose file name is HTML.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from serve_support import Library, _build, copy_catalog


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
