"""All hashes of a file in one streaming read (placeholder until the hashing work lands)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from modelsafe.types import TensorIndex


def hash_file(path: Path, index: TensorIndex | None = None) -> dict[str, str | None]:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    digest = h.hexdigest()
    return {"sha256": digest, "autov2": digest[:10]}
