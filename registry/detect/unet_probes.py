"""Probes for the UNet families: sd1, sd2, sdxl, sdxl_refiner (LDM and diffusers naming) and
Stable Cascade (Würstchen stages C and B).

The decisive shapes (all public facts of the released models):

- cross-attention context width, the second dim of ``attn2.to_k``: 768 SD1 (CLIP-L),
  1024 SD2 (OpenCLIP-H), 2048 SDXL base (CLIP-L + bigG), 1280 SDXL refiner (bigG);
- base channels (``conv_in`` out): 320, refiner 384; ``conv_in`` in: 4 normal, 9 inpaint,
  8 instruct-pix2pix, 5 SD2 depth;
- the ADM (``label_emb``/``add_embedding``) input: 2816 SDXL base, 2560 refiner, absent SD1/SD2.

SD-shaped UNets with temporal layers (SVD, ModelScope text-to-video, AnimateDiff's motion modules)
or cross-attentions of two widths (AudioLDM 2) are ``unknown`` UNets named in
``facts.architecture``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from modelsafe.registry.detect.prefixes import KeyView
from modelsafe.registry.detect.probe import Hints, Match, Probe, edm_vpred_markers


@dataclass(frozen=True)
class _UNetNames:
    """Where the decisive tensors live in one naming."""

    naming: str
    conv_in: str
    time: str
    adm: str
    conv_out: str
    blocks: str  # the numbered down-path container


LDM = _UNetNames(
    "ldm",
    "input_blocks.0.0.weight",
    "time_embed.0.weight",
    "label_emb.0.0.weight",
    "out.2.weight",
    "input_blocks.",
)
DIFFUSERS = _UNetNames(
    "diffusers",
    "conv_in.weight",
    "time_embedding.linear_1.weight",
    "add_embedding.linear_1.weight",
    "conv_out.weight",
    "down_blocks.",
)

_DEPTH = re.compile(r"^(.*)\.transformer_blocks\.(\d+)\.")

# (family, context width, base channels, adm width or None)
_SIGNATURES: tuple[tuple[str, int, int, int | None], ...] = (
    ("sd1", 768, 320, None),
    ("sd2", 1024, 320, None),
    ("sdxl", 2048, 320, 2816),
    ("sdxl_refiner", 1280, 384, 2560),
)
_VARIANTS: dict[str, dict[int, str]] = {
    "sd1": {4: "normal", 9: "inpaint", 8: "instruct-pix2pix"},
    "sd2": {9: "inpaint", 5: "depth"},
    "sdxl": {4: "base", 9: "inpaint"},
    "sdxl_refiner": {},
}


def _transformer_depth(view: KeyView) -> int:
    """The most transformer blocks any one attention stack has (SDXL 10, refiner 4, SD 1)."""
    depth: dict[str, int] = {}
    for name in view.tensors:
        m = _DEPTH.match(name)
        if m:
            depth[m[1]] = max(depth.get(m[1], 0), int(m[2]) + 1)
    return max(depth.values(), default=0)


# Layers only video UNets have, by the model they name (module name -> architecture): SVD's
# VideoUNet / diffusers' UNetSpatioTemporalConditionModel, ModelScope text-to-video's
# UNet3DConditionModel (ZeroScope shares it), an SD1/SDXL UNet with AnimateDiff's motion modules
# (diffusers' UNetMotionModel).
_TEMPORAL = re.compile(
    r"(?:^|\.)(time_stack|time_mixer|temporal_res_block|temporal_transformer_blocks|temp_convs|"
    r"temp_attentions|transformer_in|motion_modules)\."
)
_VIDEO_UNETS: dict[str, tuple[str, str]] = {
    "svd": (
        "time_stack / time_mixer / temporal_res_block",
        "a video UNet (Stable Video Diffusion, image-to-video)",
    ),
    "modelscope-t2v": (
        "temp_convs / temp_attentions / transformer_in",
        "a video UNet (ModelScope text-to-video, UNet3DConditionModel; ZeroScope shares it)",
    ),
    "animatediff": (
        "motion_modules",
        "a video UNet: an image UNet with AnimateDiff motion modules built in (UNetMotionModel)",
    ),
}
_VIDEO_MODULES = {
    "time_stack": "svd",
    "time_mixer": "svd",
    "temporal_res_block": "svd",
    "temporal_transformer_blocks": "svd",
    "temp_convs": "modelscope-t2v",
    "temp_attentions": "modelscope-t2v",
    "transformer_in": "modelscope-t2v",
    "motion_modules": "animatediff",
}


def analyse_unet(view: KeyView, hints: Hints, names: _UNetNames) -> list[Match]:
    """Family, variant and prediction type of a text-conditioned SD-style UNet."""
    conv_in = view.shape(names.conv_in)
    conv_out = view.shape(names.conv_out)
    ctx_key = view.first("transformer_blocks.0.attn2.to_k.weight")
    if (
        conv_in is None
        or len(conv_in) != 4
        or conv_out is None
        or names.time not in view
        or ctx_key is None
    ):
        return []
    ctx = view.dim(ctx_key, 1) or 0
    channels, in_ch = conv_in[0], conv_in[1]
    adm_shape = view.shape(names.adm)
    adm = adm_shape[1] if adm_shape is not None and len(adm_shape) == 2 else None
    proj = view.first(".proj_in.weight")
    proj_shape = view.shape(proj) if proj else None
    linear = proj_shape is not None and len(proj_shape) == 2
    depth = _transformer_depth(view)
    facts: dict[str, object] = {
        "context_dim": ctx,
        "in_channels": in_ch,
        "out_channels": conv_out[0],
        "latent_channels": conv_out[0],
        "model_channels": channels,
        "transformer_depth": depth,
        "linear_projection": linear,
    }
    if adm is not None:
        facts["adm_in_channels"] = adm
    signature = next((s for s in _SIGNATURES if s[1] == ctx), None)
    evidence = [
        f"{view.says(ctx_key)}: cross-attention context {ctx}"
        + (f" = {signature[0]}" if signature else ""),
        f"{view.says(names.conv_in)}: {channels} base channels, {in_ch} input channels",
    ]
    if signature is None:
        closest = min(_SIGNATURES, key=lambda s: abs(s[1] - ctx))
        known = ", ".join(f"{s[0]} {s[1]}" for s in _SIGNATURES)
        evidence.insert(0, f"context width {ctx} matches no known UNet family ({known})")
        return [Match(closest[0], 0.2, evidence, facts=facts)]
    family, _, want_channels, want_adm = signature
    video = _video_unet(view, family, facts)
    if video:
        # the spatial layers' family stays a low alternative, with the reason it is not that
        spatial = Match(family, 0.25, evidence + video, facts=dict(facts))
        return [Match("unknown", 0.6, evidence + video, facts=facts), spatial]
    widths = _context_widths(view)
    if len(widths) > 1:
        facts["architecture"] = "audioldm2"
        evidence.append(
            f"cross-attentions of widths {', '.join(map(str, widths))} side by side: states of "
            f"two text encoders each with its own cross-attention (AudioLDM 2's UNet, a "
            f"text-to-audio model: GPT-2 768 + Flan-T5 1024), not {family}; a model modelsafe "
            "does not know"
        )
        return [Match("unknown", 0.6, evidence, facts=facts)]
    hid = view.shape("encoder_hid_proj.weight")
    if hid is not None and len(hid) == 2:
        # SD UNets take the text encoder's states as they are; a projection in front of the
        # cross-attention means another text encoder (Kolors: ChatGLM3, 4096 wide).
        facts["encoder_hid_dim"] = hid[1]
        evidence.append(
            f"{view.says('encoder_hid_proj.weight')}: the text states pass a {hid[1]}-wide "
            f"projection first: not {family}'s text encoders (Kolors uses ChatGLM3, 4096 wide); "
            "a model modelsafe does not know"
        )
        return [Match(family, 0.25, evidence, facts=facts)]
    other = _other_model_type(view, family, names, adm, evidence)
    if other:
        return [Match(family, 0.25, evidence, facts=facts)]
    checks = [
        (channels == want_channels, f"base channels {channels} (expected {want_channels})"),
        (
            adm == want_adm,
            f"{view.says(names.adm)}: ADM (size/pooled-text) input {adm}"
            if adm
            else f"no {names.adm}: no ADM input",
        ),
        (linear == (family != "sd1"), "linear proj_in" if linear else "1x1-conv proj_in"),
    ]
    passed = sum(ok for ok, _ in checks)
    evidence += [why + ("" if ok else f": unusual for {family}") for ok, why in checks]
    score = 0.6 + 0.35 * passed / len(checks)
    match = Match(family, score, evidence, facts=facts)
    _variant_and_prediction(match, in_ch, hints, view, names)
    edm = sorted(n for n in hints.names if n.rpartition(".")[2] in ("edm_mean", "edm_std"))
    edm_v = edm_vpred_markers(hints.names)
    if family == "sdxl" and edm:
        match.variant = "playground-v2.5"
        match.facts["noise_schedule"] = "edm"
        match.evidence.append(
            f"{', '.join(edm)}: Playground v2.5's latent statistics (an SDXL-layout model trained "
            "with the EDM noise schedule; diffusers runs it with EDMDPMSolverMultistepScheduler)"
        )
    elif family == "sdxl" and edm_v and in_ch in (4, 8):
        _cosxl(match, in_ch, edm_v, hints)
    elif edm_v:
        match.facts["noise_schedule"] = "edm"
        match.evidence.append(
            f"{', '.join(edm_v)}: EDM v-prediction sampling (ComfyUI's V_PREDICTION_EDM)"
        )
    return [match]


def _video_unet(view: KeyView, family: str, facts: dict[str, object]) -> list[str]:
    """Evidence that an SD-shaped UNet has temporal layers (setting ``facts.architecture`` to
    the video model they name); empty for an image UNet."""
    found = next((m for n in view.tensors if (m := _TEMPORAL.search(n))), None)
    if found is None:
        return []
    architecture = _VIDEO_MODULES[found[1]]
    modules, what = _VIDEO_UNETS[architecture]
    facts["architecture"] = architecture
    return [
        f"{view.full(found.string)}: temporal layers ({modules}): {what}, not {family}'s "
        f"image UNet (only its spatial layers are {family}-shaped); a model modelsafe does not "
        "know"
    ]


def _context_widths(view: KeyView) -> list[int]:
    """The distinct widths the UNet's cross-attentions take (one for every SD family)."""
    widths = {
        shape[1]
        for name, info in view.tensors.items()
        if name.endswith(".attn2.to_k.weight") and len(shape := info.shape) == 2
    }
    return sorted(widths)


