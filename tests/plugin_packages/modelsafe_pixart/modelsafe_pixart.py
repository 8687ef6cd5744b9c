"""Example third-party plugin: a family modelsafe does not know (PixArt-Sigma).

It adds a family detector (and a compatibility rule when the host has that hook). It is a real
package: the tests pip-install it into a temporary folder and run modelsafe with it.
"""

from __future__ import annotations

from typing import Any

from modelsafe.plugins.hookspecs import hookimpl
from modelsafe.types import Candidate, TensorIndex

MODELSAFE_HOOKSPEC = ">=1,<2"

FAMILY = "pixart_sigma"
_MARKERS = ("adaln_single.linear.weight", "caption_projection.linear_1.weight")


def _strip(name: str) -> str:
    for prefix in ("transformer.", "model.diffusion_model."):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


@hookimpl
def modelsafe_identify(index: TensorIndex) -> list[Candidate] | None:
    shapes = {_strip(t.name): t.shape for t in index.tensors}
    if not all(m in shapes for m in _MARKERS):
        return None
    caption = shapes["caption_projection.linear_1.weight"]
    blocks = {n.split(".")[1] for n in shapes if n.startswith("transformer_blocks.")}
    evidence = (
        "adaln_single.linear.weight present: PixArt's single AdaLN (no per-block conditioning MLP)",
        f"caption_projection.linear_1.weight {list(caption)}: T5 width {caption[1]}",
        f"{len(blocks)} transformer blocks",
    )
    return [
        Candidate(
            family=FAMILY,
            kind="transformer",
            score=0.9,
            evidence=evidence,
            prediction_type="epsilon",
            facts={"text_width": caption[1], "num_layers": len(blocks)},
        )
    ]


def _fits(base: dict[str, Any], addon: dict[str, Any]) -> bool:
    return str(addon.get("family")) == FAMILY


__all__ = ["modelsafe_identify"]
