"""Built-in family detector for stand-alone components: vae, text_encoder, upscaler.

A VAE gets the family (or the tied families) its latent channels fit; text encoders and
upscalers are ``any`` (not tied to one family) with their variant (clip_l, clip_g, t5xxl, ...;
upscaler architecture and scale). Components inside a full checkpoint are left to the base-model
detectors. The shapes that decide are in ``modelsafe.registry.detect.component_probes``.
"""

from __future__ import annotations

from modelsafe.plugins.hookspecs import hookimpl
from modelsafe.types import Candidate, TensorIndex

DETECTOR = "family_components"


@hookimpl
def modelsafe_identify(index: TensorIndex) -> list[Candidate]:
    if index.components or not index.tensors:
        return []  # diffusers pipelines are the base-model detectors' business
    from modelsafe.registry.detect import component_probes as probes

    return (
        probes.vae(index, DETECTOR)
        + probes.text_encoder(index, DETECTOR)
        + probes.upscaler(index, DETECTOR)
    )
