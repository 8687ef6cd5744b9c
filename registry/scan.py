"""The scan engine: walk, skip what did not change, analyse the rest in a pool, write each file in
its own transaction, then mark what is gone as missing.

- Unchanged (same size, mtime_ns, ctime_ns, inode and device as stored) files are never opened;
  a file whose last read failed for an OS reason (permission denied) is read again every time.
- Each file's rows (its model and every location) are written in one transaction, so a scan that
  is killed leaves a consistent catalog and the next one carries on.
- Identity is content: ``content_id`` (tensors) when the file could be read, else ``sha256``. A
  moved, renamed or converted file finds its model again and gains a location.
- A file that changes while it is read is read again (up to ``MAX_TRIES`` times).
- The audit belongs to each file (``locations.audit_status``): a safe .safetensors and a .ckpt
  that runs code can hold the same tensors, so be one model. The model's ``audit_status`` is the
  worst of its copies on disk; its ``format``, file hashes (sha256, AutoV2...), detected columns
  and ``details`` (the inspect report) are those of its preferred copy
  (``queries.preferred_location``: audited safe, then safetensors, then by path), whatever
  order the copies were scanned in; the other copies keep their own (:func:`_settle_details`).
- Placeholder models (read with --no-hash) found to be one merge into the oldest (by id). User
  settings are taken oldest first, those already there winning (:func:`_take_settings`).
- The summary's lists are in path order (:meth:`ScanSummary.sort`), whatever order the worker
  threads finished in.
- Files no longer on disk (a link whose target is gone included) are marked ``missing``; nothing
  is deleted. So is a path that holds something else now (:func:`_gone`).
- Ctrl-C, SIGTERM or a catalog that refuses writes stops the pool at once (the files not started
  are not read); the scan's row is closed ``interrupted`` or ``failed``, and a row a killed scan
  left ``running`` is closed by the next scan (:func:`_close_stale_scans`).
- A ``--no-hash`` model whose file moved (same device, inode, size, mtime and
  :func:`fingerprint`) joins the file's model at its new path (:class:`_Before`,
  :func:`_moved_placeholders`).
"""

from __future__ import annotations

import errno
import functools
import os
import re
import shlex
import signal
import socket
import stat as stat_module
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, bindparam, func, select, update
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, selectinload

from modelsafe.errors import CatalogError
from modelsafe.registry.analyse import Analysis, HashCache, analyse
from modelsafe.registry.catalog.db import Catalog
from modelsafe.registry.catalog.models import Location, Model, Scan
from modelsafe.registry.catalog.queries import (
    copy_preference,
    model_audit,
    preferred_location,
    worst_audit,
)
from modelsafe.registry.folders import convention_of, folder_report
from modelsafe.registry.formats.diffusers_dir_reader import SHARD_SUFFIX, WEIGHT_BASES
from modelsafe.registry.walk import (
    MODEL_FILE_EXTENSIONS,
    PARTIAL_DOWNLOADS,
    VANISHED,
    Found,
    StatKey,
    is_model_folder,
    printable,
    walk,
)

MAX_TRIES = 3  # reads of a file that keeps changing before the scan gives up on it for now
WRITE_TRIES = 5  # attempts at one file's transaction when a concurrent scan got in the way
# Model columns a user can override with `modelsafe set`.
OVERRIDABLE = ("family", "kind", "variant", "prediction_type")
PLACEHOLDER_PREFIXES = ("nohash:", "path:")
# A scan left "running" by a process this host cannot check (another machine on a PostgreSQL
# catalog, a row written before scans recorded their process) is closed after this long.
STALE_SCAN_AGE = timedelta(days=2)
STOPPED = "its process stopped before the scan finished (killed, out of memory, a power cut?)"
# ``locations.extra`` key of a file read without hashes: :func:`fingerprint`.
FINGERPRINT = "fingerprint"
THREAD_PREFIX = "modelsafe-scan"  # the names of the worker threads
FINGERPRINT_SPAN = 64 * 1024  # bytes read at each end of the file


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class ScanSummary:
    """What a scan did. ``unsafe`` and ``errors`` count every file seen, changed or not.

    ``warnings``: what reading a file found wrong without making it an error (an aria2 download
    still in progress, bytes that belong to no tensor); ``notices``: what the scan did on the
    user's behalf (an override kept for a file's new content); ``unusable_roots``: roots given
    that do not exist or cannot be read (the command exits 2)."""

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
    warnings: list[dict[str, str]] = field(default_factory=list)
    notices: list[dict[str, str]] = field(default_factory=list)
    unusable_roots: list[dict[str, str]] = field(default_factory=list)
    scan_id: int | None = None

    def sort(self) -> None:
        """Every list in path order, then by message: files are recorded in the order worker
        threads finish them, which no two scans share."""
        self.unsafe_files.sort()
        for entries in (
            self.skipped,
            self.wrong_folder,
            self.error_files,
            self.warnings,
            self.notices,
            self.unusable_roots,
        ):
            entries.sort(key=_path_then_message)


def _path_then_message(entry: dict[str, str]) -> tuple[str, ...]:
    return (str(entry.get("path")), *(str(v) for k, v in sorted(entry.items()) if k != "path"))


@dataclass(frozen=True)
class _Stored:
    size: int
    mtime_ns: int
    ctime_ns: int | None  # None: stored before 0004 (not compared until the next read)
    inode: int
    device: int
    status: str
    content_key: str | None
    audit_status: str | None  # this file's own audit; None: not audited per file yet
    error: str | None
    retry: bool = False  # its read failed for an OS reason (permission denied): read it again

    @property
    def key(self) -> StatKey:
        """The stat stored (a change time not recorded matches any: :class:`StatKey`)."""
        return StatKey(self.size, self.mtime_ns, self.inode, self.device, self.ctime_ns or 0)


# progress callback: (files done, files to read, bytes done, bytes to read)
Progress = Callable[[int, int, int, int], None]


def _load_stored(session: Session) -> dict[str, _Stored]:
    rows = session.execute(
        select(
            Location.path,
            Location.size,
            Location.mtime_ns,
            Location.ctime_ns,
            Location.inode,
            Location.device,
            Location.status,
            Model.content_key,
            Location.audit_status,
            Location.error,
        ).outerjoin(Model, Location.model_id == Model.id)
    )
    stored = {
        r[0]: _Stored(r[1], r[2], r[3], r[4] or 0, r[5] or 0, r[6], r[7], r[8], r[9]) for r in rows
    }
    # (error rows are few: their extra is read to find those an OS error caused)
    errors = session.execute(
        select(Location.path, Location.extra).where(Location.status == "error")
    )
    for path, extra in errors:
        if (extra or {}).get("os_error") and path in stored:
            stored[path] = _replace_retry(stored[path])
    return stored


