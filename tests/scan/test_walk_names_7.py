"""Model files whose names once hid them from `scan`: wget's duplicate downloads
(`model.safetensors.1`) and a name with trailing whitespace (`model.safetensors `)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_scan_catalog import model_file, rows

from modelsafe.registry.walk import is_model_file, model_extension, partial_download

Scan = Callable[..., dict[str, Any]]
Cli = Callable[..., tuple[int, str, str]]


@pytest.mark.parametrize(
    ("name", "ext"),
    [
        ("model.safetensors", ".safetensors"),
        ("model.safetensors.1", ".safetensors"),
        ("model.SAFETENSORS.2", ".safetensors"),
        ("x.ckpt.12", ".ckpt"),
        ("model.safetensors ", ".safetensors"),
        ("model.pt  ", ".pt"),
        ("model.bin.3 ", ".bin"),
        ("x.1", None),
        ("notes.txt.1", None),
        ("model.safetensors.a", None),
        ("model.safetensors.1a", None),
        ("model.safetensors.", None),
        ("model.safetensors.aria2", None),
    ],
)
def test_model_extension(name: str, ext: str | None) -> None:
    assert model_extension(name) == ext
    assert is_model_file(name) is (ext is not None)


def test_duplicate_still_downloading_is_a_partial_download() -> None:
    found = partial_download("model.safetensors.1.part")
    assert found is not None and "unfinished" in found.what


def test_scan_finds_wget_duplicates_and_trailing_spaces(
    tmp_path: Path, scan_json: Scan, catalog_url: str
) -> None:
    lib = tmp_path / "lib"
    model_file(lib / "model.safetensors", seed=0)
    duplicate = model_file(lib / "model.safetensors.1", seed=1)
    numbered = model_file(lib / "old.ckpt.12", seed=2)  # safetensors bytes: the bytes decide
    spaced = model_file(lib / "pasted.safetensors ", seed=3)
    model_file(lib / "x.1", seed=4)  # a number after no model extension: not a model

    summary = scan_json(str(lib))

    assert summary["new"] == 4 and summary["errors"] == 0, summary
    assert summary["skipped"] == [], summary
    models, locations = rows(catalog_url)
    by_path = {loc.path: loc for loc in locations}
    assert set(by_path) == {
        str(lib / "model.safetensors"),
        str(duplicate),
        str(numbered),
        str(spaced),
    }
    assert all(loc.status == "present" for loc in locations)
    assert len(models) == 4 and {m.format for m in models} == {"safetensors"}


def test_inspect_reads_wget_duplicate_and_trailing_space(tmp_path: Path, run_cli: Cli) -> None:
    for name in ("model.safetensors.1", "model.safetensors "):
        path = model_file(tmp_path / name, seed=5)
        code, out, err = run_cli("inspect", str(path), "--json")
        assert code == 0, err
        report = json.loads(out)
        assert report["format"] == "safetensors" and report["tensor_count"] == 1, report


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("model.safetensors", "model"),
        ("model.safetensors.1", "model.1"),
        ("old.ckpt.12", "old.12"),
        ("pasted.safetensors  ", "pasted"),
        ("v1.5-pruned.safetensors", "v1.5-pruned"),
    ],
)
def test_model_names_drop_the_extension_keep_the_duplicate_number(name: str, stem: str) -> None:
    from modelsafe.registry.scan import _file_stem

    assert _file_stem(name) == stem
