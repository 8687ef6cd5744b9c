"""Built-in compatibility rules: each part of a set against its base checkpoint, with reasons.

Rules: ``family`` (LoRA/LyCORIS/ControlNet/adapters are for the checkpoint's base, told by
cross-attention width where known), ``lora_width`` (a LoRA of the checkpoint's family trained
for another of its sizes, told by model width: FLUX.2 [dev] / [klein] 4B / 9B, Wan 14B / 1.3B /
5B), ``lora_keys`` (the LoRA's keys mapped onto the checkpoint's modules, shapes checked),
``vae_latent`` (latent channels), ``vae_lineage`` (the latent space: a VAE told to be another
lineage's, or a 3-D video VAE for an image model, is rejected; a tie of one layout warns),
``embedding_width`` (token width vs the checkpoint's text encoders; on Flux.1
a CLIP-L vector reaches only the pooled vector, a warning), ``text_encoder_slot`` (the encoder
is one the family uses; a file holding several, variant ``clip_l+clip_g+t5xxl``, when each of
them is), ``quantized_base`` (LoRA on a GGUF or packed 4-bit checkpoint). See docs/resolve.md.
"""

from __future__ import annotations

import math
import os
import re
from typing import TYPE_CHECKING, Any

from modelsafe.plugins.hookspecs import hookimpl
from modelsafe.registry.detect.sizes import model_size
from modelsafe.runtime.family_needs import (
    CONTEXT_DIM,
    NEEDS,
    TEXT_ENCODER_ARCH,
    TEXT_ENCODER_WIDTHS,
    VAE_3D_LINEAGES,
    VAE_LINEAGE,
    cross_attention,
    label,
    related,
    text_encoders_of,
)
from modelsafe.types import Compatibility, Part

if TYPE_CHECKING:
    from modelsafe.runtime.lora_mapping import LoraCoverage

ADAPTER_KINDS = ("lora", "lycoris", "controlnet", "t2i_adapter", "ip_adapter")
# Below this share of keys landing, a LoRA is rejected: most of it would be "key not loaded".
MIN_COVERAGE = 0.5
# Below this share a LoRA is accepted with a warning that part of it is ignored.
FULL_COVERAGE = 0.95
_NOUN = {
    "lora": "LoRA",
    "lycoris": "LyCORIS",
    "controlnet": "ControlNet",
    "t2i_adapter": "T2I-Adapter",
    "ip_adapter": "IP-Adapter",
    "vae": "VAE",
    "embedding": "embedding",
    "text_encoder": "text encoder",
}


def _ok(rule: str, reason: str, *evidence: str) -> Compatibility:
    return Compatibility(rule, "accept", reason, tuple(evidence))


def _no(rule: str, reason: str, *evidence: str) -> Compatibility:
    return Compatibility(rule, "reject", reason, tuple(evidence))


def _warn(rule: str, reason: str, *evidence: str) -> Compatibility:
    return Compatibility(rule, "warn", reason, tuple(evidence))


def _context(part: Part) -> int | None:
    """The cross-attention width ``part`` was made for, where it has one: only UNet families
    have cross-attention (Flux.1 and SD3 attend jointly over image and T5 text tokens); a LoRA's
    width is read off its patched attn2 layers (a LoRA without UNet keys has none), and a
    T2I-Adapter has no cross-attention (it adds features to the UNet's levels)."""
    if part.kind == "t2i_adapter" or not cross_attention(part.family):
        return None
    value = part.facts.get("context_dim")
    if isinstance(value, int):
        return value
    if part.kind in ("lora", "lycoris"):
        return None  # no attn2 layer patched: the keys say nothing of a context width
    return CONTEXT_DIM.get(part.family)


