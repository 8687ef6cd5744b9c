"""Fourth red-team round: payloads in files that are valid as something else, or stray files in a
model folder, whose findings the 'valid file' filter used to drop. Payloads only name a marker in
tmp_path; nothing here is ever loaded."""

from __future__ import annotations

import struct
from pathlib import Path

from modelsafe.registry.audit import audit_path
from modelsafe.testing import write_safetensors

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def _su(text: bytes) -> bytes:
    return b"\x8c" + bytes([len(text)]) + text


def _folder_with(tmp_path: Path, name: str, data: bytes) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    write_safetensors(folder / "model.safetensors", [("w", "F16", (8, 8))])
    (folder / name).write_bytes(data)
    return folder


def test_a_global_with_a_name_over_a_mib_in_a_stray_file(tmp_path: Path) -> None:
    """Protocol 4 resolves dotted names by getattr: os.path.os.path...open is os.open."""
    name = b"path.os." * ((1 << 20) // 8 + 16) + b"open"
    marker = str(tmp_path / "marker").encode()
    stream = (
        b"\x80\x04"
        + _su(b"os")
        + b"X"
        + struct.pack("<I", len(name))
        + name
        + b"\x93"
        + _su(marker)
        + b"K\x41\x86R."
    )
    folder = _folder_with(tmp_path, "checkpoint_last", b"N" + stream)
    verdict = audit_path(folder)
    assert verdict.status == "unsafe", verdict.findings
    assert not (tmp_path / "marker").exists()


def test_a_payload_in_a_second_pickle_that_breaks_after_its_call(tmp_path: Path) -> None:
    """torch.load reads the magic-number pickle, then the next one, and runs its call before the
    stream breaks (a POP with no MARK): the broken pickle's findings are kept."""
    marker = str(tmp_path / "marker")
    magic = b"\x8a\x0a" + LEGACY_MAGIC.to_bytes(10, "little") + b"."
    payload = f"cbuiltins\nopen\n(S'{marker}'\nS'w'\ntR".encode() + b"00"
    folder = _folder_with(tmp_path, "checkpoint_last", b"N" * 40 + magic + payload)
    verdict = audit_path(folder)
    assert verdict.status == "unsafe", verdict.findings
    assert any("builtins.open" in f.message for f in verdict.findings)
    assert not (tmp_path / "marker").exists()


def test_real_safetensors_whose_header_reads_as_opcodes_stay_safe(tmp_path: Path) -> None:
    """Header lengths whose bytes read as MARK + EXT4, or NEWTRUE + UNICODE followed by random
    tensor data (a REDUCE on True, a BUILD ...): CPython stops on those, so they are no payload."""
    import json
    import random

    header = json.dumps({"a": {"dtype": "F16", "shape": [64], "data_offsets": [0, 128]}}).encode()
    for length in (0x8428, 87688, 33832, 33928):
        head = struct.pack("<Q", length) + header + b" " * (length - len(header))
        for seed in range(40):
            path = tmp_path / f"f{length}-{seed}.safetensors"
            path.write_bytes(head + random.Random(seed).randbytes(128))
            verdict = audit_path(path)
            assert verdict.status == "safe", (length, seed, verdict.findings)
            path.unlink()
