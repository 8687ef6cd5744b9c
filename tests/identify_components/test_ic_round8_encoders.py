"""Text encoders in the layouts transformers saves them in, named as their ComfyUI twins are.

A VLM's language model beside its vision tower (transformers >= 4.52 ``model.language_model.*`` +
``model.visual.*``; the llava family's ``language_model.model.*`` + ``vision_tower.*``), the bare
base model (``embed_tokens``, ``layers.N``: Gemma2Model, Qwen3Model as diffusers save them), and
the T5/Gemma encoders of AuraFlow, HunyuanDiT and LTX-2. The VRAM components are named by what
each encoder is (UMT5-XXL is no T5-XXL) and a ComfyUI CLIP save is split per encoder. Each file is
written header-only from the transformers class built on the meta device with the released config.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from modelsafe.registry.inspect import inspect_path
from modelsafe.testing import write_safetensors
from modelsafe.testing.layouts import components as co

Shapes = dict[str, tuple[int, ...]]


def _state(cls_name: str, config_name: str, **config: Any) -> Shapes:
    """The state-dict shapes of a transformers class on the meta device (skip if missing)."""
    pytest.importorskip("transformers")
    pytest.importorskip("torch")
    specs = co.transformers_state_dict(cls_name, config_name, **config)
    if specs is None:
        pytest.skip(f"transformers has no {cls_name}")
    return {name: shape for name, _, shape in specs}


def _inspect(folder: Path, name: str, shapes: Shapes) -> Any:
    specs = [(k, "BF16", s) for k, s in shapes.items()]
    return inspect_path(write_safetensors(folder / f"{name}.safetensors", specs, data="sparse"))


def _qwen25vl_7b() -> Shapes:
    # Qwen/Qwen2.5-VL-7B-Instruct config.json (text 3584 x 28, vision depth 32)
    text = dict(
        vocab_size=152064,
        hidden_size=3584,
        num_hidden_layers=28,
        intermediate_size=18944,
        num_attention_heads=28,
        num_key_value_heads=4,
    )
    vision = dict(depth=32, hidden_size=1280, out_hidden_size=3584, intermediate_size=3420)
    return _state(
        "Qwen2_5_VLForConditionalGeneration",
        "Qwen2_5_VLConfig",
        text_config=text,
        vision_config=vision,
        **text,
    )


def _llava_llama3_8b() -> Shapes:
    # xtuner/llava-llama-3-8b-v1_1-transformers (HunyuanVideo's text encoder)
    return _state(
        "LlavaForConditionalGeneration",
        "LlavaConfig",
        text_config=dict(
            model_type="llama",
            vocab_size=128320,
            hidden_size=4096,
            num_hidden_layers=32,
            intermediate_size=14336,
            num_attention_heads=32,
            num_key_value_heads=8,
        ),
        vision_config=dict(
            model_type="clip_vision_model",
            hidden_size=1024,
            num_hidden_layers=24,
            intermediate_size=4096,
            num_attention_heads=16,
            image_size=336,
            patch_size=14,
        ),
    )


def _legacy_llava(shapes: Shapes) -> Shapes:
    """The same weights in the llava family's layout before transformers 4.52."""

    def old(name: str) -> str:
        if name.startswith("model.language_model."):
            return "language_model.model." + name[len("model.language_model.") :]
        if name.startswith("lm_head."):
            return "language_model." + name
        return re.sub(r"^model\.", "", name)

    return {old(k): v for k, v in shapes.items()}


def test_vlm_language_model_in_transformers_4_52_layout_is_named(tmp_path: Path) -> None:
    shapes = _qwen25vl_7b()
    assert any(k.startswith("model.language_model.layers.") for k in shapes)
    assert any(k.startswith("model.visual.") for k in shapes)
    report = _inspect(tmp_path, "qwen_2.5_vl_7b", shapes)
    assert (report.kind, report.variant) == ("text_encoder", "qwen2.5_vl_7b"), report.evidence
    assert report.facts["key_prefix"] == "model.language_model."
    assert "qwen-image" in report.facts["used_by"]
    assert any("model.visual.*" in e and "vision-language" in e for e in report.evidence)


def test_llava_language_model_beside_its_vision_tower_is_named(tmp_path: Path) -> None:
    # The vision tower holds 42% of the tensors but 4% of the bytes: it does not make the file
    # something other than the language model's.
    shapes = _legacy_llava(_llava_llama3_8b())
    assert any(k.startswith("vision_tower.") for k in shapes)
    report = _inspect(tmp_path, "llava_llama3_legacy", shapes)
    assert (report.kind, report.variant) == ("text_encoder", "llava_llama3_8b"), report.evidence
    assert report.facts["key_prefix"] == "language_model.model."
    assert report.facts["used_by"] == ["hunyuan-video"]
    assert report.vram["components"].keys() == {"text_encoder.llava_llama3_8b"}


