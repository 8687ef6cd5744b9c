"""Weight bytes of the estimator against the parameter bytes of real (tiny) diffusers models,
and the estimator hook: a third-party plugin overrides the built-in one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modelsafe.registry.read import read_index
from modelsafe.registry.vram import estimate_component_vram, estimate_weights


def _save(model: Any, path: Path, dtype: Any) -> tuple[Path, dict[str, int]]:
    from safetensors.torch import save_file

    model = model.to(dtype)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path))
    n = sum(v.numel() for v in state.values())
    return path, {
        "native": sum(v.numel() * v.element_size() for v in state.values()),
        "fp32": 4 * n,
        "fp16": 2 * n,
        "bf16": 2 * n,
    }


def _tiny_models() -> dict[str, Any]:
    import diffusers
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=12,
        attention_head_dim=2,
        norm_num_groups=4,
    )
    vae = diffusers.AutoencoderKL(
        block_out_channels=(8, 16),
        norm_num_groups=4,
        latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
    )
    te = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=12,
            intermediate_size=24,
            num_hidden_layers=2,
            num_attention_heads=2,
            vocab_size=100,
            max_position_embeddings=16,
        )
    )
    return {"unet": unet, "vae": vae, "text_encoder": te}


@pytest.mark.parametrize("dtype_name", ["float32", "float16", "bfloat16"])
def test_weight_bytes_equal_parameter_bytes(pm: Any, tmp_path: Path, dtype_name: str) -> None:
    import torch

    dtype = getattr(torch, dtype_name)
    for kind, model in _tiny_models().items():
        path, want = _save(model, tmp_path / f"{kind}.safetensors", dtype)
        got = estimate_weights(read_index(path), "sd1", kind, {})
        for key, value in want.items():
            assert got[key] == value, (kind, key)
        (comp,) = got["components"].values()
        assert comp["parameters"] == sum(p.numel() for p in model.state_dict().values())


def test_checkpoint_split_per_component(pm: Any, tmp_path: Path) -> None:
    from modelsafe.testing import write_safetensors

    specs = [
        ("model.diffusion_model.input_blocks.0.0.weight", "F16", (320, 4, 3, 3)),
        ("first_stage_model.decoder.conv_in.weight", "F32", (512, 4, 3, 3)),
        (
            "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
            "F16",
            (49408, 768),
        ),
        ("model_ema.decay", "F32", ()),
    ]
    got = estimate_weights(
        read_index(write_safetensors(tmp_path / "c.safetensors", specs)), "sd1", "checkpoint", {}
    )
    assert set(got["components"]) == {"unet", "vae", "text_encoder.clip_l"}
    assert got["components"]["vae"]["native"] == 512 * 4 * 9 * 4
    assert got["components"]["vae"]["fp16"] == 512 * 4 * 9 * 2
    assert (
        got["components"]["text_encoder.clip_l"]["fp8"] == 49408 * 768 * 2
    )  # embeddings stay 16-bit
    assert got["components"]["unet"]["fp8"] == 320 * 4 * 9
    assert got["not_loaded_bytes"] == 4


def test_third_party_estimator_wins(tmp_path: Path) -> None:
    from modelsafe.plugins.hookspecs import hookimpl
    from modelsafe.testing import fresh_plugin_manager, write_safetensors

    class Mine:
        __name__ = "my_estimator"

        @hookimpl
        def modelsafe_estimate_vram(self, index: Any, family: str, kind: str, facts: Any) -> Any:
            return {"native": 1, "note": "mine"}

    path = write_safetensors(tmp_path / "x.safetensors", [("w", "F16", (4, 4))])
    with fresh_plugin_manager(Mine()):
        got = estimate_component_vram(read_index(path), "sd1", "unet", {})
    assert got["note"] == "mine" and got["estimator"] == "my_estimator"
    with fresh_plugin_manager():
        assert estimate_component_vram(read_index(path), "sd1", "unet", {})["fp16"] == 32


def test_t5xxl_in_fp8_keeps_wo_and_embeddings_in_16_bits(tmp_path: Path) -> None:
    """What the backend's fp8 storage really leaves in 16 bits (tests/generate/
    test_generate_fp8.py): T5's ``wo`` (transformers keeps it in full precision), the token
    embedding, the relative attention bias and the layer norms."""
    from math import prod

    from modelsafe.testing import write_safetensors
    from modelsafe.testing.layouts.components import t5xxl

    specs = t5xxl()
    path = write_safetensors(tmp_path / "t5.safetensors", specs)
    got = estimate_weights(read_index(path), "any", "text_encoder", {})
    (sizes,) = got["components"].values()
    one_byte = (".q.weight", ".k.weight", ".v.weight", ".o.weight", ".wi_0.weight", ".wi_1.weight")
    expected = sum(prod(shape) * (1 if name.endswith(one_byte) else 2) for name, _, shape in specs)
    wo = sum(prod(shape) for name, _, shape in specs if name.endswith(".wo.weight"))
    assert sizes["fp8"] == expected
    # loaded in fp16, transformers keeps wo in fp32 (bf16: bf16)
    params = sum(prod(shape) for _, _, shape in specs)
    assert sizes["fp16"] == 2 * params + 2 * wo and sizes["bf16"] == 2 * params
    assert wo > sizes["parameters"] // 5  # the share the old formula put in fp8 by mistake
