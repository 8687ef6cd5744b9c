"""Stand-alone components: VAEs, text encoders and upscalers, from keys and shapes.

A component detector answers only for a file that *is* the component: its tensors must make up
nearly all of the file (:data:`MIN_COVERAGE`), so the VAE or text encoder inside a full checkpoint
is left to the base-model detectors.

Decisive facts (public layouts):

- VAE (LDM ``encoder.down.N.block`` / diffusers ``encoder.down_blocks.N.resnets``): latent channels
  are ``decoder.conv_in``'s input. 4 channels: the SD1/SD2 VAE and SDXL's retrained VAE share one
  layout, so shapes cannot tell them apart; 16 channels without ``quant_conv``: Flux's ``ae`` and
  the SD3/SD3.5 VAE share one layout too; 32 channels with a latent batch norm (``bn.*``): the
  FLUX.2 VAE. 5-D (3-D conv) weights: the Wan 2.1 VAE (16 channels; Qwen-Image's VAE, a
  fine-tune of it, has its layout: wan and qwen-image tie), the Wan 2.2 VAE (48); wrapped causal
  convs (``decoder.conv_in.conv.weight``): HunyuanVideo's VAE (16), CogVideoX's, LTX-Video's,
  Mochi's (no family of modelsafe's). A1111's VAE approximation (``conv1``..``conv8``, a
  live-preview decoder): variant ``approx``, the same 4-channel tie. What the file says breaks a
  tie (:mod:`~modelsafe.registry.detect.tie_break`: metadata, diffusers class, download sidecar).
- Text encoders: HF CLIP (``text_model.*``), OpenCLIP (``transformer.resblocks``), T5
  (``encoder.block.N.layer``, or Wan's own ``blocks.N.attn``/``ffn.gate.0``), decoder-only LLMs
  (``layers.N`` bare, under ``model.``, or a VLM's ``model.language_model.`` /
  ``language_model.model.`` beside its vision tower); width, depth and vocabulary name the
  variant (CLIP-L 768x12, OpenCLIP-H 1024x24, bigG 1280x32, T5-XXL 4096x24 vocab 32128, UMT5-XXL
  vocab 256384, mT5-XL and Pile-T5-XL 2048x24, Llama-3.1-8B, Qwen2.5-VL-7B, Qwen3-4B, Gemma-2-2B,
  Gemma-3-12B).
- Upscalers: ESRGAN/RRDB (old ``model.N``, BasicSR ``conv_first``/``body``/``conv_upN`` and
  ESRGAN-repository ``RRDB_trunk``/``trunk_conv``/``upconvN``/``HRconv`` naming), Real-ESRGAN
  compact (SRVGGNet ``body.N``), SwinIR; the scale is read from the upsampling layers (2x per
  ``conv_upN``/upconv, pixel-shuffle widths) and pixel-unshuffle input.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

from modelsafe.registry.detect.prefixes import KeyView, find_prefix, prefixes_present, shape_text
from modelsafe.registry.detect.tie_break import tied_scores
from modelsafe.types import Candidate, TensorIndex

# A component detector claims a file only when the component holds this share of its tensors.
MIN_COVERAGE = 0.9
_IGNORED_SUFFIXES = (".scale_weight", ".scale_input", "scaled_fp8", "position_ids")


# What LDM's VAE training leaves in a saved autoencoder: the LPIPSWithDiscriminator loss
# (``loss.logvar``, ``loss.perceptual_loss.*`` VGG16, ``loss.discriminator.*``) and the EMA
# counters. A1111, SD.Next and Forge drop exactly these when they load a VAE (``k[0:4] !=
# "loss"`` and ``vae_ignore_keys``), so they are no part of the file's other content.
VAE_TRAINING_LEFTOVERS = ("loss.", "model_ema.decay", "model_ema.num_updates")


def coverage(
    index: TensorIndex,
    prefix: str,
    inside: Iterable[str] = ("",),
    leftovers: tuple[str, ...] = (),
) -> float:
    """Share of the file's tensors (fp8 scale markers and ``leftovers`` prefixes aside) under
    ``prefix`` + ``inside``."""
    starts = tuple(prefix + s for s in inside)
    names = [
        n
        for n in index.names()
        if not n.endswith(_IGNORED_SUFFIXES) and not (leftovers and n.startswith(leftovers))
    ]
    if not names:
        return 0.0
    return sum(n.startswith(starts) for n in names) / len(names)


def _cand(
    family: str,
    kind: str,
    score: float,
    evidence: list[str],
    facts: dict[str, Any],
    detector: str,
    variant: str | None = None,
) -> Candidate:
    return Candidate(
        family=family,
        kind=kind,
        score=round(max(0.0, min(1.0, score)), 3),
        evidence=tuple(evidence),
        variant=variant,
        detector=detector,
        facts=facts,
    )


# ------------------------------------------------------------------------------------ VAE

_VAE_ANCHORS = ("decoder.conv_in.weight", "encoder.conv_in.weight", "decoder.conv_out.weight")
_WAN_ANCHORS = ("decoder.conv1.weight", "encoder.conv1.weight", "decoder.head.2.weight")
# The Wan VAE's RMS norms keep a ``gamma`` (diffusers AutoencoderKLWan / AutoencoderKLQwenImage);
# other 3-D VAEs with plain ``conv_in`` names (EasyAnimate's, Allegro's) have none.
_WAN_RMS_NORM = "decoder.mid_block.resnets.0.norm1.gamma"
_VAE_TIES: dict[int, tuple[tuple[str, ...], str]] = {
    4: (
        ("sd1", "sdxl"),
        "4-channel KL VAE: SD1 and SD2 use this VAE, and SDXL's retrained VAE has the same "
        "layout; shapes cannot tell SD from SDXL VAEs (the tie is real, not a guess)",
    ),
    16: (
        ("flux1", "sd3"),
        "16-channel KL VAE without quant_conv: Flux.1's ae (also used by Chroma, Z-Image, "
        "HiDream) and the SD3/SD3.5 VAE share this layout; shapes cannot tell them apart",
    ),
}


def vae(index: TensorIndex, detector: str) -> list[Candidate]:
    names = index.names()
    prefix = find_prefix(names, _VAE_ANCHORS)
    if prefix is not None:
        view = KeyView.of(index, prefix)
        if "decoder.conv_in.weight" in view and "encoder.conv_in.weight" in view:
            return _kl_vae(index, view, detector)
    prefix = find_prefix(names, _WAN_ANCHORS)
    if prefix is not None:
        view = KeyView.of(index, prefix)
        shape = view.shape("decoder.conv1.weight")
        if shape is not None and len(shape) == 5 and view.has_prefix("decoder.upsamples."):
            return _wan_vae(index, view, shape, detector)
    return (
        causal_video_vae(index, detector)
        or vae_approx(index, detector)
        or audio_vae(index, detector)
    )


def _kl_vae(index: TensorIndex, view: KeyView, detector: str) -> list[Candidate]:
    share = coverage(
        index,
        view.prefix,
        ("encoder.", "decoder.", "quant_conv.", "post_quant_conv."),
        tuple(view.prefix + x for x in VAE_TRAINING_LEFTOVERS),
    )
    if share < MIN_COVERAGE:
        return []  # the VAE inside a checkpoint
    conv_in = view.shape("decoder.conv_in.weight") or ()
    latent = conv_in[1] if len(conv_in) >= 2 else 0
    naming = "diffusers" if view.has_prefix("encoder.down_blocks.") else "ldm"
    quant = "quant_conv.weight" in view
    facts: dict[str, Any] = {
        "latent_channels": latent,
        "naming": naming,
        "quant_conv": quant,
        "key_prefix": view.prefix,
    }
    evidence = [
        f"{view.says('decoder.conv_in.weight')}: {latent} latent channels",
        f"encoder/decoder in {naming} naming"
        + (", with quant_conv/post_quant_conv" if quant else ", no quant_conv"),
    ]
    leftovers = sorted(
        n
        for n in index.names()
        if n.startswith(tuple(view.prefix + x for x in VAE_TRAINING_LEFTOVERS))
    )
    if leftovers:
        evidence.append(
            f"{len(leftovers)} training leftovers beside it (e.g. {leftovers[0]!r}: the "
            "LPIPS/discriminator loss or EMA counters), which VAE loaders drop"
        )
    temporal = next((m for m in _TEMPORAL_DECODER if m in view), None)
    if temporal is not None:
        facts["architecture"] = "svd"
        evidence.append(
            f"{view.says(temporal)}: a temporal decoder (3-D convs and time-mixing blocks over "
            "frames) = Stable Video Diffusion's VAE, not the SD image VAE its encoder matches"
        )
        return [_cand("unknown", "vae", 0.6, evidence, facts, detector)]
    if len(conv_in) == 5:
        facts["conv3d"] = True
        evidence.append("5-D conv weights: a video/3-D VAE")
        if _WAN_RMS_NORM not in view:
            evidence.append(
                f"no {view.full(_WAN_RMS_NORM)} (the Wan VAE's RMS norm): not the Wan VAE; a "
                "video model's VAE modelsafe does not know"
            )
            return [_cand("unknown", "vae", 0.5, evidence, facts, detector)]
        return _video_vae(index, latent, evidence, facts, detector)
    tie = _VAE_TIES.get(latent)
    if tie is None:
        return [_untied_kl_vae(view, latent, facts, evidence, detector)]
    families, why = tie
    evidence.append(why)
    facts["compatible_families"] = {
        4: ["sd1", "sd2", "sdxl", "sdxl_refiner"],
        16: ["flux1", "chroma", "sd3", "sd3.5", "z-image", "hidream", "lumina2"],
    }[latent]
    if latent == 16 and quant:
        evidence.append("note: quant_conv present, unusual for a 16-channel VAE")
    return _tied_vae(index, families, evidence, facts, detector)


# The temporal decoder of Stable Video Diffusion's VAE (diffusers AutoencoderKLTemporalDecoder,
# Stability's generative-models VideoDecoder): a last conv over frames no image VAE has.
_TEMPORAL_DECODER = ("decoder.time_conv_out.weight", "decoder.conv_out.time_mix_conv.weight")


def _tied_vae(
    index: TensorIndex,
    families: tuple[str, ...],
    evidence: list[str],
    facts: dict[str, Any],
    detector: str,
    variant: str | None = None,
    score: float = 0.9,
) -> list[Candidate]:
    """One VAE candidate per tied family; the family the file's metadata, diffusers class or
    sidecar names (:mod:`~modelsafe.registry.detect.tie_break`) ahead, even one of the
    ``compatible_families`` that is not tied (an SD2 VAE, Z-Image's ae)."""
    serves = facts.get("compatible_families") or families
    out = []
    for family, value, why in tied_scores(index, families, serves, score):
        ev = [*evidence, why] if why else list(evidence)
        out.append(_cand(family, "vae", value, ev, facts, detector, variant))
    return out


# AUTOMATIC1111's VAE approximation (modules/sd_vae_approx.py ``VAEApprox``; ``model.pt`` for
# SD1/SD2, ``vaeapprox-sdxl.pt`` for SDXL, in models/VAE-approx/): eight plain convs from the
# latent channels to 3 RGB channels, a live-preview decoder and not a VAE to decode with.
_APPROX_CONVS = 8
_APPROX_NAMES = frozenset(
    f"conv{i}.{p}" for i in range(1, _APPROX_CONVS + 1) for p in ("weight", "bias")
)


def vae_approx(index: TensorIndex, detector: str) -> list[Candidate]:
    shapes = {t.name: t.shape for t in index.tensors}
    if set(shapes) != _APPROX_NAMES:
        return []
    first, last = shapes["conv1.weight"], shapes[f"conv{_APPROX_CONVS}.weight"]
    if len(first) != 4 or len(last) != 4 or last[0] != 3:
        return []
    latent = first[1]
    facts: dict[str, Any] = {
        "latent_channels": latent,
        "architecture": "vae_approx",
        "preview_only": True,
    }
    evidence = [
        f"conv1.weight has shape {shape_text(first)} .. conv{_APPROX_CONVS}.weight "
        f"{shape_text(last)}: A1111's VAE approximation (VAEApprox, {_APPROX_CONVS} convs), "
        f"{latent} latent channels to RGB",
        "a cheap live-preview decoder (A1111 models/VAE-approx/), not a VAE to decode images with",
    ]
    if latent != 4:
        evidence.append(f"{latent} latent channels: no known family's VAE approximation")
        return [_cand("unknown", "vae", 0.5, evidence, facts, detector, "approx")]
    evidence.append(
        "A1111's model.pt (SD1/SD2) and vaeapprox-sdxl.pt (SDXL) share this layout: the "
        "weights cannot tell sd1 from sdxl"
    )
    facts["compatible_families"] = ["sd1", "sd2", "sdxl", "sdxl_refiner"]
    return _tied_vae(index, ("sd1", "sdxl"), evidence, facts, detector, "approx")


# The FLUX.2 VAE (diffusers AutoencoderKLFlux2): 32 latent channels, normalised by a batch norm
# over the 2x2-patched latent (128 = 32 x 4 running statistics).
_FLUX2_VAE_LATENT = 32
_FLUX2_VAE_BN = "bn.running_mean"


# Qwen-Image 2.1's VAE (diffusers AutoencoderKLQwenImage21): 64 latent channels, 2-D convs with
# the Wan VAE's RMS norms (``gamma``).
_QWEN21_VAE_LATENT = 64
_QWEN21_VAE_NORM = "decoder.norm_out.gamma"


def _untied_kl_vae(
    view: KeyView, latent: int, facts: dict[str, Any], evidence: list[str], detector: str
) -> Candidate:
    """A KL VAE no two families share: FLUX.2's (32 channels + latent batch norm), else unknown."""
    if latent == _FLUX2_VAE_LATENT and _FLUX2_VAE_BN in view:
        facts["architecture"] = "flux2"
        facts["compatible_families"] = ["flux2"]
        evidence.append(
            f"{latent} latent channels + {view.says(_FLUX2_VAE_BN)} (latent batch-norm "
            "statistics): the FLUX.2 VAE, not Flux.1's ae (16 channels)"
        )
        return _cand("flux2", "vae", 0.9, evidence, facts, detector)
    if latent == _QWEN21_VAE_LATENT and _QWEN21_VAE_NORM in view:
        facts["architecture"] = "qwen-image-2.1"
        evidence.append(
            f"{latent} latent channels + {view.full(_QWEN21_VAE_NORM)} (the Wan VAE's RMS norms "
            "in 2-D convs): Qwen-Image 2.1's image VAE, not the Wan 2.1 VAE Qwen-Image uses; no "
            "family modelsafe identifies"
        )
        return _cand("unknown", "vae", 0.6, evidence, facts, detector)
    evidence.append(f"{latent} latent channels: no known family's KL VAE")
    return _cand("unknown", "vae", 0.5, evidence, facts, detector)


def _wan_vae(
    index: TensorIndex, view: KeyView, shape: tuple[int, ...], detector: str
) -> list[Candidate]:
    if coverage(index, view.prefix) < MIN_COVERAGE:
        return []
    latent = shape[1]
    facts: dict[str, Any] = {"latent_channels": latent, "naming": "wan", "conv3d": True}
    evidence = [
        f"{view.says('decoder.conv1.weight')}: 3-D causal VAE with {latent} latent channels",
        "decoder.upsamples: the Wan VAE layout",
    ]
    return _video_vae(index, latent, evidence, facts, detector)


# The Wan 2.2 VAE (TI2V 5B): the only 3-D VAE with 48 latent channels (HunyuanVideo's and the
# Wan 2.1 VAE have 16, HunyuanVideo 1.5's 32, LTX-Video's 128).
_WAN22_VAE_LATENT = 48
# The families of the Wan 2.1 VAE's layout; Qwen-Image first, as it was named before the tie.
_WAN21_VAE_FAMILIES = ("qwen-image", "wan")


def _video_vae(
    index: TensorIndex, latent: int, evidence: list[str], facts: dict[str, Any], detector: str
) -> list[Candidate]:
    """The Wan 2.1 VAE (16 latent channels) is Wan's and Qwen-Image's (a fine-tune of it with
    the same layout): a tie, as the SD/SDXL VAE; the Wan 2.2 VAE has 48; other 3-D VAEs belong
    to video models modelsafe does not know."""
    if latent == 16:
        evidence.append(
            "16 latent channels: the Wan 2.1 VAE (Wan 2.1's 14B and 1.3B models and Wan 2.2's "
            "14B ones decode with it) and Qwen-Image's VAE, a fine-tune of it with the same "
            "layout; shapes cannot tell them apart"
        )
        facts["compatible_families"] = list(_WAN21_VAE_FAMILIES)
        return _tied_vae(index, _WAN21_VAE_FAMILIES, evidence, facts, detector, score=0.85)
    if latent == _WAN22_VAE_LATENT:
        facts["architecture"] = "wan2.2"
        evidence.append(
            f"{latent} latent channels: the Wan 2.2 VAE (of Wan 2.2 TI2V 5B; no other video VAE "
            "has 48)"
        )
        return [_cand("wan", "vae", 0.85, evidence, facts, detector)]
    evidence.append(
        f"{latent} latent channels: neither the Wan 2.1 VAE (16, Wan's and Qwen-Image's) nor the "
        "Wan 2.2 VAE (48); a video model's VAE modelsafe does not know"
    )
    return [_cand("unknown", "vae", 0.5, evidence, facts, detector)]


# 3-D causal VAEs of other layouts (ComfyUI ``comfy/sd.py`` ``VAE.__init__`` tells them by these
# names; diffusers AutoencoderKLHunyuanVideo, AutoencoderKLCogVideoX, AutoencoderKLLTXVideo,
# AutoencoderKLMochi): the decoder's conv from the latents, by layout, and what else such a file
# holds. CausalConv3d wrappers store ``conv_in.conv.weight`` (HunyuanVideo, CogVideoX, LTX-Video,
# HunyuanVideo 1.5); Mochi's decoder starts with a 1x1x1 conv (diffusers ``decoder.conv_in``,
# genmo/ComfyUI ``decoder.blocks.0.0``, or ``blocks.0.0`` in ComfyUI's decoder-only file).
_CAUSAL_VAE_PARTS = (
    "encoder.",
    "decoder.",
    "quant_conv.",
    "post_quant_conv.",
    "latents_mean",
    "latents_std",
    "per_channel_statistics.",
)
_CAUSAL_VAE_INPUTS: dict[str, tuple[str, ...]] = {
    "decoder.conv_in.conv.weight": _CAUSAL_VAE_PARTS,
    "decoder.conv_in.weight": _CAUSAL_VAE_PARTS,
    "decoder.blocks.0.0.weight": _CAUSAL_VAE_PARTS,
    "blocks.0.0.weight": ("blocks.", "output_proj."),
}
_MOCHI_MARKERS = (
    "decoder.block_in.",
    "decoder.blocks.2.blocks.3.stack.5.",
    "blocks.2.blocks.3.stack.5.",
)
_COGVIDEOX_NORM = "decoder.mid_block.resnets.0.norm1.norm_layer.weight"
# Wrapped-conv VAEs by latent channels (CogVideoX's, 16 too, is told by its latent-conditioned
# SpatialNorm3D first, as ComfyUI does).
_CAUSAL_BY_LATENT = {16: "hunyuan-video", 32: "hunyuan-video-1.5", 128: "ltx-video"}
# architecture -> (family, what it is); the family is unknown where modelsafe has none for it.
_CAUSAL_VAES: dict[str, tuple[str, str]] = {
    "hunyuan-video": (
        "hunyuan-video",
        "HunyuanVideo's VAE (16 latent channels; FramePack and HunyuanVideo I2V decode with it)",
    ),
    "hunyuan-video-1.5": ("unknown", "HunyuanVideo 1.5's VAE (32 latent channels)"),
    "cogvideox": (
        "unknown",
        "CogVideoX's VAE (16 latent channels, the decoder's norms conditioned on the latents)",
    ),
    "ltx-video": ("unknown", "LTX-Video's VAE (128 latent channels)"),
    "mochi": ("unknown", "Mochi 1's VAE (12 latent channels)"),
    "kvae-video": (
        "unknown",
        "Kandinsky Lab's KVAE video VAE (16 latent channels in LDM naming, decoder.mid.block_1, "
        "with latent-conditioned norms conv_y/conv_b; HunyuanVideo's has diffusers' mid_block)",
    ),
}
# KVAE's video decoder (diffusers AutoencoderKLKVAEVideo): LDM block names with a spatial norm
# conditioned on the latents.
_KVAE_VIDEO_NORM = "decoder.mid.block_1.norm1.conv_y.weight"


def causal_video_vae(index: TensorIndex, detector: str) -> list[Candidate]:
    """A 3-D causal VAE with wrapped convs or Mochi's layout: HunyuanVideo's (family
    ``hunyuan-video``), CogVideoX's, LTX-Video's, Mochi's, HunyuanVideo 1.5's (``unknown``)."""
    prefix = find_prefix(index.names(), (*_CAUSAL_VAE_INPUTS, *_MOCHI_MARKERS))
    if prefix is None:
        return []
    view = KeyView.of(index, prefix)
    latent_in = next((k for k in _CAUSAL_VAE_INPUTS if len(view.shape(k) or ()) == 5), None)
    if latent_in is None or coverage(index, prefix, _CAUSAL_VAE_INPUTS[latent_in]) < MIN_COVERAGE:
        return []
    latent = (view.shape(latent_in) or (0, 0))[1]
    arch = _causal_vae_arch(view, latent_in, latent)
    if arch is None and latent_in != "decoder.conv_in.conv.weight":
        return []  # a 1x1x1 conv of no Mochi layout: nothing says it is a VAE
    facts: dict[str, Any] = {"latent_channels": latent, "conv3d": True, "architecture": arch}
    if prefix:
        facts["key_prefix"] = prefix
    evidence = [f"{view.says(latent_in)}: 3-D causal VAE with {latent} latent channels"]
    if arch is None:
        evidence.append(
            f"{latent} latent channels: no video VAE modelsafe knows (HunyuanVideo's has 16, "
            "HunyuanVideo 1.5's 32, LTX-Video's 128)"
        )
        return [_cand("unknown", "vae", 0.5, evidence, facts, detector)]
    family, what = _CAUSAL_VAES[arch]
    evidence.append(f"= {what}")
    if family == "unknown":
        evidence.append("modelsafe has no family for this video model: family unknown")
        return [_cand(family, "vae", 0.6, evidence, facts, detector)]
    facts["compatible_families"] = [family]
    return [_cand(family, "vae", 0.85, evidence, facts, detector)]


# Audio VAEs of diffusers (AutoencoderOobleck, AutoencoderKLKVAEAudio, AutoencoderKLLTX2Audio,
# AutoencoderKLMiniMaxH3Audio): (tensor, its rank or None, architecture, what it is), the first
# that fits naming the VAE; audio generators' VAEs, never an image family's.
_AUDIO_VAES: tuple[tuple[str, int | None, str, str], ...] = (
    (
        "encoder.block.0.res_unit1.snake1.beta",
        None,
        "oobleck",
        "Stable Audio's Oobleck VAE (snake activations with beta, weight-normed 1-D convs)",
    ),
    (
        "encoder.block.0.res_unit1.snake1.alpha",
        None,
        "kvae-audio",
        "Kandinsky Lab's KVAE audio VAE (DAC-style snake activations, 1-D convs)",
    ),
    ("pre_block.attn.zero_k_bias", None, "minimax-h3-audio", "MiniMax H3's audio VAE"),
    (
        "decoder.conv_in.conv.weight",
        4,
        "ltx-2-audio",
        "LTX-2's audio VAE (causal 2-D convs over a mel spectrogram)",
    ),
)


def audio_vae(index: TensorIndex, detector: str) -> list[Candidate]:
    """The VAE of an audio generator: ``unknown``/``vae`` with ``facts.architecture``."""
    prefix = find_prefix(index.names(), [key for key, *_ in _AUDIO_VAES])
    if prefix is None or coverage(index, prefix) < MIN_COVERAGE:
        return []
    view = KeyView.of(index, prefix)
    for key, rank, architecture, what in _AUDIO_VAES:
        shape = view.shape(key)
        if shape is not None and (rank is None or len(shape) == rank):
            facts: dict[str, Any] = {"architecture": architecture, "audio": True}
            evidence = [
                f"{view.says(key)}: {what}",
                "an audio model's VAE (sound, not images or video): no family modelsafe identifies",
            ]
            return [_cand("unknown", "vae", 0.6, evidence, facts, detector)]
    return []


def _causal_vae_arch(view: KeyView, latent_in: str, latent: int) -> str | None:
    if latent_in != "decoder.conv_in.conv.weight":
        return "mochi" if any(view.has_prefix(m) for m in _MOCHI_MARKERS) else None
    if _COGVIDEOX_NORM in view:
        return "cogvideox"
    if _KVAE_VIDEO_NORM in view:
        return "kvae-video"
    return _CAUSAL_BY_LATENT.get(latent)


# ------------------------------------------------------------------------------------ text encoders

# (width, layers) -> variant, for CLIP text towers in either naming.
_CLIP_VARIANTS: dict[tuple[int, int], str] = {
    (768, 12): "clip_l",
    (1024, 24): "openclip_h",
    (1024, 23): "openclip_h",  # diffusers' SD2 text_encoder drops the last layer
    (1280, 32): "clip_g",
}
USED_BY: dict[str, list[str]] = {
    "clip_l": ["sd1", "sdxl", "sd3", "sd3.5", "flux1", "hidream", "hunyuan-video", "kandinsky5"],
    "openclip_h": ["sd2"],
    "clip_g": ["sdxl", "sdxl_refiner", "sd3", "sd3.5", "hidream", "stable-cascade"],
    "t5xxl": ["sd3", "sd3.5", "flux1", "chroma", "hidream"],
    "umt5xxl": ["wan"],
    "oldt5_xxl": ["cosmos"],
    "byt5_small_glyph": ["hunyuanimage2.1"],
    "llama3.1_8b": ["hidream"],
    "llava_llama3_8b": ["hunyuan-video"],
    "qwen2.5_vl_7b": ["qwen-image", "hunyuanimage2.1", "kandinsky5"],
    "qwen3_4b": ["z-image", "flux2"],
    "gemma2_2b": ["lumina2", "sana"],
    "qwen3_8b": ["flux2"],
    "mistral_small_3_24b": ["flux2"],
    "gemma3_12b": ["ltx-2"],
    "pile_t5xl": ["auraflow"],
    "mt5_xl": ["hunyuan-dit"],
}
# (vocab, width, layers) -> variant, for decoder-only LLM text encoders.
_LLM_VARIANTS: dict[tuple[int, int, int], str] = {
    (128256, 4096, 32): "llama3.1_8b",
    # HunyuanVideo's: the language model of LLaVA-Llama-3-8B (xtuner llava-llama-3-8b-v1_1; 64
    # image/pad tokens over Llama-3's 128256: ComfyUI comfy/text_encoders/llama.py Llama2Config)
    (128320, 4096, 32): "llava_llama3_8b",
    (152064, 3584, 28): "qwen2.5_vl_7b",
    (151936, 2560, 36): "qwen3_4b",
    (256000, 2304, 26): "gemma2_2b",
    (151936, 4096, 36): "qwen3_8b",  # FLUX.2 [klein] 9B
    (131072, 5120, 40): "mistral_small_3_24b",  # FLUX.2 [dev]: Mistral-Small-3.1/3.2 24B
    (262208, 3840, 48): "gemma3_12b",  # LTX-2: Gemma-3-12B(-it), text_config of the VLM
}


def text_encoder(index: TensorIndex, detector: str) -> list[Candidate]:
    if index.format == "gguf":
        found = _gguf_text_encoder(index, detector)
        if found:  # llama.cpp names; a GGUF with transformers names goes on to the anchors
            return found
    names = index.names()
    for anchors, read in (
        (
            ("text_model.embeddings.token_embedding.weight", "text_model.final_layer_norm.weight"),
            _hf_clip,
        ),
        (("token_embedding.weight", "ln_final.weight", "positional_embedding"), _openclip),
        (
            ("encoder.block.0.layer.0.SelfAttention.q.weight", "encoder.final_layer_norm.weight"),
            _t5,
        ),
        (("embed_tokens.weight", "layers.0.self_attn.q_proj.weight", "norm.weight"), _llm),
        (("token_embedding.weight", "blocks.0.attn.q.weight", "blocks.0.ffn.fc1.weight"), _wan_t5),
    ):
        prefix = find_prefix(names, anchors)
        if prefix is None:
            continue
        view = KeyView.of(index, prefix)
        if not all(a in view for a in anchors[:2]):
            continue
        found = read(index, view, detector)
        if found:
            return found
    return []


def _te_candidate(
    index: TensorIndex,
    view: KeyView,
    variant: str | None,
    facts: dict[str, Any],
    evidence: list[str],
    detector: str,
    extra_parts: tuple[str, ...] = (),
    *,
    whole: bool = False,
) -> list[Candidate]:
    """``whole``: the caller has checked that the encoder makes up the file."""
    if not whole and coverage(index, view.prefix) < MIN_COVERAGE:
        return []
    score = 0.95 if variant else 0.6
    _say_variant(variant, facts, evidence)
    others = [p for p in extra_parts if view.has_prefix(p)]
    if others:
        evidence.append(f"also holds {', '.join(others)}: more than the text encoder alone")
        score -= 0.2
    if view.prefix:
        facts["key_prefix"] = view.prefix
    return [_cand("any", "text_encoder", score, evidence, facts, detector, variant)]


def _say_variant(variant: str | None, facts: dict[str, Any], evidence: list[str]) -> None:
    """The evidence line (and ``used_by``) for a text encoder's variant, or its absence."""
    if variant:
        facts["used_by"] = USED_BY.get(variant, [])
        evidence.append(f"= {variant}, used by {', '.join(facts['used_by']) or 'other models'}")
    else:
        evidence.append("no released text encoder has these dimensions")


# Vocabulary sizes of the 4096 x 24 T5-family encoders: T5 v1.1 XXL's SentencePiece model
# (32128), mT5-XXL's multilingual one (250112), UMT5-XXL's (256384).
MT5_VOCAB = 250112
UMT5_VOCAB = 256384
# T5-family encoders by (width, blocks, feed-forward width; None: any), then by vocabulary.
# T5 v1.0 XXL (t5-11b, ComfyUI's t5_old_config_xxl.json: Cosmos 1.0 and Cosmos-Predict2) is 1024
# wide like t5-large and T5 v1.1 large, and told from them by its 65536-wide ReLU feed-forward;
# ByT5-small (1472 x 12) in HunyuanImage 2.1's Glyph-SDXL-v2 build has 1510 tokens (ComfyUI
# byt5_config_small_glyph.json), google/byt5-small 384.
_T5_VARIANTS: dict[tuple[int, int, int | None], str] = {
    (4096, 24, None): "t5xxl",
    (1024, 24, 65536): "oldt5_xxl",
    (1472, 12, None): "byt5_small",
    # T5 v1.1 XL (google/t5-v1_1-xl: 2048 x 24, d_ff 5120, vocabulary 32128); mT5-XL (HunyuanDiT's
    # text_encoder_2) and Pile-T5-XL (AuraFlow's, a UMT5EncoderModel) have its shape
    (2048, 24, None): "t5_xl",
}
# The UMT5 form of a shape (a relative attention bias in every block, or UMT5's vocabulary).
_UMT5_OF: dict[str, str] = {"t5xxl": "umt5xxl", "t5_xl": "umt5_xl"}
_T5_BY_VOCAB: dict[tuple[str, int], str] = {
    ("t5xxl", MT5_VOCAB): "mt5xxl",
    ("t5_xl", MT5_VOCAB): "mt5_xl",
    # EleutherAI/pile-t5-xl: UMT5 blocks over T5's 32128-token vocabulary
    ("umt5_xl", 32128): "pile_t5xl",
    ("byt5_small", 1510): "byt5_small_glyph",
}
_T5_NOTES: dict[str, str] = {
    "umt5xxl": "relative attention bias in every block / 256k vocabulary: UMT5",
    "mt5xxl": "vocabulary 250112: mT5 (multilingual), not T5 v1.1 XXL (32128); no family "
    "modelsafe knows uses mT5-XXL",
    "oldt5_xxl": "d_ff 65536 (ReLU DenseReluDense.wi): T5 v1.0 XXL (t5-11b), not T5 v1.1 XXL "
    "(4096 wide)",
    "byt5_small_glyph": "vocabulary 1510: ByT5-small with the Glyph-SDXL-v2 glyph tokens, "
    "HunyuanImage 2.1's text renderer",
    "pile_t5xl": "relative attention bias in every block, vocabulary 32128: Pile-T5-XL "
    "(UMT5 blocks), not T5 v1.1 XL",
    "mt5_xl": "vocabulary 250112: mT5-XL (multilingual), not T5 v1.1 XL (32128)",
}


def _t5_variant(
    width: int | None,
    layers: int | None,
    *,
    umt5: bool,
    vocab: int | None = None,
    d_ff: int | None = None,
) -> str | None:
    """T5-XXL's encoder is 4096 wide and 24 blocks deep; UMT5-XXL (Wan) and mT5-XXL have the
    same shape and are told by their vocabularies (UMT5 also by a relative bias per block)."""
    variant = _T5_VARIANTS.get((width or 0, layers or 0, None)) or _T5_VARIANTS.get(
        (width or 0, layers or 0, d_ff)
    )
    if umt5 and variant in _UMT5_OF:
        variant = _UMT5_OF[variant]
    return _T5_BY_VOCAB.get((variant or "", vocab or 0), variant)


def _hf_clip(index: TensorIndex, view: KeyView, detector: str) -> list[Candidate]:
    emb = view.shape("text_model.embeddings.token_embedding.weight") or (0, 0)
    width = emb[1] if len(emb) == 2 else 0
    layers = view.count_blocks("text_model.encoder.layers.")
    projection = "text_projection.weight" in view
    facts: dict[str, Any] = {
        "hidden_size": width,
        "num_layers": layers,
        "vocab_size": emb[0],
        "naming": "transformers-clip",
        "projection": projection,
    }
    evidence = [
        f"{view.says('text_model.embeddings.token_embedding.weight')}: CLIP text model, width "
        f"{width}, {layers} layers" + (", with text_projection" if projection else ""),
    ]
    variant = _CLIP_VARIANTS.get((width, layers))
    return _te_candidate(index, view, variant, facts, evidence, detector, ("vision_model.",))


def _openclip(index: TensorIndex, view: KeyView, detector: str) -> list[Candidate]:
    emb = view.shape("token_embedding.weight") or (0, 0)
    width = emb[1] if len(emb) == 2 else 0
    layers = view.count_blocks("transformer.resblocks.")
    facts: dict[str, Any] = {
        "hidden_size": width,
        "num_layers": layers,
        "vocab_size": emb[0],
        "naming": "open_clip",
        "projection": "text_projection" in view,
    }
    evidence = [
        f"{view.says('token_embedding.weight')}: OpenCLIP text tower, width {width}, "
        f"{layers} resblocks",
    ]
    variant = _CLIP_VARIANTS.get((width, layers))
    return _te_candidate(index, view, variant, facts, evidence, detector, ("visual.",))


def _t5(index: TensorIndex, view: KeyView, detector: str) -> list[Candidate]:
    q = view.shape("encoder.block.0.layer.0.SelfAttention.q.weight") or (0, 0)
    width = q[1] if len(q) == 2 else 0
    layers = view.count_blocks("encoder.block.")
    vocab_key = "shared.weight" if "shared.weight" in view else "encoder.embed_tokens.weight"
    vocab = view.dim(vocab_key, 0)
    # gated (T5 v1.1: wi_0/wi_1) or ReLU (T5 v1.0: wi) feed-forward
    ff = view.dim("encoder.block.0.layer.1.DenseReluDense.wi_0.weight", 0) or view.dim(
        "encoder.block.0.layer.1.DenseReluDense.wi.weight", 0
    )
    per_layer_bias = "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight" in view
    facts: dict[str, Any] = {
        "hidden_size": width,
        "num_layers": layers,
        "vocab_size": vocab,
        "d_ff": ff,
        "naming": "transformers-t5",
    }
    evidence = [
        f"{view.says('encoder.block.0.layer.0.SelfAttention.q.weight')}: T5 encoder, width "
        f"{width}, {layers} blocks" + (f", vocabulary {vocab}" if vocab else ""),
    ]
    umt5 = vocab == UMT5_VOCAB or per_layer_bias
    variant = _t5_variant(width, layers, umt5=umt5, vocab=vocab, d_ff=ff)
    if variant in _T5_NOTES:
        evidence.append(_T5_NOTES[variant])
    return _te_candidate(index, view, variant, facts, evidence, detector, ("decoder.",))


def _wan_t5(index: TensorIndex, view: KeyView, detector: str) -> list[Candidate]:
    """Wan's own T5 encoder naming (``wan/modules/t5.py`` ``T5Encoder``: ``token_embedding``,
    ``blocks.N.attn.q/k/v/o``, ``blocks.N.ffn.gate.0``/``fc1``/``fc2``, a relative position
    bias per block ``blocks.N.pos_embedding``, ``norm``), as Wan-AI ships
    ``models_t5_umt5-xxl-enc-bf16.pth`` and Kijai's WanVideoWrapper ``umt5-xxl-enc-bf16``."""
    q = view.shape("blocks.0.attn.q.weight") or (0, 0)
    width = q[1] if len(q) == 2 else 0
    layers = view.count_blocks("blocks.")
    vocab = view.dim("token_embedding.weight", 0)
    d_ff = view.dim("blocks.0.ffn.fc1.weight", 0)
    per_block_bias = "blocks.1.pos_embedding.embedding.weight" in view
    if "blocks.0.ffn.gate.0.weight" not in view or "blocks.0.attn.o.weight" not in view:
        return []
    facts: dict[str, Any] = {
        "hidden_size": width,
        "num_layers": layers,
        "vocab_size": vocab,
        "d_ff": d_ff,
        "naming": "wan-t5",
    }
    evidence = [
        f"{view.says('blocks.0.attn.q.weight')} + blocks.N.ffn.gate.0/fc1/fc2: T5 encoder in "
        f"Wan's own naming (wan/modules/t5.py), width {width}, {layers} blocks"
        + (f", vocabulary {vocab}" if vocab else ""),
    ]
    umt5 = vocab == UMT5_VOCAB or per_block_bias
    variant = _t5_variant(width, layers, umt5=umt5, vocab=vocab, d_ff=d_ff)
    if variant in _T5_NOTES:
        evidence.append(_T5_NOTES[variant])
    evidence.append(
        "Wan's code and WanVideoWrapper load these names; loaders of transformers' T5 "
        "(encoder.block.N.layer.M) need them converted"
    )
    return _te_candidate(index, view, variant, facts, evidence, detector)


# GGUF ``general.architecture`` of text encoders people keep beside diffusion models (city96's
# T5/UMT5 ``t5encoder`` files); any other architecture with llama.cpp names is a language model,
# a text encoder only at the dimensions of :data:`_LLM_VARIANTS` (``llama``: Llama-3.1-8B,
# ``qwen2vl``, ``qwen3``, ``gemma2``), else no image model's.
_GGUF_T5 = ("t5encoder", "t5")
_GGUF_BLOCK = re.compile(r"^(?:enc\.)?blk\.(\d+)\.")


def _gguf_text_encoder(index: TensorIndex, detector: str) -> list[Candidate]:
    """A GGUF text encoder, read off llama.cpp's key/values (its tensors use llama.cpp names:
    ``enc.blk.0.attn_q.weight``, ``blk.0.attn_q.weight``)."""
    arch = index.extra.get("architecture")
    kv = index.extra.get("kv") or {}
    if not isinstance(arch, str):
        return []
    embed = next((t for t in index.tensors if t.name == "token_embd.weight"), None)
    if embed is None:
        return []  # not llama.cpp's names: the transformers-name probes read it
    vocab = embed.shape[0] if len(embed.shape) == 2 else None
    # The key/values say it; a converter that left them out still has the tensors.
    width = kv.get(f"{arch}.embedding_length") or (embed.shape[1] if vocab else None)
    blocks = {m.group(1) for t in index.tensors if (m := _GGUF_BLOCK.match(t.name))}
    layers = kv.get(f"{arch}.block_count") or (len(blocks) or None)
    facts: dict[str, Any] = {
        "hidden_size": width,
        "num_layers": layers,
        "vocab_size": vocab,
        "naming": "llama.cpp",
        "gguf_architecture": arch,
    }
    evidence = [
        f"GGUF general.architecture={arch!r}, {arch}.embedding_length={width}, "
        f"{arch}.block_count={layers}" + (f", vocabulary {vocab}" if vocab else "")
    ]
    if arch in _GGUF_T5:
        d_ff = kv.get(f"{arch}.feed_forward_length")
        variant = _t5_variant(width, layers, umt5=vocab == UMT5_VOCAB, vocab=vocab, d_ff=d_ff)
    else:
        variant = _LLM_VARIANTS.get((vocab or 0, width or 0, layers or 0))
        if variant is None:  # a chat/base LLM: no image model uses it, so not a text encoder
            return [_not_image_model(arch, facts, evidence, detector)]
    score = 0.9 if variant else 0.6
    _say_variant(variant, facts, evidence)
    return [_cand("any", "text_encoder", score, evidence, facts, detector, variant)]


def _not_image_model(
    arch: str, facts: dict[str, Any], evidence: list[str], detector: str
) -> Candidate:
    """A llama.cpp GGUF language model (any architecture but the T5 encoders) whose dimensions
    are no text encoder's: said to be no image model, so nothing takes it for one."""
    facts["not_image_model"] = True
    evidence.append(
        f"llama.cpp tensor names (token_embd, blk.N): a {arch} language model, not an image "
        "model; no image model modelsafe knows uses a language model of these dimensions as its "
        "text encoder"
    )
    return _cand("unknown", "unknown", 0.9, evidence, facts, detector)


# Where a vision-language model keeps the rest of itself beside its language model, in each
# transformers layout: ComfyUI and Qwen2.5-VL before transformers 4.52 (``model.layers`` +
# ``visual.*``), 4.52 and later (``model.language_model.*`` + ``model.visual.*`` /
# ``model.vision_tower.*`` + ``model.multi_modal_projector.*``), the llava family before 4.52
# (``language_model.model.*`` + ``vision_tower.*`` + ``multi_modal_projector.*``), and the LM head.
# The vision tower holds many small tensors (a few percent of the bytes): its tensors are not
# counted against the language model's share of the file.
_VLM_PARTS = tuple(
    outer + part
    for outer in ("", "model.")
    for part in ("visual.", "vision_tower.", "multi_modal_projector.")
) + ("lm_head.", "language_model.lm_head.")


def _llm(index: TensorIndex, view: KeyView, detector: str) -> list[Candidate]:
    """A decoder-only language model used as a text encoder, in any of transformers' layouts:
    the base model (``embed_tokens``, ``layers.N``: Gemma2Model, LlamaModel as diffusers save
    them), ``*ForCausalLM`` (``model.``), or a VLM's language model (``model.language_model.``,
    ``language_model.model.``) beside its vision tower."""
    emb = view.shape("embed_tokens.weight") or (0, 0)
    vocab, width = (emb[0], emb[1]) if len(emb) == 2 else (0, 0)
    layers = view.count_blocks("layers.")
    qk_norm = "layers.0.self_attn.q_norm.weight" in view
    facts: dict[str, Any] = {
        "hidden_size": width,
        "num_layers": layers,
        "vocab_size": vocab,
        "naming": "transformers-llm",
    }
    evidence = [
        f"{view.says('embed_tokens.weight')}: decoder-only language model, width "
        f"{width}, {layers} layers" + (", q/k norms" if qk_norm else ""),
    ]
    variant = _LLM_VARIANTS.get((vocab, width, layers))
    vision = prefixes_present(index.names(), _VLM_PARTS[:-2])
    if vision:
        evidence.append(
            f"vision tower ({', '.join(p + '*' for p in vision)}) stored too: a vision-language "
            "model"
        )
    if coverage(index, view.prefix, leftovers=_VLM_PARTS) < MIN_COVERAGE:
        return []
    return _te_candidate(index, view, variant, facts, evidence, detector, whole=True)


# ------------------------------------------------------------------------------------ upscalers

_WRAPPERS = ("params_ema.", "params.", "model.", "")
_OLD_ESRGAN = re.compile(r"^model\.(\d+)\.weight$")


def upscaler(index: TensorIndex, detector: str) -> list[Candidate]:
    from modelsafe.registry.detect.upscaler_arch_probes import more_upscalers

    names = index.names()
    for read in (_esrgan_new, _esrgan_trunk, _esrgan_old):
        found = read(index, names, detector)
        if found:
            return found
    found = more_upscalers(index, detector)  # HAT first: it has SwinIR's residual groups too
    if found:
        return found
    for read in (_swinir, _compact):
        found = read(index, names, detector)
        if found:
            return found
    return []


def _wrapped_prefix(names: set[str], anchors: tuple[str, ...]) -> str | None:
    prefix = find_prefix(names, anchors)
    return prefix if prefix is not None and prefix in _WRAPPERS else None


def _unshuffle(in_ch: int, out_ch: int) -> int:
    """Pixel-unshuffle factor folded into the first conv (Real-ESRGAN x2/x1 RRDB models)."""
    ratio = in_ch // out_ch if out_ch else 1
    root = math.isqrt(ratio)
    return root if root * root == ratio and root > 1 else 1


def _upscaler(
    index: TensorIndex,
    view: KeyView,
    architecture: str,
    scale: int | None,
    facts: dict[str, Any],
    evidence: list[str],
    detector: str,
) -> list[Candidate]:
    if coverage(index, view.prefix) < MIN_COVERAGE:
        return []
    facts.update(architecture=architecture, scale=scale)
    if view.prefix:
        facts["key_prefix"] = view.prefix
    variant = f"{architecture} x{scale}" if scale else architecture
    return [_cand("any", "upscaler", 0.95 if scale else 0.6, evidence, facts, detector, variant)]


def _esrgan_new(index: TensorIndex, names: set[str], detector: str) -> list[Candidate]:
    prefix = _wrapped_prefix(names, ("conv_first.weight", "conv_body.weight", "conv_last.weight"))
    if prefix is None:
        return []
    view = KeyView.of(index, prefix)
    if not view.has_prefix("body.0.rdb1.") or "conv_body.weight" not in view:
        return []
    ups = sorted(n for n in view.tensors if re.fullmatch(r"conv_up\d+\.weight", n))
    blocks = view.count_blocks("body.")
    layout = (
        f"body.N.rdb1..rdb3 ({blocks} RRDB blocks): ESRGAN/Real-ESRGAN RRDBNet (BasicSR naming)"
    )
    return _rrdbnet(index, view, ups, blocks, "basicsr", layout, detector)


def _rrdbnet(
    index: TensorIndex,
    view: KeyView,
    ups: list[str],
    blocks: int,
    naming: str,
    layout: str,
    detector: str,
) -> list[Candidate]:
    """An RRDBNet with ``conv_first``/``conv_last`` and upsampling convs ``ups``: scale 2 per
    upsampling layer, over a pixel-unshuffle folded into ``conv_first``."""
    first = view.shape("conv_first.weight") or (0, 0)
    last = view.shape("conv_last.weight") or (0, 0)
    unshuffle = _unshuffle(first[1], last[0])
    scale = 2 ** len(ups) // unshuffle
    facts: dict[str, Any] = {"num_blocks": blocks, "num_features": first[0], "naming": naming}
    evidence = [
        f"{view.says('conv_first.weight')} + {layout}",
        f"{len(ups)} nearest+conv upsampling layers ({', '.join(view.full(u) for u in ups)})"
        + (f", input pixel-unshuffled by {unshuffle}" if unshuffle > 1 else "")
        + f": x{scale}",
    ]
    return _upscaler(index, view, "esrgan", scale, facts, evidence, detector)


def _esrgan_trunk(index: TensorIndex, names: set[str], detector: str) -> list[Candidate]:
    """The ESRGAN repository's RRDBNet_arch naming (BSRGAN, RealSR, ``RRDB_ESRGAN_x4``):
    ``conv_first``, ``RRDB_trunk.N.RDBK.convM``, ``trunk_conv``, ``upconvI``, ``HRconv``,
    ``conv_last``. Scale as for the BasicSR naming: 2 per upconv, over a pixel-unshuffle folded
    into ``conv_first`` (12 input channels: by 2, 48: by 4)."""
    prefix = _wrapped_prefix(names, ("conv_first.weight", "trunk_conv.weight", "conv_last.weight"))
    if prefix is None:
        return []
    view = KeyView.of(index, prefix)
    if not view.has_prefix("RRDB_trunk.0.RDB1.") or "HRconv.weight" not in view:
        return []
    ups = sorted(
        (n for n in view.tensors if re.fullmatch(r"upconv\d+\.weight", n)),
        key=lambda n: int(n[len("upconv") : -len(".weight")]),
    )
    blocks = view.count_blocks("RRDB_trunk.")
    layout = (
        f"RRDB_trunk.N.RDB1..RDB3 ({blocks} RRDB blocks) + trunk_conv + HRconv: ESRGAN RRDBNet "
        "(ESRGAN repository naming, as BSRGAN / RealSR)"
    )
    return _rrdbnet(index, view, ups, blocks, "esrgan-trunk", layout, detector)


def _esrgan_old(index: TensorIndex, names: set[str], detector: str) -> list[Candidate]:
    if "model.0.weight" not in names or not any(n.startswith("model.1.sub.0.RDB1.") for n in names):
        return []
    view = KeyView.of(index, "")
    convs = sorted(
        int(m.group(1))
        for n in names
        if (m := _OLD_ESRGAN.match(n)) and len(view.shape(n) or ()) == 4 and int(m.group(1)) > 1
    )
    ups = max(0, len(convs) - 2)  # the last two are HRconv and conv_last
    first = view.shape("model.0.weight") or (0, 0)
    last = view.shape(f"model.{convs[-1]}.weight") if convs else None
    unshuffle = _unshuffle(first[1], last[0] if last else 3)
    scale = 2**ups // unshuffle
    blocks = view.count_blocks("model.1.sub.") - 1
    facts: dict[str, Any] = {"num_blocks": blocks, "num_features": first[0], "naming": "esrgan-old"}
    evidence = [
        f"{view.says('model.0.weight')} + model.1.sub.N.RDB1..RDB3 ({blocks} RRDB blocks): "
        "ESRGAN (original naming)",
        f"{ups} upconv layers (model.{', model.'.join(str(c) for c in convs[:ups])})"
        + (f", input pixel-unshuffled by {unshuffle}" if unshuffle > 1 else "")
        + f": x{scale}",
    ]
    return _upscaler(index, view, "esrgan", scale, facts, evidence, detector)


def _compact(index: TensorIndex, names: set[str], detector: str) -> list[Candidate]:
    prefix = _wrapped_prefix(names, ("body.0.weight", "body.1.weight"))
    if prefix is None:
        return []
    view = KeyView.of(index, prefix)
    if set(n.split(".", 1)[0] for n in view.tensors) != {"body"}:
        return []
    last_index = view.count_blocks("body.") - 1
    first = view.shape("body.0.weight") or ()
    last = view.shape(f"body.{last_index}.weight") or ()
    prelu = view.shape("body.1.weight") or ()
    if len(first) != 4 or len(last) != 4 or len(prelu) != 1:
        return []
    in_ch = first[1]
    ratio = last[0] // in_ch if in_ch else 0
    root = math.isqrt(ratio)
    scale = root if root * root == ratio and root > 0 else None
    convs = sum(1 for n, t in view.tensors.items() if n.endswith(".weight") and len(t.shape) == 4)
    facts: dict[str, Any] = {"num_conv": convs - 2, "num_features": first[0], "naming": "srvgg"}
    evidence = [
        f"{view.says('body.0.weight')} + PReLU {view.says('body.1.weight')}: SRVGGNetCompact "
        f"(Real-ESRGAN compact), {convs} convs",
        f"{view.says(f'body.{last_index}.weight')}: {last[0]} = {in_ch} x {ratio} "
        f"pixel-shuffle outputs" + (f": x{scale}" if scale else ""),
    ]
    return _upscaler(index, view, "real-esrgan-compact", scale, facts, evidence, detector)


def _swinir(index: TensorIndex, names: set[str], detector: str) -> list[Candidate]:
    prefix = _wrapped_prefix(
        names, ("conv_first.weight", "conv_after_body.weight", "conv_last.weight")
    )
    if prefix is None:
        return []
    view = KeyView.of(index, prefix)
    if not view.has_prefix("layers.0.residual_group.blocks.0."):
        return []
    embed = view.dim("conv_first.weight", 0) or 0
    scale: int | None = 1
    how = ""
    ups = sorted(n for n in view.tensors if re.fullmatch(r"upsample\.\d+\.weight", n))
    conv_ups = sorted(n for n in view.tensors if re.fullmatch(r"conv_up\d+\.weight", n))
    if conv_ups:
        scale, how = 2 ** len(conv_ups), f"{len(conv_ups)} nearest+conv layers"
    elif ups:
        shapes = [view.shape(u) or (0, 0) for u in ups]
        scale, how = (
            1,
            f"{len(ups)} pixel-shuffle convs ({', '.join(shape_text(s) for s in shapes)})",
        )
        for out, inp, *_ in shapes:
            step = {4: 2, 9: 3}.get(out // inp if inp and out % inp == 0 else 0)
            root = math.isqrt(out // 3)
            if step is None and len(shapes) == 1 and 3 * root * root == out:
                step, how = root, f"pixel-shuffle-direct conv {shape_text(shapes[0])}"
            if step is None:
                scale, how = None, f"upsampler convs {', '.join(shape_text(s) for s in shapes)}"
                break
            scale *= step
    layers = view.count_blocks("layers.")
    arch, label, why = _swin_family(view)
    facts: dict[str, Any] = {"embed_dim": embed, "num_layers": layers, "naming": "swinir"}
    evidence = [
        f"{view.says('conv_first.weight')} + {view.full('layers.0.residual_group.blocks.0.')}* "
        f"({layers} residual Swin groups, embed {embed}): {label}",
        f"{how or 'no upsampler'}: " + (f"x{scale}" if scale else "scale unknown"),
    ]
    if why:
        evidence.insert(1, why)
    return _upscaler(index, view, arch, scale, facts, evidence, detector)


def _swin_family(view: KeyView) -> tuple[str, str, str]:
    """SwinIR and the two upscalers built on its layout, told by their attention: Swin2SR (a
    SwinV2 attention: ``logit_scale``, ``cpb_mlp``) and SRFormer (``q`` + ``kv`` and an
    ``aligned_relative_position_index``). They do not load as one another."""
    attn = "layers.0.residual_group.blocks.0.attn."
    if attn + "logit_scale" in view or view.has_prefix(attn + "cpb_mlp."):
        return "swin2sr", "Swin2SR", f"{attn}logit_scale/cpb_mlp: SwinV2 attention = Swin2SR"
    if attn + "aligned_relative_position_index" in view or attn + "kv.weight" in view:
        return "srformer", "SRFormer", f"{attn}q/kv + aligned_relative_position_index = SRFormer"
    return "swinir", "SwinIR", ""
