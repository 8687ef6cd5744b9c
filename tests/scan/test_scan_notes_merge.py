"""A model first read without hashes (`scan --no-hash`) merges into the catalogued model of the
same content at the next hashed scan: the user's note and corrections on it join that model,
and never replace the note the model already had."""

from __future__ import annotations

import shutil
from pathlib import Path

from modelsafe.registry.catalog import open_catalog
from modelsafe.registry.catalog.models import Location, Model
from modelsafe.registry.catalog.queries import set_overrides
from modelsafe.registry.scan import scan
from modelsafe.testing import write_safetensors


def _model_at(session, path: Path) -> Model:  # type: ignore[no-untyped-def]
    loc = session.query(Location).filter_by(path=str(path)).one()
    assert loc.model is not None
    return loc.model


def test_notes_and_corrections_survive_the_merge(tmp_path: Path) -> None:
    a, b, c = (tmp_path / n for n in "abc")
    for folder in (a, b, c):
        folder.mkdir()
    write_safetensors(a / "x.safetensors", [("w", "F32", (8,))], data="random", seed=7)
    shutil.copy(a / "x.safetensors", b / "y.safetensors")
    write_safetensors(a / "z.safetensors", [("v", "F32", (8,))], data="random", seed=8)
    shutil.copy(a / "z.safetensors", c / "z2.safetensors")
    catalog = open_catalog(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        scan(catalog, [a], jobs=1)
        with catalog.session() as session:
            set_overrides(session, _model_at(session, a / "z.safetensors"), {}, note="own note")
        scan(catalog, [b, c], jobs=1, with_hash=False)
        with catalog.session() as session:
            set_overrides(session, _model_at(session, b / "y.safetensors"), {}, note="note on y")
            set_overrides(session, _model_at(session, c / "z2.safetensors"), {"family": "sdxl"})
        scan(catalog, [b, c], jobs=1)
        with catalog.session() as session:
            x = _model_at(session, a / "x.safetensors")
            z = _model_at(session, a / "z.safetensors")
            assert x is _model_at(session, b / "y.safetensors")
            assert z is _model_at(session, c / "z2.safetensors")
            assert x.note == "note on y"
            assert z.note == "own note" and z.overrides == {"family": "sdxl"}
    finally:
        catalog.close()
