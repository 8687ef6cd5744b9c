"""Sequential CPU offload (the plan's choice for the tightest VRAM budgets) installs its hooks
and runs for real: on the CPU it gives the same pixels as no offload, with the SDXL refiner too
(and on ``cuda:0`` where a GPU is present). ``generate`` refuses offload on a CPU device
(nothing to offload to), so these tests build and run the backend's pipelines directly."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
from test_generate_families import request_for

from modelsafe.plugins.builtin.backend_diffusers import build_pipelines, run
from modelsafe.runtime.generate import GenerateRequest, with_defaults
from modelsafe.testing.tiny_models import Tiny


def _image(request: GenerateRequest) -> tuple[np.ndarray, Any]:
    pipe, refiner = build_pipelines(request)
    image = run(pipe, refiner, request, None)[0]
    return np.asarray(image.convert("RGB")).astype(np.int16), pipe


def _offloaded(module: torch.nn.Module) -> bool:
    """Every weight waits on the meta device, with accelerate's hooks to bring it in."""
    return hasattr(module, "_hf_hook") and all(p.device.type == "meta" for p in module.parameters())


@pytest.mark.parametrize("family", ["sd1", "flux1"])
def test_sequential_offload_on_cpu_gives_the_same_image(
    family: str, tiny: Callable[[str], Tiny]
) -> None:
    t = tiny(family)
    base = with_defaults(request_for(t, t.folder, seed=3, plan={"device": "cpu"}))
    plain, _ = _image(base)
    seq = replace(base, plan={"device": "cpu", "offload": "sequential"})
    pipe, _ = build_pipelines(seq)
    denoiser = pipe.unet if family == "sd1" else pipe.transformer
    assert _offloaded(denoiser) and _offloaded(pipe.vae) and _offloaded(pipe.text_encoder)
    assert pipe._execution_device == torch.device("cpu")
    offloaded = np.asarray(run(pipe, None, seq, None)[0].convert("RGB")).astype(np.int16)
    assert plain.std() > 1 and np.array_equal(plain, offloaded)
    assert _offloaded(denoiser)  # the layers went back after computing


def test_sequential_offload_with_the_sdxl_refiner(tiny: Callable[[str], Tiny]) -> None:
    """The refiner shares the base's VAE and second text encoder: they keep the base's hooks
    (their weights are already on the meta device) and the refined image is unchanged."""
    base_model, refiner = tiny("sdxl"), tiny("sdxl_refiner")
    base = with_defaults(
        request_for(base_model, base_model.folder, steps=4, refiner=refiner.folder, config_dir=None)
    )
    plain, _ = _image(base)
    offloaded, pipe = _image(replace(base, plan={"device": "cpu", "offload": "sequential"}))
    assert _offloaded(pipe.unet) and _offloaded(pipe.vae)
    assert np.array_equal(plain, offloaded)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_sequential_offload_on_cuda_gives_the_same_image(tiny: Callable[[str], Tiny]) -> None:
    """On a GPU (hooks are placed on ``cuda:0`` as soon as they are attached, so this one
    cannot run on the CPU): layers come to ``cuda:0`` and the image matches no offload."""
    t = tiny("sd1")
    base = with_defaults(request_for(t, t.folder, seed=3, plan={"device": "cuda"}))
    plain, _ = _image(base)
    offloaded, pipe = _image(replace(base, plan={"device": "cuda", "offload": "sequential"}))
    assert _offloaded(pipe.unet) and pipe._execution_device == torch.device("cuda:0")
    assert np.abs(plain - offloaded).max() <= 1
