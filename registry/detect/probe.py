"""The shared flow of the base-model detectors: find the denoiser, judge it, say what kind.

A *probe* knows one naming of one kind of denoiser (LDM UNet, diffusers UNet, BFL Flux, ...):
the anchor suffixes that find its key prefix, and an ``analyse`` function that reads shapes off
a :class:`~modelsafe.registry.detect.prefixes.KeyView` and returns :class:`Match` objects.
:func:`run_probes` turns matches into Candidates for a single file (``checkpoint`` when a VAE or
text encoder sits beside the denoiser, else ``unet``/``transformer``) or a diffusers folder
(``pipeline``), adding the facts every detector shares (key prefix, components, quantisation).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from modelsafe.registry.detect.prefixes import (
    COMFY_FIRST_TEXT_ENCODER_PREFIXES,
    TEXT_ENCODER_PREFIXES,
    VAE_PREFIXES,
    KeyView,
    find_prefix,
    prefixes_present,
    scaled_fp8_markers,
)
from modelsafe.types import DTYPE_SIZES, Candidate, TensorIndex

# Diffusers folder component names that hold the denoiser, in the order they are tried.
DENOISER_COMPONENTS = ("unet", "transformer", "prior", "decoder")
# How far below the main answer the alternatives a layout cannot rule out are scored.
_ALTERNATIVE_GAP = 0.05


@dataclass
class Match:
    """What a probe read off a denoiser: family, variant, how sure, and why."""

    family: str
    score: float
    evidence: list[str]
    variant: str | None = None
    prediction_type: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    # Other (variant, prediction_type, why) readings the layout cannot rule out.
    alternatives: list[tuple[str | None, str | None, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Hints:
    """Metadata and configs that may decide what the layout cannot (prediction type, variant)."""

    metadata: Mapping[str, str]
    config: Mapping[str, Any]  # flat ``component.key`` facts of a diffusers folder
    names: frozenset[str]

    def prediction_type(self) -> tuple[str, str] | None:
        """(prediction type, evidence) from metadata, configs or marker keys; None if silent."""
        for key in _PREDICTION_KEYS:
            value = self.metadata.get(key)
            if value:
                return _normal_prediction(value), f"metadata {key}={value!r}"
        if self.metadata.get("ss_v_parameterization") in ("True", "true"):
            return "v_prediction", "metadata ss_v_parameterization=True"
        arch = self.metadata.get("modelspec.architecture", "")
        if arch.endswith("-v") or "768-v" in arch:
            return "v_prediction", f"metadata modelspec.architecture={arch!r}"
        for key, value in self.config.items():
            if key.endswith("prediction_type") and isinstance(value, str):
                return _normal_prediction(value), f"config {key}={value!r}"
        edm_v = edm_vpred_markers(self.names)
        if edm_v:
            return (
                "v_prediction",
                f"marker tensor {edm_v[0]!r} (EDM v-prediction, as ComfyUI reads it)",
            )
        for name in self.names:
            if name == "v_pred" or name.endswith(".v_pred"):
                return "v_prediction", f"marker tensor {name!r} (v-prediction model)"
        return None


# Metadata keys that name the prediction type, most specific first. ComfyUI's checkpoint
# savers write ``modelspec.predict_key`` (``epsilon`` / ``v``), which is not in the SAI spec.
_PREDICTION_KEYS = (
    "modelspec.prediction_type",
    "modelspec.predict_key",
    "prediction_type",
    "ss_prediction_type",
)
# ComfyUI stores a v-prediction model sampled with an EDM (continuous sigma) schedule, CosXL and
# CosXL-Edit, with these scalars; its loader (``supported_models.SDXL.model_type``) reads them
# as ``V_PREDICTION_EDM``.
EDM_VPRED_MARKERS = ("edm_vpred.sigma_max", "edm_vpred.sigma_min")
_PREFIXED_EDM_VPRED_MARKERS = tuple("." + m for m in EDM_VPRED_MARKERS)


def edm_vpred_markers(names: frozenset[str] | set[str]) -> list[str]:
    """The ``edm_vpred.sigma_max`` (+ ``sigma_min``) marker tensors in ``names``, sigma_max
    first; empty without ``sigma_max`` (ComfyUI decides on it alone)."""
    found = sorted(
        n for n in names if n in EDM_VPRED_MARKERS or n.endswith(_PREFIXED_EDM_VPRED_MARKERS)
    )
    return found if any(n.endswith(EDM_VPRED_MARKERS[0]) for n in found) else []


def _normal_prediction(value: str) -> str:
    value = value.strip().lower()
    if value in ("v", "v_prediction", "v-prediction", "vpred", "v_pred"):
        return "v_prediction"
    if value in ("eps", "epsilon", "noise"):
        return "epsilon"
    if value in ("flow", "rectified_flow", "flow_matching"):
        return "flow"
    return value


@dataclass(frozen=True)
class Probe:
    """One naming of one denoiser architecture."""

    name: str
    model: str  # "unet" | "transformer": the kind of a denoiser-only file
    anchors: tuple[str, ...]
    analyse: Callable[[KeyView, Hints], list[Match]]


def run_probes(index: TensorIndex, probes: tuple[Probe, ...], detector: str) -> list[Candidate]:
    """Every candidate ``probes`` find in ``index`` (a single file or a diffusers folder)."""
    if index.components:
        return _pipeline_candidates(index, probes, detector)
    names = index.names()
    config = index.extra.get("config") if isinstance(index.extra, Mapping) else None
    hints = Hints(
        metadata=index.metadata,
        config=_flat(config) if isinstance(config, Mapping) else {},
        names=frozenset(names),
    )
    out: list[Candidate] = []
    for probe in probes:
        prefix = find_prefix(names, probe.anchors)
        if prefix is None:
            continue
        view = KeyView.of(index, prefix)
        if _is_controlnet(view, probe):
            continue
        matches = probe.analyse(view, hints)
        if not matches:
            continue
        parts = parts_beside(names, prefix)
        kind = "checkpoint" if parts else probe.model
        common: dict[str, Any] = {
            "key_prefix": prefix,
            "components_present": [probe.model, *parts],
            "naming": probe.name,
        }
        extra_evidence = [_kind_evidence(kind, prefix, parts, probe)]
        extra_evidence += _quantisation(index, common)
        out += _candidates(matches, kind, common, extra_evidence, detector)
    return out


def _pipeline_candidates(
    index: TensorIndex, probes: tuple[Probe, ...], detector: str
) -> list[Candidate]:
    extra = index.extra if isinstance(index.extra, Mapping) else {}
    flat = extra.get("facts")
    hints = Hints(metadata={}, config=flat if isinstance(flat, Mapping) else {}, names=frozenset())
    out: list[Candidate] = []
    for component in DENOISER_COMPONENTS:
        sub = index.components.get(component)
        if sub is None:
            continue
        names = sub.names()
        for probe in probes:
            prefix = find_prefix(names, probe.anchors)
            if prefix is None:
                continue
            view = KeyView.of(sub, prefix)
            if _is_controlnet(view, probe):
                continue
            matches = probe.analyse(view, hints)
            if not matches:
                continue
            common: dict[str, Any] = {
                "key_prefix": prefix,
                "components_present": sorted(index.components),
                "naming": probe.name,
                "denoiser_component": component,
            }
            pipeline_class = extra.get("pipeline_class")
            evidence = [
                f"diffusers folder ({pipeline_class or 'no _class_name'}); denoiser in "
                f"{component}/, components: {', '.join(sorted(index.components))}"
            ]
            evidence += _quantisation(sub, common)
            for m in matches:
                _pipeline_variant(m, pipeline_class, extra.get("configs"))
            out += _candidates(matches, "pipeline", common, evidence, detector)
    return out


# Pipelines whose class names the model where the denoiser's layout is another's: pipeline class
# -> (family, the variant the layout names, the variant the class says, what it is). Flux.1
# Kontext has Flux.1 dev's layout; Qwen-Image-Edit and -Edit-2509 (QwenImageEditPlusPipeline,
# also -2511's, whose transformer config sets ``zero_cond_t``) have Qwen-Image's.
_KONTEXT = ("flux1", "dev", "kontext", "Flux.1 Kontext, an image-editing model")
_QWEN_EDIT = ("qwen-image", None, "edit", "Qwen-Image-Edit, an image-editing model")
_PIPELINE_VARIANTS: dict[str, tuple[str, str | None, str, str]] = {
    "FluxKontextPipeline": _KONTEXT,
    "FluxKontextInpaintPipeline": _KONTEXT,
    "QwenImageEditPipeline": _QWEN_EDIT,
    "QwenImageEditInpaintPipeline": _QWEN_EDIT,
    "QwenImageEditPlusPipeline": (
        "qwen-image",
        None,
        "edit-2509",
        "Qwen-Image-Edit-2509 (multi-image editing)",
    ),
}


def _pipeline_variant(match: Match, pipeline_class: object, configs: object) -> None:
    """Name ``match``'s variant after the pipeline class where its layout is shared (a
    ``FluxKontextPipeline`` is Flux.1 Kontext, not dev); a variant the weights tell stays."""
    known = _PIPELINE_VARIANTS.get(pipeline_class) if isinstance(pipeline_class, str) else None
    if known is None or (match.family, match.variant) != known[:2]:
        return
    family, _, variant, what = known
    transformer = configs.get("transformer") if isinstance(configs, Mapping) else None
    if (
        variant == "edit-2509"
        and isinstance(transformer, Mapping)
        and transformer.get("zero_cond_t") is True
    ):
        variant, what = "edit-2511", "Qwen-Image-Edit-2511 (transformer config zero_cond_t)"
    match.variant = variant
    match.alternatives = [a for a in match.alternatives if a[0] != variant]
    match.evidence.append(
        f"model_index.json _class_name {pipeline_class}: {what}; the weights share "
        f"{family}'s layout, the pipeline class says which"
    )


def _is_controlnet(view: KeyView, probe: Probe) -> bool:
    """A transformer ControlNet (Flux, SD3, Qwen-Image: a copy of the first blocks plus
    ``controlnet_blocks``) is the adapter detector's, never a plain transformer."""
    return probe.model == "transformer" and view.has_prefix("controlnet_blocks.")


