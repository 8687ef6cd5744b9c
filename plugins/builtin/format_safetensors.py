"""Built-in format reader for safetensors files: a strict, bounded header parser of our own.

Also takes a file named ``.safetensors``/``.sft`` whose first bytes fit no format but start like
a cut or broken safetensors file (shorter than the 8-byte length, or a JSON object after a length
beyond every limit), so that it is reported as a broken safetensors file, not an unknown one.
"""

from __future__ import annotations

from pathlib import Path

from modelsafe.plugins.hookspecs import hookimpl
from modelsafe.registry.sniff import cut_safetensors
from modelsafe.types import Format, TensorIndex


@hookimpl
def modelsafe_read_index(path: Path, head: bytes, fmt: str) -> TensorIndex | None:
    claimed = fmt == Format.UNKNOWN.value and cut_safetensors(path.name, head)
    if fmt != Format.SAFETENSORS.value and not claimed:
        return None
    from modelsafe.registry.formats.safetensors_reader import read_safetensors_index

    return read_safetensors_index(path)
