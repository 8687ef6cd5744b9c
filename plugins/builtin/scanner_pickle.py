"""Built-in scanner: torch checkpoints (zip and legacy), plain pickles and numpy ``.npy`` files.

Every pickle stream is run by modelsafe's own pickle VM (never imported, never called); each
callable outside the allow-list is an ``unsafe`` finding naming it and where it appears.
"""

from __future__ import annotations

import ast
import os
import struct
from pathlib import Path
from typing import Any

from modelsafe.plugins.hookspecs import hookimpl
from modelsafe.types import Finding, Format

_HANDLED = (Format.ZIP.value, Format.LEGACY_TORCH.value, Format.PICKLE.value)


@hookimpl
def modelsafe_audit(path: Path, head: bytes, fmt: str) -> list[Finding] | None:
    if fmt == Format.NUMPY.value:
        return _audit_npy(path)
    if fmt not in _HANDLED:
        return None
    from modelsafe.registry.pickle_vm.allowlist import needs_torch_opt_in
    from modelsafe.registry.torch_archive import read_torch_file

    tf = read_torch_file(path, fmt)
    findings = list(tf.findings)
    if fmt == Format.ZIP.value:
        npy = _audit_npz(path)
        if npy and tf.status == "error" and not tf.storages and tf.content is None:
            # an .npz (numpy.savez): numpy.load reads it, torch does not
            findings = [f for f in findings if f.code != "not-a-checkpoint"] + npy
        else:
            # a checkpoint whose members numpy.load(allow_pickle=True) also reads (a storage that
            # is an object .npy): what that unpickling does, a limit it hit included, counts
            findings += [f for f in npy if f.code != "not-a-checkpoint"]
        if "version_record" in tf.extra and tf.extra["version_record"] is None:
            # torch_archive found neither .data/version nor version: torch.load refuses the file
            findings.append(
                Finding(
                    "warning",
                    "no-version-record",
                    "no version record: torch.load refuses this file (it is not a loadable "
                    "checkpoint); nothing in it runs",
                )
            )
    from modelsafe.registry.pickle_vm.allowlist import NUMPY_HELPERS

    opt_in = sorted({g for g in tf.extra.get("globals", []) if needs_torch_opt_in(g)})
    numpy = [g for g in opt_in if g in NUMPY_HELPERS]
    others = [g for g in opt_in if g not in NUMPY_HELPERS]
    if numpy:
        findings.append(
            Finding(
                "warning",
                "numpy-globals",
                f"uses {', '.join(numpy)}: allowed (they only rebuild arrays), but "
                "torch.load(weights_only=True) refuses them without add_safe_globals",
            )
        )
    if others:
        findings.append(
            Finding(
                "warning",
                "weights-only-refuses",
                f"uses {', '.join(others)}: allowed (they only build data, or name no "
                "class torch has), but torch.load(weights_only=True) refuses them: they are "
                "not on torch's own allow-list",
            )
        )
    if tf.content is not None and tf.content.unsupported:
        findings.append(
            Finding(
                "warning",
                "unsupported-tensors",
                f"{len(tf.content.unsupported)} tensors modelsafe cannot rebuild "
                f"(e.g. {tf.content.unsupported[0]}); convert will refuse the file",
            )
        )
    return findings


_MAX_NPY_HEADER = 1 << 20  # numpy.load(allow_pickle=True) reads any size; we parse this much
_MAX_NPZ_MEMBERS = 100_000
_MAX_NPZ_PICKLE = 256 << 20  # an object array member is audited up to this size


