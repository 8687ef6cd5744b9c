"""``resolve``: check every part of a set (LoRAs, VAE, embeddings, ControlNets, text encoders)
against a checkpoint, with a reason for each accept and reject, and name what is missing.

Each part is given as a path, a catalog name or a hash prefix. The checks are the
``modelsafe_check_compatibility`` plugins (built-ins in ``plugins/builtin/compatibility_rules.py``);
:func:`compatible_models` runs the same rules over catalog rows only, without opening a file.

``modelsafe.runtime.resolve(...)`` works both as the function and through this module (the
module object is callable), so ``from modelsafe.runtime import resolve`` and
``import modelsafe.runtime; modelsafe.runtime.resolve(...)`` behave the same.
"""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from modelsafe.errors import FileReadError, UsageError
from modelsafe.paths import user_path
from modelsafe.types import BASE_KINDS, Compatibility, Part, a_kind, to_jsonable

if TYPE_CHECKING:
    from pathlib import Path

    from modelsafe.plugin_manager import HookFailure
    from modelsafe.registry.catalog.db import Catalog
    from modelsafe.registry.catalog.models import Model

ROLES = ("checkpoint", "lora", "vae", "embedding", "controlnet", "text_encoder")
ADDON_KINDS = (
    "lora",
    "lycoris",
    "vae",
    "embedding",
    "controlnet",
    "t2i_adapter",
    "ip_adapter",
    "text_encoder",
)
ROLE_OF_KIND = {
    "lora": "lora",
    "lycoris": "lora",
    "vae": "vae",
    "embedding": "embedding",
    "controlnet": "controlnet",
    "t2i_adapter": "controlnet",
    "ip_adapter": "controlnet",
    "text_encoder": "text_encoder",
}
# Variants of a part's kind that no pipeline loads in that role: what each one is instead.
NOT_LOADABLE_VARIANTS = {
    ("vae", "approx"): "A1111's VAE approximation, a live-preview decoder and not a VAE to "
    "decode images with",
    ("controlnet", "lllite"): "a ControlNet-LLLite (sd-scripts), which diffusers' ControlNet "
    "pipelines cannot load (ComfyUI and A1111 load it through their LLLite extensions)",
}
# What a part given under a role may be.
KINDS_OF_ROLE = {
    "lora": ("lora", "lycoris"),
    "vae": ("vae",),
    "embedding": ("embedding",),
    "controlnet": ("controlnet", "t2i_adapter", "ip_adapter"),
    "text_encoder": ("text_encoder",),
}


@dataclass(frozen=True)
class PartResult:
    """The answer for one part: ``accepted``, ``rejected`` or ``unchecked``, and why."""

    role: str
    ref: str
    path: str | None
    family: str
    kind: str
    variant: str | None
    status: str
    reasons: tuple[Compatibility, ...] = ()
    weight: float | None = None

    def as_json(self) -> dict[str, Any]:
        value = to_jsonable(self)
        assert isinstance(value, dict)
        return value


@dataclass(frozen=True)
class Candidate:
    """A catalog entry that would fill a missing part."""

    name: str
    ref: str  # a hash prefix or path to pass back to resolve
    path: str | None
    family: str
    reason: str


@dataclass(frozen=True)
class MissingPart:
    """Something the checkpoint's family needs that neither the file nor the set provides."""

    slot: str  # clip_l | t5xxl | umt5xxl | ... | vae; ``a|b``: any one of them
    kind: str  # text_encoder | vae
    why: str
    candidates: tuple[Candidate, ...] = ()


@dataclass(frozen=True)
class ResolveResult:
    """``modelsafe resolve``'s answer; :meth:`as_json` is the ``--json`` contract."""

    checkpoint: PartResult
    parts: tuple[PartResult, ...]
    missing: tuple[MissingPart, ...]
    loaded: tuple[Part, ...] = field(default=(), repr=False, compare=False)
    # Plugins that raised or answered garbage while this set was read, identified and checked.
    plugin_failures: tuple[HookFailure, ...] = field(default=(), compare=False)

    @property
    def compatible(self) -> bool:
        """Every part was checked and fits, and nothing the family needs is missing."""
        statuses = [self.checkpoint.status, *(p.status for p in self.parts)]
        return all(s == "accepted" for s in statuses) and not self.missing

    @property
    def exit_code(self) -> int:
        return 0 if self.compatible else 1

    def as_json(self) -> dict[str, Any]:
        return {
            "compatible": self.compatible,
            "checkpoint": self.checkpoint.as_json(),
            "parts": [p.as_json() for p in self.parts],
            "missing": to_jsonable(list(self.missing)),
            "plugin_failures": to_jsonable(list(self.plugin_failures)),
        }


