"""sha256 and AutoV3 of a safetensors file as one hasher: two SHA-256 streams, one object.

The two are independent SHA-256 streams over nearly the same bytes (the whole file; everything
after the header, by Civitai's rule). With the x86 SHA extensions, ``_sha256x2`` (a small C
extension, registry/_sha256x2.c) compresses a block of each *interleaved* on one core in about
1.25x the time of one stream, where two separate streams take 2x. Elsewhere (no compiler at
install time, another CPU), two ``hashlib`` streams do the same work at 2x.

The hashing pass (registry/hashing.py) may also feed the streams separately
(:meth:`Sha256AutoV3.update_first` / :meth:`update_second`), so that on two cores the second
stream runs beside the first for part of each window and the pair runs interleaved for the rest
while the other core hashes BLAKE3, CRC-32 and content_id: docs/benchmarks.md, "Hashing".
"""

from __future__ import annotations

import hashlib

from modelsafe.plugins.hookspecs import Hasher
from modelsafe.registry.hashing import HeaderSkip, TensorDataSha256

try:
    from modelsafe.registry import _sha256x2
except ImportError:  # not compiled (no C compiler at install time): hashlib does the work
    _sha256x2 = None  # type: ignore[assignment]

NATIVE = bool(_sha256x2 is not None and _sha256x2.AVAILABLE)
# CPU per byte relative to one SHA-256 stream: both streams at once, interleaved or not.
PAIR_COST = 1.25 if NATIVE else 2.0
STREAM_COST = 1.0


class Sha256AutoV3:
    """``sha256`` of the whole file and ``autov3``: sha256 of the bytes from 8 + N on, where N is
    the file's first 8 bytes read as a little-endian u64 (the safetensors header length), when
    N < ``header_limit``, else from byte 8 (Civitai's rule, applied to every file; None: no
    limit). The hasher's own value is sha256; :meth:`extra_hexdigests` has autov3, which is None
    for a file shorter than 8 bytes or one whose header would run past its end (Civitai's
    scanner fails on both).
    """

    name = "sha256"
    second_name = "autov3"
    stream_cost = STREAM_COST

    def __init__(self, header_limit: int | None, native: bool | None = None) -> None:
        self._limit = header_limit
        self.native = NATIVE if native is None else bool(native and NATIVE)
        self.cost = PAIR_COST if self.native else 2 * STREAM_COST
        self._pair = _sha256x2.Sha256Pair() if self.native else None
        self._a = hashlib.sha256()
        self._b = hashlib.sha256()
        self._skip = HeaderSkip(header_limit)  # where the second stream begins

    def update(self, offset: int, data: bytes | memoryview) -> None:
        """Both streams (interleaved when native)."""
        begin = self._skip.begin(offset, data)
        if self._pair is not None:
            self._pair.update(data, 0, begin)
            return
        self._a.update(data)
        if begin < len(data):
            self._b.update(data[begin:] if begin else data)

    def update_first(self, offset: int, data: bytes | memoryview) -> None:
        """The whole-file stream alone."""
        if self._pair is not None:
            self._pair.update(data, 0, len(data))
        else:
            self._a.update(data)

    def update_second(self, offset: int, data: bytes | memoryview) -> None:
        """The AutoV3 stream alone."""
        begin = self._skip.begin(offset, data)
        if begin >= len(data):
            return
        if self._pair is not None:
            self._pair.update(data, len(data), begin)
        else:
            self._b.update(data[begin:] if begin else data)

    def _digests(self) -> tuple[str, str]:
        if self._pair is not None:
            a, b = self._pair.digests()
            return a.hex(), b.hex()
        return self._a.hexdigest(), self._b.hexdigest()

    def hexdigest(self) -> str | None:
        return self._digests()[0]

    def extra_hexdigests(self) -> dict[str, str | None]:
        return {self.second_name: self._digests()[1] if self._skip.usable else None}

    def second_alone(self) -> Hasher:
        """A hasher for the second value alone (used when another hasher took ``sha256``)."""
        return TensorDataSha256(self.second_name, header_limit=self._limit)
