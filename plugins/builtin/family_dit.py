"""Built-in family detector for transformer base models: sd3, sd3.5, flux1, chroma, z-image,
qwen-image, hidream.

Kinds: ``checkpoint`` (transformer + VAE/text encoders in one file), ``transformer``
(transformer only: original or diffusers naming, any key prefix, fp8/scaled-fp8/GGUF) and
``pipeline`` (a diffusers folder). The deciding shapes are in
``modelsafe.registry.detect.dit_probes``.
"""

from __future__ import annotations

from modelsafe.plugins.hookspecs import hookimpl
from modelsafe.types import Candidate, TensorIndex


@hookimpl
def modelsafe_identify(index: TensorIndex) -> list[Candidate]:
    from modelsafe.registry.detect.dit_probes import PROBES
    from modelsafe.registry.detect.probe import run_probes

    return run_probes(index, PROBES, "family_dit")
