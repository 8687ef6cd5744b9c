"""Questions asked of the catalog: find a model, list models, duplicates, overrides, export.

Everything here reads the catalog only; no model file is opened.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, selectinload

from modelsafe.errors import ModelNotFoundError, UsageError
from modelsafe.registry.catalog.models import Location, Model
from modelsafe.registry.walk import is_utf8
from modelsafe.registry.walk import printable as fs_text
from modelsafe.types import KINDS

HASH_COLUMNS = ("sha256", "autov2", "blake3", "content_id", "autov3", "autov1", "crc32")
MIN_HASH_PREFIX = 6
_HEX = re.compile(r"^[0-9a-fA-F]+$")

FAMILIES = (
    "sd1",
    "sd2",
    "sdxl",
    "sdxl_refiner",
    "sd3",
    "sd3.5",
    "flux1",
    "chroma",
    "z-image",
    "qwen-image",
    "hidream",
    "stable-cascade",
    "flux2",
    "lumina2",
    "sana",
    "wan",
    "hunyuan-video",
    "hunyuanimage2.1",
    "kandinsky5",
    "any",
    "unknown",
)


# Audit statuses, worst first: one unsafe copy makes a model unsafe; an unreadable (error) or
# unknown audit is not "safe" either.
AUDIT_ORDER = ("unsafe", "error", "unknown", "safe")


def worst_audit(statuses: Iterable[str | None]) -> str | None:
    """The worst of ``statuses`` (``unsafe`` > ``error`` > anything else > ``safe``); None if
    there is none."""
    known = [s for s in statuses if s]
    if not known:
        return None
    return min(known, key=lambda s: AUDIT_ORDER.index(s) if s in AUDIT_ORDER else 2)


def location_audit(loc: Location) -> str | None:
    """The audit of the file at ``loc`` (its model's for a row scanned before 0004)."""
    if loc.audit_status:
        return loc.audit_status
    return loc.model.audit_status if loc.model is not None else None


def model_audit(model: Model) -> str | None:
    """The worst audit of the model's copies on disk (of every copy when none is left)."""
    on_disk = [loc for loc in model.locations if loc.status != "missing"]
    considered = on_disk or list(model.locations)
    if not considered:
        return model.audit_status
    return worst_audit(loc.audit_status or model.audit_status for loc in considered)


def model_status(model: Model) -> str:
    """``present`` if a copy is on disk and readable, ``error`` if only unreadable ones are,
    ``missing`` if every known location is gone."""
    statuses = {loc.status for loc in model.locations}
    if "present" in statuses:
        return "present"
    if "error" in statuses:
        return "error"
    return "missing"


def model_size(model: Model) -> int:
    """The size of the copy the model shows (:func:`preferred_location`; a readable copy before
    one that failed to read, so a download's damaged second copy does not give its size), else
    the largest it had."""
    shown = preferred_location(model) or preferred_location(model, ("present", "error"))
    if shown is not None:
        return shown.size
    return max([loc.size for loc in model.locations] or [0])


def copy_preference(loc: Location) -> tuple[bool, bool, str]:
    """Which copy of a model to use (sort key, best first): one audited safe first (a .ckpt and
    its .safetensors are one model), then safetensors, then by path."""
    fmt = (loc.extra or {}).get("format")
    return (location_audit(loc) != "safe", fmt != "safetensors", loc.path)


def preferred_location(model: Model, statuses: tuple[str, ...] = ("present",)) -> Location | None:
    """The model's best copy (:func:`copy_preference`) among those the catalog holds as present
    (readable when last scanned; ``statuses`` to take others too); None when it has none."""
    held = [loc for loc in model.locations if loc.status in statuses]
    return min(held, key=copy_preference, default=None)


def location_of_file(session: Session, path: Path) -> Location | None:
    """The catalog's row for the file at ``path`` while it is as the catalog saw it (size,
    mtime and, where recorded, ctime), else None; a folder matches by path alone. ``path`` is
    looked up as scanned (a symlinked root or a hub snapshot keeps its links), then as its
    target."""
    resolved = path.resolve()
    try:
        stat = resolved.stat()
    except OSError:
        return None
    spellings = [os.path.abspath(path), str(resolved)]
    rows = session.scalars(select(Location).where(Location.path.in_(spellings))).all()
    loc = min(rows, key=lambda row: spellings.index(row.path), default=None)
    if loc is None or not path.is_file():
        return loc
    changed = loc.size != stat.st_size or loc.mtime_ns != stat.st_mtime_ns
    if changed or (loc.ctime_ns and loc.ctime_ns != stat.st_ctime_ns):
        return None
    return loc


def file_on_disk(model: Model) -> Path | None:
    """A location the catalog holds as present that is still on this machine, the best first
    (:func:`copy_preference`)."""
    for loc in sorted(model.locations, key=copy_preference):
        if loc.status == "present" and Path(loc.path).exists():
            return Path(loc.path)
    return None


def _models() -> Any:
    return select(Model).options(selectinload(Model.locations)).order_by(Model.name, Model.id)


def find_model(session: Session, ref: str) -> Model:
    """The model a user means by ``ref``: a path, a hash prefix (6+ hex digits) or a name."""
    matches = find_models(session, ref)
    if not matches:
        raise ModelNotFoundError(
            f"no model in the catalog matches {ref!r}",
            hint="give a path, a hash prefix (6+ hex digits) or a name; `modelsafe ls` lists them",
        )
    if len(matches) > 1:
        listed = "; ".join(f"{m.name} ({m.autov2 or m.content_key[:12]})" for m in matches[:8])
        raise UsageError(
            f"{ref!r} matches {len(matches)} models: {listed}",
            hint="use a longer hash prefix or the full path",
        )
    return matches[0]


def find_models(session: Session, ref: str) -> list[Model]:
    """Every model ``ref`` may mean (see :func:`find_model`), the likeliest first found: the
    model at that path, those whose hash starts with it, or by name (:func:`_by_name`)."""
    if not is_utf8(ref):
        raise ModelNotFoundError(
            f"no model in the catalog matches {fs_text(ref)!r}: it is not valid UTF-8, and the "
            "catalog holds only UTF-8 names and paths",
            hint="`modelsafe scan` skips a file whose name is not valid UTF-8: rename it (e.g. "
            "with `convmv -f latin1 -t utf8`), scan it again and give its new name, or give "
            "the model's hash prefix",
        )
    path = os.path.abspath(os.path.expanduser(ref))
    by_path = session.scalars(
        _models().join(Location, Location.model_id == Model.id).where(Location.path == path)
    ).all()
    if by_path:
        return list(by_path)
    digest = hash_prefix(ref)
    if digest is not None:
        prefix = digest + "%"
        found = session.scalars(
            _models().where(or_(*(getattr(Model, c).like(prefix) for c in HASH_COLUMNS)))
        ).all()
        if found:
            return list(found)
        # A location of another format keeps its own hashes (a .ckpt beside its .safetensors).
        return [
            m
            for m in session.scalars(_models()).unique()
            if any(location_hash_matches(loc, digest) for loc in m.locations)
        ]
    return _by_name(session, ref)


def models_named(session: Session, name: str) -> list[Model]:
    """The models named exactly ``name`` (in Unicode NFC), those with a copy on disk first."""
    wanted = _nfc(name)
    return [m for m in _by_name(session, name) if _nfc(m.name or "") == wanted]


def hash_prefix(ref: str) -> str | None:
    """``ref`` as the lower-case hash prefix the catalog is searched by, without the ``0x`` a
    ModelSpec ``modelspec.hash_sha256`` carries; None when it is not one (too short, not hex)."""
    digest = ref[2:] if ref[:2] in ("0x", "0X") else ref
    if len(digest) >= MIN_HASH_PREFIX and _HEX.match(digest):
        return digest.lower()
    return None


def _by_name(session: Session, ref: str) -> list[Model]:
    """The models named ``ref`` exactly, else named so in another case, else whose name holds
    it (in any case): ``Detail`` and ``detail`` are two models, each found by its own name.
    Names are compared in Unicode NFC on both sides, so ``Pokémon`` typed on a keyboard finds a
    file copied from macOS, whose name spells the ``é`` as ``e`` and a combining accent (NFD)."""
    wanted = _nfc(ref)
    folded = wanted.casefold()
    exact: list[int] = []
    any_case: list[int] = []
    holding: list[int] = []
    for model_id, name in session.execute(select(Model.id, Model.name)):
        name = _nfc(name or "")
        if name == wanted:
            exact.append(model_id)
        if name.casefold() == folded:
            any_case.append(model_id)
        elif folded in name.casefold():
            holding.append(model_id)
    for ids in (exact, any_case, holding):
        if ids:
            return _on_disk_first(_models_by_id(session, ids))
    return _by_file_name(session, folded)


def _by_file_name(session: Session, folded: str) -> list[Model]:
    """The models with a copy on disk whose file (or folder) name, or that name without its
    extension, is ``folded`` in any case: a model is named after one copy, and the user may
    know it by another's name (``model (1).safetensors`` beside ``model.safetensors``)."""
    query = select(Location.model_id, Location.path).where(Location.status != "missing")
    ids: list[int] = []
    for model_id, path in session.execute(query):
        name = _nfc(os.path.basename(path)).casefold()
        if model_id is not None and folded in (name, os.path.splitext(name)[0]):
            ids.append(model_id)
    return _on_disk_first(_models_by_id(session, sorted(set(ids))))


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


_IDS_PER_QUERY = 500  # (well under SQLite's and PostgreSQL's limits on bound parameters)


def _models_by_id(session: Session, ids: Sequence[int]) -> list[Model]:
    """The models with these ids, in :func:`_models`'s order (name, then id)."""
    found: list[Model] = []
    for start in range(0, len(ids), _IDS_PER_QUERY):
        chunk = ids[start : start + _IDS_PER_QUERY]
        found += session.scalars(_models().where(Model.id.in_(chunk))).unique().all()
    return sorted(found, key=lambda m: (m.name, m.id))


def _on_disk_first(models: Sequence[Model]) -> list[Model]:
    """Of several models a name matches, those with a copy on disk: the content a file had
    before it was replaced (a v2 download at the same path) keeps its name but is no longer
    what the user means. Only when none is on disk are the missing ones returned."""
    on_disk = [m for m in models if model_status(m) != "missing"]
    return on_disk or list(models)


def location_hash_matches(loc: Location, prefix: str) -> bool:
    """True when one of the copy's recorded hashes starts with ``prefix`` (lower case)."""
    hashes = (loc.extra or {}).get("hashes") or {}
    return any(isinstance(v, str) and v.lower().startswith(prefix) for v in hashes.values())


def list_models(
    session: Session,
    *,
    family: str | None = None,
    kind: str | None = None,
    unsafe: bool = False,
    missing: bool = False,
) -> list[Model]:
    """Models matching every filter given; ``missing`` lists those with no copy left on disk,
    otherwise only models with a copy on disk (readable or not) are listed."""
    for name, value in (("--family", family), ("--kind", kind)):
        check_utf8(name, value)
    query = _models()
    if family:
        query = query.where(Model.family == family)
    if kind:
        query = query.where(Model.kind == kind)
    models = session.scalars(query).unique().all()
    wanted = {"missing"} if missing else {"present", "error"}
    return [
        m
        for m in models
        if model_status(m) in wanted and (not unsafe or model_audit(m) == "unsafe")
    ]


def check_utf8(what: str, value: str | None) -> None:
    """Refuse ``value`` (given as ``what``) if the command line gave it as bytes that are not
    UTF-8 (Python keeps them as surrogate escapes): the catalog stores and compares text only."""
    if value is not None and not is_utf8(value):
        raise UsageError(
            f"{what} {fs_text(value)!r} is not valid UTF-8 (shown with U+FFFD for each bad byte)",
            hint="give it as UTF-8 text: check the encoding of your terminal or script "
            "(`locale` should name UTF-8)",
        )


def catalog_labels(session: Session) -> tuple[int, list[str], list[str]]:
    """How many models the catalog holds, and the families and kinds they have (for saying why a
    filter matched nothing)."""
    total = session.scalar(select(func.count()).select_from(Model)) or 0
    families = sorted({f for f in session.scalars(select(Model.family).distinct()) if f})
    kinds = sorted({k for k in session.scalars(select(Model.kind).distinct()) if k})
    return total, families, kinds


@dataclass(frozen=True)
class DuplicateGroup:
    model: Model
    keep: Location  # the copy worth keeping (safetensors first, then the smallest)
    others: tuple[Location, ...]
    reclaimable: int  # bytes freed by deleting the others (hard links count once)


def duplicates(session: Session) -> list[DuplicateGroup]:
    """Models stored more than once on disk (same bytes or same tensors), biggest saving first.
    Unreadable copies count too: the same broken download twice is still twice the bytes."""
    groups = []
    for model in session.scalars(_models()).unique():
        present = [loc for loc in model.locations if loc.status != "missing"]
        physical: dict[tuple[int | None, int | None], Location] = {}
        for loc in sorted(present, key=lambda x: x.path):
            physical.setdefault((loc.device, loc.inode), loc)
        if len(physical) < 2:
            continue
        copies = list(physical.values())
        keep = min(copies, key=_keep_order)
        others = tuple(c for c in copies if c is not keep)
        groups.append(DuplicateGroup(model, keep, others, sum(c.size for c in others)))
    groups.sort(key=lambda g: g.reclaimable, reverse=True)
    return groups


def _keep_order(loc: Location) -> tuple[int, int, str]:
    fmt = (loc.extra or {}).get("format")
    return (0 if fmt == "safetensors" else 1, loc.size, loc.path)


def _check_catalog_name(session: Session, name: str, value: str, builtin: Sequence[str]) -> None:
    """Refuse a family or kind that is neither built in nor on a model of the catalog (one a
    plugin's detector gave: a plugin's family is a family like the built-in ones)."""
    column = Model.family if name == "family" else Model.kind
    seen = {v for v in session.scalars(select(column).distinct()) if v}
    if value in seen:
        return
    extra = sorted(seen - set(builtin))
    raise UsageError(
        f"unknown {name} {value!r}",
        hint=f"one of: {', '.join([*builtin, *extra])}"
        + (f" ({', '.join(extra)}: from plugins, seen in the catalog)" if extra else ""),
    )


def set_overrides(
    session: Session, model: Model, values: dict[str, str | None], note: str | None = None
) -> Model:
    """Record a user's correction; it wins over detection now and after every re-scan.

    A value of ``""`` removes that override (detection applies again)."""
    for name, value in [*values.items(), ("note", note)]:
        check_utf8(f"--{name.replace('_', '-')}", value)
    for name, builtin in (("family", FAMILIES), ("kind", KINDS)):
        value = values.get(name)
        if value and value not in builtin:
            _check_catalog_name(session, name, value, builtin)
    overrides = dict(model.overrides or {})
    detected = (model.details or {}).get("detected") or {}
    for name, value in values.items():
        if value is None:
            continue
        if value == "":
            overrides.pop(name, None)
            setattr(
                model, name, detected.get(name, "unknown" if name in ("family", "kind") else None)
            )
        else:
            overrides[name] = value
            setattr(model, name, value)
    model.overrides = overrides
    if note is not None:
        model.note = note or None
    return model


# Keys of ``locations.extra`` shown under their own names (or not at all) by location_json.
_EXTRA_OWN_KEYS = ("format", "hashes", "audit", "os_error", "own_details")


def location_json(loc: Location) -> dict[str, Any]:
    extra = loc.extra or {}
    verdict = extra.get("audit") or {}
    return {
        "path": loc.path,
        "status": loc.status,
        "size": loc.size,
        "format": extra.get("format"),
        "audit": location_audit(loc),
        "findings": list(verdict.get("findings") or []),
        "error": loc.error,
        "warnings": list(loc.warnings or []),
        "mtime_ns": loc.mtime_ns,
        "first_seen_at": loc.first_seen_at.isoformat() if loc.first_seen_at else None,
        "last_seen_at": loc.last_seen_at.isoformat() if loc.last_seen_at else None,
        **{k: v for k, v in extra.items() if k not in _EXTRA_OWN_KEYS},
        "hashes": extra.get("hashes"),
    }


def _audit_verdict(model: Model) -> Any:
    """The verdict that explains the model's audit: that of its worst copy on disk."""
    audit = model_audit(model)
    on_disk = [loc for loc in model.locations if loc.status != "missing"]
    for loc in sorted(on_disk or model.locations, key=lambda x: x.path):
        verdict = (loc.extra or {}).get("audit")
        if verdict and location_audit(loc) == audit:
            return verdict
    return (model.details or {}).get("audit")


def model_json(model: Model, *, full: bool = False) -> dict[str, Any]:
    """A model as JSON: the facts ``ls`` shows, plus (``full``) everything ``show`` shows."""
    value: dict[str, Any] = {
        "id": model.id,
        "name": model.name,
        "status": model_status(model),
        "family": model.family,
        "kind": model.kind,
        "variant": model.variant,
        "prediction_type": model.prediction_type,
        "format": model.format,
        "precision": model.precision,
        "parameter_count": model.parameter_count,
        "size": model_size(model),
        "audit": model_audit(model),
        "unsafe_paths": [
            loc.path
            for loc in model.locations
            if loc.status != "missing" and location_audit(loc) == "unsafe"
        ],
        "sha256": model.sha256,
        "autov2": model.autov2,
        "content_id": model.content_id,
        "overrides": dict(model.overrides or {}),
        "note": model.note,
        "paths": [loc.path for loc in model.locations if loc.status != "missing"],
    }
    if full:
        details = model.details or {}
        value.update(
            {
                "hashes": {c: getattr(model, c) for c in HASH_COLUMNS},
                "detected": details.get("detected"),
                "confidence": model.confidence,
                "weight_bytes": model.weight_bytes,
                "tensor_count": model.tensor_count,
                "locations": [location_json(loc) for loc in model.locations],
                "inspect": details.get("inspect"),
                "audit_verdict": _audit_verdict(model),
                "error": details.get("error"),
                "hash_error": details.get("hash_error"),
                "components": details.get("components"),
                "created_at": model.created_at.isoformat() if model.created_at else None,
                "updated_at": model.updated_at.isoformat() if model.updated_at else None,
            }
        )
    return value


EXPORT_COLUMNS: Sequence[str] = (
    "model_id",
    "name",
    "path",
    "location_status",
    "size",
    "format",
    "family",
    "kind",
    "variant",
    "prediction_type",
    "precision",
    "parameter_count",
    "audit",
    "model_audit",
    "sha256",
    "autov1",
    "autov2",
    "autov3",
    "blake3",
    "crc32",
    "content_id",
    "overrides",
    "note",
    "error",
    "warnings",
)


def export_rows(session: Session) -> list[dict[str, Any]]:
    """One row per location (a model stored twice gives two rows), for CSV. ``audit`` is that
    file's own audit, ``model_audit`` the worst of the model's copies on disk."""
    rows = []
    for model in session.scalars(_models()).unique():
        audit = model_audit(model)
        for loc in sorted(model.locations, key=lambda x: x.path):
            hashes = (loc.extra or {}).get("hashes") or {}
            rows.append(
                {
                    "model_id": model.id,
                    "name": model.name,
                    "path": loc.path,
                    "location_status": loc.status,
                    "size": loc.size,
                    "format": (loc.extra or {}).get("format") or model.format,
                    "family": model.family,
                    "kind": model.kind,
                    "variant": model.variant,
                    "prediction_type": model.prediction_type,
                    "precision": model.precision,
                    "parameter_count": model.parameter_count,
                    "audit": location_audit(loc),
                    "model_audit": audit,
                    **{c: hashes.get(c, getattr(model, c)) for c in HASH_COLUMNS},
                    "overrides": ";".join(f"{k}={v}" for k, v in (model.overrides or {}).items()),
                    "note": model.note,
                    "error": loc.error,
                    "warnings": " | ".join(loc.warnings or []),
                }
            )
    return rows


def export_models(session: Session) -> list[dict[str, Any]]:
    """Every model with all its facts and locations, for JSON."""
    return [model_json(m, full=True) for m in session.scalars(_models()).unique()]
