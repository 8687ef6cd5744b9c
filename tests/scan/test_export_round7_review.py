"""`export -o` after review: a folder that takes no new entry while the file may be written, the
replaced file's owner and mode, the folder flushed after the rename (one helper with convert)."""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelsafe.testing import write_safetensors

Scan = Callable[..., dict[str, Any]]
RunCli = Callable[..., tuple[int, str, str]]


def _catalog_with_one_model(tmp_path: Path, scan_json: Scan) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    write_safetensors(lib / "alpha.safetensors", [("w", "F16", (8, 8))], data="random", seed=1)
    scan_json(str(lib))


def _no_new_entries(monkeypatch: pytest.MonkeyPatch, folder: Path, code: int) -> None:
    """``folder`` refuses new entries (``chattr +i``, a root-owned folder), as the OS says it:
    creating a temp file there fails with ``code``; its files may still be written."""
    real = tempfile.mkstemp

    def mkstemp(*args: Any, dir: Any = None, **kwargs: Any) -> tuple[int, str]:
        if dir is not None and Path(dir) == folder:
            raise OSError(code, os.strerror(code))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


@pytest.mark.parametrize("code", [errno.EPERM, errno.EACCES])
def test_export_writes_in_place_in_a_folder_that_takes_no_new_entry(
    tmp_path: Path,
    scan_json: Scan,
    run_cli: RunCli,
    catalog_url: str,
    monkeypatch: pytest.MonkeyPatch,
    code: int,
) -> None:
    _catalog_with_one_model(tmp_path, scan_json)
    folder = tmp_path / "ro"
    folder.mkdir()
    target = folder / "e.json"
    target.write_text("old")
    inode = target.stat().st_ino
    _no_new_entries(monkeypatch, folder, code)

    rc, _, err = run_cli("--catalog", catalog_url, "export", "-o", str(target), "--force")

    assert rc == 0, err  # (was: "Operation not permitted", exit 2)
    assert [m["name"] for m in json.loads(target.read_text())] == ["alpha"]
    assert target.stat().st_ino == inode  # written in place
    assert sorted(p.name for p in folder.iterdir()) == ["e.json"]


def test_export_in_place_that_fails_says_the_file_may_be_damaged(
    tmp_path: Path,
    scan_json: Scan,
    run_cli: RunCli,
    catalog_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _catalog_with_one_model(tmp_path, scan_json)
    folder = tmp_path / "ro"
    folder.mkdir()
    _no_new_entries(monkeypatch, folder, errno.EROFS)

    # (a new file cannot be created in place either: the folder takes no new entry)
    rc, out, err = run_cli("--catalog", catalog_url, "export", "-o", str(folder / "x" / "e.json"))

    assert rc == 2 and out == "", err
    assert "is as it was" not in err


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root")
def test_export_over_a_file_keeps_its_owner_group_and_mode(
    tmp_path: Path, scan_json: Scan, run_cli: RunCli, catalog_url: str
) -> None:
    _catalog_with_one_model(tmp_path, scan_json)
    target = tmp_path / "e.json"
    target.write_text("old")
    os.chown(target, 65534, 65534)  # (nobody's, exported over by root)
    target.chmod(0o640)

    rc, _, err = run_cli("--catalog", catalog_url, "export", "-o", str(target), "--force")

    assert rc == 0, err
    st = target.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (65534, 65534, 0o640)
    assert [m["name"] for m in json.loads(target.read_text())] == ["alpha"]


def test_export_flushes_the_folder_after_the_rename(
    tmp_path: Path,
    scan_json: Scan,
    run_cli: RunCli,
    catalog_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _catalog_with_one_model(tmp_path, scan_json)
    target = tmp_path / "out" / "e.json"
    target.parent.mkdir()
    flushed: list[tuple[bool, bool]] = []  # (a folder?, the new file already in place?)
    real = os.fsync

    def fsync(fd: int) -> None:
        flushed.append((stat.S_ISDIR(os.fstat(fd).st_mode), target.exists()))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    rc, _, err = run_cli("--catalog", catalog_url, "export", "-o", str(target))

    assert rc == 0, err
    assert flushed == [(False, False), (True, True)]  # the temp file, then the folder
