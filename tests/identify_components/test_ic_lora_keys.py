"""The one LoRA key reader (registry.detect.lora_keys): every naming, and the quick no-LoRA scan."""

from __future__ import annotations

import pytest

from modelsafe.registry.detect.lora_keys import (
    DELTA_PARTS,
    PARTS,
    group_modules,
    may_patch,
    parse_key,
)
from modelsafe.testing.layouts import adapters as ad
from modelsafe.testing.layouts import base_models as bm
from modelsafe.types import TensorInfo

Q = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"
QF = Q.replace(".", "_")


@pytest.mark.parametrize(
    ("name", "naming", "target", "module", "dotted", "part"),
    [
        (f"lora_unet_{QF}.lora_down.weight", "kohya", "denoiser", QF, False, "down"),
        (f"lycoris_{QF}.hada_w1_a", "kohya", "denoiser", QF, False, "hada_w1_a"),
        (
            "lora_te2_text_model_encoder_layers_0_mlp_fc1.alpha",
            "kohya",
            "text_encoder_2",
            "text_model_encoder_layers_0_mlp_fc1",
            False,
            "alpha",
        ),
        (f"lora_unet_{QF}.w_norm", "kohya", "denoiser", QF, False, "w_norm"),
        (f"unet.{Q}.lora_A.weight", "peft", "denoiser", Q, True, "down"),
        (f"unet.{Q}.lora_B.default.weight", "peft", "denoiser", Q, True, "up"),
        (
            "base_model.model.text_encoder.text_model.encoder.layers.0.mlp.fc1.lora_A.weight",
            "peft",
            "text_encoder",
            "text_model.encoder.layers.0.mlp.fc1",
            True,
            "down",
        ),
        (f"unet.{Q}.lora.down.weight", "diffusers", "denoiser", Q, True, "down"),
        (f"unet.{Q[:-5]}.processor.to_k_lora.up.weight", "diffusers", "denoiser", Q, True, "up"),
        (
            "transformer_blocks.0.attn1.processor.to_out_lora.down.weight",
            "diffusers",
            "denoiser",
            "transformer_blocks.0.attn1.to_out.0",
            True,
            "down",
        ),
        (
            "diffusion_model.input_blocks.1.1.proj_in.lora_down.weight",
            "comfy",
            "denoiser",
            "input_blocks.1.1.proj_in",
            True,
            "down",
        ),
        (
            "text_encoders.clip_l.transformer.text_model.encoder.layers.0.mlp.fc1.alpha",
            "comfy",
            "text_encoder",
            "text_model.encoder.layers.0.mlp.fc1",
            True,
            "alpha",
        ),
        (
            "double_blocks.0.img_attn.qkv.lora_B.weight",
            "peft",
            "denoiser",
            "double_blocks.0.img_attn.qkv",
            True,
            "up",
        ),
        (
            "single_blocks.0.linear1.a1.weight",
            "comfy",
            "denoiser",
            "single_blocks.0.linear1",
            True,
            "glora_a1",
        ),
    ],
)
def test_parse_key_every_naming(
    name: str, naming: str, target: str, module: str, dotted: bool, part: str
) -> None:
    k = parse_key(name)
    assert k is not None
    assert (k.naming, k.target, k.module, k.dotted, k.part) == (
        naming,
        target,
        module,
        dotted,
        part,
    )


@pytest.mark.parametrize(
    "name",
    [
        "model.diffusion_model.input_blocks.0.0.weight",
        "emb_params",
        "lora_te4_text_model_encoder_layers_0_mlp_fc1.lora_down.weight",
        "first_stage_model.decoder.conv_in.bias",
    ],
)
def test_no_lora_key(name: str) -> None:
    assert parse_key(name) is None


def _infos(specs: list[tuple[str, str, tuple[int, ...]]]) -> list[TensorInfo]:
    return [TensorInfo(name=n, dtype=d, shape=tuple(s)) for n, d, s in specs]


def test_modules_group_known_and_unknown_parts() -> None:
    names = [
        (f"lora_unet_{QF}.lora_down.weight", "F16", (4, 768)),
        (f"lora_unet_{QF}.lora_up.weight", "F16", (320, 4)),
        (f"lora_unet_{QF}.alpha", "F16", ()),
        (f"lora_unet_{QF}.odd_scale", "F16", (320,)),  # (a part no reader knows)
        ("emb_params", "F32", (2, 768)),
    ]
    layout = group_modules(_infos(names))
    (mod,) = layout.modules
    assert mod.keys == [n for n, _d, _s in names[:4]]
    assert set(mod.parts) == {"down", "up", "alpha"}
    assert mod.delta_shape() == (320, 768, False) and mod.in_features() == 768
    assert mod.adapter() == "lora" and mod.rank() == 4
    assert layout.unparsed == ["emb_params"]
    assert layout.foreign == [f"lora_unet_{QF}.odd_scale", "emb_params"]


def test_quick_scan_never_skips_a_patching_file() -> None:
    """may_patch is False only where no parsed module has a delta part."""
    sd1 = ad.sd1_unet_modules()
    loras = [
        ad.kohya_lora([("lora_unet_", sd1)], rank=4),
        ad.loha([("lora_unet_", sd1)]),
        ad.lokr([("lora_unet_", sd1)]),
        ad.comfy_lora(sd1, rank=4),
        ad.peft_lora([("unet.", sd1)], rank=4),
    ]
    for specs in loras:
        assert may_patch(n for n, _d, _s in specs)
    for stored, part in PARTS.items():
        name = f"lora_unet_{QF}.{stored}"
        has_delta = group_modules(_infos([(name, "F16", (4, 4))])).modules[0].has_delta()
        assert may_patch([name]) == has_delta == (part in DELTA_PARTS), stored
    checkpoints = [bm.unet_checkpoint("sd1"), bm.unet_checkpoint("sdxl"), bm.bfl_flux()]
    for specs in checkpoints:
        names = [n for n, _d, _s in specs]
        assert not may_patch(names)
        assert not any(m.has_delta() for m in group_modules(_infos(list(specs))).modules)