# -- loading parts ------------------------------------------------------------------------------


def parse_weighted(ref: str, flag: str = "--lora") -> tuple[str, float]:
    """``REF[:WEIGHT]`` -> (ref, weight), weight 1.0 when left out. A path that exists as given
    keeps its colons (``a:b.safetensors``); a tail that is not a number is part of the ref (a
    missing file, reported as such), unless what is before it exists; the weight must be a
    finite number (a UsageError naming ``flag`` otherwise)."""
    import math

    head, sep, tail = ref.rpartition(":")
    if not sep or not head or os.path.exists(os.path.expanduser(ref)):
        return ref, 1.0
    hint = f"REF:WEIGHT, e.g. {flag} style.safetensors:0.8"
    try:
        weight = float(tail)
    except ValueError:
        if os.path.exists(os.path.expanduser(head)):
            raise UsageError(f"{flag} {ref!r}: weight {tail!r} is not a number", hint) from None
        return ref, 1.0
    if not math.isfinite(weight):
        raise UsageError(f"{flag} {ref!r}: weight {tail!r} is not a finite number", hint)
    return head, weight


def _facts_from_report(report: dict[str, Any]) -> dict[str, Any]:
    """Facts a catalog row's stored inspect report gives without reading the file."""
    facts: dict[str, Any] = {}
    comps = (report.get("vram") or {}).get("components") or {}
    if isinstance(comps, dict) and comps:
        facts["parts_present"] = sorted(
            n.split(".", 1)[1] if n.startswith("text_encoder.") else n for n in comps
        )
    return facts


def part_from_index(
    index: Any, report: dict[str, Any], role: str, ref: str, weight: float = 1.0
) -> Part:
    from modelsafe.registry.model_parts import derived_facts

    family, kind = str(report.get("family", "unknown")), str(report.get("kind", "unknown"))
    facts = {**_facts_from_report(report), **derived_facts(index, family, kind)}
    facts.update(report.get("facts") or {})
    return Part(
        role=role,
        ref=ref,
        family=family,
        kind=kind,
        variant=report.get("variant"),
        facts=facts,
        index=index,
        path=str(index.path),
        weight=weight,
        report=report,
    )


def part_from_model(model: Model, role: str | None = None, *, read: bool = False) -> Part:
    """A Part from a catalog row; with ``read`` the file at a present location is read too."""
    details = model.details or {}
    report = dict(details.get("inspect") or {})
    report.update(family=model.family, kind=model.kind, variant=model.variant)
    if details.get("error"):  # (a file the scan could not read: why, as it stored it)
        report["error"] = str(details["error"])
    role = role or ROLE_OF_KIND.get(model.kind, "checkpoint")
    ref = model.autov2 or model.sha256 or model.name
    from modelsafe.registry.catalog.queries import file_on_disk, preferred_location

    # (the copy generate would use: a safe .safetensors before its .ckpt, whatever the paths)
    preferred = preferred_location(model)

    on_disk = file_on_disk(model) if read else None
    if on_disk is not None:
        from modelsafe.registry.read import read_index

        return part_from_index(read_index(on_disk), report, role, ref)
    facts = {**_facts_from_report(report), **(report.get("facts") or {})}
    return Part(
        role=role,
        ref=ref,
        family=model.family,
        kind=model.kind,
        variant=model.variant,
        facts=facts,
        index=None,
        path=preferred.path if preferred else None,
        report=report,
    )


def load_part(ref: str, role: str, *, catalog: Catalog | None = None, weight: float = 1.0) -> Part:
    """Read ``ref`` (a path) or find it in ``catalog`` (a name or hash prefix)."""
    path = user_path(ref)
    if path.exists():
        from modelsafe.registry.inspect import inspect_index
        from modelsafe.registry.read import read_index

        index = read_index(path)
        report = to_jsonable(inspect_index(index))
        if path.is_file():  # (a downloader still filling it, a shard without its set)
            from modelsafe.registry.inspect import beside_warnings

            report["warnings"] = [*report["warnings"], *beside_warnings(path)]
        part = part_from_index(index, report, role, ref, weight)
        return _with_corrections(part, path, catalog) if catalog is not None else part
    if catalog is None:
        raise FileReadError(
            f"{ref} does not exist, and there is no catalog to look it up in",
            hint="give a path, or `modelsafe scan DIR` first to use names and hash prefixes",
        )
    from dataclasses import replace

    from modelsafe.errors import ModelsafeError
    from modelsafe.registry.catalog.queries import find_model

    with catalog.session() as session:
        try:
            model = find_model(session, ref)
        except ModelsafeError as exc:
            if "/" in ref or path.suffix:  # meant as a path: say the file is missing
                raise type(exc)(
                    f"{ref} does not exist, and no model in the catalog matches it",
                    hint="check the path, or `modelsafe ls` for the names in the catalog",
                ) from None
            raise
        part = part_from_model(model, role, read=True)
    return replace(part, ref=ref, weight=weight)


