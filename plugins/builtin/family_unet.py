"""Built-in family detector for UNet base models: sd1, sd2, sdxl, sdxl_refiner, stable-cascade.

Kinds: ``checkpoint`` (UNet + VAE/text encoders in one file), ``unet`` (UNet only, LDM or
diffusers naming, any key prefix, fp8/scaled-fp8/GGUF) and ``pipeline`` (a diffusers folder).
The shapes that decide each answer are in ``modelsafe.registry.detect.unet_probes``.
"""

from __future__ import annotations

from modelsafe.plugins.hookspecs import hookimpl
from modelsafe.types import Candidate, TensorIndex


@hookimpl
def modelsafe_identify(index: TensorIndex) -> list[Candidate]:
    from modelsafe.registry.detect.probe import run_probes
    from modelsafe.registry.detect.unet_probes import PROBES

    return run_probes(index, PROBES, "family_unet")