def family_rule(base: Part, part: Part) -> Compatibility | None:
    if part.kind not in ADAPTER_KINDS:
        return None
    noun = _NOUN.get(part.kind, part.kind)
    if part.family in ("unknown", "any") or base.family == "unknown":
        return _warn(
            "family",
            f"cannot tell which base the {noun} is for ({label(part.family)}); "
            f"checkpoint is {label(base.family)}",
        )
    pc, bc = _context(part), _context(base)
    ctx = f" (cross-attention context {pc})" if pc and pc == bc else ""
    if part.kind == "t2i_adapter":
        ctx = " (its channel widths and levels)"
    if part.family == base.family:
        return _ok("family", f"{noun} is for {label(part.family)}, like the checkpoint{ctx}")
    if related(base.family, part.family):
        return _warn(
            "family",
            f"{noun} is for {label(part.family)}; {label(base.family)} is derived from it, so "
            "only the layers they share are patched",
        )
    if pc and bc and pc != bc:
        return _no(
            "family",
            f"{noun} targets {label(part.family)}: cross-attention context {pc}, "
            f"checkpoint is {label(base.family)} ({bc})",
        )
    return _no(
        "family",
        f"{noun} is for {label(part.family)}{ctx if part.kind == 't2i_adapter' else ''}, "
        f"checkpoint is {label(base.family)}",
    )


def lora_keys_rule(base: Part, part: Part) -> Compatibility | None:
    # A file given as --lora that the detectors could not tell is mapped too: its keys decide.
    unknown_lora = part.kind == "unknown" and part.role == "lora"
    if part.kind not in ("lora", "lycoris") and not unknown_lora:
        return None
    if part.index is None or base.index is None:
        return None
    from modelsafe.registry.model_parts import (
        BUILTIN_FAMILIES,
        NAMED_ONLY_FAMILIES,
        split_components,
    )
    from modelsafe.runtime.lora_mapping import map_lora

    if base.family not in BUILTIN_FAMILIES | NAMED_ONLY_FAMILIES | {"unknown", "any"}:
        return None  # a family taught by a plugin: its module layout is that plugin's to judge
    if base.facts.get("quantization") in _OWN_LORA_LOADER:
        return None  # (its layers are not the model's modules: quantized_base says how instead)
    comps = split_components(base.index, base.family, base.kind)
    have = {c.name for c in comps}
    for encoder in base.beside:  # text encoders given beside a denoiser-only file
        if encoder.index is not None:
            comps += [
                c
                for c in split_components(encoder.index, encoder.family, "text_encoder")
                if c.role == "text_encoder" and c.name not in have
            ]
    cov = map_lora(part.index, comps)
    # FLUX.2, Wan, HunyuanVideo ...: their layers are mapped under the checkpoint's own names
    # only (no aliases to their other naming), so keys that find no layer are not judged.
    named_only = base.family in NAMED_ONLY_FAMILIES
    told = cov.mapped_keys or cov.shape_mismatches or cov.beyond_keys or cov.missing_layer_keys
    if named_only and not told:
        return None
    has_encoders = any(c.role == "text_encoder" for c in comps)
    evidence = [f"{comp}: {m} of {n} keys" for comp, (m, n) in cov.by_component.items()]
    evidence += [f"shape mismatch {s}" for s in cov.shape_mismatches[:3]]
    evidence += [f"no module for {k}" for k in cov.unmapped[:3]]
    considered = cov.lora_keys - cov.absent_keys - cov.removed_keys
    if considered == 0 and cov.absent_keys and not has_encoders:
        # Text-encoder keys only, on a UNet-/transformer-only file: nothing here to check.
        return _warn(
            "lora_keys",
            f"its {cov.absent_keys} keys all patch {', '.join(cov.absent_components)}, which "
            "this file does not contain: not checked here (they apply to the text encoder "
            "loaded beside it)",
            *evidence,
        )
    reason = f"{cov.mapped_keys} of {cov.lora_keys} LoRA keys map onto {_onto(comps, cov)}"
    if cov.absent_components:
        absent = ", ".join(cov.absent_components)
        if has_encoders:
            # The file brings its text encoders: what it lacks, the family lacks.
            family = ("the " if base.family == "sdxl_refiner" else "") + label(base.family)
            reason += f"; {cov.absent_keys} keys patch {absent}, which {family} does not have"
        else:
            reason += (
                f"; {cov.absent_keys} keys patch {absent}, which this file does not contain "
                "(not checked here: they apply to the text encoder loaded beside it)"
            )
    if cov.removed_keys:
        reason += f"; {cov.removed_keys} keys patch {cov.removed_label}: ignored"
    share = cov.mapped_keys / considered if considered else 0.0
    if _misfit(cov):
        return _no(
            "lora_keys",
            f"{reason}; {_layers(len(cov.shape_mismatches))} it patches have other shapes in this "
            "model: it was made for another model with these layer names",
            *evidence,
        )
    if cov.beyond_keys and part.family == base.family and base.family not in ("unknown", "any"):
        # A LoRA of the checkpoint's own family on a pruned model of it (Flux.1-Lite 8B,
        # Flex.1 drop blocks): loaders apply the blocks it has and skip the rest.
        reason += (
            f"; {cov.beyond_keys} keys patch blocks past this checkpoint's last "
            f"({_beyond(cov)}): a {label(base.family)} model with fewer blocks (a pruned "
            "one) skips them, so the LoRA works in part"
        )
        return _warn("lora_keys", reason, *evidence)
    if cov.beyond_keys:
        return _no(
            "lora_keys",
            f"{reason}; {cov.beyond_keys} keys patch blocks past this checkpoint's last "
            f"({_beyond(cov)}): it was made for a deeper model",
            *evidence,
        )
    if cov.missing_layer_keys:
        reason += f"; {_missing_layers(cov)}"
    if named_only and share < FULL_COVERAGE and cov.foreign_keys:
        return _warn(
            "lora_keys",
            f"{reason}; {cov.foreign_keys} keys name no layer of this checkpoint (e.g. "
            f"{_examples(cov.foreign)}), and modelsafe knows no aliases between "
            f"{label(base.family)}'s original and diffusers names: not judged",
            *evidence,
        )
    if cov.mapped_keys == 0 or share < MIN_COVERAGE:
        if cov.foreign:
            reason += f"; no layer here for {_examples(cov.foreign)}"
        return _no("lora_keys", reason, *evidence)
    if share < FULL_COVERAGE:
        # (Where all the keys that do not land name layers the model lacks, the reason says so.)
        rest = " (the rest would be ignored)" if cov.foreign_keys or cov.shape_mismatches else ""
        return _warn("lora_keys", reason + rest, *evidence)
    if unknown_lora:
        return _warn(
            "lora_keys",
            f"{reason}, but what the file is could not be told: its keys alone do not make it "
            "a LoRA for this model",
            *evidence,
        )
    return _ok("lora_keys", reason, *evidence)


