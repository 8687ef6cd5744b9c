"""Probes for the transformer (DiT/MMDiT) families: sd3, sd3.5, flux1, flux2, chroma, z-image,
lumina2, qwen-image, hidream, wan, hunyuan-video, hunyuanimage2.1, kandinsky5 and sana, in their
original single-file naming and in diffusers naming.

Decisive facts (public layouts of the released models):

- Flux.1 (BFL naming ``double_blocks``/``single_blocks``, diffusers ``transformer_blocks``/
  ``single_transformer_blocks``): 19 double + 38 single blocks at width 3072; ``guidance_in``
  (diffusers ``time_text_embed.guidance_embedder``) only in guidance-distilled dev, not schnell;
  ``img_in`` input 384 = Fill, 128 = Depth/Canny.
- Chroma: the Flux layout without ``time_in``/``vector_in``/``guidance_in`` and per-block
  modulation, with a ``distilled_guidance_layer`` (approximator) instead.
- SD3/3.5 (SAI ``joint_blocks``, diffusers ``transformer_blocks`` + ``pos_embed.proj``):
  SD3 medium 24 blocks at 1536; SD3.5 medium adds ``attn2`` (MMDiT-X) and a 384x384 position
  table; SD3.5 large 38 blocks at 2432.
- Z-Image (S3-DiT): ``noise_refiner``/``context_refiner``/``layers``, width 3840, caption
  features 2560 (Qwen3-4B); Lumina-2 has the same names with 2304 (Gemma-2).
- Qwen-Image: ``transformer_blocks.N.img_mod``/``txt_mod``, ``txt_in`` 3584 (Qwen2.5-VL), 60 blocks.
- HiDream-I1: ``double_stream_blocks``/``single_stream_blocks`` with MoE feed-forwards.
- FLUX.2 (``flux2``): Flux's block names with shared ``*_stream_modulation`` layers, no
  ``vector_in``, 128 input channels; width, block counts and text width name dev / klein 4B / 9B.
- Lumina Image 2.0 (``lumina2``): Z-Image's NextDiT names at width 2304 with 2304-wide captions.
- Told by names only they have (:data:`_ANCHORED`): Wan 2.1/2.2 (``wan``), Kandinsky 5
  (``kandinsky5``), SANA (``sana``: PixArt's names plus its GLUMBConv MLP, a 2-D patch embedding);
  HunyuanVideo (``hunyuan-video``) and HunyuanImage 2.1 (``hunyuanimage2.1``) share block names and
  are told by the patch embedding (2-D conv = the image model, 3-D conv of 1x2x2 patches beside
  the CLIP-L pooled vector = HunyuanVideo). What none of these tells (HunyuanVideo 1.5 vs
  HunyuanImage 2.1's refiner, SANA-Video, PixArt) is an ``unknown`` transformer with the reason,
  never the family it resembles.
- Well-known DiTs of no family (:data:`_UNNAMED`, all three of their own names): HunyuanDiT,
  Lumina-Next, LTX-Video / LTX-2, PixArt (diffusers naming), CogVideoX, Mochi, Cosmos-Predict1/2/
  2.5 and AuraFlow are ``unknown`` transformers with ``facts.architecture`` and the reason; so
  are diffusers' newer image, video and audio DiTs (:data:`_IMAGE_DITS`, :data:`_VIDEO_DITS`,
  :data:`_AUDIO_DITS`), each anchor checked against every other diffusers class. Flux-like ones
  (Bria, LongCat-Image, Ovis-Image) lack Flux's timestep/pooled-text names and are never flux1.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from modelsafe.registry.detect.prefixes import KeyView
from modelsafe.registry.detect.probe import Hints, Match, Probe
from modelsafe.registry.detect.sizes import model_size, model_width

_FLOW = "flow"


def _flow(match: Match, hints: Hints) -> Match:
    hinted = hints.prediction_type()
    if hinted is not None and hinted[0] != _FLOW:
        match.evidence.append(f"note: {hinted[1]} although {match.family} is a flow model")
    match.evidence.append(f"{match.family} is a rectified-flow model: prediction type flow")
    return match


def _flux_like(
    view: KeyView,
    hints: Hints,
    *,
    double: str,
    single: str,
    img_in: str,
    txt_in: str,
    guidance: str,
    vector: str,
    modulation: str,
) -> list[Match]:
    if view.count_blocks(double) == 0 or view.count_blocks(single) == 0:
        return []
    flux2 = _flux2(view, hints, double=double, single=single, img_in=img_in, txt_in=txt_in)
    if flux2:
        return flux2
    img = view.shape(img_in)
    if img is None and "img_in_patch.weight" in view:
        return _chroma_radiance(view, hints, double=double, single=single, txt_in=txt_in)
    if img is None or len(img) != 2:
        return []
    hidden, in_features = img
    depth, depth_single = view.count_blocks(double), view.count_blocks(single)
    facts: dict[str, object] = {
        "hidden_size": hidden,
        "depth": depth,
        "num_layers": depth,
        "depth_single_blocks": depth_single,
        "num_single_layers": depth_single,
        "in_channels": in_features,
        "latent_channels": 16,
        "context_dim": view.dim(txt_in, 1),
    }
    blocks = f"{depth} double + {depth_single} single blocks at width {hidden}"
    evidence = [f"{view.says(img_in)}; {blocks}"]
    approximator = "distilled_guidance_layer.in_proj.weight"
    if approximator in view:
        evidence.insert(
            0,
            f"{view.says(approximator)}: Chroma's distilled guidance approximator; "
            f"{view.full(vector)} and {view.full(guidance)} absent",
        )
        facts["guidance_embed"] = False
        score = 0.95 if vector not in view else 0.7
        return [_flow(Match("chroma", score, evidence, None, _FLOW, facts), hints)]
    if vector not in view or view.first(modulation) is None:
        evidence.insert(0, f"Flux-like blocks but no {view.full(vector)} / per-block modulation")
        return [_flow(Match("flux1", 0.25, evidence, None, _FLOW, facts), hints)]
    facts["pooled_projection_dim"] = view.dim(vector, 1)
    dev = guidance in view
    facts["guidance_embed"] = dev
    variant = "dev" if dev else "schnell"
    evidence.insert(
        0,
        f"{view.says(guidance)}: guidance-distilled Flux.1 dev"
        if dev
        else f"{view.full(guidance)} is absent: timestep-distilled Flux.1 schnell",
    )
    if in_features == 384:
        variant = "fill"
        evidence.append(f"img_in input {in_features} (latent + mask channels): Flux.1 Fill")
    elif in_features == 128:
        variant = "depth-canny"
        evidence.append(f"img_in input {in_features} (latent + control): Flux.1 Depth/Canny")
    elif dev:
        evidence.append("Flux.1 Kontext dev shares this layout")
    score = 0.95 if (hidden, depth, depth_single) == (3072, 19, 38) else 0.75
    return [_flow(Match("flux1", score, evidence, variant, _FLOW, facts), hints)]


# FLUX.2's shared modulation layers (BFL ``.lin``, diffusers ``.linear``), which Flux.1 has per
# block; FLUX.2 [dev] and klein 4B/9B as released (their widths: sizes.MODEL_SIZES): variant ->
# (double, single, text width, guidance) and what its name is followed by.
_FLUX2_MODULATION = (
    "double_stream_modulation_img.lin.weight",
    "double_stream_modulation_img.linear.weight",
)
_FLUX2_LAYOUTS: dict[str, tuple[tuple[int, int, int, bool], str]] = {
    "dev": ((8, 48, 15360, True), " (Mistral-Small-3.1 text encoder)"),
    "klein-4b": ((5, 20, 7680, False), ", distilled or base (Qwen3-4B text encoder)"),
    "klein-9b": ((8, 24, 12288, False), ", distilled or base (Qwen3-8B text encoder)"),
}


def _flux2_release(width: int, layout: tuple[int, int, int, bool]) -> tuple[str, str] | None:
    """(variant, what it is) of the released FLUX.2 model ``width`` wide with ``layout``
    (double, single, text width, guidance), or None for no released size."""
    size = model_size("flux2", width)
    released = _FLUX2_LAYOUTS.get(size.variant) if size else None
    if size is None or released is None or released[0] != layout:
        return None
    return size.variant, size.label + released[1]


def _flux2(
    view: KeyView, hints: Hints, *, double: str, single: str, img_in: str, txt_in: str
) -> list[Match]:
    """FLUX.2 (Nov 2025): Flux's block names with shared modulation, 128 input channels and a
    32-channel VAE; family ``flux2``, never flux1."""
    marker = next((m for m in _FLUX2_MODULATION if m in view), None)
    img, txt = view.shape(img_in), view.shape(txt_in)
    if marker is None or img is None or txt is None or len(img) != 2 or len(txt) != 2:
        return []
    depth, depth_single = view.count_blocks(double), view.count_blocks(single)
    guidance = view.has_prefix("guidance_in.") or view.has_prefix("time_guidance_embed.guidance_")
    released = _flux2_release(img[0], (depth, depth_single, txt[1], guidance))
    variant, release = released or (None, "a FLUX.2 model of no released size")
    facts: dict[str, object] = {
        "architecture": "flux2",
        "hidden_size": img[0],
        "depth": depth,
        "num_layers": depth,
        "num_single_layers": depth_single,
        "in_channels": img[1],
        "latent_channels": 32,
        "context_dim": txt[1],
        "guidance_embed": guidance,
    }
    evidence = [
        f"{view.full(marker)} present: shared modulation layers, the FLUX.2 layout (Flux.1 "
        "modulates per block and has vector_in)",
        f"{view.says(img_in)}; {depth} double + {depth_single} single blocks at width {img[0]}, "
        f"text features {txt[1]} = {release}",
        "FLUX.2 is not Flux.1: it needs its own text encoder and 32-channel VAE",
    ]
    score = 0.95 if released else 0.7
    return [_flow(Match("flux2", score, evidence, variant, _FLOW, facts), hints)]


def _chroma_radiance(
    view: KeyView, hints: Hints, *, double: str, single: str, txt_in: str
) -> list[Match]:
    """Chroma1-Radiance: Chroma's blocks in pixel space (a 16x16 conv patchifier, no VAE)."""
    patch = view.shape("img_in_patch.weight")
    if patch is None or len(patch) != 4 or "distilled_guidance_layer.in_proj.weight" not in view:
        return []
    depth, depth_single = view.count_blocks(double), view.count_blocks(single)
    facts: dict[str, object] = {
        "hidden_size": patch[0],
        "depth": depth,
        "num_layers": depth,
        "num_single_layers": depth_single,
        "in_channels": patch[1],
        "pixel_space": True,
        "patch_size": patch[2],
        "context_dim": view.dim(txt_in, 1),
        "guidance_embed": False,
    }
    evidence = [
        f"{view.says('img_in_patch.weight')}: {patch[2]}x{patch[3]} patches of RGB pixels, "
        "no img_in: a pixel-space model, no VAE",
        f"{view.full('distilled_guidance_layer.in_proj.weight')} + {depth} double / "
        f"{depth_single} single blocks: Chroma's transformer = Chroma1-Radiance",
    ]
    if view.has_prefix("nerf_"):
        evidence.append("nerf_* layers: Radiance's per-patch NeRF decoder head")
    return [_flow(Match("chroma", 0.9, evidence, "radiance", _FLOW, facts), hints)]


