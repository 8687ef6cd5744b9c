"""Built-in scanner: validates a safetensors header the way the safetensors library would.

Checks the header length (at most 100,000,000 bytes, as the library), that it is one JSON object
(JSON whitespace before it allowed) with string metadata, each tensor's dtype, shape and byte range
(size = elements x itemsize, inside the data section; other keys in an entry are ignored, as the
library ignores them), that ranges neither overlap nor leave gaps, and that no bytes trail the last
tensor. Safetensors cannot run code, so a valid file is safe; anything the library would refuse is
an ``error``, and so is a header far denser than any tensor table (not parsed: memory stays
bounded, as in ``inspect``); a header two JSON parsers could read differently (duplicate keys) is
``unsafe``. A file cut short is one ``truncated`` error, however many tensors lie past its end.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from modelsafe.plugins.hookspecs import hookimpl
from modelsafe.registry.formats.safetensors_reader import MAX_HEADER_BYTES, dense_header
from modelsafe.types import DTYPE_SIZES, SAFETENSORS_DTYPES, Finding, Format

_REDOWNLOAD = "the download was cut short; download it again"


@hookimpl
def modelsafe_audit(path: Path, head: bytes, fmt: str) -> list[Finding] | None:
    if fmt != Format.SAFETENSORS.value:
        return None
    return validate_safetensors(path)


def validate_safetensors(path: Path) -> list[Finding]:
    """Findings for one safetensors file (an empty list when it is valid)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        prefix = fh.read(8)
        if len(prefix) < 8:
            return [_err("truncated", f"shorter than the 8-byte header length; {_REDOWNLOAD}")]
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_HEADER_BYTES:
            return [
                _err(
                    "header-length",
                    f"header length {length:,} bytes exceeds the {MAX_HEADER_BYTES:,}-byte "
                    "limit of the safetensors format (the library refuses it)",
                )
            ]
        if 8 + length > size:
            return [
                _err(
                    "truncated",
                    f"header length {length:,} bytes runs past the end of the file ({size:,} "
                    f"bytes): the file is truncated; {_REDOWNLOAD}",
                )
            ]
        raw = fh.read(length)
    dense = dense_header(raw)
    if dense:
        return [_err("dense-header", f"{dense}: not parsed, as no real model has such a header")]
    return _check_header(raw, size - 8 - length)


def _err(code: str, message: str, location: str = "header") -> Finding:
    return Finding("error", code, message, location)


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _Duplicate(key)
        result[key] = value
    return result


class _Duplicate(Exception):
    pass


def _check_header(raw: bytes, data_size: int) -> list[Finding]:  # noqa: C901
    try:
        text = raw.decode("utf-8")
        header = json.loads(text, object_pairs_hook=_pairs)
    except _Duplicate as exc:
        return [
            Finding(
                "unsafe",
                "ambiguous-header",
                f"the header repeats key {exc.args[0]!r}: JSON readers keep different copies",
                "header",
            )
        ]
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return [_err("bad-json", f"the header is not valid JSON: {exc}")]
    if not isinstance(header, dict):
        return [_err("bad-json", "the header is not a JSON object")]
    findings: list[Finding] = []
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        findings.append(_err("bad-metadata", "__metadata__ must map strings to strings"))
    spans: list[tuple[int, int, str]] = []
    past_end: list[tuple[int, str]] = []  # (end, name) of tensors past the data section's end
    for name, info in header.items():
        where = f"tensor {name!r}"
        if not isinstance(info, dict) or not _ENTRY_KEYS <= set(info):
            findings.append(_err("bad-entry", "entry is not {dtype, shape, data_offsets}", where))
            continue
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in SAFETENSORS_DTYPES:
            findings.append(_err("bad-dtype", f"unknown dtype {dtype!r}", where))
            continue
        if not isinstance(shape, list) or not isinstance(offsets, list):
            findings.append(_err("bad-entry", "shape/data_offsets are not lists", where))
            continue
        if not _int_list(shape) or not _int_list(offsets) or len(offsets) != 2:
            findings.append(_err("bad-entry", "shape/data_offsets are not integer lists", where))
            continue
        begin, end = offsets
        numel = _numel(shape)
        if numel is None or begin > _USIZE or end > _USIZE:
            # the library reads sizes as usize and refuses a product that overflows it
            findings.append(
                _err(
                    "bad-range",
                    f"shape {_show(shape)} or data_offsets {_show(offsets)} too large for any "
                    "tensor (over 2**64)",
                    where,
                )
            )
            continue
        exact = numel * DTYPE_SIZES[dtype]
        if exact != int(exact):  # sub-byte dtypes (F4, F6 ...) must fill whole bytes
            findings.append(
                _err(
                    "bad-range", f"shape {_show(shape)} x {dtype} does not fill whole bytes", where
                )
            )
            continue
        expected = int(exact)
        if end < begin or end - begin != expected:
            findings.append(
                _err(
                    "bad-range",
                    f"holds {end - begin} bytes, shape {_show(shape)} x {dtype} needs {expected}",
                    where,
                )
            )
            continue
        if end > data_size:
            past_end.append((end, name))
            continue
        spans.append((begin, end, name))
    if past_end:
        findings.append(_truncated(past_end, data_size))
    spans.sort()
    cursor = 0
    for begin, end, name in spans:
        if begin < cursor:
            findings.append(_err("overlap", "its bytes overlap another tensor", f"tensor {name!r}"))
        elif begin > cursor:
            findings.append(
                _err(
                    "gap",
                    f"{begin - cursor} unused bytes before it (the safetensors library cannot "
                    "load the file: download it again)",
                    f"tensor {name!r}",
                )
            )
        cursor = max(cursor, end)
    if not findings and cursor != data_size:
        findings.append(
            _err(
                "trailing-data",
                f"{data_size - cursor} bytes after the last tensor (the safetensors library "
                "cannot load the file: download it again)",
                "data",
            )
        )
    return findings


_USIZE = (1 << 64) - 1
_ENTRY_KEYS = frozenset({"dtype", "shape", "data_offsets"})


def _truncated(past_end: list[tuple[int, str]], data_size: int) -> Finding:
    """One finding for every tensor that ends past the data section, worded as ``inspect``."""
    end, name = max(past_end)
    more = f" ({len(past_end)} tensors lie past its end)" if len(past_end) > 1 else ""
    return _err(
        "truncated",
        f"tensor {name!r} ends at byte {end:,} of the data region but only {data_size:,} bytes "
        f"follow the header: the file is truncated{more}; {_REDOWNLOAD}",
        "data",
    )


def _numel(shape: list[int]) -> int | None:
    """The product of ``shape``, or None past 2**64 - 1: early exit, so thousands of huge
    sizes cost a few multiplications, not a quadratic product."""
    if 0 in shape:
        return 0 if all(v <= _USIZE for v in shape) else None
    product = 1
    for value in shape:
        product *= value
        if product > _USIZE:
            return None
    return product


def _show(values: list[int]) -> str:
    """A list for a message: short, and never a number too long to format."""
    shown = [str(v) if v <= _USIZE else f"<{v.bit_length()}-bit number>" for v in values[:8]]
    return "[" + ", ".join(shown) + (f", ... ({len(values)} in all)]" if len(values) > 8 else "]")


def _int_list(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    )
