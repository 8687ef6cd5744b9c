"""Built-in format reader for torch zip checkpoints (``torch.save`` since 1.6): headers only.

The tensor table comes from the pickle VM's record of ``data.pkl``; torch is never imported and
nothing in the file is executed.
"""

from __future__ import annotations

from pathlib import Path

from modelsafe.plugins.hookspecs import hookimpl
from modelsafe.types import Format, TensorIndex


@hookimpl
def modelsafe_read_index(path: Path, head: bytes, fmt: str) -> TensorIndex | None:
    if fmt != Format.ZIP.value:
        return None
    from modelsafe.registry.torch_archive import build_index, read_torch_file

    return build_index(read_torch_file(path, fmt))