def _flux_bfl(view: KeyView, hints: Hints) -> list[Match]:
    return _flux_like(
        view,
        hints,
        double="double_blocks.",
        single="single_blocks.",
        img_in="img_in.weight",
        txt_in="txt_in.weight",
        guidance="guidance_in.in_layer.weight",
        vector="vector_in.in_layer.weight",
        modulation="img_mod.lin.bias",
    )


# Timestep embedders of Flux-like diffusers models that are not Flux (Flux has
# ``time_text_embed.*``): Bria 3.x / Bria FIBO / LongCat-Image (``time_embed.*``), Ovis-Image and
# FLUX.3 (bare ``timestep_embedder.*``); :data:`_UNNAMED` names them.
_NOT_FLUX_TIME = (
    "time_embed.timestep_embedder.linear_1.weight",
    "timestep_embedder.linear_1.weight",
)


def _flux_diffusers(view: KeyView, hints: Hints) -> list[Match]:
    if _present(view, _NOT_FLUX_TIME):
        return []
    return _flux_like(
        view,
        hints,
        double="transformer_blocks.",
        single="single_transformer_blocks.",
        img_in="x_embedder.weight",
        txt_in="context_embedder.weight",
        guidance="time_text_embed.guidance_embedder.linear_1.weight",
        vector="time_text_embed.text_embedder.linear_1.weight",
        modulation="norm1.linear.bias",
    )


def _sd3_like(
    view: KeyView, hints: Hints, *, blocks: str, x_embed: str, pos: str, attn2: str, qk_norm: str
) -> list[Match]:
    x = view.shape(x_embed)
    depth = view.count_blocks(blocks)
    if x is None or len(x) != 4 or depth == 0:
        return []
    hidden = x[0]
    pos_shape = view.shape(pos)
    positions = pos_shape[1] if pos_shape is not None and len(pos_shape) == 3 else None
    has_attn2 = view.first(attn2) is not None
    has_qk = view.first(qk_norm) is not None
    facts: dict[str, object] = {
        "hidden_size": hidden,
        "depth": depth,
        "num_layers": depth,
        "in_channels": x[1],
        "latent_channels": x[1],
        "context_dim": view.dim("context_embedder.weight", 1),
        "pos_embed_positions": positions,
    }
    evidence = [f"{view.says(x_embed)}: MMDiT, {depth} joint blocks at width {hidden}"]
    if positions is not None:
        evidence.append(f"{view.says(pos)}: {positions} positions")
    large, medium = model_size("sd3.5", hidden), model_size("sd3", hidden)
    if depth == 38 and large is not None and large.variant == "large":
        family, variant = "sd3.5", large.variant
        evidence.append(f"38 blocks at {hidden} = {large.label} (Large Turbo shares this layout)")
    elif has_attn2:
        family, variant = "sd3.5", "medium"
        evidence.append(
            f"{view.full(view.first(attn2) or attn2)} present: MMDiT-X self-attention "
            "blocks = SD3.5 medium"
        )
    elif depth == 24 and medium is not None and not has_qk:
        family, variant = "sd3", medium.variant
        evidence.append(f"24 blocks at {hidden} without attn2 or q/k norms = {medium.label}")
    else:
        evidence.append(f"{depth} blocks at {hidden}: no released SD3/3.5 model")
        return [_flow(Match("sd3", 0.4, evidence, None, _FLOW, facts), hints)]
    return [_flow(Match(family, 0.95, evidence, variant, _FLOW, facts), hints)]


