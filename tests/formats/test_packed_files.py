"""Models packed for transport, and downloads that never got their data, named as such.

A gzip/xz/7z/RAR/zstd/bzip2 file or a tar archive saved under a model's name is an error that
says "extract it" (it was "header length ... built to exhaust memory", or a tar of a harmless
.ckpt called an unsafe polyglot); a tar laid out as torch's ancient tar checkpoint format is
unsafe (torch.load unpickles its members unchecked); a hostile checkpoint inside a tar is still
named; a file of zero bytes is a preallocated download that never got its data.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import pickle
import tarfile
from pathlib import Path
from typing import Any

import pytest
import torch

from modelsafe.errors import UnsupportedFormatError
from modelsafe.registry.audit import audit_path
from modelsafe.registry.read import read_index
from modelsafe.testing import write_safetensors


def _model(tmp_path: Path) -> bytes:
    path = write_safetensors(tmp_path / "inner.safetensors", [("w", "F16", (8, 8))])
    return path.read_bytes()


@pytest.mark.parametrize(
    ("name", "pack", "what"),
    [
        ("gz", gzip.compress, "a gzip-compressed file"),
        ("xz", lzma.compress, "an xz-compressed file"),
        ("bz2", bz2.compress, "a bzip2-compressed file"),
        ("7z", lambda b: b"7z\xbc\xaf\x27\x1c\x00\x04" + b, "a 7-Zip archive"),
        ("rar", lambda b: b"Rar!\x1a\x07\x01\x00" + b, "a RAR archive"),
        ("zst", lambda b: b"\x28\xb5\x2f\xfd\x04\x58" + b, "a zstd-compressed file"),
    ],
)
def test_compressed_models_say_extract_it(tmp_path: Path, name: str, pack: Any, what: str) -> None:
    path = tmp_path / f"{name}.safetensors"
    path.write_bytes(pack(_model(tmp_path)))
    with pytest.raises(UnsupportedFormatError) as caught:
        read_index(path)
    assert f"the file is {what}, not model weights" in caught.value.reason
    assert "extract it" in caught.value.hint
    verdict = audit_path(path)
    assert verdict.status == "error" and verdict.format == "archive"
    assert any(what in f.message for f in verdict.findings), verdict.findings


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _ckpt(path: Path, value: Any) -> bytes:
    torch.save(value, path)
    return path.read_bytes()


def test_a_tar_of_a_harmless_checkpoint_is_an_archive_not_a_polyglot(tmp_path: Path) -> None:
    inner = _ckpt(tmp_path / "model.ckpt", {"w": torch.zeros(4, 4)})
    packed = _tar(tmp_path / "packed.ckpt", {"model.ckpt": inner})
    verdict = audit_path(packed)
    assert verdict.status == "error", verdict.findings
    assert [f.code for f in verdict.findings] == ["not-a-model:archive"]
    assert "tar archive (1 members: model.ckpt)" in verdict.findings[0].message


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (open, (str(self.marker), "w"))


def test_a_hostile_checkpoint_inside_a_tar_is_named(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    inner = _ckpt(tmp_path / "evil.ckpt", {"w": torch.zeros(2), "x": _Payload(marker)})
    packed = _tar(tmp_path / "packed.ckpt", {"evil.ckpt": inner})
    verdict = audit_path(packed)
    assert verdict.status == "unsafe", verdict.findings
    assert any("open" in f.message for f in verdict.findings if f.severity == "unsafe")
    assert not marker.exists()


def test_torch_tar_checkpoint_layout_is_unsafe(tmp_path: Path) -> None:
    stub = pickle.dumps(0, protocol=2)
    packed = _tar(tmp_path / "old.pt", {"sys_info": stub, "pickle": stub, "storages": stub})
    verdict = audit_path(packed)
    assert verdict.status == "unsafe"
    assert [f.code for f in verdict.findings if f.severity == "unsafe"] == ["tar-checkpoint"]


def test_a_file_of_zero_bytes_is_an_unfilled_download(tmp_path: Path) -> None:
    path = tmp_path / "model.ckpt"
    with open(path, "wb") as fh:
        fh.truncate(1 << 20)
    with pytest.raises(UnsupportedFormatError, match="nothing but zero bytes"):
        read_index(path)
    verdict = audit_path(path)
    assert verdict.status == "error" and verdict.format == "zeros"


def test_a_folder_with_nothing_to_audit_is_not_safe(tmp_path: Path) -> None:
    folder = tmp_path / "model.safetensors"
    folder.mkdir()
    (folder / "README.md").write_text("# nothing here")
    verdict = audit_path(folder)
    assert verdict.status == "error"
    assert [f.code for f in verdict.findings] == ["no-model-files"]
