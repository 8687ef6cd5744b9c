"""A user's catalog corrections (`modelsafe set MODEL --family ...`) reach generation: the tiny
sd1 checkpoint is too small for the detectors, so without a correction generate cannot tell its
family; with one, it runs (and says which correction it used). A recipe records the hashes of
the very file that ran, not those of another copy of the same model."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from modelsafe.errors import ModelsafeError
from modelsafe.registry.catalog import open_catalog
from modelsafe.registry.catalog.models import Location
from modelsafe.registry.catalog.queries import set_overrides
from modelsafe.registry.hashing import hash_file
from modelsafe.registry.scan import scan
from modelsafe.runtime.generate import GenerateRequest, generate
from modelsafe.testing.tiny_models import Tiny


def _request(t: Tiny, checkpoint: Path) -> GenerateRequest:
    return GenerateRequest(
        checkpoint=checkpoint,
        prompt="a cat",
        seed=3,
        steps=2,
        width=32,
        height=32,
        tokenizers=t.tokenizers,
        config_dir=t.configs,
    )


def _copy_in(t: Tiny, tmp_path: Path) -> Path:
    """The tiny checkpoint copied into a models folder of its own (to scan)."""
    checkpoint = tmp_path / "models" / "tiny.safetensors"
    checkpoint.parent.mkdir()
    shutil.copyfile(t.single, checkpoint)
    return checkpoint


def _catalog_with(tmp_path: Path, checkpoint: Path, **overrides: str):  # type: ignore[no-untyped-def]
    catalog = open_catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    scan(catalog, [checkpoint.parent], jobs=1)
    if overrides:
        with catalog.session() as session:
            loc = session.query(Location).filter_by(path=str(checkpoint.resolve())).one()
            assert loc.model is not None
            set_overrides(session, loc.model, dict(overrides))
    return catalog


def test_a_catalog_correction_of_the_family_is_used(
    tiny: Callable[[str], Tiny], tmp_path: Path
) -> None:
    t = tiny("sd1")
    checkpoint = _copy_in(t, tmp_path)
    (tmp_path / "bare").mkdir()
    bare = _catalog_with(tmp_path / "bare", checkpoint)
    try:
        with pytest.raises(ModelsafeError):  # nothing says what it is
            generate(_request(t, checkpoint), tmp_path / "out0", catalog=bare)
    finally:
        bare.close()
    (tmp_path / "fixed").mkdir()
    catalog = _catalog_with(tmp_path / "fixed", checkpoint, family="sd1", kind="checkpoint")
    try:
        result = generate(_request(t, checkpoint), tmp_path / "out", catalog=catalog)
    finally:
        catalog.close()
    assert result.images and result.request.family == "sd1"
    assert any("catalog correction" in w and "family=sd1" in w for w in result.warnings)
    assert result.images[0].recipe.family == "sd1"


def test_a_request_that_names_the_family_wins_over_the_correction(
    tiny: Callable[[str], Tiny], tmp_path: Path
) -> None:
    t = tiny("sd1")
    checkpoint = _copy_in(t, tmp_path)
    catalog = _catalog_with(tmp_path, checkpoint, family="sdxl")
    try:
        result = generate(
            GenerateRequest(**{**_request(t, checkpoint).__dict__, "family": "sd1"}),
            tmp_path / "out",
            catalog=catalog,
        )
    finally:
        catalog.close()
    assert result.request.family == "sd1"
    assert not any("catalog correction" in w for w in result.warnings)


def test_the_recipe_has_the_hashes_of_the_file_that_ran(
    tiny: Callable[[str], Tiny], tmp_path: Path
) -> None:
    """Two copies of one model (the same tensors, different file bytes): each recipe names its
    own file's sha256, whichever copy the catalog shows for the model."""
    from safetensors.torch import load_file, save_file

    t = tiny("sd1")
    folder = tmp_path / "models"
    folder.mkdir()
    first = folder / "a.safetensors"
    shutil.copyfile(t.single, first)
    second = folder / "b.safetensors"
    save_file(load_file(str(first)), str(second), metadata={"copy": "two"})  # other bytes
    catalog = _catalog_with(tmp_path, first, family="sd1", kind="checkpoint")
    try:
        for path in (first, second):
            result = generate(_request(t, path), tmp_path / path.stem, catalog=catalog)
            assert result.images[0].recipe.checkpoint.sha256 == hash_file(path)["sha256"]
    finally:
        catalog.close()


def test_a_correction_is_found_through_a_symlinked_folder(tmp_path: Path) -> None:
    """Scan keeps the path it walked (``models -> data``); the checkpoint given by that path
    still finds its row, correction and hashes."""
    from modelsafe.runtime.generate import known_hashes, with_catalog_overrides
    from modelsafe.testing import write_safetensors

    (tmp_path / "data").mkdir()
    (tmp_path / "models").symlink_to(tmp_path / "data")
    write_safetensors(tmp_path / "data" / "ck.safetensors", [("w", "F32", (8,))], data="random")
    checkpoint = tmp_path / "models" / "ck.safetensors"
    catalog = open_catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    try:
        scan(catalog, [tmp_path / "models"], jobs=1)
        with catalog.session() as session:
            loc = session.query(Location).filter_by(path=str(checkpoint)).one()
            assert loc.model is not None
            set_overrides(session, loc.model, {"family": "sdxl"})
        request = with_catalog_overrides(
            GenerateRequest(checkpoint=checkpoint, prompt="a"), catalog
        )
        assert request.family == "sdxl"
        assert known_hashes(checkpoint, catalog)["sha256"] == hash_file(checkpoint)["sha256"]
        assert "model_id" in known_hashes(checkpoint, catalog)
    finally:
        catalog.close()