def _sd3_sai(view: KeyView, hints: Hints) -> list[Match]:
    return _sd3_like(
        view,
        hints,
        blocks="joint_blocks.",
        x_embed="x_embedder.proj.weight",
        pos="pos_embed",
        attn2="x_block.attn2.qkv.weight",
        qk_norm="x_block.attn.ln_q.weight",
    )


def _sd3_diffusers(view: KeyView, hints: Hints) -> list[Match]:
    if "time_text_embed.text_embedder.linear_1.weight" not in view:
        return []
    return _sd3_like(
        view,
        hints,
        blocks="transformer_blocks.",
        x_embed="pos_embed.proj.weight",
        pos="pos_embed.pos_embed",
        attn2=".attn2.to_q.weight",
        qk_norm=".attn.norm_q.weight",
    )


def _z_image(view: KeyView, hints: Hints) -> list[Match]:
    cap = view.shape("cap_embedder.1.weight")
    layers = view.count_blocks("layers.")
    if cap is None or len(cap) != 2 or layers == 0 or not view.has_prefix("noise_refiner."):
        return []
    hidden, caption = cap
    x_key = "x_embedder.weight" if "x_embedder.weight" in view else "all_x_embedder.2-1.weight"
    facts: dict[str, object] = {
        "hidden_size": hidden,
        "depth": layers,
        "num_layers": layers,
        "context_dim": caption,
        "in_channels": view.dim(x_key, 1),
        "latent_channels": 16,
    }
    evidence = [
        f"{view.says('cap_embedder.1.weight')}: caption features {caption} into width {hidden}",
        f"noise_refiner/context_refiner + {layers} main layers (S3-DiT / NextDiT layout)",
    ]
    if caption == 2560:
        evidence.append("caption width 2560 = Qwen3-4B text encoder: Z-Image")
        evidence.append(_z_image_branch(view))
        return [_flow(Match("z-image", 0.95, evidence, None, _FLOW, facts), hints)]
    if (caption, hidden) == (2304, 2304):
        return [_lumina2(evidence, facts, hints)]
    evidence.append(f"caption width {caption}: Lumina-2 style, not Z-Image (2560)")
    return [_flow(Match("z-image", 0.25, evidence, None, _FLOW, facts), hints)]


def _z_image_branch(view: KeyView) -> str:
    """What the layout says of the model beyond Z-Image: its SigLIP image branch, if any."""
    if view.has_prefix("siglip_embedder."):
        return (
            f"{view.full('siglip_embedder.')}* and siglip_refiner: a SigLIP image-conditioning "
            "branch (the Z-Image Omni / Edit layout): an image-conditioned Z-Image, not the "
            "text-to-image base or Turbo"
        )
    return "Z-Image base and Turbo share this layout"


def _lumina2(evidence: list[str], facts: dict[str, object], hints: Hints) -> Match:
    facts["architecture"] = "lumina2"
    evidence.append(
        "width 2304 with caption width 2304 (Gemma-2-2B) = Lumina Image 2.0 (NetaYume Lumina and "
        "other finetunes), not Z-Image (3840 / Qwen3-4B 2560)"
    )
    return _flow(Match("lumina2", 0.95, evidence, None, _FLOW, facts), hints)


def _lumina2_diffusers(view: KeyView, hints: Hints) -> list[Match]:
    cap = view.shape("time_caption_embed.caption_embedder.1.weight")
    layers = view.count_blocks("layers.")
    # Lumina-Next shares time_caption_embed but has no refiners, OmniGen2 adds reference-image
    # modules (both :data:`_UNNAMED` layouts)
    if cap is None or len(cap) != 2 or layers == 0 or not view.has_prefix("noise_refiner."):
        return []
    if any(name in view for name in _OMNIGEN2_MODULES):
        return []
    hidden, caption = cap
    facts: dict[str, object] = {
        "hidden_size": hidden,
        "depth": layers,
        "num_layers": layers,
        "context_dim": caption,
        "in_channels": view.dim("x_embedder.weight", 1),
        "latent_channels": 16,
    }
    evidence = [
        f"{view.says('time_caption_embed.caption_embedder.1.weight')}: caption features "
        f"{caption} into width {hidden}, {layers} layers (diffusers Lumina2Transformer2DModel)"
    ]
    if (caption, hidden) == (2304, 2304):
        return [_lumina2(evidence, facts, hints)]
    facts["architecture"] = "lumina2"
    evidence.append(
        "no released Lumina 2 size (2304 wide, Gemma-2-2B captions); the names are diffusers' "
        "Lumina2Transformer2DModel's"
    )
    return [_flow(Match("lumina2", 0.5, evidence, None, _FLOW, facts), hints)]


# OmniGen2: Lumina 2's diffusers names plus reference-image modules (comfy/ldm/omnigen).
_OMNIGEN2_MODULES = ("image_index_embedding", "ref_image_patch_embedder.weight")


def _qwen_image(view: KeyView, hints: Hints) -> list[Match]:
    txt = view.shape("txt_in.weight")
    layers = view.count_blocks("transformer_blocks.")
    # nunchaku's SVDQuant files keep the modulation AWQ-quantized: img_mod.1.qweight, no .weight
    mod = view.first("img_mod.1.weight") or view.first("img_mod.1.qweight")
    if txt is None or layers == 0 or mod is None:
        return []
    hidden, joint = txt
    facts: dict[str, object] = {
        "hidden_size": hidden,
        "depth": layers,
        "num_layers": layers,
        "context_dim": joint,
        "in_channels": view.dim("img_in.weight", 1),
        "latent_channels": 16,
    }
    evidence = [
        f"{view.says('txt_in.weight')}: text features {joint} (Qwen2.5-VL) into width {hidden}",
        f"{view.full(mod)} + txt_mod: {layers} dual-stream MMDiT blocks",
    ]
    variant = _qwen_variant(view, evidence)
    score = 0.95 if joint == 3584 else 0.5
    return [_flow(Match("qwen-image", score, evidence, variant, _FLOW, facts), hints)]


# ComfyUI's marker of Qwen-Image-Edit-2511 (its reference latents get timestep zero), an empty
# tensor in Comfy-Org's files; Qwen-Image-Layered's extra timestep condition (RGB vs layers).
_QWEN_EDIT_2511_MARKER = "__index_timestep_zero__"
_QWEN_LAYERED_KEY = "time_text_embed.addition_t_embedding.weight"


def _qwen_variant(view: KeyView, evidence: list[str]) -> str | None:
    """``edit-2511`` or ``layered`` when a marker says so; else the shared layout is named."""
    if _QWEN_EDIT_2511_MARKER in view:
        evidence.append(
            f"{view.full(_QWEN_EDIT_2511_MARKER)} marker: Qwen-Image-Edit-2511 (an image-editing "
            "model, ComfyUI's index_timestep_zero reference method), not text-to-image"
        )
        return "edit-2511"
    if _QWEN_LAYERED_KEY in view:
        evidence.append(
            f"{view.says(_QWEN_LAYERED_KEY)}: the extra timestep condition of Qwen-Image-Layered "
            "(RGBA layer decomposition of an input image), not text-to-image"
        )
        return "layered"
    evidence.append(
        "Qwen-Image (text-to-image, also 2512) and the editing models Qwen-Image-Edit, -2509 "
        "and (without ComfyUI's __index_timestep_zero__ marker) -2511 share this layout: the "
        "weights cannot say whether this is an editing model"
    )
    return None


