"""Torch zips with bytes that belong to no member: broken downloads are not called attacks.

A resumed download appended after its partial copy (the first N bytes of a checkpoint, then the
whole checkpoint) was audited ``unsafe`` ("N bytes sit between the central directory and its end
record ... prefix/polyglot") although torch refuses it; a checkpoint saved twice in one file,
which torch loads, was ``safe`` with no word, while ``zipfile`` reads its second copy (so a
different second copy went unseen); 4 KiB of junk appended was ``unsafe``. What torch's miniz would
load with a prefix stays ``unsafe``, and so does an archive that only ``zipfile`` reads when it
holds a payload.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zipfile
import zlib
from pathlib import Path

import pytest

from modelsafe.registry.audit import audit_path
from modelsafe.types import Verdict

torch = pytest.importorskip("torch")

MARKER = "ran.txt"


def _checkpoint() -> bytes:
    buf = io.BytesIO()
    torch.save({"w": torch.arange(64, dtype=torch.float32), "step": 7}, buf)
    return buf.getvalue()


def _with_pickle(archive: bytes, pickle_bytes: bytes) -> bytes:
    """``archive`` with its data.pkl's bytes (and their CRC-32) replaced in place, same length."""
    info = zipfile.ZipFile(io.BytesIO(archive)).getinfo("archive/data.pkl")
    assert len(pickle_bytes) == info.file_size
    out = bytearray(archive)
    at = info.header_offset
    name_len, extra_len = struct.unpack("<HH", archive[at + 26 : at + 30])
    start = at + 30 + name_len + extra_len
    out[start : start + info.file_size] = pickle_bytes
    crc = struct.pack("<I", zlib.crc32(pickle_bytes))
    central = archive.rfind(b"PK\x01\x02", 0, archive.rfind(b"archive/data.pkl"))
    out[at + 14 : at + 18] = crc
    out[central + 16 : central + 20] = crc
    return bytes(out)


def _evil_pickle(folder: Path, length: int) -> bytes:
    """builtins.open(<folder>/ran.txt, 'w'), then a padding string: ``length`` bytes."""
    call = f"cbuiltins\nopen\n(S'{folder / MARKER}'\nS'w'\ntR0S'".encode()
    return call + b"x" * (length - len(call) - 3) + b"'\n."


def _audit(path: Path) -> Verdict:
    verdict = audit_path(path)
    assert not (path.parent / MARKER).exists(), "a payload ran!"
    return verdict


def _torch_loads(path: Path) -> bool:
    try:
        torch.load(path, weights_only=True)
    except RuntimeError:
        return False
    return True


def test_a_partial_copy_then_the_full_one_is_damaged_not_unsafe(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    full = _checkpoint()
    path = tmp_path / "resumed.ckpt"
    path.write_bytes(full[:1000] + full)
    assert not _torch_loads(path)  # (the ground truth: torch refuses it)
    verdict = _audit(path)
    assert verdict.status == "error", verdict.findings
    assert [f.code for f in verdict.findings if f.severity == "error"] == ["partial-copy"]
    assert "damaged: not loadable (a partial copy followed by a full one? download it again)" in (
        verdict.findings[-1].message
    )
    code, _out, err = run_cli("inspect", str(path))
    assert code == 2 and "partial copy followed by a full one" in err
    assert "Hint: download it again" in err


def test_a_partial_copy_before_a_payload_stays_unsafe(tmp_path: Path) -> None:
    """torch refuses it, but zipfile reads the archive after the prefix: its payload counts."""
    benign = _checkpoint()
    pkl = zipfile.ZipFile(io.BytesIO(benign)).read("archive/data.pkl")
    evil = _with_pickle(benign, _evil_pickle(tmp_path, len(pkl)))
    path = tmp_path / "resumed.ckpt"
    path.write_bytes(evil[:1000] + evil)
    verdict = _audit(path)
    assert verdict.status == "unsafe", verdict.findings
    assert any("builtins.open" in f.message for f in verdict.findings)


def test_junk_before_the_archive_stays_unsafe(tmp_path: Path) -> None:
    """A prefix that is no copy of the archive's start is still a polyglot."""
    full = _checkpoint()
    path = tmp_path / "prefixed.ckpt"
    path.write_bytes(b"PK\x03\x04" + os.urandom(996) + full)
    verdict = _audit(path)
    assert verdict.status == "unsafe"
    assert "partial-copy" not in {f.code for f in verdict.findings}


def test_a_checkpoint_stored_twice_loads_with_a_warning(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    full = _checkpoint()
    path = tmp_path / "twice.ckpt"
    path.write_bytes(full + full)
    assert _torch_loads(path)
    verdict = _audit(path)
    assert verdict.status == "safe", verdict.findings
    [warning] = [f for f in verdict.findings if f.severity == "warning"]
    assert warning.code == "trailing-data" and "holds the archive twice" in warning.message
    code, out, err = run_cli("inspect", str(path), "--json")
    assert code == 0, err
    assert any("holds the archive twice" in w for w in json.loads(out)["warnings"])


def test_a_different_second_copy_that_zipfile_reads_is_unsafe(tmp_path: Path) -> None:
    """Checkpoint A then A' of the same layout: torch reads A (the end record's zip64 locator
    points into it), zipfile reads A' (the zip64 record right before the locator, offsets
    shifted): a payload in A' was unseen ("safe")."""
    benign = _checkpoint()
    pkl = zipfile.ZipFile(io.BytesIO(benign)).read("archive/data.pkl")
    evil = _with_pickle(benign, _evil_pickle(tmp_path, len(pkl)))
    path = tmp_path / "twice.ckpt"
    path.write_bytes(benign + evil)
    assert _torch_loads(path)  # (torch reads the benign copy)
    with zipfile.ZipFile(path) as zf:  # (zipfile reads the other one)
        assert b"builtins" in zf.read("archive/data.pkl")
    assert _audit(path).status == "unsafe"


def test_junk_after_the_end_record_is_a_warning(tmp_path: Path) -> None:
    full = _checkpoint()
    path = tmp_path / "junk.ckpt"
    junk = os.urandom(1000).replace(b"PK", b"pk")
    path.write_bytes(full + junk)
    assert _torch_loads(path)
    verdict = _audit(path)
    assert verdict.status == "safe", verdict.findings
    assert [f.code for f in verdict.findings if f.severity == "warning"] == ["trailing-data"]


def test_a_zip_record_after_the_end_record_stays_unsafe(tmp_path: Path) -> None:
    full = _checkpoint()
    path = tmp_path / "junk.ckpt"
    path.write_bytes(full + b"\0" * 64 + b"PK\x03\x04" + b"\0" * 64)
    verdict = _audit(path)
    assert verdict.status == "unsafe"
    assert "trailing-data" in {f.code for f in verdict.findings if f.severity == "unsafe"}