def _onto(comps: list[Any], cov: LoraCoverage) -> str:
    """What the LoRA's keys land on: the denoiser, or the text encoders when it patches only
    them."""
    if not cov.denoiser_keys and any(c.role == "text_encoder" for c in comps):
        return "the text encoders"
    names = {c.name for c in comps}
    return "this " + (
        "UNet" if "unet" in names else "transformer" if "transformer" in names else "model"
    )


def _examples(names: tuple[str, ...], count: int = 2) -> str:
    return ", ".join(names[:count])


def _beyond(cov: LoraCoverage) -> str:
    """``double_blocks 19, single_blocks 38-39; the checkpoint has 19 double_blocks and 38
    single_blocks``."""
    patched = ", ".join(
        f"{n} {lo}" if lo == hi else f"{n} {lo}-{hi}" for n, lo, hi, _ in cov.beyond
    )
    has = " and ".join(f"{depth} {n}" for n, _, _, depth in cov.beyond)
    return f"{patched}; the checkpoint has {has}"


# What a layer a LoRA names in the checkpoint's own naming but the checkpoint lacks usually is.
_MISSING_LAYER_KINDS = (
    (
        re.compile(r"cross_attn[._](?:norm_)?[kv]_img"),
        "an image-to-video model's image cross-attention",
    ),
)


def _missing_layers(cov: LoraCoverage) -> str:
    kinds = {
        what
        for module in cov.missing_layers
        for marker, what in _MISSING_LAYER_KINDS
        if marker.search(module)
    }
    what = f": {', '.join(sorted(kinds))}" if kinds else ""
    return (
        f"{cov.missing_layer_keys} keys patch layers this checkpoint does not have (e.g. "
        f"{_examples(cov.missing_layers)}{what}): loaders skip them"
    )


