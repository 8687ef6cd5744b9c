"""Which text encoder a LoRA key names (registry.detect.lora_keys) and what a text-encoder LoRA
is for (lora_probe): identity first (T5 blocks, ComfyUI's text_encoders.<name>., kohya's
lora_te3_), position only after; older diffusers <module>_lora keys read as diffusers reads them."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelsafe.registry.detect.lora_keys import group_modules, parse_key, text_encoder_kind
from modelsafe.registry.detect.lora_probe import analyse_lora
from modelsafe.testing import write_safetensors
from modelsafe.testing.layouts import adapters as ad
from modelsafe.types import Candidate, TensorIndex, TensorInfo

T5Q = "encoder.block.0.layer.0.SelfAttention.q"
CLIPQ = "text_model.encoder.layers.0.self_attn.q_proj"


@pytest.mark.parametrize(
    ("name", "target", "encoder", "kind"),
    [
        (f"lora_te3_{T5Q.replace('.', '_')}.lora_down.weight", "text_encoder_3", "t5xxl", "t5"),
        (f"lora_te2_{T5Q.replace('.', '_')}.lora_down.weight", "text_encoder_2", "", "t5"),
        (f"lora_te1_{CLIPQ.replace('.', '_')}.lora_down.weight", "text_encoder", "", "clip"),
        (
            f"text_encoders.t5xxl.transformer.{T5Q}.lora_down.weight",
            "text_encoder_3",
            "t5xxl",
            "t5",
        ),
        (
            f"text_encoders.clip_l.transformer.{CLIPQ}.lora_up.weight",
            "text_encoder",
            "clip_l",
            "clip",
        ),
        (f"text_encoders.clip_g.transformer.{CLIPQ}.alpha", "text_encoder_2", "clip_g", "clip"),
        (f"text_encoders.clip_h.transformer.{CLIPQ}.alpha", "text_encoder", "openclip_h", "clip"),
        (f"text_encoder_2.{T5Q}.lora_A.weight", "text_encoder_2", "", "t5"),
        (f"text_encoder_3.{T5Q}.lora_A.weight", "text_encoder_3", "t5xxl", "t5"),
        (f"text_encoder_2.{CLIPQ}.lora_A.weight", "text_encoder_2", "", "clip"),
    ],
)
def test_key_names_its_encoder(name: str, target: str, encoder: str, kind: str) -> None:
    k = parse_key(name)
    assert k is not None and (k.target, k.encoder) == (target, encoder)
    assert text_encoder_kind(k.module) == kind
    (mod,) = group_modules([_info(name, (4, 64))]).modules
    assert mod.encoder == encoder and mod.encoder_kind() == kind


def test_text_encoder_kind_of_module_paths() -> None:
    assert text_encoder_kind("encoder.block.3.layer.1.DenseReluDense.wi_0") == "t5"
    assert text_encoder_kind("encoder_block_3_layer_1_DenseReluDense_wo") == "t5"
    assert text_encoder_kind("text_model.encoder.layers.11.mlp.fc1") == "clip"
    assert text_encoder_kind("transformer.resblocks.0.attn.in_proj") == "clip"
    assert text_encoder_kind("model.layers.0.self_attn.q_proj") == ""  # an LLM: not told


@pytest.mark.parametrize(
    ("name", "target", "module", "processor"),
    [
        (
            "text_encoder.text_model.encoder.layers.0.self_attn.to_q_lora.down.weight",
            "text_encoder",
            "text_model.encoder.layers.0.self_attn.q_proj",
            False,
        ),
        (
            "text_encoder.text_model.encoder.layers.0.self_attn.to_k_lora.up.weight",
            "text_encoder",
            "text_model.encoder.layers.0.self_attn.k_proj",
            False,
        ),
        (
            "text_encoder_2.text_model.encoder.layers.3.self_attn.to_v_lora.down.weight",
            "text_encoder_2",
            "text_model.encoder.layers.3.self_attn.v_proj",
            False,
        ),
        (
            "text_encoder.text_model.encoder.layers.0.self_attn.to_out_lora.down.weight",
            "text_encoder",
            "text_model.encoder.layers.0.self_attn.out_proj",
            False,
        ),
        (
            "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out_lora.down.weight",
            "denoiser",
            "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0",
            False,
        ),
        (
            "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k_lora.up.weight",
            "denoiser",
            "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k",
            False,
        ),
        (
            "unet.mid_block.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.up.weight",
            "denoiser",
            "mid_block.attentions.0.transformer_blocks.0.attn1.to_out.0",
            True,
        ),
    ],
)
def test_older_diffusers_suffixed_keys(
    name: str, target: str, module: str, processor: bool
) -> None:
    k = parse_key(name)
    assert k is not None
    assert (k.naming, k.target, k.module, k.dotted, k.processor) == (
        "diffusers",
        target,
        module,
        True,
        processor,
    )
    assert k.part in ("down", "up")


def _info(name: str, shape: tuple[int, ...]) -> TensorInfo:
    return TensorInfo(name, "F16", shape)


T5_MODULES = [
    (f"encoder.block.{i}.layer.0.SelfAttention.{p}", (4096, 4096)) for i in range(2) for p in "qkvo"
]


def _probe(tmp_path: Path, specs: list[tuple[str, str, tuple[int, ...]]]) -> Candidate:
    from modelsafe.registry.read import read_index

    index: TensorIndex = read_index(write_safetensors(tmp_path / "lora.safetensors", specs))
    (cand,) = analyse_lora(index, "test")
    return cand


@pytest.mark.parametrize("t5_prefix", ["lora_te3_", "lora_te2_"])
def test_flux_text_encoder_lora_is_not_read_as_sd1(tmp_path: Path, t5_prefix: str) -> None:
    """CLIP-L (768) + T5: the CLIP-L width alone would say SD1; the T5 layers say Flux/SD3."""
    specs = ad.kohya_lora([("lora_te1_", ad.clip_modules()), (t5_prefix, T5_MODULES)], rank=8)
    cand = _probe(tmp_path, specs)
    assert cand.family == "unknown"
    assert any("T5 layers = Flux.1 or SD3" in e for e in cand.evidence)


def test_sd1_and_sdxl_text_encoder_loras_unchanged(tmp_path: Path) -> None:
    sd1 = _probe(tmp_path, ad.kohya_lora([("lora_te_", ad.clip_modules())], rank=8))
    assert sd1.family == "sd1"
    sdxl = ad.kohya_lora(
        [("lora_te1_", ad.clip_modules()), ("lora_te2_", ad.clip_modules(1280, 32))], rank=8
    )
    assert _probe(tmp_path, sdxl).family == "sdxl"


def test_flux_lora_with_t5_keeps_its_transformer_family(tmp_path: Path) -> None:
    specs = ad.kohya_lora(
        [
            ("lora_unet_", ad.flux_modules("bfl")[:20]),
            ("lora_te1_", ad.clip_modules()),
            ("lora_te3_", T5_MODULES),
        ],
        rank=8,
    )
    cand = _probe(tmp_path, specs)
    assert cand.family == "flux1"
    assert cand.facts["targets"] == ["transformer", "text_encoder", "text_encoder_3"]
