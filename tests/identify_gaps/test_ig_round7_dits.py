"""Identification round 7: well-known DiTs of no family modelsafe identifies.

HunyuanDiT was taken for Wan (its diffusers ``blocks.N.attn1``/``attn2`` names matched two of
Wan's three anchors) and Lumina-Next for Lumina 2 (it shares ``time_caption_embed``); LTX-Video,
CogVideoX, Mochi, Cosmos-Predict2, AuraFlow and PixArt in diffusers naming were ``unknown/unknown``
("no detector recognised this layout"). Each is now an ``unknown`` transformer (a checkpoint with
its VAE inside) with ``facts.architecture`` and the reason, never a family it resembles.
Diffusers layouts are the model classes built on the meta device (released configs); original
names are those of diffusers' conversion scripts and ComfyUI's model detection.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelsafe.registry.inspect import inspect_path
from modelsafe.testing import write_safetensors
from modelsafe.testing.layouts import base_models as bm
from modelsafe.testing.layouts import components as co
from modelsafe.testing.layouts.base_models import Specs

# Tencent-Hunyuan/HunyuanDiT-v1.2-Diffusers transformer/config.json
_HUNYUAN_DIT = {
    "num_attention_heads": 16,
    "attention_head_dim": 88,
    "in_channels": 4,
    "patch_size": 2,
    "sample_size": 128,
    "hidden_size": 1408,
    "num_layers": 40,
    "mlp_ratio": 4.3637,
    "learn_sigma": True,
    "cross_attention_dim": 1024,
    "cross_attention_dim_t5": 2048,
    "pooled_projection_dim": 1024,
    "text_len": 77,
    "text_len_t5": 256,
    "use_style_cond_and_image_meta_size": False,
}
# Alpha-VLLM/Lumina-Next-SFT-diffusers transformer/config.json
_LUMINA_NEXT = {
    "sample_size": 128,
    "patch_size": 2,
    "in_channels": 4,
    "hidden_size": 2304,
    "num_layers": 24,
    "num_attention_heads": 32,
    "num_kv_heads": 8,
    "multiple_of": 256,
    "norm_eps": 1e-5,
    "learn_sigma": True,
    "qk_norm": True,
    "cross_attention_dim": 2048,
    "scaling_factor": 1.0,
}
# nvidia/Cosmos-Predict2-2B-Text2Image transformer/config.json (what differs from the defaults)
_COSMOS_2B = {
    "num_layers": 28,
    "num_attention_heads": 16,
    "attention_head_dim": 128,
    "text_embed_dim": 1024,
    "extra_pos_embed_type": None,
    "rope_scale": (1.0, 4.0, 4.0),
}
# PixArt-alpha/PixArt-Sigma-XL-2-1024-MS transformer/config.json
_PIXART_SIGMA = {
    "sample_size": 128,
    "num_layers": 28,
    "caption_channels": 4096,
    "cross_attention_dim": 1152,
    "attention_head_dim": 72,
    "num_attention_heads": 16,
    "in_channels": 4,
    "out_channels": 8,
    "norm_type": "ada_norm_single",
    "use_additional_conditions": False,
}
# diffusers scripts/convert_ltx_to_diffusers.py: original name -> diffusers name
_LTX_RENAMES = {"patchify_proj": "proj_in", "adaln_single": "time_embed", "q_norm": "norm_q"}


def _diffusers(cls: str, config: dict[str, Any] | None = None) -> Callable[[], Specs]:
    return lambda: co.meta_state_dict(cls, config or {}, "BF16")


def _ltx_original() -> Specs:
    """The LTX-Video transformer as Lightricks' files name it (``patchify_proj``,
    ``adaln_single``, ``q_norm``/``k_norm``)."""
    out: Specs = []
    for name, dtype, shape in co.meta_state_dict("LTXVideoTransformer3DModel", {}, "BF16"):
        for original, renamed in _LTX_RENAMES.items():
            name = name.replace(renamed, original)
        out.append((name.replace("norm_k", "k_norm"), dtype, shape))
    return out


def _ltx_checkpoint() -> Specs:
    """ltx-video-2b-v0.9.safetensors: the transformer under ``model.diffusion_model.`` and the
    video VAE under ``vae.`` in one file."""
    vae = co.meta_state_dict("AutoencoderKLLTXVideo", {}, "BF16")
    return bm.prefixed("model.diffusion_model.", _ltx_original()) + bm.prefixed("vae.", vae)


def _original(specs: dict[str, tuple[int, ...]]) -> Callable[[], Specs]:
    """An original-naming file's tensors that tell it (names and shapes of the release)."""
    return lambda: [(name, "BF16", shape) for name, shape in specs.items()]


