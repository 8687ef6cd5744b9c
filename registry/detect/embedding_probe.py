"""Textual-inversion embeddings: which text encoder(s) their vectors feed, hence the family.

Layouts (public formats):

- AUTOMATIC1111 ``.pt`` (a torch pickle): ``string_to_param`` -> ``{"*": [n, width]}`` beside
  ``string_to_token``, ``name``, ``step``, ``sd_checkpoint_name`` (read by the safe pickle VM, so
  the tensor is named ``string_to_param.*``);
- A1111 / kohya safetensors: ``emb_params`` ``[n, width]``;
- SDXL (kohya, A1111, ComfyUI): ``clip_l`` ``[n, 768]`` + ``clip_g`` ``[n, 1280]``;
- diffusers ``learned_embeds``: one tensor named after its token (``<cat-toy>``), ``[width]``.

The width is the text encoder's: 768 CLIP-L (SD1), 1024 OpenCLIP-H (SD2), 1280 OpenCLIP-bigG.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelsafe.registry.detect.metadata_family import weigh_metadata
from modelsafe.registry.detect.prefixes import shape_text
from modelsafe.types import Candidate, TensorIndex, TensorInfo

WIDTH_ENCODER: dict[int, str] = {768: "clip_l", 1024: "openclip_h", 1280: "clip_g"}
WIDTH_FAMILY: dict[int, str] = {768: "sd1", 1024: "sd2"}
# Real embeddings hold a handful of vectors; a table this big is something else.
MAX_VECTORS = 512
_KNOWN_NAMES = ("string_to_param.*", "emb_params", "clip_l", "clip_g")


def _vectors(t: TensorInfo) -> tuple[int, int] | None:
    """(vectors, width) of an embedding-shaped tensor, or None."""
    if len(t.shape) == 1:
        return 1, t.shape[0]
    if len(t.shape) == 2 and 0 < t.shape[0] <= MAX_VECTORS:
        return t.shape
    return None


def embedding(index: TensorIndex, detector: str) -> list[Candidate]:
    if index.components or not 0 < len(index.tensors) <= 4:
        return []
    by_name = index.by_name()
    facts: dict[str, Any] = {}
    evidence: list[str] = []
    if "clip_l" in by_name or "clip_g" in by_name:
        return _sdxl(index, by_name, detector)
    named = [n for n in ("string_to_param.*", "emb_params") if n in by_name]
    if named:
        t = by_name[named[0]]
        score = 0.95
        fmt = "a1111-pt" if named[0].startswith("string_to_param") else "emb_params"
    elif len(index.tensors) == 1 and _looks_like_token(index.tensors[0].name):
        t = index.tensors[0]
        score, fmt = 0.8, "diffusers"
    else:
        return []
    shape = _vectors(t)
    if shape is None:
        return []
    n, width = shape
    if fmt == "diffusers" and width not in WIDTH_ENCODER:
        return []
    encoder = WIDTH_ENCODER.get(width)
    family = WIDTH_FAMILY.get(width)
    facts.update(
        token_width=width,
        num_vectors=n,
        embedding_format=fmt,
        token_widths={encoder or "emb_params": width},
    )
    evidence.append(
        f"{t.name} has shape {shape_text(t.shape)}: {n} vector(s) of width {width}"
        + (f" ({encoder})" if encoder else "")
    )
    if fmt == "diffusers":
        evidence.append(f"single tensor named like a token ({t.name!r}): diffusers learned_embeds")
        facts["token"] = t.name
    if width == 1280:
        family = "sdxl_refiner"
        evidence.append("bigG-only vectors: the SDXL refiner's only text encoder")
        score = 0.7
    elif family is None:
        evidence.append(f"width {width} is no known text encoder")
        score = 0.4
    else:
        evidence.append(
            f"width {width} = {encoder}: {family}"
            + (" (an SDXL embedding would also carry clip_g)" if width == 768 else "")
        )
    _a1111_values(index, facts, evidence)
    fam, score = weigh_metadata(family, score, index.metadata, evidence)
    return [_cand(fam, score, evidence, facts, detector)]


def _sdxl(index: TensorIndex, by_name: Mapping[str, TensorInfo], detector: str) -> list[Candidate]:
    widths: dict[str, int] = {}
    evidence: list[str] = []
    vectors = 0
    for name in ("clip_l", "clip_g"):
        t = by_name.get(name)
        shape = _vectors(t) if t is not None else None
        if t is None or shape is None:
            continue
        vectors = max(vectors, shape[0])
        widths[name] = shape[1]
        evidence.append(f"{name} has shape {shape_text(t.shape)}")
    if not widths:
        return []
    good = widths.get("clip_l") == 768 and widths.get("clip_g") == 1280
    family = "sdxl" if good else None
    if good:
        evidence.append(
            "clip_l width 768 + clip_g width 1280: one vector set per SDXL text encoder"
        )
    else:
        evidence.append(f"widths {widths}: not the SDXL pair (clip_l 768 + clip_g 1280)")
    facts: dict[str, Any] = {
        "token_widths": widths,
        "token_width": sorted(widths.values()),
        "num_vectors": vectors,
        "embedding_format": "sdxl",
    }
    fam, score = weigh_metadata(family, 0.95 if good else 0.4, index.metadata, evidence)
    return [_cand(fam, score, evidence, facts, detector)]


def _looks_like_token(name: str) -> bool:
    """A diffusers ``learned_embeds`` key: the token itself (``<cat-toy>``). A nameless tensor
    (a ``.pt`` holding one bare tensor, e.g. an aesthetic-gradients embedding, which A1111's
    textual-inversion loader refuses) names no token, so it is none."""
    if not name.strip():
        return False
    return (name.startswith("<") and name.endswith(">")) or (
        "." not in name and name not in _KNOWN_NAMES and len(name) <= 64
    )


def _a1111_values(index: TensorIndex, facts: dict[str, Any], evidence: list[str]) -> None:
    values = index.extra.get("values") if isinstance(index.extra, Mapping) else None
    if not isinstance(values, Mapping):
        return
    for key in ("name", "step", "sd_checkpoint_name"):
        value = values.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            facts[f"a1111_{key}"] = value
    if "a1111_sd_checkpoint_name" in facts:
        evidence.append(
            f"trained on checkpoint {facts['a1111_sd_checkpoint_name']!r} (A1111 field)"
        )


def _cand(
    family: str | None, score: float, evidence: list[str], facts: dict[str, Any], detector: str
) -> Candidate:
    return Candidate(
        family=family or "unknown",
        kind="embedding",
        score=round(score if family else min(score, 0.5), 3),
        evidence=tuple(evidence),
        detector=detector,
        facts=facts,
    )
