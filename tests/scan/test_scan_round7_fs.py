"""Odd file-system states a scan meets: a link to itself, a file moved after a `--no-hash` scan,
a file replaced by a FIFO or a folder (or emptied by Firefox's next download of it), a file
deleted while it is read, a file another scan stored a moment ago."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelsafe.registry import scan as scan_module
from modelsafe.registry.analyse import Analysis
from modelsafe.registry.catalog import open_catalog
from modelsafe.registry.scan import scan
from modelsafe.testing import write_safetensors

ScanJson = Callable[..., dict[str, Any]]
CliJson = Callable[..., Any]


def _model(path: Path, seed: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_safetensors(path, [("w", "F16", (4, 4))], data="random", seed=seed)


def _reasons(summary: dict[str, Any]) -> dict[str, str]:
    return {s["path"]: s["reason"] for s in summary["skipped"]}


def test_a_link_to_itself_is_skipped_and_the_scan_goes_on(
    tmp_path: Path, scan_json: ScanJson
) -> None:
    lib = tmp_path / "lib"
    _model(lib / "good.safetensors")
    (lib / "loop").symlink_to("loop")  # any name: it may have been a folder
    (lib / "self.safetensors").symlink_to("self.safetensors")
    # (a pipeline folder whose model_index.json declares no component keeps its loose files)
    pipe = lib / "pipe"
    pipe.mkdir()
    (pipe / "model_index.json").write_text('{"_class_name": "X"}')
    (pipe / "loop").symlink_to("loop")

    summary = scan_json(str(lib))

    assert summary["new"] >= 1 and summary["errors"] <= 1  # (the pipeline does not load)
    skipped = _reasons(summary)
    for link in (lib / "loop", lib / "self.safetensors", pipe / "loop"):
        assert skipped[str(link)].startswith("symlink loop: it leads back to itself"), skipped
    assert summary["unusable_roots"] == []


def test_a_file_moved_after_a_no_hash_scan_keeps_its_settings(
    tmp_path: Path, scan_json: ScanJson, cli_json: CliJson, run_cli: Any, catalog_url: str
) -> None:
    lib = tmp_path / "lib"
    _model(lib / "A" / "style.safetensors")
    scan_json("--no-hash", str(lib))
    code, _, err = run_cli(
        "--catalog", catalog_url, "set", "style", "--family", "sdxl", "--note", "client X"
    )
    assert code == 0, err
    os.rename(lib / "A", lib / "B")  # same device, inode, size and mtime

    summary = scan_json(str(lib))

    new_path = str(lib / "B" / "style.safetensors")
    old_path = str(lib / "A" / "style.safetensors")
    assert summary["notices"] == [
        {
            "path": new_path,
            "message": f"moved from {old_path}: kept your override family=sdxl and note 'client X'",
        }
    ]
    models = cli_json("ls")
    assert [(m["name"], m["family"], m["note"], m["paths"]) for m in models] == [
        ("style", "sdxl", "client X", [new_path])
    ]
    assert models[0]["sha256"]  # hashed now: keyed by its content
    assert cli_json("ls", "--missing") == []  # no ghost left behind
    shown = cli_json("show", "style")
    assert {loc["path"]: loc["status"] for loc in shown["locations"]} == {
        old_path: "missing",
        new_path: "present",
    }


def test_a_move_seen_by_a_second_no_hash_scan_keeps_the_settings_too(
    tmp_path: Path, scan_json: ScanJson, cli_json: CliJson, run_cli: Any, catalog_url: str
) -> None:
    lib = tmp_path / "lib"
    _model(lib / "old.safetensors")
    scan_json("--no-hash", str(lib))
    code, _, err = run_cli("--catalog", catalog_url, "set", "old", "--kind", "vae")
    assert code == 0, err
    os.rename(lib / "old.safetensors", lib / "new.safetensors")

    scan_json("--no-hash", str(lib))
    scan_json(str(lib))  # (then hashed: still one model, the settings on it, no notice again)

    models = cli_json("ls")
    assert [(m["name"], m["kind"], m["overrides"]) for m in models] == [
        ("new", "vae", {"kind": "vae"})
    ]
    assert cli_json("ls", "--missing") == []


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_file_replaced_by_a_fifo_a_folder_or_a_link_loop_is_missing(
    tmp_path: Path, scan_json: ScanJson, cli_json: CliJson
) -> None:
    lib = tmp_path / "lib"
    _model(lib / "a.safetensors", seed=1)
    _model(lib / "b.safetensors", seed=2)
    _model(lib / "c.safetensors", seed=3)
    _model(lib / "d.safetensors", seed=4)
    assert scan_json(str(lib))["new"] == 4
    (lib / "a.safetensors").unlink()
    os.mkfifo(lib / "a.safetensors")
    (lib / "b.safetensors").unlink()
    (lib / "b.safetensors").mkdir()
    (lib / "d.safetensors").unlink()
    (lib / "d.safetensors").symlink_to("d.safetensors")

    summary = scan_json(str(lib))

    assert summary["removed"] == 3 and summary["unchanged"] == 1
    assert [m["name"] for m in cli_json("ls")] == ["c"]
    assert sorted(m["name"] for m in cli_json("ls", "--missing")) == ["a", "b", "d"]


def test_a_model_emptied_by_firefox_downloading_it_again_is_not_present(
    tmp_path: Path, scan_json: ScanJson, cli_json: CliJson
) -> None:
    lib = tmp_path / "lib"
    style = _model(lib / "style.safetensors")
    assert scan_json(str(lib))["new"] == 1
    # Firefox saves the new version to the same name: the final name is emptied, .part fills.
    style.write_bytes(b"")
    (lib / "style.safetensors.part").write_bytes(b"partial")

    summary = scan_json(str(lib))

    assert "Firefox is still downloading it" in _reasons(summary)[str(style)]
    assert summary["removed"] == 1
    assert cli_json("ls") == []  # not the old "present, 256 B, audit safe"
    shown = cli_json("show", str(style))
    assert [(loc["path"], loc["status"]) for loc in shown["locations"]] == [(str(style), "missing")]


def _deleting_analyse(monkeypatch: pytest.MonkeyPatch, victim: Path) -> None:
    """Delete ``victim`` just before the scan reads it (its turn in the pool comes too late)."""
    real = scan_module.analyse

    def analyse(path: str, *args: Any, **kwargs: Any) -> Analysis:
        if path == str(victim) and victim.exists():
            victim.unlink()
        return real(path, *args, **kwargs)

    monkeypatch.setattr(scan_module, "analyse", analyse)


def test_a_file_deleted_while_the_scan_reads_it_is_counted_as_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = tmp_path / "lib"
    kept = _model(lib / "kept.safetensors", seed=1)
    victim = _model(lib / "victim.safetensors", seed=2)
    catalog = open_catalog(tmp_path / "c.db")
    try:
        scan(catalog, [lib], jobs=1)
        victim.write_bytes(victim.read_bytes() + b" ")  # changed: read again...
        _model(kept, seed=3)
        _deleting_analyse(monkeypatch, victim)  # ...and deleted before its turn
        summary = scan(catalog, [lib], jobs=1)
    finally:
        catalog.close()

    assert summary.files == 2 and summary.changed == 1
    assert summary.skipped == [{"path": str(victim), "reason": "deleted while being read"}]
    assert summary.removed == 1  # its old location is missing, not left present
    assert summary.new + summary.changed + summary.unchanged + len(summary.skipped) == 2


def test_a_file_another_scan_stored_a_moment_ago_is_not_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = tmp_path / "lib"
    for i in range(4):
        _model(lib / f"m{i}.safetensors", seed=i)
    catalog = open_catalog(tmp_path / "c.db")
    real = scan_module.analyse
    other: list[Any] = []

    def analyse(path: str, *args: Any, **kwargs: Any) -> Analysis:
        if not other:  # this scan has loaded what the catalog held; another one runs now
            other.append(None)
            other.append(scan(catalog, [lib], jobs=1))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(scan_module, "analyse", analyse)
    try:
        summary = scan(catalog, [lib], jobs=1)
    finally:
        catalog.close()

    assert other[1].new == 4
    assert (summary.new, summary.changed, summary.unchanged) == (0, 0, 4)


def test_a_copy_found_again_after_a_rename_still_counts_as_new(
    tmp_path: Path, scan_json: ScanJson
) -> None:
    """(What was stored before this scan started still decides: a renamed file is new.)"""
    lib = tmp_path / "lib"
    _model(lib / "x.safetensors")
    scan_json(str(lib))
    shutil.move(lib / "x.safetensors", lib / "y.safetensors")
    summary = scan_json(str(lib))
    assert (summary["new"], summary["changed"], summary["removed"]) == (1, 0, 1)
