"""A bounded GGUF header reader: key/values and the tensor table, never tensor data.

The file is read (buffered, never memory-mapped: a file cut short while it is read must be an
error, not a SIGBUS) with a cursor that checks every length against the bytes left, so a lying
count or string length is a :class:`MalformedFileError`, never a huge allocation; long arrays are
skipped over, keeping only their type and length. What is kept is bounded too, whatever the file
size: at most :data:`MAX_TENSORS` tensors and :data:`MAX_KEYS` key/values, a string value longer
than :data:`MAX_KEPT_TEXT` is skipped (summarised as ``{"string_of_length": n}``), a string array of
more than :data:`MAX_ARRAY_STRINGS` items is refused (skipping it costs one step per item), and
keys, names and kept strings together may hold :data:`MAX_HEADER_TEXT` bytes. Quant types and
their block sizes come from the ``gguf`` package's constants (``GGML_QUANT_SIZES``), so new types
are known as soon as the package knows them.

Shapes are reported in PyTorch order (GGUF stores ``ne[0]``, the fastest-moving dimension,
first); offsets are absolute; ``nbytes`` is ``elements / block_size * type_size``.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Any, BinaryIO

from modelsafe.errors import FileReadError, MalformedFileError
from modelsafe.types import Format, TensorIndex, TensorInfo

DEFAULT_ALIGNMENT = 32
MAX_DIMS = 8  # GGML uses 4; anything above 8 is not a real tensor
KEEP_ARRAY_ITEMS = 64  # arrays longer than this are summarised in ``extra``, not copied
# Limits far above any real file (LLM GGUFs: ~50 keys, a few thousand tensors, vocabularies of
# ~260k tokens, chat templates of a few KiB), so a crafted header costs seconds and megabytes,
# not minutes and gigabytes, however big the file it sits in.
MAX_TENSORS = 1 << 18
MAX_KEYS = 1 << 18
MAX_ARRAY_STRINGS = 1 << 22
MAX_NAME = 1 << 16  # a key or tensor name (GGUF's own limit for keys is 65,535 bytes)
MAX_KEPT_TEXT = 1 << 20  # a longer string value is skipped, its length kept
MAX_HEADER_TEXT = 64 << 20  # keys, tensor names and kept strings, all together
_HINT = "the file is damaged or is not a GGUF file; download it again"
CUT_SHORT_HINT = "the download was cut short; download it again"
# A count or length whose items need more bytes than this is no real header's (the largest, an LLM
# vocabulary, is tens of MiB): past the end of the file it is damage, not a download cut short.
MAX_HEADER_CLAIM = 1 << 30


class TruncatedGGUFError(MalformedFileError):
    """A GGUF file that ends before what its header describes: a download cut short."""


# GGUF value type id -> struct format of a scalar (8: string, 9: array are handled apart).
_SCALARS: dict[int, str] = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9


class _Cursor:
    """Reads little-endian values from a file, refusing to read past its (stat'ed) end."""

    def __init__(self, fh: BinaryIO, size: int, where: str, wide: bool) -> None:
        self.fh, self.size, self.where, self.pos = fh, size, where, 0
        self.count_format = "<Q" if wide else "<I"
        self.kept = 0  # bytes of text kept so far (MAX_HEADER_TEXT)

    def fail(self, problem: str) -> MalformedFileError:
        return MalformedFileError(f"{self.where}: {problem} (at byte {self.pos:,})", hint=_HINT)

    def truncated(self, problem: str) -> TruncatedGGUFError:
        """The file ends where its header goes on (``problem`` says what is missing)."""
        return TruncatedGGUFError(
            f"{self.where}: truncated: {problem} (at byte {self.pos:,}): the file ends inside "
            "its header",
            hint=CUT_SHORT_HINT,
        )

    def take(self, n: int, what: str) -> bytes:
        self._check(n, what)
        data = self.fh.read(n)
        if len(data) != n:
            raise self._shrunk()
        self.pos += n
        return data

    def skip(self, n: int, what: str) -> None:
        self._check(n, what)
        self.pos = self.fh.seek(n, 1)

    def _check(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise self.truncated(f"{what} needs {n:,} bytes, {self.size - self.pos:,} left")

    def _shrunk(self) -> MalformedFileError:
        return MalformedFileError(
            f"{self.where}: the file got shorter while it was read (at byte {self.pos:,})",
            hint="something is rewriting it (a download in progress?); try again when it is done",
        )

    def unpack(self, fmt: str, what: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def count(self, what: str, min_item_bytes: int, limit: int | None = None) -> int:
        """A count (or length) read from the header, checked against the bytes left: one a real
        header could hold (within ``limit``) that runs past the end is a file cut short, an
        absurd one a damaged file."""
        value = int(self.unpack(self.count_format, what))
        needed = value * min_item_bytes
        if needed > self.size - self.pos:
            problem = f"{what} {value:,} cannot fit in the {self.size - self.pos:,} bytes left"
            if needed <= MAX_HEADER_CLAIM and (limit is None or value <= limit):
                raise self.truncated(problem)
            raise self.fail(problem)
        return value

    def count_at_most(self, what: str, min_item_bytes: int, limit: int) -> int:
        value = self.count(what, min_item_bytes, limit)
        if value > limit:
            raise self.fail(f"{what} {value:,} is more than any real model has ({limit:,})")
        return value

    def name(self, what: str) -> str:
        """A key or tensor name: always kept, so refused when absurdly long."""
        return self._decode(
            self.take(self.count_at_most(f"{what} length", 1, MAX_NAME), what), what
        )

    def text(self, what: str) -> str | dict[str, int]:
        """A string value: kept when it is short, else skipped and summarised by its length."""
        n = self.count(f"{what} length", 1)
        if n > MAX_KEPT_TEXT:
            self.skip(n, what)
            return {"string_of_length": n}
        return self._decode(self.take(n, what), what)

    def _decode(self, raw: bytes, what: str) -> str:
        self.kept += len(raw)
        if self.kept > MAX_HEADER_TEXT:
            raise self.fail(
                f"the header holds more than {MAX_HEADER_TEXT:,} bytes of names and strings"
            )
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not valid UTF-8") from None

    def value(self, vtype: int, what: str, depth: int = 0) -> Any:
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype], what)
        if vtype == _STRING:
            return self.text(what)
        if vtype == _ARRAY and depth == 0:
            item_type = int(self.unpack("<I", f"{what} item type"))
            n = self.count(f"{what} item count", _min_bytes(item_type))
            if n <= KEEP_ARRAY_ITEMS:
                return [self.value(item_type, what, depth + 1) for _ in range(n)]
            if item_type in _SCALARS:  # skipped in one step: no list of millions of numbers
                self.skip(n * _min_bytes(item_type), what)
            elif item_type == _STRING:  # each length read, the text skipped (never decoded)
                if n > MAX_ARRAY_STRINGS:
                    raise self.fail(
                        f"{what} has {n:,} strings, more than any real model has "
                        f"({MAX_ARRAY_STRINGS:,})"
                    )
                for _ in range(n):
                    self.skip(self.count(f"{what} item length", 1), what)
            else:
                raise self.fail(f"{what} has an unknown value type {item_type}")
            return {"array_of": _type_name(item_type), "length": n}
        raise self.fail(f"{what} has an unknown value type {vtype}")


def _min_bytes(vtype: int) -> int:
    if vtype in _SCALARS:
        return struct.calcsize(_SCALARS[vtype])
    return 4  # a string's length prefix (u32 in GGUF v1); nested arrays are refused


def _type_name(vtype: int) -> str:
    names = {0: "u8", 1: "i8", 2: "u16", 3: "i16", 4: "u32", 5: "i32", 6: "f32", 7: "bool"}
    names.update({8: "string", 9: "array", 10: "u64", 11: "i64", 12: "f64"})
    return names.get(vtype, str(vtype))


def _quant(type_id: int, name: str, cur: _Cursor) -> tuple[str, int, int]:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        qtype = GGMLQuantizationType(type_id)
        block, type_size = GGML_QUANT_SIZES[qtype]
    except (ValueError, KeyError):
        raise cur.fail(f"tensor {name!r} has an unknown GGML type id {type_id}") from None
    return qtype.name, block, type_size


def read_gguf_index(path: Path) -> TensorIndex:
    """The TensorIndex of a GGUF file: tensors, quant types, key/values (headers only)."""
    where = str(path)
    try:
        with open(path, "rb", buffering=1 << 20) as fh:
            size = fh.seek(0, 2)
            if size < 16:
                raise TruncatedGGUFError(
                    f"{where}: truncated GGUF header ({size} bytes)", CUT_SHORT_HINT
                )
            fh.seek(0)
            return _parse(fh, size, path)
    except OSError as exc:
        raise FileReadError(
            f"cannot read {path}: {exc.strerror or exc}", hint="check the path and permissions"
        ) from exc


def _parse(fh: BinaryIO, size: int, path: Path) -> TensorIndex:
    where = str(path)
    head = fh.read(8)
    if head[:4] != b"GGUF":
        raise MalformedFileError(f"{where}: no GGUF magic", _HINT)
    (version,) = struct.unpack("<I", head[4:8])
    if version not in (1, 2, 3) and struct.unpack(">I", head[4:8])[0] in (1, 2, 3):
        raise MalformedFileError(
            f"{where}: a big-endian GGUF file (for s390x/POWER machines); modelsafe reads the "
            "little-endian GGUF files that PyTorch, ComfyUI and llama.cpp on x86/ARM use",
            hint="download the little-endian file, or convert it (gguf-py's gguf_convert_endian)",
        )
    if version not in (1, 2, 3):
        raise MalformedFileError(
            f"{where}: GGUF version {version} is not one modelsafe reads (1-3)",
            hint="a GGUF version newer than modelsafe knows, or not a GGUF file",
        )
    cur = _Cursor(fh, size, where, wide=version >= 2)
    cur.pos = 8
    n_tensors = cur.count_at_most("tensor count", 8 + 4 + 4 + 8, MAX_TENSORS)
    n_kv = cur.count_at_most("key/value count", 8 + 4 + 1, MAX_KEYS)
    kv: dict[str, Any] = {}
    for _ in range(n_kv):
        key = cur.name("key")
        vtype = int(cur.unpack("<I", f"type of {key!r}"))
        if key in kv:
            raise cur.fail(f"key {key!r} appears twice")
        kv[key] = cur.value(vtype, f"value of {key!r}")
    infos = []
    for _ in range(n_tensors):
        name = cur.name("tensor name")
        n_dims = int(cur.unpack("<I", f"dimension count of {name!r}"))
        if n_dims > MAX_DIMS:
            raise cur.fail(f"tensor {name!r} claims {n_dims} dimensions")
        dims = [int(cur.unpack(cur.count_format, f"dimension of {name!r}")) for _ in range(n_dims)]
        type_id = int(cur.unpack("<I", f"type of {name!r}"))
        offset = int(cur.unpack("<Q", f"offset of {name!r}"))
        infos.append((name, dims, type_id, offset))
    alignment = kv.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise cur.fail(f"general.alignment {alignment!r} is not a power of two")
    data_start = -(-cur.pos // alignment) * alignment
    tensors = _tensors(infos, data_start, size, alignment, cur)
    tensors, reshaped = _original_shapes(tensors, kv)
    return TensorIndex(
        path=path,
        format=Format.GGUF.value,
        tensors=tuple(tensors),
        metadata={k: _as_text(v) for k, v in kv.items()},
        warnings=_warnings(tensors, data_start, size),
        extra={
            "gguf_version": version,
            "architecture": kv.get("general.architecture"),
            "alignment": alignment,
            "data_start": data_start,
            "kv": kv,
            "reshaped_tensors": reshaped,
        },
    )


def _tensors(
    infos: list[tuple[str, list[int], int, int]],
    data_start: int,
    size: int,
    alignment: int,
    cur: _Cursor,
) -> list[TensorInfo]:
    tensors, seen = [], set()
    for name, dims, type_id, rel in infos:
        if name in seen:
            raise cur.fail(f"tensor {name!r} appears twice")
        seen.add(name)
        dtype, block, type_size = _quant(type_id, name, cur)
        numel = 1
        for d in dims:
            numel *= d
        if dims and dims[0] % block:
            raise cur.fail(
                f"tensor {name!r}: first dimension {dims[0]} is not a multiple of the "
                f"{dtype} block size {block}"
            )
        nbytes = numel // block * type_size
        if rel % alignment:
            raise cur.fail(f"tensor {name!r}: offset {rel} is not aligned to {alignment}")
        tensors.append(TensorInfo(name, dtype, tuple(reversed(dims)), data_start + rel, nbytes))
    _check_extent(tensors, data_start, size, alignment, cur.where)
    ordered = sorted(tensors, key=lambda t: (t.offset, t.nbytes))
    for a, b in zip(ordered, ordered[1:], strict=False):
        if b.nbytes and a.offset + a.nbytes > b.offset:
            raise MalformedFileError(
                f"{cur.where}: tensors {a.name!r} and {b.name!r} overlap",
                hint="a file whose tensors share bytes is damaged or crafted; download it again",
            )
    return tensors


def _check_extent(
    tensors: list[TensorInfo], data_start: int, size: int, alignment: int, where: str
) -> None:
    """Every tensor within the file. Writers pack the tensors one after another (each padded to
    the alignment), so the table implies how long the data region is: a tensor past the end of
    the file but inside that region is a file cut short; one past the region too (an offset
    no writer gives) is a corrupt tensor table."""
    region = sum(-(-t.nbytes // alignment) * alignment for t in tensors)
    past = [t for t in tensors if t.offset + t.nbytes > size]
    absurd = [t for t in past if t.offset + t.nbytes > data_start + region]
    if absurd:
        t = absurd[0]
        raise MalformedFileError(
            f"{where}: tensor {t.name!r} lies at offset {t.offset - data_start:,} of the data "
            f"region, past the {region:,} bytes its {len(tensors)} tensors fill and past the end "
            f"of the file ({size:,} bytes): the tensor table is corrupt",
            _HINT,
        )
    if past:
        t = past[0]
        raise TruncatedGGUFError(
            f"{where}: tensor {t.name!r} ends at byte {t.offset + t.nbytes:,}, past the end of "
            f"the file ({size:,} bytes): the file is truncated",
            hint=CUT_SHORT_HINT,
        )


ORIG_SHAPE_KEY = "comfy.gguf.orig_shape."


def _original_shapes(tensors: list[TensorInfo], kv: dict[str, Any]) -> tuple[list[TensorInfo], int]:
    """ComfyUI-GGUF's converter stores some tensors flattened to rows of 256 (so they quantize)
    and their real PyTorch shape under ``comfy.gguf.orig_shape.<name>``: put it back (only when
    it holds the same number of elements)."""
    out, reshaped = [], 0
    for t in tensors:
        orig = kv.get(ORIG_SHAPE_KEY + t.name)
        if (
            isinstance(orig, list)
            and 0 < len(orig) <= MAX_DIMS
            and all(isinstance(d, int) and d >= 0 for d in orig)
            and math.prod(orig) == t.numel
        ):
            t = TensorInfo(t.name, t.dtype, tuple(orig), t.offset, t.nbytes, t.source)
            reshaped += 1
        out.append(t)
    return out, reshaped


def _warnings(tensors: list[TensorInfo], data_start: int, size: int) -> tuple[str, ...]:
    end = max((t.offset + t.nbytes for t in tensors), default=data_start)
    trailing = size - end
    # llama.cpp pads the last tensor to the alignment; more than a page is worth a word.
    if trailing > 4096:
        return (f"{trailing:,} bytes after the last tensor belong to no tensor",)
    return ()


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "string_of_length" in value:
        return f"({value['string_of_length']:,}-byte string, not read)"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
