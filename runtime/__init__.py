"""modelsafe.runtime: resolve compatible sets, plan VRAM, generate through backends.

``resolve`` and ``plan`` are exported lazily (importing this package imports nothing heavy).
"""

from __future__ import annotations

from typing import Any

__all__ = ["plan", "resolve"]


def __getattr__(name: str) -> Any:
    if name == "resolve":
        from modelsafe.runtime.resolve import resolve

        return resolve
    if name == "plan":
        from modelsafe.runtime.plan import plan

        return plan
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