def _hidream(view: KeyView, hints: Hints) -> list[Match]:
    double = view.count_blocks("double_stream_blocks.")
    single = view.count_blocks("single_stream_blocks.")
    x = view.shape("x_embedder.proj.weight")
    if double == 0 or x is None:
        return []
    experts = view.count_blocks("double_stream_blocks.0.block.ff_i.experts.")
    facts: dict[str, object] = {
        "hidden_size": x[0],
        "depth": double,
        "num_layers": double,
        "num_single_layers": single,
        "in_channels": x[1] // 4,
        "latent_channels": 16,
        "num_routed_experts": experts,
    }
    evidence = [
        f"{view.says('x_embedder.proj.weight')}: {double} double-stream + {single} "
        f"single-stream blocks at width {x[0]}",
        f"{experts} routed experts per feed-forward (MoE): HiDream-I1",
        "HiDream-I1 full, dev and fast share this layout",
    ]
    return [_flow(Match("hidream", 0.95, evidence, None, _FLOW, facts), hints)]


@dataclass(frozen=True)
class _Check:
    """A tensor a family always has (of ``rank`` dimensions, when given); without it the file is
    an unknown transformer: ``architecture``, for the reason ``why``."""

    key: str
    rank: int | None
    architecture: str
    why: str


@dataclass(frozen=True)
class _Anchored:
    """A DiT family told by tensor names only it has (so it is never taken for a family it
    resembles): two of its three anchors, then every check; ``size_key``'s shape shows its size,
    which ``note`` reads."""

    family: str
    label: str
    anchors: tuple[str, str, str]
    size_key: str
    note: str
    checks: tuple[_Check, ...] = ()
    # (name prefix, what it shows): modules of a derived model of the family, for evidence
    extras: tuple[tuple[str, str], ...] = ()
    # a rectified-flow model (prediction type flow) unless it has a ``not_flow`` module
    flow: bool = False
    not_flow: tuple[tuple[str, str], ...] = ()
    # names every model of the family has: without one, the anchors are another model's names
    # (a :data:`_UNNAMED` layout), never this family
    requires: tuple[str, ...] = ()


# Wan's released widths (the first dimension of its patch embedding).
_WAN_14B, _WAN_1_3B, _WAN_5B = (model_width("wan", size) for size in ("14b", "1.3b", "ti2v-5b"))
_SANA_VIDEO = "a video model of SANA's blocks (SANA-Video), no family modelsafe identifies"
# Modules of Wan derivatives, the same in both namings (Wan's VACE and Animate code, diffusers').
_WAN_EXTRAS = (
    (
        "vace_blocks.",
        "VACE control blocks: Wan VACE (all-in-one video creation and editing: control video, "
        "mask and reference images beside the prompt), not plain text-to-video",
    ),
    (
        "motion_encoder.",
        "a motion encoder (with pose_patch_embedding and face modules): Wan 2.2 Animate 14B "
        "(character animation and replacement from a driving video)",
    ),
)
_ANCHORED: tuple[_Anchored, ...] = (
    _Anchored(
        "wan",
        "Wan 2.1/2.2 video transformer (original naming)",
        ("head.modulation", "blocks.0.self_attn.q.weight", "blocks.0.cross_attn.k.weight"),
        "patch_embedding.weight",
        f"[{_WAN_14B}, 16, ...]: 14B text-to-video (also each expert of Wan 2.2 A14B), "
        f"[{_WAN_14B}, 36, ...]: 14B image-to-video, [{_WAN_1_3B}, 16, ...]: 1.3B, "
        f"[{_WAN_5B}, 48, ...]: Wan 2.2 TI2V 5B (48-channel Wan 2.2 VAE); UMT5-XXL text encoder",
        extras=_WAN_EXTRAS,
        flow=True,
    ),
    _Anchored(
        "wan",
        "Wan 2.1/2.2 video transformer (diffusers naming)",
        # Wan's condition embedder is always among the two: attn1/attn2 blocks are any DiT's
        # (HunyuanDiT's diffusers names have them too).
        (
            "condition_embedder.time_proj.weight",
            "blocks.0.attn1.to_q.weight",
            "condition_embedder.text_embedder.linear_1.weight",
        ),
        "patch_embedding.weight",
        f"[{_WAN_14B}, 16, ...]: 14B, [{_WAN_1_3B}, 16, ...]: 1.3B, [{_WAN_5B}, 48, ...]: "
        "Wan 2.2 TI2V 5B",
        extras=_WAN_EXTRAS,
        flow=True,
        # JoyImage-Edit has Wan's condition embedder over double-stream blocks of its own
        requires=("patch_embedding.weight", "blocks.0.attn1.to_q.weight"),
    ),
    _Anchored(
        "kandinsky5",
        "Kandinsky 5.0 transformer",
        (
            "visual_transformer_blocks.0.self_attention.to_query.weight",
            "text_transformer_blocks.0.self_attention.to_query.weight",
            "visual_embeddings.in_layer.weight",
        ),
        "visual_embeddings.in_layer.weight",
        "Qwen2.5-VL + CLIP text features; Kandinsky 5.0 Video and Image, Lite and Pro, share "
        "these names",
        flow=True,
        # Kandinsky 6's text-free super-resolution transformer has the visual blocks only
        requires=("text_transformer_blocks.0.self_attention.to_query.weight",),
    ),
    _Anchored(
        "sana",
        "SANA linear-attention DiT (original naming)",
        (
            "blocks.0.cross_attn.q_linear.weight",
            "blocks.0.cross_attn.kv_linear.weight",
            "y_embedder.y_proj.fc1.weight",
        ),
        "x_embedder.proj.weight",
        "SANA 1.0/1.5/Sprint, Gemma-2 text features, 32-channel DC-AE latents",
        (
            _Check(
                "blocks.0.mlp.inverted_conv.conv.weight",
                None,
                "pixart",
                "no GLUMBConv MLP (mlp.inverted_conv), which every SANA block has: PixArt-α/Σ's "
                "names (SANA was built on PixArt's code), no family modelsafe identifies",
            ),
            _Check(
                "x_embedder.proj.weight", 4, "sana-video", "no 2-D patch embedding: " + _SANA_VIDEO
            ),
        ),
    ),
    _Anchored(
        "sana",
        "SANA linear-attention DiT (diffusers SanaTransformer2DModel)",
        (
            "transformer_blocks.0.ff.conv_inverted.weight",
            "caption_projection.linear_1.weight",
            "caption_norm.weight",
        ),
        "patch_embed.proj.weight",
        "SANA 1.0/1.5/Sprint, Gemma-2 text features, 32-channel DC-AE latents",
        (
            _Check(
                "patch_embed.proj.weight",
                4,
                "sana-video",
                "no 2-D patch embedding patch_embed.proj (SANA-Video has a 3-D patch_embedding): "
                + _SANA_VIDEO,
            ),
        ),
        flow=True,
        not_flow=(
            (
                "time_embed.guidance_embedder.",
                "a guidance embedder: SANA-Sprint, distilled to TrigFlow (sCM), not plain flow "
                "matching: prediction type left unset",
            ),
        ),
    ),
)


def _present(view: KeyView, anchors: tuple[str, ...]) -> list[str]:
    return [a for a in anchors if a in view]


