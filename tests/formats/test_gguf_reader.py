"""The GGUF reader against real files written by ``gguf.GGUFWriter`` and read by ``GGUFReader``."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from modelsafe.errors import MalformedFileError  # noqa: E402
from modelsafe.registry.read import read_index  # noqa: E402

Q = gguf.GGMLQuantizationType


def _write(path: Path) -> Path:
    writer = gguf.GGUFWriter(str(path), "flux")
    writer.add_string("general.name", "tiny flux")
    writer.add_uint32("flux.depth", 2)
    writer.add_array("tokens", [f"t{i}" for i in range(100)])
    rng = np.random.default_rng(0)
    raw_q4k = rng.integers(0, 255, (64, 144), dtype=np.uint8)  # 64 rows of one 256-wide block
    writer.add_tensor("double_blocks.0.img_attn.qkv.weight", raw_q4k, raw_dtype=Q.Q4_K)
    q8 = gguf.quants.quantize(rng.random((3, 64), dtype=np.float32), Q.Q8_0)
    writer.add_tensor("img_in.weight", q8, raw_dtype=Q.Q8_0)
    writer.add_tensor("img_in.bias", np.zeros(7, np.float16))
    writer.add_tensor("final.weight", rng.random((2, 3, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_matches_gguf_reader(tmp_path: Path) -> None:
    path = _write(tmp_path / "flux-Q4_K.gguf")
    index = read_index(path)
    assert index.format == "gguf"
    reference = gguf.GGUFReader(str(path))
    ours = index.by_name()
    assert set(ours) == {t.name for t in reference.tensors}
    for t in reference.tensors:
        mine = ours[t.name]
        assert mine.offset == t.data_offset
        assert mine.nbytes == t.n_bytes
        assert mine.dtype == t.tensor_type.name
        assert mine.shape == tuple(int(d) for d in reversed(t.shape))  # PyTorch order
    assert ours["double_blocks.0.img_attn.qkv.weight"].shape == (64, 256)
    assert ours["double_blocks.0.img_attn.qkv.weight"].dtype == "Q4_K"
    assert ours["final.weight"].shape == (2, 3, 4)
    assert index.metadata["general.architecture"] == "flux"
    assert index.metadata["flux.depth"] == "2"
    assert index.extra["architecture"] == "flux"
    assert index.extra["kv"]["tokens"] == {"array_of": "string", "length": 100}
    raw = path.read_bytes()
    bias = ours["img_in.bias"]
    assert raw[bias.offset : bias.offset + bias.nbytes] == bytes(14)


def test_inspect_reports_quant_precision(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = _write(tmp_path / "m.gguf")
    code, out, err = run_cli("inspect", str(path), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["format"] == "gguf" and report["tensor_count"] == 4
    assert "Q4_K" in report["dtype_histogram"]


def _header(version: int, n_tensors: int, n_kv: int) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)


@pytest.mark.parametrize(
    ("blob", "words"),
    [
        (_header(3, 1 << 40, 0), "cannot fit"),
        (_header(3, 0, 1) + struct.pack("<Q", 1 << 50), "cannot fit"),
        (_header(9, 0, 0), "version 9"),
        (_header(3, 0, 1) + struct.pack("<Q", 1) + b"k" + struct.pack("<I", 77), "unknown value"),
        (
            _header(3, 1, 0) + struct.pack("<Q", 1) + b"t" + struct.pack("<I", 1) + b"\x00" * 4,
            "truncated",
        ),
    ],
)
def test_malformed_gguf(tmp_path: Path, blob: bytes, words: str) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(blob + b"\x00" * 8)
    with pytest.raises(MalformedFileError, match=words):
        read_index(path)


def test_tensor_past_end_is_truncation(tmp_path: Path) -> None:
    path = _write(tmp_path / "m.gguf")
    path.write_bytes(path.read_bytes()[:-64])
    with pytest.raises(MalformedFileError, match="truncated"):
        read_index(path)