def _cosxl(match: Match, in_ch: int, markers: list[str], hints: Hints) -> None:
    """CosXL / CosXL-Edit: SDXL layouts that ComfyUI saves with ``edm_vpred.sigma_*`` scalars."""
    match.facts["noise_schedule"] = "edm"
    match.variant = "cosxl" if in_ch == 4 else "cosxl-edit"
    what = (
        "CosXL (an SDXL-layout model trained for v-prediction with the EDM/cosine noise "
        "schedule; sampled as epsilon it gives broken images)"
        if in_ch == 4
        else "CosXL-Edit (8 input channels: latent + the image to edit, like instruct-pix2pix; "
        "v-prediction with the EDM/cosine noise schedule)"
    )
    match.evidence.append(f"{', '.join(markers)}: {what}")
    if in_ch == 8:
        match.score += 0.15  # the 8 channels are explained: undo the unknown-variant penalty
        match.evidence = [
            e for e in match.evidence if not e.endswith("not a released sdxl variant")
        ]
    hinted = hints.prediction_type()
    if hinted is not None and hinted[0] != "v_prediction":
        match.evidence.append(
            f"note: {hinted[1]} says {hinted[0]}, but ComfyUI samples EDM v-prediction markers "
            "as v-prediction"
        )
        match.prediction_type = "v_prediction"


