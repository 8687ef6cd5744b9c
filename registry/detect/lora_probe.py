"""LoRA and LyCORIS files: kind, variant and the base family they are *for*, with evidence.

The base is read off the layers a LoRA patches (public layouts of the base models):

- SD-style UNets: the cross-attention ``attn2.to_k``/``to_v`` input width is the text context,
  768 SD1, 1024 SD2, 2048 SDXL, 1280 SDXL refiner (InvokeAI's ``lora_token_vector_length``);
  without attn2 layers, the attention widths (320/640/1280 SD1/SD2, 640/1280 SDXL) and the text
  encoder widths (768 CLIP-L, 1024 OpenCLIP-H, CLIP-L + 1280 bigG for SDXL) decide; text-encoder
  layers are told apart by identity (T5 blocks, or the encoder the naming names) before their
  position: a T5 layer means Flux.1 or SD3, whatever its target (kohya's ``lora_te3_``, older
  ``lora_te2_``, diffusers' Flux ``text_encoder_2.``); CLIP-L alone tells no base (SD1, SDXL,
  SD3 and Flux.1 all have it; kohya writes ``lora_te_`` only for SD1/SD2, ``lora_te1_`` for the
  others), so a text-encoder-only LoRA of CLIP-L is left to its metadata;
- LyCORIS (IA)^3: a ``.weight`` vector per layer (``[out]``, or ``[in]`` where the stored
  ``.on_input`` flag is set; ``[1, n, 1, 1]`` for a conv) and the flag: the UNet's
  self-attention widths tell the base;
- transformers by their block names: Flux ``double_blocks``/``single_blocks`` (BFL) or
  ``single_transformer_blocks`` (diffusers), SD3 ``joint_blocks`` (SAI) or ``transformer_blocks``
  with ``add_q_proj`` and no single blocks (diffusers), HiDream ``double_stream_blocks``,
  Qwen-Image ``img_mlp``/``txt_mlp``, Z-Image ``layers.N.attention`` plus refiners (2304 wide:
  Lumina 2); widths check;
  names only one DiT has: FLUX.2's diffusers names (``to_qkv_mlp_proj``, ``ff.linear_in``,
  ``*_stream_modulation``), Wan's original ``blocks.N.self_attn``/``cross_attn``;
  names a lineage shares, the width telling the model: Wan's diffusers ``blocks.N.attn1``/
  ``attn2``/``ffn`` (1536, 3072, 5120), the HunyuanVideo lineage's text token refiner
  (HunyuanVideo 3072, HunyuanImage 2.1 3584, HunyuanVideo 1.5 2048: no family);
- HunyuanVideo in diffusers names has Flux.1's block names and shapes: 20 double + 40 single
  blocks (Flux.1 19 + 38) tell it, and 20 double blocks alone at 3072 (Qwen-Image has 60);
- LyCORIS GLoRA (``b1`` ``[r, in]``) and OFT (``oft_blocks`` ``[n, b, b]``: n*b outputs, a
  self-attention's width) carry the widths the rules above read.

Metadata (``ss_base_model_version``, ``modelspec.architecture``, ``ss_network_module``) supports or
is noted against the keys; it decides only when the keys cannot.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelsafe.registry.detect.dit_probes import _FLUX2_LAYOUTS
from modelsafe.registry.detect.lora_keys import (
    LoraModule,
    lycoris_algorithms,
    may_patch,
    read_layout,
    read_scalars,
)
from modelsafe.registry.detect.metadata_family import family_from_metadata, weigh_metadata
from modelsafe.registry.detect.sizes import family_widths, model_size
from modelsafe.types import Candidate, TensorIndex

UNET_CONTEXT: dict[int, str] = {768: "sd1", 1024: "sd2", 2048: "sdxl", 1280: "sdxl_refiner"}
TEXT_WIDTH_FAMILY: dict[int, str] = {768: "sd1", 1024: "sd2"}
UNET_FAMILIES = frozenset({"sd1", "sd2", "sdxl", "sdxl_refiner"})
# At most this share of a file's tensors may be something other than LoRA parts.
MAX_FOREIGN_SHARE = 0.1

_ATTN2_KV = re.compile(r"attn2_to_[kv]$")
_ATTN1_Q = re.compile(r"attn1_to_q$")
_ATTN1_QKV = re.compile(r"attn1_to_[qkv]$")
# A UNet's attention sits inside its levels; a DiT's (LTX-Video, PixArt) in top-level blocks.
_UNET_LEVEL = re.compile(
    r"(?:^|_)(?:down_blocks|up_blocks|mid_block|input_blocks|output_blocks|middle_block)_"
)
_TE_Q = re.compile(r"self_attn_q_proj$|attn_in_proj$|SelfAttention_q$")


@dataclass(frozen=True)
class _DiT:
    family: str
    pattern: re.Pattern[str]
    width_key: re.Pattern[str]  # a layer whose input width is the model width
    widths: tuple[int, ...]
    what: str
    # Only these block names, no family-specific layer: the width alone decides (else no family).
    width_decides: bool = False
    # Other families with these layer names, told by the model width: (width, family, what).
    by_width: tuple[tuple[int, str, str], ...] = ()


# SD3's and SD3.5's released widths (SD3 medium, SD3.5 medium and large).
_SD3_WIDTHS = family_widths("sd3", "sd3.5")
_DITS: tuple[_DiT, ...] = (
    _DiT(
        "flux1",
        re.compile(
            r"(?:^|_)(?:double_blocks_\d+_(?:img|txt)_|single_blocks_\d+_linear"
            r"|(?:double|single)_blocks_\d+_processor_(?:qkv|proj)_lora)"
        ),
        re.compile(
            r"double_blocks_\d+_img_attn_qkv$|single_blocks_\d+_linear1$"
            r"|double_blocks_\d+_processor_qkv_lora1$"
        ),
        (3072,),
        "Flux double_blocks/single_blocks (BFL naming, or XLabs' processor LoRAs)",
    ),
    _DiT(
        "flux1",
        re.compile(r"(?:^|_)single_transformer_blocks_\d+_"),
        re.compile(r"transformer_blocks_\d+_attn_to_q$|single_transformer_blocks_\d+_proj_mlp$"),
        (3072,),
        "Flux single_transformer_blocks (diffusers naming)",
    ),
    _DiT(
        "hidream",
        re.compile(r"(?:^|_)(?:double|single)_stream_blocks_\d+_"),
        re.compile(r"stream_blocks_\d+_block_attn1_to_q$"),
        (2560,),
        "HiDream double_stream_blocks/single_stream_blocks",
    ),
    _DiT(
        "qwen-image",
        re.compile(r"(?:^|_)transformer_blocks_\d+_(?:img_mlp|txt_mlp|img_mod|txt_mod)"),
        re.compile(r"transformer_blocks_\d+_attn_to_q$"),
        (3072,),
        "Qwen-Image transformer_blocks with img_mlp/txt_mlp",
    ),
    _DiT(
        "z-image",
        re.compile(
            r"(?:^|_)(?:layers|noise_refiner|context_refiner)_\d+_(?:attention|feed_forward)"
        ),
        re.compile(r"layers_\d+_attention_(?:qkv|to_q)$"),
        (3840,),
        "Z-Image layers/noise_refiner/context_refiner (S3-DiT)",
        by_width=(
            (
                2304,
                "lumina2",
                "Lumina Image 2.0 (Z-Image's NextDiT names at Gemma-2-2B's width; Lumina-Next "
                "has no fused attention.qkv)",
            ),
        ),
    ),
    _DiT(
        "sd3",
        re.compile(r"(?:^|_)joint_blocks_\d+_(?:x|context)_block_"),
        re.compile(r"joint_blocks_\d+_x_block_attn_qkv$"),
        _SD3_WIDTHS,
        "SD3 joint_blocks (SAI MMDiT naming)",
    ),
    _DiT(
        "sd3",
        re.compile(r"(?:^|_)transformer_blocks_\d+_attn_add_[qkv]_proj$"),
        re.compile(r"transformer_blocks_\d+_attn_to_q$"),
        _SD3_WIDTHS,
        "MMDiT transformer_blocks with add_q/k/v_proj and no single blocks (diffusers SD3)",
    ),
    _DiT(
        "sd3",
        re.compile(r"(?:^|_)transformer_blocks_\d+_attn_(?:to_[qkv]|to_out_0)$"),
        re.compile(r"transformer_blocks_\d+_attn_to_q$"),
        (*_SD3_WIDTHS, 3072),
        "DiT transformer_blocks attention only (diffusers naming: SD3/SD3.5 or Flux.1 double "
        "blocks)",
        width_decides=True,
    ),
)


def analyse_lora(index: TensorIndex, detector: str) -> list[Candidate]:
    """A LoRA/LyCORIS candidate for ``index``, or [] when it holds no LoRA layout."""
    if index.components or not index.tensors:
        return []
    if not may_patch(t.name for t in index.tensors):
        return []  # no name can be a delta part (a checkpoint, a VAE ...): skip the parse
    layout = read_layout(index)
    modules, others = layout.known_modules(), layout.foreign
    patching = [m for m in modules if m.has_delta()]
    if not patching:
        return []
    # Not LoRA parts but expected beside them: scaled-fp8 markers.
    foreign = [n for n in others if not n.endswith(_EXPECTED_EXTRAS)]
    if len(foreign) > MAX_FOREIGN_SHARE * len(index.tensors):
        return []  # LoRA-like keys inside something else (a merged checkpoint?): not ours
    evidence: list[str] = []
    kind, variant = _kind(patching, index.metadata, evidence)
    facts: dict[str, Any] = {"lora_format": "lycoris" if kind == "lycoris" else _naming(modules)}
    facts["naming"] = _naming(modules)
    ranks = Counter(r for r in (m.rank() for m in patching) if r is not None)
    if ranks:
        facts["rank"] = ranks.most_common(1)[0][0]
        if len(ranks) > 1:
            facts["ranks"] = sorted(ranks)
    facts["modules"] = len(patching)
    family, score = _family(patching, evidence, facts)
    family = _medium_by_metadata(family, facts, patching, index.metadata, evidence)
    family, score = weigh_metadata(family, score, index.metadata, evidence)
    facts["targets"] = _targets(patching, family)
    alpha = _alpha(index, modules)
    if alpha is not None:
        facts["alpha"] = alpha
    if any("dora_scale" in m.parts for m in modules):
        facts["dora"] = True
        evidence.append("dora_scale tensors: weight-decomposed LoRA (DoRA)")
    if others:
        evidence.append(f"{len(others)} other tensors beside the LoRA parts (e.g. {others[0]!r})")
    modulation = [n for n in others if n.endswith(".diff_m")]
    if modulation:
        evidence.append(
            f"{len(modulation)} .diff_m tensors (e.g. {modulation[0]!r}): diffs of each block's "
            "modulation, as lightx2v's extracted Wan LoRAs keep them"
        )
    return [
        Candidate(
            family=family or "unknown",
            kind=kind,
            score=round(score if family else 0.5, 3),
            evidence=tuple(evidence),
            variant=variant,
            detector=detector,
            facts=facts,
        )
    ]


_EXPECTED_EXTRAS = (".scale_weight", "scaled_fp8")


def _naming(modules: list[LoraModule]) -> str:
    counts = Counter(m.naming for m in modules)
    return counts.most_common(1)[0][0]


def _kind(
    modules: list[LoraModule], metadata: Mapping[str, str], evidence: list[str]
) -> tuple[str, str | None]:
    algos = lycoris_algorithms(modules)
    example = next(iter(modules))
    module_meta = metadata.get("ss_network_module", "")
    if algos:
        # train_norm's norm diffs come beside another algorithm's parts (plain down/up: locon).
        variant = next(
            (
                a
                for a in ("loha", "lokr", "boft", "oft", "glora", "full", "ia3", "locon")
                if a in algos
            ),
            "locon",
        )
        parts = sorted({p for m in modules for p in m.parts})
        evidence.insert(
            0,
            f"LyCORIS {variant}: parts {', '.join(parts[:6])} (e.g. {example.flat!r})",
        )
        if module_meta:
            evidence.append(f"metadata ss_network_module={module_meta!r}")
        return "lycoris", variant
    convs = sum(m.is_conv() for m in modules)
    naming = _naming(modules)
    pairs = sum("down" in m.parts for m in modules) or len(modules)
    evidence.insert(
        0,
        f"{pairs} layers with low-rank down/up pairs ({naming} naming), e.g. {example.flat!r}",
    )
    if "lycoris" in module_meta:
        algo = _algo_from_args(metadata.get("ss_network_args", ""))
        evidence.append(
            f"metadata ss_network_module={module_meta!r}"
            + (f", algo {algo!r}" if algo else "")
            + ": LyCORIS with plain down/up parts"
        )
        return "lycoris", algo or "locon"
    if convs:
        evidence.append(
            f"{convs} spatial conv layers adapted (LoCon / LoRA-C3Lier): the keys cannot tell "
            "which trainer; metadata names none"
        )
    vectors = sum(len(m.parts.get("diff") or ()) == 1 for m in modules)
    if vectors:
        evidence.append(
            f"{vectors} .diff on 1-D weights (norm scales) beside the low-rank pairs: whole "
            "diffs a LoRA loader adds as they are (ComfyUI does), not LyCORIS full (full weight "
            "diffs of Linear/conv layers)"
        )
    return "lora", None


def _algo_from_args(raw: str) -> str | None:
    m = re.search(r'"algo"\s*:\s*"([a-z_]+)"', raw)
    return m.group(1) if m else None


def _family(
    modules: list[LoraModule], evidence: list[str], facts: dict[str, Any]
) -> tuple[str | None, float]:
    denoiser = [m for m in modules if m.target == "denoiser"]
    te_family, te_why = _text_encoder_family(modules, facts)
    named = _named_model(denoiser, evidence, facts)
    if named is not None:
        return named
    family, score = _family_of_layers(
        denoiser, te_family, te_why, evidence, facts, _clip_l_hint(modules)
    )
    if family in UNET_FAMILIES:
        alien = _foreign_text_encoder(modules)
        if alien:
            evidence.append(alien)
            return None, 0.5
    return family, score


@dataclass(frozen=True)
class _Named:
    """Layer names only one DiT has, where they overlap the names the width-checked families
    use (:data:`_DITS`): the family they name (None: no family modelsafe identifies), a layer
    whose input is the model width, and why."""

    pattern: re.Pattern[str]
    family: str | None
    width_key: re.Pattern[str] | None
    why: str
    # Several models have these names, told by the model width: (width, family or None, what);
    # a width none of them has gives no family.
    by_width: tuple[tuple[int, str | None, str], ...] = ()


# The model widths of the HunyuanVideo lineage, which shares its layer names (HunyuanVideo's
# text token refiner, Flux-style double/single blocks): HunyuanVideo 3072 (20 + 40 blocks),
# HunyuanImage 2.1 3584 (20 + 40), HunyuanVideo 1.5 2048 (54 double blocks, no family here).
_HUNYUAN_WIDTHS: tuple[tuple[int, str | None, str], ...] = (
    (3072, "hunyuan-video", "HunyuanVideo"),
    (3584, "hunyuanimage2.1", "HunyuanImage 2.1"),
    (2048, None, "HunyuanVideo 1.5, no family modelsafe identifies"),
)
HUNYUAN_VIDEO_BLOCKS = {"double": 20, "single": 40}
# Wan's released widths (sizes.py): 1.3B, TI2V 5B and 14B (each Wan 2.2 A14B expert).
_WAN_WIDTHS: tuple[tuple[int, str | None, str], ...] = tuple(
    (w, "wan", size.label) for w in family_widths("wan") if (size := model_size("wan", w))
)


_NAMED: tuple[_Named, ...] = (
    _Named(
        re.compile(
            r"(?:^|_)single_transformer_blocks_\d+_attn_to_(?:qkv_mlp_proj|out)$"
            r"|(?:^|_)transformer_blocks_\d+_ff(?:_context)?_linear_(?:in|out)$"
            r"|(?:^|_)(?:double|single)_stream_modulation"
        ),
        "flux2",
        re.compile(r"transformer_blocks_\d+_attn_(?:to_q|to_qkv_mlp_proj)$"),
        "FLUX.2's layer names (diffusers Flux2Transformer2DModel: fused to_qkv_mlp_proj single "
        "blocks, ff.linear_in/linear_out, shared *_stream_modulation; Flux.1 has to_q/proj_mlp/"
        "proj_out and ff.net.0.proj) = flux2",
    ),
    _Named(
        re.compile(r"(?:^|_)blocks_\d+_(?:self|cross)_attn_[qkvo]$"),
        "wan",
        re.compile(r"(?:^|_)blocks_\d+_self_attn_q$"),
        "Wan's layer names (blocks.N.self_attn / cross_attn .q/.k/.v/.o: the Wan 2.1/2.2 video "
        "transformer, original naming) = wan",
    ),
    _Named(
        re.compile(
            r"^(?:vace_)?blocks_\d+_(?:attn[12]_(?:to_[qkv]|to_out_0|add_[kv]_proj)|ffn_net_"
            r"(?:0_proj|2))$"
        ),
        "wan",
        re.compile(r"^(?:vace_)?blocks_\d+_(?:attn1_to_[qkv]|attn2_to_q|ffn_net_0_proj)$"),
        "Wan's diffusers layer names (WanTransformer3DModel: top-level blocks.N.attn1/attn2, "
        "ffn.net; LTX-Video, CogVideoX and PixArt name theirs transformer_blocks.N; HunyuanDiT "
        "has blocks.N.attn1/attn2 too, with ff, 1408 wide): the width tells",
        by_width=_WAN_WIDTHS,
    ),
    _Named(
        re.compile(
            r"(?:^|_)context_embedder_(?:token_refiner_|time_text_embed_|proj_in$)"
            r"|(?:^|_)txt_in_(?:individual_token_refiner_|input_embedder$|[tc]_embedder_)"
        ),
        "hunyuan-video",
        re.compile(
            r"(?:^|_)(?:transformer_blocks_\d+_attn_to_q|refiner_blocks_\d+_attn_to_q"
            r"|double_blocks_\d+_img_attn_qkv|token_refiner_blocks_\d+_self_attn_qkv)$"
        ),
        "the text token refiner of the HunyuanVideo lineage (diffusers' context_embedder."
        "token_refiner / time_text_embed / proj_in, Tencent's txt_in.individual_token_refiner; "
        "Flux.1's context_embedder and txt_in are single linears)",
        by_width=_HUNYUAN_WIDTHS,
    ),
    _Named(
        re.compile(r"(?:^|_)joint_transformer_blocks_\d+_"),
        None,
        None,
        "AuraFlow's joint_transformer_blocks (diffusers AuraFlowTransformer2DModel; Flux.1 has "
        "transformer_blocks + single_transformer_blocks, SD3 transformer_blocks only): AuraFlow "
        "is no family modelsafe knows",
    ),
)
_NAMED_SCORE = 0.85


def _named_model(
    denoiser: list[LoraModule], evidence: list[str], facts: dict[str, Any]
) -> tuple[str | None, float] | None:
    """(family, score) when the denoiser layers carry names only one DiT has, else None."""
    for named in _NAMED:
        hit = next((m for m in denoiser if named.pattern.search(m.flat)), None)
        if hit is None:
            continue
        evidence.append(f"{hit.flat!r}: {named.why}")
        if named.family is None:
            return None, 0.5
        sized = next(
            (m for m in denoiser if named.width_key and named.width_key.search(m.flat)), None
        )
        width = sized.in_features() if sized is not None else None
        if sized is not None and width:
            facts["hidden_size"] = width
            evidence.append(f"{sized.says()}: model width {width}")
        if named.by_width:
            return _by_width(named.by_width, width, evidence)
        return named.family, _NAMED_SCORE
    return None


def _by_width(
    table: tuple[tuple[int, str | None, str], ...], width: int | None, evidence: list[str]
) -> tuple[str | None, float]:
    """(family, score) of the model ``width`` names in ``table``, or no family."""
    found = next(((family, what) for w, family, what in table if w == width), None)
    if found is None:
        known = ", ".join(f"{w} {what}" for w, _family, what in table)
        evidence.append(f"model width {width}: none of {known}: no family told")
        return None, 0.5
    family, what = found
    evidence.append(f"model width {width} = {what}")
    return (family, _NAMED_SCORE) if family else (None, 0.5)


# ChatGLM3 (Kolors' text encoder) layer names, as kohya/PEFT flatten them.
_CHATGLM = re.compile(r"self_attention_query_key_value$|mlp_dense_h_to_4h$|mlp_dense_4h_to_h$")
# The widest CLIP text encoder an SD-style UNet family uses (OpenCLIP bigG).
_MAX_CLIP_WIDTH = 1280


def _foreign_text_encoder(modules: list[LoraModule]) -> str | None:
    """Why the text-encoder layers rule out every UNet family: ChatGLM3's layer names (Kolors)
    or a non-T5 layer wider than any CLIP text encoder (1280)."""
    for m in modules:
        if not m.target.startswith("text_encoder") or m.encoder_kind() == "t5":
            continue
        width = m.in_features()
        glm = _CHATGLM.search(m.flat)
        if glm or (width is not None and width > _MAX_CLIP_WIDTH and m.encoder_kind() != "clip"):
            return (
                f"text-encoder layer {m.says()}"
                + (
                    " (ChatGLM's self_attention.query_key_value / dense_h_to_4h naming)"
                    if glm
                    else ""
                )
                + f": input width {width}, wider than any CLIP text encoder (768 / 1024 / 1280): "
                "not an SD/SDXL text encoder (Kolors uses ChatGLM3, 4096 wide); a model "
                "modelsafe does not know"
            )
    return None


def _family_of_layers(
    denoiser: list[LoraModule],
    te_family: str | None,
    te_why: str,
    evidence: list[str],
    facts: dict[str, Any],
    clip_l_hint: str | None = None,
) -> tuple[str | None, float]:
    for dit in _DITS:
        hits = [m for m in denoiser if dit.pattern.search(m.flat)]
        if hits:
            return _dit_family(dit, denoiser, hits, evidence, facts)
    unet_layers = [m for m in denoiser if _UNET_LEVEL.search(m.flat)]
    if denoiser and not unet_layers and any(_ATTN2_KV.search(m.flat) for m in denoiser):
        example = next(m for m in denoiser if _ATTN2_KV.search(m.flat))
        evidence.append(
            f"cross-attention layers outside any UNet level (e.g. {example.flat!r}): a DiT "
            "with attn1/attn2 blocks (LTX-Video, PixArt ...), no family modelsafe knows"
        )
        return None, 0.5
    kv = [m for m in unet_layers if _ATTN2_KV.search(m.flat) and m.in_features()]
    if kv:
        widths = Counter(m.in_features() for m in kv)
        ctx = widths.most_common(1)[0][0] or 0
        facts["context_dim"] = ctx
        family = UNET_CONTEXT.get(ctx)
        example = kv[0]
        evidence.append(
            f"{example.says()}: input width {ctx} (cross-attention context)"
            + (f" = {family}" if family else ": no known UNet family")
        )
        if te_why:
            evidence.append(te_why + (" agrees" if te_family == family else ""))
        return (family, 0.95) if family else (None, 0.5)
    if unet_layers:
        family = _unet_by_widths(unet_layers, evidence)
        if family == "sd1/sd2":
            if te_family in ("sd1", "sd2"):
                evidence.append(te_why)
                return te_family, 0.85
            if clip_l_hint == "sd1":
                evidence.append(
                    te_why + "; beside these UNet widths CLIP-L (768) = sd1 (SD2 has OpenCLIP-H, "
                    "1024)"
                )
                return "sd1", 0.85
            evidence.append(
                "SD1 and SD2 share these widths; no attn2 or text-encoder layer decides"
            )
            return None, 0.5
        if family is not None:
            return family, 0.85
    if te_family:
        evidence.append(te_why + ("" if denoiser else "; text-encoder-only LoRA"))
        return te_family, 0.85
    if te_why and not denoiser:
        evidence.append(te_why + "; text-encoder-only LoRA")
    return None, 0.5


def _dit_family(
    dit: _DiT,
    denoiser: list[LoraModule],
    hits: list[LoraModule],
    evidence: list[str],
    facts: dict[str, Any],
) -> tuple[str | None, float]:
    evidence.append(f"{dit.what}: e.g. {hits[0].flat!r}")
    sized = [m for m in denoiser if dit.width_key.search(m.flat) and m.in_features()]
    width = sized[0].in_features() if sized else None
    if sized:
        evidence.append(f"{sized[0].says()}: input width {width}")
    if width is not None:
        facts["hidden_size"] = width
    family, score = dit.family, 0.9
    if dit.family == "flux1" and dit.width_decides is False:
        hunyuan = _hunyuan_blocks(denoiser, width, evidence) or _hunyuan_names(
            denoiser, width, evidence
        )
        if hunyuan is not None:
            return hunyuan
        flux2 = _flux2_bfl(denoiser, width, evidence, facts)
        if flux2 is not None:
            return flux2
        why_not = _not_flux1(denoiser, width)
        if why_not:
            evidence.append(why_not)
            return None, 0.5
    if dit.width_decides and width not in dit.widths:
        evidence.append(
            f"model width {width}: none of {', '.join(map(str, dit.widths))}; the block names "
            "alone do not tell the family"
        )
        return None, 0.5
    if dit.width_decides:
        score = 0.8
    if dit.family == "sd3":
        has_attn2 = any(re.search(r"attn2_", m.flat) for m in denoiser)
        last = max(
            (int(b.group(1)) for m in denoiser if (b := _DIT_BLOCK.search(m.flat))), default=-1
        )
        if width == 3072 and last >= HUNYUAN_VIDEO_BLOCKS["double"]:
            family = "qwen-image"
            evidence.append(
                f"model width 3072 with transformer block {last}: Qwen-Image (60 blocks; Flux.1 "
                "has 19 such blocks, HunyuanVideo 20)"
            )
        elif width == 3072 and last == HUNYUAN_VIDEO_BLOCKS["double"] - 1:
            family, score = "hunyuan-video", 0.75
            evidence.append(
                f"model width 3072 with transformer blocks up to {last} and no single block: "
                "HunyuanVideo's 20 double blocks (Flux.1 has 19; Qwen-Image's first 20 of its "
                "60 blocks would look the same)"
            )
        elif width == 3072 and last == KLEIN_4B_DOUBLE_BLOCKS - 1:
            evidence.append(
                _klein_4b_lookalike({"double": last, "single": -1}, width) or "FLUX.2 klein 4B?"
            )
            return None, 0.5
        elif width == 3072:
            family = "flux1"
            evidence.append(
                "model width 3072 = Flux.1 (diffusers naming; only its double blocks are patched; "
                "Qwen-Image's first 19 blocks would look the same)"
            )
            score = min(score, 0.8)
        elif (large := model_size("sd3.5", width)) is not None and large.variant == "large":
            family = "sd3.5"
            evidence.append(f"model width {width} = {large.label}")
        elif has_attn2:
            family = "sd3.5"
            evidence.append("x_block attn2 layers (MMDiT-X) = SD3.5 medium")
        elif (medium := model_size("sd3", width)) is not None:
            evidence.append(
                f"model width {width}: {medium.label} (SD3.5 medium shares the width; its attn2 "
                "layers are not patched here)"
            )
            score = min(score, 0.85)
        elif width is not None:
            evidence.append(
                f"model width {width}: none of SD3's/SD3.5's ({', '.join(map(str, _SD3_WIDTHS))}) "
                "or Flux.1's/Qwen-Image's 3072; HunyuanImage 2.1 (3584) and HunyuanVideo 1.5 "
                "(2048) have these names too: the family is not told"
            )
            return None, 0.5
    elif (other := _other_family(dit, width)) is not None:
        family, what = other
        evidence.append(f"model width {width} = {what}")
    elif width is not None and width not in dit.widths:
        evidence.append(
            f"model width {width}, but {family} is {dit.widths[0]} wide: another model "
            "with the same block names"
        )
        return None, 0.5
    elif width is not None:
        evidence.append(f"model width {width} = {family}")
    if dit.family == "flux1":
        img_in = next((m for m in denoiser if m.flat == "img_in"), None)
        channels = img_in.in_features() if img_in is not None else None
        if img_in is not None and channels is not None and channels > 64:
            facts["control_lora"] = True
            evidence.append(
                f"{img_in.says()}: img_in takes {channels} channels (Flux.1's 64 plus a control "
                "image): a control LoRA (FLUX.1 Depth/Canny) for Flux.1 dev"
            )
        evidence.append("Chroma (derived from Flux.1) shares these block names")
    return family, score


def _medium_by_metadata(
    family: str | None,
    facts: dict[str, Any],
    modules: list[LoraModule],
    metadata: Mapping[str, str],
    evidence: list[str],
) -> str | None:
    """``sd3.5`` for a LoRA the keys call SD3 medium (its width, no ``attn2`` layer: SD3.5
    medium's MMDiT-X layers need not be trained) when the metadata names SD3.5; else
    ``family``."""
    size = model_size("sd3", facts.get("hidden_size"))
    if family != "sd3" or size is None or any("attn2_" in m.flat for m in modules):
        return family
    said = family_from_metadata(metadata)
    if said is None or said[0] != "sd3.5":
        return family
    evidence.append(
        f"{said[1]}: SD3.5 medium, which the keys cannot tell from {size.label} (the same "
        "width; its attn2 layers are not trained here)"
    )
    return "sd3.5"


def _other_family(dit: _DiT, width: int | None) -> tuple[str, str] | None:
    """(family, what) of another family with ``dit``'s layer names at this model width."""
    return next(((f, what) for w, f, what in dit.by_width if w == width), None)


_DIT_BLOCK = re.compile(r"(?:^|_)transformer_blocks_(\d+)_")
_BLOCK_INDEX = re.compile(r"(?:^|_)(double|single)_blocks_(\d+)_")
# diffusers' names of the same blocks: transformer_blocks (double), single_transformer_blocks.
_DIFFUSERS_BLOCK_INDEX = re.compile(r"(?:^|_)(single_)?transformer_blocks_(\d+)_")
# HunyuanVideo names what Flux.1 calls mlp.0/mlp.2, mod.lin and modulation.lin differently.
_HUNYUAN_NAMES = re.compile(r"_mlp_fc[12]$|_mod_linear$|modulation_linear$|_attn_q_norm$")
FLUX1_BLOCKS = {"double": 19, "single": 38}
FLUX1_WIDTH = 3072


def _not_flux1(denoiser: list[LoraModule], width: int | None) -> str | None:
    """Why a LoRA with Flux-style block names is not for Flux.1 (HunyuanVideo and FLUX.2 share
    them), or None when nothing contradicts Flux.1: 19 double / 38 single blocks, linear1 7x and
    mlp.0 4x the model width, mlp.0 / mod.lin names."""
    most = _last_blocks(denoiser)
    over = [k for k, n in FLUX1_BLOCKS.items() if most[k] >= n]
    if over:
        counts = ", ".join(f"{k} block {most[k]}" for k in over)
        return (
            f"{counts}: Flux.1 has {FLUX1_BLOCKS['double']} double and "
            f"{FLUX1_BLOCKS['single']} single blocks; HunyuanVideo (20/40) and FLUX.2 use the "
            "same block names, so the family is not told"
        )
    hunyuan = next((m for m in denoiser if _HUNYUAN_NAMES.search(m.flat)), None)
    if hunyuan is not None:
        return (
            f"{hunyuan.flat!r}: HunyuanVideo's layer names (Flux.1 has mlp.0/mlp.2, mod.lin), "
            "a model modelsafe does not know"
        )
    width = width or _output_width(denoiser)
    if width:
        for m in denoiser:
            wrong = _flux1_ratio(m, width)
            if wrong:
                return wrong
    return _klein_4b_lookalike(most, width)


def _last_blocks(denoiser: list[LoraModule], *, diffusers_only: bool = False) -> dict[str, int]:
    """The last double and single block index patched (-1: none), in BFL's names
    (``double_blocks``/``single_blocks``) or diffusers' (``transformer_blocks``/
    ``single_transformer_blocks``)."""
    most = {"double": -1, "single": -1}
    for m in denoiser:
        bfl = None if diffusers_only else _BLOCK_INDEX.search(m.flat)
        named = _DIFFUSERS_BLOCK_INDEX.search(m.flat)
        if bfl is not None:
            kind, index = bfl.group(1), int(bfl.group(2))
        elif named is not None:
            kind, index = ("single" if named.group(1) else "double"), int(named.group(2))
        else:
            continue
        most[kind] = max(most[kind], index)
    return most


def _hunyuan_blocks(
    denoiser: list[LoraModule], width: int | None, evidence: list[str]
) -> tuple[str | None, float] | None:
    """(family, score) when a LoRA in diffusers' Flux names patches blocks Flux.1 lacks but the
    HunyuanVideo lineage has (20 double + 40 single blocks: HunyuanVideo at 3072, HunyuanImage
    2.1 at 3584, the same names and shapes as Flux.1's 19 + 38), else None. Tencent's original
    names are left to :func:`_not_flux1`."""
    most = _last_blocks(denoiser, diffusers_only=True)
    beyond_flux1 = any(most[k] >= n for k, n in FLUX1_BLOCKS.items())
    within = all(most[k] < n for k, n in HUNYUAN_VIDEO_BLOCKS.items())
    if not (beyond_flux1 and within):
        return None
    evidence.append(
        f"transformer blocks up to {most['double']}, single_transformer_blocks up to "
        f"{most['single']}: Flux.1 has 19 + 38 such blocks, the HunyuanVideo lineage 20 + 40 "
        "(diffusers HunyuanVideoTransformer3DModel)"
    )
    return _by_width(_HUNYUAN_WIDTHS, width, evidence)


def _hunyuan_names(
    denoiser: list[LoraModule], width: int | None, evidence: list[str]
) -> tuple[str | None, float] | None:
    """(family, score) for a LoRA in Tencent's original names (musubi-tuner, kohya: HunyuanVideo's
    ``img_mlp.fc1``, ``img_mod.linear`` where Flux.1 has ``img_mlp.0``, ``img_mod.lin``), told
    apart by model width as in :func:`_hunyuan_blocks`; None when no such name is patched."""
    named = next((m for m in denoiser if _HUNYUAN_NAMES.search(m.flat)), None)
    if named is None or width is None:
        return None
    evidence.append(
        f"{named.flat!r}: the HunyuanVideo lineage's layer names (Flux.1 has mlp.0/mlp.2, mod.lin)"
    )
    return _by_width(_HUNYUAN_WIDTHS, width, evidence)


def _output_width(denoiser: list[LoraModule]) -> int | None:
    """The model width read off a layer that outputs it (linear2, mlp.2, attn.proj), for a LoRA
    that patches no layer taking it in (no qkv, no linear1)."""
    for m in denoiser:
        if m.flat.endswith(("linear2", "_mlp_2", "_attn_proj")):
            return m.delta_shape()[0]
    return None


# Flux.1's layers whose width is a multiple of the model width: (name end, output side?, times).
# FLUX.2 has the same names at other multiples (linear1 9x, linear2 from 4x, mlp.0 6x, mlp.2 3x).
_FLUX1_RATIOS: tuple[tuple[str, bool, int], ...] = (
    ("linear1", True, 7),
    ("linear2", False, 5),
    ("_mlp_0", True, 4),
    ("_mlp_2", False, 4),
)


# FLUX.2's multiples of the model width: SwiGLU MLPs (mlp.0 6x, mlp.2 3x), fused single blocks
# (linear1 9x: q/k/v plus the SwiGLU MLP, linear2 4x), in BFL's names as Flux.1's.
_FLUX2_RATIOS: tuple[tuple[str, bool, int], ...] = (
    ("linear1", True, 9),
    ("linear2", False, 4),
    ("_mlp_0", True, 6),
    ("_mlp_2", False, 3),
)


def _multiple(
    m: LoraModule, ratios: tuple[tuple[str, bool, int], ...]
) -> tuple[int, int, bool] | None:
    """(size, the multiple ``ratios`` expects, output side?) when ``m`` is one of the layers
    ``ratios`` names and its delta shows that side, else None."""
    for end, output, times in ratios:
        if m.flat.endswith(end):
            size = m.delta_shape()[0] if output else m.in_features()
            return (size, times, output) if size is not None else None
    return None


def _flux1_ratio(m: LoraModule, width: int) -> str | None:
    """Why ``m``'s shape is not Flux.1's at ``width``, or None."""
    found = _multiple(m, _FLUX1_RATIOS)
    if found is None or found[0] == found[1] * width:
        return None
    size, times, output = found
    side = "outputs" if output else "takes"
    return (
        f"{m.flat!r} {side} {size} = {size / width:g}x the model width, Flux.1's is "
        f"{times}x: another model with these block names (FLUX.2?)"
    )


def _flux2_bfl(
    denoiser: list[LoraModule], width: int | None, evidence: list[str], facts: dict[str, Any]
) -> tuple[str, float] | None:
    """("flux2", score) for a LoRA in BFL's Flux block names (ComfyUI, ai-toolkit, musubi) with
    FLUX.2's shapes, else None: a released FLUX.2 width no other model with these names has
    (6144 [dev], 4096 [klein] 9B; Flux.1 and HunyuanVideo are 3072, HunyuanImage 2.1 3584), or
    Flux.1's 3072 with FLUX.2's SwiGLU multiples ([klein] 4B); every multiple FLUX.2's and the
    blocks within that size's."""
    width = width or _output_width(denoiser)
    size = model_size("flux2", width)
    if size is None or width is None:
        return None
    multiples = [(m, found) for m in denoiser if (found := _multiple(m, _FLUX2_RATIOS))]
    if any(size_ != times * width for _m, (size_, times, _out) in multiples):
        return None
    if width == FLUX1_WIDTH and not multiples:
        return None  # Flux.1's width and attention shapes: only the MLPs would tell
    double, single = _FLUX2_LAYOUTS[size.variant][0][:2]
    most = _last_blocks(denoiser)
    if most["double"] >= double or most["single"] >= single:
        return None
    facts.setdefault("hidden_size", width)
    if multiples:
        m, (shown, times, output) = multiples[0]
        side = "outputs" if output else "takes"
        evidence.append(
            f"{m.flat!r} {side} {shown} = {times}x the model width, FLUX.2's (SwiGLU MLPs: "
            "mlp.0 6x, mlp.2 3x; fused single blocks: linear1 9x, linear2 4x; Flux.1 and "
            "HunyuanVideo have "
            "mlp.0 4x, linear1 7x)"
        )
    evidence.append(
        f"model width {width} = {size.label} (blocks up to double {most['double']} / single "
        f"{most['single']}, within its {double} double and {single} single blocks)"
    )
    return "flux2", _NAMED_SCORE


# FLUX.2 [klein] 4B: 5 double blocks at Flux.1's width 3072 with Flux.1's attention shapes.
KLEIN_4B_DOUBLE_BLOCKS = 5


def _klein_4b_lookalike(most: dict[str, int], width: int | None) -> str | None:
    """A LoRA on exactly the first 5 double blocks at width 3072 and no single block: FLUX.2
    klein 4B's whole double stream, with shapes Flux.1's first blocks share."""
    if width == 3072 and most["double"] == KLEIN_4B_DOUBLE_BLOCKS - 1 and most["single"] < 0:
        return (
            f"only double blocks 0-{KLEIN_4B_DOUBLE_BLOCKS - 1} at width 3072, no single block: "
            f"FLUX.2 [klein] 4B has exactly {KLEIN_4B_DOUBLE_BLOCKS} double blocks of Flux.1's "
            "attention shapes, so the weights cannot say Flux.1 or FLUX.2 klein"
        )
    return None


def _attn1_width(m: LoraModule) -> int | None:
    """A self-attention projection's width (square: its input or, for an (IA)^3 vector or OFT
    blocks on the output, its output)."""
    return m.in_features() or m.delta_shape()[0]


def _unet_by_widths(denoiser: list[LoraModule], evidence: list[str]) -> str | None:
    attn = [m for m in denoiser if _ATTN1_Q.search(m.flat) and m.in_features()]
    if not attn:  # (IA)^3 scales to_k/to_v outputs: their widths are the attention widths
        attn = [m for m in denoiser if _ATTN1_QKV.search(m.flat) and _attn1_width(m)]
    widths = sorted({_attn1_width(m) or 0 for m in attn})
    if not widths:
        return None
    narrowest = widths[0]
    first = min(attn, key=lambda m: _attn1_width(m) or 0)
    evidence.append(
        f"self-attention widths {widths}, e.g. {first.says()} (no attn2 input width to read)"
    )
    return {320: "sd1/sd2", 640: "sdxl", 768: "sdxl_refiner"}.get(narrowest)


def _text_encoder_family(
    modules: list[LoraModule], facts: dict[str, Any]
) -> tuple[str | None, str]:
    widths: dict[str, int] = {}
    shown: dict[str, str] = {}
    clip: dict[str, int] = {}  # target -> width, CLIP (or unknown) layers only
    t5 = any(m.target.startswith("text_encoder") and m.encoder_kind() == "t5" for m in modules)
    for m in modules:
        if m.target.startswith("text_encoder") and _TE_Q.search(m.flat):
            w = _attn1_width(m)
            if w and m.target not in widths:
                widths[m.target], shown[m.target] = w, m.says()
            if w and m.encoder_kind() != "t5":
                clip.setdefault(m.target, w)
    if not widths and not t5:
        return None, ""
    if widths:
        facts["text_encoder_widths"] = dict(sorted(widths.items()))
    desc = ", ".join(f"{shown[t]} ({t} width {w})" for t, w in sorted(widths.items()))
    desc = desc or "T5 blocks"
    if t5:
        # T5 is Flux.1's and SD3's; neither family is told by its text encoders alone.
        has_g = 1280 in clip.values()
        which = "SD3/SD3.5 (CLIP-L + CLIP-G + T5)" if has_g else "Flux.1 or SD3"
        return None, f"text-encoder layers: {desc}; T5 layers = {which}, not decided here"
    if clip.get("text_encoder_2") == 1280:
        return "sdxl", f"text-encoder layers: {desc} (CLIP-L + bigG) = sdxl"
    family = TEXT_WIDTH_FAMILY.get(clip.get("text_encoder", 0))
    if family == "sd1" and set(clip) == {"text_encoder"}:
        prefix = _kohya_te_prefix(modules)
        if prefix != "lora_te":
            # CLIP-L alone: SD1's only encoder, but SDXL's, SD3's and Flux.1's first one too.
            note = (
                "; kohya's lora_te1_ prefix is written for SDXL, SD3 and Flux.1 (SD1 gets "
                "lora_te_), so not for SD1"
                if prefix == "lora_te1"
                else ""
            )
            return None, (
                f"text-encoder layers: {desc}: CLIP-L, which SD1, SDXL, SD3 and Flux.1 all "
                f"have, so it does not tell the base{note}"
            )
        return family, f"text-encoder layers: {desc} (kohya's lora_te_ prefix, SD1/SD2) = sd1"
    return family, f"text-encoder layers: {desc}" + (f" = {family}" if family else "")


def _kohya_te_prefix(modules: list[LoraModule]) -> str | None:
    """``lora_te`` or ``lora_te1`` when kohya names the first text encoder's layers so."""
    for m in modules:
        if m.target == "text_encoder" and m.naming == "kohya" and m.keys:
            return "lora_te1" if m.keys[0].startswith("lora_te1_") else "lora_te"
    return None


def _clip_l_hint(modules: list[LoraModule]) -> str | None:
    """``sd1`` when the only text-encoder layers are CLIP-L's (768): beside a 320-wide UNet this
    tells SD1 from SD2 (OpenCLIP-H, 1024), though alone it tells no base."""
    widths = {
        m.target: _attn1_width(m)
        for m in modules
        if m.target.startswith("text_encoder") and _TE_Q.search(m.flat)
    }
    return "sd1" if widths == {"text_encoder": 768} else None


def _targets(modules: list[LoraModule], family: str | None) -> list[str]:
    dit = family is not None and family not in UNET_FAMILIES
    names = {
        ("transformer" if dit else "unet") if m.target == "denoiser" else m.target for m in modules
    }
    order = ["unet", "transformer", "text_encoder", "text_encoder_2", "text_encoder_3"]
    return sorted(names, key=order.index)


def _alpha(index: TensorIndex, modules: list[LoraModule]) -> float | None:
    """The network alpha: from metadata, else the first stored ``.alpha`` scalar (a few bytes)."""
    raw = index.metadata.get("ss_network_alpha")
    if raw:
        try:
            return float(raw)
        except ValueError:
            pass
    if not any("alpha" in m.parts for m in modules):
        return None
    first = next((t for t in index.tensors if t.name.endswith(".alpha")), None)
    value = read_scalars(index, [first]).get(first.name) if first is not None else None
    return round(value, 4) if value is not None else None
