"""Identification round 8b: every model class of diffusers, built on the meta device.

Wrong families: KVAE's video VAE was HunyuanVideo's (0.85), JoyImage-Edit was Wan (no Wan size),
Kandinsky 6's super-resolution transformer Kandinsky 5, ModelScope's text-to-video UNet sd2
(0.95), SVD's temporal-decoder VAE sd1's, an SD1 UNet with AnimateDiff's motion modules and
AudioLDM 2's UNet (two cross-attention widths) plain SD UNets. Many image, video and audio
generators were "no detector recognised this layout" or a low flux1 guess. Each is now an
``unknown`` model with ``facts.architecture`` naming it; Wan's own derivatives stay ``wan``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modelsafe.registry.inspect import InspectReport, inspect_path
from modelsafe.testing import write_safetensors


def _inspect(tmp_path: Path, cls: str, config: dict[str, Any] | None = None) -> InspectReport:
    """The report of diffusers ``cls`` (``config`` on its defaults), a header-only file."""
    diffusers = pytest.importorskip("diffusers")
    pytest.importorskip("torch")
    if not hasattr(diffusers, cls):
        pytest.skip(f"{cls} is not in the installed diffusers")
    from modelsafe.testing.layouts.components import meta_state_dict

    specs = meta_state_dict(cls, config or {}, "BF16")
    path = write_safetensors(tmp_path / f"{cls}.safetensors", specs, data="sparse")
    return inspect_path(path)


def _named(report: InspectReport, kind: str, architecture: str) -> None:
    assert (report.family, report.kind) == ("unknown", kind), report.evidence
    assert report.facts.get("architecture") == architecture, report.evidence


@pytest.mark.parametrize(
    ("cls", "config", "architecture", "said"),
    [
        ("AutoencoderKLKVAEVideo", {}, "kvae-video", "KVAE video VAE"),
        (
            "AutoencoderKLTemporalDecoder",
            {"block_out_channels": [128, 256, 512, 512], "layers_per_block": 2},
            "svd",
            "Stable Video Diffusion's VAE",
        ),
        ("AutoencoderKLQwenImage21", {}, "qwen-image-2.1", "Qwen-Image 2.1's image VAE"),
        ("AutoencoderOobleck", {}, "oobleck", "audio model's VAE"),
        ("AutoencoderKLKVAEAudio", {}, "kvae-audio", "audio model's VAE"),
        ("AutoencoderKLLTX2Audio", {}, "ltx-2-audio", "audio model's VAE"),
        ("AutoencoderKLMiniMaxH3Audio", {}, "minimax-h3-audio", "audio model's VAE"),
    ],
)
def test_video_and_audio_vaes_are_named(
    tmp_path: Path, cls: str, config: dict[str, Any], architecture: str, said: str
) -> None:
    report = _inspect(tmp_path, cls, config)
    _named(report, "vae", architecture)
    assert said in " | ".join(report.evidence)


# Real sizes: ModelScope text-to-video (OpenCLIP-H 1024), AnimateDiff over SD1 (CLIP-L 768),
# AudioLDM 2 (cvssp/audioldm2: 8 latent channels, GPT-2 768 + Flan-T5 1024 cross-attentions).
_AUDIOLDM2 = {
    "in_channels": 8,
    "out_channels": 8,
    "block_out_channels": [128, 256, 384, 640],
    "cross_attention_dim": [[768, 1024]] * 4,
}


@pytest.mark.parametrize(
    ("cls", "config", "architecture", "said"),
    [
        ("UNet3DConditionModel", {}, "modelscope-t2v", "ModelScope text-to-video"),
        ("UNetMotionModel", {"cross_attention_dim": 768}, "animatediff", "AnimateDiff motion"),
        ("UNetSpatioTemporalConditionModel", {}, "svd", "Stable Video Diffusion"),
        ("AudioLDM2UNet2DConditionModel", _AUDIOLDM2, "audioldm2", "text-to-audio"),
    ],
)
def test_video_and_audio_unets_are_no_sd_unet(
    tmp_path: Path, cls: str, config: dict[str, Any], architecture: str, said: str
) -> None:
    report = _inspect(tmp_path, cls, config)
    _named(report, "unet", architecture)
    assert report.confidence >= 0.6
    assert said in " | ".join(report.evidence)


_LAYERS = {"num_layers": 2}


@pytest.mark.parametrize(
    ("cls", "config", "architecture"),
    [
        ("JoyImageEditTransformer3DModel", {}, "joyimage-edit"),
        ("Kandinsky6SRTransformer3DModel", {}, "kandinsky6-sr"),
        ("Kandinsky6Transformer3DModel", {}, "kandinsky6"),
        ("Flux3Transformer2DModel", {}, "flux3"),
        ("QwenImage21Transformer2DModel", {}, "qwen-image-2.1"),
        ("Krea2Transformer2DModel", {}, "krea2"),
        ("Ideogram4Transformer2DModel", {}, "ideogram4"),
        ("GlmImageTransformer2DModel", {}, "glm-image"),
        ("CogView4Transformer2DModel", _LAYERS, "cogview"),
        ("CogView3PlusTransformer2DModel", _LAYERS, "cogview"),
        ("ErnieImageTransformer2DModel", {}, "ernie-image"),
        ("PRXTransformer2DModel", {}, "prx"),
        ("NucleusMoEImageTransformer2DModel", {}, "nucleus-moe-image"),
        ("MotifVideoTransformer3DModel", {}, "motif-video"),
        ("MiniMaxH3Transformer3DModel", {}, "minimax-h3"),
        ("WanAnimate2Transformer3DModel", {}, "wan-animate-2"),
        ("BriaTransformer2DModel", {}, "bria"),
        ("LongCatImageTransformer2DModel", {}, "longcat-image"),
        ("BriaFiboTransformer2DModel", {}, "bria-fibo"),
        ("BriaFibo2Transformer2DModel", {}, "bria-fibo-2"),
        ("OvisImageTransformer2DModel", {}, "ovis-image"),
        ("PixArtTransformer2DModel", {}, "pixart"),
        ("DiTTransformer2DModel", {}, "dit"),
        ("CosmosControlNetModel", {}, "cosmos-transfer"),
        ("AceStepTransformer1DModel", {}, "ace-step"),
        ("MiniMaxMusic3Transformer1DModel", {}, "minimax-music-3"),
    ],
)
def test_diffusers_dits_of_no_family_are_named(
    tmp_path: Path, cls: str, config: dict[str, Any], architecture: str
) -> None:
    report = _inspect(tmp_path, cls, config)
    _named(report, "transformer", architecture)
    assert not any(c["family"] == "flux1" for c in report.candidates), report.candidates


@pytest.mark.parametrize(
    "cls", ["WanTransformer3DModel", "SkyReelsV2Transformer3DModel", "ChronoEditTransformer3DModel"]
)
def test_wan_finetunes_with_wans_layout_stay_wan(tmp_path: Path, cls: str) -> None:
    report = _inspect(tmp_path, cls)
    assert (report.family, report.facts.get("architecture")) == ("wan", "wan"), report.evidence


def test_a_sana_controlnet_is_sanas(tmp_path: Path) -> None:
    """SANA's ControlNet (its first blocks + controlnet_blocks) was "no detector recognised"."""
    report = _inspect(tmp_path, "SanaControlNetModel")
    assert (report.family, report.kind) == ("sana", "controlnet"), report.evidence
    assert any("a SANA ControlNet" in e for e in report.evidence), report.evidence
