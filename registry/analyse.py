"""Everything a scan learns about one file or diffusers folder, read once, with stat before/after.

:func:`analyse` never raises for a bad file: whatever goes wrong becomes ``error`` on the result
(a truncated safetensors, an HTML page, a reader plugin that crashes). It stats the file before
and after reading it; when the two differ the file changed while it was read and the result says
so (the scan reads it again).
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelsafe.errors import ModelsafeError
from modelsafe.registry.walk import (
    PIPELINE_MARKER,
    StatKey,
    folder_key,
    is_model_file,
    walk_tree,
)
from modelsafe.types import Format, Verdict, to_jsonable


@dataclass(frozen=True)
class Analysis:
    path: str
    key: StatKey  # stat taken before reading (equal to the one after unless ``changed``)
    is_dir: bool
    format: str
    report: dict[str, Any] | None = None  # the inspect report (JSON form), None if unreadable
    hashes: dict[str, str | None] | None = None
    verdict: dict[str, Any] | None = None  # the audit verdict (JSON form)
    error: str | None = None  # why the file could not be read as a model
    hash_error: str | None = None
    changed: bool = False  # the file changed while it was read
    vanished: bool = False  # the file was gone when its turn came
    component_hashes: dict[str, dict[str, str | None]] = field(default_factory=dict)

    @property
    def audit_status(self) -> str | None:
        return None if self.verdict is None else str(self.verdict.get("status"))


class HashCache:
    """Hashes of files already read in this scan, by (device, inode, size, mtime)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done: dict[StatKey, dict[str, str | None]] = {}

    def get(self, path: Path) -> dict[str, str | None]:
        from modelsafe.registry import hashing

        key = StatKey.of(os.stat(path))
        with self._lock:
            if key in self._done:
                return self._done[key]
        index = _try_read(path)
        value = hashing.hash_file(path, index)
        with self._lock:
            self._done[key] = value
        return value


def _try_read(path: Path) -> Any:
    from modelsafe.registry.read import read_index

    try:
        return read_index(path)
    except Exception:
        return None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ModelsafeError):
        return exc.reason
    if isinstance(exc, OSError):
        return f"cannot read: {exc.strerror or exc}"
    return f"{type(exc).__name__} while reading: {exc}"


def _stat(path: str, is_dir: bool) -> StatKey:
    return folder_key(path) if is_dir else StatKey.of(os.stat(path))


def analyse(
    path: str, is_dir: bool, *, with_hash: bool = True, cache: HashCache | None = None
) -> Analysis:
    """Read, identify, hash and audit ``path``; problems become fields, never exceptions."""
    from modelsafe.errors import FileReadError
    from modelsafe.registry import audit, hashing
    from modelsafe.registry.inspect import beside_warnings, inspect_index
    from modelsafe.registry.read import read_index
    from modelsafe.registry.sniff import read_head, sniff
    from modelsafe.registry.walk import unfinished_error

    try:
        before = _stat(path, is_dir)
    except FileNotFoundError:
        return Analysis(path, StatKey(0, 0, 0, 0, 0), is_dir, "unknown", vanished=True)
    except OSError as exc:
        return Analysis(path, StatKey(0, 0, 0, 0, 0), is_dir, "unknown", error=_reason(exc))
    fields: dict[str, Any] = {}
    index = None
    try:
        index = read_index(path)
        report = inspect_index(index, holes=not with_hash)  # (the hashing pass finds them all)
        if not is_dir:  # (inspect_path says the same for one file)
            report.warnings.extend(beside_warnings(Path(path)))
        fields["report"] = to_jsonable(report)
        fields["format"] = index.format
    except Exception as exc:  # a bad file (or a broken plugin) is an error row, never a crash
        if isinstance(exc, FileReadError) and not is_dir:  # (aria2 still filling it)
            exc = unfinished_error(Path(path), exc, "scan")
        fields["error"] = _reason(exc)
        try:
            fields["format"] = "diffusers-dir" if is_dir else sniff(read_head(Path(path))).value
        except OSError:
            fields["format"] = "unknown"
    if with_hash and fields.get("format") == Format.ZEROS.value:
        # (nothing but zeros, the error it is: not read whole to hash it; its row is keyed by
        # its path, and it is not read again while it stays as it is)
        fields["hashes"] = dict.fromkeys(hashing.HASH_NAMES)
    elif with_hash:
        try:
            if is_dir:
                fields["component_hashes"] = _folder_hashes(path, cache or HashCache())
                fields["hashes"] = {"folder_id": _folder_id(fields["component_hashes"])}
                found = hashing.folder_warnings(fields["component_hashes"])
            else:
                fields["hashes"] = hashing.hash_file(Path(path), index)
                found = hashing.pop_warnings(fields["hashes"])
            if found and fields.get("report") is not None:  # (a corrupt zip member, zero runs)
                fields["report"]["warnings"] = [*fields["report"]["warnings"], *found]
            corrupt = _corrupt_blob(path, is_dir, fields)
            if corrupt and not fields.get("error"):
                fields["error"] = corrupt
        except Exception as exc:
            fields["hash_error"] = _reason(exc)
    if not is_dir and fields.get("report") is not None:
        _add_sidecar(Path(path), fields)
    try:
        verdict = audit.audit_path(path)
        fields["verdict"] = to_jsonable(verdict if is_dir else _with_code_beside(verdict))
        if _data_vouched_for(verdict):  # (no tensors to read: not an error, as in audit)
            fields.pop("error", None)
    except Exception as exc:
        fields["verdict"] = {
            "path": path,
            "status": "error",
            "format": fields["format"],
            "findings": [{"severity": "error", "code": "audit-failed", "message": _reason(exc)}],
        }
    try:
        after = _stat(path, is_dir)
    except FileNotFoundError:
        return Analysis(path, before, is_dir, fields["format"], vanished=True)
    return Analysis(path, before, is_dir, changed=after != before, **fields)


