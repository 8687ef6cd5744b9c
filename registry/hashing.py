"""All hashes of a file in one streaming read: sha256, autov1-3, blake3, crc32, content_id.

The file is read once, in :data:`CHUNK_SIZE` pieces, by the calling thread; every hasher (the
``modelsafe_hashers`` hook's answers: built-ins from ``plugins/builtin/hashers.py`` plus any a
third-party plugin adds) runs in its own worker thread fed through a bounded queue. hashlib, blake3,
zlib/ISA-L and file reads all release the GIL on large buffers, so the hashers run side by side on
separate cores and memory stays below ``(QUEUE_DEPTH + 2) * CHUNK_SIZE``.

Embedded hashes in a safetensors header (kohya's ``sshs_model_hash``, ``modelspec.hash_sha256``)
are compared with the sha256 of the tensor data computed in the same pass; a mismatch is reported
under the key ``stale_embedded_hashes`` (None when every embedded hash matches or there is none).
Definitions, and which tools produce the same values: docs/hashes.md.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Sequence
from pathlib import Path

from modelsafe.errors import FileReadError
from modelsafe.plugins.hookspecs import Hasher
from modelsafe.types import Format, TensorIndex

CHUNK_SIZE = 8 << 20
QUEUE_DEPTH = 4
HASH_NAMES = ("sha256", "autov1", "autov2", "autov3", "blake3", "crc32", "content_id")
# Civitai's AutoV3 skips the header only when its length is below this (docs/hashes.md).
AUTOV3_HEADER_LIMIT = 16 << 20
EMBEDDED_HASH_KEYS = ("sshs_model_hash", "modelspec.hash_sha256")
_TENSOR_DATA = "_tensor_data_sha256"


class TensorDataSha256:
    """sha256 of everything after a safetensors header (8 + N bytes in), whatever N is.

    kohya's ``sshs_model_hash`` and ``modelspec.hash_sha256`` are defined this way; it equals
    AutoV3 whenever the header is shorter than 16 MiB.
    """

    def __init__(self, name: str = _TENSOR_DATA, header_limit: int | None = None) -> None:
        self.name = name
        self._limit = header_limit
        self._start: int | None = None
        self._prefix = b""
        self._h = hashlib.sha256()

    def update(self, offset: int, data: bytes | memoryview) -> None:
        if self._start is None:
            self._prefix += bytes(data[: max(0, 8 - offset)])
            if len(self._prefix) < 8:
                return
            length = int.from_bytes(self._prefix[:8], "little")
            skip = self._limit is None or length < self._limit
            self._start = 8 + length if skip else 8
        end = offset + len(data)
        if end <= self._start:
            return
        begin = max(0, self._start - offset)
        self._h.update(data[begin:] if begin else data)

    def hexdigest(self) -> str | None:
        return None if self._start is None else self._h.hexdigest()


class _Worker(threading.Thread):
    """Feeds one hasher from its own queue; a hasher that raises is stopped and reported."""

    def __init__(self, hasher: Hasher) -> None:
        super().__init__(name=f"modelsafe-hash-{getattr(hasher, 'name', '?')}", daemon=True)
        self.hasher = hasher
        self.queue: queue.Queue[tuple[int, bytes] | None] = queue.Queue(QUEUE_DEPTH)
        self.error: str | None = None

    def run(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is None:
                try:
                    self.hasher.update(*item)
                except Exception as exc:  # a broken (third-party) hasher loses only its value
                    self.error = f"{type(exc).__name__}: {exc}"


def stream_hashers(path: Path, hashers: Sequence[Hasher]) -> tuple[int, dict[str, str]]:
    """Read ``path`` once, feeding every hasher; returns (bytes read, {hasher name: error})."""
    workers = [_Worker(h) for h in hashers]
    for worker in workers:
        worker.start()
    total = 0
    try:
        with open(path, "rb", buffering=0) as fh:
            while chunk := fh.read(CHUNK_SIZE):
                for worker in workers:
                    worker.queue.put((total, chunk))
                total += len(chunk)
    except OSError as exc:
        raise FileReadError(
            f"cannot read {path}: {exc.strerror or exc}", hint="check the path and permissions"
        ) from exc
    finally:
        for worker in workers:
            worker.queue.put(None)
        for worker in workers:
            worker.join()
    return total, {w.hasher.name: w.error for w in workers if w.error}


def collect_hashers(index: TensorIndex | None) -> list[Hasher]:
    """Fresh hashers from every ``modelsafe_hashers`` implementation (first of a name wins)."""
    from modelsafe.plugin_manager import get_plugin_manager

    found: dict[str, Hasher] = {}
    for _plugin, result in get_plugin_manager().call_each("modelsafe_hashers", index=index):
        for hasher in result if isinstance(result, list) else [result]:
            name = getattr(hasher, "name", None)
            if isinstance(name, str) and name and name not in found:
                found[name] = hasher
    return list(found.values())


def _embedded(index: TensorIndex | None) -> dict[str, str]:
    if index is None or index.format != Format.SAFETENSORS.value:
        return {}
    out = {}
    for key in EMBEDDED_HASH_KEYS:
        value = str(index.metadata.get(key, "")).strip().lower()
        value = value.removeprefix("0x")
        if value:
            out[key] = value
    return out


def _needs_own_tensor_hash(index: TensorIndex | None) -> bool:
    length = (index.extra.get("header_length") if index is not None else None) or 0
    return isinstance(length, int) and length >= AUTOV3_HEADER_LIMIT


def stale_embedded_hashes(embedded: dict[str, str], tensor_sha256: str | None) -> list[str]:
    """Messages for embedded hashes that do not match the tensor data's sha256."""
    if tensor_sha256 is None:
        return []
    return [
        f"{key} in the metadata is {value[:16]}..., but the tensor data hashes to "
        f"{tensor_sha256[:16]}...: the embedded hash is stale (the weights changed after it "
        "was written)"
        for key, value in embedded.items()
        if value != tensor_sha256
    ]


def hash_file(path: Path, index: TensorIndex | None = None) -> dict[str, str | None]:
    """Every hash of the file at ``path`` in one read; ``index`` (its tensor table) enables
    AutoV3, content_id and the embedded-hash check. Values are lowercase hex or None."""
    path = Path(path)
    hashers = collect_hashers(index)
    embedded = _embedded(index)
    if embedded and _needs_own_tensor_hash(index):
        hashers.append(TensorDataSha256())
    _size, failures = stream_hashers(path, hashers)
    values: dict[str, str | None] = {
        h.name: None if h.name in failures else h.hexdigest() for h in hashers
    }
    sha = values.get("sha256")
    values.setdefault("autov2", sha[:10] if sha else None)
    tensor_sha = values.pop(_TENSOR_DATA, None) or (values.get("autov3") if embedded else None)
    result: dict[str, str | None] = {name: values.pop(name, None) for name in HASH_NAMES}
    result.update(values)
    stale = stale_embedded_hashes(embedded, tensor_sha)
    result["stale_embedded_hashes"] = "; ".join(stale) if stale else None
    if failures:
        result["hash_failures"] = "; ".join(f"{k}: {v}" for k, v in sorted(failures.items()))
    return result