def _audit_npz(path: Path) -> list[Finding]:
    """A zip numpy.load reads as an ``.npz``: every member that starts with the ``.npy`` magic
    (whatever its name, a directory's ``emb/`` included: ``numpy.load(f)[key]`` checks the
    bytes) and holds Python objects is unpickled by ``numpy.load(allow_pickle=True)``; its data
    is run through the pickle VM. Members are read with ``zipfile``, as numpy reads them, each
    on its own: one that cannot be read is an error, and the next ones are still read (numpy
    reads only the member asked for). An empty list: no ``.npy`` member and none unreadable."""
    import zipfile

    findings: list[Finding] = []
    arrays = 0
    try:
        zf = zipfile.ZipFile(path)
    except Exception:  # noqa: BLE001 - zipfile refuses it: numpy.load would too
        return []
    with zf:
        for info in zf.infolist()[:_MAX_NPZ_MEMBERS]:
            if info.file_size < 10:
                continue
            where = f"npz member {info.filename!r}"
            try:
                found = _npz_member(zf, info, where)
            except Exception as exc:  # noqa: BLE001 - this member only: numpy fails on it
                findings.append(
                    Finding(
                        "error",
                        "bad-npz",
                        f"the member cannot be read ({type(exc).__name__}): numpy.load fails "
                        "on it; modelsafe cannot tell whether it holds a pickle",
                        where,
                    )
                )
                continue
            if found is not None:
                arrays += 1
                findings += found
    if arrays and not any(f.severity != "warning" for f in findings):
        findings.append(
            Finding(
                "error",
                "not-a-checkpoint",
                f"a numpy .npz archive ({arrays} arrays): not a torch checkpoint; "
                "numpy.load reads it",
            )
        )
    return findings


def _npz_member(zf: Any, info: Any, where: str) -> list[Finding] | None:
    """The findings for one zip member read as numpy reads an ``.npz`` key (None: no ``.npy``).
    Its CRC is checked here, after its data is audited: numpy's reader fails on a wrong one
    only when it reaches the member's end, after unpickling what came before."""
    from modelsafe.registry.pickle_vm.machine import run_pickle

    with zf.open(info) as raw:
        if hasattr(raw, "_expected_crc"):
            raw._expected_crc = None  # (checked below, once the data is audited)
        fh = _Crc(raw)
        prefix = fh.read(12)
        if not prefix.startswith(b"\x93NUMPY"):
            return None
        major = prefix[6]
        size_bytes, start = (prefix[8:10], 10) if major == 1 else (prefix[8:12], 12)
        length = int.from_bytes(size_bytes, "little")
        wanted = min(length, _MAX_NPY_HEADER) - (12 - start)
        header = prefix[start:] + fh.read(max(0, wanted))
        header = header[:length]
        hasobject, problem = _npy_holds_objects(header, major, length)
        if not hasobject and not problem:
            return []
        skip = length - len(header)
        while skip > 0:  # (a header numpy would read, however long: skipped 1 MiB at a time)
            step = len(fh.read(min(skip, 1 << 20)))
            skip = skip - step if step else 0
        body = fh.read(_MAX_NPZ_PICKLE + 1)
        if len(body) > _MAX_NPZ_PICKLE:
            return [
                Finding("error", "limit", "an object array too large for modelsafe to audit", where)
            ]
        result = run_pickle(body, label=where)
        findings = [f for f in result.findings if hasobject or f.severity == "unsafe"]
        findings.append(
            Finding(
                "error" if problem else "warning",
                "bad-npy" if problem else "npy-pickle",
                (problem + ": modelsafe cannot prove the array holds no objects")
                if problem
                else "an object array: numpy.load(allow_pickle=True) unpickles it",
                where,
            )
        )
        if fh.crc != info.CRC & 0xFFFFFFFF and not fh.read(1):
            findings.append(
                Finding(
                    "error",
                    "bad-npz",
                    "the member fails its CRC-32 check: numpy.load fails on it, after "
                    "unpickling what it read before (audited here)",
                    where,
                )
            )
        return findings


class _Crc:
    """A zip member's reader that keeps the CRC-32 of what was read through it."""

    def __init__(self, fh: Any) -> None:
        self.fh = fh
        self.crc = 0

    def read(self, size: int) -> bytes:
        import zlib

        data = self.fh.read(size)
        self.crc = zlib.crc32(data, self.crc)
        return bytes(data)


