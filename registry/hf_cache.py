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
    for repo in sorted(info.repos, key=lambda r: (r.repo_type, r.repo_id)):
        for rev in sorted(repo.revisions, key=lambda r: r.commit_hash):
            snapshot = os.path.abspath(rev.snapshot_path)
            result.snapshots.append(snapshot)
            result.facts[snapshot] = {
                "hf_repo": repo.repo_id,
                "hf_repo_type": repo.repo_type,
                "hf_revision": rev.commit_hash,
                "hf_refs": sorted(rev.refs),
            }
    return result


def _default_cache() -> str:
    from huggingface_hub import constants

    return os.path.abspath(constants.HF_HUB_CACHE)