# A LoRA whose layers have other shapes than the model's in this many of them (or this share of
# its layers, two at least) was made for another model with the same layer names; one or two
# (a Flux control LoRA's wider img_in) are the loader's to handle. The mapper lists ten at most.
MISFIT_LAYERS = 10
MISFIT_SHARE = 0.1


def _misfit(cov: LoraCoverage) -> bool:
    """True when enough of the LoRA's layers have other shapes than the model's."""
    need = max(2, min(MISFIT_LAYERS, math.ceil(MISFIT_SHARE * cov.modules)))
    return len(cov.shape_mismatches) >= need


def _layers(count: int) -> str:
    return f"{count}+ layers" if count >= MISFIT_LAYERS else f"{count} layers"


def _sized(family: str, width: int) -> str:
    size = model_size(family, width)
    return size.label if size else f"{label(family)} model"


def lora_width_rule(base: Part, part: Part) -> Compatibility | None:
    """A LoRA of the checkpoint's family trained for another of its sizes (a FLUX.2 [klein] 4B
    LoRA on FLUX.2 [dev]): its layers are another width. Judged only when the LoRA and the
    checkpoint both record their model width (``hidden_size``)."""
    if part.kind not in ("lora", "lycoris") or part.family != base.family:
        return None
    lora, model = part.facts.get("hidden_size"), base.facts.get("hidden_size")
    if not isinstance(lora, int) or not isinstance(model, int) or lora == model:
        return None
    noun = _NOUN[part.kind]
    return _no(
        "lora_width",
        f"the {noun} was trained for a {lora}-wide {_sized(part.family, lora)}, the checkpoint "
        f"is the {model}-wide {_sized(base.family, model)}: its layers do not fit the model's",
    )


def _is_3d_vae(part: Part) -> bool:
    """A 3-D (video, causal) VAE: 5-D conv weights, or a family whose VAE is one."""
    if part.facts.get("conv3d") or VAE_LINEAGE.get(part.family) in VAE_3D_LINEAGES:
        return True
    index = part.index
    return index is not None and any(len(t.shape) == 5 for t in index.tensors[:64])


def vae_rule(base: Part, part: Part) -> Compatibility | list[Compatibility] | None:
    if part.role != "vae" and part.kind != "vae":
        return None
    want = VAE_LINEAGE.get(base.family)
    made_for = VAE_LINEAGE.get(part.family)
    if want is not None and _is_3d_vae(part) != (want in VAE_3D_LINEAGES):
        if want in VAE_3D_LINEAGES:
            why = (
                f"{label(base.family)} decodes with a 3-D (video) VAE of the {label(want)} "
                "lineage; this is a 2-D image VAE: another class of VAE and another latent space"
            )
        else:
            who = f"{label(part.family)}'s" if made_for else "a video model's"
            why = (
                f"a 3-D (video) VAE ({who}, 5-D conv weights): another class of VAE and "
                f"another latent space; {label(base.family)} decodes with {label(want)}'s 2-D "
                "VAE, whatever the channel count"
            )
        return _no("vae_lineage", why)
    pl = part.facts.get("latent_channels") or part.facts.get("vae_latent_channels")
    bl = base.facts.get("latent_channels") or (
        NEEDS[base.family].latent_channels if base.family in NEEDS else None
    )
    if not pl or not bl:
        return _warn("vae_latent", "latent channels unknown; cannot check this VAE")
    if pl != bl:
        return _no("vae_latent", f"VAE latent channels {pl} != {bl} of the checkpoint")
    fits = _ok("vae_latent", f"VAE latent channels {pl} = checkpoint's {bl}")
    tied = [str(f) for f in part.facts.get("tied_families") or ()]
    lineages = {VAE_LINEAGE[f] for f in tied if f in VAE_LINEAGE}
    if want is not None and want in lineages and len(lineages) > 1:
        names = " or ".join(label(f) for f in sorted(lineages))
        return [
            fits,
            _warn(
                "vae_lineage",
                f"the shapes cannot tell whether this VAE was trained for {names} (their VAEs "
                f"share one layout, and no metadata says); make sure it is {label(want)}'s: a "
                "VAE trained for another family gives off colours or noise",
            ),
        ]
    if want is not None and made_for is not None and made_for != want:
        # Its family is told (not a tie of one layout): another latent space.
        return _no(
            "vae_lineage",
            f"VAE latent channels {pl} = {bl}, but it was trained for {label(part.family)} "
            f"({label(made_for)}'s latent space); {label(base.family)} uses {label(want)}'s "
            "VAE: the decoded images would have wrong colours or noise",
        )
    return fits