def _flat(config: Mapping[str, Any]) -> dict[str, Any]:
    return {f"config.{k}": v for k, v in config.items() if not isinstance(v, (dict, list))}


def _candidates(
    matches: list[Match],
    kind: str,
    common: dict[str, Any],
    extra_evidence: list[str],
    detector: str,
) -> list[Candidate]:
    out: list[Candidate] = []
    for m in matches:
        facts = {**common, **m.facts}
        evidence = tuple(m.evidence + extra_evidence)
        out.append(
            Candidate(
                family=m.family,
                kind=kind,
                score=round(max(0.0, min(1.0, m.score)), 3),
                evidence=evidence,
                variant=m.variant,
                prediction_type=m.prediction_type,
                detector=detector,
                facts=facts,
            )
        )
        for variant, prediction, why in m.alternatives:
            out.append(
                Candidate(
                    family=m.family,
                    kind=kind,
                    score=round(max(0.0, m.score - _ALTERNATIVE_GAP), 3),
                    evidence=(why, *evidence),
                    variant=variant,
                    prediction_type=prediction,
                    detector=detector,
                    facts=facts,
                )
            )
    return out


def parts_beside(names: set[str] | frozenset[str], denoiser_prefix: str) -> list[str]:
    """Diffusers component names of the VAE/text encoders stored beside the denoiser."""
    others = [n for n in names if not n.startswith(denoiser_prefix)] if denoiser_prefix else []
    if not denoiser_prefix:
        # Unprefixed denoiser: other parts can only be told by their own prefixes.
        others = list(names)
    found = prefixes_present(others, (*VAE_PREFIXES, *TEXT_ENCODER_PREFIXES))
    parts: list[str] = []
    if any(p in found for p in VAE_PREFIXES):
        parts.append("vae")
    has = found.__contains__
    openclip_only = has("conditioner.embedders.0.") and not has("conditioner.embedders.1.")
    bigg_first = openclip_only and any(
        n.startswith("conditioner.embedders.0.model.") for n in others
    )
    if (
        has("cond_stage_model.")
        or has("text_encoder.")
        or any(has(p) for p in COMFY_FIRST_TEXT_ENCODER_PREFIXES)
        or (has("conditioner.embedders.0.") and not bigg_first)
    ):
        parts.append("text_encoder")
    if (
        has("conditioner.embedders.1.")
        or bigg_first
        or has("text_encoders.clip_g.")
        or has("text_encoder_2.")
    ):
        parts.append("text_encoder_2")
    if has("text_encoders.t5xxl."):
        # SD3 keeps T5 third (after CLIP-L and CLIP-G); Flux has CLIP-L + T5 only.
        slot = "text_encoder_3" if "text_encoder_2" in parts else "text_encoder_2"
        parts.append(slot)
    if has("text_encoder_3."):
        parts.append("text_encoder_3")
    return parts