@dataclass(frozen=True)
class _Before:
    """What the catalog held when the scan started, for what it writes: which paths it knew,
    and where it holds files read without hashes (keyed by path), by the stat facts a move or
    rename keeps (:meth:`StatKey.ignoring_ctime`). Whether such a file is the one at the new
    path is for its content to say (:func:`fingerprint`, :func:`_moved_placeholders`)."""

    stored: dict[str, _Stored]
    placeholders: dict[StatKey, list[str]]

    @classmethod
    def of(cls, stored: dict[str, _Stored]) -> _Before:
        placeholders: dict[StatKey, list[str]] = {}
        for path, old in stored.items():
            if old.inode and (old.content_key or "").startswith(PLACEHOLDER_PREFIXES):
                placeholders.setdefault(old.key.ignoring_ctime(), []).append(path)
        return cls(stored, placeholders)

    def knows(self, found: Found) -> bool:
        return any(p in self.stored for p in found.paths)

    def moved_from(self, found: Found, key: StatKey) -> list[str]:
        """The other paths where a file with this stat (``key``) was read without hashes."""
        paths = self.placeholders.get(key.ignoring_ctime(), [])
        return [p for p in paths if p not in found.paths]


def _replace_retry(old: _Stored) -> _Stored:
    from dataclasses import replace

    return replace(old, retry=True)


def _ctime(key: StatKey) -> int | None:
    """The key's st_ctime_ns (None where it is not recorded: 0)."""
    value = getattr(key, "ctime_ns", None)
    return value if isinstance(value, int) and value else None


def _location_key(loc: Location) -> StatKey:
    """The stat ``loc`` records (:class:`StatKey`)."""
    return StatKey(loc.size, loc.mtime_ns, loc.inode or 0, loc.device or 0, loc.ctime_ns or 0)


def _is_unchanged(found: Found, stored: dict[str, _Stored], with_hash: bool) -> bool:
    for p in found.paths:
        old = stored.get(p)
        # (the ctime counts: a chmod, or a rewrite that put the old mtime back, changes it)
        if old is None or old.status == "missing" or old.key != found.key:
            return False
        if with_hash and (old.content_key or "").startswith("nohash:"):
            return False
        if old.audit_status is None or old.retry:
            return False  # not audited as a file of its own yet, or unreadable for an OS reason
    return True


_EXTENSION = re.compile(r"\.[a-z0-9][a-z0-9_+-]{0,30}\Z")


