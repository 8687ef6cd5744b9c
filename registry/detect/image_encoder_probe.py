"""Stand-alone image encoders: the CLIP vision towers IP-Adapters feed on, and SigLIP.

transformers naming (``CLIPVisionModelWithProjection``, as IP-Adapter's ``image_encoder/`` and
ComfyUI's ``clip_vision/`` files store it): ``vision_model.embeddings.patch_embedding`` gives the
width and patch size, ``vision_model.encoder.layers.N`` the depth, ``position_embedding`` the
image size ((size / patch)^2 + 1 class token), ``visual_projection`` the embedding the
IP-Adapter's ``image_proj`` reads. Width x depth name the tower: ViT-L/14 1024x24, ViT-H/14
1280x32, ViT-bigG/14 1664x48, ViT-B 768x12; SigLIP so400m 1152x27 (no class token, Flux Redux).
The kind is ``image_encoder``, the family ``any``; ``variant`` uses the names the IP-Adapter
detector writes into its ``image_encoder`` fact (``clip_vit_h``, ``clip_vit_bigg``) so the two
can be matched.
"""

from __future__ import annotations

import math
from typing import Any

from modelsafe.registry.detect.component_probes import MIN_COVERAGE, coverage
from modelsafe.registry.detect.prefixes import KeyView, find_prefix
from modelsafe.types import Candidate, TensorIndex

_ANCHORS = (
    "embeddings.patch_embedding.weight",
    "encoder.layers.0.self_attn.q_proj.weight",
    "post_layernorm.weight",
)
# (width, layers, patch) -> variant
_VARIANTS: dict[tuple[int, int, int], str] = {
    (768, 12, 32): "clip_vit_b32",
    (768, 12, 16): "clip_vit_b16",
    (1024, 24, 14): "clip_vit_l",
    (1280, 32, 14): "clip_vit_h",
    (1664, 48, 14): "clip_vit_bigg",
    (1152, 27, 14): "siglip_so400m",
}
USED_BY: dict[str, str] = {
    "clip_vit_h": "IP-Adapter (SD1.5 and the SDXL *_vit-h models), ComfyUI clip_vision_h",
    "clip_vit_bigg": "IP-Adapter SDXL (non vit-h), ComfyUI clip_vision_g, unCLIP SDXL",
    "clip_vit_l": "SD1.5 unCLIP, some IP-Adapters and style models",
    "siglip_so400m": "Flux.1 Redux",
}


def image_encoder(index: TensorIndex, detector: str) -> list[Candidate]:
    prefix = find_prefix(index.names(), _ANCHORS)
    if prefix is None:
        return []
    # The tower sits under ``vision_model.`` (with ``visual_projection`` beside it) or bare.
    outer = prefix.removesuffix("vision_model.")
    view = KeyView.of(index, outer)
    tower = prefix[len(outer) :]
    patch = view.shape(tower + "embeddings.patch_embedding.weight") or ()
    if len(patch) != 4 or tower + "encoder.layers.0.self_attn.q_proj.weight" not in view:
        return []
    if view.has_prefix("text_model."):
        return []  # a whole CLIP model: the text-encoder detector speaks for it
    if coverage(index, outer) < MIN_COVERAGE:
        return []
    width, patch_size = patch[0], patch[2]
    layers = view.count_blocks(tower + "encoder.layers.")
    positions = view.dim(tower + "embeddings.position_embedding.weight", 0) or 0
    class_token = tower + "embeddings.class_embedding" in view
    side = math.isqrt(max(0, positions - (1 if class_token else 0)))
    image_size = side * patch_size  # SigLIP-384 floors: 27 x 14 = 378 of its 384 pixels
    projection = view.shape("visual_projection.weight")
    siglip = not class_token and view.has_prefix(tower + "head.")
    facts: dict[str, Any] = {
        "encoder_type": "siglip_vision" if siglip else "clip_vision",
        "hidden_size": width,
        "num_layers": layers,
        "patch_size": patch_size,
        "image_size": image_size,
        "patch_grid": side,
        "naming": "transformers",
    }
    evidence = [
        f"{view.says(tower + 'embeddings.patch_embedding.weight')}: "
        f"{'SigLIP' if siglip else 'CLIP'} vision transformer, width {width}, "
        f"{patch_size}x{patch_size} patches, {layers} layers",
        f"{view.says(tower + 'embeddings.position_embedding.weight')}: "
        f"{side}x{side} patches{' + a class token' if class_token else ''}: about "
        f"{image_size}x{image_size} input images",
    ]
    if projection is not None:
        facts["projection_dim"] = projection[0]
        evidence.append(
            f"{view.says('visual_projection.weight')}: image embeddings of width {projection[0]}"
        )
    variant = _VARIANTS.get((width, layers, patch_size))
    if variant == "clip_vit_l" and image_size == 336:
        variant = "clip_vit_l_336"
    if variant:
        facts["image_encoder"] = variant
        users = USED_BY.get(variant.removesuffix("_336"))
        evidence.append(f"= {variant}" + (f", used by {users}" if users else ""))
    else:
        evidence.append("no released CLIP/SigLIP vision tower has these dimensions")
    if outer:
        facts["key_prefix"] = outer
    return [
        Candidate(
            family="any",
            kind="image_encoder",
            score=0.95 if variant else 0.6,
            evidence=tuple(evidence),
            variant=variant,
            detector=detector,
            facts=facts,
        )
    ]