def _base_encoder_widths(base: Part) -> dict[str, int]:
    widths = base.facts.get("text_encoder_widths")
    if isinstance(widths, dict) and widths:
        return {str(k): int(v) for k, v in widths.items()}
    needs = NEEDS.get(base.family)
    names = needs.text_encoders + needs.optional_text_encoders if needs else ()
    return {n: TEXT_ENCODER_WIDTHS[n] for n in names}


def embedding_rule(base: Part, part: Part) -> Compatibility | list[Compatibility] | None:
    if part.kind != "embedding":
        return None
    widths: dict[str, int] = dict(part.facts.get("token_widths") or {})
    if not widths and isinstance(part.facts.get("token_width"), int):
        widths = {"emb_params": int(part.facts["token_width"])}
    encoders = _base_encoder_widths(base)
    if not widths or not encoders:
        return _warn("embedding_width", "token width or text encoders unknown; not checked")
    fam = label(base.family)
    have = ", ".join(f"{n} {w}" for n, w in encoders.items())
    fits: list[str] = []
    fed: set[str] = set()
    misfit: list[tuple[str, int]] = []
    for slot, width in widths.items():
        match = [n for n, w in encoders.items() if w == width and (slot in (n, "emb_params"))]
        if not match:
            misfit.append((slot, width))
            continue
        fits.append(f"embedding width {width} fits {match[0]}")
        fed.add(match[0])
    if misfit and fed:
        # A multi-encoder embedding (SDXL's clip_l + clip_g) on a family with fewer encoders.
        held = " + ".join(f"{s} {w}" for s, w in widths.items())
        lacks = ", ".join(s for s, _ in misfit)
        return _no(
            "embedding_width",
            f"this embedding holds one vector per text encoder ({held}), made for a family with "
            f"all of them; {fam} has no {lacks} (its text encoders: {have}). A1111 skips such "
            f"a file; ComfyUI would use only its {', '.join(sorted(fed))} vector, trained "
            "beside the others, with an unpredictable effect",
        )
    if misfit and len(widths) > 1:
        # An SDXL embedding (clip_l 768 + clip_g 1280) on SD2 (openclip_h 1024).
        held = " + ".join(f"{s} {w}" for s, w in widths.items())
        return _no(
            "embedding_width",
            f"this embedding holds one vector per text encoder ({held}), made for a family with "
            f"all of them; none fits {fam}'s text encoders ({have})",
        )
    if misfit:
        slot, width = misfit[0]
        return _no(
            "embedding_width",
            f"embedding width {width} fits none of {fam}'s text encoders ({have})",
        )
    # Every CLIP encoder of a multi-encoder family reads the prompt's token: a vector set for
    # CLIP-L alone leaves CLIP-G without one (A1111 skips such an embedding on SDXL, ComfyUI
    # warns of a shape mismatch). T5 takes no textual-inversion vectors.
    unfed = [n for n in encoders if n in ("clip_l", "clip_g") and n not in fed]
    if unfed and len(encoders) > 1 and base.family in ("sdxl", "sd3", "sd3.5"):
        return _no(
            "embedding_width",
            "; ".join(fits) + f", but {fam} also needs a vector for " + ", ".join(unfed),
        )
    fit = _ok("embedding_width", "; ".join(fits))
    if fed == {"clip_l"} and "t5xxl" in encoders and base.family not in ("sd3", "sd3.5"):
        # Flux.1: CLIP-L gives only the pooled vector; the prompt's tokens reach the
        # transformer through T5, which takes no textual-inversion vectors.
        return [
            fit,
            _warn(
                "embedding_width",
                f"in {fam} the clip_l encoder gives only the pooled prompt vector; the prompt's "
                "tokens reach the model through t5xxl, which takes no textual-inversion "
                "vectors: this embedding reaches only the pooled CLIP-L vector and has little "
                "effect",
            ),
        ]
    return fit


