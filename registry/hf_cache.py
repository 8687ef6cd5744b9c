"""The Hugging Face hub cache, read with huggingface_hub's own cache scanner.

Each cached revision is a ``snapshots/<commit>`` folder of symbolic links into ``blobs/``; the
scan walks those folders, and because the walk groups paths by the real file they reach, a blob
shared by several revisions (or repos) is read and hashed once, with one location per snapshot
path. Each location records the repo, its type, the revision and its refs.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelsafe.errors import FileReadError, UsageError


@dataclass
class HFCache:
    cache_dir: str
    snapshots: list[str] = field(default_factory=list)
    facts: dict[str, dict[str, Any]] = field(default_factory=dict)  # snapshot folder -> facts
    warnings: list[str] = field(default_factory=list)

    def extra_for(self, path: str) -> dict[str, Any]:
        for snapshot, facts in self.facts.items():
            if path == snapshot or path.startswith(snapshot + os.sep):
                return facts
        return {}


def hf_cache_roots(cache_dir: Path | str | None = None) -> HFCache:
    """Every snapshot folder of the cache (default: huggingface_hub's HF_HUB_CACHE)."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(cache_dir)
    except CacheNotFound as exc:
        raise UsageError(
            f"no Hugging Face cache at {exc.cache_dir}",
            hint="pass --hf-cache-dir DIR, or set HF_HUB_CACHE / HF_HOME",
        ) from exc
    except OSError as exc:  # (a cache folder this user may not list: root's, another user's)
        raise UsageError(
            f"cannot read the Hugging Face cache at {exc.filename or cache_dir}: "
            f"{exc.strerror or exc}",
            hint="scan it as a user who can read it, or pass another --hf-cache-dir",
        ) from exc
    # (resolved, as huggingface_hub resolves it: a cache reached through a link, such as an
    # HF_HOME that is a link to a bigger drive, is then one set of paths, not two)
    root = os.path.realpath(cache_dir) if cache_dir else _default_cache()
    # (sorted: huggingface_hub lists the cache in the file system's order)
    result = HFCache(root, warnings=sorted(str(w) for w in info.warnings if not _said_elsewhere(w)))
    listed: set[str] = set()
    for repo in sorted(info.repos, key=lambda r: (r.repo_type, r.repo_id)):
        listed.add(os.path.abspath(repo.repo_path))
        for rev in sorted(repo.revisions, key=lambda r: r.commit_hash):
            snapshot = os.path.abspath(rev.snapshot_path)
            result.snapshots.append(snapshot)
            result.facts[snapshot] = {
                "hf_repo": repo.repo_id,
                "hf_repo_type": repo.repo_type,
                "hf_revision": rev.commit_hash,
                "hf_refs": sorted(rev.refs),
            }
    _unlisted_repos(root, listed, result)
    result.warnings.extend(_incomplete_blobs(root))
    return result


def facts_from_path(path: str) -> dict[str, Any]:
    """What ``scan --hf-cache`` records of a file or folder in a Hugging Face cache snapshot
    (``<kind>s--org--name/snapshots/<commit>/...``), from the path and the repo's ``refs/``
    alone, so that a plain ``scan`` of a cache folder names revisions the same way; ``{}`` for a
    path outside a cache snapshot."""
    parts = Path(path).parts
    for i in range(len(parts) - 2, 0, -1):
        if parts[i] != "snapshots":
            continue
        kind, sep, rest = parts[i - 1].partition("--")
        if not sep or kind not in ("models", "datasets", "spaces") or not rest:
            return {}
        commit = parts[i + 1]
        refs = _refs(os.path.join(*parts[:i]))
        return {
            "hf_repo": rest.replace("--", "/"),
            "hf_repo_type": kind.rstrip("s"),
            "hf_revision": commit,
            "hf_refs": sorted(r for r, c in refs.items() if c == commit),
        }
    return {}


# An LFS file's blob is named by its content's sha256 (a small file's, by its git sha1: 40 digits).
_LFS_BLOB = re.compile(r"[0-9a-f]{64}")


def corrupt_blob(path: Path, sha256: str | None) -> tuple[str, str] | None:
    """(reason, hint) when ``path`` is (or links to) a hub cache blob named by a sha256 that
    ``sha256``, its content's, is not: a download damaged after the hub checked it (a flipped
    bit, a chunk left as zeros) or a blob written by something else. None for any other file."""
    blob = _sha256_blob(Path(path)) if sha256 is not None else None
    if blob is None or sha256 is None:
        return None
    if sha256.lower() == blob.name:
        return None
    parts = Path(path).parts
    at = max((i for i, part in enumerate(parts[:-2]) if part == "snapshots"), default=None)
    name = "/".join(parts[at + 2 :]) if at is not None else "FILE"
    repo = blob.parent.parent.name.partition("--")[2].replace("--", "/") or "REPO"
    return (
        f"{path}: the blob's content has the sha256 {sha256}, which does not match its name "
        f"{blob.name}: a corrupt download",
        f"delete {blob} and download it again (hf download {shlex.quote(repo)} "
        f"{shlex.quote(name)} --force-download)",
    )


def _sha256_blob(path: Path) -> Path | None:
    """The first ``blobs/<sha256>`` on the link chain from ``path`` (itself included): a repo's
    blob, whether it holds the data or links on to huggingface_hub's shared Xet store
    (``<cache>/blobs/<2 hex>/<xet hash>``); None when the chain passes none."""
    current = Path(os.path.abspath(path))
    for _ in range(40):  # (a loop or an absurd chain ends the walk)
        if current.parent.name == "blobs" and _LFS_BLOB.fullmatch(current.name):
            return current
        if not current.is_symlink():
            return None
        try:
            target = os.readlink(current)
        except OSError:
            return None
        current = Path(os.path.normpath(current.parent / target))
    return None


def refuse_corrupt_blob(path: Path, sha256: str | None) -> None:
    """Raise :class:`FileReadError` for a :func:`corrupt_blob`."""
    found = corrupt_blob(path, sha256)
    if found is not None:
        raise FileReadError(*found)


# The folders of a hub cache that hold one repo each: ``models--org--name`` and the like.
HF_REPO_PREFIXES = ("models--", "datasets--", "spaces--")


def _repo_folders(root: str) -> list[str]:
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return []
    return [
        os.path.join(root, n)
        for n in names
        if n.startswith(HF_REPO_PREFIXES) and os.path.isdir(os.path.join(root, n))
    ]


def _unlisted_repos(root: str, listed: set[str], result: HFCache) -> None:
    """Repos huggingface_hub's scanner left out (one broken link makes it drop a whole repo):
    their snapshots are scanned anyway, so every good file is still found and a broken link is
    reported for its own path."""
    for folder in _repo_folders(root):
        if folder in listed:
            continue
        kind, _, rest = os.path.basename(folder).partition("--")
        repo_id = rest.replace("--", "/")
        snapshots = os.path.join(folder, "snapshots")
        try:
            commits = sorted(os.listdir(snapshots))
        except OSError:
            continue
        refs = _refs(folder)
        result.warnings.extend(_ref_problems(folder, repo_id, commits))
        for commit in commits:
            snapshot = os.path.join(snapshots, commit)
            if not os.path.isdir(snapshot):
                continue
            result.snapshots.append(snapshot)
            result.facts[snapshot] = {
                "hf_repo": repo_id,
                "hf_repo_type": kind.rstrip("s"),
                "hf_revision": commit,
                "hf_refs": sorted(r for r, c in refs.items() if c == commit),
            }


def _refs(folder: str, *, raw: bool = False) -> dict[str, str]:
    """Ref name (``main``, ``refs/pr/1``) -> the commit its file holds (``raw``: the file's text
    as it is, which is what huggingface_hub reads)."""
    found: dict[str, str] = {}
    refs = os.path.join(folder, "refs")
    for dirpath, _dirs, files in os.walk(refs):
        for name in files:
            path = os.path.join(dirpath, name)
            try:
                with open(path, encoding="utf-8", newline="") as fh:
                    text = fh.read(100)
            except (OSError, UnicodeDecodeError):
                continue
            found[os.path.relpath(path, refs)] = text if raw else text.strip()
    return found


def _said_elsewhere(warning: Exception) -> bool:
    """huggingface_hub's warnings that modelsafe says in its own words, once, for the path
    concerned: it drops the whole repo for a ref to no snapshot ("Reference(s) refer to missing
    commit hashes") or for one broken link ("Blob missing (broken symlink)");
    :func:`_unlisted_repos` scans such a repo anyway, :func:`_ref_problems` names each bad ref
    and the walk names each broken link."""
    return str(warning).startswith(
        ("Reference(s) refer to missing commit hashes", "Blob missing (broken symlink)")
    )


def _ref_problems(folder: str, repo_id: str, commits: list[str]) -> list[str]:
    """What is wrong with each ref of the repo at ``folder`` that names no snapshot, the way
    huggingface_hub reads it (the file's text as it is: the hub writes the bare 40-digit commit
    hash, no newline). Such a ref cannot be used offline (``from_pretrained(repo_id)`` with
    HF_HUB_OFFLINE=1 finds nothing), and huggingface_hub's cache scan leaves the repo out."""
    problems = []
    for ref, text in sorted(_refs(folder, raw=True).items()):
        if text in commits:
            continue
        path = os.path.join(folder, "refs", ref)
        commit = text.strip()
        scanned = "its snapshots were scanned anyway"
        if commit in commits:
            problems.append(
                f"{path}: the ref {ref!r} holds the commit {commit!r} with a newline or spaces "
                "around it (a ref written by hand?), so huggingface_hub finds no snapshot for "
                f"it and cannot load {repo_id} by that ref offline; {scanned}. Write the bare "
                f"hash, as the hub does: printf %s {shlex.quote(commit)} > {shlex.quote(path)}"
            )
        else:
            problems.append(
                f"{path}: the ref {ref!r} points at the commit {commit!r}, which has no "
                "snapshots/ folder (deleted, or its download never finished), so huggingface_hub "
                f"cannot load {repo_id} by that ref offline; {scanned}. Download it again "
                f"(hf download {repo_id} --revision {shlex.quote(ref)}) or delete the ref file"
            )
    return problems


def _incomplete_blobs(root: str) -> list[str]:
    """A ``blobs/*.incomplete`` file is a download that was cut off (huggingface_hub resumes it)."""
    found = []
    for folder in _repo_folders(root):
        blobs = os.path.join(folder, "blobs")
        try:
            names = sorted(n for n in os.listdir(blobs) if n.endswith(".incomplete"))
        except OSError:
            continue
        for name in names:
            try:
                size = os.path.getsize(os.path.join(blobs, name))
            except OSError:
                continue
            found.append(
                f"{os.path.join(blobs, name)}: an interrupted download ({size:,} bytes so far); "
                "download the file again to finish it"
            )
    return found


def _default_cache() -> str:
    from huggingface_hub import constants

    return os.path.realpath(constants.HF_HUB_CACHE)
