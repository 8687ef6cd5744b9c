"""More single-image super-resolution architectures: HAT, DAT, OmniSR, SPAN.

Key names and the facts that decide come from the reference implementations (as chaiNNer's
spandrel reads them); the scale always comes from the weights:

- HAT: SwinIR-like ``layers.N.residual_group.blocks.M`` plus what only HAT has, the top-level
  ``relative_position_index_SA``/``_OCA`` buffers, ``conv_block.cab`` channel-attention convs and
  an ``overlap_attn`` per group. Pixel-shuffle ``upsample.0/2/..``: each conv's outputs over
  inputs is the square of its step (4 -> x2, 9 -> x3).
- DAT: ``before_RG.1`` norm and ``layers.N.blocks.M.attn.attns`` / ``ffn.sg`` (spatial gate).
  ``conv_last`` present: pixel-shuffle ``upsample.N`` as HAT; absent: one direct conv with
  ``3 * scale^2`` outputs.
- OmniSR: ``input``, ``residual_layer.N.residual_layer.M.layer``, ``up.0`` with
  ``3 * scale^2`` outputs.
- SPAN: ``conv_1.sk``, ``block_N.c1_r``, ``conv_cat``, ``upsampler.0`` with
  ``out_channels * scale^2`` outputs (the input channels of ``conv_1.sk``).
"""

from __future__ import annotations

import math
import re
from typing import Any

from modelsafe.registry.detect.component_probes import _upscaler, _wrapped_prefix
from modelsafe.registry.detect.prefixes import KeyView, shape_text
from modelsafe.types import Candidate, TensorIndex


def _square_root(value: int) -> int | None:
    root = math.isqrt(value) if value > 0 else 0
    return root if root > 0 and root * root == value else None


