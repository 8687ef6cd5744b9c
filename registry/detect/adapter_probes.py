"""ControlNets, T2I-Adapters and IP-Adapters: the base family each is for, from keys and shapes.

Decisive facts (public layouts of the released models and of diffusers' classes):

- ControlNet, original (lllyasviel ``cldm``) naming: ``input_hint_block``, ``zero_convs.N``,
  ``middle_block_out``, a copy of the UNet encoder (``input_blocks``), optionally under
  ``control_model.``; diffusers naming: ``controlnet_cond_embedding``, ``controlnet_down_blocks``,
  ``controlnet_mid_block``. The cross-attention ``attn2.to_k`` input width gives the family
  (768 SD1, 1024 SD2, 2048 SDXL); SDXL also has the 2816-wide ``add_embedding``/``label_emb``.
  Flux (``controlnet_x_embedder``/``double_blocks`` + ``controlnet_blocks``) and SD3
  (``pos_embed_input`` + ``controlnet_blocks``) ControlNets are transformers; so is SANA's
  (``caption_norm`` and GLUMBConv ``ff.conv_inverted`` blocks + ``controlnet_blocks``).
- T2I-Adapter (TencentARC ``body.N.block1``; diffusers ``adapter.body.L.resnets.N``): the first
  conv reads a pixel-unshuffled hint, 8x8 (64 per channel) for SD1.x, 16x16 (256) for SDXL.
- IP-Adapter (``image_proj.*`` + ``ip_adapter.N.to_k_ip``): ``to_k_ip`` maps the UNet context
  width (768 SD1, 1024 SD2, 2048 SDXL) into each attention layer; ``image_proj.latents`` marks
  the Resampler ("plus") variant, ``proj.0``/``proj.2`` the MLP ("full"/FaceID) ones. A
  Resampler reading a 512-wide InsightFace embedding is InstantID's ``ip-adapter.bin``.
- ControlNet-LLLite (sd-scripts): ``lllite_unet_<module>.conditioning1``/``down``/``mid``/``up``
  on the attention projections; SDXL's are 640 and 1280 wide.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from modelsafe.registry.detect.metadata_family import weigh_metadata
from modelsafe.registry.detect.prefixes import KeyView, find_prefix
from modelsafe.registry.detect.sizes import model_size
from modelsafe.types import Candidate, TensorIndex

UNET_CONTEXT: dict[int, str] = {768: "sd1", 1024: "sd2", 2048: "sdxl", 1280: "sdxl_refiner"}
# InsightFace's (antelopev2/buffalo_l) face embedding width, read by FaceID and InstantID.
FACE_EMBED_DIM = 512
# CLIP ViT-H/bigG hidden states at 224 px: 16x16 patches + the class token.
CLIP_VISION_TOKENS = 257
# Below this, a component sitting beside a full diffusion model loses to the checkpoint.
BESIDE_CHECKPOINT_SCORE = 0.6

_LDM_CONTROL = ("input_hint_block.0.weight", "zero_convs.0.0.weight", "middle_block_out.0.weight")
_DIFFUSERS_CONTROL = (
    "controlnet_cond_embedding.conv_in.weight",
    "controlnet_down_blocks.0.weight",
    "controlnet_mid_block.weight",
)


def has_denoiser(names: set[str], prefix_to_skip: str = "") -> bool:
    """True when a full diffusion model's output layer sits in the file (outside our prefix)."""
    outs = ("diffusion_model.out.2.weight", "diffusion_model.final_layer.linear.weight")
    return any(
        n.endswith(outs) and not (prefix_to_skip and n.startswith(prefix_to_skip)) for n in names
    )


