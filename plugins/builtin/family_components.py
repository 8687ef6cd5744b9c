"""Built-in family detector for stand-alone components: vae, text_encoder, image_encoder, upscaler.

A VAE (KL or tiny TAESD) gets the family (or the tied families) its latent channels fit; text
encoders, image encoders and upscalers are ``any`` (not tied to one family) with their variant
(clip_l, clip_g, t5xxl, ...; ``clip_l+clip_g+t5xxl`` for a file holding several, with the family
the set implies when only one family uses it; clip_vit_h, clip_vit_bigg, ...; upscaler
architecture and scale). Components inside a full checkpoint are left to the base-model
detectors. The shapes that decide are in ``modelsafe.registry.detect.component_probes``,
``multi_encoder_probe``, ``image_encoder_probe``, ``taesd_probe`` and ``upscaler_arch_probes``.
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
    from modelsafe.registry.detect.image_encoder_probe import image_encoder
    from modelsafe.registry.detect.multi_encoder_probe import multi_text_encoder
    from modelsafe.registry.detect.taesd_probe import taesd

    return (
        probes.vae(index, DETECTOR)
        + taesd(index, DETECTOR)
        + probes.text_encoder(index, DETECTOR)
        + multi_text_encoder(index, DETECTOR)
        + image_encoder(index, DETECTOR)
        + probes.upscaler(index, DETECTOR)
    )