def _audit_npy(path: Path) -> list[Finding]:
    """A .npy file runs code only when its dtype holds Python objects (a pickle follows).

    The header is parsed as numpy parses it (a literal, Python 2 ``1L`` numbers repaired, the
    ``descr`` turned into a dtype by numpy itself, never evaluated) and the data after it is run
    through the pickle VM unless numpy's dtype proves it plain (``hasobject`` false).
    """
    import mmap

    from modelsafe.registry.pickle_vm.machine import run_pickle

    with open(path, "rb") as fh:
        prefix = fh.read(12)
        if len(prefix) < 10:
            return [Finding("error", "truncated", "the .npy header is truncated")]
        major = prefix[6]
        if major == 1:
            (length,) = struct.unpack("<H", prefix[8:10])
            start = 10
        else:
            (length,) = struct.unpack("<I", prefix[8:12])
            start = 12
        fh.seek(start)
        header = fh.read(min(length, _MAX_NPY_HEADER))
        hasobject, problem = _npy_holds_objects(header, major, length)
        if not hasobject and not problem:
            return []
        data_start = start + length
        size = os.fstat(fh.fileno()).st_size
        findings: list[Finding] = []
        if data_start < size:
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                result = run_pickle(mm, data_start, label="npy object array")
            findings = [f for f in result.findings if hasobject or f.severity == "unsafe"]
    if problem:
        findings.append(
            Finding(
                "error",
                "bad-npy",
                f"{problem}: modelsafe cannot prove the array holds no Python objects "
                "(numpy.load(allow_pickle=True) would unpickle them)",
            )
        )
    else:
        findings.append(
            Finding(
                "warning",
                "npy-pickle",
                "an object array: numpy.load(allow_pickle=True) unpickles its content",
            )
        )
    return findings


def _npy_holds_objects(header: bytes, major: int, length: int) -> tuple[bool, str]:
    """(numpy's ``dtype.hasobject`` for the header, "" or why it cannot be decided)."""
    import warnings

    if major not in (1, 2, 3):
        return False, f"the .npy format version {major} is unknown"
    if length > _MAX_NPY_HEADER:
        return False, f"the .npy header is {length} bytes long"
    if len(header) < length:
        return False, "the .npy header is truncated"
    try:
        text = header.decode("utf-8" if major == 3 else "latin1")
    except UnicodeDecodeError:
        return False, "the .npy header is not valid UTF-8"
    meta = _literal(text)
    if meta is None and major <= 2:
        meta = _literal(_filter_py2_longs(text))  # numpy.lib.format._filter_header
    if not isinstance(meta, dict) or "descr" not in meta:
        return False, "the .npy header is not a valid dict literal"
    try:
        import numpy
        from numpy.lib.format import descr_to_dtype

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dtype = numpy.dtype(descr_to_dtype(meta["descr"]))
    except Exception as exc:  # noqa: BLE001 - numpy rejects it: numpy.load would too
        return False, f"numpy does not accept the .npy descr ({type(exc).__name__})"
    return bool(dtype.hasobject), ""


def _literal(text: str) -> object:
    try:
        return ast.literal_eval(text)
    except Exception:  # noqa: BLE001 - SyntaxError, ValueError, MemoryError, RecursionError...
        return None


def _filter_py2_longs(text: str) -> str:
    """Drop the ``L`` after Python 2 long literals (``(1L,)``), token by token, as numpy does."""
    import io
    import tokenize

    tokens = []
    last_was_number = False
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if last_was_number and token.type == tokenize.NAME and token.string == "L":
                continue
            tokens.append(token)
            last_was_number = token.type == tokenize.NUMBER
        return str(tokenize.untokenize(tokens))
    except Exception:  # noqa: BLE001 - tokenize errors: not repairable
        return text
