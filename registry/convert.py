"""Convert a torch checkpoint (zip, legacy or pickle) to safetensors without torch and without
executing anything in it.

Tensors are rebuilt from the pickle VM's record (storage key, dtype, shape, stride, offset) and
streamed from the source into a temp file beside the destination in one sequential pass (one
reused buffer: read, written, BLAKE3-hashed). The temp file is then re-read and every tensor
compared (BLAKE3 of the bytes written vs the bytes taken from the source); the final header,
which records the source's SHA-256, is written last and re-read byte for byte; the file is
fsynced and atomically renamed over the destination. The source is only ever opened read-only;
on any failure the temp file is removed and the destination is untouched.

For speed (docs/benchmarks.md, "Audit and convert") the work overlaps on two cores: the source's
SHA-256, the slowest part, runs in its own thread over its own reads of the source, beside the
copy and the verification; written data is pushed to disk (fdatasync) during the copy, so the
final fsync has little left. Size, mtime and inode of the source are compared before and after:
a source rewritten meanwhile is an error.

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
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelsafe.errors import ConversionError, UnsafeFileError, UsageError
from modelsafe.registry.pickle_vm.tensors import TensorRecord
from modelsafe.registry.torch_archive import TorchFile, read_torch_file
from modelsafe.types import SAFETENSORS_DTYPES

CHUNK = 8 << 20
# While the copy runs, written data is pushed to disk every this many seconds (fdatasync in a
# thread), so the final fsync, which runs beside the verification, has little left to write.
FLUSH_INTERVAL = 0.05
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


_SOURCE_SUFFIXES = frozenset({".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle", ".safetensors"})


def default_destination(src: Path) -> Path:
    """``x.ckpt`` -> ``x.safetensors``; a name without a model suffix keeps all of itself
    (``embedding-v1.5`` -> ``embedding-v1.5.safetensors``: its trigger word stays whole)."""
    if src.suffix.lower() in _SOURCE_SUFFIXES:
        return src.with_suffix(".safetensors")
    return src.with_name(src.name + ".safetensors")


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
    try:
        before = os.stat(src)  # the file the audit will read; the copy must read the same one
    except OSError as exc:
        raise UsageError(
            f"cannot read {src}: {exc.strerror or exc}", hint="check the path"
        ) from exc
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
        with (
            _SourceSha256(src, before) as source_sha,  # hashes the source beside the copy
            os.fdopen(fd, "wb") as out,
            _Flusher(out.fileno()) as flusher,
        ):
            header, data_start = _header(tf, plan, values, _SHA_PLACEHOLDER)
            out.write(header)
            _copy(source_sha.fd, src, out, plan, data_start)
            out.flush()
            total = _verify(tmp, plan, data_start)  # every tensor, re-read from the temp file
            sha = source_sha.result()
            final, final_start = _header(tf, plan, values, sha)
            if len(final) != len(header) or final_start != data_start:
                raise ConversionError("internal error: the header changed size")
            out.seek(0)
            out.write(final)
            out.flush()
            flusher.start_final_fsync()
            _verify_header(tmp, final)
            flusher.wait()
            source_sha.check_unchanged()
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


class _SourceSha256:
    """SHA-256 of the whole source, in a thread that reads the source by itself (``preadv`` into
    one cache-sized buffer), so that it runs beside the copy and the verification on another
    core instead of bounding the copy. ``check_unchanged`` compares the source's size, mtime and
    inode with what they were before: a source rewritten in between is an error."""

    BUFFER = 1 << 20

    def __init__(self, src: Path, before: os.stat_result) -> None:
        self._fd = os.open(src, os.O_RDONLY)
        self.fd = self._fd  # the copy reads through this descriptor too: one file, whatever
        # happens to the path
        self._before = (before.st_size, before.st_mtime_ns, before.st_ino)
        if self._identity() != self._before:  # replaced or rewritten while it was audited
            os.close(self._fd)
            raise ConversionError(
                f"{src} changed while it was being audited",
                hint="nothing was written; convert it again when nothing is writing it",
            )
        self._hash = hashlib.sha256()
        self._stop = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="modelsafe-source-sha", daemon=True)

    def _identity(self) -> tuple[int, int, int]:
        st = os.fstat(self._fd)
        return st.st_size, st.st_mtime_ns, st.st_ino

    def __enter__(self) -> _SourceSha256:
        self._thread.start()
        return self

    def _run(self) -> None:
        view = memoryview(bytearray(self.BUFFER))
        pos = 0
        try:
            while not self._stop:
                got = os.preadv(self._fd, [view], pos)
                if got <= 0:
                    break
                self._hash.update(view[:got])
                pos += got
        except BaseException as exc:
            self._error = exc

    def result(self) -> str:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._hash.hexdigest()

    def check_unchanged(self) -> None:
        if self._identity() != self._before:
            raise ConversionError(
                "the source changed while it was being converted",
                hint="nothing was written at the destination; convert it again",
            )

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self._thread.join()
        os.close(self._fd)


class _Flusher:
    """fdatasync every FLUSH_INTERVAL s in a thread while the file is written, then one final
    fsync on request; the caller waits for it (and gets its error) before the rename."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._stop = threading.Event()
        self._final = False
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._run, name="modelsafe-fsync", daemon=True)

    def __enter__(self) -> _Flusher:
        self._thread.start()
        return self

    def _run(self) -> None:
        sync_data = getattr(os, "fdatasync", os.fsync)
        try:
            while not self._stop.wait(FLUSH_INTERVAL):
                sync_data(self._fd)
            if self._final:
                os.fsync(self._fd)
        except OSError as exc:
            self._error = exc

    def start_final_fsync(self) -> None:
        self._final = True
        self._stop.set()

    def wait(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error
        if not self._final:
            raise ConversionError("internal error: the file was never fsynced")

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- checks -------------------------------------------------------------------------------------


def _checked_source(src: Path, dst: Path, overwrite: bool) -> TorchFile:
    from modelsafe.registry.audit import audit_path
    from modelsafe.registry.sniff import read_head, sniff

    if not src.is_file():
        raise UsageError(f"{src} is not a file", hint="give the path of a .ckpt/.pt/.bin file")
    if dst.exists() and dst.resolve() == src.resolve():
        raise UsageError("the destination is the source", hint="give another destination")
    if dst.is_dir():
        raise UsageError(f"{dst} is a folder", hint="give the path of the file to write")
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
    _check_names_and_dtypes(src, tf.content)
    return tf


def _check_names_and_dtypes(src: Path, content: Any) -> None:
    """What a safetensors file cannot hold: refused with the reason, before anything is written."""
    if content.name_problems:
        raise ConversionError(
            f"cannot convert {src}: {content.name_problems[0]}; a safetensors file needs one "
            "flat name per tensor",
            hint="load it with torch.load(weights_only=True) and save the tensors under names "
            "of your own",
        )
    for record in content.tensors:
        name = record.name
        if name == "__metadata__":
            raise ConversionError(
                f"cannot convert {src}: a tensor is named '__metadata__', the name safetensors "
                "keeps for the file's metadata",
                hint="rename that tensor before converting",
            )
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise ConversionError(
                f"cannot convert {src}: the tensor name {name!r} is not valid Unicode text "
                "(a lone surrogate), which a safetensors header cannot hold",
                hint="rename that tensor before converting",
            ) from None
        if record.dtype not in SAFETENSORS_DTYPES:
            raise ConversionError(
                f"cannot convert {src}: tensor {name!r} is {record.dtype}, which no safetensors "
                "dtype holds",
                hint="keep the .ckpt, or cast that tensor (e.g. complex128 -> complex64)",
            )


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
        kept, omitted = _fitting_values(values)
        if kept:
            meta["modelsafe.values"] = _values_json(kept)
        if omitted:
            meta["modelsafe.values_omitted"] = json.dumps(omitted)
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


def _json_safe(value: Any) -> Any:
    """NaN and infinities as text: strict JSON readers (JavaScript, serde) refuse the bare words."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _values_json(values: dict[str, Any]) -> str:
    return json.dumps(_json_safe(values), sort_keys=True, default=str, allow_nan=False)


def _fitting_values(values: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The plain values that fit in the metadata (the biggest ones left out first; their keys
    listed), so a long config text never costs ``global_step`` and ``epoch``."""
    sizes = {k: len(_values_json({k: v})) for k, v in values.items()}
    kept = dict(values)
    omitted: list[str] = []
    for key in sorted(sizes, key=lambda k: (-sizes[k], k)):
        if len(_values_json(kept)) <= _MAX_VALUES_JSON:
            break
        del kept[key]
        omitted.append(key)
    return kept, sorted(omitted)


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


def _copy(fd: int, src: Path, out: Any, plan: list[_Planned], data_start: int) -> None:
    """One sequential pass over the tensor bytes of ``src``: copy the sequential tensors (each
    chunk read once into one reused buffer, written, and BLAKE3-hashed for the verification);
    then gather the rest. (The source's SHA-256 is computed beside this, by _SourceSha256, whose
    descriptor ``fd`` this reads too: the file audited is the file copied.)"""
    import blake3

    # zero-byte tensors need no bytes: their digest is BLAKE3 of nothing
    sequential = [p for p in plan if p.sequential and p.record.nbytes]
    hashers = {id(p): blake3.blake3() for p in plan}
    view = memoryview(bytearray(CHUNK))
    index = 0
    pos = sequential[0].source_offset if sequential else 0
    stop = sequential[-1].source_offset + sequential[-1].record.nbytes if sequential else 0
    while index < len(sequential) and pos < stop:
        got = os.preadv(fd, [view[: min(CHUNK, stop - pos)]], pos)
        if got <= 0:
            break
        chunk = view[:got]
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
    if index != len(sequential):
        raise ConversionError(f"{src} changed or ended while it was being converted")
    for item in plan:
        if not item.sequential:
            for piece in _gather(fd, item):
                out.write(piece)
                hashers[id(item)].update(piece)
    for item in plan:
        item.digest = hashers[id(item)].digest()


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
        blocks = _blocks(view)
        try:
            for block in blocks:
                piece = np.ascontiguousarray(block).tobytes()
                del block
                yield piece
                mm.madvise(mmap.MADV_DONTNEED)  # the pages read so far leave the RSS
        finally:
            blocks.close()  # (its frames hold views of the map, which must go before it closes)
            del blocks, raw, view


# A gathered block's output bytes, and the source bytes it may touch (what bounds the RSS: a
# transposed tensor's row touches every page of its storage).
BLOCK_BYTES = CHUNK
BLOCK_SPAN = 16 << 20


def _span(view: Any) -> int:
    """Bytes between the first and the last element of a strided numpy view, inclusive."""
    return view.itemsize + sum(
        (n - 1) * abs(st) for n, st in zip(view.shape, view.strides, strict=True)
    )


def _blocks(view: Any) -> Generator[Any, None, None]:
    """``view`` in C order, as sub-views whose output size and source span are both bounded:
    whole rows while they fit, else rows split further (dimension by dimension)."""
    if view.size == 0:
        return
    if view.ndim == 0 or (view.nbytes <= BLOCK_BYTES and _span(view) <= BLOCK_SPAN):
        yield view
        return
    rows = view.shape[0]
    row = view[0]
    row_span = _span(row)
    if view.ndim > 1 and (row.nbytes > BLOCK_BYTES or row_span > BLOCK_SPAN):
        for i in range(rows):  # a single row is too big or too spread: split inside it
            yield from _blocks(view[i])
        return
    if view.ndim == 1 and row_span > BLOCK_SPAN:
        half = rows // 2  # (cannot happen for one element; keeps the split logarithmic)
        yield from _blocks(view[:half])
        yield from _blocks(view[half:])
        return
    # k rows take k * row.nbytes output bytes and (k - 1) * |stride| + row_span source bytes.
    stride = max(1, abs(view.strides[0]))
    step = max(1, min(BLOCK_BYTES // max(1, row.nbytes), 1 + (BLOCK_SPAN - row_span) // stride))
    for i in range(0, rows, step):
        yield view[i : i + step]


# -- verification -------------------------------------------------------------------------------


def _verify(path: Path, plan: list[_Planned], data_start: int) -> int:
    """Re-read the written file: header as planned, each tensor's bytes as taken from the source."""
    import blake3

    view = memoryview(bytearray(CHUNK))
    with open(path, "rb", buffering=0) as fh:
        size = os.fstat(fh.fileno()).st_size
        length = int.from_bytes(_read_exactly(fh, 8), "little")
        if 8 + length != data_start:
            raise ConversionError("verification failed: the header length changed")
        header = json.loads(_read_exactly(fh, length))
        for item in sorted(plan, key=lambda p: p.out_offset):
            r = item.record
            entry = header.get(r.name)
            want = [item.out_offset, item.out_offset + r.nbytes]
            if entry != {"dtype": r.dtype, "shape": list(r.shape), "data_offsets": want}:
                raise ConversionError(f"verification failed: header entry of {r.name} differs")
            hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
            left = r.nbytes
            fh.seek(data_start + item.out_offset)
            while left:
                got = fh.readinto(view[: min(CHUNK, left)])
                if not got:
                    raise ConversionError(f"verification failed: {r.name} is truncated")
                hasher.update(view[:got])
                left -= got
            if hasher.digest() != item.digest:
                raise ConversionError(f"verification failed: the bytes of {r.name} differ")
        total = data_start + sum(p.record.nbytes for p in plan)
        if size != total:
            raise ConversionError("verification failed: the file size is not what was planned")
    return size


def _verify_header(path: Path, header: bytes) -> None:
    """The final header (with the source's SHA-256), re-read: exactly the bytes meant."""
    with open(path, "rb", buffering=0) as fh:
        if _read_exactly(fh, len(header)) != header:
            raise ConversionError("verification failed: the header differs from what was written")


def _read_exactly(fh: Any, n: int) -> bytes:
    data = b""
    while len(data) < n and (piece := fh.read(n - len(data))):
        data += piece
    return data


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
