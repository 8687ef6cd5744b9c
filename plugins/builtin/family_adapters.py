"""Built-in family detector for add-ons: lora, lycoris, controlnet, t2i_adapter, ip_adapter,
embedding, hypernetwork, photomaker, motion_module (AnimateDiff), style_model (Flux Redux) —
each with the base family it is *for*, read off its keys and shapes.

The rules and the shapes that decide are in ``modelsafe.registry.detect.lora_probe`` (LoRA and
LyCORIS), ``adapter_probes`` (ControlNet, T2I-Adapter, IP-Adapter), ``embedding_probe`` and
``addon_probes`` (A1111 hypernetworks, PhotoMaker, AnimateDiff motion modules, Flux Redux).
"""

from __future__ import annotations

from modelsafe.plugins.hookspecs import hookimpl
from modelsafe.types import Candidate, TensorIndex

DETECTOR = "family_adapters"


@hookimpl
def modelsafe_identify(index: TensorIndex) -> list[Candidate]:
    if index.components:
        return []  # diffusers pipelines are the base-model detectors' business
    from modelsafe.registry.detect import adapter_probes, addon_probes
    from modelsafe.registry.detect.embedding_probe import embedding
    from modelsafe.registry.detect.lora_probe import analyse_lora

    found = analyse_lora(index, DETECTOR)
    found += adapter_probes.controlnet(index, DETECTOR)
    found += adapter_probes.t2i_adapter(index, DETECTOR)
    found += adapter_probes.ip_adapter(index, DETECTOR)
    found += embedding(index, DETECTOR)
    found += addon_probes.hypernetwork(index, DETECTOR)
    found += addon_probes.photomaker(index, DETECTOR)
    found += addon_probes.motion_module(index, DETECTOR)
    found += addon_probes.style_model(index, DETECTOR)
    return found
