"""Built-in format reader for safetensors files: a strict, bounded header parser of our own.

Also takes a file named ``.safetensors``/``.sft`` whose first bytes fit no format, so that a
header length beyond every limit is reported as a broken safetensors file, not an unknown one.
"""

from __future__ import annotations

from pathlib import Path

from modelsafe.plugins.hookspecs import hookimpl
from modelsafe.types import Format, TensorIndex

_SUFFIXES = (".safetensors", ".sft")


@hookimpl
def modelsafe_read_index(path: Path, head: bytes, fmt: str) -> TensorIndex | None:
    claimed = fmt == Format.UNKNOWN.value and path.suffix.lower() in _SUFFIXES and len(head) >= 8
    if fmt != Format.SAFETENSORS.value and not claimed:
        return None
    from modelsafe.registry.formats.safetensors_reader import read_safetensors_index

    return read_safetensors_index(path)
