"""Broken downloads are errors that say so, never "unsafe" for bytes no loader can run.

An interrupted safetensors download whose header length starts with an EXT1/2/4 opcode was
"unsafe" (CPython's pickle.load stops at an EXT code: copyreg's registry is empty); a zip of model
files renamed to a model name was "unsafe" (a member outside the archive folder); a truncated
checkpoint printed one line per missing tensor; the audit's safetensors rules disagreed with the
safetensors library (header limit, extra keys in an entry, whitespace before the JSON, a header
denser than any tensor table).
"""

from __future__ import annotations

import copyreg
import json
import pickle
import struct
import zipfile
from pathlib import Path

import pytest
import torch

from modelsafe.registry.audit import audit_path
from modelsafe.testing import write_safetensors


def _header(tensors: dict[str, tuple[str, list[int], int, int]], pad_to: int = 0) -> bytes:
    raw = json.dumps(
        {n: {"dtype": d, "shape": s, "data_offsets": [b, e]} for n, (d, s, b, e) in tensors.items()}
    ).encode()
    return raw + b" " * max(0, pad_to - len(raw))


def _file(path: Path, header: bytes, data: int, length: int | None = None) -> Path:
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(header) if length is None else length) + header)
        fh.truncate(8 + len(header) + data)
    return path


_LORA = {
    "down": ("F16", [32, 320], 0, 20480),
    "up": ("F16", [320, 32], 20480, 40960),
}


def test_copyregs_extension_registry_is_empty() -> None:
    """The premise: with no code registered, pickle.load stops at any EXT opcode."""
    assert copyreg._extension_registry == {}  # type: ignore[attr-defined]


@pytest.mark.parametrize("length", [0x282, 0x283, 0x284])  # EXT1, EXT2, EXT4 as the first byte
def test_an_interrupted_safetensors_download_is_an_error_not_unsafe(
    tmp_path: Path, length: int
) -> None:
    path = _file(tmp_path / "lora.safetensors", _header(_LORA, length), 20480)
    with pytest.raises(ValueError), open(path, "rb") as fh:
        pickle.load(fh)  # CPython: "unregistered extension code"; nothing runs
    verdict = audit_path(path)
    assert verdict.status == "error", verdict.findings
    [finding] = verdict.findings
    assert "the file is truncated" in finding.message and "download it again" in finding.message


