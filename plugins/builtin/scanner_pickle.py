"""Built-in scanner: torch checkpoints (zip and legacy), plain pickles and numpy ``.npy`` files.

Every pickle stream is run by modelsafe's own pickle VM (never imported, never called); each
callable outside the allow-list is an ``unsafe`` finding naming it and where it appears.
"""

from __future__ import annotations

import ast
import struct
from pathlib import Path

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
    opt_in = sorted({g for g in tf.extra.get("globals", []) if needs_torch_opt_in(g)})
    if opt_in:
        findings.append(
            Finding(
                "warning",
                "numpy-globals",
                f"uses {', '.join(opt_in)}: allowed (they only rebuild arrays), but "
                "torch.load(weights_only=True) refuses them without add_safe_globals",
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


def _audit_npy(path: Path) -> list[Finding]:
    """A .npy file runs code only when its dtype holds Python objects (a pickle follows)."""
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
        header = fh.read(min(length, 1 << 20))
        try:
            meta = ast.literal_eval(header.decode("latin1"))
            descr = meta["descr"]
        except (ValueError, SyntaxError, KeyError, TypeError, MemoryError, RecursionError):
            return [Finding("error", "bad-npy", "the .npy header is not a valid dict literal")]
        if "O" not in str(descr):
            return []
        rest = fh.read()
    result = run_pickle(rest, label="npy object array", base=start + length)
    findings = list(result.findings)
    findings.append(
        Finding(
            "warning",
            "npy-pickle",
            "an object array: numpy.load(allow_pickle=True) unpickles its content",
        )
    )
    return findings
