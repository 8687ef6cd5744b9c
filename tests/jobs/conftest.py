"""Job tests: a tiny sd1 model (built once), specs for it, and the services the Celery tests use.

Redis: MODELSAFE_TEST_REDIS_URL (``bash .ci/redis start`` prints one), else a redis-server this
session starts from /usr/bin; PostgreSQL: MODELSAFE_TEST_POSTGRES_URL (a fresh database per
module), else a SQLite file. Missing services skip, unless MODELSAFE_TEST_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from modelsafe.registry.catalog import Catalog, open_catalog
from modelsafe.testing.tiny_models import Tiny

REDIS_ENV = "MODELSAFE_TEST_REDIS_URL"
POSTGRES_ENV = "MODELSAFE_TEST_POSTGRES_URL"
REQUIRE_ENV = "MODELSAFE_TEST_REQUIRE_SERVICES"
JOBS_REDIS_DB = 7  # the job tests' own database number on a shared test server


def missing_service(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1)")
    pytest.skip(reason)


@pytest.fixture
def catalog_path(tmp_path: Path) -> Path:
    return tmp_path / "catalog.db"


@pytest.fixture
def catalog(catalog_path: Path) -> Iterator[Catalog]:
    """A SQLite catalog of the test's own (test files with another store override it)."""
    cat = open_catalog(catalog_path)
    yield cat
    cat.close()


@pytest.fixture(scope="session")
def tiny_sd1(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    from modelsafe.testing.tiny_models import tiny_model

    return tiny_model("sd1", tmp_path_factory.mktemp("jobs-tiny"))


@pytest.fixture(scope="session")
def make_spec(tiny_sd1: Tiny) -> Callable[..., dict[str, Any]]:
    """``make_spec(**changes)``: a job spec for the tiny sd1 single file (1 step, 32x32)."""

    def make(**changes: Any) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "checkpoint": str(tiny_sd1.single),
            "prompt": "a cat",
            "steps": 1,
            "width": 32,
            "height": 32,
            "family": "sd1",
            "tokenizers": str(tiny_sd1.tokenizers),
            "config_dir": str(tiny_sd1.configs),
        }
        spec.update(changes)
        return spec

    return make


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ping(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except (redis.RedisError, OSError):
        return False


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis URL on loopback, on a database number of its own (emptied first)."""
    import redis

    base = os.environ.get(REDIS_ENV)
    proc = None
    if not base:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).is_file():
            missing_service(
                f"no redis-server: install Debian's redis-server or set {REDIS_ENV} "
                "(bash .ci/redis start prints one)"
            )
        folder = tmp_path_factory.mktemp("redis")
        port = _free_port()
        proc = subprocess.Popen(
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 10
        while not _ping(base):
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
    url = base.rsplit("/", 1)[0] + f"/{JOBS_REDIS_DB}"
    if not _ping(url):
        missing_service(f"Redis at {base} does not answer")
    redis.Redis.from_url(url).flushdb()
    try:
        yield url
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)


@pytest.fixture(scope="module")
def shared_catalog_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh catalog several processes share: a new PostgreSQL database, else a SQLite file."""
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{POSTGRES_ENV} is not set ({REQUIRE_ENV}=1)")
        yield str(tmp_path_factory.mktemp("jobs-catalog") / "catalog.db")
        return
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(base)
    name = f"modelsafe_jobs_{uuid.uuid4().hex[:12]}"
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
