"""`plan` prices weights as the file stores them: fp8 stays fp8, NF4 stays packed.

A ComfyUI fp8 Flux file keeps its biases and norms in bf16, so its bytes are a little over one
per parameter; the planner took "stored in fp8" to mean *every* byte in fp8 and priced such a
file (``flux1-krea-dev_fp8_scaled``) in bf16: 22 GiB of transformer, twice what loads. An fp8 T5
inside an all-in-one file was priced in bf16 too, and an NF4 file at one byte a parameter.
`generate` keeps what the plan priced: fp8-stored weights are kept in fp8 storage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelsafe.runtime.generate_plan import _planned
from modelsafe.runtime.plan import plan
from modelsafe.testing import write_safetensors
from modelsafe.testing.layouts import base_models as bm
from modelsafe.testing.layouts.base_models import Specs
from modelsafe.testing.layouts.quantized import bnb_4bit, write_packed

GIB = 2**30


def _fp8_linears(specs: Specs, scaled: bool = False) -> Specs:
    """Every Linear weight in fp8 (ComfyUI's fp8_e4m3fn files); ``scaled``: with a per-weight
    ``scale_weight`` and the ``scaled_fp8`` marker (ComfyUI's fp8_scaled files)."""
    out: Specs = []
    for name, dtype, shape in specs:
        if name.endswith(".weight") and len(shape) == 2:
            out.append((name, "F8_E4M3", shape))
            if scaled:
                out.append((name[: -len("weight")] + "scale_weight", "F32", ()))
        else:
            out.append((name, dtype, shape))
    return out + ([("scaled_fp8", "F8_E4M3", (0,))] if scaled else [])


def _weights(p: object, name: str) -> int:
    return next(w for w in p.weights if w.name == name).sizes[p.dtypes[name]]  # type: ignore[attr-defined]


def test_a_scaled_fp8_flux_is_priced_in_fp8(tmp_path: Path) -> None:
    path = write_safetensors(
        tmp_path / "flux1-krea-dev_fp8_scaled.safetensors", _fp8_linears(bm.bfl_flux(), True)
    )
    p = plan(str(path), vram="24GiB")
    assert p.dtypes["transformer"] == "fp8"
    assert 10.5 * GIB < _weights(p, "transformer") < 11.5 * GIB  # (was 22.2 GiB in bf16)
    why = {c.name: c.why for c in p.choices}["dtype transformer"]
    assert why.startswith("the file is stored in fp8")
    assert _planned(p, "denoiser_fp8") is True  # generate keeps it in fp8 storage


def test_a_bf16_flux_is_still_priced_in_bf16(tmp_path: Path) -> None:
    path = write_safetensors(tmp_path / "flux1-dev.safetensors", bm.bfl_flux())
    p = plan(str(path), vram="80GiB")
    assert p.dtypes["transformer"] == "bf16"
    assert _planned(p, "denoiser_fp8") is False


def test_an_fp8_t5_in_an_all_in_one_file_stays_fp8(tmp_path: Path) -> None:
    specs = bm.prefixed("model.diffusion_model.", _fp8_linears(bm.bfl_flux()))
    specs += bm.prefixed("vae.", bm.ldm_vae(16, False, "BF16"))
    specs += bm.prefixed("text_encoders.clip_l.transformer.", bm.clip_text(768, 12, None, "F16"))
    specs += bm.prefixed("text_encoders.t5xxl.transformer.", _fp8_linears(bm.t5_encoder(24, "F16")))
    path = write_safetensors(tmp_path / "flux1-dev-fp8.safetensors", specs)
    p = plan(str(path), vram="24GiB")
    assert p.dtypes["t5xxl"] == "fp8" and p.dtypes["clip_l"] != "fp8"
    assert _weights(p, "t5xxl") < 6 * GIB  # (bf16: 8.9 GiB)
    assert {c.name: c.why for c in p.choices}["dtype t5xxl"].startswith("the file is stored in fp8")
    assert _planned(p, "text_encoder_fp8") is True


def test_an_nf4_flux_stays_packed(tmp_path: Path) -> None:
    specs, blobs = bnb_4bit(bm.bfl_flux())
    path = write_packed(tmp_path / "flux1-dev-bnb-nf4.safetensors", specs, blobs)
    p = plan(str(path), vram="24GiB")
    assert p.dtypes["transformer"] == "native"
    assert _weights(p, "transformer") < 7 * GIB  # (one byte a parameter: 11.1 GiB)
    why = {c.name: c.why for c in p.choices}["dtype transformer"]
    assert "packed below 8 bits" in why
    assert _planned(p, "denoiser_fp8") is False  # (packed weights are not re-stored in fp8)


def test_a_gguf_text_encoder_stays_quantised_not_fp8(part_of: Any, write: Any) -> None:
    """A Q4_K/Q8_0 T5 was "stored in fp8" (its bytes per parameter are near one) and offered
    fp8 storage; a GGUF encoder stays quantised, as a GGUF denoiser does."""
    from dataclasses import replace

    from modelsafe.runtime.plan import plan_parts

    base = part_of(write("flux.safetensors", bm.bfl_flux()), "checkpoint", "flux1", "transformer")
    t5 = part_of(
        write("t5.safetensors", _fp8_linears(bm.t5_encoder(24, "F16"))),
        "text_encoder",
        "any",
        "text_encoder",
        variant="t5xxl",
    )
    t5 = replace(t5, report={**t5.report, "format": "gguf"})
    p = plan_parts(base, [t5], 80 * GIB, missing=["clip_l", "vae"])
    assert p.dtypes["t5xxl"] == "native" and not p.options.text_encoder_fp8
    assert {c.name: c.why for c in p.choices}["dtype t5xxl"].startswith("GGUF-quantised")
