"""Example third-party plugin: a family modelsafe does not know (PixArt-Sigma).

It adds a family detector for PixArt transformers and the LoRAs made for them, and a
compatibility rule that maps a PixArt LoRA onto a PixArt transformer's modules. It is a real
package: the tests pip-install it into a temporary folder and run modelsafe with it.
"""

from __future__ import annotations

from modelsafe.plugins.hookspecs import hookimpl
from modelsafe.types import Candidate, Compatibility, Part, TensorIndex

MODELSAFE_HOOKSPEC = ">=1,<2"

FAMILY = "pixart_sigma"
WIDTH = 1152  # PixArt-Sigma's hidden size
_MARKERS = ("adaln_single.linear.weight", "caption_projection.linear_1.weight")
_PREFIXES = ("transformer.", "model.diffusion_model.", "base_model.model.")
_LORA_DOWN = (".lora_A.weight", ".lora_down.weight")


def _strip(name: str) -> str:
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def _lora_targets(index: TensorIndex) -> dict[str, tuple[int, ...]]:
    """PixArt block module -> the shape of its LoRA down matrix (rank, in_features)."""
    targets: dict[str, tuple[int, ...]] = {}
    for t in index.tensors:
        name = _strip(t.name)
        for suffix in _LORA_DOWN:
            if name.endswith(suffix) and name.startswith("transformer_blocks."):
                targets[name[: -len(suffix)]] = t.shape
    return targets


@hookimpl
def modelsafe_identify(index: TensorIndex) -> list[Candidate] | None:
    shapes = {_strip(t.name): t.shape for t in index.tensors}
    if all(m in shapes for m in _MARKERS):
        caption = shapes["caption_projection.linear_1.weight"]
        blocks = {n.split(".")[1] for n in shapes if n.startswith("transformer_blocks.")}
        evidence = (
            "adaln_single.linear.weight present: PixArt's single AdaLN "
            "(no per-block conditioning MLP)",
            f"caption_projection.linear_1.weight {list(caption)}: T5 width {caption[1]}",
            f"{len(blocks)} transformer blocks",
        )
        facts = {"text_width": caption[1], "num_layers": len(blocks), "width": WIDTH}
        return [
            Candidate(FAMILY, "transformer", 0.9, evidence, prediction_type="epsilon", facts=facts)
        ]
    targets = _lora_targets(index)
    cross = [m for m in targets if ".attn2." in m]
    if targets and cross and all(len(s) == 2 and s[1] == WIDTH for s in targets.values()):
        # attn2 input width 1152 is PixArt's own width (its captions are projected to it):
        # no UNet family has 1152-wide cross-attention, so this outranks a generic LoRA guess.
        evidence = (
            f"{len(targets)} LoRA modules on transformer_blocks.*.attn1/attn2",
            f"cross-attention LoRA input width {WIDTH}: PixArt-Sigma's hidden size",
        )
        return [Candidate(FAMILY, "lora", 0.95, evidence, facts={"lora_modules": len(targets)})]
    return None


@hookimpl
def modelsafe_check_compatibility(base: Part, part: Part) -> list[Compatibility] | None:
    """A PixArt LoRA on a PixArt transformer: every LoRA module must exist, with its width."""
    if base.family != FAMILY or part.kind != "lora" or part.index is None or base.index is None:
        return None
    modules = {_strip(t.name).removesuffix(".weight"): t.shape for t in base.index.tensors}
    targets = _lora_targets(part.index)
    landed = [m for m, s in targets.items() if m in modules and modules[m][-1] == s[-1]]
    missing = sorted(set(targets) - set(landed))
    reason = f"{len(landed)} of {len(targets)} LoRA modules exist in this PixArt-Sigma transformer"
    evidence = tuple(f"no module for {m}" for m in missing[:3])
    status = "accept" if targets and not missing else "reject"
    return [Compatibility("pixart_lora_modules", status, reason, evidence)]


__all__ = ["modelsafe_check_compatibility", "modelsafe_identify"]
