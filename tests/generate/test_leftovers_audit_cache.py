"""generate's per-process audit cache: a file found safe is not audited again while it is
unchanged, and "unchanged" includes its ctime, so a file rewritten in place with the same size
and its mtime set back (``touch -r``, ``cp -p``, ``os.utime``) is audited again."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from modelsafe.errors import UnsafeFileError
from modelsafe.registry import audit
from modelsafe.runtime import generate
from modelsafe.testing.safetensors_writer import write_safetensors

PAYLOAD = b"cos\nsystem\n(S'echo pwned'\ntR."


@pytest.fixture
def audits(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The paths audited (``refuse_unsafe`` imports ``audit_path`` when it runs), with an empty
    cache."""
    calls: list[Path] = []
    real = audit.audit_path

    def counting(path: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(Path(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(audit, "audit_path", counting)
    monkeypatch.setattr(generate, "_AUDITED_SAFE", {})
    return calls


def _rewrite_in_place(path: Path, data: bytes) -> None:
    """``data`` written over ``path`` (same inode, same size), its mtime set back; until the
    ctime differs from before (file timestamps advance by clock ticks)."""
    before = path.stat()
    assert len(data) == before.st_size
    with open(path, "r+b") as fh:
        fh.write(data)
    for _ in range(200):
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        if path.stat().st_ctime_ns != before.st_ctime_ns:
            break
        time.sleep(0.01)
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    )
    assert after.st_ctime_ns != before.st_ctime_ns


def test_an_unchanged_safe_file_is_audited_once(tmp_path: Path, audits: list[Path]) -> None:
    path = write_safetensors(tmp_path / "m.safetensors", [("w", "F32", (4, 4))], data="zeros")
    generate.refuse_unsafe([path])
    generate.refuse_unsafe([path])
    assert audits == [path]


def test_a_file_rewritten_with_same_size_and_mtime_is_audited_again(
    tmp_path: Path, audits: list[Path]
) -> None:
    path = write_safetensors(tmp_path / "m.safetensors", [("w", "F32", (4, 4))], data="zeros")
    generate.refuse_unsafe([path])
    size = path.stat().st_size
    _rewrite_in_place(path, PAYLOAD + b"\0" * (size - len(PAYLOAD)))
    with pytest.raises(UnsafeFileError, match="can run code"):
        generate.refuse_unsafe([path])
    assert audits == [path, path]


def test_a_folder_with_a_file_rewritten_in_place_is_audited_again(
    tmp_path: Path, audits: list[Path]
) -> None:
    folder = tmp_path / "pipe"
    folder.mkdir()
    inner = write_safetensors(folder / "w.safetensors", [("w", "F32", (4, 4))], data="zeros")
    key = generate.stat_key(folder)
    _rewrite_in_place(inner, bytes(inner.stat().st_size))
    assert generate.stat_key(folder) != key