def _with_corrections(part: Part, path: Path, catalog: Catalog) -> Part:
    """``part`` with the user's catalog corrections of that file (``modelsafe set MODEL
    --family ...``) over its detection, as the catalog and ``generate`` use them, while the
    file is as the catalog last saw it (``queries.location_of_file``)."""
    from modelsafe.errors import ModelsafeError
    from modelsafe.registry.catalog.queries import location_of_file

    try:
        with catalog.session() as session:
            loc = location_of_file(session, path)
            if loc is None or loc.model is None:
                return part
            overrides = dict(loc.model.overrides or {})
    except (OSError, ModelsafeError):
        return part
    changes = {k: v for k, v in overrides.items() if k in ("family", "kind", "variant") and v}
    if not changes:
        return part
    facts = {**part.facts, "corrected_in_catalog": sorted(changes)}
    return replace(part, facts=facts, **changes)


# -- checking -----------------------------------------------------------------------------------


def check_part(base: Part, part: Part) -> tuple[str, tuple[Compatibility, ...]]:
    """Ask every compatibility rule about ``part``: ``rejected`` if any rejects, ``accepted`` if
    one accepts and no rule failed (raised or answered garbage), else ``unchecked``. A part
    whose file cannot be loaded as it is is ``rejected`` for that, and the damage a loadable
    one shows is a warning (:func:`part_damage`)."""
    unusable, damaged = part_damage(part)
    if unusable:
        return "rejected", (*unusable, *damaged)
    status, found = _check_part(base, part)
    return status, (*found, *damaged)


def part_damage(part: Part) -> tuple[tuple[Compatibility, ...], tuple[Compatibility, ...]]:
    """What the part's report says of its file as a download (``rule`` "download"): ``reject``
    reasons when it cannot be loaded as it is (a catalog row of a file the scan could not read,
    a file the safetensors library refuses, one still downloading, a shard without its set),
    ``warn`` reasons when it loads but is damaged (a zero tail or holes, a corrupt zip member, an
    untrained LoRA), as ``inspect`` and the scan found it
    (:func:`modelsafe.registry.inspect.damage_warnings`)."""
    from modelsafe.registry.inspect import damage_warnings

    report = part.report or {}
    unusable, damaged = damage_warnings([str(w) for w in report.get("warnings") or []])
    if report.get("error"):
        unusable.insert(0, f"the file does not read: {report['error']}")
    return (
        tuple(Compatibility(DAMAGE_RULE, "reject", w) for w in unusable),
        tuple(Compatibility(DAMAGE_RULE, "warn", w) for w in damaged),
    )


DAMAGE_RULE = "download"


def _check_part(base: Part, part: Part) -> tuple[str, tuple[Compatibility, ...]]:
    from modelsafe.plugin_manager import get_plugin_manager

    found: list[Compatibility] = []
    expected = KINDS_OF_ROLE.get(part.role)
    if expected and part.kind not in expected:
        if part.kind == "unknown":
            found.append(
                Compatibility(
                    "role",
                    "warn",
                    f"could not tell what this file is (given as --{part.role.replace('_', '-')})",
                )
            )
        else:
            found.append(
                Compatibility(
                    "role",
                    "reject",
                    f"given as --{part.role.replace('_', '-')} but it is a {part.kind} "
                    f"({part.family})",
                )
            )
            return "rejected", tuple(found)
    unloadable = NOT_LOADABLE_VARIANTS.get((part.kind, part.variant or ""))
    if unloadable:
        found.append(Compatibility("role", "reject", f"it is {unloadable}"))
        return "rejected", tuple(found)
    pm = get_plugin_manager()
    failed: list[HookFailure] = []
    for plugin, result in pm.call_each(
        "modelsafe_check_compatibility", failed=failed, base=base, part=part
    ):
        items = result if isinstance(result, (list, tuple)) else [result]
        found.extend(r for r in items if _is_answer(r))
        wrong = [r for r in items if not _is_answer(r)]
        if wrong:
            what = ", ".join(f"{type(r).__name__} {r!r:.60}" for r in wrong[:3])
            pm.record_failure(
                plugin,
                "modelsafe_check_compatibility",
                f"returned {what}, not Compatibility(rule, accept|warn|reject, reason)",
                failed,
            )
    # A rule that raised or answered garbage could not check the part: it is named, and the
    # part is not accepted on the other rules' word.
    found.extend(
        Compatibility(
            f.plugin,
            "warn",
            f"compatibility rule {f.plugin} failed, so the part is unchecked: {f.reason}",
        )
        for f in failed
    )
    statuses = {r.status for r in found}
    if "reject" in statuses:
        return "rejected", tuple(found)
    # Accepted only when some rule says it fits and none failed; warnings alone check nothing.
    accepted = "accept" in statuses and not failed
    return ("accepted" if accepted else "unchecked"), tuple(found)