def model_extensions() -> frozenset[str]:
    """The extensions a scan looks for: the built-in ones and those plugins add
    (``modelsafe_model_extensions``). An answer that is not a list of extensions such as
    ``".onnx"`` (a dot, then up to 31 letters, digits, ``_``, ``+``, ``-``), or names a partial
    download's suffix (``.part``), is recorded as the plugin's failure and left out."""
    from modelsafe.plugin_manager import get_plugin_manager

    pm = get_plugin_manager()
    found = set(MODEL_FILE_EXTENSIONS)
    for name, answer in pm.call_each("modelsafe_model_extensions"):
        items = [answer] if isinstance(answer, str) else answer
        if not isinstance(items, (list, tuple, set, frozenset)):
            pm.record_failure(
                name,
                "modelsafe_model_extensions",
                f"returned {type(answer).__name__}, not a list of extensions",
            )
            continue
        for item in items:
            ext = item.lower() if isinstance(item, str) else None
            if ext is None or not _EXTENSION.match(ext) or ext in PARTIAL_DOWNLOADS:
                pm.record_failure(
                    name,
                    "modelsafe_model_extensions",
                    f"{item!r} is not a model file extension (like '.onnx'); left out",
                )
                continue
            found.add(ext)
    return frozenset(found)


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

    ``force`` reads every file again (after an upgrade taught modelsafe new formats); one whose
    stat and content are as stored still counts as unchanged;
    ``extra_for(path)`` adds facts to a location (the Hugging Face cache scan uses it; without
    it, a path in a cache snapshot gets the same facts from its path and the repo's refs);
    ``missing_roots`` are the folders whose vanished files are marked missing (default: roots).
    """
    from modelsafe.registry.hf_cache import facts_from_path

    started = time.perf_counter()
    summary = ScanSummary()
    abs_roots = [os.path.abspath(os.fspath(r)) for r in roots]
    extra_for = extra_for or facts_from_path  # (a cache folder scanned without --hf-cache)
    with catalog.session() as session:
        _close_stale_scans(session)
        run = Scan(roots=[printable(r) for r in abs_roots], status="running", summary=owner())
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
    except KeyboardInterrupt:  # (Ctrl-C; SIGTERM and SIGHUP unwind the same way)
        _close(catalog, summary, "interrupted")
        _exit_at_next_interrupt()
        raise
    except BaseException:
        _close(catalog, summary, "failed")
        raise
    _finish(catalog, summary, "finished")
    return summary


def _close(catalog: Catalog, summary: ScanSummary, status: str) -> None:
    """Close the scan row of a scan that stops early, where the catalog still takes the write
    (one that refused a write may refuse this one too: the error that stopped the scan is the
    one to report; a later scan closes the row, :func:`_close_stale_scans`)."""
    try:
        _finish(catalog, summary, status)
    except (CatalogError, SQLAlchemyError):
        pass


def _exit_at_next_interrupt() -> None:
    """After Ctrl-C or SIGTERM stopped a scan, the files being read finish in their worker
    threads, which the interpreter waits for before it exits: a second Ctrl-C (or SIGTERM)
    then ends the process at once, instead of interrupting that wait (Python would print
    "Exception ignored in: <module 'threading'>" and a traceback). Once those threads are done,
    a signal is handled as before. (Handlers are set from the main thread only.)"""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(signum)
        signal.signal(signum, functools.partial(_exit_now, previous))


def _exit_now(previous: Any, signum: int, frame: Any) -> None:
    if any(t.name.startswith(THREAD_PREFIX) and t.is_alive() for t in threading.enumerate()):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(128 + signum)
    signal.signal(signum, previous)  # (no reader left: as before)
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_DFL:
        signal.raise_signal(signum)


def _close_stale_scans(session: Session) -> None:
    """Close the scan rows left ``running`` by a scan whose process is gone (killed with
    SIGKILL, out of memory): ``failed``, saying so. A row of this host, PID namespace and boot
    (:func:`owner`) is stale when its process no longer runs; one this process cannot check
    (another machine on a PostgreSQL catalog, a container with its own PID namespace sharing the
    catalog, a row of an older modelsafe), when it started :data:`STALE_SCAN_AGE` ago. A scan
    still running (here, or elsewhere recently) is never touched."""
    here, cutoff = owner(), utcnow() - STALE_SCAN_AGE
    for row in session.scalars(select(Scan).where(Scan.status == "running")):
        theirs = row.summary if isinstance(row.summary, dict) else {}
        pid = theirs.get("pid")
        if _same_pid_space(theirs, here) and isinstance(pid, int) and os.name == "posix":
            stale = not _process_runs(pid)
        else:
            started = row.started_at
            stale = started is not None and started.replace(tzinfo=started.tzinfo or UTC) < cutoff
        if stale:
            row.status, row.finished_at = "failed", utcnow()
            row.summary = {**theirs, "error": STOPPED}


def owner() -> dict[str, Any]:
    """Who runs this scan, as its ``running`` row records it: the process id, and what says
    which processes that id is one of (host name, PID namespace, boot id; None where the
    system does not tell)."""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "pid_ns": _proc_fact(os.readlink, "/proc/self/ns/pid"),
        "boot_id": _proc_fact(_first_line, "/proc/sys/kernel/random/boot_id"),
    }


def _same_pid_space(theirs: dict[str, Any], here: dict[str, Any]) -> bool:
    """Whether a pid in ``theirs`` (:func:`owner`) names a process this one can see."""
    return all(theirs.get(k) == here[k] for k in ("host", "pid_ns", "boot_id"))


def _proc_fact(read: Callable[[str], str], path: str) -> str | None:
    try:
        return read(path) or None
    except OSError:
        return None


def _first_line(path: str) -> str:
    with open(path, encoding="ascii", errors="replace") as fh:
        return fh.readline().strip()


def _process_runs(pid: int) -> bool:
    """Whether process ``pid`` still runs (POSIX: signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # (PermissionError: it runs, as another user)
        return True
    return True


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
    walked = walk(abs_roots, model_extensions())
    summary.files = len(walked.found)
    summary.skipped = [{"path": s.path, "reason": s.reason} for s in walked.skipped]
    summary.unusable_roots = _unusable_roots(abs_roots, walked.skipped)
    todo: list[Found] = []
    unchanged: list[tuple[str, int | None]] = []
    # --force: files whose stat is as stored, read again; same content -> counted unchanged
    forced: dict[str, str | None] = {}
    verdicts = _stored_verdicts(catalog, walked.found, stored)
    for found in walked.found:
        same = _is_unchanged(found, stored, with_hash)
        if same and force:
            forced[found.path] = stored[found.path].content_key
            todo.append(found)
        elif same:
            summary.unchanged += 1
            unchanged.extend((p, _ctime(found.key)) for p in found.paths)
            first = stored[found.path]
            # Each path's own audit: an unchanged unsafe file is still unsafe.
            if worst_audit(stored[p].audit_status for p in found.paths) == "unsafe":
                summary.unsafe_files.append(found.path)
            if first.status == "error":
                summary.error_files.append({"path": found.path, "reason": first.error or "?"})
            elif first.audit_status == "error":
                reason = audit_error(verdicts.get(found.path), found.path)
                summary.error_files.append({"path": found.path, "reason": reason})
        else:
            todo.append(found)
    _touch(catalog, unchanged)
    _refresh_hf_facts(catalog, [p for p, _ in unchanged], extra_for)
    vanished = _analyse_all(
        catalog, todo, summary, jobs, with_hash, extra_for, progress, _Before.of(stored), forced
    )
    # (a skipped path is not "seen": a link whose target is gone is missing, and so is a file
    # deleted while it was read)
    seen = {p for f in walked.found for p in f.paths} - vanished
    summary.removed = _mark_missing(
        catalog, stored, seen, _sweep_scope(missing_roots or abs_roots), walked.unlisted
    )
    summary.unsafe = len(summary.unsafe_files)
    summary.errors = len(summary.error_files)
    summary.seconds = round(time.perf_counter() - started, 3)
    summary.sort()


# Why the walk skips a root that is fine: it was reached through another root already.
_ROOT_REACHED_ELSEWHERE = ("already scanned through another path", "symlink loop")


def _unusable_roots(roots: list[str], skipped: Iterable[Any]) -> list[dict[str, str]]:
    """The roots the walk could not use at all (missing, unreadable, not a file or folder)."""
    names = {printable(r) for r in roots} | set(roots)
    return [
        {"path": s.path, "reason": s.reason}
        for s in skipped
        if s.path in names and not s.reason.startswith(_ROOT_REACHED_ELSEWHERE)
    ]


def _sweep_scope(roots: Sequence[str]) -> list[str]:
    """The folders whose vanished files are marked missing: each root as given and resolved.

    Locations are stored under the path the walk reached them by (links not resolved), so a
    root given through a link (``l -> d``) must also cover what an earlier scan of ``d`` stored.
    """
    scope: list[str] = []
    for root in roots:
        given = os.path.abspath(root)
        for path in (given, os.path.realpath(given)):
            if path not in scope:
                scope.append(path)
    return scope


def summary_counts(summary: ScanSummary) -> dict[str, Any]:
    keys = ("new", "changed", "unchanged", "removed", "unsafe", "errors", "requeued", "files")
    counts: dict[str, Any] = {k: getattr(summary, k) for k in keys}
    counts["skipped"] = len(summary.skipped)
    counts["bytes_read"] = summary.bytes_read
    return counts


def _stored_verdicts(
    catalog: Catalog, found: list[Found], stored: dict[str, _Stored]
) -> dict[str, dict[str, Any]]:
    """The audit verdicts stored for the files and model folders whose audit is an error (few),
    by path: a rescan tells why as the first scan did (:func:`audit_error`)."""
    paths = [f.path for f in found if f.path in stored and stored[f.path].audit_status == "error"]
    if not paths:
        return {}
    with catalog.session() as session:
        rows = session.execute(
            select(Location.path, Location.extra).where(Location.path.in_(paths))
        )
        return {path: (extra or {}).get("audit") or {} for path, extra in rows}


def _touch(catalog: Catalog, paths: list[tuple[str, int | None]]) -> None:
    """Record that unchanged files were seen: one executemany, no file is opened.

    Each (path, ctime) also stores the ctime where the row has none yet (scanned before 0004)."""
    if not paths:
        return
    now = utcnow()
    ctime = func.coalesce(bindparam("c", type_=BigInteger), Location.ctime_ns)
    statement = (
        update(Location)
        .where(Location.path == bindparam("p"))
        .values(last_seen_at=now, ctime_ns=ctime)
    )
    with catalog.session() as session:  # (its errors told as the catalog's: Catalog.session)
        session.connection().execute(statement, [{"p": p, "c": c} for p, c in paths])


def _analyse_all(
    catalog: Catalog,
    todo: list[Found],
    summary: ScanSummary,
    jobs: int,
    with_hash: bool,
    extra_for: Callable[[str], dict[str, Any]] | None,
    progress: Progress | None,
    before: _Before,
    forced: dict[str, str | None] | None = None,
) -> set[str]:
    """Read ``todo`` in a thread pool, writing each file's rows as it is read. Returns the
    paths deleted before they were read.

    Ctrl-C, SIGTERM or a catalog that refuses a write stops it at once: the files not started
    are not read, those being read finish in their threads (their results unused), and what
    was written stays (one transaction per file)."""
    total_bytes = sum(f.key.size for f in todo)
    done_files = done_bytes = 0
    cache = HashCache()
    tries: dict[str, int] = {}
    vanished: set[str] = set()
    if progress:
        progress(0, len(todo), 0, total_bytes)
    pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix=THREAD_PREFIX)

    def submit(found: Found) -> Future[tuple[Analysis, str | None]]:
        tries[found.path] = tries.get(found.path, 0) + 1
        # (a file moved since a --no-hash scan must show the content it had: fingerprinted)
        printed = not with_hash or bool(before.moved_from(found, found.key))
        return pool.submit(_read, found, with_hash, cache, printed)

    try:
        pending: dict[Future[tuple[Analysis, str | None]], Found] = {submit(f): f for f in todo}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                found = pending.pop(future)
                result, print_ = future.result()
                if result.changed and tries[found.path] < MAX_TRIES:
                    summary.requeued += 1
                    pending[submit(found)] = found
                    continue
                if result.changed:
                    summary.skipped.append(
                        {"path": found.path, "reason": f"kept changing while read ({MAX_TRIES}x)"}
                    )
                elif result.vanished:
                    summary.skipped.append({"path": printable(found.path), "reason": VANISHED})
                    vanished.add(found.path)
                else:
                    _record(catalog, found, result, print_, summary, extra_for, before, forced)
                    summary.bytes_read += result.key.size
                done_files += 1
                done_bytes += found.key.size
                if progress:
                    progress(done_files, len(todo), done_bytes, total_bytes)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return vanished


def _read(
    found: Found, with_hash: bool, cache: HashCache, printed: bool
) -> tuple[Analysis, str | None]:
    """Read one file (in a worker thread): its analysis, and its :func:`fingerprint` when
    ``printed`` (a file read without hashes, or where one was before). A file of nothing but
    zeros is not hashed (:func:`~modelsafe.registry.analyse.analyse`)."""
    result = analyse(found.path, found.is_dir, with_hash=with_hash, cache=cache)
    if not printed or found.is_dir or result.changed or result.vanished:
        return result, None
    return result, fingerprint(found.path, result.key)


def fingerprint(path: str, key: StatKey) -> str | None:
    """A cheap check of a file's content, for a file read without hashes: the SHA-256 of its
    size and its first and last :data:`FINGERPRINT_SPAN` bytes. None where it cannot be read,
    or is no longer the file stat-ed as ``key`` (size, mtime, inode, device)."""
    import hashlib

    from modelsafe.registry.sniff import open_regular

    fh = open_regular(path)  # (a FIFO never waits)
    if fh is None:
        return None
    with fh:
        try:
            st = os.fstat(fh.fileno())
            if StatKey.of(st) != key.ignoring_ctime():
                return None
            digest = hashlib.sha256(str(st.st_size).encode())
            digest.update(fh.read(FINGERPRINT_SPAN))
            if st.st_size > FINGERPRINT_SPAN:
                fh.seek(max(FINGERPRINT_SPAN, st.st_size - FINGERPRINT_SPAN))
                digest.update(fh.read(FINGERPRINT_SPAN))
        except OSError:
            return None
    return digest.hexdigest()


def _record(
    catalog: Catalog,
    found: Found,
    result: Analysis,
    print_: str | None,
    summary: ScanSummary,
    extra_for: Callable[[str], dict[str, Any]] | None,
    before: _Before,
    forced: dict[str, str | None] | None = None,
) -> None:
    """Write one file's rows and count it. A file another scan stored a moment ago, as it is,
    is unchanged to this one, not changed."""
    moved_from = before.moved_from(found, result.key)
    for attempt in range(WRITE_TRIES):
        try:
            with catalog.session() as session:
                written = write_result(session, found, result, extra_for, moved_from, print_)
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
    if written.was_new:
        summary.new += 1
    elif written.as_stored and not before.knows(found):
        summary.unchanged += 1  # (another scan running at the same time stored it first)
    elif forced and found.path in forced and forced[found.path] == content_key(result):
        summary.unchanged += 1  # read again by --force, same stat and content
    else:
        summary.changed += 1
    if result.audit_status == "unsafe":
        summary.unsafe_files.append(found.path)
    if result.error:
        summary.error_files.append({"path": found.path, "reason": result.error})
    elif result.audit_status == "error":
        # (a file that reads but does not load, such as a safetensors file with bytes after its
        # last tensor, or a folder read whole whose audit cannot vouch for a file a loader reads
        # in it: what the audit says is the file's error)
        reason = audit_error(result.verdict, found.path)
        summary.error_files.append({"path": found.path, "reason": reason})
    for w in written.folder_problems:
        summary.wrong_folder.append({"path": found.path, "problem": w})
    for w in (result.report or {}).get("warnings") or []:
        if result.audit_status == "unsafe" and str(w).startswith("unsafe: "):
            continue  # (the reader's copy of an audit finding: the UNSAFE line says it)
        summary.warnings.append({"path": found.path, "warning": str(w)})
    for n in written.notices:
        summary.notices.append({"path": found.path, "message": n})


def audit_error(verdict: dict[str, Any] | None, path: str) -> str:
    """Why the audit of a file or folder read whole is an ``error``, for the scan's summary: its
    first error finding (the catalog's row says the same), or where to look when not at hand."""
    for finding in (verdict or {}).get("findings") or []:
        if finding.get("severity") == "error":
            where = finding.get("location") or ""
            return f"audit: {finding.get('message')}" + (f" (at {where})" if where else "")
    return f"its audit is an error: `modelsafe show {shlex.quote(printable(path))}` says why"


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


# File names Hugging Face repos give every model ("model.safetensors",
# "unet/diffusion_pytorch_model.fp16.safetensors", "model-00001-of-00002.safetensors"): they say
# nothing of the model, so such a file is named after its repo (and subfolder) instead.
# (the names diffusers and transformers give weights, and shard suffixes, as their reader knows)
_GENERIC_BASES = (*WEIGHT_BASES, "adapter_model", "pytorch_lora_weights", "flax_model", "tf_model")
_GENERIC_STEM = re.compile(
    rf"^(?:{'|'.join(_GENERIC_BASES)})(?:\.(fp16|bf16|fp32|fp8|onnx))?({SHARD_SUFFIX})?$"
)
_HF_REPO_FOLDER = re.compile(r"^(?:models|datasets|spaces)--(.+)$")
# Subfolders of a diffusers pipeline: "transformer" alone does not say which model it is part of.
_COMPONENT_FOLDERS = frozenset(
    {
        "unet",
        "transformer",
        "vae",
        "text_encoder",
        "text_encoder_2",
        "text_encoder_3",
        "image_encoder",
        "controlnet",
        "prior",
        "decoder",
        "prior_decoder",
        "vqgan",
        "movq",
    }
)
_LOCAL_DIR_LEVELS = 4  # how far up a `hf download --local-dir` folder is looked for


def _hf_place(path: str, is_dir: bool, extra: dict[str, Any] | None) -> list[str] | None:
    """[repo, subfolders...] of a file in a Hugging Face cache snapshot (or a --local-dir
    download folder, named by its folder), else None."""
    parts = Path(path).parts
    folders = parts if is_dir else parts[:-1]
    repo = (extra or {}).get("hf_repo")
    for i in range(len(folders) - 2, 0, -1):
        if folders[i] == "snapshots":
            match = _HF_REPO_FOLDER.match(folders[i - 1])
            if match or repo:
                name = repo or (match.group(1).replace("--", "/") if match else "")
                return [str(name), *folders[i + 2 :]]
    if repo:
        return [str(repo)]
    for up in range(1, min(_LOCAL_DIR_LEVELS, len(folders) - 1) + 1):
        top = Path(*folders[: len(folders) - up + 1])
        if (top / ".cache" / "huggingface").is_dir():
            return [top.name, *folders[len(folders) - up + 1 :]]
    return None


def _revision_suffix(extra: dict[str, Any] | None) -> str:
    """``@<12 hex digits>`` for a cached revision that no ref names (an older download still in
    the cache, or one fetched by commit hash), so that it is told apart from the revision
    ``main`` names, which keeps the plain repo name."""
    facts = extra or {}
    revision = facts.get("hf_revision")
    if not isinstance(revision, str) or not revision or facts.get("hf_refs"):
        return ""
    return f"@{revision[:12]}"


def _naming_location(locations: Sequence[Location]) -> Location | None:
    """The copy a model is named after: of a Hugging Face cache, a revision a ref names
    (``main``) first; then one read without error; then the copy the model shows
    (:func:`queries.copy_preference`: audited safe, then safetensors, then by path). So a
    download's broken second copy (``model (1).safetensors`` with bytes after its data) does not
    give the model its name, whatever the paths' order."""
    return min(
        locations,
        key=lambda loc: (
            not (loc.extra or {}).get("hf_refs"),
            loc.status != "present",
            copy_preference(loc),
        ),
        default=None,
    )


def _name_model(model: Model, locations: Sequence[Location], is_dir: bool) -> None:
    """Name ``model`` after its naming copy among ``locations`` (:func:`_naming_location`)."""
    loc = _naming_location(locations)
    if loc is not None:
        model.name = _model_name(loc.path, is_dir, loc.extra)


_HF_FACTS = ("hf_repo", "hf_repo_type", "hf_revision", "hf_refs")


def _refresh_hf_facts(
    catalog: Catalog, paths: list[str], extra_for: Callable[[str], dict[str, Any]] | None
) -> None:
    """Unchanged files of the Hugging Face cache whose facts changed (``refs/main`` moved to a
    new revision): their locations get the new refs, and their models the name that goes with
    them (the revision ``main`` left is named ``org/name@<revision>``)."""
    facts = {p: extra_for(p) for p in paths} if extra_for else {}
    facts = {p: f for p, f in facts.items() if f}
    todo = list(facts)
    for i in range(0, len(todo), 500):
        with catalog.session() as session:
            query = select(Location).where(Location.path.in_(todo[i : i + 500]))
            renamed: set[Model] = set()
            for loc in session.scalars(query):
                stored = loc.extra or {}
                new = facts[loc.path]
                if all(stored.get(k) == new.get(k) for k in _HF_FACTS):
                    continue
                loc.extra = {**stored, **new}
                if loc.model is not None:
                    renamed.add(loc.model)
            session.flush()
            for model in renamed:
                _rename_after_locations(model)


def _rename_after_locations(model: Model) -> None:
    """Name ``model`` again after its locations still on disk, as :func:`write_result` does."""
    on_disk = [loc for loc in model.locations if loc.status != "missing"]
    _name_model(model, on_disk, bool((model.details or {}).get("is_dir")))


def _file_stem(name: str) -> str:
    """A model file's name without its extension: ``model`` for ``model.safetensors``, without
    the trailing whitespace of ``model.safetensors `` and keeping wget's duplicate number
    (``model.1`` for ``model.safetensors.1``)."""
    from modelsafe.registry.walk import _WGET_DUPLICATE, model_extension

    base = name.rstrip()
    duplicate = _WGET_DUPLICATE.search(base)
    if duplicate and model_extension(base) and not Path(base).suffix[1:].isalpha():
        return f"{_stem(base[: duplicate.start()])}.{duplicate.group().lstrip('.')}"
    return _stem(base)


def _stem(name: str) -> str:
    """``name`` less its model extension, two suffixes long for ``model_best.pth.tar``."""
    from modelsafe.registry.walk import model_extension

    ext = model_extension(name)
    return name[: -len(ext)] if ext and name.lower().endswith(ext) else Path(name).stem


def _model_name(path: str, is_dir: bool, extra: dict[str, Any] | None = None) -> str:
    """A file's stem (a folder's name), except where that name says nothing of the model: a
    file named as Hugging Face names them all, a pipeline's component folder, a cached
    snapshot folder. Those are named after their repo and subfolder (``org/flux-dev``,
    ``org/flux-dev/transformer``), or a component after its pipeline (``flux-dev/transformer``).
    """
    p = Path(path)
    if is_dir:
        if p.parent.name == "snapshots" or p.name.lower() in _COMPONENT_FOLDERS:
            place = _hf_place(path, True, extra)
            if place:
                return "/".join(place) + _revision_suffix(extra)
        if p.name.lower() in _COMPONENT_FOLDERS and p.parent.name:
            return f"{p.parent.name}/{p.name}"
        return p.name
    stem = _file_stem(p.name)
    generic = _GENERIC_STEM.match(stem)
    if not generic:
        return stem
    place = _hf_place(path, False, extra)
    if place:
        name = "/".join(place)
    elif p.parent.name.lower() in _COMPONENT_FOLDERS and p.parent.parent.name:
        name = f"{p.parent.parent.name}/{p.parent.name}"
    else:
        return stem
    variant, shard = generic.group(1), generic.group(2)
    name += (f".{variant}" if variant else "") + (shard or "")
    return name + (_revision_suffix(extra) if place else "")


@dataclass(frozen=True)
class Written:
    """What writing one file's result did."""

    was_new: bool  # none of its paths had a row
    as_stored: bool  # every path had a row of this very file (its content and stat)
    folder_problems: list[str]  # wrong-folder warnings
    notices: list[str]  # what was done on the user's behalf (an override kept)


def _os_error(path: str, is_dir: bool) -> bool:
    """True when ``path`` cannot be opened for an OS reason (permission denied, I/O error)."""
    try:
        if is_dir:
            os.listdir(path)
        else:
            with open(path, "rb") as fh:
                fh.read(1)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return False


def _present_elsewhere(model: Model, paths: Sequence[str]) -> list[str]:
    return sorted(
        loc.path
        for loc in model.locations
        if loc.path not in paths and loc.status != "missing" and os.path.exists(loc.path)
    )


def _describe(overrides: dict[str, Any], note: str | None) -> str:
    parts = [f"override {', '.join(f'{k}={v}' for k, v in overrides.items())}"] if overrides else []
    if note:
        parts.append(f"note {note!r}")
    return " and ".join(parts)


def _by_id(models: Iterable[Model]) -> list[Model]:
    """``models`` oldest first: the order in which their user settings are taken."""
    return sorted(models, key=lambda m: m.id or 0)


def _take_settings(
    model: Model, old: Model, *, join_notes: bool
) -> tuple[dict[str, Any], str | None]:
    """Give ``model`` the user's overrides on ``old`` that it has none of (its own win, and so
    do those taken from models before: callers go oldest first, :func:`_by_id`), and ``old``'s
    note where it has none (``join_notes``: also where it has another, joined as ``"mine /
    old's"``). Returns what was taken."""
    mine = dict(model.overrides or {})
    taken = {k: v for k, v in (old.overrides or {}).items() if k not in mine}
    if taken:
        model.overrides = {**mine, **taken}
    note = None
    if old.note and old.note != model.note and (join_notes or not model.note):
        note = old.note
        model.note = f"{model.note} / {old.note}" if model.note else old.note
    return taken, note


def _carry_user_settings(
    model: Model, previous: Iterable[Model], paths: Sequence[str]
) -> list[str]:
    """A path whose file got new content (a v2 download, a re-save): the user's overrides and
    note on the old content are copied to the new one (the old model keeps them), unless the old
    content is still on disk elsewhere (then they stay with it only). Returns a sentence for
    each, for the scan summary."""
    notices = []
    for old in _by_id(previous):
        if old is model or not (old.overrides or old.note):
            continue
        settings = _describe(dict(old.overrides or {}), old.note)
        elsewhere = _present_elsewhere(old, paths)
        if elsewhere:
            notices.append(
                f"new content at this path; your {settings} stay with its previous content, "
                f"still at {elsewhere[0]} (use `modelsafe set` to set them for the new content)"
            )
            continue
        carried, note = _take_settings(model, old, join_notes=False)
        kept = _describe(carried, note)
        if kept:
            notices.append(f"new content at this path: kept your {kept} from its previous content")
        else:
            notices.append(
                f"new content at this path: it already has its own settings, so your {settings} "
                "from its previous content were not applied"
            )
    return notices


def write_result(
    session: Session,
    found: Found,
    result: Analysis,
    extra_for: Callable[[str], dict[str, Any]] | None = None,
    moved_from: Sequence[str] = (),
    print_: str | None = None,
) -> Written:
    """Upsert the model and every location of one analysed file. ``moved_from``: other paths
    where the catalog may hold this file read without hashes (:meth:`_Before.moved_from`);
    ``print_``: its :func:`fingerprint`, kept on its locations when it is read without hashes
    and compared with theirs."""
    key = content_key(result)
    locations = {
        loc.path: loc
        for loc in session.scalars(select(Location).where(Location.path.in_(found.paths)))
    }
    was_new = not locations
    as_stored = len(locations) == len(found.paths) and all(
        _records(loc, key, result.key) for loc in locations.values()
    )
    here = {loc.model_id for loc in locations.values()}
    moved = _moved_placeholders(session, moved_from, result.key, print_)
    moved = [loc for loc in moved if loc.model_id not in here]  # (not joined to it already)
    model = session.scalar(select(Model).where(Model.content_key == key))
    sha256 = (result.hashes or {}).get("sha256")
    if model is None and sha256:
        model = session.scalar(select(Model).where(Model.content_key == sha256))
        if model is not None:
            model.content_key = key  # first seen unreadable (keyed by sha256), now readable
    # Oldest first (by id), whatever order the rows were loaded in.
    previous = _by_id({loc.model for loc in [*locations.values(), *moved] if loc.model is not None})
    placeholders = [m for m in previous if m.content_key.startswith(PLACEHOLDER_PREFIXES)]
    if model is None and placeholders:
        model = placeholders[0]  # the same file read without hashes before: it gains its key
        model.content_key = key
    if model is None:
        model = Model(content_key=key, name="", overrides={}, details={}, format="unknown")
        session.add(model)
    kept: dict[int, str] = {}  # what each of them gave it
    for old in placeholders:  # (read without hashes before: the user's settings join it)
        if old is model:
            kept[old.id] = _describe(dict(old.overrides or {}), old.note)
        else:
            kept[old.id] = _describe(*_take_settings(model, old, join_notes=True))
    notices = _adopt_moved(model, moved, result.key, kept)
    with session.no_autoflush:  # (a new model row is not complete before _settle_details)
        notices += _carry_user_settings(
            model, [m for m in previous if m not in placeholders], found.paths
        )
        others = [
            loc
            for loc in model.locations
            if loc.path not in found.paths and loc.status != "missing" and os.path.exists(loc.path)
        ]
    extras = {path: dict(extra_for(path)) if extra_for else {} for path in found.paths}
    now = utcnow()
    os_error = bool(result.error) and _os_error(found.path, result.is_dir)
    written: list[Location] = []
    for path in found.paths:
        loc = locations.get(path)
        if loc is None:
            loc = Location(path=path, first_seen_at=now)
            session.add(loc)
        written.append(loc)
        conv = convention_of(path)
        extra: dict[str, Any] = {"format": result.format, "hashes": result.hashes}
        if conv:
            extra["folder"] = conv.as_json()
        extra.update(extras[path])
        if result.verdict is not None:
            extra["audit"] = result.verdict
        if os_error:
            extra["os_error"] = True
        if print_ is not None and key.startswith(PLACEHOLDER_PREFIXES):
            extra[FINGERPRINT] = print_
        loc.model = model
        loc.size, loc.mtime_ns = result.key.size, result.key.mtime_ns
        loc.ctime_ns = _ctime(result.key)
        loc.inode, loc.device = result.key.inode, result.key.device
        loc.status = "error" if result.error else "present"
        loc.error = result.error
        loc.audit_status = result.audit_status
        loc.extra = extra
        loc.last_seen_at = now
    own = _own_details(result)
    with session.no_autoflush:
        _settle_details(model, {loc.path: own for loc in written})
    # Named after its best copy still on disk (:func:`_naming_location`): stable across copies,
    # and a renamed file takes its new name.
    _name_model(model, [*written, *others], result.is_dir)
    # (the folder is judged by what the model is: its preferred copy, the user's corrections)
    report: list[str] = []
    for loc in written:
        problems = folder_report(loc.path, model.family, model.kind)
        report.extend(problems)
        loc.warnings = [*((result.report or {}).get("warnings") or []), *problems]
    session.flush()
    model.audit_status = model_audit(model)
    for old in previous:
        if old is not model:
            old.audit_status = model_audit(old)
            _settle_details(old)  # (its copy here may have been the one it showed)
    for old in placeholders:
        if old is not model and not old.locations:
            session.delete(old)
    return Written(was_new, as_stored, report, notices)


def _records(loc: Location, key: str, stat: StatKey) -> bool:
    """Whether ``loc`` records the very file just read: its content key and its stat."""
    return (
        loc.status != "missing"
        and loc.model is not None
        and loc.model.content_key == key
        and _location_key(loc).ignoring_ctime() == stat.ignoring_ctime()
    )


def _moved_placeholders(
    session: Session, paths: Sequence[str], key: StatKey, print_: str | None
) -> list[Location]:
    """The locations at ``paths`` (:meth:`_Before.moved_from`) that still are those of a model
    read without hashes (keyed by path) and of this file, so that the user's settings follow
    the file: same device, inode, size and mtime (what a move or rename keeps) and the same
    :func:`fingerprint` (``print_``: this file's), since a deleted file's inode is given to the
    next file created, which may have its size and mtime too (``cp -p``, ``unzip``). A location
    recorded with no fingerprint (by an older modelsafe) is never taken."""
    if not paths or print_ is None:
        return []
    query = select(Location).where(Location.path.in_(paths))
    return [
        loc
        for loc in session.scalars(query)
        if loc.model is not None
        and loc.model.content_key.startswith(PLACEHOLDER_PREFIXES)
        and _location_key(loc).ignoring_ctime() == key.ignoring_ctime()
        and (loc.extra or {}).get(FINGERPRINT) == print_
    ]


def _adopt_moved(
    model: Model, moved: Sequence[Location], key: StatKey, kept: dict[int, str]
) -> list[str]:
    """``moved`` (:func:`_moved_placeholders`) become locations of ``model``, ``missing`` where
    their path no longer leads to this file; the placeholder models they leave, now empty, are
    deleted by the caller. ``kept``: the settings ``model`` took from each placeholder, by id.
    Returns a notice for each placeholder whose settings it kept."""
    notices = []
    told: set[int] = set()
    for loc in sorted(moved, key=lambda loc: loc.path):
        old_id = loc.model_id
        loc.model = model
        if not _same_file(loc.path, key):
            loc.status = "missing"
        if old_id is not None and kept.get(old_id) and old_id not in told:
            told.add(old_id)
            notices.append(f"moved from {loc.path}: kept your {kept[old_id]}")
    return notices


def _same_file(path: str, key: StatKey) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (key.device, key.inode)


_FILE_HASHES = ("sha256", "autov1", "autov2", "autov3", "blake3", "crc32", "content_id")


# ``locations.extra`` key: a copy's own facts (:func:`_own_details`) while another copy of its
# model is the one the model shows, so that the model can show this one when that copy goes.
# The copy the model shows has them in ``model.details`` only.
OWN_DETAILS = "own_details"


def _own_details(result: Analysis) -> dict[str, Any]:
    """What ``model.details`` holds of one copy, less what the copy's location holds in
    ``extra`` already (its format, hashes and audit verdict)."""
    report = result.report or {}
    return {
        "detected": {
            "family": report.get("family", "unknown"),
            "kind": report.get("kind", "unknown"),
            "variant": report.get("variant"),
            "prediction_type": report.get("prediction_type"),
        },
        "inspect": result.report or None,
        "error": result.error,
        "hash_error": result.hash_error,
        "components": result.component_hashes or None,
        "is_dir": result.is_dir,
    }


def _details_source(model: Model) -> Location | None:
    """The copy the model shows: its preferred one (``queries.preferred_location``), else,
    when none is readable, the first of those on disk in the same order."""
    return preferred_location(model) or preferred_location(model, ("present", "error"))


def _settle_details(model: Model, fresh: dict[str, dict[str, Any]] | None = None) -> None:
    """Make the model show its source copy (:func:`_details_source`) whatever order its copies
    were read in: its columns and ``details`` from that copy, the user's overrides on top; each
    other copy on disk keeps its own facts in ``extra[OWN_DETAILS]``.

    ``fresh``: the facts of the copies just read, by path. A copy recorded before copies kept
    their own gives the model its format and hashes only (:func:`_preferred_copy_facts`)."""
    fresh = fresh or {}
    source = _details_source(model)
    details = model.details or {}
    shown = details.get("source") or _legacy_source(model, details, fresh)
    shown_own = {k: v for k, v in details.items() if k not in _FROM_EXTRA}
    for loc in model.locations:
        if loc is source or loc.status == "missing":
            continue
        own = fresh.get(loc.path) or (shown_own if loc.path == shown else None)
        if own is not None:
            loc.extra = {**(loc.extra or {}), OWN_DETAILS: own}
    if source is None:
        return  # (no copy on disk: the model shows what it showed)
    extra = dict(source.extra or {})
    stashed = extra.pop(OWN_DETAILS, None)
    if stashed is not None:
        source.extra = extra  # (the copy the model shows has its facts in model.details)
    own = fresh.get(source.path) or (shown_own if source.path == shown else stashed)
    if isinstance(own, dict):
        _show_copy(model, source, own)
    else:
        _preferred_copy_facts(model, source)
        if details.get("source") not in (None, source.path):
            # (what it shows beyond format and hashes is another copy's: not this one's path)
            model.details = {k: v for k, v in (model.details or {}).items() if k != "source"}
    _apply_overrides(model)


def _legacy_source(
    model: Model, details: dict[str, Any], fresh: dict[str, dict[str, Any]]
) -> str | None:
    """The copy a model recorded before models named theirs (``details["source"]``) shows: its
    details are those of the copy written last, which is known only when one copy on disk was
    not read just now."""
    if not details:
        return None
    older = [loc.path for loc in model.locations if loc.status != "missing"]
    older = [path for path in older if path not in fresh]
    return older[0] if len(older) == 1 else None


# ``model.details`` keys taken from the shown copy's location rather than its own facts.
_FROM_EXTRA = ("audit", "hashes", "source")


def _show_copy(model: Model, loc: Location, own: dict[str, Any]) -> None:
    """The model's columns and ``details`` from its copy at ``loc`` (``own``: that copy's
    :func:`_own_details`)."""
    extra = loc.extra or {}
    report = own.get("inspect") or {}
    hashes = extra.get("hashes") or {}
    model.format = str(extra.get("format") or model.format)
    model.precision = report.get("precision")
    model.parameter_count = report.get("parameter_count")
    model.weight_bytes = report.get("weight_bytes")
    model.tensor_count = report.get("tensor_count")
    model.confidence = report.get("confidence")
    for name in _FILE_HASHES:
        setattr(model, name, hashes.get(name))
    details = {**own, "audit": extra.get("audit"), "hashes": hashes or None, "source": loc.path}
    if details != model.details:
        model.details = details
        model.updated_at = utcnow()


def _apply_overrides(model: Model) -> None:
    """Family, kind, variant and prediction type: the user's overrides, else what was detected
    in the copy the model shows."""
    detected = (model.details or {}).get("detected") or {}
    overrides = model.overrides or {}
    for name in OVERRIDABLE:
        if name in overrides or name in detected:
            setattr(model, name, overrides.get(name, detected.get(name)))


def _preferred_copy_facts(model: Model, loc: Location) -> None:
    """The model's format and file hashes from its copy at ``loc`` (each location keeps its own
    in ``extra``), for a copy recorded before locations kept their own facts. Kept as they are
    when it was recorded before locations kept their format and hashes too."""
    extra = loc.extra or {}
    fmt, hashes = extra.get("format"), extra.get("hashes")
    if not isinstance(fmt, str) or not isinstance(hashes, dict):
        return
    if model.format == fmt and all(getattr(model, n) == hashes.get(n) for n in _FILE_HASHES):
        return
    model.format = fmt
    for name in _FILE_HASHES:
        setattr(model, name, hashes.get(name))
    model.details = {**(model.details or {}), "hashes": hashes or None}


def _gone(path: str, old: _Stored) -> bool:
    """True when what the catalog holds at ``path`` (``old``) is no longer there, for a path
    the walk did not find: nothing is there (a link whose target was deleted included), or
    something else is: a FIFO or a plain folder in place of the file, a folder that is no
    longer a model folder, an empty file where a model was (Firefox's placeholder of a new
    download under the same name), a link that leads back to itself. False when it cannot be
    checked (an unreadable folder says nothing) and for any other regular file: the walk did
    not visit it (it reached it by another path, or the path is under a hidden folder), so a
    change of its stat (a chmod, a new hard link, a touch) does not make it missing."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError as exc:
        return exc.errno == errno.ELOOP  # (a link that now leads back to itself)
    if stat_module.S_ISREG(st.st_mode):
        # (its stat says nothing: a chmod or a new hard link changes it, and the walk may have
        # reached the file by another path; an empty file where a model was is Firefox's)
        return st.st_size == 0 and old.size > 0
    if stat_module.S_ISDIR(st.st_mode):
        return not is_model_folder(path)
    return True


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
        and _gone(path, old)
    ]
    for i in range(0, len(gone), 500):
        chunk = gone[i : i + 500]
        with catalog.session() as session:
            session.execute(
                update(Location).where(Location.path.in_(chunk)).values(status="missing"),
                execution_options={"synchronize_session": False},
            )
            # A model is as unsafe as its copies on disk: one gone may change its audit.
            ids = select(Location.model_id).where(Location.path.in_(chunk))
            query = select(Model).where(Model.id.in_(ids)).options(selectinload(Model.locations))
            for model in session.scalars(query):
                model.audit_status = model_audit(model)
                _settle_details(model)  # (the copy it showed may be the one gone)
                _rename_after_locations(model)  # (and the one it was named after)
    return len(gone)
