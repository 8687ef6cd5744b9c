"""fp8 storage of the T5 encoder (``text_encoder_fp8``, the plan's choice for Flux/SD3 on tight
budgets) runs for real: its linear layers wait in fp8, T5's ``wo`` and the embeddings stay in the
run's dtype, and the image is nearly the one without fp8."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest
import torch
from test_generate_families import request_for

from modelsafe.plugins.builtin.backend_diffusers import build_pipelines, run
from modelsafe.runtime.generate import with_defaults
from modelsafe.testing.tiny_models import Tiny


@pytest.mark.parametrize("family", ["flux1", "sd3"])
def test_t5_in_fp8_generates(family: str, tiny: Callable[[str], Tiny]) -> None:
    t = tiny(family)
    base = with_defaults(request_for(t, t.folder, seed=3, plan={"device": "cpu"}))
    pipe, refiner = build_pipelines(base)
    plain = np.asarray(run(pipe, refiner, base, None)[0].convert("RGB")).astype(np.int16)

    request = replace(base, plan={"device": "cpu", "text_encoder_fp8": True})
    pipe, refiner = build_pipelines(request)
    t5 = pipe.text_encoder_3 if family == "sd3" else pipe.text_encoder_2
    stored = {name: p.dtype for name, p in t5.named_parameters()}
    fp8 = [n for n, d in stored.items() if d == torch.float8_e4m3fn]
    assert any(n.endswith("wi_0.weight") or n.endswith("wi.weight") for n in fp8)
    assert not [n for n in fp8 if ".wo." in n or "shared" in n or "embed" in n]
    assert t5.dtype != torch.float8_e4m3fn  # pipelines cast prompt embeddings to this
    image = np.asarray(run(pipe, refiner, request, None)[0].convert("RGB")).astype(np.int16)
    assert plain.std() > 1 and image.std() > 1
    assert np.abs(plain - image).max() <= 8  # fp8 rounding of the encoder's weights only


def test_text_encoder_fp8_only_touches_t5(tiny: Callable[[str], Tiny]) -> None:
    """SDXL has no T5: a forced ``text_encoder_fp8`` leaves CLIP-G alone, and the refiner, which
    shares CLIP-G with the base, loads without casting anything twice."""
    base_model, refiner = tiny("sdxl"), tiny("sdxl_refiner")
    request = with_defaults(
        request_for(base_model, base_model.folder, steps=2, refiner=refiner.folder)
    )
    request = replace(request, plan={"device": "cpu", "text_encoder_fp8": True})
    pipe, refine = build_pipelines(request)
    assert refine is not None
    stored = {p.dtype for p in pipe.text_encoder_2.parameters()}
    assert torch.float8_e4m3fn not in stored
