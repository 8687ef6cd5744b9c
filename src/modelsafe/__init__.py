"""modelsafe: know, audit, convert, catalog and run Stable Diffusion-family model files safely.

The Python API mirrors the CLI; heavy modules load only when a function needs them.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from modelsafe.errors import ModelsafeError
from modelsafe.plugins.hookspecs import hookimpl

try:
    __version__ = version("modelsafe")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["ModelsafeError", "__version__", "hookimpl"]