def _failed(view: KeyView, checks: tuple[_Check, ...]) -> _Check | None:
    for check in checks:
        shape = view.shape(check.key)
        if shape is None or (check.rank is not None and len(shape) != check.rank):
            return check
    return None


def _anchored(spec: _Anchored, view: KeyView, hints: Hints) -> list[Match]:
    present = _present(view, spec.anchors)
    if len(present) < 2 or len(_present(view, spec.requires)) < len(spec.requires):
        return []
    names = f"{view.full(present[0])}, {view.full(present[1])}"
    facts: dict[str, object] = {}
    size = view.shape(spec.size_key)
    if size:
        facts["hidden_size"] = size[0]
    if size and len(size) > 1:
        facts["in_channels"] = size[1]
    failed = _failed(view, spec.checks)
    if failed is not None:
        facts["architecture"] = failed.architecture
        evidence = [
            f"{names}: names of the {spec.label}",
            f"{view.says(failed.key)}: {failed.why}",
        ]
        return [Match("unknown", 0.6, evidence, None, None, facts)]
    facts["architecture"] = spec.family
    evidence = [f"{names}: the {spec.label} layout"]
    if size is not None:
        evidence.append(f"{view.says(spec.size_key)} ({spec.note})")
    evidence += [f"{view.full(p)}*: {what}" for p, what in spec.extras if view.has_prefix(p)]
    if spec.family == "wan" and size:
        facts.update(_wan_latents(size))
    score = 0.9 if len(present) == len(spec.anchors) else 0.75
    not_flow = [f"{view.full(p)}*: {why}" for p, why in spec.not_flow if view.has_prefix(p)]
    if not spec.flow or not_flow:
        return [Match(spec.family, score, evidence + not_flow, None, None, facts)]
    return [_flow(Match(spec.family, score, evidence, None, _FLOW, facts), hints)]


# Wan's patch embedding (width, input) -> the latent channels it works in: the Wan 2.1 VAE's 16
# for text-to-video (input 16) and image-to-video (36 = 16 + 4 mask + 16 image channels) at any
# width; the Wan 2.2 VAE's 48 for TI2V 5B only (3072 wide: Fun-Control models take 48 inputs too,
# 16-channel latents plus their control). Other inputs say nothing of the latents.
_WAN_LATENTS = {16: 16, 36: 16}
_WAN_TI2V_5B = ((_WAN_5B, 48), 48)


def _wan_latents(size: tuple[int, ...]) -> dict[str, object]:
    if len(size) < 2:
        return {}
    latent = _WAN_LATENTS.get(size[1])
    if (size[0], size[1]) == _WAN_TI2V_5B[0]:
        latent = _WAN_TI2V_5B[1]
    return {"latent_channels": latent} if latent else {}


@dataclass(frozen=True)
class _Unnamed:
    """A DiT of no family modelsafe identifies, told by names only it has (all three anchors):
    an ``unknown`` transformer with ``facts.architecture`` and the reason, never a family it
    resembles. ``width_key`` is its patch embedding (first dimension: the model width);
    ``markers`` are (tensor, architecture, what it is) of a related model sharing the names."""

    architecture: str
    label: str
    naming: str
    anchors: tuple[str, str, str]
    width_key: str
    blocks: str
    markers: tuple[tuple[str, str, str], ...] = ()
    # names of a whole model that holds these modules (another probe's layout): not this one
    without: tuple[str, ...] = ()
    # (tensor, its input width, architecture, what it is): a related model told by the width of
    # its text features where the names are the same
    inputs: tuple[tuple[str, int, str, str], ...] = ()