_STATUSES = ("accept", "warn", "reject")


def _is_answer(result: object) -> bool:
    """A well-formed rule answer: a Compatibility with a known status and string reason."""
    return (
        isinstance(result, Compatibility)
        and result.status in _STATUSES
        and isinstance(result.rule, str)
        and isinstance(result.reason, str)
    )


def _base_result(base: Part) -> PartResult:
    from modelsafe.runtime.family_needs import label

    reasons: list[Compatibility] = []
    status = "accepted"
    unusable, damaged = part_damage(base)
    if unusable:
        return _result(base, "rejected", (*unusable, *damaged))
    if base.kind not in BASE_KINDS:
        status = "rejected"
        reasons.append(
            Compatibility(
                "base",
                "reject",
                f"{base.ref} is {a_kind(base.kind)} ({label(base.family)}), not a checkpoint, "
                "UNet, transformer or diffusers pipeline",
            )
        )
    elif base.family in ("unknown", "any"):
        reasons.append(Compatibility("base", "warn", "the checkpoint's family is unknown"))
    else:
        from modelsafe.runtime.family_needs import cross_attention

        ctx = base.facts.get("context_dim")
        extra = ""
        if ctx and cross_attention(base.family):
            extra = f", cross-attention context {ctx}"
        elif ctx == 4096:  # Flux.1, SD3: joint attention over image and T5 tokens
            extra = ", text width 4096 (T5; joint attention)"
        elif ctx:
            extra = f", text width {ctx}"
        reasons.append(Compatibility("base", "accept", f"{label(base.family)} {base.kind}{extra}"))
        reasons.extend(_needs_unknown(base))
    return _result(base, status, (*reasons, *damaged))


def _needs_unknown(base: Part) -> list[Compatibility]:
    """A warning when modelsafe has no table of the text encoders and VAE ``base``'s built-in
    family needs (Stable Cascade): nothing is reported missing, and that is not a check. A
    plugin's family is its plugin's to check (its own compatibility rules)."""
    from modelsafe.registry.model_parts import BUILTIN_FAMILIES, NAMED_ONLY_FAMILIES
    from modelsafe.runtime.family_needs import label, needs_of

    if needs_of(base.family, base.variant, base.facts.get("hidden_size")) is not None:
        return []
    if base.family not in BUILTIN_FAMILIES | NAMED_ONLY_FAMILIES:
        return []
    fam = label(base.family)
    return [
        Compatibility(
            "base",
            "warn",
            f"modelsafe has no table of the text encoders and VAE {fam} needs: what is missing "
            "from this set is not checked",
        )
    ]


def _result(part: Part, status: str, reasons: tuple[Compatibility, ...]) -> PartResult:
    return PartResult(
        role=part.role,
        ref=part.ref,
        path=part.path,
        family=part.family,
        kind=part.kind,
        variant=part.variant,
        status=status,
        reasons=reasons,
        weight=part.weight if part.role == "lora" else None,
    )


