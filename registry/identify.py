"""Ask every family detector what an index is and arbitrate their answers by score."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from modelsafe.types import Candidate, Identity, TensorIndex

# Below this score a candidate is not trusted: the file is reported as unknown with candidates.
MIN_SCORE = 0.3
# Two different answers closer than this are a tie: the identity says so instead of guessing.
TIE_MARGIN = 0.02


def collect_candidates(index: TensorIndex) -> list[Candidate]:
    """Every candidate every detector returns, best first (garbage answers are dropped)."""
    from modelsafe.plugin_manager import HookFailure, get_plugin_manager

    pm = get_plugin_manager()
    found: list[Candidate] = []
    for plugin, result in pm.call_each("modelsafe_identify", index=index):
        items: Iterable[object] = result if isinstance(result, (list, tuple)) else [result]
        for item in items:
            if isinstance(item, Candidate) and 0.0 <= item.score <= 1.0:
                found.append(item if item.detector else _with_detector(item, plugin))
            else:
                pm.failures.append(
                    HookFailure(plugin, "modelsafe_identify", f"returned {item!r:.80}")
                )
    found.sort(key=lambda c: c.score, reverse=True)
    return found


def _with_detector(candidate: Candidate, detector: str) -> Candidate:
    from dataclasses import replace

    return replace(candidate, detector=detector)


def arbitrate(candidates: list[Candidate]) -> Identity:
    """The identity the best candidate supports; ties and weak answers are said out loud."""
    if not candidates or candidates[0].score < MIN_SCORE:
        return Identity(
            family="unknown",
            kind="unknown",
            variant=None,
            prediction_type=None,
            confidence=0.0,
            evidence=("no detector recognised this layout",)
            if not candidates
            else (f"best guess {_label(candidates[0])} scored only {candidates[0].score:.2f}",),
            candidates=tuple(candidates[:5]),
        )
    best, rest = candidates[0], candidates[1:]
    evidence = list(best.evidence)
    tied = [c for c in rest if best.score - c.score < TIE_MARGIN and _label(c) != _label(best)]
    if tied:
        evidence.append(
            "ambiguous: equally strong answers " + ", ".join(_label(c) for c in [best, *tied])
        )
    return Identity(
        family=best.family,
        kind=best.kind,
        variant=best.variant,
        prediction_type=best.prediction_type,
        confidence=round(best.score * (0.5 if tied else 1.0), 3),
        evidence=tuple(evidence),
        candidates=tuple(c for c in rest if _label(c) != _label(best))[:5],
        facts=_facts(best, tied),
        detector=best.detector,
    )


def _facts(best: Candidate, tied: list[Candidate]) -> dict[str, Any]:
    """The best candidate's facts; in a tie also ``tied_families``: every family it could be."""
    facts = dict(best.facts)
    families = {c.family for c in tied if c.kind == best.kind and c.family != best.family}
    if families:
        facts["tied_families"] = sorted({best.family, *families})
    return facts


def _label(c: Candidate) -> str:
    return "/".join(x for x in (c.family, c.kind, c.variant) if x)


def identify(index: TensorIndex) -> Identity:
    """What ``index`` is: family, kind, variant, prediction type, with evidence."""
    return arbitrate(collect_candidates(index))
