"""The catalog: migrations build the ORM schema exactly; SQLite runs in WAL with a busy timeout."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from modelsafe.errors import CatalogError
from modelsafe.registry.catalog import catalog_url, open_catalog
from modelsafe.registry.catalog.models import Base


def test_empty_db_upgrades_to_head_and_matches_models(tmp_path: Path) -> None:
    catalog = open_catalog(tmp_path / "catalog.db")
    with catalog.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == [], f"models and migrations drifted apart: {diff}"
        tables = set(inspect(conn).get_table_names())
    assert {"models", "locations", "outputs", "alembic_version"} <= tables
    catalog.close()


def test_sqlite_uses_wal_and_busy_timeout(tmp_path: Path) -> None:
    catalog = open_catalog(tmp_path / "catalog.db")
    with catalog.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 10_000
    catalog.close()


def test_reopening_is_idempotent(tmp_path: Path) -> None:
    for _ in range(2):
        open_catalog(tmp_path / "catalog.db").close()


def test_path_becomes_sqlite_url_and_url_is_kept(tmp_path: Path) -> None:
    assert catalog_url(tmp_path / "c.db") == f"sqlite:///{tmp_path / 'c.db'}"
    assert catalog_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_a_plain_postgresql_url_uses_psycopg_3_when_psycopg2_is_absent(
    scheme: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import modelsafe.registry.catalog.db as db

    url = f"{scheme}://user:p%40ss@db.internal:5433/models"
    monkeypatch.setattr(db, "_psycopg3_only", lambda: True)
    assert catalog_url(url) == "postgresql+psycopg://user:p%40ss@db.internal:5433/models"
    monkeypatch.setattr(db, "_psycopg3_only", lambda: False)  # psycopg2 there: SQLAlchemy's pick
    assert catalog_url(url) == url


def test_plain_postgresql_url_maps_to_what_is_installed() -> None:
    from importlib.util import find_spec

    if find_spec("psycopg2") is not None or find_spec("psycopg") is None:
        pytest.skip("needs psycopg 3 without psycopg2, as modelsafe installs it")
    assert catalog_url("postgresql://h/db") == "postgresql+psycopg://h/db"


def test_a_missing_database_driver_is_a_clear_error() -> None:
    from importlib.util import find_spec

    if find_spec("pg8000") is not None:
        pytest.skip("pg8000 is installed here")
    with pytest.raises(CatalogError) as info:
        open_catalog("postgresql+pg8000://u:secret@h/db")
    assert "driver is not installed" in info.value.reason and "pg8000" in info.value.reason
    assert "secret" not in info.value.reason and "pip install" in (info.value.hint or "")


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError) as info:
        open_catalog(tmp_path / "nope" / "catalog.db")
    assert "does not exist" in info.value.reason
    assert info.value.hint
