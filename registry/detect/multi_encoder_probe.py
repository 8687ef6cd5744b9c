"""One file holding several text encoders: ComfyUI/SD3 ``text_encoders.clip_l.transformer.*``,
ComfyUI CLIP saves (``clip_l.``/``clip_g.``/``t5xxl.`` prefixes), SGM ``conditioner.embedders.N``.

Every text-encoder anchor (HF CLIP ``text_model.*``, OpenCLIP ``token_embedding`` +
``ln_final``, T5 ``encoder.block``, LLM ``model.layers``) is looked for under *every* prefix, not
just the most common one. Each prefix that holds one is cut out as its own index and named by the
single-encoder rules in :mod:`.component_probes` (so widths and depths decide, not the prefix).
The file is a multi-encoder only when two or more encoders make up nearly all of it.

The set of encoders names the family only when exactly one family uses that set:
CLIP-L + T5-XXL = flux1; CLIP-L + CLIP-G + T5-XXL + Llama-3.1-8B = hidream. CLIP-L + CLIP-G +
T5-XXL fits sd3 and sd3.5 (identical encoders); CLIP-L + CLIP-G fits sdxl and also sd3/sd3.5
(whose T5 is optional): then the family is ``any`` and the fitting families are candidates.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from modelsafe.registry.detect.component_probes import MIN_COVERAGE, coverage, text_encoder
from modelsafe.registry.detect.prefixes import natural_key
from modelsafe.types import Candidate, TensorIndex

# (anchor that finds the encoder, a second anchor that must sit under the same prefix).
_ANCHORS: tuple[tuple[str, str], ...] = (
    ("text_model.embeddings.token_embedding.weight", "text_model.final_layer_norm.weight"),
    ("token_embedding.weight", "ln_final.weight"),
    ("encoder.block.0.layer.0.SelfAttention.q.weight", "encoder.final_layer_norm.weight"),
    ("model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight"),
)
# Families and the text encoders they need (required, optional).
_FAMILY_SETS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "sdxl": (frozenset({"clip_l", "clip_g"}), frozenset()),
    "sd3": (frozenset({"clip_l", "clip_g"}), frozenset({"t5xxl"})),
    "sd3.5": (frozenset({"clip_l", "clip_g"}), frozenset({"t5xxl"})),
    "flux1": (frozenset({"clip_l", "t5xxl"}), frozenset()),
    "hidream": (frozenset({"clip_l", "clip_g", "t5xxl", "llama3.1_8b"}), frozenset()),
}
# Order encoders are listed in the variant: the order pipelines number them.
_ORDER = ("clip_l", "openclip_h", "clip_g", "t5xxl", "umt5xxl", "llama3.1_8b")


def _encoder_roots(names: set[str]) -> list[str]:
    """Prefixes (``text_encoders.clip_l.``) that each hold one text encoder."""
    found: set[str] = set()
    for name in names:
        for anchor, second in _ANCHORS:
            if name.endswith(anchor):
                inner = name[: -len(anchor)]
                if (inner and not inner.endswith(".")) or inner + second not in names:
                    continue
                # ComfyUI wraps each model in ``transformer.``; the encoder owns its siblings.
                root = inner[: -len("transformer.")] if inner.endswith("transformer.") else inner
                if root:
                    found.add(root)
    # A root inside another root is the same encoder seen twice.
    return sorted(
        (r for r in found if not any(o != r and r.startswith(o) for o in found)), key=natural_key
    )


def multi_text_encoder(index: TensorIndex, detector: str) -> list[Candidate]:
    roots = _encoder_roots(index.names())
    if len(roots) < 2 or coverage(index, "", roots) < MIN_COVERAGE:
        return []
    encoders: list[dict[str, Any]] = []
    evidence: list[str] = []
    for root in roots:
        sub = replace(index, tensors=tuple(t for t in index.tensors if t.name.startswith(root)))
        found = text_encoder(sub, detector)
        if not found:
            return []  # one part is not a text encoder we know: not this detector's file
        best = found[0]
        named = root.rstrip(".").rsplit(".", 1)[-1]
        variant = best.variant or f"unknown({named})"
        params = sub.parameter_count
        encoders.append(
            {
                "name": variant,
                "key_prefix": root,
                "parameter_count": params,
                "hidden_size": best.facts.get("hidden_size"),
                "num_layers": best.facts.get("num_layers"),
            }
        )
        line = f"{root}*: {best.evidence[0]} = {variant}, {params / 1e6:.1f}M parameters"
        if best.variant and named in _ORDER and named != best.variant:
            line += f" (its prefix says {named}; the shapes win)"
        encoders[-1]["evidence"] = line
    rank = {v: i for i, v in enumerate(_ORDER)}
    encoders.sort(key=lambda e: rank.get(str(e["name"]), len(rank)))
    evidence = [str(e.pop("evidence")) for e in encoders]
    names = [str(e["name"]) for e in encoders]
    combo = "+".join(names)
    have = frozenset(names)
    fits = [f for f, (need, optional) in _FAMILY_SETS.items() if need <= have <= need | optional]
    facts: dict[str, Any] = {
        "encoders": encoders,
        "naming": "multi-encoder",
        "compatible_families": fits,
    }
    evidence.insert(0, f"{len(encoders)} text encoders in one file: {combo}")
    known = all(not n.startswith("unknown(") for n in names)
    score = 0.95 if known else 0.6
    if len(fits) == 1:
        evidence.append(f"{combo} is the text-encoder set of {fits[0]} and no other family")
        return [_cand(fits[0], score, evidence, facts, detector, combo)]
    if fits:
        evidence.append(
            f"{combo} fits {', '.join(fits)}: the weights cannot say which, so family any "
            "with those as candidates"
        )
    else:
        evidence.append(f"no family uses exactly {combo}: family any")
    out = [_cand("any", score, evidence, facts, detector, combo)]
    for family in fits:
        why = f"{combo} is a text-encoder set {family} uses"
        out.append(_cand(family, score - 0.05, [why, *evidence[1:]], facts, detector, combo))
    return out


def _cand(
    family: str,
    score: float,
    evidence: list[str],
    facts: dict[str, Any],
    detector: str,
    variant: str,
) -> Candidate:
    return Candidate(
        family=family,
        kind="text_encoder",
        score=round(score, 3),
        evidence=tuple(evidence),
        variant=variant,
        detector=detector,
        facts=facts,
    )
