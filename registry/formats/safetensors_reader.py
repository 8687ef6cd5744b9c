"""A strict, bounded reader of safetensors headers: the tensor table without reading tensor data.

The file is ``u64 little-endian N`` + ``N`` bytes of UTF-8 JSON + the data region. The reader
refuses, with a :class:`MalformedFileError` that names the problem:

- a header length over 100,000,000 bytes (the safetensors library's own limit) or past the end of
  the file; nothing is allocated before these checks, so a lying length costs no memory;
- a header that is not UTF-8, not JSON, has a duplicate key, NaN/Infinity, or is built of so many
  tiny containers that parsing it would take many times its size in memory;
- unknown dtypes, malformed shapes or offsets, a byte count that does not match shape x dtype,
  overlapping ranges, and ranges past the end of the data region (a truncated file).

Holes between tensors and bytes after the last tensor are readable, so they are warnings (the
safetensors library itself refuses such files; the warning says so).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelsafe.errors import FileReadError, MalformedFileError
from modelsafe.types import (
    BNB_STATE,
    DTYPE_SIZES,
    SAFETENSORS_DTYPES,
    Format,
    TensorIndex,
    TensorInfo,
)

MAX_HEADER_BYTES = 100_000_000  # the safetensors library's MAX_HEADER_SIZE
# Headers larger than this get a structural pre-check before json.loads (see check_skeleton).
_SKELETON_CHECK_FROM = 1 << 20
# A real header spends ~50+ bytes per tensor entry on 3 containers and ~5 commas; far denser
# structure can only be an attempt to make the parser allocate many small objects.
_MIN_BYTES_PER_CONTAINER = 16
_MIN_BYTES_PER_COMMA = 4
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_HINT = "the file is damaged or is not a safetensors file; download it again"


@dataclass(frozen=True)
class SafetensorsHeader:
    """A parsed, validated header."""

    header_length: int  # N, the JSON's length in bytes
    tensors: tuple[TensorInfo, ...]  # in file order, offsets absolute
    metadata: dict[str, str]
    warnings: tuple[str, ...]

    @property
    def data_start(self) -> int:
        return 8 + self.header_length


class _DuplicateKeyError(ValueError):
    pass


def _malformed(where: str, problem: str, hint: str = _HINT) -> MalformedFileError:
    return MalformedFileError(f"{where}: {problem}", hint=hint)


def read_header_length(prefix: bytes, file_size: int, where: str) -> int:
    """Validate the 8-byte length prefix against the limit and the file size; return N."""
    if len(prefix) < 8:
        raise _malformed(
            where,
            f"truncated: {len(prefix)} bytes, shorter than the 8-byte header length",
            hint="the download was cut short; download it again",
        )
    (length,) = struct.unpack("<Q", prefix[:8])
    if length > MAX_HEADER_BYTES:
        raise _malformed(
            where,
            f"header length {length:,} bytes exceeds the {MAX_HEADER_BYTES:,}-byte limit of the "
            "safetensors format",
            hint="no real model has such a header; the file is damaged or built to exhaust memory",
        )
    if length > file_size - 8:
        raise _malformed(
            where,
            f"header length {length:,} bytes runs past the end of the file ({file_size:,} bytes): "
            "the file is truncated or not a safetensors file",
        )
    if length < 2:
        raise _malformed(where, f"header length {length} is too short for a JSON object")
    return length


def parse_header(raw: bytes, file_size: int, where: str = "<safetensors>") -> SafetensorsHeader:
    """Validate the ``N`` header bytes of a file of ``file_size`` bytes (pure: no I/O).

    Raises :class:`MalformedFileError` for every problem; never anything else.
    """
    length = len(raw)
    data_size = file_size - 8 - length
    if data_size < 0:
        raise _malformed(where, "header runs past the end of the file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _malformed(
            where, f"header is not valid UTF-8 (bad byte at position {exc.start})"
        ) from None
    stripped = text.rstrip(" \x00")
    if not stripped.lstrip().startswith("{"):
        raise _malformed(where, "header is not a JSON object")
    check_skeleton(raw, where)
    try:
        header = json.loads(
            stripped, object_pairs_hook=_unique_object, parse_constant=_reject_constant
        )
    except _DuplicateKeyError as exc:
        raise _malformed(
            where,
            f"header has the key {exc.args[0]!r} twice; two parsers could read it two ways",
        ) from None
    except RecursionError:
        raise _malformed(where, "header JSON is nested too deeply") from None
    except ValueError as exc:
        raise _malformed(where, f"header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise _malformed(where, "header is not a JSON object")
    warnings: list[str] = []
    if len(stripped) != len(text) and "\x00" in text[len(stripped) :]:
        warnings.append("header is padded with NUL bytes (the format pads with spaces)")
    metadata = _metadata(header.pop("__metadata__", None), where)
    tensors = [_tensor(name, entry, length, where) for name, entry in header.items()]
    tensors.sort(key=lambda t: (t.offset, t.nbytes))
    warnings.extend(_check_ranges(tensors, 8 + length, data_size, where))
    return SafetensorsHeader(length, tuple(tensors), metadata, tuple(warnings))


def check_skeleton(raw: bytes, where: str) -> None:
    """Refuse a header that :func:`dense_header` finds too dense to parse."""
    problem = dense_header(raw)
    if problem:
        raise _malformed(
            where, problem, hint="the file is damaged or built to exhaust the reader's memory"
        )


def dense_header(raw: bytes) -> str | None:
    """Why a header over 1 MiB is built of far more JSON containers or items than any real tensor
    table (``[],[],...``, a shape of millions of ones), or None: json.loads would make tens of
    bytes of objects per byte of it. The safetensors library may accept such a header; no real
    model has one (numpy refuses over 64 dimensions), so inspect and audit refuse it unparsed."""
    if len(raw) <= _SKELETON_CHECK_FROM:
        return None
    skeleton = _STRING.sub(b'""', raw)
    containers = skeleton.count(b"{") + skeleton.count(b"[")
    commas = skeleton.count(b",")
    if containers * _MIN_BYTES_PER_CONTAINER > len(raw) or commas * _MIN_BYTES_PER_COMMA > len(raw):
        return (
            f"header of {len(raw):,} bytes holds {containers:,} JSON containers and "
            f"{commas:,} items: far denser than any real tensor table"
        )
    return None


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                raise _DuplicateKeyError(key)
            seen.add(key)
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _check_utf8(name: str, where: str, what: str) -> None:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise _malformed(where, f"{what} {name!r} is not valid UTF-8 (a lone surrogate)") from None


def _metadata(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _malformed(where, "__metadata__ is not a JSON object of strings")
    for key, item in value.items():
        _check_utf8(key, where, "metadata key")
        if not isinstance(item, str):
            raise _malformed(
                where,
                f"__metadata__[{key!r}] is {type(item).__name__}, the format allows only strings",
            )
        _check_utf8(item, where, f"metadata value of {key!r}:")
    return dict(value)


_BITS = {name: int(size * 8) for name, size in DTYPE_SIZES.items() if name in SAFETENSORS_DTYPES}


def _tensor(name: str, entry: Any, header_length: int, where: str) -> TensorInfo:
    # Written for speed (an SDXL checkpoint has 2,500 entries): exact type checks, one loop.
    if not name.isascii():
        _check_utf8(name, where, "tensor name")
    if type(entry) is not dict:
        raise _malformed(where, f"tensor {name!r}: entry is not a JSON object")
    dtype = entry.get("dtype")
    bits = _BITS.get(dtype) if type(dtype) is str else None
    if bits is None:
        if type(dtype) is not str:
            raise _malformed(where, f"tensor {name!r}: no dtype")
        raise _malformed(
            where,
            f"tensor {name!r}: unknown dtype {dtype!r}",
            hint="known: "
            + ", ".join(sorted(SAFETENSORS_DTYPES))
            + "; a newer safetensors writer may have made it (then upgrade modelsafe), else the "
            "file is damaged",
        )
    shape = entry.get("shape")
    numel = 1
    if type(shape) is list:
        for d in shape:
            if type(d) is not int or d < 0:
                numel = -1
                break
            numel *= d
    if type(shape) is not list or numel < 0:
        raise _malformed(where, f"tensor {name!r}: shape {shape!r} is not a list of sizes >= 0")
    offsets = entry.get("data_offsets")
    if (
        type(offsets) is not list
        or len(offsets) != 2
        or type(offsets[0]) is not int
        or type(offsets[1]) is not int
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise _malformed(
            where, f"tensor {name!r}: data_offsets {offsets!r} is not [begin, end] with begin<=end"
        )
    begin, end = offsets
    bits *= numel
    if bits % 8 or bits // 8 != end - begin:
        raise _malformed(
            where,
            f"tensor {name!r}: shape {shape} of {dtype} needs {bits / 8:g} bytes but data_offsets "
            f"[{begin}, {end}] hold {end - begin}",
        )
    return TensorInfo(name, str(dtype), tuple(shape), 8 + header_length + begin, end - begin)


def _check_ranges(
    tensors: list[TensorInfo], data_start: int, data_size: int, where: str
) -> list[str]:
    warnings: list[str] = []
    holes = 0
    reach = data_start
    previous: TensorInfo | None = None
    for t in tensors:
        if t.offset < reach and t.nbytes and previous is not None:
            raise _malformed(
                where,
                f"tensors {previous.name!r} and {t.name!r} overlap (bytes "
                f"{t.offset - data_start}..{reach - data_start} of the data region)",
                hint="a file whose tensors share bytes is damaged or crafted; download it again",
            )
        holes += max(0, t.offset - reach)
        if t.offset + t.nbytes >= reach:
            reach, previous = t.offset + t.nbytes, t
    end = reach - data_start
    if end > data_size:
        name = previous.name if previous else "?"
        raise _malformed(
            where,
            f"tensor {name!r} ends at byte {end:,} of the data region but only {data_size:,} "
            "bytes follow the header: the file is truncated",
            hint="the download was cut short; download it again",
        )
    if holes:
        warnings.append(
            f"{holes:,} bytes between tensors belong to no tensor "
            "(the safetensors library refuses such files)"
        )
    if data_size > end:
        warnings.append(
            f"{data_size - end:,} bytes after the last tensor belong to no tensor "
            "(the safetensors library refuses such files)"
        )
    return warnings


def read_safetensors_header(path: Path) -> SafetensorsHeader:
    """Read and validate the header of the safetensors file at ``path``."""
    where = str(path)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            length = read_header_length(fh.read(8), size, where)
            raw = fh.read(length)
    except OSError as exc:
        raise FileReadError(
            f"cannot read {path}: {exc.strerror or exc}", hint="check the path and permissions"
        ) from exc
    if len(raw) != length:
        raise _malformed(where, "the file shrank while its header was read")
    return parse_header(raw, size, where)


def read_safetensors_index(path: Path) -> TensorIndex:
    """The TensorIndex of a safetensors file: tensors in file order, metadata, header facts.

    Packed 4-bit weights (bitsandbytes NF4/FP4, ComfyUI NVFP4, nunchaku int4) come with their
    logical shape and a packed dtype (see :func:`logical_tensors`); offsets and byte counts stay
    as stored."""
    header = read_safetensors_header(path)
    return TensorIndex(
        path=path,
        format=Format.SAFETENSORS.value,
        tensors=logical_tensors(path, header.tensors),
        metadata=header.metadata,
        warnings=header.warnings,
        extra={"header_length": header.header_length, "data_start": header.data_start},
    )


# bitsandbytes' QuantState.as_dict(packed=True) keeps, beside each 4-bit weight (U8, two values
# a byte, shape [ceil(numel/2), 1]), ``<weight>.quant_state.bitsandbytes__nf4`` (or ``__fp4``):
# U8 bytes of a JSON object holding the weight's original "shape" and "dtype".
_BNB_TYPES = {"nf4": "NF4", "fp4": "FP4"}
_MAX_STATE_BYTES = 4096  # a real quant state is a few hundred bytes
_MAX_STATES_READ = 16 << 20  # all of them together (Flux: ~100 KB); past it, shapes by bias


def logical_tensors(
    path: Path, tensors: Sequence[TensorInfo], root: Path | None = None
) -> tuple[TensorInfo, ...]:
    """``tensors`` with each packed 4-bit weight given its logical shape and dtype (NF4, FP4,
    NVFP4, INT4): bitsandbytes weights by the shape their quant state records (read from the
    file: a few hundred bytes each), else by their bias; ComfyUI NVFP4 weights (U8
    ``[out, in/2]`` with an F8 ``weight_scale`` ``[out, in/16]``) and nunchaku int4 ``qweight``
    by their scales. A weight whose shape cannot be told is left as stored.

    ``root``: the tensors are a sharded model's (each one's ``source`` is its shard, under
    ``root``): a weight whose quant state was saved into the next shard is read too."""
    tensors = tuple(tensors)
    by_name = {t.name: t for t in tensors}
    logical: dict[str, TensorInfo] = {}
    states = [t for t in tensors if BNB_STATE in t.name]
    if states:

        def file_of(t: TensorInfo) -> Path:
            return root / t.source if root is not None and t.source else path

        logical.update(_bnb_weights(file_of, states, by_name))
    for t in tensors:
        found = None
        if t.name.endswith(".weight") and t.dtype == "U8" and t.name not in logical:
            found = _nvfp4_weight(t, by_name)
        elif t.name.endswith(".qweight") and t.dtype in _INT4_PER_ELEMENT:
            found = _nunchaku_weight(t, by_name)
        if found is not None:
            logical[t.name] = found
    if not logical:
        return tensors
    return tuple(logical.get(t.name, t) for t in tensors)


def _bnb_weights(
    file_of: Callable[[TensorInfo], Path],
    states: list[TensorInfo],
    by_name: dict[str, TensorInfo],
) -> dict[str, TensorInfo]:
    out: dict[str, TensorInfo] = {}
    budget = _MAX_STATES_READ
    with contextlib.ExitStack() as stack:
        files: dict[Path, Any] = {}
        for state in states:
            name, _, kind = state.name.partition(BNB_STATE)
            weight = by_name.get(name)
            dtype = _BNB_TYPES.get(kind)
            if weight is None or dtype is None or weight.dtype != "U8":
                continue
            budget -= state.nbytes
            fh = _opened(file_of(state), files, stack) if budget >= 0 else None
            recorded = _recorded_shape(fh, state) if fh is not None else None
            for shape in (recorded, _shape_by_bias(weight, by_name)):
                # (a recorded shape of another size than the weight is not its shape)
                if shape is not None and (math.prod(shape) + 1) // 2 == weight.numel:
                    out[name] = _as_packed(weight, dtype, shape)
                    break
    return out


def _opened(path: Path, files: dict[Path, Any], stack: contextlib.ExitStack) -> Any:
    """``path`` opened once for the states read from it (None when it cannot be opened)."""
    if path not in files:
        try:
            files[path] = stack.enter_context(open(path, "rb"))
        except OSError:
            files[path] = None
    return files[path]


def _recorded_shape(fh: Any, state: TensorInfo) -> tuple[int, ...] | None:
    """The "shape" a bitsandbytes quant state records, or None (unreadable, not JSON)."""
    if not 0 < state.nbytes <= _MAX_STATE_BYTES or state.dtype != "U8":
        return None
    try:
        raw = os.pread(fh.fileno(), state.nbytes, state.offset)
        value = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    shape = value.get("shape") if isinstance(value, dict) else None
    if (
        isinstance(shape, list)
        and 0 < len(shape) <= 8
        and all(type(d) is int and d > 0 for d in shape)
    ):
        return tuple(shape)
    return None


def _shape_by_bias(weight: TensorInfo, by_name: dict[str, TensorInfo]) -> tuple[int, ...] | None:
    """``[out, in]`` of a Linear weight from its bias ``[out]`` (a quant state not readable)."""
    bias = by_name.get(weight.name[: -len("weight")] + "bias")
    if bias is None or len(bias.shape) != 1 or not bias.shape[0]:
        return None
    out = bias.shape[0]
    total = weight.numel * 2
    return (out, total // out) if total % out == 0 else None


def _nvfp4_weight(weight: TensorInfo, by_name: dict[str, TensorInfo]) -> TensorInfo | None:
    """A ComfyUI NVFP4 weight at its logical shape ``[out, in]``, or None: U8 ``[out, in/2]``
    beside an F8 ``weight_scale`` ``[out, in/16]`` (one scale per 16 values)."""
    scale = by_name.get(weight.name + "_scale")
    if (
        scale is None
        or scale.dtype != "F8_E4M3"
        or len(weight.shape) != 2
        or len(scale.shape) != 2
        or scale.shape[0] != weight.shape[0]
        or scale.shape[1] * 8 != weight.shape[1]
    ):
        return None
    return _as_packed(weight, "NVFP4", (weight.shape[0], weight.shape[1] * 2))


# nunchaku (SVDQuant W4A4: I8 ``qweight`` [out, in/2]; AWQ W4A16: I32 [out/4, in/2]) keeps a
# ``wscales`` [in/group, out] beside each int4 ``qweight``: int4 values per stored element.
_INT4_PER_ELEMENT = {"I8": 2, "I32": 8}


def _nunchaku_weight(weight: TensorInfo, by_name: dict[str, TensorInfo]) -> TensorInfo | None:
    """A nunchaku int4 ``qweight`` at its logical shape ``[out, in]`` (``out`` from its
    ``wscales``), or None when the two do not fit together."""
    scales = by_name.get(weight.name[: -len("qweight")] + "wscales")
    if scales is None or len(scales.shape) != 2 or len(weight.shape) != 2:
        return None
    groups, out = scales.shape
    values = weight.numel * _INT4_PER_ELEMENT[weight.dtype]
    if not out or not groups or values % out or (values // out) % groups:
        return None
    # (F8 scales, one per 16 values: nunchaku's NVFP4, for Blackwell GPUs; else int4)
    dtype = "NVFP4" if scales.dtype.startswith("F8") else "INT4"
    return _as_packed(weight, dtype, (out, values // out))


def _as_packed(weight: TensorInfo, dtype: str, shape: tuple[int, ...]) -> TensorInfo:
    return TensorInfo(
        weight.name,
        dtype,
        shape,
        weight.offset,
        weight.nbytes,
        weight.source,
        stored=(weight.dtype, weight.shape),
    )