_LTX_2 = "LTX-2's audio stream: LTX-2 (audio-video), not LTX-Video"
_PIXART = "PixArt-α/Σ (Allegro, a video model, shares these names)"
_COSMOS_1 = "Cosmos-Predict1 (Cosmos 1.0 Diffusion), not Predict2"
_COSMOS_2_5 = "Cosmos-Predict2.5's text projection, not Predict2"
_FLUX_LIKE = "Flux-like double/single blocks, but neither Flux's names nor its pooled text vector"
# Image DiTs of diffusers (diffusers naming; the anchors checked against every other class).
_IMAGE_DITS: tuple[_Unnamed, ...] = (
    _Unnamed(
        "flux3",
        "FLUX.3 (BFL's image model: per-mode blocks for the image and its condition, shared "
        "stream modulations; not Flux.1 or FLUX.2)",
        "diffusers",
        (
            "early_stream_modulations.image.linear.weight",
            "x_embedders.image.weight",
            "mode_blocks.image.0.attn.to_q.weight",
        ),
        "x_embedders.image.weight",
        "mode_blocks.image.",
    ),
    _Unnamed(
        "qwen-image-2.1",
        "Qwen-Image 2.1 (single modulation, gated MLPs and a normed text input; not the "
        "Qwen-Image / Edit layout)",
        "diffusers",
        (
            "txt_in.text_norm.weight",
            "txt_in.in_layer.weight",
            "transformer_blocks.0.img_mlp.gate_layer.weight",
        ),
        "img_in.weight",
        "transformer_blocks.",
    ),
    _Unnamed(
        "krea2",
        "Krea 2 (single-stream MMDiT with a layer-wise text-fusion module)",
        "diffusers",
        (
            "text_fusion.projector.weight",
            "time_mod_proj.weight",
            "text_fusion.layerwise_blocks.0.attn.to_q.weight",
        ),
        "img_in.weight",
        "transformer_blocks.",
    ),
    _Unnamed(
        "ideogram4",
        "Ideogram 4 (flow-matching DiT over LLM hidden states)",
        "diffusers",
        ("llm_cond_proj.weight", "embed_image_indicator.weight", "adaln_proj.weight"),
        "input_proj.weight",
        "layers.",
    ),
    _Unnamed(
        "glm-image",
        "GLM-Image (Z.ai's DiT decoder with glyph and prior-token projectors)",
        "diffusers",
        (
            "glyph_projector.net.0.proj.weight",
            "prior_token_embedding.weight",
            "image_projector.proj.weight",
        ),
        "image_projector.proj.weight",
        "transformer_blocks.",
    ),
    _Unnamed(
        "cogview",
        "CogView3-Plus / CogView4 (THUDM's image DiTs share these names: T5-XXL resp. GLM-4 "
        "text features, both 4096 wide)",
        "diffusers",
        (
            "patch_embed.text_proj.weight",
            "time_condition_embed.condition_embedder.linear_1.weight",
            "transformer_blocks.0.norm1.linear.weight",
        ),
        "patch_embed.proj.weight",
        "transformer_blocks.",
    ),
    _Unnamed(
        "ernie-image",
        "ERNIE-Image (Baidu's single-stream image DiT)",
        "diffusers",
        ("text_proj.weight", "layers.0.adaLN_sa_ln.weight", "final_norm.linear.weight"),
        "x_embedder.proj.weight",
        "layers.",
    ),
    _Unnamed(
        "prx",
        "PRX (Photoroom's text-to-image DiT, T5-Gemma text features)",
        "diffusers",
        (
            "blocks.0.attention.img_qkv_proj.weight",
            "blocks.0.attention.txt_kv_proj.weight",
            "time_in.in_layer.weight",
        ),
        "img_in.weight",
        "blocks.",
    ),
    _Unnamed(
        "nucleus-moe-image",
        "NucleusMoE-Image (a mixture-of-experts image DiT, Qwen-VL text features)",
        "diffusers",
        (
            "transformer_blocks.0.encoder_proj.weight",
            "time_text_embed.norm.weight",
            "txt_norm.weight",
        ),
        "img_in.weight",
        "transformer_blocks.",
    ),
    _Unnamed(
        "bria",
        f"Bria 3.x ({_FLUX_LIKE}; T5-XXL text features)",
        "diffusers",
        (
            "time_embed.timestep_embedder.linear_1.weight",
            "single_transformer_blocks.0.proj_mlp.weight",
            "context_embedder.weight",
        ),
        "x_embedder.weight",
        "transformer_blocks.",
        without=("caption_projection.0.linear.weight",),
        inputs=(
            (
                "context_embedder.weight",
                3584,
                "longcat-image",
                "LongCat-Image (Meituan; Bria's Flux-like layout over Qwen2.5-VL text features)",
            ),
        ),
    ),
    _Unnamed(
        "bria-fibo",
        f"Bria FIBO ({_FLUX_LIKE}; a caption projection of its structured-prompt VLM)",
        "diffusers",
        (
            "caption_projection.0.linear.weight",
            "time_embed.timestep_embedder.linear_1.weight",
            "single_transformer_blocks.0.proj_mlp.weight",
        ),
        "x_embedder.weight",
        "transformer_blocks.",
    ),
    _Unnamed(
        "bria-fibo-2",
        "Bria FIBO 2 (NextDiT-style refiners with a perceiver over the text features)",
        "diffusers",
        ("perceiver.latent_queries", "noise_refiner.0.attention.to_q.weight", "x_embedder.weight"),
        "x_embedder.weight",
        "layers.",
    ),
    _Unnamed(
        "ovis-image",
        f"Ovis-Image ({_FLUX_LIKE}; a normed Ovis text input)",
        "diffusers",
        (
            "context_embedder_norm.weight",
            "timestep_embedder.linear_1.weight",
            "single_transformer_blocks.0.proj_mlp.weight",
        ),
        "x_embedder.weight",
        "transformer_blocks.",
    ),
    _Unnamed(
        "dit",
        "DiT (Meta's class-conditional ImageNet DiT, 1000 labels, 4-channel SD VAE): no text",
        "diffusers",
        (
            "transformer_blocks.0.norm1.emb.class_embedder.embedding_table.weight",
            "proj_out_1.weight",
            "proj_out_2.weight",
        ),
        "pos_embed.proj.weight",
        "transformer_blocks.",
    ),
    _Unnamed(
        "pixart",
        _PIXART + ", here without the caption projection",
        "diffusers",
        (
            "adaln_single.emb.timestep_embedder.linear_1.weight",
            "pos_embed.proj.weight",
            "transformer_blocks.0.attn2.to_k.weight",
        ),
        "pos_embed.proj.weight",
        "transformer_blocks.",
        without=("caption_projection.linear_1.weight",),
    ),
)
# Video DiTs of diffusers.
_VIDEO_DITS: tuple[_Unnamed, ...] = (
    _Unnamed(
        "joyimage-edit",
        "JoyImage-Edit (JD's image-editing DiT: HunyuanVideo-style double-stream blocks with "
        "Wan's condition embedder; not a Wan model, of no Wan size)",
        "diffusers",
        (
            "condition_embedder.time_proj.weight",
            "double_blocks.0.img_mod.modulate_table",
            "double_blocks.0.attn.img_attn_qkv.weight",
        ),
        "img_in.weight",
        "double_blocks.",
    ),
    _Unnamed(
        "kandinsky6",
        "Kandinsky 6 (an audio-video model: video and audio streams, each with its own text "
        "blocks; not Kandinsky 5)",
        "diffusers",
        (
            "video_text_transformer_blocks.0.attn.to_query.weight",
            "audio_embeddings.in_layer.weight",
            "visual_embeddings.in_layer.weight",
        ),
        "visual_embeddings.in_layer.weight",
        "visual_transformer_blocks.",
    ),
    _Unnamed(
        "kandinsky6-sr",
        "Kandinsky 6's video super-resolution transformer (text-free: Kandinsky 5's visual "
        "blocks without its text blocks; not a text-to-video model)",
        "diffusers",
        (
            "pooled_bias",
            "visual_transformer_blocks.0.visual_modulation.out_layer.weight",
            "visual_embeddings.in_layer.weight",
        ),
        "visual_embeddings.in_layer.weight",
        "visual_transformer_blocks.",
        without=("text_transformer_blocks.0.self_attention.to_query.weight",),
    ),
    _Unnamed(
        "motif-video",
        "Motif-Video (HunyuanVideo-style double/single blocks without its token refiner or "
        "CLIP-L pooled vector; an MLP text input)",
        "diffusers",
        (
            "context_embedder.linear_1.weight",
            "time_text_embed.timestep_embedder.linear_1.weight",
            "single_transformer_blocks.0.attn.to_q.weight",
        ),
        "x_embedder.proj.weight",
        "transformer_blocks.",
    ),
    _Unnamed(
        "minimax-h3",
        "MiniMax H3 (an audio-video model: video and audio inputs into one token-refined DiT)",
        "diffusers",
        (
            "audio_proj_in.weight",
            "token_refiner.refiner_blocks.0.attn.to_q.weight",
            "time_embedder.linear_1.weight",
        ),
        "proj_in.weight",
        "transformer_blocks.",
    ),
    _Unnamed(
        "wan-animate-2",
        "Wan-Animate 2 (Wan 14B image-to-video blocks with in-context reference attention; "
        "attention names of its own, not Wan's)",
        "original",
        (
            "head.modulation",
            "blocks.0.self_attn.to_q.weight",
            "blocks.0.cross_attn.add_k_proj.weight",
        ),
        "patch_embedding.weight",
        "blocks.",
    ),
    _Unnamed(
        "cosmos-transfer",
        "a Cosmos ControlNet (Cosmos-Transfer control blocks beside a Cosmos-Predict model; no "
        "transformer of its own)",
        "diffusers",
        (
            "patch_embed_base.proj.weight",
            "control_blocks.0.after_proj.weight",
            "time_embed.t_embedder.linear_1.weight",
        ),
        "patch_embed.proj.weight",
        "control_blocks.",
    ),
)
# Audio generators of diffusers (their transformers work on audio latents: no image model).
_AUDIO_DITS: tuple[_Unnamed, ...] = (
    _Unnamed(
        "ace-step",
        "ACE-Step 1.5 (a music-generation transformer over audio latents: an audio model, not "
        "an image or video model)",
        "diffusers",
        ("proj_in_conv.weight", "layers.0.cross_attn_norm.weight", "time_embed.time_proj.weight"),
        "proj_in_conv.weight",
        "layers.",
    ),
    _Unnamed(
        "minimax-music-3",
        "MiniMax Music 3 (a music-generation transformer: an audio model, not an image or "
        "video model)",
        "diffusers",
        ("preprocess_conv.weight", "postprocess_conv.weight", "transformer_blocks.0.ff_in.weight"),
        "proj_in.weight",
        "transformer_blocks.",
    ),
)
_UNNAMED: tuple[_Unnamed, ...] = (
    _Unnamed(
        "omnigen2",
        "OmniGen2 (Lumina 2's NextDiT blocks with reference-image modules, Qwen2.5-VL-3B "
        "text features, Flux VAE), not Lumina Image 2.0",
        "diffusers",
        (*_OMNIGEN2_MODULES, "time_caption_embed.caption_embedder.1.weight"),
        "x_embedder.weight",
        "layers.",
    ),
    _Unnamed(
        "wan-vace",
        "a Wan 2.1 VACE module alone (control blocks and their 96-channel patch embedding, "
        "loaded beside a Wan 2.1 14B or 1.3B transformer; no transformer of its own)",
        "original",
        (
            "vace_patch_embedding.weight",
            "vace_blocks.0.before_proj.weight",
            "vace_blocks.0.after_proj.weight",
        ),
        "vace_patch_embedding.weight",
        "vace_blocks.",
        without=("patch_embedding.weight",),
    ),
    _Unnamed(
        "hunyuan-dit",
        "HunyuanDiT (Tencent's image DiT, CLIP + mT5 text features, 4-channel SD VAE)",
        "diffusers",
        (
            "time_extra_emb.pooler.positional_embedding",
            "text_embedding_padding",
            "blocks.0.attn2.to_k.weight",
        ),
        "pos_embed.proj.weight",
        "blocks.",
    ),
    _Unnamed(
        "hunyuan-dit",
        "HunyuanDiT (Tencent's image DiT, CLIP + mT5 text features, 4-channel SD VAE)",
        "original",
        ("pooler.positional_embedding", "mlp_t5.0.weight", "blocks.0.attn1.Wqkv.weight"),
        "x_embedder.proj.weight",
        "blocks.",
    ),
    _Unnamed(
        "lumina-next",
        "Lumina-Next (Gemma-2B captions, 4-channel SD VAE), not Lumina Image 2.0",
        "diffusers",
        (
            "patch_embedder.proj.weight",
            "time_caption_embed.caption_embedder.1.weight",
            "layers.0.attn2.to_k.weight",
        ),
        "patch_embedder.proj.weight",
        "layers.",
    ),
    _Unnamed(
        "lumina-next",
        "Lumina-Next (Gemma-2B captions, 4-channel SD VAE), not Lumina Image 2.0",
        "original",
        ("cap_embedder.1.weight", "layers.0.attention.wk_y.weight", "x_embedder.weight"),
        "x_embedder.weight",
        "layers.",
    ),
    _Unnamed(
        "ltx-video",
        "LTX-Video (Lightricks' video DiT, T5-XXL text features, 128-channel video VAE)",
        "diffusers",
        (
            "time_embed.emb.timestep_embedder.linear_1.weight",
            "caption_projection.linear_1.weight",
            "proj_in.weight",
        ),
        "proj_in.weight",
        "transformer_blocks.",
        (("audio_proj_in.weight", "ltx-2", _LTX_2),),
    ),
    _Unnamed(
        "ltx-video",
        "LTX-Video (Lightricks' video DiT, T5-XXL text features, 128-channel video VAE)",
        "original",
        (
            "adaln_single.emb.timestep_embedder.linear_1.weight",
            "caption_projection.linear_1.weight",
            "patchify_proj.weight",
        ),
        "patchify_proj.weight",
        "transformer_blocks.",
        (("audio_patchify_proj.weight", "ltx-2", _LTX_2),),
    ),
    _Unnamed(
        "pixart",
        _PIXART,
        "diffusers",
        (
            "adaln_single.emb.timestep_embedder.linear_1.weight",
            "caption_projection.linear_1.weight",
            "pos_embed.proj.weight",
        ),
        "pos_embed.proj.weight",
        "transformer_blocks.",
    ),
    _Unnamed(
        "cogvideox",
        "CogVideoX (THUDM's video DiT, T5-XXL text features)",
        "diffusers",
        ("patch_embed.text_proj.weight", "time_embedding.linear_1.weight", "norm_final.weight"),
        "patch_embed.proj.weight",
        "transformer_blocks.",
    ),
    _Unnamed(
        "mochi",
        "Mochi 1 (Genmo's asymmetric video DiT, T5-XXL text features, 12-channel video VAE)",
        "diffusers",
        ("time_embed.pooler.to_kv.weight", "time_embed.caption_proj.weight", "pos_frequencies"),
        "patch_embed.proj.weight",
        "transformer_blocks.",
    ),
    _Unnamed(
        "mochi",
        "Mochi 1 (Genmo's asymmetric video DiT, T5-XXL text features, 12-channel video VAE)",
        "original",
        ("t5_yproj.weight", "t5_y_embedder.to_kv.weight", "blocks.0.attn.qkv_x.weight"),
        "x_embedder.proj.weight",
        "blocks.",
    ),
    _Unnamed(
        "cosmos-predict2",
        "Cosmos-Predict2 (NVIDIA's world model DiT, T5 text features, Wan 2.1 VAE)",
        "diffusers",
        (
            "time_embed.t_embedder.linear_1.weight",
            "time_embed.norm.weight",
            "transformer_blocks.0.norm1.linear_1.weight",
        ),
        "patch_embed.proj.weight",
        "transformer_blocks.",
        (
            ("learnable_pos_embed.pos_emb_t", "cosmos-predict1", _COSMOS_1),
            ("crossattn_proj.0.weight", "cosmos-predict2.5", _COSMOS_2_5),
        ),
    ),
    _Unnamed(
        "cosmos-predict2",
        "Cosmos-Predict2 (NVIDIA's world model DiT, T5 text features, Wan 2.1 VAE)",
        "original",
        (
            "t_embedding_norm.weight",
            "blocks.0.adaln_modulation_self_attn.1.weight",
            "x_embedder.proj.1.weight",
        ),
        "x_embedder.proj.1.weight",
        "blocks.",
        (("crossattn_proj.0.weight", "cosmos-predict2.5", _COSMOS_2_5),),
    ),
    _Unnamed(
        "auraflow",
        "AuraFlow (fal's MMDiT, Pile-T5 text features, 4-channel SDXL VAE)",
        "diffusers",
        (
            "register_tokens",
            "time_step_proj.linear_1.weight",
            "joint_transformer_blocks.0.attn.add_q_proj.weight",
        ),
        "pos_embed.proj.weight",
        "joint_transformer_blocks.",
    ),
    _Unnamed(
        "auraflow",
        "AuraFlow (fal's MMDiT, Pile-T5 text features, 4-channel SDXL VAE)",
        "original",
        ("cond_seq_linear.weight", "init_x_linear.weight", "double_layers.0.attn.w1q.weight"),
        "init_x_linear.weight",
        "double_layers.",
    ),
    *_IMAGE_DITS,
    *_VIDEO_DITS,
    *_AUDIO_DITS,
)


