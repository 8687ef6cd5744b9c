"""Bad input through ``modelsafe inspect``: exit 2 with a reason and a hint, never a traceback."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from modelsafe.testing import write_safetensors


def _truncated(tmp: Path) -> Path:
    path = write_safetensors(tmp / "cut.safetensors", [("a", "F32", (4096,))], data="zeros")
    path.write_bytes(path.read_bytes()[:5000])
    return path


def _past_eof(tmp: Path) -> Path:
    path = tmp / "past.safetensors"
    path.write_bytes(struct.pack("<Q", 10_000) + b'{"a":1}')
    return path


def _huge_header(tmp: Path) -> Path:
    path = tmp / "huge.safetensors"
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", 100_000_001) + b"{")
        fh.truncate(100_000_100)
    return path


def _overlap(tmp: Path) -> Path:
    header = json.dumps(
        {
            "a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
            "b": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]},
        }
    ).encode()
    path = tmp / "overlap.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(6))
    return path


def _out_of_range(tmp: Path) -> Path:
    header = b'{"a":{"dtype":"U8","shape":[4],"data_offsets":[1000000,1000004]}}'
    path = tmp / "range.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(4))
    return path


def _duplicate(tmp: Path) -> Path:
    entry = '{"dtype":"U8","shape":[1],"data_offsets":[0,1]}'
    header = f'{{"a":{entry},"a":{entry}}}'.encode()
    path = tmp / "dup.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(1))
    return path


def _non_utf8(tmp: Path) -> Path:
    header = b'{"\xc3\x28":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}'
    path = tmp / "utf.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(1))
    return path


def _empty(tmp: Path) -> Path:
    path = tmp / "empty.safetensors"
    path.write_bytes(b"")
    return path


def _empty_dir(tmp: Path) -> Path:
    folder = tmp / "not-a-model"
    folder.mkdir()
    (folder / "readme.txt").write_text("hi")
    return folder


def _truncated_gguf(tmp: Path) -> Path:
    path = tmp / "cut.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 5, 1_000_000) + b"\x00" * 20)
    return path


CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "truncated": (_truncated, "truncated"),
    "header past EOF": (_past_eof, "past the end of the file"),
    "100 MB header": (_huge_header, "exceeds"),
    "overlapping offsets": (_overlap, "overlap"),
    "out-of-range offsets": (_out_of_range, "truncated"),
    "duplicate keys": (_duplicate, "twice"),
    "non-UTF-8 names": (_non_utf8, "UTF-8"),
    "empty file": (_empty, "empty"),
    "directory without model_index.json": (_empty_dir, "model_index.json"),
    "truncated gguf": (_truncated_gguf, "cannot fit"),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("as_json", [False, True])
def test_inspect_reports_bad_input(run_cli, tmp_path: Path, case: str, as_json: bool) -> None:  # type: ignore[no-untyped-def]
    build, words = CASES[case]
    path = build(tmp_path)
    args = ["inspect", str(path), "--hash"] + (["--json"] if as_json else [])
    code, out, err = run_cli(*args)
    assert code == 2, (out, err)
    assert words in err
    assert "Hint:" in err
    assert "Traceback" not in out + err


def test_extension_lie_safetensors_named_ckpt(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = write_safetensors(tmp_path / "model.ckpt", [("a", "F16", (2, 2))], data="zeros")
    code, out, err = run_cli("inspect", str(path), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["format"] == "safetensors"
    assert any("'.ckpt'" in w and "safetensors" in w for w in report["warnings"])


def test_extension_lie_pickle_named_safetensors(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    torch = pytest.importorskip("torch")
    path = tmp_path / "model.safetensors"
    torch.save({"a": torch.zeros(2, 2)}, path)
    code, out, err = run_cli("inspect", str(path), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["format"] == "torch-zip"
    assert any("'.safetensors'" in w for w in report["warnings"])