def _multi_encoder_rule(base: Part, variant: str, slots: tuple[str, ...]) -> Compatibility:
    """A file holding several encoders (``clip_l+clip_g+t5xxl``, as ``multi_encoder_probe``
    names it): it fits when every encoder in it fills one of the family's slots."""
    names = [n for n in variant.split("+") if n]
    fam = label(base.family)
    misfits = [n for n in names if n not in slots]
    if misfits:
        fit = [n for n in names if n in slots]
        also = f" ({', '.join(fit)} would fit)" if fit else ""
        return _no(
            "text_encoder_slot",
            f"this file holds {len(names)} text encoders ({variant}): {', '.join(misfits)} "
            f"{'is' if len(misfits) == 1 else 'are'} not used by {fam} (needs "
            f"{', '.join(slots)}){also}",
        )
    fills = [f"{n} ({TEXT_ENCODER_WIDTHS.get(n, '?')} wide) fills {fam}'s {n} slot" for n in names]
    reason = f"this file holds {len(names)} text encoders ({variant}): " + "; ".join(fills)
    return _ok("text_encoder_slot", reason, *fills)


# The architecture a text encoder's key naming (``facts.naming``) shows.
_NAMING_ARCH = {
    "transformers-clip": "CLIP",
    "open_clip": "CLIP",
    "transformers-t5": "T5",
    "transformers-llm": "LLM",
}
_ARCH_NAME = {
    "CLIP": "CLIP text model",
    "T5": "T5 encoder",
    "LLM": "decoder-only language model (LLM)",
}


def _encoder_arch(part: Part) -> str | None:
    """CLIP, T5 or a language model, from the encoder's key naming; None if not told."""
    naming = part.facts.get("naming")
    if naming == "llama.cpp":
        t5 = part.facts.get("gguf_architecture") in ("t5", "t5encoder")
        return "T5" if t5 else "LLM"
    return _NAMING_ARCH.get(str(naming))


def _file_name(part: Part) -> str:
    return os.path.basename(part.path) if part.path else part.ref


def _slot_given_twice(base: Part, part: Part, held: list[str]) -> Compatibility | None:
    """A warning when another named text encoder given beside ``part`` fills a slot it fills: a
    set loads one encoder per slot, so one of the two files goes unused."""
    twice = [
        (slot, _file_name(other))
        for other in base.beside
        if other is not part
        for slot in held
        if slot in (other.variant or "").split("+")
    ]
    if not twice:
        return None
    said = "; ".join(f"{other} also fills the {slot} slot" for slot, other in twice)
    return _warn(
        "text_encoder_slot",
        f"{said}: {label(base.family)} loads one encoder per slot, so one of these files goes "
        "unused; give one file per slot",
    )


def _unnamed_encoder(base: Part, part: Part, width: int, slots: tuple[str, ...]) -> Compatibility:
    """A text encoder no variant was found for: placed by its width, but only in a slot of its
    own architecture (CLIP, T5), and never accepted on the width's word."""
    fam = label(base.family)
    slot = next((n for n, w in TEXT_ENCODER_WIDTHS.items() if w == width), None)
    if slot is None or slot not in slots:
        return _no(
            "text_encoder_slot",
            f"this text encoder ({width} wide, of no known name) is not used by {fam} "
            f"(needs {', '.join(slots)})",
        )
    arch, want = _encoder_arch(part), TEXT_ENCODER_ARCH.get(slot)
    if arch and want and arch != want:
        return _no(
            "text_encoder_slot",
            f"this is a {_ARCH_NAME[arch]} ({width} wide, of no known name), not {slot}: "
            f"{fam}'s {slot} slot takes a {_ARCH_NAME[want]}, which only its width matches",
        )
    return _warn(
        "text_encoder_slot",
        f"what this file is could not be told; by its width ({width}) it would be {slot}, one "
        f"of {fam}'s text encoders: check it is",
    )