def _data_vouched_for(verdict: Verdict) -> bool:
    """Whether the audit read a whole compressed pickle of data (``features.pkl.gz``) and found
    nothing: ``safe`` with its warning. inspect reads no tensors from it, which is no error."""
    from modelsafe.registry.audit import DATA_PICKLE

    return verdict.status == "safe" and any(f.code == DATA_PICKLE for f in verdict.findings)


def _with_code_beside(verdict: Verdict) -> Verdict:
    """A model file's verdict with the warnings ``audit`` gives its folder for Python code
    shipped beside it when that folder is a model folder (``config.json`` with ``auto_map``
    and ``modeling_x.py``: a transformers custom-code repo, which a loader with
    ``trust_remote_code`` runs), or code an ``auto_map`` names in another repository. Warnings
    only: its status stays."""
    from dataclasses import replace

    from modelsafe.registry.audit import custom_code_findings, remote_code_findings

    folder = verdict.path.parent
    try:
        if not (folder / "config.json").is_file():
            return verdict
        code = sorted(Path(e.name) for e in os.scandir(folder) if e.name.endswith(".py"))
    except OSError:
        return verdict
    found = custom_code_findings(folder, code) if code else remote_code_findings(folder)
    return replace(verdict, findings=(*verdict.findings, *found)) if found else verdict


def _add_sidecar(path: Path, fields: dict[str, Any]) -> None:
    """What the file's download-manager sidecar says, into its report (as ``inspect`` does:
    :func:`modelsafe.registry.inspect.with_sidecar`)."""
    from modelsafe.registry.sidecars import sidecar_findings

    report = fields["report"]
    sha256 = (fields.get("hashes") or {}).get("sha256")
    facts, found = sidecar_findings(path, report.get("family"), sha256)
    if facts:
        report["facts"] = {**(report.get("facts") or {}), **facts}
        report["warnings"] = [*(report.get("warnings") or []), *found]


def _corrupt_blob(path: str, is_dir: bool, fields: dict[str, Any]) -> str | None:
    """Why the file (or a model file of the folder) is a Hugging Face cache blob whose content
    does not match the sha256 it is named by, with the fix; None when none is."""
    from modelsafe.registry.hf_cache import corrupt_blob

    if is_dir:
        files = {Path(path) / rel: h for rel, h in (fields.get("component_hashes") or {}).items()}
    else:
        files = {Path(path): fields.get("hashes") or {}}
    for file, hashes in sorted(files.items()):
        found = corrupt_blob(file, hashes.get("sha256"))
        if found is not None:
            return "; ".join(found)
    return None


def _folder_hashes(path: str, cache: HashCache) -> dict[str, dict[str, str | None]]:
    """The hashes of a model folder's model files: of a pipeline, only those in the component
    folders its ``model_index.json`` declares (a checkpoint or LoRA kept beside them is a model
    of its own, and must not change the pipeline's identity)."""
    from modelsafe.registry.formats.diffusers_dir_reader import pipeline_components

    components = (
        pipeline_components(Path(path))
        if os.path.isfile(os.path.join(path, PIPELINE_MARKER))
        else None
    )
    from modelsafe.registry.audit import not_read

    found: dict[str, dict[str, str | None]] = {}
    for dirpath, filenames in walk_tree(path):  # (each real folder once: links may loop)
        for name in filenames:
            full = Path(dirpath) / name
            # (a FIFO or a device would block the read, /proc or /sys never ends: the audit
            # makes the folder an error for it)
            if not is_model_file(name) or not_read(full):
                continue
            rel = full.relative_to(path)
            if components and rel.parts[0] not in components:
                continue
            found[str(rel)] = cache.get(full)
    return found


def folder_id(path: str, cache: HashCache | None = None) -> str:
    """A model folder's identity as ``scan`` records it (``hashes["folder_id"]``): reads and
    hashes its model files."""
    return _folder_id(_folder_hashes(path, cache or HashCache()))


def _folder_id(components: dict[str, dict[str, str | None]]) -> str:
    """One id for a folder: its model files' relative paths and content ids (or sha256)."""
    h = hashlib.sha256()
    for rel in sorted(components):
        hashes = components[rel]
        h.update(f"{rel}\0{hashes.get('content_id') or hashes.get('sha256')}\n".encode())
    return h.hexdigest()
