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
- AnimateDiff motion module (guoyww ``mm_sd_v15_v2.ckpt``, ``v3_sd15_mm.ckpt``,
  ``mm_sdxl_v10_beta.ckpt``; ComfyUI-AnimateDiff-Evolved ``motion_module_ad.py``; diffusers
  ``MotionAdapter``): temporal transformers ``{down,up}_blocks.N.motion_modules.M`` (original:
  ``.temporal_transformer.transformer_blocks.0.attention_blocks.{0,1}``, diffusers:
  ``.transformer_blocks.0.attn1``), one per UNet resolution level, each as wide as its level:
  320/640/1280/1280 = SD1's four levels, 320/640/1280 = SDXL's three. The positional table
  ``pos_encoder.pe`` ``[1, frames, width]`` holds the longest clip it was trained for (24 in v1,
  32 later); v2 added a ``mid_block``. A MotionLoRA stores ``processor.to_q_lora.down`` pairs on
  the same modules: a LoRA for the motion module, not for the checkpoint.
- Flux.1 Redux (``flux1-redux-dev.safetensors``, ComfyUI ``comfy/ldm/flux/redux.py``): ``redux_up``
  ``[12288, 1152]`` and ``redux_down`` ``[4096, 12288]``, an MLP from SigLIP so400m image
  features (1152 wide) into Flux.1's T5 text space (4096): a ComfyUI "style model".
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


_MOTION = re.compile(
    r"^(down_blocks|up_blocks|mid_block)\.(?:(\d+)\.)?motion_modules\.(\d+)\.(.*)$"
)
# Width of each down level's motion modules -> the UNet family they were trained beside.
_MOTION_LEVELS = {(320, 640, 1280, 1280): "sd1", (320, 640, 1280): "sdxl"}
_MOTION_LORA = ("_lora.down.weight", "_lora.up.weight")


def motion_module(index: TensorIndex, detector: str) -> list[Candidate]:
    """An AnimateDiff motion module (or a MotionLoRA for one): every tensor sits under a
    ``motion_modules`` list of the UNet's blocks; the widths of the down levels say the base."""
    matches = [(t, m) for t in index.tensors if (m := _MOTION.match(t.name))]
    if not matches or len(matches) != len(index.tensors):
        return []
    lora = all(m[4].endswith(_MOTION_LORA) for _t, m in matches)
    widths: dict[int, int] = {}
    frames, table = None, ""
    naming = "original"
    for info, m in matches:
        rest = m[4]
        if m[1] == "down_blocks" and rest.endswith(("proj_in.weight", "to_q_lora.down.weight")):
            widths.setdefault(int(m[2]), info.shape[-1] if info.shape else 0)
        if rest.endswith(("pos_encoder.pe", "pos_embed.pe")) and len(info.shape) == 3:
            frames, table = max(frames or 0, info.shape[1]), rest.rsplit(".", 2)[-2] + ".pe"
        if rest.startswith("transformer_blocks."):
            naming = "diffusers"
    levels = tuple(widths[i] for i in sorted(widths))
    family = _MOTION_LEVELS.get(levels)
    mid = any(m[1] == "mid_block" for _t, m in matches)
    first = matches[0][0]
    what = "a MotionLoRA (a LoRA for a motion module)" if lora else "an AnimateDiff motion module"
    evidence = [
        f"{first.name}: every tensor is in the UNet blocks' motion_modules = {what}, "
        "temporal attention added to an image model (AnimateDiff), not a checkpoint"
    ]
    facts: dict[str, Any] = {"levels": list(levels), "naming": naming, "mid_block": mid}
    if frames:
        facts["max_frames"] = frames
        evidence.append(f"{table} holds {frames} frame positions: clips up to {frames} frames")
    evidence.append(
        f"down-level widths {list(levels)}"
        + (f" = {family.upper()}'s UNet levels" if family else ": no UNet family modelsafe knows")
    )
    variant = "motion_lora" if lora else ("v1" if frames == 24 and not mid else None)
    if variant is None and not lora and frames == 32 and mid and family == "sd1":
        variant = "v2"
    return [
        candidate(family, "motion_module", 0.9, evidence, facts, detector, variant, index.metadata)
    ]


_REDUX = {"redux_up.weight": 2, "redux_down.weight": 2}
_SIGLIP_WIDTH = 1152  # SigLIP so400m patch14-384, the image encoder Redux reads
_T5_WIDTH = 4096


def style_model(index: TensorIndex, detector: str) -> list[Candidate]:
    """Flux.1 Redux: an MLP from SigLIP image features into Flux.1's T5 text space."""
    shapes = {t.name: t.shape for t in index.tensors}
    if not all(len(shapes.get(name, ())) == dims for name, dims in _REDUX.items()):
        return []
    if set(shapes) - {"redux_up.weight", "redux_up.bias", "redux_down.weight", "redux_down.bias"}:
        return []
    image_width = shapes["redux_up.weight"][1]
    text_width = shapes["redux_down.weight"][0]
    family = "flux1" if text_width == _T5_WIDTH else None
    evidence = [
        f"redux_up.weight has shape {shape_text(shapes['redux_up.weight'])}, redux_down.weight "
        f"{shape_text(shapes['redux_down.weight'])}: Flux Redux, image features "
        f"({image_width} wide) into the text space ({text_width} wide)",
        "a style model: ComfyUI applies it to the conditioning (Apply Style Model); it needs the "
        "SigLIP so400m image encoder (clip_vision)",
    ]
    facts: dict[str, Any] = {"context_dim": text_width, "image_width": image_width}
    if image_width == _SIGLIP_WIDTH:
        facts["image_encoder"] = "siglip_so400m_patch14_384"
    return [candidate(family, "style_model", 0.9, evidence, facts, detector, "redux", None)]