def text_encoder_rule(base: Part, part: Part) -> Compatibility | list[Compatibility] | None:
    if part.kind != "text_encoder" and part.role != "text_encoder":
        return None
    if part.facts.get("not_image_model"):  # a chat LLM: as wide as T5, not an encoder of one
        return _no(
            "text_encoder_slot",
            "this file is a language model, not the text encoder of an image model",
            *(str(e) for e in list(part.report.get("evidence") or ())[:2]),
        )
    slots = text_encoders_of(base.family, base.variant)
    if slots is None:
        return _warn("text_encoder_slot", f"text encoders of {label(base.family)} not tabulated")
    variant = part.variant or ""
    width = part.facts.get("hidden_size")
    # Only a text encoder of no known name is placed by its width: a named one (Qwen3-8B,
    # Llama, umT5: 4096 wide too) is what it is named, not T5-XXL.
    if not variant and isinstance(width, int):
        return _unnamed_encoder(base, part, width, slots)
    if "+" in variant:  # several encoders in one file
        found = _multi_encoder_rule(base, variant, slots)
    elif variant in slots:
        w = TEXT_ENCODER_WIDTHS.get(variant) or width
        found = _ok(
            "text_encoder_slot",
            f"{variant}{f' ({w} wide)' if w else ''} is one of {label(base.family)}'s text "
            f"encoders ({', '.join(slots)})",
        )
    else:
        return _no(
            "text_encoder_slot",
            f"{variant or 'this text encoder'} is not used by {label(base.family)} "
            f"(needs {', '.join(slots)})",
        )
    twice = found.status == "accept" and _slot_given_twice(base, part, variant.split("+"))
    return [found, twice] if twice else found


_NUNCHAKU_LORA = (
    "nunchaku SVDQuant ({precision}): a LoRA reaches its layers only through nunchaku's own "
    "loader (ComfyUI-nunchaku's LoRA node), which converts it; other LoRA loaders leave its "
    "4-bit layers as they are"
)
# How a LoRA reaches the layers of a checkpoint whose weights are packed (facts.quantization).
_PACKED_LORA = {
    "bnb-4bit": "bitsandbytes 4-bit ({precision}): the LoRA runs beside the quantised layers "
    "(Forge, diffusers/PEFT); fusing it in means dequantising and quantising again (lossy)",
    "comfy-nvfp4": "NVFP4 ({precision}): the LoRA is applied on the fly to dequantised layers "
    "(ComfyUI); fusing it into the 4-bit weights is not possible",
    "nunchaku-int4": _NUNCHAKU_LORA,
    "nunchaku-nvfp4": _NUNCHAKU_LORA,
}


# Packed checkpoints whose layers a LoRA reaches only through their own loader, which converts
# it: their stored modules (nunchaku's ``qweight``/``wscales``) are not the model's, so a LoRA's
# keys are not mapped onto them.
_OWN_LORA_LOADER = frozenset({"nunchaku-int4", "nunchaku-nvfp4"})


def quantized_base_rule(base: Part, part: Part) -> Compatibility | None:
    if part.kind not in ("lora", "lycoris"):
        return None
    precision = str(base.report.get("precision") or "")
    if base.report.get("format") == "gguf" or precision.startswith(("Q", "IQ")):
        return _warn(
            "quantized_base",
            f"checkpoint is GGUF-quantised ({precision}): the LoRA is applied on the fly to "
            "dequantised layers (ComfyUI-GGUF, diffusers GGUF); fusing it into the quantised "
            "weights is not possible",
        )
    packed = _PACKED_LORA.get(str(base.facts.get("quantization") or ""))
    if packed:
        return _warn("quantized_base", "checkpoint is " + packed.format(precision=precision))
    return None


RULES = (
    family_rule,
    lora_width_rule,
    lora_keys_rule,
    vae_rule,
    embedding_rule,
    text_encoder_rule,
    quantized_base_rule,
)


@hookimpl
def modelsafe_check_compatibility(base: Part, part: Part) -> list[Compatibility] | None:
    found: list[Compatibility] = []
    for rule in RULES:
        result: Any = rule(base, part)
        if isinstance(result, list):
            found.extend(result)
        elif result is not None:
            found.append(result)
    return found or None
