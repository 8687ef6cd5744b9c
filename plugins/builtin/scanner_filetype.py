"""Built-in scanner: files that are not models at all, named for what they really are.

A git-LFS pointer, an HTML login/error page, JSON, text, an empty file or random bytes saved under a
model's name are ``error`` verdicts that say what the file is. GGUF files (which cannot carry code)
are checked by reading their header.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

from modelsafe.plugins.hookspecs import hookimpl
from modelsafe.registry.sniff import not_a_model
from modelsafe.types import Finding, Format


@hookimpl
def modelsafe_audit(path: Path, head: bytes, fmt: str) -> list[Finding] | None:
    if fmt == Format.TEXT.value and _is_text_pickle(path):
        from modelsafe.registry.torch_archive import read_torch_file

        return list(read_torch_file(path, Format.PICKLE.value).findings)
    what = not_a_model(fmt, path.stat().st_size)
    if what is not None:
        return [Finding("error", f"not-a-model:{what.code}", f"{what.reason}; {what.hint}")]
    if fmt == Format.UNKNOWN.value:
        hidden = _hidden_zip(path)
        if hidden:
            return hidden
        return [Finding("error", "not-a-model:unknown", _describe_unknown(head))]
    if fmt == Format.GGUF.value:
        return _check_gguf(path)
    return None


def _describe_unknown(head: bytes) -> str:
    counts = Counter(head)
    total = len(head)
    entropy = -sum(c / total * math.log2(c / total) for c in counts.values())
    if entropy > 7.5:
        return (
            f"the file is random-looking bytes (entropy {entropy:.2f} bits/byte, no known "
            "header): encrypted, compressed or corrupt, not a model format"
        )
    return f"unknown binary data (starts {head[:8].hex()}): not a model format modelsafe reads"


def _check_gguf(path: Path) -> list[Finding]:
    from modelsafe.errors import ModelsafeError, UnsupportedFormatError
    from modelsafe.registry.read import read_index

    try:
        read_index(path)
    except UnsupportedFormatError:
        return [Finding("warning", "unchecked", "no GGUF reader is installed to check the header")]
    except ModelsafeError as exc:
        return [Finding("error", "bad-gguf", exc.reason)]
    return []


def _hidden_zip(path: Path) -> list[Finding]:
    """A file that starts as something else but ends as a zip: a polyglot."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        fh.seek(max(0, size - (1 << 16) - 22))
        tail = fh.read()
    if b"PK\x05\x06" not in tail:
        return []
    from modelsafe.registry.torch_archive import read_torch_file

    tf = read_torch_file(path, Format.ZIP.value)
    findings = [f for f in tf.findings if f.severity == "unsafe"]
    findings.append(
        Finding(
            "unsafe",
            "polyglot",
            "unknown bytes followed by a zip archive: zip readers find the archive, "
            "torch.load and others read the start",
        )
    )
    return findings


def _is_text_pickle(path: Path) -> bool:
    """Protocol 0 pickles are printable text; the VM tells them apart from prose."""
    from modelsafe.registry.pickle_vm.machine import run_pickle

    with open(path, "rb") as fh:
        data = fh.read(1 << 20)
    result = run_pickle(data, label="probe")
    return result.completed or result.unsafe