def _unnamed(spec: _Unnamed, view: KeyView, hints: Hints) -> list[Match]:
    present = _present(view, spec.anchors)
    if len(present) < len(spec.anchors) or _present(view, spec.without):
        return []
    architecture, label = spec.architecture, spec.label
    evidence = [f"{', '.join(view.full(a) for a in present)}: the names of {label}"]
    marker = next((m for m in spec.markers if m[0] in view), None)
    if marker is not None:
        architecture, label = marker[1], marker[2]
        evidence.append(f"{view.says(marker[0])}: {label}")
    wide = next((i for i in spec.inputs if view.dim(i[0], 1) == i[1]), None)
    if wide is not None:
        architecture, label = wide[2], wide[3]
        evidence.append(f"{view.says(wide[0])}: {wide[1]}-wide text features = {label}")
    depth = view.count_blocks(spec.blocks)
    facts: dict[str, object] = {"architecture": architecture, "depth": depth}
    width = view.shape(spec.width_key)
    if width:
        facts["hidden_size"] = width[0]
        evidence.append(f"{view.says(spec.width_key)}: width {width[0]}, {depth} blocks")
    if width and len(width) >= 4:  # a conv patch embedding: its input is the latent channels
        facts["in_channels"] = width[1]
    evidence.append(f"{architecture} is no family modelsafe identifies")
    return [Match("unknown", 0.6, evidence, None, None, facts)]