def _candidate(
    family: str | None,
    kind: str,
    score: float,
    evidence: list[str],
    facts: dict[str, Any],
    detector: str,
    variant: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Candidate:
    if metadata:
        family, score = weigh_metadata(family, score, metadata, evidence)
    return Candidate(
        family=family or "unknown",
        kind=kind,
        score=round(score if family else min(score, 0.5), 3),
        evidence=tuple(evidence),
        variant=variant,
        detector=detector,
        facts=facts,
    )


def _unet_context(view: KeyView, evidence: list[str], facts: dict[str, Any]) -> str | None:
    key = view.first("attn2.to_k.weight")
    if key is None:
        # Stability's control-LoRAs (``lora_controlnet``) store layers as low-rank .down/.up
        # factors: the down factor's input width is the layer's.
        key = view.first("attn2.to_k.down")
    ctx = view.dim(key, 1) if key else None
    if ctx is None:
        evidence.append("no attn2.to_k layer: cross-attention width unknown")
        return None
    facts["context_dim"] = ctx
    family = UNET_CONTEXT.get(ctx)
    evidence.append(
        f"{view.says(key or '')}: cross-attention context {ctx}"
        + (f" = {family}" if family else ": no known UNet family")
    )
    return family


def controlnet(index: TensorIndex, detector: str) -> list[Candidate]:
    names = index.names()
    out: list[Candidate] = []
    for anchors, naming in ((_LDM_CONTROL, "ldm"), (_DIFFUSERS_CONTROL, "diffusers")):
        prefix = find_prefix(names, anchors)
        if prefix is None:
            continue
        view = KeyView.of(index, prefix)
        if sum(a in view for a in anchors) < 2:
            continue
        out.append(_unet_controlnet(index, view, naming, detector))
    dit = _dit_controlnet(index, detector)
    return out + dit + lllite(index, detector)


_LLLITE = re.compile(r"^(?:.*\.)?lllite_unet_(\w+)\.down\.0\.weight$")
# SDXL's UNet transformer blocks are 640 (input_blocks 4-5, output 3-5) and 1280 wide; SD1's
# also 320 (the first level), where SDXL has no transformer.
_SDXL_ATTN_WIDTHS = frozenset({640, 1280})


def lllite(index: TensorIndex, detector: str) -> list[Candidate]:
    """ControlNet-LLLite (kohya sd-scripts ``control_net_lllite.py``): a small conditioning
    net plus down/mid/up MLPs on each attention projection, ``lllite_unet_<module>.*``."""
    modules = {m.group(1): t.shape for t in index.tensors if (m := _LLLITE.match(t.name))}
    if not modules:
        return []
    widths = {shape[1] for shape in modules.values() if len(shape) == 2}
    mlp = {shape[0] for shape in modules.values() if len(shape) == 2}
    first = sorted(modules)[0]
    evidence = [
        f"lllite_unet_{first}.down.0.weight has shape {list(modules[first])}: "
        f"ControlNet-LLLite (sd-scripts), {len(modules)} patched attention projections",
    ]
    facts: dict[str, Any] = {"naming": "sd-scripts", "lllite_modules": len(modules)}
    if len(mlp) == 1:
        facts["mlp_dim"] = mlp.pop()
    family = "sdxl" if widths == _SDXL_ATTN_WIDTHS else None
    evidence.append(
        f"attention input widths {sorted(widths)}: "
        + ("SDXL's UNet (LLLite is trained for SDXL)" if family else "not SDXL's (640, 1280)")
    )
    score = 0.9 if family else 0.5
    return [
        _candidate(family, "controlnet", score, evidence, facts, detector, "lllite", index.metadata)
    ]


def _unet_controlnet(index: TensorIndex, view: KeyView, naming: str, detector: str) -> Candidate:
    anchors = _LDM_CONTROL if naming == "ldm" else _DIFFUSERS_CONTROL
    present = [a for a in anchors if a in view]
    evidence = [
        f"ControlNet ({naming} naming): {', '.join(view.full(a) for a in present)}",
    ]
    facts: dict[str, Any] = {"naming": naming, "key_prefix": view.prefix}
    conv_in = "input_blocks.0.0.weight" if naming == "ldm" else "conv_in.weight"
    hint = "input_hint_block.0.weight" if naming == "ldm" else present[0]
    in_ch = view.dim(conv_in, 1)
    if in_ch is not None:
        facts["in_channels"] = in_ch
        evidence.append(f"{view.says(conv_in)}: {in_ch} latent input channels")
    hint_ch = view.dim(hint, 1)
    if hint_ch is not None:
        facts["hint_channels"] = hint_ch
    family = _unet_context(view, evidence, facts)
    adm_key = "label_emb.0.0.weight" if naming == "ldm" else "add_embedding.linear_1.weight"
    adm = view.dim(adm_key, 1)
    if adm is not None:
        facts["adm_in_channels"] = adm
        evidence.append(
            f"{view.says(adm_key)}: ADM input {adm}" + (" (SDXL)" if adm == 2816 else "")
        )
        if family is None and adm == 2816:
            family = "sdxl"
    variant = None
    union = [k for k in ("task_embedding", "control_add_embedding.linear_1.weight") if k in view]
    if union or view.has_prefix("transformer_layes.") or view.has_prefix("control_type_proj."):
        variant = "union"
        evidence.append("task/control-type embedding: a ControlNet Union (several controls in one)")
    score = 0.95 if family else 0.5
    if has_denoiser(index.names(), view.prefix):
        evidence.append(
            "a full diffusion model is stored beside it: the checkpoint detector decides"
        )
        score = min(score, BESIDE_CHECKPOINT_SCORE)
    return _candidate(
        family, "controlnet", score, evidence, facts, detector, variant, index.metadata
    )


def _dit_controlnet(index: TensorIndex, detector: str) -> list[Candidate]:
    names = index.names()
    prefix = find_prefix(names, ("controlnet_blocks.0.weight",))
    if prefix is None:
        return []
    view = KeyView.of(index, prefix)
    facts: dict[str, Any] = {"naming": "diffusers", "key_prefix": prefix}
    blocks = view.count_blocks("controlnet_blocks.")
    width = view.dim("controlnet_blocks.0.weight", 0)
    facts["hidden_size"] = width
    evidence = [
        f"{view.says('controlnet_blocks.0.weight')}: {blocks} transformer ControlNet blocks"
    ]
    txt_in = view.shape("txt_in.weight")
    if view.first("img_mod.1.weight") is not None and txt_in is not None and len(txt_in) == 2:
        # Qwen-Image's ControlNets (InstantX Union, inpainting) copy its first blocks: the
        # diffusers img_mod/txt_mod blocks and a txt_in from Qwen2.5-VL's 3584-wide features.
        # Flux's width is also 3072, so the width alone must not decide.
        facts["context_dim"] = txt_in[1]
        evidence.append(
            f"{view.says('txt_in.weight')} + {view.full(view.first('img_mod.1.weight') or '')}: "
            "Qwen-Image (diffusers img_mod/txt_mod blocks)"
        )
        family = "qwen-image" if txt_in[1] == 3584 and width in (3072, None) else None
        if family is None:
            evidence.append(
                f"text features {txt_in[1]}, width {width}: Qwen-Image's are 3584 and 3072"
            )
        _control_input(view, evidence, facts)
    elif "controlnet_x_embedder.weight" in view or view.has_prefix("double_blocks."):
        if view.has_prefix("double_blocks."):
            facts["naming"] = "bfl"  # XLabs: Flux.1's own block names
        family = _flux_controlnet(view, width, evidence)
        _control_input(view, evidence, facts)
    elif "pos_embed_input.proj.weight" in view:
        evidence.append(f"{view.says('pos_embed_input.proj.weight')}: SD3-family ControlNet")
        family = _sd3_controlnet(width, evidence)
    elif "caption_norm.weight" in view and view.first("ff.conv_inverted.weight") is not None:
        # SANA's ControlNet (diffusers SanaControlNetModel): a copy of its first blocks, with
        # their GLUMBConv MLP, and a zero-initialised ``input_block`` for the control latents.
        evidence.append(
            f"{view.says(view.first('ff.conv_inverted.weight') or '')} + caption_norm.weight: "
            "SANA's blocks (GLUMBConv MLP), a SANA ControlNet"
        )
        family = "sana"
    else:
        return []
    variant = None
    modes = view.dim("controlnet_mode_embedder.weight", 0)
    if modes is not None:
        # InstantX/Shakker Flux Union: one learned embedding per control mode.
        variant = "union"
        facts["control_modes"] = modes
        evidence.append(
            f"{view.says('controlnet_mode_embedder.weight')}: {modes} control modes, "
            "a ControlNet Union (several controls in one)"
        )
    score = 0.9 if family else 0.5
    return [
        _candidate(family, "controlnet", score, evidence, facts, detector, variant, index.metadata)
    ]


def _sd3_controlnet(width: int | None, evidence: list[str]) -> str | None:
    """The family of an SD3-family ControlNet ``width`` wide: SD3 at SD3 medium's width (which
    SD3.5 medium shares), SD3.5 at SD3.5 large's; else None (no family)."""
    medium, large = model_size("sd3", width), model_size("sd3.5", width)
    if medium is not None:
        evidence.append(f"width {width}: {medium.label} (SD3.5 medium shares the width)")
        return "sd3"
    if large is not None and large.variant == "large":
        evidence.append(f"width {width}: {large.label}")
        return "sd3.5"
    return None


def _flux_controlnet(view: KeyView, width: int | None, evidence: list[str]) -> str | None:
    """flux1 when the blocks are Flux.1's: BFL ``double_blocks`` (XLabs) or diffusers blocks
    fed by a 4096-wide T5 ``context_embedder`` (InstantX, Shakker); else None (no family)."""
    if view.has_prefix("double_blocks."):
        evidence.append(
            f"{view.says('double_blocks.0.img_attn.qkv.weight')}: Flux ControlNet (BFL naming)"
        )
    else:
        ctx = view.dim("context_embedder.weight", 1)
        if ctx != 4096:
            evidence.append(
                f"{view.says('controlnet_x_embedder.weight')}, but "
                + (
                    f"{view.says('context_embedder.weight')}: text features {ctx}"
                    if ctx
                    else "no context_embedder"
                )
                + ": not Flux.1's 4096-wide T5 features; a ControlNet modelsafe does not know"
            )
            return None
        evidence.append(
            f"{view.says('controlnet_x_embedder.weight')} + "
            f"{view.says('context_embedder.weight')}: Flux ControlNet (T5 features 4096)"
        )
    return "flux1" if width in (3072, None) else None


def _control_input(view: KeyView, evidence: list[str], facts: dict[str, Any]) -> None:
    cin = view.dim("controlnet_x_embedder.weight", 1)
    if cin is None:
        return
    facts["in_channels"] = cin
    if cin > 64:
        evidence.append(
            f"controlnet_x_embedder takes {cin} channels: the packed control latent plus "
            f"{cin - 64} extra (an inpainting mask)"
        )


def t2i_adapter(index: TensorIndex, detector: str) -> list[Candidate]:
    names = index.names()
    for prefix_anchor, naming in (
        (("adapter.conv_in.weight", "adapter.body.0.resnets.0.block1.weight"), "diffusers"),
        (("conv_in.weight", "body.0.block1.weight", "body.0.block2.weight"), "original"),
    ):
        prefix = find_prefix(names, prefix_anchor)
        if prefix is None:
            continue
        view = KeyView.of(index, prefix)
        if not all(a in view for a in prefix_anchor):
            continue
        return [_t2i(index, view, naming, detector)]
    return []


def _t2i(index: TensorIndex, view: KeyView, naming: str, detector: str) -> Candidate:
    conv = "adapter.conv_in.weight" if naming == "diffusers" else "conv_in.weight"
    cin = view.dim(conv, 1) or 0
    facts: dict[str, Any] = {"naming": naming, "in_channels": cin}
    if naming == "diffusers":
        levels = view.count_blocks("adapter.body.")
    else:
        levels = sum(
            1 for n in view.tensors if n.startswith("body.") and n.endswith(".block1.weight")
        )
        levels //= 2  # two residual blocks per level in the released adapters
    facts["levels"] = levels
    evidence = [
        f"T2I-Adapter ({naming} naming): {view.says(conv)}; {levels} resolution levels",
    ]
    family: str | None = None
    if cin in (64, 192):
        facts.update(downscale=8, hint_channels=cin // 64)
        family = "sd1"
        evidence.append(
            f"first conv reads {cin} = {cin // 64} x 8x8 pixel-unshuffled hint channels: "
            "SD1.x adapter (SD2 would share this layout; none were released)"
        )
    elif cin in (256, 768):
        facts.update(downscale=16, hint_channels=cin // 256)
        family = "sdxl"
        evidence.append(
            f"first conv reads {cin} = {cin // 256} x 16x16 pixel-unshuffled hint channels: "
            "SDXL adapter"
        )
    else:
        evidence.append(f"first conv input {cin}: no released T2I-Adapter")
    if family == "sdxl" and levels not in (3, 0):
        evidence.append(f"{levels} levels: SDXL adapters have 3")
    score = 0.9 if family else 0.4
    return _candidate(family, "t2i_adapter", score, evidence, facts, detector, None, index.metadata)


def ip_adapter(index: TensorIndex, detector: str) -> list[Candidate]:
    names = index.names()
    prefix = find_prefix(names, ("ip_adapter.1.to_k_ip.weight", "ip_adapter.1.to_v_ip.weight"))
    xlabs = find_prefix(names, ("ip_adapter_proj_model.proj.weight",))
    if prefix is None and xlabs is not None:
        view = KeyView.of(index, xlabs)
        evidence = [
            f"{view.says('ip_adapter_proj_model.proj.weight')}: XLabs Flux IP-Adapter",
        ]
        return [
            _candidate("flux1", "ip_adapter", 0.85, evidence, {}, detector, None, index.metadata)
        ]
    if prefix is None:
        return []
    view = KeyView.of(index, prefix)
    if not view.has_prefix("image_proj."):
        return []
    k_ip = view.shape("ip_adapter.1.to_k_ip.weight") or ()
    ctx = k_ip[1] if len(k_ip) == 2 else 0
    family = UNET_CONTEXT.get(ctx)
    layers = sum(1 for n in view.tensors if n.endswith(".to_k_ip.weight"))
    facts: dict[str, Any] = {"context_dim": ctx, "ip_layers": layers}
    evidence = [
        f"{view.says('ip_adapter.1.to_k_ip.weight')}: image keys projected from context {ctx}"
        + (f" = {family}" if family else ""),
        f"{layers} attention layers with to_k_ip/to_v_ip",
    ]
    variant, tokens, embed = _ip_variant(view, ctx, evidence)
    facts.update(num_tokens=tokens, image_embed_dim=embed)
    if embed and variant not in ("instantid", "pulid", None):
        facts["image_encoder"] = _image_encoder(variant, embed)
    if variant == "instantid":
        facts.update(face_encoder="insightface", face_embed_dim=embed, controlnet="IdentityNet")
    if variant == "pulid":
        facts.update(face_encoder="insightface", image_encoder="eva02_clip_l_14_336")
    if variant is not None and variant.startswith("faceid"):
        facts["face_encoder"] = "insightface"
        face = view.dim("image_proj.proj.0.weight", 1)
        if face is not None:
            facts["face_embed_dim"] = face
    score = (0.95 if variant else 0.6) if family else 0.5
    if has_denoiser(names):
        score = min(score, BESIDE_CHECKPOINT_SCORE)
    return [
        _candidate(family, "ip_adapter", score, evidence, facts, detector, variant, index.metadata)
    ]


def _ip_variant(
    view: KeyView, ctx: int, evidence: list[str]
) -> tuple[str | None, int | None, int | None]:
    """(variant, image tokens, width of the embedding the projection reads); the variant is None
    for a projection of no known IP-Adapter."""
    lora = any("_lora." in n or ".lora_" in n for n in view.tensors)
    if _PULID_BODY in view and view.has_prefix(_PULID_MAPPING):
        return _pulid(view, evidence)
    latents = view.shape("image_proj.latents")
    if latents is not None and len(latents) == 3:
        embed = view.dim("image_proj.proj_in.weight", 1)
        variant = (
            "faceid-plus" if lora or view.has_prefix("image_proj.perceiver_resampler.") else "plus"
        )
        if variant == "plus" and embed == FACE_EMBED_DIM:
            # InstantID's ip-adapter.bin: the same Resampler, fed InsightFace's 512-d face
            # embedding instead of CLIP image features; it works with the IdentityNet ControlNet.
            variant = "instantid"
        evidence.append(
            f"{view.says('image_proj.latents')}: Resampler with {latents[1]} query tokens "
            f"({variant})"
        )
        if variant == "instantid":
            evidence.append(
                f"{view.says('image_proj.proj_in.weight')}: reads a {embed}-wide InsightFace "
                "face embedding (antelopev2), not CLIP features: InstantID, used with its "
                "IdentityNet ControlNet (ComfyUI: models/instantid/)"
            )
        return variant, latents[1], embed
    resampler = "image_proj.perceiver_resampler.proj_in.weight"
    if resampler in view and "image_proj.proj.0.weight" in view:
        # FaceID-Plus (ProjPlusModel): the face ID embedding through proj.0/proj.2, refined by a
        # FacePerceiverResampler (no latents of its own) reading CLIP image features.
        first = view.shape("image_proj.proj.0.weight") or ()
        last = view.shape("image_proj.proj.2.weight") or ()
        clip = view.dim(resampler, 1)
        tokens = last[0] // ctx if len(last) == 2 and ctx else None
        evidence.append(
            f"{view.says(resampler)}: FacePerceiverResampler over {clip}-wide CLIP image "
            f"features beside the face-ID projection {view.says('image_proj.proj.0.weight')} "
            "(faceid-plus: needs InsightFace and a CLIP vision encoder)"
        )
        evidence.append(
            "FaceID-Plus and FaceID-PlusV2 share this layout (v2 differs only at inference, by "
            "its face-ID shortcut); the file name says which"
        )
        return "faceid-plus", tokens, clip
    if "image_proj.proj.0.weight" in view:
        first = view.shape("image_proj.proj.0.weight") or ()
        last = view.shape("image_proj.proj.2.weight") or ()
        embed = first[1] if len(first) == 2 else None
        tokens = last[0] // ctx if len(last) == 2 and ctx else None
        variant = "faceid" if embed == FACE_EMBED_DIM or lora else "full"
        evidence.append(
            f"{view.says('image_proj.proj.0.weight')}: MLP image projection ({variant})"
        )
        if variant == "full" and tokens == 1 and "image_proj.proj.3.weight" in view:
            # IPAdapterFull's MLPProjModel maps each of the CLIP vision encoder's penultimate
            # hidden states (257 at 224 px: 16x16 patches + class token) to one image token.
            tokens = CLIP_VISION_TOKENS
            evidence.append(
                f"{view.says('image_proj.proj.2.weight')} + LayerNorm proj.3: one image token "
                f"per CLIP hidden state ({tokens}), read from {embed}-wide penultimate states"
            )
        return variant, tokens, embed
    proj = view.shape("image_proj.proj.weight") or ()
    if len(proj) == 2 and ctx:
        tokens = proj[0] // ctx
        evidence.append(
            f"{view.says('image_proj.proj.weight')}: {tokens} image tokens from a "
            f"{proj[1]}-wide image embedding"
        )
        return "base", tokens, proj[1]
    found = sorted({n.rsplit(".", 1)[0] for n in view.tensors if n.startswith("image_proj.")})
    evidence.append(
        f"image projection {', '.join(view.full(n) for n in found[:3])}: none of the "
        "IP-Adapter projections modelsafe knows (Resampler, MLP, a single proj, PuLID's "
        "IDEncoder); the variant and the image encoder it needs are not told"
    )
    return None, None, None


# PuLID's IDEncoder (ToTheBeginning/PuLID pulid/encoders.py): an MLP ``body`` (Linear, LayerNorm,
# LeakyReLU x3) over the 1280-wide ID embedding (InsightFace's 512 + EVA02-CLIP-L's 768), and
# ``mapping_i`` / ``mapping_patch_i`` MLPs over five EVA-CLIP hidden-state levels (1024 wide).
_PULID_BODY = "image_proj.body.0.weight"
_PULID_MAPPING = "image_proj.mapping_0."
_PULID_LEVEL = re.compile(r"^image_proj\.mapping_\d+\.0\.weight$")


def _pulid(view: KeyView, evidence: list[str]) -> tuple[str, int | None, int | None]:
    embed = view.dim(_PULID_BODY, 1)
    levels = sum(1 for n in view.tensors if _PULID_LEVEL.match(n))
    evidence.append(
        f"{view.says(_PULID_BODY)} + {levels} image_proj.mapping_N/mapping_patch_N MLP pairs: "
        f"PuLID's IDEncoder, reading an ID embedding ({embed} = InsightFace's 512 + "
        "EVA02-CLIP-L's 768) and EVA-CLIP hidden states"
    )
    evidence.append(
        "PuLID needs InsightFace (antelopev2) and EVA02-CLIP-L-14-336 beside it, not an "
        "IP-Adapter's CLIP vision encoder (ComfyUI: PuLID nodes, models/pulid/)"
    )
    return "pulid", None, embed


def _image_encoder(variant: str, embed: int) -> str:
    # Resampler and full (per-token) variants read hidden states: ViT-H's are 1280 wide,
    # bigG's 1664. Only the base variant reads the pooled projection (ViT-H 1024, bigG 1280).
    if variant in ("plus", "faceid-plus", "full"):
        return {1280: "clip_vit_h", 1664: "clip_vit_bigg"}.get(embed, f"width {embed}")
    return {1024: "clip_vit_h", 1280: "clip_vit_bigg", 512: "insightface"}.get(
        embed, f"width {embed}"
    )
