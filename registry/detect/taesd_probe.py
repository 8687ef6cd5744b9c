"""Tiny autoencoders (madebyollin TAESD, TAESDXL, TAESD3, TAEF1), in every naming they ship in.

The network is two ``nn.Sequential`` stacks of 3x3 convs (64 wide) and residual ``Block``s
(``conv.0``/``conv.2``/``conv.4``): the encoder starts with a conv from 3 image channels and ends
with one into the latent channels; the decoder starts with a conv from the latent channels and
ends with one into 3. Namings: the original files (``taesd_encoder.safetensors`` unprefixed,
``0.weight``, ``1.conv.0.weight``, ...; decoder layer numbers one higher, its ``Clamp`` is layer
0), diffusers ``AutoencoderTiny`` (``encoder.layers.N``/``decoder.layers.N``) and ComfyUI's
``taesd_encoder.``/``taesd_decoder.`` (+ ``vae_scale``/``vae_shift``).

The latent channels are all the weights say: 4 = TAESD or TAESDXL (same layout, different
training: sd1 and sdxl tie), 16 = TAESD3 or TAEF1 (sd3 and flux1 tie); metadata or the download
manager's sidecar may break the tie (:mod:`~modelsafe.registry.detect.tie_break`).
"""

from __future__ import annotations

import re
from typing import Any

from modelsafe.registry.detect.component_probes import MIN_COVERAGE
from modelsafe.registry.detect.prefixes import shape_text
from modelsafe.registry.detect.tie_break import tied_scores
from modelsafe.types import Candidate, TensorIndex

_BLOCK = re.compile(r"^(.*?)(\d+)\.conv\.0\.weight$")
_TIES: dict[int, tuple[tuple[str, ...], str]] = {
    4: (("sd1", "sdxl"), "TAESD (SD1/SD2) and TAESDXL share this layout"),
    16: (("sd3", "flux1"), "TAESD3 and TAEF1 share this layout"),
}
_SIDE_TENSORS = ("vae_scale", "vae_shift")


def _stack(shapes: dict[str, tuple[int, ...]], root: str) -> dict[str, Any] | None:
    """What the Sequential under ``root`` is: encoder or decoder, latent channels, blocks."""
    n = len(root)
    convs: dict[int, tuple[int, ...]] = {}
    blocks: set[int] = set()
    for name, shape in shapes.items():
        if not name.startswith(root):
            continue
        rest = name[n:]
        head, _, tail = rest.partition(".")
        if not head.isdigit():
            return None
        if tail == "weight":
            convs[int(head)] = shape
        elif tail.startswith("conv."):
            blocks.add(int(head))
    if len(blocks) < 4 or len(convs) < 2 or any(len(s) != 4 for s in convs.values()):
        return None
    first, last = convs[min(convs)], convs[max(convs)]
    if first[1] == 3 and first[0] == last[1]:
        role, latent = "encoder", last[0]
    elif last[0] == 3 and first[0] == last[1]:
        role, latent = "decoder", first[1]
    else:
        return None
    return {
        "role": role,
        "latent": latent,
        "blocks": len(blocks),
        "first": root + f"{min(convs)}.weight",
        "last": root + f"{max(convs)}.weight",
    }


def taesd(index: TensorIndex, detector: str) -> list[Candidate]:
    blocks = [t.name for t in index.tensors if t.name.endswith(".conv.0.weight")]
    roots = sorted({m.group(1) for name in blocks if (m := _BLOCK.match(name))}, key=len)
    if not roots:
        return []
    shapes = {t.name: t.shape for t in index.tensors if t.name not in _SIDE_TENSORS}
    stacks = [
        s
        for root in roots
        if (not root or root.endswith(".")) and (s := _stack(shapes, root)) is not None
    ]
    if not stacks or len({s["role"] for s in stacks}) != len(stacks):
        return []
    covered = sum(1 for name in shapes if any(name.startswith(_root(s)) for s in stacks))
    if covered < MIN_COVERAGE * max(1, len(shapes)):
        return []
    latents = {s["latent"] for s in stacks}
    if len(latents) != 1:
        return []
    latent = latents.pop()
    parts = sorted(s["role"] for s in stacks)
    evidence = [
        f"{s['first'] if s['role'] == 'decoder' else s['last']} has shape "
        f"{shape_text(shapes[s['first'] if s['role'] == 'decoder' else s['last']])}: "
        f"tiny autoencoder {s['role']} ({s['blocks']} residual blocks of 3x3 convs), "
        f"{latent} latent channels"
        for s in stacks
    ]
    facts: dict[str, Any] = {
        "latent_channels": latent,
        "parts": parts,
        "naming": _naming(stacks),
        "architecture": "taesd",
    }
    tie = _TIES.get(latent)
    if tie is None:
        evidence.append(f"{latent} latent channels: no known family's tiny autoencoder")
        return [_cand("unknown", 0.6, evidence, facts, detector)]
    families, why = tie
    evidence.append(f"{why}: the weights cannot tell {' from '.join(families)}")
    facts["compatible_families"] = {
        4: ["sd1", "sd2", "sdxl", "sdxl_refiner"],
        16: ["sd3", "sd3.5", "flux1", "chroma"],
    }[latent]
    out = []
    for family, score, said in tied_scores(index, families, facts["compatible_families"], 0.9):
        out.append(_cand(family, score, [*evidence, said] if said else evidence, facts, detector))
    return out


def _root(stack: dict[str, Any]) -> str:
    first = str(stack["first"])
    return first[: len(first) - len(first.rsplit(".", 2)[-2] + ".weight")]


def _naming(stacks: list[dict[str, Any]]) -> str:
    root = _root(stacks[0])
    if root.endswith("layers."):
        return "diffusers"
    if root.startswith("taesd_"):
        return "comfyui"
    return "madebyollin"


def _cand(
    family: str, score: float, evidence: list[str], facts: dict[str, Any], detector: str
) -> Candidate:
    return Candidate(
        family=family,
        kind="vae",
        score=score,
        evidence=tuple(evidence),
        variant="taesd",
        detector=detector,
        facts=facts,
    )