def _kind_evidence(kind: str, prefix: str, parts: list[str], probe: Probe) -> str:
    where = f"under {prefix!r}" if prefix else "unprefixed"
    if kind == "checkpoint":
        return f"{probe.model} weights {where} with {', '.join(parts)} beside it: full checkpoint"
    return f"{probe.model} weights {where}, no VAE or text encoder in the file: {probe.model}-only"


def _quantisation(index: TensorIndex, facts: dict[str, Any]) -> list[str]:
    """Evidence and facts for fp8 (incl. ComfyUI scaled fp8) and GGUF quantised weights."""
    evidence: list[str] = []
    marker, scales = scaled_fp8_markers(index.names())
    if marker is not None or scales:
        facts["quantization"] = "comfy-scaled-fp8"
        evidence.append(
            f"ComfyUI scaled fp8: marker {marker or '(none)'} and {scales} "
            "*.scale_weight/*.scale_input tensors (ignored for identification)"
        )
    quant = sorted({t.dtype for t in index.tensors if t.dtype not in DTYPE_SIZES})
    if quant:
        facts["quantization"] = "gguf"
        facts["quant_types"] = quant
        evidence.append(
            f"GGUF quantised weights ({', '.join(quant)}); shapes read as logical shapes"
        )
    reshaped = index.extra.get("reshaped_tensors") if index.format == "gguf" else None
    if reshaped:
        evidence.append(
            f"{reshaped} tensors stored flattened (ComfyUI-GGUF's converter); their shapes are "
            "read from its comfy.gguf.orig_shape.* keys"
        )
    return evidence
