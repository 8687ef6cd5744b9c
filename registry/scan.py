"""The scan engine: walk, skip what did not change, analyse the rest in a pool, write each file in
its own transaction, then mark what is gone as missing.

- Unchanged (same size, mtime_ns, inode and device as stored) files are never opened.
- Each file's rows (its model and every location) are written in one transaction, so a scan that
  is killed leaves a consistent catalog and the next one carries on.
- Identity is content: ``content_id`` (tensors) when the file could be read, else ``sha256``. A
  moved, renamed or converted file finds its model again and gains a location.
- A file that changes while it is read is read again (up to ``MAX_TRIES`` times).
- Files no longer on disk are marked ``missing``; nothing is deleted.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from modelsafe.registry.analyse import Analysis, HashCache, analyse
from modelsafe.registry.catalog.db import Catalog
from modelsafe.registry.catalog.models import Location, Model, Scan
from modelsafe.registry.folders import convention_of, folder_report
from modelsafe.registry.walk import Found, StatKey, printable, walk

MAX_TRIES = 3  # reads of a file that keeps changing before the scan gives up on it for now
WRITE_TRIES = 5  # attempts at one file's transaction when a concurrent scan got in the way
# Model columns a user can override with `modelsafe set`.
OVERRIDABLE = ("family", "kind", "variant", "prediction_type")
PLACEHOLDER_PREFIXES = ("nohash:", "path:")


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class ScanSummary:
    """What a scan did. ``unsafe`` and ``errors`` count every file seen, changed or not."""

    new: int = 0
    changed: int = 0
    unchanged: int = 0
    removed: int = 0
    unsafe: int = 0
    errors: int = 0
    requeued: int = 0
    files: int = 0  # model files and folders found
    bytes_read: int = 0
    seconds: float = 0.0
    skipped: list[dict[str, str]] = field(default_factory=list)
    wrong_folder: list[dict[str, str]] = field(default_factory=list)
    error_files: list[dict[str, str]] = field(default_factory=list)
    unsafe_files: list[str] = field(default_factory=list)
    scan_id: int | None = None


@dataclass(frozen=True)
class _Stored:
    key: StatKey
    status: str
    content_key: str | None
    audit_status: str | None
    error: str | None


# progress callback: (files done, files to read, bytes done, bytes to read)
Progress = Callable[[int, int, int, int], None]


def _load_stored(session: Session) -> dict[str, _Stored]:
    rows = session.execute(
        select(
            Location.path,
            Location.size,
            Location.mtime_ns,
            Location.inode,
            Location.device,
            Location.status,
            Location.error,
            Model.content_key,
            Model.audit_status,
        ).outerjoin(Model, Location.model_id == Model.id)
    )
    return {
        r[0]: _Stored(StatKey(r[1], r[2], r[3] or 0, r[4] or 0), r[5], r[7], r[8], r[6])
        for r in rows
    }


def _is_unchanged(found: Found, stored: dict[str, _Stored], with_hash: bool) -> bool:
    for p in found.paths:
        old = stored.get(p)
        if old is None or old.status == "missing" or old.key != found.key:
            return False
        if with_hash and (old.content_key or "").startswith("nohash:"):
            return False
    return True


def _under(path: str, roots: Iterable[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def scan(
    catalog: Catalog,
    roots: Sequence[str | os.PathLike[str]],
    *,
    jobs: int = 2,
    with_hash: bool = True,
    force: bool = False,
    extra_for: Callable[[str], dict[str, Any]] | None = None,
    missing_roots: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> ScanSummary:
    """Scan ``roots`` into ``catalog``.

    ``force`` reads every file again (after an upgrade taught modelsafe new formats);
    ``extra_for(path)`` adds facts to a location (the Hugging Face cache scan uses it);
    ``missing_roots`` are the folders whose vanished files are marked missing (default: roots).
    """
    started = time.perf_counter()
    summary = ScanSummary()
    abs_roots = [os.path.abspath(os.fspath(r)) for r in roots]
    with catalog.session() as session:
        run = Scan(roots=[printable(r) for r in abs_roots], status="running", summary={})
        session.add(run)
        session.flush()
        summary.scan_id = run.id
        stored = _load_stored(session)
    try:
        _scan_roots(
            catalog,
            abs_roots,
            stored,
            summary,
            started,
            jobs,
            with_hash,
            force,
            extra_for,
            missing_roots,
            progress,
        )
    except BaseException:
        # Interrupted (Ctrl-C) or failed: the scan row must not stay "running" for ever.
        _finish(catalog, summary, "failed")
        raise
    _finish(catalog, summary, "finished")
    return summary


def _finish(catalog: Catalog, summary: ScanSummary, status: str) -> None:
    with catalog.session() as session:
        row = session.get(Scan, summary.scan_id)
        if row is not None:
            row.status = status
            row.finished_at = utcnow()
            row.summary = summary_counts(summary)


def _scan_roots(
    catalog: Catalog,
    abs_roots: list[str],
    stored: dict[str, _Stored],
    summary: ScanSummary,
    started: float,
    jobs: int,
    with_hash: bool,
    force: bool,
    extra_for: Callable[[str], dict[str, Any]] | None,
    missing_roots: Sequence[str] | None,
    progress: Progress | None,
) -> None:
    walked = walk(abs_roots)
    summary.files = len(walked.found)
    summary.skipped = [{"path": s.path, "reason": s.reason} for s in walked.skipped]
    todo: list[Found] = []
    unchanged: list[str] = []
    for found in walked.found:
        if not force and _is_unchanged(found, stored, with_hash):
            summary.unchanged += 1
            unchanged.extend(found.paths)
            first = stored[found.path]
            if first.audit_status == "unsafe":
                summary.unsafe_files.append(found.path)
            if first.status == "error":
                summary.error_files.append({"path": found.path, "reason": first.error or "?"})
        else:
            todo.append(found)
    _touch(catalog, unchanged)
    _analyse_all(catalog, todo, summary, jobs, with_hash, extra_for, progress)
    seen = {p for f in walked.found for p in f.paths} | {s.path for s in walked.skipped}
    scope = [os.path.abspath(r) for r in (missing_roots or abs_roots)]
    summary.removed = _mark_missing(catalog, stored, seen, scope, walked.unlisted)
    summary.unsafe = len(summary.unsafe_files)
    summary.errors = len(summary.error_files)
    summary.seconds = round(time.perf_counter() - started, 3)


def summary_counts(summary: ScanSummary) -> dict[str, Any]:
    keys = ("new", "changed", "unchanged", "removed", "unsafe", "errors", "requeued", "files")
    counts: dict[str, Any] = {k: getattr(summary, k) for k in keys}
    counts["skipped"] = len(summary.skipped)
    counts["bytes_read"] = summary.bytes_read
    return counts


def _touch(catalog: Catalog, paths: list[str]) -> None:
    """Record that unchanged files were seen: one executemany, no file is opened."""
    if not paths:
        return
    now = utcnow()
    statement = update(Location).where(Location.path == bindparam("p")).values(last_seen_at=now)
    with catalog.engine.begin() as conn:
        conn.execute(statement, [{"p": p} for p in paths])


def _analyse_all(
    catalog: Catalog,
    todo: list[Found],
    summary: ScanSummary,
    jobs: int,
    with_hash: bool,
    extra_for: Callable[[str], dict[str, Any]] | None,
    progress: Progress | None,
) -> None:
    total_bytes = sum(f.key.size for f in todo)
    done_files = done_bytes = 0
    cache = HashCache()
    tries: dict[str, int] = {}
    if progress:
        progress(0, len(todo), 0, total_bytes)
    with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="modelsafe-scan") as pool:

        def submit(found: Found) -> Future[Analysis]:
            tries[found.path] = tries.get(found.path, 0) + 1
            return pool.submit(analyse, found.path, found.is_dir, with_hash=with_hash, cache=cache)

        pending: dict[Future[Analysis], Found] = {submit(f): f for f in todo}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                found = pending.pop(future)
                result = future.result()
                if result.changed and tries[found.path] < MAX_TRIES:
                    summary.requeued += 1
                    pending[submit(found)] = found
                    continue
                if result.changed:
                    summary.skipped.append(
                        {"path": found.path, "reason": f"kept changing while read ({MAX_TRIES}x)"}
                    )
                elif not result.vanished:
                    _record(catalog, found, result, summary, extra_for)
                    summary.bytes_read += result.key.size
                done_files += 1
                done_bytes += found.key.size
                if progress:
                    progress(done_files, len(todo), done_bytes, total_bytes)


def _record(
    catalog: Catalog,
    found: Found,
    result: Analysis,
    summary: ScanSummary,
    extra_for: Callable[[str], dict[str, Any]] | None,
) -> None:
    for attempt in range(WRITE_TRIES):
        try:
            with catalog.session() as session:
                was_new, warnings = write_result(session, found, result, extra_for)
            break
        except (IntegrityError, OperationalError) as exc:
            # Another scan wrote the same model or path at the same moment: read again, retry.
            if attempt == WRITE_TRIES - 1:
                _not_recorded(found, summary, exc)
                return
            time.sleep(0.05 * (attempt + 1))
        except (ValueError, TypeError, UnicodeError, SQLAlchemyError) as exc:
            _not_recorded(found, summary, exc)  # one file's row, not the whole scan
            return
    if was_new:
        summary.new += 1
    else:
        summary.changed += 1
    if result.audit_status == "unsafe":
        summary.unsafe_files.append(found.path)
    if result.error:
        summary.error_files.append({"path": found.path, "reason": result.error})
    for w in warnings:
        summary.wrong_folder.append({"path": found.path, "problem": w})


def _not_recorded(found: Found, summary: ScanSummary, exc: BaseException) -> None:
    reason = f"could not be recorded in the catalog: {type(exc).__name__}: {exc}"
    summary.error_files.append({"path": printable(found.path), "reason": reason[:500]})


def content_key(result: Analysis) -> str:
    hashes = result.hashes or {}
    for name in ("content_id", "sha256", "folder_id"):
        value = hashes.get(name)
        if value:
            return f"dir:{value}" if name == "folder_id" else str(value)
    prefix = "path:" if hashes or result.hash_error else "nohash:"
    return prefix + result.path


def _model_name(path: str, is_dir: bool) -> str:
    p = Path(path)
    return p.name if is_dir else p.stem


def write_result(
    session: Session,
    found: Found,
    result: Analysis,
    extra_for: Callable[[str], dict[str, Any]] | None = None,
) -> tuple[bool, list[str]]:
    """Upsert the model and every location of one analysed file; returns (new?, folder report)."""
    key = content_key(result)
    locations = {
        loc.path: loc
        for loc in session.scalars(select(Location).where(Location.path.in_(found.paths)))
    }
    was_new = not locations
    model = session.scalar(select(Model).where(Model.content_key == key))
    sha256 = (result.hashes or {}).get("sha256")
    if model is None and sha256:
        model = session.scalar(select(Model).where(Model.content_key == sha256))
        if model is not None:
            model.content_key = key  # first seen unreadable (keyed by sha256), now readable
    previous = {loc.model for loc in locations.values() if loc.model is not None}
    placeholders = [m for m in previous if m.content_key.startswith(PLACEHOLDER_PREFIXES)]
    if model is None and placeholders:
        model = placeholders[0]  # the same file read without hashes before: it gains its key
        model.content_key = key
    if model is None:
        model = Model(content_key=key, name="", overrides={}, details={}, format="unknown")
        session.add(model)
    for old in placeholders:
        if old is not model and not model.overrides and old.overrides:
            model.overrides, model.note = dict(old.overrides), old.note
    others = [
        loc
        for loc in model.locations
        if loc.path not in found.paths and loc.status != "missing" and os.path.lexists(loc.path)
    ]
    # Named after its first path (in path order) still on disk: stable across copies, and a
    # renamed file takes its new name.
    model.name = _model_name(min([*found.paths, *(loc.path for loc in others)]), result.is_dir)
    _fill_model(model, result)
    now = utcnow()
    report: list[str] = []
    for path in found.paths:
        loc = locations.get(path)
        if loc is None:
            loc = Location(path=path, first_seen_at=now)
            session.add(loc)
        problems = folder_report(path, model.family, model.kind)
        report.extend(problems)
        conv = convention_of(path)
        extra: dict[str, Any] = {"format": result.format, "hashes": result.hashes}
        if conv:
            extra["folder"] = conv.as_json()
        if extra_for:
            extra.update(extra_for(path))
        loc.model = model
        loc.size, loc.mtime_ns = result.key.size, result.key.mtime_ns
        loc.inode, loc.device = result.key.inode, result.key.device
        loc.status = "error" if result.error else "present"
        loc.error = result.error
        loc.warnings = [*((result.report or {}).get("warnings") or []), *problems]
        loc.extra = extra
        loc.last_seen_at = now
    session.flush()
    for old in placeholders:
        if old is not model and not old.locations:
            session.delete(old)
    return was_new, report


def _fill_model(model: Model, result: Analysis) -> None:
    report = result.report or {}
    hashes = result.hashes or {}
    detected = {
        "family": report.get("family", "unknown"),
        "kind": report.get("kind", "unknown"),
        "variant": report.get("variant"),
        "prediction_type": report.get("prediction_type"),
    }
    model.format = result.format
    for name in OVERRIDABLE:
        value = model.overrides.get(name, detected[name]) if model.overrides else detected[name]
        setattr(model, name, value)
    model.precision = report.get("precision")
    model.parameter_count = report.get("parameter_count")
    model.weight_bytes = report.get("weight_bytes")
    model.tensor_count = report.get("tensor_count")
    model.confidence = report.get("confidence")
    for name in ("sha256", "autov1", "autov2", "autov3", "blake3", "crc32", "content_id"):
        setattr(model, name, hashes.get(name))
    model.audit_status = result.audit_status
    model.details = {
        "detected": detected,
        "inspect": report or None,
        "audit": result.verdict,
        "error": result.error,
        "hash_error": result.hash_error,
        "hashes": hashes or None,
        "components": result.component_hashes or None,
        "is_dir": result.is_dir,
    }
    model.updated_at = utcnow()


def _mark_missing(
    catalog: Catalog,
    stored: dict[str, _Stored],
    seen: set[str],
    scope: list[str],
    unlisted: list[str],
) -> int:
    gone = [
        path
        for path, old in stored.items()
        if old.status != "missing"
        and path not in seen
        and _under(path, scope)
        and not _under(path, unlisted)
        and not os.path.lexists(path)
    ]
    for i in range(0, len(gone), 500):
        with catalog.session() as session:
            session.execute(
                update(Location)
                .where(Location.path.in_(gone[i : i + 500]))
                .values(status="missing")
            )
    return len(gone)