def _other_model_type(
    view: KeyView, family: str, names: _UNetNames, adm: int | None, evidence: list[str]
) -> bool:
    """True (with the reason in ``evidence``) when an SD-shaped UNet is another kind of model:
    a class-conditioned one (the SD x4 upscaler's noise-level embedding) or an image-conditioned
    one (SD 2.x unCLIP's image-embedding ADM). Neither is a txt2img ``family`` model."""
    table = next((k for k in ("label_emb.weight", "class_embedding.weight") if k in view), None)
    if table is not None:
        evidence.append(
            f"{view.says(table)}: a class-embedding table (the SD x4 upscaler's noise-level "
            f"conditioning, beside a low-resolution image in the input channels): not a "
            f"txt2img {family} model; a model modelsafe does not know"
        )
        return True
    if family not in ("sd1", "sd2"):
        return False
    proj = "class_embedding.linear_1.weight"
    width = adm
    key = names.adm
    if width is None and proj in view:
        key, width = proj, view.dim(proj, 1)
    if width is None:
        return False
    unclip = {
        2048: "SD 2.1 unCLIP-H (OpenCLIP ViT-H image embeddings)",
        1536: "SD 2.1 unCLIP-L (CLIP ViT-L image embeddings)",
    }.get(width)
    evidence.append(
        f"{view.says(key)}: an extra conditioning input of width {width}, which {family} has not"
        + (f": {unclip}, image-conditioned" if unclip else "")
        + f"; not a txt2img {family} model; a model modelsafe does not know"
    )
    return True


