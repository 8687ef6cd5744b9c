"""What a red team found a scan got wrong about paths: a link whose target was deleted stayed
present, a root given through a link never marked anything missing, a user's override stayed
behind when a file got new content, Hugging Face files were all named "model", the aria2
warning was never shown, a root that does not exist exited 0, a rewrite that kept size and
mtime and a chmod that made a file readable were not seen."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_scan_catalog import model_file, rows

Scan = Callable[..., dict[str, Any]]
Cli = Callable[..., Any]


def test_a_link_whose_target_was_deleted_is_missing(
    tmp_path: Path, scan_json: Scan, cli_json: Cli
) -> None:
    lib = tmp_path / "lib"
    target = model_file(tmp_path / "store" / "real.safetensors", seed=1)
    lib.mkdir()
    (lib / "linked.safetensors").symlink_to(target)
    model_file(lib / "plain.safetensors", seed=2)
    assert scan_json(str(lib))["new"] == 2
    target.unlink()
    summary = scan_json(str(lib))
    assert summary["removed"] == 1
    assert "broken symlink" in summary["skipped"][0]["reason"]
    assert [m["name"] for m in cli_json("ls")] == ["plain"]
    [gone] = cli_json("ls", "--missing")
    assert gone["name"] == "linked" and gone["status"] == "missing"


def test_a_root_given_through_a_link_marks_what_is_gone_missing(
    tmp_path: Path, scan_json: Scan, cli_json: Cli, catalog_url: str
) -> None:
    real = tmp_path / "real"
    a = model_file(real / "a.safetensors", seed=1)
    model_file(real / "sub" / "b.safetensors", seed=2)
    link = tmp_path / "link"
    link.symlink_to(real)
    assert scan_json(str(real))["new"] == 2
    a.unlink()
    summary = scan_json(str(link))
    assert summary["removed"] == 1
    _, locations = rows(catalog_url)
    status = {loc.path: loc.status for loc in locations}
    assert status[str(a)] == "missing"
    assert status[str(real / "sub" / "b.safetensors")] == "present"  # still there: not missing
    assert [m["name"] for m in cli_json("ls")] == ["b"]


def test_an_override_follows_the_path_to_its_new_content(
    tmp_path: Path, scan_json: Scan, cli_json: Cli, run_cli: Callable[..., Any], catalog_url: str
) -> None:
    lib = tmp_path / "lib"
    path = model_file(lib / "style.safetensors", seed=1)
    scan_json(str(lib))
    cli_json("set", str(path), "--family", "sdxl", "--note", "keep: client X")
    model_file(path, seed=2)  # a v2 download at the same path
    summary = scan_json(str(lib))
    assert summary["changed"] == 1
    [notice] = summary["notices"]
    assert notice["path"] == str(path)
    assert "kept your override family=sdxl and note 'keep: client X'" in notice["message"]
    shown = cli_json("show", str(path))
    assert shown["overrides"] == {"family": "sdxl"} and shown["note"] == "keep: client X"
    assert shown["family"] == "sdxl"
    assert cli_json("show", "style")["id"] == shown["id"]  # the name means the file on disk
    model_file(path, seed=3)  # v3: the scan's text output says so too
    code, out, _ = run_cli("--catalog", catalog_url, "scan", str(lib))
    assert code == 0
    assert f"NOTE    {path}: new content at this path: kept your override family=sdxl" in out
    assert cli_json("show", str(path))["note"] == "keep: client X"


def test_an_override_stays_with_content_still_on_disk_elsewhere(
    tmp_path: Path, scan_json: Scan, cli_json: Cli
) -> None:
    lib = tmp_path / "lib"
    path = model_file(lib / "style.safetensors", seed=1)
    backup = lib / "backup" / "style-v1.safetensors"
    backup.parent.mkdir()
    shutil.copy(path, backup)
    scan_json(str(lib))
    cli_json("set", str(path), "--kind", "lora", "--note", "v1")
    model_file(path, seed=2)
    [notice] = scan_json(str(lib))["notices"]
    assert f"still at {backup}" in notice["message"]
    assert cli_json("show", str(backup))["note"] == "v1"
    assert cli_json("show", str(path))["note"] is None


def test_hugging_face_files_are_named_after_their_repo(
    tmp_path: Path, scan_json: Scan, cli_json: Cli, run_cli: Callable[..., Any]
) -> None:
    cache = tmp_path / "hub"
    repo = cache / "models--org--flux-dev"
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    rev = "c" * 40
    (repo / "refs" / "main").write_text(rev)
    snap = repo / "snapshots" / rev
    (snap / "transformer").mkdir(parents=True)
    for seed, rel in (
        (1, "model.safetensors"),
        (2, "transformer/diffusion_pytorch_model.safetensors"),
    ):
        blob = model_file(tmp_path / f"src{seed}.safetensors", seed=seed)
        digest = hashlib.sha256(blob.read_bytes()).hexdigest()
        blob.rename(repo / "blobs" / digest)
        depth = "../" * (rel.count("/") + 2)
        (snap / rel).symlink_to(f"{depth}blobs/{digest}")
    scan_json("--hf-cache-dir", str(cache))
    assert {m["name"] for m in cli_json("ls")} == {"org/flux-dev", "org/flux-dev/transformer"}
    assert cli_json("show", "org/flux-dev")["paths"] == [str(snap / "model.safetensors")]
    assert cli_json("show", "flux-dev/transformer")["name"] == "org/flux-dev/transformer"
    # The cache scanned as a plain folder: the names come from the cache's folder names.
    plain = str(tmp_path / "plain.db")
    assert run_cli("--catalog", plain, "scan", str(cache))[0] == 0
    code, out, _ = run_cli("--catalog", plain, "ls", "--json")
    assert {m["name"] for m in json.loads(out)} == {"org/flux-dev", "org/flux-dev/transformer"}


def test_the_aria2_warning_is_in_the_scan_output(
    tmp_path: Path, scan_json: Scan, run_cli: Callable[..., Any]
) -> None:
    lib = tmp_path / "lib"
    model_file(lib / "aria.safetensors", seed=4)
    (lib / "aria.safetensors.aria2").write_bytes(b"\x00\x01control")
    [warning] = scan_json(str(lib))["warnings"]
    assert warning["path"] == str(lib / "aria.safetensors")
    assert "aria2 has not finished downloading" in warning["warning"]
    code, out, _ = run_cli("--catalog", str(tmp_path / "text.db"), "scan", str(lib))
    assert code == 0
    assert f"WARNING {lib / 'aria.safetensors'}: aria.safetensors.aria2 is beside it" in out


def test_a_root_that_does_not_exist_exits_2_after_the_others_are_scanned(
    tmp_path: Path, run_cli: Callable[..., Any], catalog_url: str
) -> None:
    lib = tmp_path / "lib"
    model_file(lib / "ok.safetensors", seed=1)
    typo = tmp_path / "tpyo"
    code, out, err = run_cli("--catalog", catalog_url, "scan", str(typo), str(lib), "--json")
    assert code == 2
    summary = json.loads(out)  # the summary of what could be scanned is still printed
    assert summary["new"] == 1
    assert summary["unusable_roots"] == [{"path": str(typo), "reason": "does not exist"}]
    assert f"Error: a path given could not be scanned: {typo}: does not exist" in err
    assert "Hint: " in err and "the other paths were scanned" in err
    assert "Traceback" not in err
    code, _, err = run_cli("--catalog", catalog_url, "scan", str(typo))
    assert code == 2 and "Hint: check the spelling" in err and "other paths" not in err
    partial = model_file(tmp_path / "model.safetensors.part", seed=2)  # given by name
    code, _, err = run_cli("--catalog", catalog_url, "scan", str(partial))
    assert code == 2 and "unfinished" in err and "check the spelling" not in err
    # An unsafe file found wins, as for `audit`: exit 1, and the bad root is still named.
    bad = lib / "bad.pkl"
    bad.write_bytes(b"cos\nsystem\n(S'true'\ntR.")
    code, _, err = run_cli("--catalog", catalog_url, "scan", str(lib), str(typo))
    assert code == 1 and "could not be scanned" in err


def test_a_rewrite_that_keeps_size_and_mtime_is_read_again(
    tmp_path: Path, scan_json: Scan, cli_json: Cli
) -> None:
    lib = tmp_path / "lib"
    path = model_file(lib / "a.safetensors", seed=1)
    scan_json(str(lib))
    before = path.stat()
    model_file(path, seed=2)  # same size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # `touch -r`, `cp -p`
    assert path.stat().st_ctime_ns != before.st_ctime_ns
    summary = scan_json(str(lib))
    assert (summary["changed"], summary["unchanged"]) == (1, 0)
    assert cli_json("show", str(path))["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def _without_root_powers() -> list[str] | None:
    """A command prefix under which permissions apply (root ignores chmod 000), or None."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    caps = "-dac_override,-dac_read_search"
    prefix = [setpriv, f"--bounding-set={caps}", f"--inh-caps={caps}"]
    probe = subprocess.run([*prefix, "true"], capture_output=True)
    return prefix if probe.returncode == 0 else None


def test_a_file_that_could_not_be_opened_is_tried_again_every_scan(
    tmp_path: Path, catalog_url: str
) -> None:
    prefix = _without_root_powers()
    if prefix is None:
        pytest.skip("running as root without setpriv: permissions cannot be tested")
    lib = tmp_path / "lib"
    path = model_file(lib / "noread.safetensors", seed=4)
    url = catalog_url

    def scan() -> dict[str, Any]:
        done = subprocess.run(
            [*prefix, sys.executable, "-m", "modelsafe.cli", "--catalog", url]
            + ["scan", str(lib), "--json"],
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert done.returncode == 0, done.stderr
        value: dict[str, Any] = json.loads(done.stdout)
        return value

    path.chmod(0)
    try:
        first = scan()
        assert "Permission denied" in first["error_files"][0]["reason"]
        second = scan()  # nothing changed, but an OS error is not the file's last word
        assert (second["changed"], second["unchanged"], second["errors"]) == (1, 0, 1)
    finally:
        path.chmod(0o644)
    third = scan()
    assert (third["changed"], third["errors"]) == (1, 0)
    assert scan()["unchanged"] == 1
