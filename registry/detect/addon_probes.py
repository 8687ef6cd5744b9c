"""Add-ons that are neither LoRAs nor ControlNets: A1111 hypernetworks and PhotoMaker.

Decisive facts (public layouts):

- AUTOMATIC1111 hypernetwork (``modules/hypernetworks/hypernetwork.py``, saved as a ``.pt`` dict):
  one pair of small MLPs per attention context width, keyed by that width (``768: [k, v]``), each
  a ``{linear.N.weight, linear.N.bias}`` state dict; the pickle reader names them
  ``<width>.<0|1>.linear.N.weight``. The MLP reads the cross-attention context, so the width keys
  say the family: 768 = SD1's CLIP-L context, 1024 = SD2's OpenCLIP-H. The other default keys
  (320, 640, 1280) are the UNet's self-attention widths, which SD1 and SD2 share.
- PhotoMaker (TencentARC ``photomaker-v1.bin``/``-v2.bin``): ``id_encoder`` (a CLIP ViT-L image
  encoder with a second projection ``visual_projection_2`` and a ``fuse_module`` that merges the
  ID embedding into the 2048-wide SDXL prompt embedding; v2 adds a ``qformer_perceiver`` over an
  InsightFace embedding) and ``lora_weights`` for the SDXL UNet.
"""

from __future__ import annotations

import re
from typing import Any

from modelsafe.registry.detect.adapter_probes import _candidate as candidate
from modelsafe.registry.detect.prefixes import shape_text
from modelsafe.types import Candidate, TensorIndex

_HYPER_LAYER = re.compile(r"^(\d+)\.(\d+)\.linear\.(\d+)\.(weight|bias)$")
# The cross-attention context width a hypernetwork module reads -> the family.
_HYPER_CONTEXT = {768: "sd1", 1024: "sd2"}

_PHOTOMAKER = "id_encoder."
_PHOTOMAKER_ANCHORS = ("id_encoder.visual_projection_2.weight", "id_encoder.vision_model.")
_SDXL_CONTEXT = 2048


def hypernetwork(index: TensorIndex, detector: str) -> list[Candidate]:
    """An A1111 hypernetwork: every tensor is ``<width>.<n>.linear.<i>.*`` and each module's
    first linear layer reads its key's width."""
    matches = [(t, m) for t in index.tensors if (m := _HYPER_LAYER.match(t.name))]
    if not matches or len(matches) != len(index.tensors):
        return []
    sizes: dict[int, int] = {}
    for info, m in matches:
        width, module, layer, part = int(m[1]), int(m[2]), m[3], m[4]
        if layer == "0" and part == "weight" and (len(info.shape) != 2 or info.shape[1] != width):
            return []
        sizes[width] = max(sizes.get(width, 0), module + 1)
    contexts = sorted(w for w in sizes if w in _HYPER_CONTEXT)
    evidence = [
        f"{matches[0][0].name} has shape {shape_text(matches[0][0].shape)}: AUTOMATIC1111 "
        f"hypernetwork, modules for widths {sorted(sizes)}",
    ]
    facts: dict[str, Any] = {"sizes": sorted(sizes), "modules_per_size": max(sizes.values())}
    families = [_HYPER_CONTEXT[w] for w in contexts]
    if not families:
        evidence.append("no module for a known context width (768 = SD1, 1024 = SD2)")
        return [
            candidate(None, "hypernetwork", 0.5, evidence, facts, detector, metadata=index.metadata)
        ]
    facts["context_dim"] = contexts[0] if len(contexts) == 1 else contexts
    evidence.append(
        "context width "
        + " and ".join(f"{w} = {_HYPER_CONTEXT[w]}" for w in contexts)
        + (": trained for one; the weights cannot tell which" if len(contexts) > 1 else "")
    )
    return [
        candidate(family, "hypernetwork", 0.9, evidence, facts, detector, metadata=index.metadata)
        for family in families
    ]


def photomaker(index: TensorIndex, detector: str) -> list[Candidate]:
    """PhotoMaker: the ``id_encoder`` (CLIP ViT-L + fuse module) and its SDXL UNet LoRA."""
    names = index.names()
    if _PHOTOMAKER_ANCHORS[0] not in names or not any(
        n.startswith(_PHOTOMAKER_ANCHORS[1]) for n in names
    ):
        return []
    shapes = {t.name: t.shape for t in index.tensors}
    fuse = next(
        (
            n
            for n in sorted(names)
            if n.startswith(_PHOTOMAKER + "fuse_module.") and len(shapes[n]) == 1
        ),
        None,
    )
    width = shapes[fuse][0] if fuse else None
    version = "v2" if any(n.startswith(_PHOTOMAKER + "qformer_perceiver.") for n in names) else "v1"
    lora = sum(1 for n in names if n.startswith("lora_weights."))
    evidence = [
        f"{_PHOTOMAKER_ANCHORS[0]} has shape {shape_text(shapes[_PHOTOMAKER_ANCHORS[0]])} + "
        f"{_PHOTOMAKER}vision_model.*: PhotoMaker ID encoder (CLIP ViT-L, {version})",
        f"{lora} lora_weights tensors (its UNet LoRA)",
    ]
    facts: dict[str, Any] = {"version": version, "lora_tensors": lora}
    if version == "v2":
        facts["face_encoder"] = "insightface"
    family = "sdxl" if width == _SDXL_CONTEXT else None
    if fuse:
        facts["context_dim"] = width
        evidence.append(
            f"{fuse} has shape {shape_text(shapes[fuse])}: fuses into a {width}-wide prompt "
            "embedding" + (" = SDXL" if family else ": not SDXL's 2048")
        )
    return [
        candidate(family, "photomaker", 0.9, evidence, facts, detector, version, index.metadata)
    ]