def _variant_and_prediction(
    match: Match, in_ch: int, hints: Hints, view: KeyView, names: _UNetNames
) -> None:
    family = match.family
    known = _VARIANTS[family]
    if in_ch in known:
        match.variant = known[in_ch]
        if in_ch != 4:
            match.evidence.append(f"{in_ch} input channels = {family} {known[in_ch]}")
        if family == "sd1" and in_ch == 8:
            match.score -= 0.1
            match.evidence.append(
                "IC-Light fc (a relighting UNet: latent + foreground image) has this same "
                "8-channel layout: the weights cannot tell it from instruct-pix2pix"
            )
    elif in_ch != 4:
        match.score -= 0.15
        match.evidence.append(f"{in_ch} input channels: not a released {family} variant")
    hinted = hints.prediction_type()
    if hinted is not None:
        match.prediction_type, why = hinted
        match.evidence.append(f"prediction type {match.prediction_type} from {why}")
    elif family == "sd2" and in_ch == 4:
        match.prediction_type = "ambiguous"
        why = (
            "SD2 512-base (epsilon) and 768-v (v_prediction) have identical layouts and no "
            "metadata, config or v_pred key says which this is"
        )
        match.evidence.append(why)
        match.alternatives = [
            ("512-base", "epsilon", "if trained as 512-base: epsilon prediction"),
            ("768-v", "v_prediction", "if trained as 768-v: v-prediction"),
        ]
        return
    else:
        match.prediction_type = "epsilon"
        match.evidence.append(f"{family} layout: epsilon prediction (no metadata says otherwise)")
    if family == "sd2" and in_ch == 4:
        match.variant = "768-v" if match.prediction_type == "v_prediction" else "512-base"


def _ldm(view: KeyView, hints: Hints) -> list[Match]:
    return analyse_unet(view, hints, LDM)


def _diffusers(view: KeyView, hints: Hints) -> list[Match]:
    return analyse_unet(view, hints, DIFFUSERS)


def _cascade(view: KeyView, hints: Hints) -> list[Match]:
    """Stable Cascade stage C (prior) or stage B (decoder), original or diffusers naming."""
    embed = view.shape("embedding.1.weight")
    if embed is None or not view.has_prefix("down_blocks.0.0.channelwise."):
        return []
    facts: dict[str, object] = {"in_channels": embed[1], "latent_channels": embed[1]}
    txt = view.shape("clip_txt_mapper.weight")
    evidence: list[str] = []
    if txt is not None:
        width = txt[0]
        variant = {2048: "stage_c", 1536: "stage_c_lite"}.get(width)
        facts.update(context_dim=txt[1], hidden_size=width)
        evidence.append(f"{view.says('clip_txt_mapper.weight')}: Stable Cascade stage C (prior)")
    elif "effnet_mapper.0.weight" in view:
        key = "down_blocks.1.0.channelwise.0.weight"
        width = view.dim(key, -1) or 0
        variant = {640: "stage_b", 576: "stage_b_lite"}.get(width)
        facts.update(hidden_size=width)
        evidence.append(
            f"{view.says('effnet_mapper.0.weight')}: Stable Cascade stage B (decoder); "
            f"{view.says(key)}"
        )
    else:
        return []
    evidence.append(view.says("embedding.1.weight") + f": {embed[1]} latent channels")
    score = 0.95 if variant else 0.6
    if variant is None:
        evidence.append(f"width {width} is not a released stage (full or lite)")
    else:
        evidence.append(f"width {width} = {variant}")
    evidence.append("Würstchen stages predict noise: epsilon")
    return [Match("stable-cascade", score, evidence, variant, "epsilon", facts)]


PROBES: tuple[Probe, ...] = (
    Probe("ldm", "unet", ("input_blocks.0.0.weight", "time_embed.0.weight", "out.2.weight"), _ldm),
    Probe(
        "diffusers",
        "unet",
        ("conv_in.weight", "time_embedding.linear_1.weight", "conv_out.weight"),
        _diffusers,
    ),
    Probe(
        "stable-cascade",
        "unet",
        ("clip_txt_mapper.weight", "effnet_mapper.0.weight", "embedding.1.weight"),
        _cascade,
    ),
)
