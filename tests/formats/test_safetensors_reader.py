"""The safetensors reader: real files in, exact offsets out; every malformation a clear error."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelsafe.errors import MalformedFileError, UnsupportedFormatError
from modelsafe.registry.formats.safetensors_reader import (
    MAX_HEADER_BYTES,
    parse_header,
    read_safetensors_index,
)
from modelsafe.registry.read import read_index
from modelsafe.testing import write_safetensors


def _raw_file(
    path: Path, header: bytes | str, data: bytes = b"", length: int | None = None
) -> Path:
    raw = header.encode() if isinstance(header, str) else header
    n = len(raw) if length is None else length
    path.write_bytes(struct.pack("<Q", n) + raw + data)
    return path


def _entry(dtype: str, shape: list[int], begin: int, end: int) -> dict[str, object]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def test_reads_offsets_sizes_and_metadata(tmp_path: Path) -> None:
    meta = {"modelspec.architecture": "stable-diffusion-xl-v1-base", "ss_network_dim": "16"}
    path = write_safetensors(
        tmp_path / "m.safetensors",
        [("a.weight", "F16", (4, 3)), ("b.bias", "BF16", (5,)), ("c", "F8_E4M3", (2, 2))],
        metadata=meta,
        data="random",
    )
    index = read_safetensors_index(path)
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert index.format == "safetensors"
    assert dict(index.metadata) == meta
    assert index.extra["header_length"] == n
    by = index.by_name()
    assert by["a.weight"].offset == 8 + n and by["a.weight"].nbytes == 24
    assert by["b.bias"].offset == 8 + n + 24 and by["b.bias"].nbytes == 10
    assert by["c"].shape == (2, 2) and by["c"].nbytes == 4
    assert index.warnings == ()
    # the bytes at [offset, offset + nbytes) are the tensor's, as safetensors itself reads them
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as fh:
        first = fh.get_tensor("a.weight")
    assert raw[by["a.weight"].offset :][:24] == first.tobytes()


BAD_HEADERS = {
    "invalid json": ('{"a": ', "not valid JSON"),
    "not an object": ("[1, 2]", "not a JSON object"),
    "duplicate key": (
        '{"a":{"dtype":"F16","shape":[1],"data_offsets":[0,2]},'
        '"a":{"dtype":"F16","shape":[1],"data_offsets":[0,2]}}',
        "twice",
    ),
    "unknown dtype": ('{"a":{"dtype":"F12","shape":[1],"data_offsets":[0,2]}}', "unknown dtype"),
    "shape vs offsets": (
        '{"a":{"dtype":"F16","shape":[3],"data_offsets":[0,2]}}',
        "needs 6 bytes",
    ),
    "negative shape": ('{"a":{"dtype":"F16","shape":[-1],"data_offsets":[0,2]}}', "shape"),
    "reversed offsets": ('{"a":{"dtype":"U8","shape":[0],"data_offsets":[2,0]}}', "begin<=end"),
    "overlap": (
        '{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},'
        '"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}',
        "overlap",
    ),
    "out of range": ('{"a":{"dtype":"U8","shape":[4],"data_offsets":[100,104]}}', "truncated"),
    "metadata not strings": ('{"__metadata__":{"a":1}}', "only strings"),
    "lone surrogate name": ('{"\\udc80":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}', "UTF-8"),
    "nan": ('{"a":NaN}', "not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(BAD_HEADERS))
def test_bad_headers_are_clear_errors(tmp_path: Path, case: str) -> None:
    header, words = BAD_HEADERS[case]
    path = _raw_file(tmp_path / "bad.safetensors", header, data=bytes(8))
    with pytest.raises(MalformedFileError) as info:
        read_index(path)
    assert words in info.value.reason and info.value.hint


def test_non_utf8_name(tmp_path: Path) -> None:
    header = b'{"\xff\xfe":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}'
    with pytest.raises(MalformedFileError, match="not valid UTF-8"):
        read_index(_raw_file(tmp_path / "bad.safetensors", header))


def test_header_length_past_eof(tmp_path: Path) -> None:
    path = _raw_file(tmp_path / "cut.safetensors", '{"a": 1}', length=5000)
    with pytest.raises(MalformedFileError, match="runs past the end of the file"):
        read_index(path)


def test_hundred_megabyte_header_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "huge.safetensors"
    with open(path, "wb") as fh:  # sparse: the claimed header costs no disk and is never read
        fh.write(struct.pack("<Q", MAX_HEADER_BYTES + 1) + b"{")
        fh.truncate(MAX_HEADER_BYTES + 64)
    with pytest.raises(MalformedFileError, match="exceeds the 100,000,000-byte limit"):
        read_index(path)


def test_random_bytes_named_safetensors_are_named_as_unknown_data(tmp_path: Path) -> None:
    """Bytes whose length field points past the file and whose header cannot start are no
    safetensors at all: inspect says what audit says (it spoke of a header built to exhaust
    memory)."""
    path = tmp_path / "x.safetensors"
    path.write_bytes(b"\xff" * 64)
    with pytest.raises(UnsupportedFormatError, match="unknown binary data"):
        read_index(path)


def test_truncated_data_region(tmp_path: Path) -> None:
    path = write_safetensors(tmp_path / "m.safetensors", [("a", "F32", (1024,))], data="zeros")
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(MalformedFileError, match="truncated"):
        read_index(path)


def test_dense_header_is_refused_without_parsing(tmp_path: Path) -> None:
    header = '{"a":[' + ",".join(["[]"] * 600_000) + "]}"  # 1.8 MB of empty lists
    with pytest.raises(MalformedFileError, match="far denser"):
        parse_header(header.encode(), 8 + len(header))


def test_holes_and_trailing_bytes_are_warnings(tmp_path: Path) -> None:
    header = json.dumps({"a": _entry("U8", [2], 0, 2), "b": _entry("U8", [2], 4, 6)})
    index = read_index(_raw_file(tmp_path / "h.safetensors", header, data=bytes(10)))
    assert len(index.warnings) == 2
    assert "between tensors" in index.warnings[0] and "after the last" in index.warnings[1]


def test_zero_size_tensors_and_empty_header(tmp_path: Path) -> None:
    header = json.dumps({"e": _entry("F32", [0, 3], 0, 0), "a": _entry("U8", [1], 0, 1)})
    index = read_index(_raw_file(tmp_path / "z.safetensors", header, data=b"\x01"))
    assert {t.name: t.nbytes for t in index.tensors} == {"e": 0, "a": 1}
    assert read_index(_raw_file(tmp_path / "empty.safetensors", "{}")).tensors == ()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.integers(min_value=0, max_value=1 << 20))
def test_fuzz_random_bytes_only_raise_malformed(raw: bytes, extra: int) -> None:
    try:
        header = parse_header(raw, 8 + len(raw) + extra)
    except MalformedFileError:
        return
    assert all(t.offset >= 8 + len(raw) for t in header.tensors)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 1 << 66) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=12,
)
_entries = st.fixed_dictionaries(
    {
        "dtype": st.sampled_from(["F16", "F32", "U8", "BF16", "F4", "X"]),
        "shape": st.lists(st.integers(-1, 9), max_size=4),
        "data_offsets": st.lists(st.integers(-1, 600), min_size=1, max_size=3),
    }
)


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(st.text(max_size=6), _entries | _json_values, max_size=6),
    st.integers(min_value=0, max_value=700),
)
def test_fuzz_structured_headers(header: dict[str, object], data_size: int) -> None:
    raw = json.dumps(header).encode()
    try:
        parsed = parse_header(raw, 8 + len(raw) + data_size)
    except MalformedFileError as exc:
        assert exc.reason and exc.hint
        return
    end = 8 + len(raw) + data_size
    spans = sorted((t.offset, t.offset + t.nbytes) for t in parsed.tensors if t.nbytes)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:], strict=False))
    assert all(stop <= end for _, stop in spans)
