"""`modelsafe scan` into a catalog (SQLite, and PostgreSQL when configured): incremental
re-scans, identity across moves and copies, missing files, error rows, overrides, queries."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelsafe.registry.catalog import open_catalog
from modelsafe.registry.catalog.models import Location, Model
from modelsafe.testing import write_safetensors

Scan = Callable[..., dict[str, Any]]
Cli = Callable[..., Any]


def model_file(path: Path, seed: int, meta: dict[str, str] | None = None) -> Path:
    """A small real safetensors file, readable by the test reader in conftest.py."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = meta or {"test_family": "unknown", "test_kind": "unknown"}
    return write_safetensors(path, [("w", "F16", (32, 32))], meta, data="random", seed=seed)


def rows(url: str) -> tuple[list[Model], list[Location]]:
    from sqlalchemy import select

    catalog = open_catalog(url)
    try:
        with catalog.session() as s:
            return list(s.scalars(select(Model))), list(s.scalars(select(Location)))
    finally:
        catalog.close()


def test_rescan_reads_only_what_changed(
    tmp_path: Path, scan_json: Scan, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = tmp_path / "lib"
    files = [model_file(lib / f"m{i}.safetensors", seed=i) for i in range(3)]
    (lib / "notes.txt").write_text("not a model")
    first = scan_json(str(lib))
    assert (first["new"], first["changed"], first["unchanged"]) == (3, 0, 0)
    assert first["bytes_read"] == sum(f.stat().st_size for f in files)

    # Unchanged files are never opened: reading one now would fail the scan.
    import modelsafe.registry.scan as scan_module

    def must_not_read(*_a: object, **_k: object) -> None:
        raise AssertionError("an unchanged file was read")

    monkeypatch.setattr(scan_module, "analyse", must_not_read)
    second = scan_json(str(lib))
    assert (second["new"], second["changed"], second["unchanged"]) == (0, 0, 3)
    assert second["bytes_read"] == 0
    monkeypatch.undo()

    model_file(files[1], seed=99)  # new content, same path
    os.utime(files[1], ns=(1, 1_000_000_000))
    third = scan_json(str(lib))
    assert (third["new"], third["changed"], third["unchanged"]) == (0, 1, 2)


def test_moved_file_keeps_identity_and_old_path_is_missing(
    tmp_path: Path, scan_json: Scan, cli_json: Cli, catalog_url: str
) -> None:
    lib = tmp_path / "lib"
    old = model_file(lib / "a" / "model.safetensors", seed=1)
    scan_json(str(lib))
    [model], _ = rows(catalog_url)
    new = lib / "b" / "renamed.safetensors"
    new.parent.mkdir()
    old.rename(new)
    summary = scan_json(str(lib))
    assert summary["removed"] == 1
    models, locations = rows(catalog_url)
    assert [m.id for m in models] == [model.id]
    assert models[0].name == "renamed"
    status = {loc.path: loc.status for loc in locations}
    assert status == {str(old): "missing", str(new): "present"}
    shown = cli_json("show", str(new))
    assert {loc["path"]: loc["status"] for loc in shown["locations"]} == status
    # Nothing is lost: deleting the last copy makes the model missing, still in the catalog.
    new.unlink()
    assert scan_json(str(lib))["removed"] == 1
    assert [m["id"] for m in cli_json("ls", "--missing")] == [model.id]
    assert cli_json("ls") == []


def test_copies_are_one_model_and_duplicates_count_reclaimable_bytes(
    tmp_path: Path, scan_json: Scan, cli_json: Cli, catalog_url: str
) -> None:
    lib = tmp_path / "lib"
    a = model_file(lib / "checkpoints" / "a.safetensors", seed=5)
    b = lib / "backup" / "a-copy.safetensors"
    b.parent.mkdir()
    b.write_bytes(a.read_bytes())
    os.link(b, lib / "backup" / "a-hardlink.safetensors")  # same bytes on disk: frees nothing
    model_file(lib / "other.safetensors", seed=6)
    summary = scan_json(str(lib))
    assert summary["files"] == 3  # the hard link is a second path to a file already found
    models, locations = rows(catalog_url)
    assert len(models) == 2 and len(locations) == 4
    assert {m.name for m in models} == {"a-copy", "other"}  # named after its first path
    dups = cli_json("ls", "--duplicates")
    assert dups["reclaimable"] == a.stat().st_size
    [group] = dups["groups"]
    assert len(group["others"]) == 1


def test_corrupt_files_are_error_rows_and_do_not_stop_the_scan(
    tmp_path: Path, scan_json: Scan, cli_json: Cli, catalog_url: str
) -> None:
    lib = tmp_path / "lib"
    good = model_file(lib / "good.safetensors", seed=1)
    (lib / "truncated.safetensors").write_bytes(good.read_bytes()[:40])
    (lib / "page.ckpt").write_text("<!DOCTYPE html><html>log in</html>")
    (lib / "empty.pt").write_bytes(b"")
    summary = scan_json(str(lib))
    assert summary["files"] == 4
    errors = {Path(e["path"]).name: e["reason"] for e in summary["error_files"]}
    assert {"truncated.safetensors", "page.ckpt", "empty.pt"} <= set(errors)
    assert "HTML" in errors["page.ckpt"]
    _, locations = rows(catalog_url)
    by_name = {Path(loc.path).name: loc for loc in locations}
    assert by_name["page.ckpt"].status == "error" and by_name["page.ckpt"].error
    shown = cli_json("show", str(lib / "page.ckpt"))
    assert shown["status"] == "error" and "HTML" in shown["error"]
    # an error row is a row like any other: unchanged, it is not read again
    assert scan_json(str(lib))["unchanged"] == 4


def test_file_changing_while_hashed_is_requeued(
    tmp_path: Path, scan_json: Scan, catalog_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = model_file(tmp_path / "lib" / "growing.safetensors", seed=2)
    import modelsafe.registry.hashing as hashing

    real = hashing.hash_file
    calls = []

    def hash_while_written(p: Path, index: Any = None) -> Any:
        calls.append(p)
        if len(calls) == 1:  # a download still being written: bytes arrive mid-hash
            with open(p, "ab") as fh:
                fh.write(b"\0" * 4096)
            os.utime(p, ns=(5, 5_000_000_000))
        return real(p, index)

    monkeypatch.setattr(hashing, "hash_file", hash_while_written)
    summary = scan_json(str(tmp_path / "lib"))
    assert summary["requeued"] == 1 and len(calls) == 2
    [model], [loc] = rows(catalog_url)
    assert model.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loc.size == path.stat().st_size


def test_links_loops_and_unreadable_entries(tmp_path: Path, scan_json: Scan) -> None:
    lib = tmp_path / "lib"
    real = model_file(lib / "real" / "m.safetensors", seed=3)
    (lib / "real" / "loop").symlink_to(lib)  # a link back up: a loop
    (lib / "alias.safetensors").symlink_to(real)
    (lib / "dangling.safetensors").symlink_to(lib / "gone.safetensors")
    summary = scan_json(str(lib))
    reasons = {Path(s["path"]).name: s["reason"] for s in summary["skipped"]}
    assert "loop" in reasons["loop"]
    assert "broken symlink" in reasons["dangling.safetensors"]
    assert summary["files"] == 1 and summary["new"] == 1  # one real file, read once


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads folders whatever their permissions")
def test_unreadable_folder_is_skipped_with_a_reason(tmp_path: Path, scan_json: Scan) -> None:
    lib = tmp_path / "lib"
    model_file(lib / "ok.safetensors", seed=1)
    locked = lib / "locked"
    locked.mkdir()
    model_file(locked / "hidden.safetensors", seed=2)
    locked.chmod(0)
    try:
        summary = scan_json(str(lib))
    finally:
        locked.chmod(0o755)
    assert summary["new"] == 1
    assert any("cannot list" in s["reason"] for s in summary["skipped"])


def test_no_hash_scan_is_completed_later_and_keeps_overrides(
    tmp_path: Path, scan_json: Scan, run_cli: Callable[..., Any], catalog_url: str
) -> None:
    lib = tmp_path / "lib"
    path = model_file(lib / "m.safetensors", seed=4)
    assert scan_json(str(lib), "--no-hash")["new"] == 1
    [model], _ = rows(catalog_url)
    assert model.sha256 is None
    code, _, err = run_cli("--catalog", catalog_url, "set", str(path), "--note", "keep me")
    assert code == 0, err
    summary = scan_json(str(lib))  # now hashed: read again although its stat did not change
    assert summary["changed"] == 1
    [after], _ = rows(catalog_url)
    assert after.id == model.id
    assert after.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert after.note == "keep me"


def test_override_survives_rescans_and_is_shown_as_override(
    tmp_path: Path, scan_json: Scan, cli_json: Cli, run_cli: Callable[..., Any], catalog_url: str
) -> None:
    lib = tmp_path / "lib"
    path = model_file(lib / "m.safetensors", seed=7)
    scan_json(str(lib))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    updated = cli_json("set", digest[:10], "--family", "sdxl", "--kind", "lora", "--note", "mine")
    assert updated["family"] == "sdxl" and updated["overrides"]["kind"] == "lora"
    scan_json(str(lib), "--force")  # read again: detection runs, the correction stays
    [row] = cli_json("ls", "--family", "sdxl", "--kind", "lora")
    assert row["overrides"] == {"family": "sdxl", "kind": "lora"} and row["note"] == "mine"
    shown = cli_json("show", "m")
    assert shown["family"] == "sdxl" and shown["detected"]["family"] != "sdxl"
    assert shown["detected"]["kind"] != "lora"
    code, out, _ = run_cli("--catalog", catalog_url, "ls")
    assert code == 0 and "sdxl*" in out and "lora*" in out
    code, out, _ = run_cli("--catalog", catalog_url, "show", "m")
    assert "(override; detected" in out
    # A filter that matches nothing says what the catalog holds instead (a typo'd family).
    code, out, err = run_cli("--catalog", catalog_url, "ls", "--family", "sd15")
    assert code == 0 and out == ""
    assert "no models match --family sd15 (1 in the catalog; families: sdxl)" in err
    code, _, err = run_cli("--catalog", catalog_url, "set", "m", "--family", "sd9")
    assert code == 2 and "unknown family" in err
    assert cli_json("set", "m", "--reset")["overrides"] == {}


def test_show_finds_by_path_hash_prefix_and_name(
    tmp_path: Path, scan_json: Scan, cli_json: Cli, run_cli: Callable[..., Any], catalog_url: str
) -> None:
    lib = tmp_path / "lib"
    a = model_file(lib / "alpha.safetensors", seed=10)
    model_file(lib / "alpine.safetensors", seed=11)
    scan_json(str(lib))
    digest = hashlib.sha256(a.read_bytes()).hexdigest()
    for ref in (str(a), digest[:8], "alpha", "ALPHA"):
        shown = cli_json("show", ref)
        assert shown["sha256"] == digest, ref
        assert shown["hashes"]["sha256"] == digest
        assert shown["locations"][0]["path"] == str(a)
    code, _, err = run_cli("--catalog", catalog_url, "show", "alp")
    assert code == 2 and "matches 2 models" in err
    code, _, err = run_cli("--catalog", catalog_url, "show", "nothing-like-it")
    assert code == 2 and "no model" in err and "Hint" in err


def test_names_with_letters_beyond_ascii_are_found_in_any_case(
    tmp_path: Path, scan_json: Scan, cli_json: Cli
) -> None:
    a = model_file(tmp_path / "lib" / "Äpfel-Übermensch.safetensors", seed=12)
    model_file(tmp_path / "lib" / "風景.safetensors", seed=13)
    scan_json(str(tmp_path / "lib"))
    digest = hashlib.sha256(a.read_bytes()).hexdigest()
    for ref in ("Äpfel-Übermensch", "äpfel-übermensch", "ÄPFEL-ÜBERMENSCH", "übermensch"):
        assert cli_json("show", ref)["sha256"] == digest, ref
    assert cli_json("show", "風景")["name"] == "風景"


def test_export_json_and_csv(
    tmp_path: Path, scan_json: Scan, run_cli: Callable[..., Any], catalog_url: str
) -> None:
    lib = tmp_path / "lib"
    model_file(lib / "a.safetensors", seed=1)
    (lib / "bad.ckpt").write_text("<html></html>")
    scan_json(str(lib))
    code, out, _ = run_cli("--catalog", catalog_url, "export", "--format", "json")
    assert code == 0
    exported = json.loads(out)
    assert {m["name"] for m in exported} == {"a", "bad"}
    assert all("locations" in m and "hashes" in m for m in exported)
    target = tmp_path / "out.csv"
    code, _, err = run_cli("--catalog", catalog_url, "export", "--format", "csv", "-o", str(target))
    assert code == 0, err
    table = list(csv.DictReader(io.StringIO(target.read_text())))
    assert {r["path"] for r in table} == {str(lib / "a.safetensors"), str(lib / "bad.ckpt")}
    assert {r["location_status"] for r in table} == {"present", "error"}


def test_wrong_folder_is_reported_and_filters_use_identity(
    tmp_path: Path, scan_json: Scan, cli_json: Cli
) -> None:
    models = tmp_path / "ComfyUI" / "models"
    sdxl = {"test_family": "sdxl", "test_kind": "lora"}
    model_file(models / "loras" / "SD1.5" / "xl-lora.safetensors", 1, sdxl)
    model_file(models / "checkpoints" / "a-lora.safetensors", 2, sdxl)
    model_file(models / "loras" / "SDXL" / "fine.safetensors", 3, sdxl)
    model_file(
        models / "checkpoints" / "ckpt.safetensors",
        4,
        {"test_family": "sd1", "test_kind": "checkpoint"},
    )
    summary = scan_json(str(models))
    problems = {Path(w["path"]).name: w["problem"] for w in summary["wrong_folder"]}
    assert set(problems) == {"xl-lora.safetensors", "a-lora.safetensors"}
    assert "sdxl lora in SD1.5/" in problems["xl-lora.safetensors"]
    assert "a lora in checkpoints/" in problems["a-lora.safetensors"]
    assert {m["name"] for m in cli_json("ls", "--kind", "lora")} == {"xl-lora", "a-lora", "fine"}
    assert [m["name"] for m in cli_json("ls", "--family", "sd1")] == ["ckpt"]
    shown = cli_json("show", "xl-lora")
    assert shown["inspect"]["evidence"] == ["metadata says sdxl"]
    assert any("wrong folder" in w for w in shown["locations"][0]["warnings"])


def test_hf_cache_snapshots_resolve_to_blobs_hashed_once(
    tmp_path: Path, scan_json: Scan, catalog_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "hub"
    repo = cache / "models--someone--tiny-lora"
    blob_src = model_file(tmp_path / "src.safetensors", seed=8)
    digest = hashlib.sha256(blob_src.read_bytes()).hexdigest()
    (repo / "blobs").mkdir(parents=True)
    blob = repo / "blobs" / digest
    blob_src.rename(blob)
    (repo / "refs").mkdir()
    for rev, ref in (("a" * 40, "main"), ("b" * 40, "v1")):
        snap = repo / "snapshots" / rev
        snap.mkdir(parents=True)
        (snap / "lora.safetensors").symlink_to(Path("../../blobs") / digest)
        (repo / "refs" / ref).write_text(rev)
    import modelsafe.registry.hashing as hashing

    real, hashed = hashing.hash_file, []

    def counting(p: Path, index: Any = None) -> Any:
        hashed.append(p)
        return real(p, index)

    monkeypatch.setattr(hashing, "hash_file", counting)
    summary = scan_json("--hf-cache-dir", str(cache))
    assert summary["files"] == 1 and len(hashed) == 1
    [model], locations = rows(catalog_url)
    assert model.sha256 == digest
    assert sorted((loc.extra or {})["hf_refs"] for loc in locations) == [["main"], ["v1"]]
    assert {(loc.extra or {})["hf_repo"] for loc in locations} == {"someone/tiny-lora"}


def test_diffusers_folder_is_one_model_and_keeps_identity_when_moved(
    tmp_path: Path, scan_json: Scan, cli_json: Cli, catalog_url: str
) -> None:
    lib = tmp_path / "lib"
    pipe = lib / "my-pipeline"
    model_file(pipe / "unet" / "diffusion_pytorch_model.safetensors", seed=1)
    model_file(pipe / "text_encoder" / "model.safetensors", seed=2)
    (pipe / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    summary = scan_json(str(lib))
    assert summary["files"] == 1
    [model], [loc] = rows(catalog_url)
    assert loc.path == str(pipe) and model.content_key.startswith("dir:")
    assert set(model.details["components"]) == {
        "unet/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
    }
    pipe.rename(lib / "renamed")
    scan_json(str(lib))
    models, locations = rows(catalog_url)
    assert [m.id for m in models] == [model.id]
    assert models[0].name == "renamed"
    status = {loc.path: loc.status for loc in locations}
    assert set(status) == {str(pipe), str(lib / "renamed")}
    assert status[str(pipe)] == "missing" and status[str(lib / "renamed")] != "missing"
