"""Scan after review: a file the walk reached by another path stays present whatever its stat
does, a `--no-hash` file's settings follow its content (not an inode the next file reuses),
a scan in another PID namespace is not closed by its pid, and a second Ctrl-C ends at once."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from modelsafe.registry import scan as scan_module
from modelsafe.registry.catalog import open_catalog
from modelsafe.registry.catalog.models import Location, Scan
from modelsafe.registry.scan import scan
from modelsafe.testing import write_safetensors

ScanJson = Callable[..., dict[str, Any]]
CliJson = Callable[..., Any]
RunCli = Callable[..., tuple[int, str, str]]


def _model(path: Path, seed: int = 1, rows: int = 4) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_safetensors(path, [("w", "F16", (rows, 64))], data="random", seed=seed)


def _statuses(shown: dict[str, Any]) -> dict[str, str]:
    return {loc["path"]: loc["status"] for loc in shown["locations"]}


def test_a_file_the_walk_reached_by_another_path_stays_present_after_chmod_link_or_touch(
    tmp_path: Path, scan_json: ScanJson, cli_json: CliJson
) -> None:
    lib = tmp_path / "lib"
    real = _model(lib / "real" / "x.safetensors", seed=1)
    (lib / "zlink").symlink_to("real")
    hidden = _model(lib / ".cache" / "hub" / "y.safetensors", seed=2)
    scan_json(str(lib / "zlink"))  # stores lib/zlink/x.safetensors
    scan_json(str(lib / ".cache" / "hub"))  # stores lib/.cache/hub/y.safetensors
    time.sleep(0.01)
    real.chmod(0o600)  # (a new ctime)
    (lib / "models").mkdir()
    os.link(hidden, lib / "models" / "y.safetensors")  # (a new ctime)
    os.utime(hidden, ns=(time.time_ns(), time.time_ns()))  # touch: a new mtime too

    summary = scan_json(str(lib))  # (zlink: "already scanned through another path")

    assert summary["removed"] == 0
    assert _statuses(cli_json("show", "x")) == {
        str(lib / "real" / "x.safetensors"): "present",
        str(lib / "zlink" / "x.safetensors"): "present",
    }
    assert _statuses(cli_json("show", "y")) == {
        str(hidden): "present",
        str(lib / "models" / "y.safetensors"): "present",
    }


def test_an_emptied_file_the_walk_did_not_visit_is_still_missing(
    tmp_path: Path, scan_json: ScanJson, cli_json: CliJson
) -> None:
    lib = tmp_path / "lib"
    hidden = _model(lib / ".cache" / "z.safetensors")
    scan_json(str(lib / ".cache"))
    hidden.write_bytes(b"")  # (Firefox's placeholder of its next download of it)

    assert scan_json(str(lib))["removed"] == 1
    assert _statuses(cli_json("show", str(hidden))) == {str(hidden): "missing"}


def _settings_of_client_style(run_cli: RunCli, catalog_url: str) -> None:
    code, _, err = run_cli(
        "--catalog", catalog_url, "set", "client_style", "--family", "sdxl", "--note", "client X"
    )
    assert code == 0, err


def test_a_no_hash_files_settings_do_not_jump_to_other_content_on_its_inode(
    tmp_path: Path, scan_json: ScanJson, cli_json: CliJson, run_cli: RunCli, catalog_url: str
) -> None:
    lib = tmp_path / "lib"
    old = _model(lib / "A" / "client_style.safetensors", seed=1)
    scan_json("--no-hash", str(lib))
    _settings_of_client_style(run_cli, catalog_url)
    # Another file with the same device, inode, size and mtime (ext4 gives a deleted file's
    # inode to the next one created; `cp -p`, `unzip` keep an mtime): made here for certain.
    before = old.stat()
    fresh = _model(tmp_path / "fresh.safetensors", seed=2)
    assert fresh.stat().st_size == before.st_size
    old.write_bytes(fresh.read_bytes())
    os.utime(old, ns=(before.st_atime_ns, before.st_mtime_ns))
    (lib / "B").mkdir()
    os.rename(old, lib / "B" / "unrelated.safetensors")

    summary = scan_json(str(lib))

    assert summary["notices"] == []  # (was: "moved from .../A/client_style...: kept your ...")
    unrelated = cli_json("show", "unrelated")
    assert (unrelated["overrides"], unrelated["note"]) == ({}, None)
    [kept] = cli_json("ls", "--missing")
    assert (kept["name"], kept["family"], kept["note"]) == ("client_style", "sdxl", "client X")


def test_a_move_recorded_without_a_fingerprint_does_not_carry_settings(
    tmp_path: Path, scan_json: ScanJson, cli_json: CliJson, run_cli: RunCli, catalog_url: str
) -> None:
    lib = tmp_path / "lib"
    _model(lib / "A" / "client_style.safetensors")
    scan_json("--no-hash", str(lib))
    _settings_of_client_style(run_cli, catalog_url)
    catalog = open_catalog(catalog_url)
    try:
        with catalog.session() as session:  # (as an older modelsafe recorded it)
            [loc] = session.scalars(select(Location))
            assert loc.extra and loc.extra.get(scan_module.FINGERPRINT)
            loc.extra = {k: v for k, v in loc.extra.items() if k != scan_module.FINGERPRINT}
    finally:
        catalog.close()
    os.rename(lib / "A", lib / "B")

    assert scan_json(str(lib))["notices"] == []
    assert [m["name"] for m in cli_json("ls", "--missing")] == ["client_style"]


def test_a_running_scan_in_another_pid_namespace_is_not_closed_by_its_pid(
    tmp_path: Path,
) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # (its pid names no process here)
    here = scan_module.owner()
    elsewhere = [
        {**here, "pid": gone.pid, "pid_ns": "pid:[1]"},  # a container sharing the host name
        {**here, "pid": gone.pid, "boot_id": "another boot"},  # (the pid was of another boot:
        {"pid": gone.pid, "host": socket.gethostname()},  # an older row: pid and host only
    ]
    catalog = open_catalog(tmp_path / "c.db")
    try:
        with catalog.session() as session:
            session.add_all(Scan(roots=[], status="running", summary=s) for s in elsewhere)
            session.add(Scan(roots=[], status="running", summary={**here, "pid": gone.pid}))
        lib = tmp_path / "lib"
        _model(lib / "m.safetensors")
        scan(catalog, [lib], jobs=1)
        with catalog.session() as session:
            rows = [r.status for r in session.scalars(select(Scan).order_by(Scan.id))]
    finally:
        catalog.close()

    # (those it cannot check wait for the age rule; its own namespace's dead pid is closed)
    assert rows == ["running", "running", "running", "failed", "finished"]
    if Path("/proc/self/ns/pid").exists():
        assert here["pid_ns"] and here["boot_id"]


@pytest.mark.skipif(os.name != "posix", reason="signals are POSIX")
def test_a_second_ctrl_c_while_a_file_finishes_ends_at_once_without_a_traceback(
    tmp_path: Path,
) -> None:
    lib = tmp_path / "lib"  # (sparse: 16 GiB to hash, no disk used)
    lib.mkdir()
    write_safetensors(lib / "huge.safetensors", [("w", "F32", (4096, 1024, 1024))])
    db = tmp_path / "c.db"
    open_catalog(db).close()
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelsafe.cli", "--catalog", str(db), "scan", str(lib), "-j", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not _running(db):
        time.sleep(0.05)
    time.sleep(0.5)  # (the file is being hashed)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    started = time.monotonic()
    _, err = proc.communicate(timeout=120)

    assert proc.returncode == 130, err
    assert "Exception ignored" not in err and "Traceback" not in err, err
    assert time.monotonic() - started < 5  # (not after the whole file is hashed)
    with sqlite3.connect(db) as conn:
        assert conn.execute("select status from scans").fetchall() == [("interrupted",)]


def _running(db: Path) -> bool:
    with sqlite3.connect(db) as conn:
        try:
            return bool(conn.execute("select 1 from scans where status='running'").fetchall())
        except sqlite3.OperationalError:
            return False