def missing_parts(
    base: Part, accepted: Iterable[Part], catalog: Catalog | None = None
) -> list[MissingPart]:
    """Text encoders and VAE the base's family needs that neither it nor ``accepted`` holds."""
    from modelsafe.runtime.family_needs import (
        COMFY_ENCODER_SLOTS,
        TEXT_ENCODER_WIDTHS,
        label,
        needs_of,
    )

    needs = needs_of(base.family, base.variant, base.facts.get("hidden_size"))
    if needs is None or base.kind not in BASE_KINDS:
        return []
    present = set(base.facts.get("parts_present") or [])
    for name in list(present):  # (a ComfyUI checkpoint's own names for its encoders)
        present.update(COMFY_ENCODER_SLOTS.get(name, ()))
    accepted = list(accepted)
    for p in accepted:
        if p.kind == "text_encoder":
            width = p.facts.get("hidden_size")
            # A file holding several encoders (variant ``clip_l+t5xxl``) fills each of their slots.
            present.update((p.variant or "").split("+"))
            if not p.variant:  # (a named one is what it is named: Qwen3-8B is no T5-XXL)
                present.update(n for n, w in TEXT_ENCODER_WIDTHS.items() if w == width)
        if p.kind == "vae":
            present.add("vae")
    missing: list[MissingPart] = []
    fam = label(base.family)
    for slot in needs.text_encoders:
        if slot not in present:
            why = f"{fam} needs the {slot} text encoder and the checkpoint does not contain it"
            missing.append(MissingPart(slot, "text_encoder", why))
    if needs.any_text_encoder and not present & set(needs.any_text_encoder):
        names = ", ".join(needs.any_text_encoder)
        why = (
            f"{fam} needs a text encoder ({names}: which one, the model's size says) and the "
            "checkpoint does not contain one"
        )
        missing.append(MissingPart(ANY_OF.join(needs.any_text_encoder), "text_encoder", why))
    if "vae" not in present and not base.facts.get("pixel_space"):  # (Chroma1-Radiance: none)
        why = (
            f"{fam} needs a {needs.latent_channels}-channel {needs.vae_name} and the checkpoint "
            "does not contain one"
        )
        missing.append(MissingPart("vae", "vae", why))
    if catalog is not None and missing:
        missing = [_with_candidates(m, base, catalog) for m in missing]
    return missing


# Joins the encoders of a slot any one of which fills it (``qwen3_4b|qwen3_8b``).
ANY_OF = "|"


def _with_candidates(missing: MissingPart, base: Part, catalog: Catalog) -> MissingPart:
    from dataclasses import replace

    from modelsafe.registry.catalog.queries import list_models

    found: list[Candidate] = []
    with catalog.session() as session:
        for model in list_models(session, kind=missing.kind):
            part = part_from_model(model)
            if missing.kind == "text_encoder":
                part = replace(part, variant=part.variant or model.variant)
                held = (part.variant or "").split("+")  # a multi-encoder file holds several
                wanted = missing.slot.split(ANY_OF)
                if not set(held) & set(wanted) and part.facts.get("hidden_size") != _width(
                    missing.slot
                ):
                    continue
            status, reasons = check_part(base, part)
            if status != "accepted":
                continue
            why = "; ".join(r.reason for r in reasons if r.status == "accept") or "fits"
            found.append(Candidate(model.name, part.ref, part.path, model.family, why))
            if len(found) >= 5:
                break
    return replace(missing, candidates=tuple(found))


def _width(slot: str) -> int | None:
    from modelsafe.runtime.family_needs import TEXT_ENCODER_WIDTHS

    return TEXT_ENCODER_WIDTHS.get(slot)


def resolve_parts(
    base: Part, parts: Sequence[Part], catalog: Catalog | None = None
) -> ResolveResult:
    """Check already loaded ``parts`` against ``base`` (no file is opened here)."""
    base_result = _base_result(base)
    results = []
    accepted = []
    encoders = tuple(p for p in parts if p.role == "text_encoder" and p.index is not None)
    base_in_set = replace(base, beside=encoders) if encoders else base
    for part in parts:
        status, reasons = check_part(base_in_set, part)
        results.append(_result(part, status, reasons))
        if status == "accepted":
            accepted.append(part)
    return ResolveResult(
        base_result,
        tuple(results),
        tuple(missing_parts(base, accepted, catalog)),
        (base, *parts),
    )


def open_catalog_if_present(value: str | None = None) -> Catalog | None:
    """The configured catalog if it exists (resolve never creates an empty one)."""
    from modelsafe.config import load_config
    from modelsafe.registry.catalog import open_catalog
    from modelsafe.registry.catalog.db import NoCatalogError, catalog_url

    url = catalog_url(load_config({"catalog": value}).catalog)
    try:  # (as the reading commands open it: a `mode=ro` URL too, never creating one)
        return open_catalog(url, create=False)
    except NoCatalogError:
        return None


