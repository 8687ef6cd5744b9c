"""Real processes against one catalog: a scan killed with SIGKILL, two scans at once.

Each runs on SQLite and (with MODELSAFE_TEST_POSTGRES_URL) on PostgreSQL.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import func, select, text

from modelsafe.registry.catalog import open_catalog
from modelsafe.registry.catalog.models import Location, Model
from modelsafe.testing import write_safetensors


def scan_process(url: str, *paths: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "modelsafe.cli", "--catalog", url, "scan", *map(str, paths)]
        + ["--json", "--jobs", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def counts(url: str) -> tuple[int, int, int]:
    """(locations, models, locations without a model)"""
    catalog = open_catalog(url, migrate=False)
    try:
        with catalog.engine.connect() as conn:
            locations = conn.execute(select(func.count()).select_from(Location)).scalar_one()
            models = conn.execute(select(func.count()).select_from(Model)).scalar_one()
            orphans = conn.execute(
                select(func.count()).select_from(Location).where(Location.model_id.is_(None))
            ).scalar_one()
            if conn.dialect.name == "sqlite":
                assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"
                assert conn.execute(text("PRAGMA foreign_key_check")).all() == []
        return locations, models, orphans
    finally:
        catalog.close()


def test_sigkill_mid_scan_leaves_a_consistent_catalog(tmp_path: Path, catalog_url: str) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    total = 160
    for i in range(total):  # 4 MiB each, sparse: hashing takes a while, the disk stays empty
        write_safetensors(lib / f"m{i:03}.safetensors", [(f"w{i}", "F16", (1024, 2048))])
    open_catalog(catalog_url).close()
    proc = scan_process(catalog_url, lib)
    deadline = time.monotonic() + 60
    done = 0
    while time.monotonic() < deadline and proc.poll() is None:
        done = counts(catalog_url)[0]
        if done >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the scan ended before it could be killed: {proc.stderr}"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    locations, models, orphans = counts(catalog_url)
    assert 3 <= locations < total, "killed mid-scan: some files written, not all"
    assert models == locations and orphans == 0  # every written file is whole: model + location

    again = scan_process(catalog_url, lib)
    out, err = again.communicate(timeout=240)
    assert again.returncode == 0, err
    summary = json.loads(out)
    assert summary["unchanged"] == locations and summary["new"] == total - locations
    assert counts(catalog_url) == (total, total, 0)


def test_two_scans_of_one_catalog_at_once_both_finish(tmp_path: Path, catalog_url: str) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    total = 80
    for i in range(total):  # 2 MiB each (sparse): long enough for the two scans to overlap
        write_safetensors(lib / f"m{i:02}.safetensors", [(f"w{i}", "F16", (1024, 1024))])
    # Both start on a catalog that does not exist yet: they also race to create its schema.
    procs = [scan_process(catalog_url, lib) for _ in range(2)]
    results = [p.communicate(timeout=240) for p in procs]
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
        assert "locked" not in err
        summary = json.loads(out)
        assert summary["new"] + summary["changed"] + summary["unchanged"] == total
    # Every file is new to exactly one of them (the other found it written, or wrote it again).
    assert sum(json.loads(out)["new"] for out, _ in results) == total
    assert counts(catalog_url) == (total, total, 0)