# (build, kind, architecture, a phrase the evidence must hold, width)
CASES: dict[str, tuple[Callable[[], Specs], str, str, str, int]] = {
    "hunyuan_dit_v1_2_diffusers": (
        _diffusers("HunyuanDiT2DModel", _HUNYUAN_DIT),
        "transformer",
        "hunyuan-dit",
        "HunyuanDiT",
        1408,
    ),
    "lumina_next_sft_diffusers": (
        _diffusers("LuminaNextDiT2DModel", _LUMINA_NEXT),
        "transformer",
        "lumina-next",
        "not Lumina Image 2.0",
        2304,
    ),
    "ltx_video_diffusers": (
        _diffusers("LTXVideoTransformer3DModel"),
        "transformer",
        "ltx-video",
        "LTX-Video",
        2048,
    ),
    "ltx_video_original": (_ltx_original, "transformer", "ltx-video", "patchify_proj", 2048),
    "ltx_video_2b_checkpoint": (
        _ltx_checkpoint,
        "checkpoint",
        "ltx-video",
        "with vae beside it",
        2048,
    ),
    "ltx_2_diffusers": (
        _diffusers("LTX2VideoTransformer3DModel"),
        "transformer",
        "ltx-2",
        "audio_proj_in.weight",
        4096,
    ),
    "cogvideox_2b_diffusers": (
        _diffusers("CogVideoXTransformer3DModel"),
        "transformer",
        "cogvideox",
        "CogVideoX",
        1920,
    ),
    "cogvideox_5b_diffusers": (
        _diffusers(
            "CogVideoXTransformer3DModel",
            {"num_attention_heads": 48, "num_layers": 42, "use_rotary_positional_embeddings": True},
        ),
        "transformer",
        "cogvideox",
        "42 blocks",
        3072,
    ),
    "mochi_diffusers": (
        _diffusers("MochiTransformer3DModel"),
        "transformer",
        "mochi",
        "Mochi 1",
        3072,
    ),
    "cosmos_predict2_2b_diffusers": (
        _diffusers("CosmosTransformer3DModel", _COSMOS_2B),
        "transformer",
        "cosmos-predict2",
        "Cosmos-Predict2",
        2048,
    ),
    "cosmos_predict1_7b_diffusers": (
        _diffusers("CosmosTransformer3DModel", {"extra_pos_embed_type": "learnable"}),
        "transformer",
        "cosmos-predict1",
        "learnable_pos_embed.pos_emb_t",
        4096,
    ),
    "auraflow_diffusers": (
        _diffusers("AuraFlowTransformer2DModel", {"pos_embed_max_size": 9216}),
        "transformer",
        "auraflow",
        "AuraFlow",
        3072,
    ),
    "pixart_sigma_diffusers": (
        _diffusers("PixArtTransformer2DModel", _PIXART_SIGMA),
        "transformer",
        "pixart",
        "PixArt-α/Σ",
        1152,
    ),
    # original names (diffusers' conversion scripts, ComfyUI's model_detection.py)
    "hunyuan_dit_original": (
        _original(
            {
                "pooler.positional_embedding": (257, 2048),
                "mlp_t5.0.weight": (8192, 2048),
                "blocks.0.attn1.Wqkv.weight": (4224, 1408),
                "x_embedder.proj.weight": (1408, 4, 2, 2),
            }
        ),
        "transformer",
        "hunyuan-dit",
        "mlp_t5.0.weight",
        1408,
    ),
    "mochi_original": (
        _original(
            {
                "t5_yproj.weight": (1536, 4096),
                "t5_y_embedder.to_kv.weight": (8192, 4096),
                "blocks.0.attn.qkv_x.weight": (9216, 3072),
                "x_embedder.proj.weight": (3072, 12, 2, 2),
            }
        ),
        "transformer",
        "mochi",
        "t5_yproj.weight",
        3072,
    ),
    "auraflow_original": (
        _original(
            {
                "model.cond_seq_linear.weight": (3072, 2048),
                "model.init_x_linear.weight": (3072, 16),
                "model.double_layers.0.attn.w1q.weight": (3072, 3072),
            }
        ),
        "transformer",
        "auraflow",
        "model.init_x_linear.weight has shape [3072, 16]",
        3072,
    ),
    "cosmos_predict2_original": (
        _original(
            {
                "net.t_embedding_norm.weight": (2048,),
                "net.blocks.0.adaln_modulation_self_attn.1.weight": (256, 2048),
                "net.x_embedder.proj.1.weight": (2048, 68),
            }
        ),
        "transformer",
        "cosmos-predict2",
        "x_embedder.proj.1.weight",
        2048,
    ),
    "lumina_next_original": (
        _original(
            {
                "cap_embedder.1.weight": (1024, 2048),
                "layers.0.attention.wk_y.weight": (576, 2048),
                "x_embedder.weight": (2304, 16),
            }
        ),
        "transformer",
        "lumina-next",
        "layers.0.attention.wk_y.weight",
        2304,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_well_known_dits_are_unknown_transformers_with_their_architecture(
    tmp_path: Path, name: str
) -> None:
    build, kind, architecture, says, width = CASES[name]
    path = write_safetensors(tmp_path / f"{name}.safetensors", build(), data="sparse")
    report = inspect_path(path)
    assert (report.family, report.kind, report.confidence) == ("unknown", kind, 0.6), (
        report.evidence
    )
    assert report.facts["architecture"] == architecture
    assert report.facts["hidden_size"] == width
    evidence = " | ".join(report.evidence)
    assert says in evidence and "no family modelsafe identifies" in evidence
    assert not report.candidates, [c.family for c in report.candidates]


def test_hunyuan_dit_pipeline_folder_is_not_wan(tmp_path: Path) -> None:
    """Tencent-Hunyuan/HunyuanDiT-v1.2-Diffusers: ``HunyuanDiTPipeline`` with a HunyuanDiT2DModel
    was ``wan/pipeline`` (so resolve called it a Wan transformer)."""
    root = tmp_path / "HunyuanDiT-v1.2-Diffusers"
    (root / "transformer").mkdir(parents=True)
    (root / "scheduler").mkdir()
    index = {
        "_class_name": "HunyuanDiTPipeline",
        "_diffusers_version": "0.28.1",
        "transformer": ["diffusers", "HunyuanDiT2DModel"],
        "scheduler": ["diffusers", "DDPMScheduler"],
    }
    (root / "model_index.json").write_text(json.dumps(index), encoding="utf-8")
    config = {"_class_name": "HunyuanDiT2DModel", **_HUNYUAN_DIT}
    (root / "transformer" / "config.json").write_text(json.dumps(config), encoding="utf-8")
    scheduler = {"_class_name": "DDPMScheduler", "prediction_type": "v_prediction"}
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler), "utf-8")
    specs = co.meta_state_dict("HunyuanDiT2DModel", _HUNYUAN_DIT, "F16")
    write_safetensors(root / "transformer" / "diffusion_pytorch_model.safetensors", specs)
    report = inspect_path(root)
    assert (report.family, report.kind, report.confidence) == ("unknown", "pipeline", 0.6)
    assert report.facts["architecture"] == "hunyuan-dit"
    assert "wan" not in {c.family for c in report.candidates}