def test_a_payload_after_an_ext_opcode_never_runs_and_is_no_finding(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    payload = b"\x8c\x08builtins\x8c\x04open\x93\x8c" + bytes([len(str(marker))])
    payload += str(marker).encode() + b"\x8c\x01w\x86R."
    path = tmp_path / "blob.bin"
    path.write_bytes(b"\x82\x07" + payload)  # EXT1 7, then open(marker, "w")
    with pytest.raises(ValueError, match="extension code"):
        pickle.loads(path.read_bytes())
    assert not marker.exists()
    assert audit_path(path).status == "error"
    # ... and without the EXT in front the same bytes are a payload the audit names
    path.write_bytes(payload)
    verdict = audit_path(path)
    assert verdict.status == "unsafe"
    assert any("builtins.open" in f.message for f in verdict.findings)
    assert not marker.exists()


def test_a_global_before_an_ext_opcode_is_still_unsafe(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    path.write_bytes(b"\x8c\x02os\x8c\x06system\x93\x82\x01.")  # os.system imported, then EXT1
    verdict = audit_path(path)
    assert verdict.status == "unsafe"
    assert any("os.system" in f.message for f in verdict.findings)


def test_an_ext_opcode_in_a_real_pickle_is_still_unsafe(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(b"\x80\x02\x82\x01)R.")
    verdict = audit_path(path)
    assert verdict.status == "unsafe"
    assert [f.code for f in verdict.findings if f.severity == "unsafe"] == ["extension"]


def test_whitespace_before_the_json_is_safetensors_as_the_library_reads_it(
    tmp_path: Path,
) -> None:
    from safetensors import safe_open

    raw = b"\n  " + _header({"a": ("F32", [4], 0, 16)}, 0x83 - 3)  # length 0x83: EXT2
    path = _file(tmp_path / "spaced.safetensors", raw, 16)
    with safe_open(str(path), "np") as fh:
        assert list(fh.keys()) == ["a"]
    verdict = audit_path(path)
    assert verdict.status == "safe" and verdict.format == "safetensors", verdict.findings


def test_the_audit_keeps_the_librarys_header_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.safetensors"
    with open(path, "wb") as fh:  # sparse: the header is never read
        fh.write(struct.pack("<Q", 100_000_008) + b"{")
        fh.truncate(100_000_100)
    verdict = audit_path(path)
    assert verdict.status == "error"
    assert "exceeds the 100,000,000-byte limit" in verdict.findings[0].message


def test_other_keys_in_a_tensor_entry_are_ignored_as_the_library_ignores_them(
    tmp_path: Path,
) -> None:
    from safetensors import safe_open

    raw = json.dumps({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16], "foo": 1}})
    path = _file(tmp_path / "extra.safetensors", raw.encode(), 16)
    with safe_open(str(path), "np") as fh:
        assert fh.get_tensor("a").shape == (4,)
    assert audit_path(path).status == "safe"
    raw = json.dumps({"a": {"dtype": "F32", "shape": [4]}})  # a missing key is still refused
    assert audit_path(_file(tmp_path / "short.safetensors", raw.encode(), 16)).status == "error"


def test_a_header_denser_than_any_tensor_table_is_refused_unparsed(tmp_path: Path) -> None:
    raw = json.dumps({"a": {"dtype": "F32", "shape": [1] * 700_000 + [4], "data_offsets": [0, 16]}})
    verdict = audit_path(_file(tmp_path / "dense.safetensors", raw.encode(), 16))
    assert verdict.status == "error"
    assert [f.code for f in verdict.findings] == ["dense-header"]
    assert "far denser than any real tensor table" in verdict.findings[0].message


def test_a_truncated_checkpoint_is_one_finding_that_says_so(tmp_path: Path) -> None:
    tensors = [(f"t{i}", "F16", (256, 256)) for i in range(300)]
    full = write_safetensors(tmp_path / "full.safetensors", tensors)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    verdict = audit_path(cut)
    assert verdict.status == "error"
    [finding] = verdict.findings
    assert "the file is truncated" in finding.message
    assert "151 tensors lie past its end" in finding.message
    assert "download it again" in finding.message


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.mark.parametrize("name", ["mylora.safetensors", "mylora.ckpt"])
def test_a_zip_of_model_files_is_an_archive_to_extract(tmp_path: Path, name: str) -> None:
    model = write_safetensors(tmp_path / "inner.safetensors", [("w", "F16", (8, 8))]).read_bytes()
    nested = _zip(tmp_path / name, {"mylora/mylora.safetensors": model, "README.md": b"# hi\n"})
    flat = _zip(tmp_path / f"flat-{name}", {"mylora.safetensors": model, "a.png": b"\x89PNG"})
    for path, shown in ((nested, "mylora/mylora.safetensors"), (flat, "mylora.safetensors")):
        verdict = audit_path(path)
        assert verdict.status == "error", verdict.findings
        assert [f.code for f in verdict.findings] == ["not-a-model:archive"]
        assert f"a zip archive holding {shown}" in verdict.findings[0].message
        assert "extract it" in verdict.findings[0].message


def test_a_checkpoint_with_a_pickle_outside_its_folder_stays_unsafe(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "model.ckpt"
    torch.save({"w": torch.zeros(2)}, path)
    evil = b"\x80\x02cbuiltins\nopen\nq\x00X" + struct.pack("<I", len(str(marker)))
    evil += str(marker).encode() + b"X\x01\x00\x00\x00w\x86R."
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("evil.pkl", evil)
    verdict = audit_path(path)
    assert verdict.status == "unsafe"
    assert "outside-member" in {f.code for f in verdict.findings}
    # a zip with a pickle in it and no data.pkl is not "model files packed": still unsafe
    packed = _zip(tmp_path / "packed.ckpt", {"m/m.safetensors": b"x" * 64, "evil.pkl": evil})
    assert audit_path(packed).status == "unsafe"
    assert not marker.exists()
