"""Convert a torch checkpoint (zip, legacy or pickle) to safetensors without torch and without
executing anything in it.

Tensors are rebuilt from the pickle VM's record (storage key, dtype, shape, stride, offset) and
streamed from the source into a temp file beside the destination in one sequential pass that also
hashes the whole source (SHA-256, recorded in the metadata). The temp file is re-read and every
tensor compared (BLAKE3 of the bytes written vs the bytes taken from the source), fsynced and
atomically renamed over the destination. The source is only ever opened read-only; on any
failure the temp file is removed and the destination is untouched.

Shared storages and views: safetensors forbids overlapping tensors, so every state-dict entry
becomes its own tensor with its own copy of its bytes (a non-contiguous view is written
contiguously). Entries that are exact aliases of another (same storage, offset, shape, stride:
tied weights) are listed in ``modelsafe.aliases`` so a loader can re-tie them; no entry is dropped.
"""

from __future__ import annotations

import hashlib
import json
import math
import mmap
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelsafe.errors import ConversionError, UnsafeFileError, UsageError
from modelsafe.registry.pickle_vm.tensors import TensorRecord
from modelsafe.registry.torch_archive import TorchFile, read_torch_file

CHUNK = 8 << 20
_SHA_PLACEHOLDER = "0" * 64
_MAX_VALUES_JSON = 64 * 1024


@dataclass(frozen=True)
class ConvertResult:
    """What a conversion produced."""

    source: Path
    destination: Path
    tensors: int
    bytes_written: int
    source_sha256: str
    source_format: str
    aliases: dict[str, str] = field(default_factory=dict)
    rewritten_views: tuple[str, ...] = ()
    dropped_tensors: int = 0
    seconds: float = 0.0
    verified: bool = True


@dataclass
class _Planned:
    record: TensorRecord
    source_offset: int  # -1: gathered from a strided view
    storage_base: int  # absolute offset of the tensor's storage (or storage view) in the source
    sequential: bool = False  # copied during the sequential pass
    out_offset: int = 0
    digest: bytes = b""


def default_destination(src: Path) -> Path:
    return src.with_suffix(".safetensors")


def convert_file(
    src: Path | str, dst: Path | str | None = None, *, overwrite: bool = False
) -> ConvertResult:
    """Convert ``src`` to safetensors at ``dst`` (default: beside it, ``.safetensors``).

    Raises UnsafeFileError when the audit finds anything unsafe, ConversionError when the file
    cannot be converted (nothing is left at ``dst`` then), UsageError for bad arguments.
    """
    started = time.perf_counter()
    src = Path(src)
    dst = Path(dst) if dst is not None else default_destination(src)
    tf = _checked_source(src, dst, overwrite)
    plan = _plan(tf)
    values = tf.content.values if tf.content else {}
    tmp = dst.parent / f".{dst.name}.{secrets.token_hex(4)}.modelsafe-tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as exc:
        raise ConversionError(
            f"cannot create a temp file beside {dst}: {exc.strerror or exc}",
            hint="check that the destination folder exists and is writable",
        ) from exc
    try:
        with os.fdopen(fd, "wb") as out:
            header, data_start = _header(tf, plan, values, _SHA_PLACEHOLDER)
            out.write(header)
            sha = _copy(src, out, plan, data_start)
            final, final_start = _header(tf, plan, values, sha)
            if len(final) != len(header) or final_start != data_start:
                raise ConversionError("internal error: the header changed size")
            out.seek(0)
            out.write(final)
            out.flush()
            os.fsync(out.fileno())
        total = _verify(tmp, plan, data_start)
        os.replace(tmp, dst)
        _fsync_dir(dst.parent)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, (ConversionError, KeyboardInterrupt)):
            raise
        if isinstance(exc, OSError):
            raise ConversionError(
                f"converting {src} failed: {exc.strerror or exc}",
                hint="nothing was written at the destination; check free space and permissions",
            ) from exc
        raise
    aliases = _aliases(plan)
    views = tuple(p.record.name for p in plan if p.source_offset < 0)
    return ConvertResult(
        source=src,
        destination=dst,
        tensors=len(plan),
        bytes_written=total,
        source_sha256=sha,
        source_format=tf.format,
        aliases=aliases,
        rewritten_views=views,
        dropped_tensors=len(tf.content.dropped) if tf.content else 0,
        seconds=time.perf_counter() - started,
    )


# -- checks -------------------------------------------------------------------------------------


