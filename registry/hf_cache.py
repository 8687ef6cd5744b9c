"""The Hugging Face hub cache, read with huggingface_hub's own cache scanner.

Each cached revision is a ``snapshots/<commit>`` folder of symbolic links into ``blobs/``; the
scan walks those folders, and because the walk groups paths by the real file they reach, a blob
shared by several revisions (or repos) is read and hashed once, with one location per snapshot
path. Each location records the repo, its type, the revision and its refs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelsafe.errors import UsageError


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
    root = os.path.abspath(cache_dir) if cache_dir else _default_cache()
    result = HFCache(root, warnings=[str(w) for w in info.warnings])
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


def _repo_folders(root: str) -> list[str]:
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return []
    return [
        os.path.join(root, n)
        for n in names
        if n.startswith(("models--", "datasets--", "spaces--"))
        and os.path.isdir(os.path.join(root, n))
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


def _refs(folder: str) -> dict[str, str]:
    found: dict[str, str] = {}
    refs = os.path.join(folder, "refs")
    for dirpath, _dirs, files in os.walk(refs):
        for name in files:
            path = os.path.join(dirpath, name)
            try:
                with open(path, encoding="utf-8") as fh:
                    found[os.path.relpath(path, refs)] = fh.read(100).strip()
            except (OSError, UnicodeDecodeError):
                continue
    return found


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

    return os.path.abspath(constants.HF_HUB_CACHE)