def _pixel_shuffle(view: KeyView, start: str) -> tuple[int | None, str]:
    """Scale of a chain of pixel-shuffle convs ``start0``, ``start2``, ...: the product of steps."""
    convs = sorted(
        (n for n in view.tensors if re.fullmatch(re.escape(start) + r"\d+\.weight", n)),
        key=lambda n: int(n[len(start) :].split(".")[0]),
    )
    if not convs:
        return None, "no upsampling convs"
    scale = 1
    shapes = [view.shape(c) or (0, 0) for c in convs]
    for out, inp, *_ in shapes:
        step = _square_root(out // inp) if inp and out % inp == 0 else None
        if step is None:
            return None, f"upsampling convs {', '.join(shape_text(s) for s in shapes)}"
        scale *= step
    how = ", ".join(f"{view.full(c)} {shape_text(s)}" for c, s in zip(convs, shapes, strict=True))
    return scale, f"pixel-shuffle convs {how} (outputs / inputs = step^2)"


def _direct(view: KeyView, name: str, out_channels: int) -> tuple[int | None, str]:
    """Scale of one conv that outputs ``out_channels * scale^2`` for a single pixel shuffle."""
    shape = view.shape(name) or (0,)
    scale = _square_root(shape[0] // out_channels) if out_channels else None
    if scale is None or shape[0] % out_channels:
        return None, f"{view.says(name)}: not {out_channels} x scale^2 outputs"
    return (
        scale,
        f"{view.says(name)}: {shape[0]} = {out_channels} x {scale}^2 pixel-shuffle outputs",
    )


def _hat(index: TensorIndex, names: set[str], detector: str) -> list[Candidate]:
    prefix = _wrapped_prefix(names, ("relative_position_index_SA", "conv_first.weight"))
    if prefix is None:
        return []
    view = KeyView.of(index, prefix)
    needed = (
        "relative_position_index_SA",
        "layers.0.residual_group.blocks.0.conv_block.cab.0.weight",
        "layers.0.residual_group.overlap_attn.qkv.weight",
        "conv_last.weight",
    )
    if not all(n in view for n in needed):
        return []
    embed = view.dim("conv_first.weight", 0) or 0
    window = math.isqrt(view.dim("relative_position_index_SA", 0) or 0)
    layers = view.count_blocks("layers.")
    depth = view.count_blocks("layers.0.residual_group.blocks.")
    scale, how = _pixel_shuffle(view, "upsample.")
    facts: dict[str, Any] = {
        "embed_dim": embed,
        "num_layers": layers,
        "depth": depth,
        "window_size": window,
        "naming": "hat",
    }
    evidence = [
        f"{view.says('conv_first.weight')} + {view.says('relative_position_index_SA')} + "
        f"conv_block.cab / overlap_attn in {layers} residual groups of {depth} blocks "
        f"(embed {embed}, window {window}): HAT",
        f"{how}: " + (f"x{scale}" if scale else "scale unknown"),
    ]
    return _upscaler(index, view, "hat", scale, facts, evidence, detector)


def _dat(index: TensorIndex, names: set[str], detector: str) -> list[Candidate]:
    prefix = _wrapped_prefix(names, ("before_RG.1.weight", "conv_first.weight"))
    if prefix is None:
        return []
    view = KeyView.of(index, prefix)
    needed = (
        "before_RG.1.weight",
        "layers.0.blocks.0.ffn.sg.conv.weight",
        "layers.0.blocks.0.attn.qkv.weight",
    )
    if not all(n in view for n in needed):
        return []
    first = view.shape("conv_first.weight") or (0, 0)
    embed, in_ch = first[0], first[1]
    layers = view.count_blocks("layers.")
    depth = view.count_blocks("layers.0.blocks.")
    if "conv_last.weight" in view:
        scale, how = _pixel_shuffle(view, "upsample.")
        upsampler = "pixelshuffle"
    else:
        scale, how = _direct(view, "upsample.0.weight", in_ch)
        upsampler = "pixelshuffledirect"
    facts: dict[str, Any] = {
        "embed_dim": embed,
        "num_layers": layers,
        "depth": depth,
        "upsampler": upsampler,
        "naming": "dat",
    }
    evidence = [
        f"{view.says('conv_first.weight')} + before_RG.1 + layers.N.blocks.M.attn / ffn.sg "
        f"({layers} residual groups of {depth} blocks, embed {embed}): DAT",
        f"{how}: " + (f"x{scale}" if scale else "scale unknown"),
    ]
    return _upscaler(index, view, "dat", scale, facts, evidence, detector)


def _omnisr(index: TensorIndex, names: set[str], detector: str) -> list[Candidate]:
    prefix = _wrapped_prefix(
        names,
        ("input.weight", "up.0.weight", "residual_layer.0.residual_layer.0.layer.0.fn.0.weight"),
    )
    if prefix is None:
        return []
    view = KeyView.of(index, prefix)
    if not all(
        n in view
        for n in (
            "input.weight",
            "up.0.weight",
            "residual_layer.0.residual_layer.0.layer.0.fn.0.weight",
        )
    ):
        return []
    first = view.shape("input.weight") or (0, 0)
    feat, in_ch = first[0], first[1]
    groups = view.count_blocks("residual_layer.")
    scale, how = _direct(view, "up.0.weight", in_ch)
    facts: dict[str, Any] = {"num_features": feat, "num_groups": groups, "naming": "omnisr"}
    evidence = [
        f"{view.says('input.weight')} + residual_layer.N.residual_layer.M.layer "
        f"({groups} OSA groups, {feat} features): OmniSR",
        f"{how}: " + (f"x{scale}" if scale else "scale unknown"),
    ]
    return _upscaler(index, view, "omnisr", scale, facts, evidence, detector)


def _span(index: TensorIndex, names: set[str], detector: str) -> list[Candidate]:
    prefix = _wrapped_prefix(names, ("conv_1.sk.weight", "conv_cat.weight", "upsampler.0.weight"))
    if prefix is None:
        return []
    view = KeyView.of(index, prefix)
    if not all(
        n in view
        for n in (
            "conv_1.sk.weight",
            "block_1.c1_r.sk.weight",
            "conv_cat.weight",
            "upsampler.0.weight",
        )
    ):
        return []
    first = view.shape("conv_1.sk.weight") or (0, 0)
    feat, in_ch = first[0], first[1]
    scale, how = _direct(view, "upsampler.0.weight", in_ch)
    blocks = sum(1 for n in view.tensors if re.fullmatch(r"block_\d+\.c1_r\.sk\.weight", n))
    facts: dict[str, Any] = {"num_features": feat, "num_blocks": blocks, "naming": "span"}
    evidence = [
        f"{view.says('conv_1.sk.weight')} + block_N.c1_r/c2_r/c3_r + conv_cat "
        f"({blocks} blocks, {feat} features): SPAN",
        f"{how}: " + (f"x{scale}" if scale else "scale unknown"),
    ]
    return _upscaler(index, view, "span", scale, facts, evidence, detector)


def more_upscalers(index: TensorIndex, detector: str) -> list[Candidate]:
    """HAT, DAT, OmniSR or SPAN candidates (HAT before SwinIR, whose groups it shares)."""
    names = index.names()
    for read in (_hat, _dat, _omnisr, _span):
        found = read(index, names, detector)
        if found:
            return found
    return []
