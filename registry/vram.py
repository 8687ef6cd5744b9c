"""VRAM need of one component: asks the estimator plugins, falls back to weight bytes."""

from __future__ import annotations

from typing import Any

from modelsafe.types import TensorIndex


def estimate_component_vram(
    index: TensorIndex, family: str, kind: str, facts: dict[str, Any]
) -> dict[str, Any]:
    """Bytes of weights at the stored precision (a placeholder until the estimator lands)."""
    return {"native": index.weight_bytes}
