"""Write real safetensors files from tensor specs, without torch, at any size."""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

from modelsafe.types import DTYPE_SIZES

TensorSpec = tuple[str, str, tuple[int, ...]]  # (name, safetensors dtype, shape)


def safetensors_header(
    specs: Iterable[TensorSpec], metadata: Mapping[str, str] | None = None
) -> tuple[bytes, int]:
    """The 8-byte length + JSON header (padded to 8 bytes) and the data size it describes."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name, dtype, shape in specs:
        nbytes = math.ceil(math.prod(shape) * DTYPE_SIZES[dtype])
        header[name] = {
            "dtype": dtype,
            "shape": list(shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw, offset


def write_safetensors(
    path: str | os.PathLike[str],
    specs: Iterable[TensorSpec],
    metadata: Mapping[str, str] | None = None,
    data: Literal["zeros", "random", "sparse"] = "sparse",
    seed: int = 0,
) -> Path:
    """Write a safetensors file. ``sparse`` seeks over the data (a 12 GB file costs no disk),
    ``zeros`` writes zero bytes, ``random`` writes seeded random bytes (small files only)."""
    path = Path(path)
    head, size = safetensors_header(list(specs), metadata)
    with open(path, "wb") as fh:
        fh.write(head)
        if data == "sparse":
            fh.truncate(len(head) + size)
        elif data == "zeros":
            block = bytes(1 << 20)
            left = size
            while left:
                n = min(left, len(block))
                fh.write(block[:n])
                left -= n
        else:
            import random

            rng = random.Random(seed)
            fh.write(rng.randbytes(size))
    return path
