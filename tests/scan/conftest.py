"""Scan tests run against SQLite and, when MODELSAFE_TEST_POSTGRES_URL is set, PostgreSQL.

``bash .ci/postgres start`` starts a throw-away server and prints the URL to put in
MODELSAFE_TEST_POSTGRES_URL; each test gets its own database on it.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from modelsafe.errors import MalformedFileError
from modelsafe.plugin_manager import ModelsafePluginManager
from modelsafe.plugins.hookspecs import hookimpl
from modelsafe.types import Candidate, TensorIndex, TensorInfo

POSTGRES_ENV = "MODELSAFE_TEST_POSTGRES_URL"


def _postgres_database(base_url: str) -> Iterator[str]:
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(base_url)
    name = f"modelsafe_test_{uuid.uuid4().hex[:12]}"
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty catalog: a SQLite file, or a new database on the test PostgreSQL server."""
    if request.param == "sqlite":
        yield str(tmp_path / "catalog.db")
        return
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        why = (
            f"{POSTGRES_ENV} is not set: start a server with `bash .ci/postgres start` and "
            f"export {POSTGRES_ENV}=<the URL it prints> to run the PostgreSQL variant"
        )
        if os.environ.get("MODELSAFE_TEST_REQUIRE_SERVICES") == "1":
            pytest.fail(why)  # CI must run it
        pytest.skip(why)
    yield from _postgres_database(base)


@pytest.fixture
def scan_json(
    run_cli: Callable[..., tuple[int, str, str]], catalog_url: str
) -> Callable[..., dict[str, Any]]:
    """Run `modelsafe --catalog URL scan ARGS --json`; returns the summary (asserts exit 0/1)."""

    def run(*args: str) -> dict[str, Any]:
        code, out, err = run_cli("--catalog", catalog_url, "scan", *args, "--json")
        assert code in (0, 1), err
        value = json.loads(out)
        assert isinstance(value, dict)
        return value

    return run


@pytest.fixture
def cli_json(run_cli: Callable[..., tuple[int, str, str]], catalog_url: str) -> Callable[..., Any]:
    """Run another catalog command with --json and parse its output (asserts exit 0)."""

    def run(*args: str) -> Any:
        code, out, err = run_cli("--catalog", catalog_url, *args, "--json")
        assert code == 0, err
        return json.loads(out)

    return run


class TaggedLayouts:
    """Test plugin: reads safetensors files whose metadata carries ``test_family`` and
    ``test_kind`` and identifies them from it; other files go to the built-in plugins. It keeps
    the scan tests independent of how far the real readers and detectors have got."""

    __name__ = "tagged_layouts"

    @hookimpl
    def modelsafe_read_index(self, path: Path, head: bytes, fmt: str) -> TensorIndex | None:
        if fmt != "safetensors" or b"test_family" not in head:
            return None
        n = int.from_bytes(head[:8], "little")
        try:
            header = json.loads(path.read_bytes()[8 : 8 + n])
        except ValueError as exc:
            raise MalformedFileError(f"{path}: bad header ({exc})") from exc
        meta = header.pop("__metadata__", {})
        tensors = tuple(
            TensorInfo(k, v["dtype"], tuple(v["shape"]), 8 + n + v["data_offsets"][0])
            for k, v in header.items()
        )
        return TensorIndex(path, "safetensors", tensors, meta)

    @hookimpl
    def modelsafe_identify(self, index: TensorIndex) -> Candidate | None:
        family = index.metadata.get("test_family", "unknown")
        if family == "unknown":
            return None
        return Candidate(
            family, index.metadata["test_kind"], 0.99, evidence=(f"metadata says {family}",)
        )


@pytest.fixture(autouse=True)
def tagged_layouts(pm: ModelsafePluginManager) -> ModelsafePluginManager:
    pm.register_plugin(TaggedLayouts(), "tagged_layouts", package="(test)", version="0")
    return pm
