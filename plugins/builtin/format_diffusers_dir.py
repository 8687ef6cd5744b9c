"""Built-in format reader for diffusers folders: a pipeline (model_index.json) or one component
(config.json + weights, e.g. a diffusers ControlNet or VAE). Headers only.

A folder with neither file is not this reader's (None); the core then says what it expected.
"""

from __future__ import annotations

from pathlib import Path

from modelsafe.plugins.hookspecs import hookimpl
from modelsafe.types import Format, TensorIndex


@hookimpl
def modelsafe_read_index(path: Path, head: bytes, fmt: str) -> TensorIndex | None:
    if fmt != Format.DIFFUSERS_DIR.value:
        return None
    from modelsafe.registry.formats.diffusers_dir_reader import read_diffusers_dir

    return read_diffusers_dir(path)
