"""Built-in VRAM estimator: weight bytes per component and precision (docs/vram.md).

Registered ``trylast`` so a third-party ``modelsafe_estimate_vram`` answers first.
"""

from __future__ import annotations

from typing import Any

from modelsafe.plugins.hookspecs import hookimpl
from modelsafe.types import TensorIndex


@hookimpl(trylast=True)
def modelsafe_estimate_vram(
    index: TensorIndex, family: str, kind: str, facts: dict[str, Any]
) -> dict[str, Any] | None:
    from modelsafe.registry.vram import estimate_weights

    return estimate_weights(index, family, kind, facts)
