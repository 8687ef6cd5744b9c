"""Identification round 8: ComfyUI all-in-one checkpoints of the LLM-encoder DiTs.

ComfyUI's checkpoint save writes ``model.diffusion_model.*`` + ``vae.*`` +
``text_encoders.<name>.transformer.*``, where ``<name>`` is the encoder's ComfyUI name
(``umt5xxl`` for Wan, ``gemma2_2b`` for Lumina 2, ``qwen25_7b`` for Qwen-Image, ``qwen3_4b`` for
Z-Image, ``mistral3_24b`` for FLUX.2 dev). Only CLIP-L/CLIP-G/T5-XXL were counted: the others were
``not_loaded_bytes``, so the VRAM estimate left out an encoder of 5-48 GB that the loader loads.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from modelsafe.registry.inspect import InspectReport, inspect_path
from modelsafe.testing import write_safetensors
from modelsafe.testing.layouts import base_models as bm
from modelsafe.testing.layouts import components as co
from modelsafe.testing.layouts import recent_models as rm
from modelsafe.testing.layouts.base_models import Specs


def _gemma2_2b(layers: int = 2, dtype: str = "BF16") -> Specs:
    """Gemma-2-2B (google/gemma-2-2b config: 2304 wide, 8 heads of 256, 4 KV heads, 9216 MLP)."""
    specs: Specs = [("model.embed_tokens.weight", dtype, (256000, 2304))]
    for i in range(layers):
        b = f"model.layers.{i}"
        specs += [
            (f"{b}.self_attn.q_proj.weight", dtype, (2048, 2304)),
            (f"{b}.self_attn.k_proj.weight", dtype, (1024, 2304)),
            (f"{b}.self_attn.v_proj.weight", dtype, (1024, 2304)),
            (f"{b}.self_attn.o_proj.weight", dtype, (2304, 2048)),
            (f"{b}.mlp.gate_proj.weight", dtype, (9216, 2304)),
            (f"{b}.mlp.up_proj.weight", dtype, (9216, 2304)),
            (f"{b}.mlp.down_proj.weight", dtype, (2304, 9216)),
        ]
        for norm in ("input", "post_attention", "pre_feedforward", "post_feedforward"):
            specs.append((f"{b}.{norm}_layernorm.weight", dtype, (2304,)))
    return [*specs, ("model.norm.weight", dtype, (2304,))]


def _aio(transformer: Specs, encoder_name: str, encoder: Specs) -> Specs:
    specs = bm.prefixed("model.diffusion_model.", transformer)
    specs += bm.prefixed("vae.", co.diffusers_vae(16, False, "BF16"))
    return specs + bm.prefixed(f"text_encoders.{encoder_name}.transformer.", encoder)


# name -> (transformer, ComfyUI encoder name, encoder, family)
CASES: dict[str, tuple[Callable[[], Specs], str, Callable[[], Specs], str]] = {
    "wan21_1_3b_aio": (
        lambda: rm.wan_transformer("t2v-1.3b"),
        "umt5xxl",
        co.umt5xxl,
        "wan",
    ),
    "netayume_lumina_aio": (lambda: rm.lumina2("original"), "gemma2_2b", _gemma2_2b, "lumina2"),
    "qwen_image_aio": (
        lambda: bm.diffusers_denoiser("qwen-image", "BF16"),
        "qwen25_7b",
        lambda: co.llm_text_encoder("qwen2.5_vl_7b", 2),
        "qwen-image",
    ),
    "z_image_turbo_aio": (
        lambda: bm.z_image_original(bm.diffusers_denoiser("z-image", "BF16")),
        "qwen3_4b",
        lambda: co.llm_text_encoder("qwen3_4b", 2),
        "z-image",
    ),
    "flux2_dev_aio": (
        lambda: rm.flux2_bfl("dev"),
        "mistral3_24b",
        lambda: co.llm_text_encoder("mistral_small_3_24b", 2),
        "flux2",
    ),
}


def _inspect(tmp_path: Path, name: str) -> tuple[InspectReport, str, str]:
    transformer, encoder_name, encoder, family = CASES[name]
    specs = _aio(transformer(), encoder_name, encoder())
    path = write_safetensors(tmp_path / f"{name}.safetensors", specs, data="sparse")
    return inspect_path(path), encoder_name, family


@pytest.mark.parametrize("name", sorted(CASES))
def test_bundled_llm_encoder_counts_in_vram(tmp_path: Path, name: str) -> None:
    report, encoder_name, family = _inspect(tmp_path, name)
    assert (report.family, report.kind) == (family, "checkpoint"), report.evidence
    vram = report.vram
    assert f"text_encoder.{encoder_name}" in vram["components"], list(vram["components"])
    assert "not_loaded_bytes" not in vram
    # everything in the bf16 file is loaded: native bytes are the file's weight bytes
    assert vram["native"] == report.weight_bytes


@pytest.mark.parametrize("name", sorted(CASES))
def test_bundled_llm_encoder_is_a_component_present(tmp_path: Path, name: str) -> None:
    report, _, _ = _inspect(tmp_path, name)
    assert "text_encoder" in report.facts["components_present"]