@pytest.mark.parametrize(
    ("cls", "config", "variant", "dims"),
    [
        # Lumina 2 / SANA diffusers text_encoder (google/gemma-2-2b)
        (
            "Gemma2Model",
            "Gemma2Config",
            "gemma2_2b",
            dict(
                vocab_size=256000,
                hidden_size=2304,
                num_hidden_layers=26,
                intermediate_size=9216,
                num_attention_heads=8,
                num_key_value_heads=4,
                head_dim=256,
            ),
        ),
        # Z-Image diffusers text_encoder (Qwen/Qwen3-4B)
        (
            "Qwen3Model",
            "Qwen3Config",
            "qwen3_4b",
            dict(
                vocab_size=151936,
                hidden_size=2560,
                num_hidden_layers=36,
                intermediate_size=9728,
                num_attention_heads=32,
                num_key_value_heads=8,
                head_dim=128,
            ),
        ),
    ],
)
def test_base_model_without_model_prefix_is_named(
    tmp_path: Path, cls: str, config: str, variant: str, dims: dict[str, int]
) -> None:
    shapes = _state(cls, config, **dims)
    assert "embed_tokens.weight" in shapes and "layers.0.self_attn.q_proj.weight" in shapes
    report = _inspect(tmp_path, variant, shapes)
    assert (report.kind, report.variant) == ("text_encoder", variant), report.evidence
    assert "key_prefix" not in report.facts


@pytest.mark.parametrize(
    ("cls", "config", "variant", "used_by", "dims"),
    [
        # EleutherAI/pile-t5-xl as AuraFlow's text_encoder (UMT5EncoderModel)
        (
            "UMT5EncoderModel",
            "UMT5Config",
            "pile_t5xl",
            ["auraflow"],
            dict(vocab_size=32128, d_model=2048, d_kv=64, d_ff=5120, num_layers=24, num_heads=32),
        ),
        # HunyuanDiT's text_encoder_2 (mT5-XL)
        (
            "MT5EncoderModel",
            "MT5Config",
            "mt5_xl",
            ["hunyuan-dit"],
            dict(vocab_size=250112, d_model=2048, d_kv=64, d_ff=5120, num_layers=24, num_heads=32),
        ),
        # LTX-2's text encoder (google/gemma-3-12b-it text_config)
        (
            "Gemma3ForCausalLM",
            "Gemma3TextConfig",
            "gemma3_12b",
            ["ltx-2"],
            dict(
                vocab_size=262208,
                hidden_size=3840,
                num_hidden_layers=48,
                intermediate_size=15360,
                num_attention_heads=16,
                num_key_value_heads=8,
                head_dim=256,
            ),
        ),
    ],
)
def test_encoders_of_detected_families_get_their_variant(
    tmp_path: Path, cls: str, config: str, variant: str, used_by: list[str], dims: dict[str, int]
) -> None:
    report = _inspect(tmp_path, variant, _state(cls, config, **dims))
    assert (report.kind, report.variant) == ("text_encoder", variant), report.evidence
    assert report.facts["used_by"] == used_by
    assert report.vram["components"].keys() == {f"text_encoder.{variant}"}


def test_t5_v11_xl_is_not_taken_for_pile_t5_or_mt5(tmp_path: Path) -> None:
    dims = dict(vocab_size=32128, d_model=2048, d_kv=64, d_ff=5120, num_layers=24, num_heads=32)
    report = _inspect(tmp_path, "t5_v1_1_xl", _state("T5EncoderModel", "T5Config", **dims))
    assert report.variant == "t5_xl", report.evidence


def test_vram_components_are_named_by_what_the_encoder_is(tmp_path: Path) -> None:
    umt5 = inspect_path(
        write_safetensors(tmp_path / "umt5.safetensors", co.umt5xxl(), data="sparse")
    )
    assert umt5.variant == "umt5xxl"
    assert umt5.vram["components"].keys() == {"text_encoder.umt5xxl"}  # not t5xxl, by width
    # T5-base is as wide as CLIP-L: it is not named clip_l
    dims = dict(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=2, num_heads=12)
    t5_base = _inspect(tmp_path, "t5_base", _state("T5EncoderModel", "T5Config", **dims))
    assert t5_base.vram["components"].keys() == {"text_encoder.unknown"}


def test_comfy_clip_save_is_split_per_encoder(tmp_path: Path) -> None:
    specs = co.multi_text_encoders(("clip_l", "t5xxl"), "{}.transformer.")
    report = inspect_path(write_safetensors(tmp_path / "clip.safetensors", specs, data="sparse"))
    assert report.variant == "clip_l+t5xxl"
    comps = report.vram["components"]
    assert comps.keys() == {"text_encoder.clip_l", "text_encoder.t5xxl"}
    assert comps["text_encoder.clip_l"]["parameters"] < 200_000_000  # CLIP-L alone, ~123M
    assert comps["text_encoder.t5xxl"]["parameters"] > 4_000_000_000
