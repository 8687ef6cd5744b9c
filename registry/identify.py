"""Ask every family detector what an index is and arbitrate their answers by score."""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping
from typing import Any

from modelsafe.types import Candidate, Identity, TensorIndex

# Below this score a candidate is not trusted: the file is reported as unknown with candidates.
MIN_SCORE = 0.3
# Two different answers closer than this are a tie: the identity says so instead of guessing.
TIE_MARGIN = 0.02


def collect_candidates(index: TensorIndex) -> list[Candidate]:
    """Every candidate every detector returns, best first.

    A malformed answer (not a Candidate, a score that is not a number in 0..1, a family or kind
    that is not a string...) is dropped and recorded as that detector's failure; evidence given
    as one string counts as one evidence item.
    """
    from modelsafe.plugin_manager import get_plugin_manager

    pm = get_plugin_manager()
    found: list[Candidate] = []
    for plugin, result in pm.call_each("modelsafe_identify", index=index):
        items: Iterable[object] = result if isinstance(result, (list, tuple)) else [result]
        for item in items:
            candidate, wrong = _checked_candidate(item)
            if candidate is None:
                pm.record_failure(plugin, "modelsafe_identify", wrong)
                continue
            found.append(candidate if candidate.detector else _with_detector(candidate, plugin))
    found.sort(key=lambda c: c.score, reverse=True)
    return found


def _checked_candidate(item: object) -> tuple[Candidate | None, str]:
    """``item`` as a well-formed Candidate (score a float, evidence a tuple of strings), or None
    and what is wrong with it."""
    from dataclasses import replace

    if not isinstance(item, Candidate):
        return None, f"returned {type(item).__name__} {item!r:.80}, not a Candidate"
    score: object = item.score
    if isinstance(score, bool) or not isinstance(score, numbers.Real):  # (numpy floats are)
        return None, f"returned a Candidate whose score is {score!r:.40}, not a number"
    value = float(score)
    if not 0.0 <= value <= 1.0:  # (NaN fails this too)
        return None, f"returned a Candidate whose score {score!r} is not between 0 and 1"
    for name in ("family", "kind"):
        label = getattr(item, name)
        if not isinstance(label, str) or not label:
            return None, f"returned a Candidate whose {name} is {label!r:.40}, not a name"
    for name in ("variant", "prediction_type"):
        label = getattr(item, name)
        if label is not None and not isinstance(label, str):
            return None, f"returned a Candidate whose {name} is {label!r:.40}, not a string"
    given: object = item.evidence
    if isinstance(given, str):
        evidence: tuple[str, ...] = (given,)  # one reason, not one per character
    elif isinstance(given, (list, tuple)) and all(isinstance(e, str) for e in given):
        evidence = tuple(given)
    else:
        return None, f"returned a Candidate whose evidence is {given!r:.60}, not strings"
    facts: object = item.facts
    if not isinstance(facts, Mapping):
        return None, f"returned a Candidate whose facts are {facts!r:.40}, not a dict"
    detector: object = item.detector
    if not isinstance(detector, str):
        return None, f"returned a Candidate whose detector is {detector!r:.40}"
    return replace(item, score=value, evidence=evidence), ""


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
