"""Convert: temp file beside DST, no partial DST on failure, source never opened for writing."""

from __future__ import annotations

import builtins
import os
from pathlib import Path
from typing import Any

import pytest

from modelsafe.errors import ConversionError, UsageError
from modelsafe.registry import convert as convert_mod
from modelsafe.registry.convert import convert_file

torch = pytest.importorskip("torch")


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"a": torch.randn(64, 64), "b": torch.randn(8).t()}}, path)
    return path


def test_default_destination_and_metadata(checkpoint: Path) -> None:
    result = convert_file(checkpoint)
    assert result.destination == checkpoint.with_suffix(".safetensors")
    assert result.tensors == 2 and result.verified
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == [
        "model.ckpt",
        "model.safetensors",
    ]


def test_source_is_never_opened_for_writing(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = checkpoint.read_bytes()
    seen: list[tuple[str, Any]] = []
    real_open, real_os_open = builtins.open, os.open

    def spy_open(file: Any, mode: str = "r", *args: Any, **kw: Any) -> Any:
        seen.append((str(file), mode))
        return real_open(file, mode, *args, **kw)

    def spy_os_open(file: Any, flags: int, *args: Any, **kw: Any) -> int:
        seen.append((str(file), flags))
        return real_os_open(file, flags, *args, **kw)

    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(os, "open", spy_os_open)
    convert_file(checkpoint, checkpoint.parent / "out.safetensors")
    for name, mode in seen:
        if name == str(checkpoint):
            if isinstance(mode, str):
                assert set(mode) <= {"r", "b"}, mode
            else:
                assert mode & (os.O_WRONLY | os.O_RDWR) == 0
    assert any(name == str(checkpoint) for name, _ in seen)
    assert checkpoint.read_bytes() == before


@pytest.mark.parametrize("stage", ["_copy", "_verify"])
def test_failure_leaves_no_partial_destination(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch, stage: str
) -> None:
    def boom(*args: Any, **kw: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(convert_mod, stage, boom)
    dst = checkpoint.parent / "out.safetensors"
    with pytest.raises(ConversionError):
        convert_file(checkpoint, dst)
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["model.ckpt"]


def test_corruption_during_copy_is_caught_by_verification(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = convert_mod._copy

    def corrupting(fd: int, src: Path, out: Any, plan: Any, start: int) -> str:
        sha = real(fd, src, out, plan, start)
        out.seek(start + 3)
        out.write(b"\xff")
        return sha

    monkeypatch.setattr(convert_mod, "_copy", corrupting)
    with pytest.raises(ConversionError, match="verification failed"):
        convert_file(checkpoint, checkpoint.parent / "out.safetensors")
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["model.ckpt"]


def test_existing_destination_needs_overwrite(checkpoint: Path) -> None:
    dst = checkpoint.parent / "out.safetensors"
    dst.write_bytes(b"keep me")
    with pytest.raises(UsageError):
        convert_file(checkpoint, dst)
    assert dst.read_bytes() == b"keep me"
    convert_file(checkpoint, dst, overwrite=True)
    assert dst.read_bytes() != b"keep me"


def test_cli_audit_and_convert(run_cli: Any, checkpoint: Path, tmp_path: Path) -> None:
    evil = tmp_path / "evil.pt"
    evil.write_bytes(b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueR.")
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"\x80\x02\xff\xfe")
    code, out, err = run_cli("audit", str(checkpoint))
    assert code == 0 and "SAFE" in out
    code, out, err = run_cli("audit", str(evil))
    assert code == 1 and "os.system" in out and "byte" in out
    code, out, err = run_cli("audit", str(junk), "--json")
    assert code == 2 and '"status": "error"' in out and "Traceback" not in out + err
    code, out, err = run_cli("convert", str(evil))
    assert code == 1 and "unsafe" in err and "Traceback" not in err
    assert not (tmp_path / "evil.safetensors").exists()
    code, out, err = run_cli("convert", str(checkpoint), "--json")
    assert code == 0 and '"tensors": 2' in out
