"""Built-in format reader for legacy (pre-1.6) torch files and plain pickles: headers only.

Legacy files are recognised by their magic-number pickle whatever its protocol; the tensor table
comes from the pickle VM's record. Nothing in the file is executed.
"""

from __future__ import annotations

from pathlib import Path

from modelsafe.plugins.hookspecs import hookimpl
from modelsafe.types import Format, TensorIndex


@hookimpl
def modelsafe_read_index(path: Path, head: bytes, fmt: str) -> TensorIndex | None:
    if fmt not in (Format.LEGACY_TORCH.value, Format.PICKLE.value):
        return None
    from modelsafe.registry.torch_archive import build_index, read_torch_file

    return build_index(read_torch_file(path, fmt))