def resolve(
    checkpoint: str | os.PathLike[str],
    *,
    loras: Iterable[str | tuple[str, float]] = (),
    vae: str | os.PathLike[str] | None = None,
    embeddings: Iterable[str | os.PathLike[str]] = (),
    controlnets: Iterable[str | os.PathLike[str]] = (),
    text_encoders: Iterable[str | os.PathLike[str]] = (),
    catalog: Catalog | str | None = None,
) -> ResolveResult:
    """Check a set against ``checkpoint``; every argument is a path, catalog name or hash prefix.

    ``loras`` items are ``"path"``, ``"path:0.8"`` or ``("path", 0.8)``. ``catalog`` is a Catalog,
    a URL/path, or None for the configured one (used when it exists).
    """
    from modelsafe.plugin_manager import get_plugin_manager
    from modelsafe.registry.catalog.db import Catalog as CatalogType

    pm = get_plugin_manager()
    opened = None
    if isinstance(catalog, CatalogType):
        cat: Catalog | None = catalog
    else:
        cat = opened = open_catalog_if_present(catalog)
    try:
        with pm.collecting_failures() as failed:
            base = load_part(os.fspath(checkpoint), "checkpoint", catalog=cat)
            parts: list[Part] = []
            for item in loras:
                ref, weight = item if isinstance(item, tuple) else parse_weighted(os.fspath(item))
                parts.append(load_part(ref, "lora", catalog=cat, weight=weight))
            if vae is not None:
                parts.append(load_part(os.fspath(vae), "vae", catalog=cat))
            for role, refs in (
                ("embedding", embeddings),
                ("controlnet", controlnets),
                ("text_encoder", text_encoders),
            ):
                for r in refs:
                    parts.append(load_part(os.fspath(r), role, catalog=cat))
            result = resolve_parts(base, parts, cat)
            return replace(result, plugin_failures=tuple(failed))
    finally:
        if opened is not None:
            opened.close()


# -- catalog only -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompatibleModel:
    """One catalog model that fits a checkpoint, and the reasons."""

    model: dict[str, Any]  # queries.model_json(row)
    status: str
    reasons: tuple[Compatibility, ...]


def compatible_models(
    catalog: Catalog | str,
    checkpoint: str | Model,
    kind: str | None = None,
    *,
    include_rejected: bool = False,
    family: str | None = None,
    unsafe: bool = False,
    missing: bool = False,
) -> list[CompatibleModel]:
    """What in the catalog fits ``checkpoint`` (a Model row, name, path or hash prefix).

    ``kind`` is what the part would be given as: ``lora`` takes LyCORIS files too (both go to
    ``--lora``); ``family``, ``unsafe`` and ``missing`` filter as ``modelsafe ls`` does.
    Answered from catalog rows only (stored inspect facts): no model file is opened, so rules that
    need tensor names (LoRA key coverage) do not run here; `resolve` runs them.
    """
    from modelsafe.registry.catalog import open_catalog
    from modelsafe.registry.catalog.models import Model as ModelRow
    from modelsafe.registry.catalog.queries import find_model, list_models, model_json

    if kind is not None and kind not in ADDON_KINDS:
        raise UsageError(
            f"--kind {kind} cannot be checked against a checkpoint",
            hint=f"one of: {', '.join(ADDON_KINDS)}",
        )
    kinds = KINDS_OF_ROLE["lora"] if kind == "lora" else ((kind,) if kind else ADDON_KINDS)
    cat = open_catalog(catalog) if isinstance(catalog, str) else catalog
    try:
        with cat.session() as session:
            row = (
                checkpoint if isinstance(checkpoint, ModelRow) else find_model(session, checkpoint)
            )
            base = part_from_model(row, "checkpoint")
            found = []
            rows = list_models(session, family=family, unsafe=unsafe, missing=missing)
            for model in rows:
                if model.id == row.id or model.kind not in kinds:
                    continue
                part = part_from_model(model)
                status, reasons = check_part(base, part)
                if status == "rejected" and not include_rejected:
                    continue
                found.append(CompatibleModel(model_json(model), status, reasons))
            return found
    finally:
        if isinstance(catalog, str):
            cat.close()


class _CallableModule(types.ModuleType):
    """Lets ``modelsafe.runtime.resolve(...)`` call :func:`resolve` even after this module was
    imported (the import system then binds the module, not the function, on the package)."""

    def __call__(self, *args: Any, **kwargs: Any) -> ResolveResult:
        return resolve(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