def _checked_source(src: Path, dst: Path, overwrite: bool) -> TorchFile:
    from modelsafe.registry.audit import audit_path
    from modelsafe.registry.sniff import read_head, sniff

    if not src.is_file():
        raise UsageError(f"{src} is not a file", hint="give the path of a .ckpt/.pt/.bin file")
    if dst.exists() and dst.resolve() == src.resolve():
        raise UsageError("the destination is the source", hint="give another destination")
    if dst.exists() and not overwrite:
        raise UsageError(f"{dst} already exists", hint="remove it or pass --force")
    verdict = audit_path(src)
    if verdict.status == "unsafe":
        names = sorted({f.message.split(" ")[0] for f in verdict.findings if f.code == "global"})
        detail = ", ".join(names) if names else verdict.findings[0].message
        raise UnsafeFileError(
            f"refusing to convert {src}: it is unsafe ({detail})",
            hint="run `modelsafe audit` for every finding; get the weights from a trusted source",
        )
    fmt = sniff(read_head(src)).value
    if fmt == "safetensors":
        raise UsageError(f"{src} is already safetensors", hint="nothing to convert")
    if verdict.status == "error":
        first = next(f for f in verdict.findings if f.severity == "error")
        raise ConversionError(f"cannot convert {src}: {first.message}", hint="the file is broken")
    if fmt not in ("zip", "legacy-torch", "pickle"):
        raise ConversionError(f"cannot convert {src}: {fmt} is not a torch checkpoint")
    tf = read_torch_file(src, fmt)
    if tf.status != "safe" or tf.content is None:
        raise ConversionError(f"cannot convert {src}: the checkpoint does not read cleanly")
    if tf.content.unsupported:
        raise ConversionError(
            f"cannot convert {src}: {len(tf.content.unsupported)} tensors of a kind safetensors "
            f"cannot hold (e.g. {tf.content.unsupported[0]})"
        )
    if tf.extra.get("byteorder", "little") != "little" or not tf.extra.get("sys_info", {}).get(
        "little_endian", True
    ):
        raise ConversionError(f"cannot convert {src}: big-endian checkpoints are not supported")
    if any(b.compressed for b in tf.storages.values()):
        raise ConversionError(f"cannot convert {src}: compressed storages are not supported")
    if not tf.content.tensors:
        raise ConversionError(f"cannot convert {src}: it holds no tensors")
    return tf


# -- layout -------------------------------------------------------------------------------------


def _plan(tf: TorchFile) -> list[_Planned]:
    assert tf.content is not None
    primary: list[_Planned] = []
    secondary: list[_Planned] = []
    for record in tf.content.tensors:
        offset = tf.tensor_offset(record)
        blob = tf.storages[record.storage.key]
        view = record.storage.view[1] * record.itemsize if record.storage.view else 0
        item = _Planned(record, offset, blob.offset + view)
        (primary if offset >= 0 else secondary).append(item)
    primary.sort(key=lambda p: (p.source_offset, p.record.nbytes))
    sequential: list[_Planned] = []
    end = -1
    for item in primary:
        if item.source_offset >= end:
            item.sequential = True
            sequential.append(item)
            end = item.source_offset + item.record.nbytes
        else:  # overlaps a tensor already taken in this pass: an alias or a view
            secondary.append(item)
    plan = sequential + secondary
    cursor = 0
    for item in plan:
        item.out_offset = cursor
        cursor += item.record.nbytes
    return plan


def _header(
    tf: TorchFile, plan: list[_Planned], values: dict[str, Any], sha: str
) -> tuple[bytes, int]:
    meta: dict[str, str] = {
        "format": "pt",
        "modelsafe.source_name": tf.path.name,
        "modelsafe.source_format": tf.format,
        "modelsafe.source_sha256": sha,
    }
    if values:
        text = json.dumps(values, sort_keys=True, default=str)
        if len(text) <= _MAX_VALUES_JSON:
            meta["modelsafe.values"] = text
    aliases = _aliases(plan)
    if aliases:
        meta["modelsafe.aliases"] = json.dumps(aliases, sort_keys=True)
    header: dict[str, Any] = {"__metadata__": meta}
    for item in plan:
        r = item.record
        header[r.name] = {
            "dtype": r.dtype,
            "shape": list(r.shape),
            "data_offsets": [item.out_offset, item.out_offset + r.nbytes],
        }
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw, 8 + len(raw)


def _aliases(plan: list[_Planned]) -> dict[str, str]:
    first: dict[tuple[Any, ...], str] = {}
    aliases: dict[str, str] = {}
    for item in sorted(plan, key=lambda p: p.record.name):
        r = item.record
        key = (r.storage.key, r.storage.view, r.storage_offset, r.shape, r.stride, r.dtype)
        if r.nbytes and key in first:
            aliases[r.name] = first[key]
        else:
            first.setdefault(key, r.name)
    return aliases


# -- copying ------------------------------------------------------------------------------------