@dataclass(frozen=True)
class _HunyuanNaming:
    """One naming of the HunyuanVideo / HunyuanImage 2.1 blocks: its anchors, the patch
    embedding conv and HunyuanVideo's input of the CLIP-L pooled vector (768 wide)."""

    naming: str
    anchors: tuple[str, str, str]
    patch: str
    pooled: str


_HUNYUAN: tuple[_HunyuanNaming, ...] = (
    _HunyuanNaming(
        "original",
        (
            "txt_in.individual_token_refiner.blocks.0.adaLN_modulation.1.weight",
            "double_blocks.0.img_attn_qkv.weight",
            "single_blocks.0.linear1.weight",
        ),
        "img_in.proj.weight",
        "vector_in.in_layer.weight",
    ),
    _HunyuanNaming(
        "diffusers",
        (
            "context_embedder_2.linear_1.weight",
            "context_embedder.token_refiner.refiner_blocks.0.attn.to_q.weight",
            "x_embedder.proj.weight",
        ),
        "x_embedder.proj.weight",
        "time_text_embed.text_embedder.linear_1.weight",
    ),
)
# HunyuanVideo's patches of video latents (1 frame x 2 x 2), and its VAE's latent channels.
_HUNYUAN_VIDEO_PATCH = (1, 2, 2)
_HUNYUAN_VIDEO_LATENTS = 16


def _hunyuan(names: _HunyuanNaming, view: KeyView, hints: Hints) -> list[Match]:
    """HunyuanVideo and HunyuanImage 2.1 share their block names; the patch embedding tells
    them (ComfyUI reads a 2-D patch as the image model). HunyuanVideo 1.5 and HunyuanImage 2.1's
    refiner (3-D, 1x1x1 patches) share them too, and nothing here tells those two apart."""
    present = _present(view, names.anchors)
    if len(present) < 2:
        return []
    patch = view.shape(names.patch)
    evidence = [
        f"{view.full(present[0])}, {view.full(present[1])}: the block names HunyuanVideo and "
        f"HunyuanImage 2.1 share ({names.naming} naming)"
    ]
    facts: dict[str, object] = {}
    if patch and len(patch) >= 2:
        facts.update(hidden_size=patch[0], in_channels=patch[1])
    if patch is not None and len(patch) == 4:
        facts.update(architecture="hunyuanimage2.1", latent_channels=patch[1])
        evidence.append(
            f"{view.says(names.patch)}: a 2-D patch embedding, an image model (HunyuanVideo's "
            "is a 3-D conv over frames) = HunyuanImage 2.1 (Qwen2.5-VL + ByT5 text features, "
            "64-channel latents of its own 32x VAE)"
        )
        score = 0.9 if patch[0] == 3584 else 0.7
        return [_flow(Match("hunyuanimage2.1", score, evidence, None, _FLOW, facts), hints)]
    if patch is not None and tuple(patch[2:]) == _HUNYUAN_VIDEO_PATCH and names.pooled in view:
        facts["architecture"] = "hunyuan-video"
        if patch[1] == _HUNYUAN_VIDEO_LATENTS:  # text-to-video: the latents alone
            facts["latent_channels"] = _HUNYUAN_VIDEO_LATENTS
        evidence.append(
            f"{view.says(names.patch)}: 1x2x2 patches of video latents, and "
            f"{view.says(names.pooled)} (the CLIP-L pooled vector) = HunyuanVideo (text-to-video; "
            "image-to-video and SkyReels take more input channels, FramePack shares the layout)"
        )
        score = 0.9 if patch[0] == 3072 else 0.75
        return [_flow(Match("hunyuan-video", score, evidence, None, _FLOW, facts), hints)]
    facts["architecture"] = "hunyuan"
    evidence.append(
        f"{view.says(names.patch)}: neither HunyuanImage 2.1's 2-D patches nor HunyuanVideo's "
        "1x2x2 ones beside a CLIP-L pooled vector; HunyuanVideo 1.5 and HunyuanImage 2.1's "
        "refiner (1x1x1 patches) share these names and the weights do not tell them apart: no "
        "family modelsafe identifies"
    )
    return [Match("unknown", 0.6, evidence, None, None, facts)]


def _anchored_probe(spec: _Anchored) -> Probe:
    return Probe(spec.family, "transformer", spec.anchors, partial(_anchored, spec))


def _unnamed_probe(spec: _Unnamed) -> Probe:
    name = f"{spec.architecture}-{spec.naming}"
    return Probe(name, "transformer", spec.anchors, partial(_unnamed, spec))


def _hunyuan_probe(names: _HunyuanNaming) -> Probe:
    return Probe(f"hunyuan-{names.naming}", "transformer", names.anchors, partial(_hunyuan, names))


PROBES: tuple[Probe, ...] = (
    Probe(
        "bfl",
        "transformer",
        ("double_blocks.0.img_attn.qkv.weight", "single_blocks.0.linear1.weight", "img_in.weight"),
        _flux_bfl,
    ),
    Probe(
        "diffusers-flux",
        "transformer",
        (
            "single_transformer_blocks.0.proj_out.weight",
            "x_embedder.weight",
            "context_embedder.weight",
        ),
        _flux_diffusers,
    ),
    Probe(
        "sai-mmdit",
        "transformer",
        ("joint_blocks.0.x_block.attn.qkv.weight", "x_embedder.proj.weight", "pos_embed"),
        _sd3_sai,
    ),
    Probe(
        "diffusers-sd3",
        "transformer",
        ("pos_embed.proj.weight", "pos_embed.pos_embed", "context_embedder.weight"),
        _sd3_diffusers,
    ),
    Probe(
        "z-image",
        "transformer",
        ("cap_embedder.1.weight", "noise_refiner.0.ffn_norm1.weight", "layers.0.ffn_norm1.weight"),
        _z_image,
    ),
    Probe(
        "qwen-image",
        "transformer",
        ("transformer_blocks.0.img_mod.1.weight", "txt_in.weight", "txt_norm.weight"),
        _qwen_image,
    ),
    Probe(
        "hidream",
        "transformer",
        (
            "double_stream_blocks.0.block.adaLN_modulation.1.bias",
            "x_embedder.proj.weight",
            "caption_projection.0.linear.weight",
        ),
        _hidream,
    ),
    Probe(
        "diffusers-lumina2",
        "transformer",
        (
            "time_caption_embed.caption_embedder.1.weight",
            "noise_refiner.0.ffn_norm1.weight",
            "layers.0.ffn_norm1.weight",
        ),
        _lumina2_diffusers,
    ),
    *(_anchored_probe(spec) for spec in _ANCHORED),
    *(_hunyuan_probe(names) for names in _HUNYUAN),
    *(_unnamed_probe(spec) for spec in _UNNAMED),
)
