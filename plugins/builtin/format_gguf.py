"""Built-in format reader for GGUF files (llama.cpp, city96's diffusion GGUFs): headers only.

Tensor names, quant types (``Q4_K``, ``Q8_0``, ``F16``, ...), PyTorch-order shapes, absolute
offsets and per-block byte sizes; ``general.*`` and other key/values go to metadata/extra.
"""

from __future__ import annotations

from pathlib import Path

from modelsafe.plugins.hookspecs import hookimpl
from modelsafe.types import Format, TensorIndex


@hookimpl
def modelsafe_read_index(path: Path, head: bytes, fmt: str) -> TensorIndex | None:
    if fmt != Format.GGUF.value:
        return None
    from modelsafe.registry.formats.gguf_reader import read_gguf_index

    return read_gguf_index(path)
