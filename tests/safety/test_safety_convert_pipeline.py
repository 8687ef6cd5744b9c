"""Convert's overlapped pipeline (source SHA-256 in its own thread, data flushed to disk during the
copy, final fsync beside the header check) keeps every promise: bit-exact, verified, fsynced,
atomic, the source SHA-256 right, no partial destination on any failure."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

import pytest

from modelsafe.errors import ConversionError
from modelsafe.registry import convert as convert_mod
from modelsafe.registry.convert import convert_file

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "model.ckpt"
    state = {f"w{i}": torch.randn(256, 256) for i in range(8)}  # 2 MiB of weights
    state["half"] = torch.randn(100, 7).half()
    state["view"] = state["w0"][3:9]  # shares w0's storage: gathered after the sequential pass
    state["empty"] = torch.zeros(0)
    torch.save({"state_dict": state}, path)
    return path


def _metadata(path: Path) -> dict[str, str]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    meta: dict[str, str] = json.loads(raw[8 : 8 + n])["__metadata__"]
    return meta


def _only(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_bit_exact_and_source_sha256_with_frequent_flushes(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(convert_mod, "FLUSH_INTERVAL", 0.0005)  # many fdatasyncs mid-copy
    monkeypatch.setattr(convert_mod, "CHUNK", 64 << 10)
    monkeypatch.setattr(convert_mod._SourceSha256, "BUFFER", 4096)
    dst = checkpoint.parent / "out.safetensors"
    convert_file(checkpoint, dst)
    expected = torch.load(checkpoint, weights_only=True)["state_dict"]
    got = safetensors_torch.load_file(dst)
    assert set(got) == set(expected)
    for name, tensor in expected.items():
        assert got[name].dtype == tensor.dtype and torch.equal(got[name], tensor), name
    sha = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert _metadata(dst)["modelsafe.source_sha256"] == sha


def test_only_zero_byte_tensors(tmp_path: Path) -> None:
    path = tmp_path / "empty.ckpt"
    torch.save({"a": torch.zeros(0), "b": torch.zeros(0, 3).half()}, path)
    result = convert_file(path)
    got = safetensors_torch.load_file(result.destination)
    assert got["a"].shape == (0,) and got["b"].shape == (0, 3)


def test_fsync_failure_leaves_no_partial_destination(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(convert_mod.os, "fsync", failing_fsync)
    with pytest.raises(ConversionError, match="Input/output error"):
        convert_file(checkpoint, checkpoint.parent / "out.safetensors")
    assert _only(checkpoint.parent) == ["model.ckpt"]


def test_header_corrupted_after_the_final_write_is_caught(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = convert_mod._verify_header

    def corrupt_then_check(path: Path, header: bytes) -> None:
        with open(path, "r+b") as fh:
            fh.seek(len(header) - 20)
            fh.write(b"#")
        real(path, header)

    monkeypatch.setattr(convert_mod, "_verify_header", corrupt_then_check)
    with pytest.raises(ConversionError, match="verification failed"):
        convert_file(checkpoint, checkpoint.parent / "out.safetensors")
    assert _only(checkpoint.parent) == ["model.ckpt"]


def test_source_rewritten_during_the_conversion_is_an_error(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = convert_mod._copy

    def copy_then_touch(*args: Any) -> Any:
        result = real(*args)
        st = os.stat(checkpoint)
        os.utime(checkpoint, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        return result

    monkeypatch.setattr(convert_mod, "_copy", copy_then_touch)
    with pytest.raises(ConversionError, match="changed while"):
        convert_file(checkpoint, checkpoint.parent / "out.safetensors")
    assert _only(checkpoint.parent) == ["model.ckpt"]


def test_source_hash_failure_leaves_no_partial_destination(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_result(self: Any) -> str:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(convert_mod._SourceSha256, "result", broken_result)
    with pytest.raises(ConversionError):
        convert_file(checkpoint, checkpoint.parent / "out.safetensors")
    assert _only(checkpoint.parent) == ["model.ckpt"]