def _copy(src: Path, out: Any, plan: list[_Planned], data_start: int) -> str:
    """One sequential pass over ``src``: hash it all, copy the sequential tensors; then gather
    the rest. Returns the source's SHA-256."""
    from concurrent.futures import ThreadPoolExecutor

    import blake3

    sha = hashlib.sha256()
    sequential = [p for p in plan if p.sequential]
    hashers = {id(p): blake3.blake3() for p in plan}
    buffers = [bytearray(CHUNK), bytearray(CHUNK)]
    pending = None
    index = 0
    fd = os.open(src, os.O_RDONLY)
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            pos = 0
            turn = 0
            while True:
                buf = buffers[turn]
                view = memoryview(buf)
                got = os.readv(fd, [view])
                if got <= 0:
                    break
                chunk = view[:got]
                if pending is not None:
                    pending.result()
                pending = pool.submit(sha.update, chunk)
                chunk_end = pos + got
                while index < len(sequential):
                    item = sequential[index]
                    begin = max(item.source_offset, pos)
                    end = min(item.source_offset + item.record.nbytes, chunk_end)
                    if begin < end:
                        part = chunk[begin - pos : end - pos]
                        out.write(part)
                        hashers[id(item)].update(part)
                    if item.source_offset + item.record.nbytes <= chunk_end:
                        index += 1
                        continue
                    break
                pos = chunk_end
                turn ^= 1
            if pending is not None:
                pending.result()
        if index != len(sequential):
            raise ConversionError(f"{src} changed or ended while it was being converted")
        for item in plan:
            if not item.sequential:
                for piece in _gather(fd, item):
                    out.write(piece)
                    hashers[id(item)].update(piece)
    finally:
        os.close(fd)
    for item in plan:
        item.digest = hashers[id(item)].digest()
    return sha.hexdigest()


def _gather(fd: int, item: _Planned) -> Iterator[bytes]:
    """The bytes of a tensor that is not one contiguous source range, in C order, by chunks."""
    import numpy as np

    r = item.record
    if r.nbytes == 0:
        return
    if item.source_offset >= 0:  # contiguous, but shares bytes with another tensor
        pos = item.source_offset
        end = pos + r.nbytes
        while pos < end:
            piece = os.pread(fd, min(CHUNK, end - pos), pos)
            if not piece:
                raise ConversionError("the source ended while it was being converted")
            yield piece
            pos += len(piece)
        return
    itemsize = r.itemsize
    last = r.storage_offset + sum((s - 1) * st for s, st in zip(r.shape, r.stride, strict=True))
    span = (last + 1) * itemsize
    start = item.storage_base
    aligned = start - start % mmap.ALLOCATIONGRANULARITY
    with mmap.mmap(fd, start - aligned + span, offset=aligned, access=mmap.ACCESS_READ) as mm:
        raw = np.frombuffer(mm, dtype=np.dtype(f"V{itemsize}"), offset=start - aligned)
        view = np.lib.stride_tricks.as_strided(
            raw[r.storage_offset :],
            shape=r.shape,
            strides=tuple(st * itemsize for st in r.stride),
            writeable=False,
        )
        row_bytes = max(1, math.prod(r.shape[1:]) * itemsize)
        step = max(1, CHUNK // row_bytes)
        try:
            for i in range(0, r.shape[0], step):
                yield np.ascontiguousarray(view[i : i + step]).tobytes()
                mm.madvise(mmap.MADV_DONTNEED)
        finally:
            del raw, view


# -- verification -------------------------------------------------------------------------------


def _verify(path: Path, plan: list[_Planned], data_start: int) -> int:
    """Re-read the written file: header as planned, each tensor's bytes as taken from the source."""
    import blake3

    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        length = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(length))
        if 8 + length != data_start:
            raise ConversionError("verification failed: the header length changed")
        for item in sorted(plan, key=lambda p: p.out_offset):
            r = item.record
            entry = header.get(r.name)
            want = [item.out_offset, item.out_offset + r.nbytes]
            if entry != {"dtype": r.dtype, "shape": list(r.shape), "data_offsets": want}:
                raise ConversionError(f"verification failed: header entry of {r.name} differs")
            hasher = blake3.blake3()
            left = r.nbytes
            fh.seek(data_start + item.out_offset)
            while left:
                piece = fh.read(min(CHUNK, left))
                if not piece:
                    raise ConversionError(f"verification failed: {r.name} is truncated")
                hasher.update(piece)
                left -= len(piece)
            if hasher.digest() != item.digest:
                raise ConversionError(f"verification failed: the bytes of {r.name} differ")
        total = data_start + sum(p.record.nbytes for p in plan)
        if size != total:
            raise ConversionError("verification failed: the file size is not what was planned")
    return size


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
