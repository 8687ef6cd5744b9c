"""Built-in hashers for the one streaming pass: sha256, autov1, autov3, blake3, crc32, content_id.

(autov2 is the first 10 hex digits of sha256 and is derived, not hashed; sha256 and autov3 come
from one object, ``Sha256AutoV3``.) Each class implements
the ``Hasher`` protocol of ``modelsafe.plugins.hookspecs``; a third-party plugin adds algorithms by
returning its own objects from ``modelsafe_hashers``. Definitions: docs/hashes.md.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from typing import Any

from modelsafe.plugins.hookspecs import Hasher, hookimpl
from modelsafe.registry.hashing import AUTOV3_HEADER_LIMIT
from modelsafe.registry.sha256_pair import Sha256AutoV3
from modelsafe.types import TensorIndex, TensorInfo

AUTOV1_OFFSET = 0x100000
AUTOV1_LENGTH = 0x10000


class AutoV1Hasher:
    """AUTOMATIC1111's old model hash: sha256 of the 64 KiB at 1 MiB, first 8 hex digits.

    Like A1111 (``file.seek(0x100000); file.read(0x10000)``), a shorter file hashes whatever
    lies in that window, possibly nothing (then the value is sha256 of b"", ``e3b0c442``).
    """

    name = "autov1"
    cost = 0.0  # 64 KiB of the file

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def update(self, offset: int, data: bytes | memoryview) -> None:
        begin = max(offset, AUTOV1_OFFSET)
        end = min(offset + len(data), AUTOV1_OFFSET + AUTOV1_LENGTH)
        if begin < end:
            self._h.update(data[begin - offset : end - offset])

    def hexdigest(self) -> str | None:
        return self._h.hexdigest()[:8]


class Blake3Hasher:
    name = "blake3"
    cost = 0.24  # AVX-512, one thread: 0.125 s/GiB vs SHA-256's 0.53

    def __init__(self) -> None:
        import blake3

        self._h = blake3.blake3()

    def update(self, offset: int, data: bytes | memoryview) -> None:
        self._h.update(data)

    def hexdigest(self) -> str | None:
        return str(self._h.hexdigest())


def _crc32_function() -> Callable[[Any, int], int]:
    try:  # ISA-L: ~7x faster than zlib, same polynomial and values
        from isal import isal_zlib

        return isal_zlib.crc32
    except ImportError:
        import zlib

        return zlib.crc32


class Crc32Hasher:
    """CRC-32 (zlib's polynomial) shown as Civitai shows it: the 4 bytes little-endian, in hex.

    Civitai's scanner (.NET ``System.IO.Hashing.Crc32.GetCurrentHash``) lists ``85114A0D`` for
    "hello world", whose zlib value is 0x0D4A1185 (docs/hashes.md).
    """

    name = "crc32"

    def __init__(self) -> None:
        self._crc32 = _crc32_function()
        self._value = 0
        # ISA-L: ~0.01-0.04 s/GiB from cache; zlib: ~0.42 s/GiB (vs SHA-256's 0.53)
        self.cost = 0.04 if "isal" in str(getattr(self._crc32, "__module__", "")) else 0.8

    def update(self, offset: int, data: bytes | memoryview) -> None:
        self._value = self._crc32(data, self._value)

    def hexdigest(self) -> str | None:
        return struct.pack("<I", self._value & 0xFFFFFFFF).hex()


class ContentIdHasher:
    """A format-independent identity of the weights, the same for a .ckpt and its .safetensors.

    sha256 over the tensors sorted by name, one line each:
    ``name NUL dtype NUL dim,dim,... NUL blake3(raw bytes) LF``, where the raw bytes are the file
    range [offset, offset + nbytes) of each tensor, hashed during the same pass. None when there
    is no tensor table, a tensor's range is unknown (offset -1, or no bytes for a non-empty
    shape), or a range runs past the end.
    """

    name = "content_id"

    def __init__(self, tensors: tuple[TensorInfo, ...]) -> None:
        # A range is unknown when its offset is -1, or when it claims no bytes for elements.
        self._usable = bool(tensors) and all(
            t.offset >= 0 and (t.nbytes > 0 or t.numel == 0) for t in tensors
        )
        self._order = sorted(tensors, key=lambda t: (t.offset, t.nbytes)) if self._usable else []
        self.cost = 0.24 if self._usable else 0.0  # BLAKE3 of (nearly) every byte, or nothing
        self._next = 0
        self._active: list[tuple[TensorInfo, Any]] = []
        self._digests: dict[int, str] = {}

    def update(self, offset: int, data: bytes | memoryview) -> None:
        if not self._usable:
            return
        import blake3

        end = offset + len(data)
        while self._next < len(self._order) and self._order[self._next].offset < end:
            self._active.append((self._order[self._next], blake3.blake3()))
            self._next += 1
        view = memoryview(data)
        still = []
        for tensor, h in self._active:
            stop = tensor.offset + tensor.nbytes
            begin, finish = max(tensor.offset, offset), min(stop, end)
            if begin < finish:
                h.update(view[begin - offset : finish - offset])
            if stop <= end:
                self._digests[id(tensor)] = h.hexdigest()
            else:
                still.append((tensor, h))
        self._active = still

    def hexdigest(self) -> str | None:
        if not self._usable:
            return None
        import blake3

        empty = blake3.blake3().hexdigest()
        for tensor in self._order[self._next :]:  # zero-byte tensors at the very end
            if tensor.nbytes == 0:
                self._digests[id(tensor)] = empty
        if self._active or len(self._digests) != len(self._order):
            return None  # some tensor's bytes were not all in the file
        h = hashlib.sha256()
        # (as stored: a packed weight read at its logical shape keeps the id its bytes had)
        stored = {id(t): t.stored or (t.dtype, t.shape) for t in self._order}
        for t in sorted(self._order, key=lambda t: (t.name, *stored[id(t)])):
            dtype, dims = stored[id(t)]
            shape = ",".join(str(d) for d in dims)
            h.update(f"{t.name}\0{dtype}\0{shape}\0{self._digests[id(t)]}\n".encode())
        return h.hexdigest()


@hookimpl
def modelsafe_hashers(index: TensorIndex | None) -> list[Hasher] | None:
    # sha256 and AutoV3 (Civitai computes it for every file) come from one object: two SHA-256
    # streams that run interleaved on one core where the CPU allows (registry/sha256_pair.py).
    sha = Sha256AutoV3(AUTOV3_HEADER_LIMIT)
    hashers: list[Hasher] = [sha, AutoV1Hasher(), Blake3Hasher(), Crc32Hasher()]
    hashers.append(ContentIdHasher(index.tensors if index is not None else ()))
    return hashers
