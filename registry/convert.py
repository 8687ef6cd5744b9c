"""Convert a torch checkpoint (zip, legacy or pickle) to safetensors without torch and without
executing anything in it.

Tensors are rebuilt from the pickle VM's record (storage key, dtype, shape, stride, offset) of the
audit's own reading of the file (the pickle is parsed once; a file replaced between the first stat
and the audit is refused) and streamed from the source into a temp file beside the destination in
one sequential pass (one reused buffer: read, written, BLAKE3-hashed). The temp file is then
re-read and every tensor compared (BLAKE3 of the bytes written vs the bytes taken from the source);
the final header, which records the source's SHA-256, is written last and re-read byte for byte;
the file is fsynced and atomically renamed over the destination. The source is only ever opened
read-only; on any failure the temp file is removed and the destination is untouched.

For speed (docs/benchmarks.md, "Audit and convert") the work overlaps on two cores: the source's
SHA-256, the slowest part, runs in its own thread over its own reads of the source, beside the copy
and the verification; written data is pushed to disk (fdatasync) during the copy, so the final
fsync has little left. Size, mtime and inode of the source are compared before and after: a source
rewritten meanwhile is an error. The source is read with ``pread`` only, never mapped: one
truncated during the copy is an error, never a SIGBUS.

Shared storages and views: safetensors forbids overlapping tensors, so every state-dict entry
becomes its own tensor with its own copy of its bytes (a non-contiguous view is written
contiguously, gathered block by block through bounded buffers: see :class:`_BlockReader`). Entries
that are exact aliases of another (same storage, offset, shape, stride: tied weights) are listed in
``modelsafe.aliases`` so a loader can re-tie them; no entry is dropped.
"""

from __future__ import annotations

import errno
import gc
import hashlib
import json
import math
import os
import re
import secrets
import stat
import threading
import time
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelsafe.atomic import replacing
from modelsafe.errors import ConversionError, MalformedFileError, UnsafeFileError, UsageError
from modelsafe.registry.formats.safetensors_reader import (
    MAX_HEADER_BYTES,
    parse_header,
    read_header_length,
)
from modelsafe.registry.pickle_vm.tensors import NUMPY_ARRAY_REASON, TensorRecord
from modelsafe.registry.torch_archive import (
    CrcMember,
    KeptRead,
    MemberCrcCheck,
    TorchFile,
    crc32_function,
    crc_members,
    keep_reads,
    read_torch_file,
)
from modelsafe.registry.walk import printable
from modelsafe.types import SAFETENSORS_DTYPES

CHUNK = 8 << 20
# While the copy runs, written data is pushed to disk every this many seconds (fdatasync in a
# thread), so the final fsync, which runs beside the verification, has little left to write.
FLUSH_INTERVAL = 0.05
_SHA_PLACEHOLDER = "0" * 64
_MAX_VALUES_JSON = 64 * 1024
# The zip format versions torch.load reads (caffe2/serialize: kMinSupportedFileFormatVersion to
# kMaxSupportedFileFormatVersion; torch.save writes 3).
_TORCH_ZIP_VERSIONS = range(1, 11)


@dataclass(frozen=True)
class Dropped:
    """An array of the checkpoint that is not in the output, and why."""

    name: str
    reason: str


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
    dropped_tensors: int = 0  # tensors and numpy arrays left out (listed in ``dropped``)
    seconds: float = 0.0
    verified: bool = True
    dropped: tuple[Dropped, ...] = ()
    warnings: tuple[str, ...] = ()
    removed_stale_temps: tuple[str, ...] = ()  # temp files of killed converts, removed first


@dataclass
class _Planned:
    record: TensorRecord
    source_offset: int  # -1: gathered from a strided view
    storage_base: int  # absolute offset of the tensor's storage (or storage view) in the source
    sequential: bool = False  # copied during the sequential pass
    out_offset: int = 0
    digest: bytes = b""
    # the zip member this tensor's bytes are, all of them: its CRC-32 is computed by the copy
    crc_member: CrcMember | None = None


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
    defaulted = dst is None
    if isinstance(dst, str):
        _check_not_folder_syntax(dst)
    dst = Path(dst) if dst is not None else default_destination(src)
    try:
        before = os.stat(src)  # the file the audit will read; the copy must read the same one
    except OSError as exc:
        raise UsageError(
            f"cannot read {src}: {exc.strerror or exc}", hint="check the path"
        ) from exc
    if not src.is_file():
        raise UsageError(f"{src} is not a file", hint="give the path of a .ckpt/.pt/.bin file")
    if defaulted and _same_file(src, dst):
        _refuse_default_onto_source(src, before)
    _check_destination(src, dst, overwrite, defaulted)
    tf = _checked_source(src, before)
    # The checkpoint's records (a few objects per tensor) stay alive to the end, and what the
    # plan, the header and the copy allocate per tensor would set off full passes of the cyclic
    # GC over all of them, again and again (as in the pickle VM, which pauses it too): ~1 s of
    # 6 for 50k tensors. Nothing here makes cycles that matter.
    with _gc_paused():
        return _convert(src, dst, tf, before, started)


def _convert(
    src: Path, dst: Path, tf: TorchFile, before: os.stat_result, started: float
) -> ConvertResult:
    """The conversion of a checked source: see the module's docstring."""
    assert tf.content is not None
    plan = _plan(tf)
    aliases = _aliases(plan)
    header, data_start = _header(tf, plan, aliases)
    _check_header_size(src, header, plan)
    stale = _remove_stale_temps(dst.parent)
    mode, exact = _output_mode(before, dst)
    tmp, fd, lock = _create_temp(dst, mode)
    warnings: list[str] = []
    try:
        with replacing(tmp, dst):  # (renamed over dst at the end, removed on any exception)
            in_hash_thread = _assign_crcs(plan, crc_members(tf))
            with (
                # hashes the source (and takes the CRC-32 of the zip members) beside the copy
                _SourceSha256(src, before, in_hash_thread) as source_sha,
                os.fdopen(fd, "wb") as out,
                _Flusher(out.fileno()) as flusher,
            ):
                out.write(header)
                bad_crcs = _copy(source_sha.fd, src, out, plan, data_start)
                out.flush()
                total = _verify(tmp, plan, data_start)  # every tensor, re-read from the temp file
                sha = source_sha.result()
                warnings += _check_crcs(
                    source_sha.fd, src, tf, plan, (bad_crcs or []) + source_sha.crc_mismatches()
                )
                final = _with_sha(header, sha)
                out.seek(0)
                out.write(final)
                out.flush()
                flusher.start_final_fsync()
                _verify_header(tmp, final)
                flusher.wait()
                _set_mode(out.fileno(), mode, exact)
                source_sha.check_unchanged()
    except BaseException as exc:
        if isinstance(exc, (ConversionError, KeyboardInterrupt)):
            raise
        if isinstance(exc, OSError) and exc.errno == errno.ENAMETOOLONG:
            raise UsageError(
                f"cannot write {dst}: the name is too long for its file system",
                hint="pass a shorter DST",
            ) from exc
        if isinstance(exc, OSError):
            raise ConversionError(
                f"converting {src} failed: {exc.strerror or exc}",
                hint="nothing was written at the destination; check free space and permissions",
            ) from exc
        raise
    finally:
        os.close(lock)  # (after the rename or the unlink: no one saw the temp file unlocked)
    views = tuple(p.record.name for p in plan if p.source_offset < 0)
    dropped = _dropped(tf)
    return ConvertResult(
        source=src,
        destination=dst,
        tensors=len(plan),
        bytes_written=total,
        source_sha256=sha,
        source_format=tf.format,
        aliases=aliases,
        rewritten_views=views,
        dropped_tensors=len(dropped),
        seconds=time.perf_counter() - started,
        dropped=dropped,
        warnings=tuple(warnings),
        removed_stale_temps=stale,
    )


def _dropped(tf: TorchFile) -> tuple[Dropped, ...]:
    """The arrays of the checkpoint that are not in the output: tensors outside the unwrapped
    state_dict, numpy arrays (anywhere)."""
    assert tf.content is not None
    outside = f"outside {tf.content.unwrapped!r} (optimizer or other training state)"
    return tuple(
        [Dropped(name, outside) for name in tf.content.dropped]
        + [Dropped(name or "(root)", NUMPY_ARRAY_REASON) for name in tf.content.numpy_arrays]
    )


# A destination name longer than this many bytes is cut to it in the temp file's name, so that
# ".{name}.{8 hex}.modelsafe-tmp" stays within NAME_MAX (255 bytes on every common file system)
# for a destination name of any length the file system allows.
_TEMP_NAME_KEEP = 150


def _temp_path(dst: Path) -> Path:
    """The temp file beside ``dst``: ``.{dst.name}.{random}.modelsafe-tmp``, with the name cut to
    its first ``_TEMP_NAME_KEEP`` bytes (at a UTF-8 character boundary) when it is longer."""
    raw = os.fsencode(dst.name)
    if len(raw) > _TEMP_NAME_KEEP:
        cut = _TEMP_NAME_KEEP
        while cut > 0 and raw[cut] & 0xC0 == 0x80:  # (not inside a UTF-8 sequence)
            cut -= 1
        raw = raw[:cut]
    return dst.parent / f".{os.fsdecode(raw)}.{secrets.token_hex(4)}.modelsafe-tmp"


# Any convert's temp file (see _temp_path); a name of this shape in a destination folder that no
# running convert holds locked is what a killed convert (SIGKILL, power loss) left behind.
_TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{8}\.modelsafe-tmp", re.DOTALL)


def _flock(fd: int) -> bool | None:
    """An exclusive, non-blocking flock on ``fd``: True taken, False held by another open file
    (a running convert), None when the file system has no locks."""
    try:
        import fcntl
    except ImportError:  # (not POSIX)
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return None
    return True


def _create_temp(dst: Path, mode: int = 0o600) -> tuple[Path, int, int]:
    """A new temp file beside ``dst``, locked (flock) for as long as the convert runs, so that
    another convert's :func:`_remove_stale_temps` leaves it alone: (path, fd to write, fd that
    holds the lock: closed after the rename or the unlink). It is created with ``mode`` (less
    the umask) plus the owner's read and write, which the convert needs to re-read it and which
    :func:`_set_mode` takes back before the rename."""
    for _ in range(8):
        tmp = _temp_path(dst)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode | 0o600)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                raise UsageError(
                    f"cannot write beside {dst}: the name is too long for its file system",
                    hint="pass a shorter DST",
                ) from exc
            raise ConversionError(
                f"cannot create a temp file beside {dst}: {exc.strerror or exc}",
                hint="check that the destination folder exists and is writable",
            ) from exc
        # (between the open and the lock another convert's cleanup may have locked and removed
        # it: then it is not ours to use; try another name)
        if _flock(fd) is not False and _is_at(tmp, fd):
            return tmp, fd, os.dup(fd)  # (the dup keeps the lock once the writer is closed)
        os.close(fd)
    raise ConversionError(
        f"cannot create a temp file beside {dst}: its names keep being taken",
        hint="try again",
    )


def _output_mode(before: os.stat_result, dst: Path) -> tuple[int, bool]:
    """The permission bits the output gets, as ``cp`` gives them: those of the regular file it
    replaces (``--force``), exactly; else the source's, less the umask (a private 0600
    checkpoint never becomes a world-readable copy). ``(bits, exact)``."""
    try:
        old = os.lstat(dst)
    except OSError:
        old = None
    if old is not None and stat.S_ISREG(old.st_mode):
        return old.st_mode & 0o777, True
    return before.st_mode & 0o777, False


def _set_mode(fd: int, mode: int, exact: bool) -> None:
    """Give the finished temp file its permission bits (:func:`_output_mode`): ``mode``, or when
    not ``exact`` what it was created with (``mode`` plus the owner's read and write, less the
    umask) less the owner bits ``mode`` lacks; then flush the change with the file. Best effort
    (a file system without modes): the file keeps at most ``mode`` plus the owner's bits."""
    try:
        os.fchmod(fd, mode if exact else os.fstat(fd).st_mode & mode)
        os.fsync(fd)
    except OSError:
        pass


def _is_at(path: Path, fd: int) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        there = os.lstat(path)
    except OSError:
        return False
    mine = os.fstat(fd)
    return (there.st_dev, there.st_ino) == (mine.st_dev, mine.st_ino)


# A temp file unchanged for this long (seconds) with no lock on it is a killed convert's: a live
# one is written continuously, and its lock may not be seen from another machine (NFS, FUSE).
STALE_AFTER = 15 * 60


def _remove_stale_temps(folder: Path) -> tuple[str, ...]:
    """Remove the temp files of converts that were killed before they could (SIGKILL, a power
    cut): the regular files of ``folder`` named like one (:func:`_temp_path`), unchanged for
    STALE_AFTER seconds, that no running convert holds locked (:func:`_create_temp`). Best
    effort: what cannot be checked is left."""
    removed: list[str] = []
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return ()
    for entry in entries:
        if not entry.name.endswith(".modelsafe-tmp") or not _TEMP_NAME.fullmatch(entry.name):
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            old = now - st.st_mtime >= STALE_AFTER
            if stat.S_ISREG(st.st_mode) and old and _flock(fd) and _is_at(Path(entry.path), fd):
                os.unlink(entry.path)
                removed.append(entry.name)
        except OSError:
            pass
        finally:
            os.close(fd)
    return tuple(sorted(removed))


@contextmanager
def _gc_paused() -> Iterator[None]:
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def _assign_crcs(plan: list[_Planned], members: list[CrcMember]) -> list[CrcMember]:
    """Give each member that is exactly the bytes of one tensor the sequential copy takes (the
    common case: one storage, one tensor) to that tensor, whose copy computes its CRC-32 on the
    main thread, which has time to spare (and keeps the hash thread's core at full speed); the
    others (views, shared storages, tensors left out) are left to the hash thread."""
    by_range = {(m.offset, m.nbytes): m for m in members}
    taken: set[str] = set()
    for item in plan:
        if item.sequential and item.record.nbytes:
            member = by_range.get((item.source_offset, item.record.nbytes))
            if member is not None and member.name not in taken:
                item.crc_member = member
                taken.add(member.name)
    return [m for m in members if m.name not in taken]


def _check_crcs(
    fd: int, src: Path, tf: TorchFile, plan: list[_Planned], bad: list[CrcMember]
) -> list[str]:
    """Refuse a member that fails its CRC-32 and holds bytes of a tensor in the output (a
    bit-rotted or broken download: the bytes are not what was saved, or a checkpoint saved
    without its data: see :func:`_saved_without_data`), naming it and its tensors. One only
    tensors left out read is a warning. ``fd``: the source, open."""
    if not bad:
        return []
    users: dict[str, list[str]] = {}
    for item in plan:
        users.setdefault(item.record.storage.key, []).append(item.record.name)
    for member in bad:
        names = users.get(member.storage)
        if names:
            shown = ", ".join(repr(n) for n in names[:5]) + (
                f" and {len(names) - 5} more" if len(names) > 5 else ""
            )
            if _saved_without_data(fd, member):
                raise ConversionError(
                    f"cannot convert {src}: it was saved without its data "
                    "(torch.serialization.skip_data()): zip member "
                    f"{member.name!r}, the bytes of tensor{'s' if len(names) > 1 else ''} "
                    f"{shown}, is all zeros and records CRC-32 0 in place of its checksum",
                    hint="nothing was written; such a file is a skeleton of the model (its "
                    "tensors are placeholders, not weights): convert the checkpoint that holds "
                    "the trained weights",
                )
            raise ConversionError(
                f"cannot convert {src}: zip member {member.name!r} fails its CRC-32 check: the "
                f"bytes of tensor{'s' if len(names) > 1 else ''} {shown} are not the bytes that "
                "were saved (a corrupt copy: bit rot or a broken download)",
                hint="nothing was written; download or copy the file again (torch.load does not "
                "check CRC-32 and would load the damaged bytes)",
            )
    return [
        f"zip member {m.name!r} fails its CRC-32 check; only tensors left out of the output "
        "read it (the file is damaged)"
        for m in bad
    ]


def _saved_without_data(fd: int, member: CrcMember) -> bool:
    """Whether ``member`` is what ``torch.serialization.skip_data()`` writes: CRC-32 0 recorded
    (no real checksum: that of any non-empty run of zeros is not 0) over bytes all zero."""
    if member.crc != 0 or not member.nbytes:
        return False
    zeros = bytes(min(CHUNK, member.nbytes))
    pos, end = member.offset, member.offset + member.nbytes
    while pos < end:
        piece = os.pread(fd, min(CHUNK, end - pos), pos)
        if not piece or piece != zeros[: len(piece)]:
            return False
        pos += len(piece)
    return True


class _SourceSha256:
    """SHA-256 of the whole source, in a thread that reads the source by itself (``preadv`` into
    one cache-sized buffer), so that it runs beside the copy and the verification on another
    core instead of bounding the copy. The same reads give the CRC-32 of each zip member in
    ``members`` (each stored byte read once, whether the copy takes a member's bytes in one
    pass, gathers them by pieces, or not at all): see :meth:`crc_mismatches`.
    ``check_unchanged`` compares the source's size, mtime and inode with what they were before:
    a source rewritten in between is an error."""

    BUFFER = 1 << 20

    def __init__(
        self, src: Path, before: os.stat_result, members: list[CrcMember] | None = None
    ) -> None:
        self._crcs = MemberCrcCheck(members or [])
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
                chunk = view[:got]
                self._hash.update(chunk)
                self._crcs.update(pos, chunk)
                pos += got
        except BaseException as exc:
            self._error = exc

    def result(self) -> str:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._hash.hexdigest()

    def crc_mismatches(self) -> list[CrcMember]:
        """The members whose bytes do not give the CRC-32 the zip records (after result())."""
        return self._crcs.mismatches()

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


def _check_not_folder_syntax(dst: str) -> None:
    """A DST written as a folder (``newdir/``; pathlib drops the slash) names no file to write:
    refused as ``cp`` refuses it. (An existing folder is :func:`_check_destination`'s error.)"""
    seps = (os.sep, os.altsep) if os.altsep else (os.sep,)
    if not dst.endswith(seps) or os.path.isdir(dst):
        return
    raise UsageError(
        f"cannot write {dst}: not a directory (a name that ends with {os.sep} is a folder's, "
        "and there is no such folder)",
        hint="give the path of the file to write, without the trailing slash",
    )


def _check_destination(src: Path, dst: Path, overwrite: bool, defaulted: bool) -> None:
    """A destination that cannot work, refused before anything is read: a name too long for a
    file name, the source itself, a folder, an existing entry (a link too, even one to nothing)
    without ``overwrite``."""
    size = len(os.fsencode(dst.name))
    try:
        name_max = os.pathconf(dst.parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    if size > name_max:
        raise UsageError(
            f"the destination name is {size} bytes long, more than the {name_max} a file name "
            "can have",
            hint="pass a shorter DST"
            + (" (the default one is SRC's name with .safetensors)" if defaulted else ""),
        )
    try:
        os.lstat(dst)
    except (FileNotFoundError, NotADirectoryError):
        return  # (a folder that is not one is the temp file's error, with its hint)
    except OSError as exc:
        raise UsageError(
            f"cannot use {dst} as the destination: {exc.strerror or exc}",
            hint="pass another DST",
        ) from exc
    if os.path.exists(dst) and os.path.samefile(dst, src):
        raise UsageError("the destination is the source", hint="give another destination")
    if dst.is_dir():
        raise UsageError(f"{dst} is a folder", hint="give the path of the file to write")
    if not overwrite:  # (os.lstat: a link to nothing is an existing entry too)
        dangling = "" if os.path.exists(dst) else " (a link to a file that does not exist)"
        raise UsageError(f"{dst} already exists{dangling}", hint="remove it or pass --force")


def _same_file(src: Path, dst: Path) -> bool:
    try:
        return os.path.exists(dst) and os.path.samefile(dst, src)
    except OSError:
        return False


_FORMAT_NAMES = {
    "torch-zip": "torch checkpoint (zip)",
    "legacy-torch": "legacy torch checkpoint",
    "pickle": "pickle",
}


def _refuse_default_onto_source(src: Path, before: os.stat_result) -> None:
    """SRC already ends in .safetensors, so the default DST (SRC with that suffix) is SRC
    itself: say what the file is instead of "the destination is the source". The checks of the
    source name it (unsafe, a git-lfs pointer, a broken download, already safetensors); one
    that can be converted (a checkpoint saved under a .safetensors name) needs a DST."""
    import shlex

    tf = _checked_source(src, before)
    what = _FORMAT_NAMES.get(tf.format, tf.format)
    other = src.with_name(f"{src.stem}.converted.safetensors")
    raise UsageError(
        f"{src} is a {what} under a .safetensors name, not safetensors; the default DST (SRC "
        "with the .safetensors suffix) is the file itself",
        hint=f"give DST: modelsafe convert {shlex.quote(str(src))} {shlex.quote(str(other))}",
    )


def _checked_source(src: Path, before: os.stat_result) -> TorchFile:
    """The checkpoint as the audit read and judged it, or an error saying why it is refused."""
    from modelsafe.registry.audit import audit_path
    from modelsafe.registry.sniff import read_head, sniff

    with keep_reads() as kept:  # the TorchFile the audit judges is the one converted
        verdict = audit_path(src)
    if verdict.status == "unsafe":
        names = sorted({f.message.split(" ")[0] for f in verdict.findings if f.code == "global"})
        detail = ", ".join(names) if names else verdict.findings[0].message
        raise UnsafeFileError(
            f"refusing to convert {src}: it is unsafe ({detail})",
            hint="run `modelsafe audit` for every finding; get the weights from a trusted source",
        )
    fmt = sniff(read_head(src)).value
    if fmt == "safetensors" and verdict.status == "error":  # (a broken one, whatever its name)
        first = next(f for f in verdict.findings if f.severity == "error")
        raise ConversionError(
            f"cannot convert {src}: it is a safetensors file (nothing to convert), and a broken "
            f"one: {first.message}",
            hint=f"see `modelsafe audit {src}`",
        )
    if fmt == "safetensors":
        raise UsageError(f"{src} is already safetensors", hint="nothing to convert")
    if verdict.status == "error":
        first = next(f for f in verdict.findings if f.severity == "error")
        raise ConversionError(
            f"cannot convert {src}: {first.message}", hint=f"see `modelsafe audit {src}`"
        )
    if fmt not in ("zip", "legacy-torch", "pickle"):
        raise ConversionError(f"cannot convert {src}: {fmt} is not a torch checkpoint")
    tf = _audited_read(src, fmt, kept, before)
    if tf.status != "safe" or tf.content is None:
        raise ConversionError(f"cannot convert {src}: the checkpoint does not read cleanly")
    if tf.format == "torch-zip":
        _check_version_record(src, tf.extra.get("version_record"))
    if tf.content.unsupported:
        count = len(tf.content.unsupported)
        raise ConversionError(
            f"cannot convert {src}: {count} tensor{'s' if count != 1 else ''} of a kind "
            f"modelsafe cannot convert (e.g. {tf.content.unsupported[0]})",
            hint="modelsafe writes only tensors whose stored bytes are what torch.load gives; "
            "load the file with torch.load(weights_only=True) where you trust it and save a "
            "state dict of plain tensors",
        )
    if tf.extra.get("byteorder", "little") != "little" or not tf.extra.get("sys_info", {}).get(
        "little_endian", True
    ):
        raise ConversionError(f"cannot convert {src}: big-endian checkpoints are not supported")
    if any(b.compressed for b in tf.storages.values()):
        raise ConversionError(f"cannot convert {src}: compressed storages are not supported")
    if not tf.content.tensors:
        _refuse_no_tensors(src, tf.content)
    _check_names_and_dtypes(src, tf.content)
    return tf


def _refuse_no_tensors(src: Path, content: Any) -> None:
    """Refuse a checkpoint with nothing to convert, saying where its tensors are when it has
    some outside the state_dict it was unwrapped to (``{"state_dict": {}, "model": {...}}``)."""
    outside = content.dropped
    if not outside:
        raise ConversionError(
            f"cannot convert {src}: it holds no tensors",
            hint="there is nothing to convert: a safetensors file holds tensors only",
        )
    shown = ", ".join(repr(n) for n in outside[:5]) + (
        f" and {len(outside) - 5} more" if len(outside) > 5 else ""
    )
    part = outside[0].split(".")[0]
    raise ConversionError(
        f"cannot convert {src}: its {content.unwrapped!r} holds no tensors; the "
        f"{len(outside)} tensor{'s' if len(outside) > 1 else ''} it has "
        f"{'are' if len(outside) > 1 else 'is'} outside it: {shown}",
        hint="convert converts the state_dict only; where you trust the file, save the part you "
        f"want on its own (torch.save(torch.load(SRC, weights_only=True)[{part!r}], "
        "'part.pt')) and convert that",
    )


def _check_version_record(src: Path, record: str | None) -> None:
    """torch.load refuses a zip checkpoint without a (.data/)version record, or with one it
    cannot parse or does not support: so does convert."""
    if record is None:
        raise ConversionError(
            f"cannot convert {src}: not a torch checkpoint torch can load: no version record",
            hint="torch.load refuses it too; save the weights again with torch.save",
        )
    text = record.strip()
    if not (text.isascii() and text.isdigit()) or int(text) not in _TORCH_ZIP_VERSIONS:
        shown = text if len(text) <= 20 else text[:20] + "..."
        raise ConversionError(
            f"cannot convert {src}: not a torch checkpoint torch can load: its version record "
            f"is {shown!r}, not a version from {_TORCH_ZIP_VERSIONS.start} to "
            f"{_TORCH_ZIP_VERSIONS.stop - 1}",
            hint="torch.load refuses it too; save the weights again with torch.save",
        )


def _audited_read(src: Path, fmt: str, kept: list[KeptRead], before: os.stat_result) -> TorchFile:
    """The TorchFile the audit's torch scanner built from ``src`` and judged: the pickle is parsed
    once. (Read here only when no scanner read it as a torch file: a plugin set without the
    built-in one.) Every read must be of the file stat'ed before the audit, ``before``: one
    replaced or rewritten meanwhile is refused, whatever the audit said of it."""
    identity = (before.st_dev, before.st_ino, before.st_size, before.st_mtime_ns)
    tf = next((read for _, asked, read in kept if asked == fmt), None)
    if tf is None:
        with keep_reads() as kept_here:
            tf = read_torch_file(src, fmt)
        kept = kept + kept_here
    if any(opened != identity for opened, _, _ in kept):
        raise ConversionError(
            f"{src} changed while it was being audited",
            hint="nothing was written; convert it again when nothing is writing it",
        )
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


def _check_header_size(src: Path, header: bytes, plan: list[_Planned]) -> None:
    """Refuse, before anything is written, a header over the format's limit (the safetensors
    library refuses to open such a file): many tensors, or very long names."""
    length = len(header) - 8
    if length <= MAX_HEADER_BYTES:
        return
    names = sum(len(p.record.name.encode("utf-8")) for p in plan)
    raise ConversionError(
        f"cannot convert {src}: its safetensors header would be {length:,} bytes, over the "
        f"{MAX_HEADER_BYTES:,}-byte limit of the format (the safetensors library refuses such "
        f"a file): {len(plan):,} tensors whose names take {names:,} bytes",
        hint="save the tensors under shorter names (or in several files) and convert that",
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


def _header(tf: TorchFile, plan: list[_Planned], aliases: dict[str, str]) -> tuple[bytes, int]:
    """The safetensors header (its length first), with _SHA_PLACEHOLDER for the source's
    SHA-256 (see :func:`_with_sha`), and where the data starts."""
    assert tf.content is not None
    meta: dict[str, str] = {
        "format": "pt",
        "modelsafe.source_name": printable(tf.path.name),  # (not UTF-8: U+FFFD, as in --json)
        "modelsafe.source_format": tf.format,
        "modelsafe.source_sha256": _SHA_PLACEHOLDER,
    }
    kept, omitted = _fitting_values(tf.content.values)
    if kept:
        meta["modelsafe.values"] = _values_json(kept)
    why = dict(tf.content.values_omitted)  # cut or over a count limit, as the walk found them
    for name in tf.content.numpy_arrays:
        why[name or "(root)"] = NUMPY_ARRAY_REASON + ": not converted"
    for name in omitted:
        left = "left out: the values would not fit in the 64 KiB of metadata"
        why[name] = f"{why[name]}; then {left}" if name in why else left
    if why:
        meta["modelsafe.values_omitted"] = _omitted_json(why)
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


def _with_sha(header: bytes, sha: str) -> bytes:
    """``header`` with the source's SHA-256 in place of its placeholder: the same length, and
    the one place it can be (in the JSON every quote inside a string is escaped, so the key,
    quotes and colon below only match the metadata's own key, which comes before any other)."""
    key = b'"modelsafe.source_sha256":"'
    at = header.find(key + _SHA_PLACEHOLDER.encode()) + len(key)
    if at < len(key) or len(sha) != len(_SHA_PLACEHOLDER):
        raise ConversionError("internal error: the header has no place for the SHA-256")
    return header[:at] + sha.encode("ascii") + header[at + len(_SHA_PLACEHOLDER) :]


def _json_safe(value: Any) -> Any:
    """NaN and infinities as text, and text that is not valid Unicode (a lone surrogate, from a
    pickle) with U+FFFD in its place: strict JSON readers (JavaScript, serde) refuse both."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable(str(k)): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _values_json(values: dict[str, Any]) -> str:
    return json.dumps(_json_safe(values), sort_keys=True, default=str, allow_nan=False)


def _fitting_values(values: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The plain values that fit in the metadata (the biggest ones left out first; their keys
    listed), so a long config text never costs ``global_step`` and ``epoch``.

    Linear: the JSON of a dict is ``{`` + its entries joined by ``, `` + ``}``, so its length is
    known from each entry's length (one dump of each), whatever is left out."""
    if not values:
        return {}, []
    sizes = {k: len(_values_json({k: v})) - 2 for k, v in values.items()}  # '"k": v'
    total = 2 + sum(sizes.values()) + 2 * (len(sizes) - 1)
    kept = dict(values)
    omitted: list[str] = []
    for key in sorted(sizes, key=lambda k: (-sizes[k], k)):
        if total <= _MAX_VALUES_JSON:
            break
        del kept[key]
        omitted.append(key)
        total -= sizes[key] + (2 if kept else 0)
    while kept and len(_values_json(kept)) > _MAX_VALUES_JSON:  # (never: the sum is exact)
        key = max(kept, key=lambda k: (sizes[k], k))
        del kept[key]
        omitted.append(key)
    return kept, sorted(omitted)


def _omitted_json(why: dict[str, str]) -> str:
    """``modelsafe.values_omitted``: ``{name: why}``, in at most _MAX_VALUES_JSON (a count of
    the entries that did not fit in it last)."""
    why = _json_safe(why)
    text = json.dumps(why, sort_keys=True)
    if len(text) <= _MAX_VALUES_JSON:
        return text
    shown: dict[str, str] = {}
    size = 2
    for name in sorted(why):
        entry = len(json.dumps({name: why[name]})) + 2
        if size + entry > _MAX_VALUES_JSON - 200:
            break
        shown[name] = why[name]
        size += entry
    shown["(more)"] = f"{len(why) - len(shown)} more entries left out of this list"
    return json.dumps(shown, sort_keys=True)


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


def _copy(fd: int, src: Path, out: Any, plan: list[_Planned], data_start: int) -> list[CrcMember]:
    """One sequential pass over the tensor bytes of ``src``: copy the sequential tensors (each
    chunk read once into one reused buffer, written, and BLAKE3-hashed for the verification,
    and CRC-32'd when the tensor is a whole zip member: see :func:`_assign_crcs`); then gather
    the rest. (The source's SHA-256 is computed beside this, by _SourceSha256, whose descriptor
    ``fd`` this reads too: the file audited is the file copied.) Returns the members whose
    CRC-32 is wrong."""
    import blake3

    crc32 = crc32_function()
    # zero-byte tensors need no bytes: their digest is BLAKE3 of nothing
    sequential = [p for p in plan if p.sequential and p.record.nbytes]
    hashers = {id(p): blake3.blake3() for p in plan}
    crcs = {id(p): 0 for p in sequential if p.crc_member is not None}
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
                if item.crc_member is not None:
                    crcs[id(item)] = crc32(part, crcs[id(item)])
            if item.source_offset + item.record.nbytes <= chunk_end:
                index += 1
                continue
            break
        pos = chunk_end
    if index != len(sequential):
        raise _source_ended(src)
    for item in plan:
        if not item.sequential:
            for piece in _gather(fd, item, src):
                out.write(piece)
                hashers[id(item)].update(piece)
    for item in plan:
        item.digest = hashers[id(item)].digest()
    return [
        p.crc_member
        for p in sequential
        if p.crc_member is not None and crcs[id(p)] != p.crc_member.crc
    ]


def _source_ended(src: Path) -> ConversionError:
    return ConversionError(
        f"{src} ended before its last tensor while it was being converted: it was truncated "
        "or rewritten meanwhile",
        hint="nothing was written at the destination; convert it again when nothing is writing it",
    )


def _pread_exactly(fd: int, view: memoryview, pos: int, src: Path) -> None:
    """Fill ``view`` from the source at ``pos``: a source that ends first is an error (a read
    past the end returns nothing; a mapped page past it would kill the process with SIGBUS)."""
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], pos + done)
        if got <= 0:
            raise _source_ended(src)
        done += got


def _gather(fd: int, item: _Planned, src: Path) -> Iterator[bytes | memoryview]:
    """The bytes of a tensor that is not one contiguous source range, in C order, by pieces.

    Everything is read with ``pread`` (a source truncated meanwhile is an error, never the
    SIGBUS a mapped page past its end would raise), into buffers of bounded size: see
    :class:`_BlockReader`. A piece given is valid until the next one is asked for (the buffers
    are reused): use it (write it, hash it) before going on."""
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
                raise _source_ended(src)
            yield piece
            pos += len(piece)
        return
    if any(st < 0 for st in r.stride):  # (the audit refuses them: torch never makes one)
        raise ConversionError(f"cannot convert {src}: {r.name!r} has a negative stride")
    itemsize = r.itemsize
    # The view's layout over a stand-in for its storage: it is cut into blocks, never read
    # (an address in it minus the stand-in's is an offset from the tensor's first element).
    stand_in = np.zeros(1, dtype=np.dtype(f"V{itemsize}"))
    layout = np.lib.stride_tricks.as_strided(
        stand_in,
        shape=r.shape,
        strides=tuple(st * itemsize for st in r.stride),
        writeable=False,
    )
    reader = _BlockReader(fd, src, stand_in, item.storage_base + r.storage_offset * itemsize)
    yield from reader.pieces(layout, BLOCK_BYTES)


# A gathered block's output bytes; the source bytes read into memory at once, and the most
# preads that fill them (their offsets are listed first): with the output, what bounds the RSS.
BLOCK_BYTES = CHUNK
BLOCK_SPAN = 16 << 20
MAX_READS = 1 << 18
# What one pread (or one slab's copy) costs beside the bytes it copies, in bytes copied in the
# same time (a system call and a loop turn, ~1 us).
READ_COST = 4096
_UNBOUNDED = 1 << 62

# (stride, extent, dim) of each dim of a block that moves, by stride (in bytes)
_Dims = list[tuple[int, int, int]]


def _read_plan(block: Any) -> tuple[_Dims, int, int] | None:
    """How to read ``block`` (a strided numpy view): ``(dims, inner, chunk)``, or None when no
    way fits in memory (then the block is cut smaller).

    ``dims``: the dims that move (extent > 1, stride > 0), by stride. Each pread covers the
    span of the ``inner`` first ones, once per index of the others; the block is read in slabs
    of ``chunk`` indices of its last dim (the one of largest stride), each slab's preads filling
    one buffer of at most MAX_READS preads and BLOCK_SPAN bytes whose elements are then copied
    out. So: ``inner`` = all, one slab: one pread of the whole block ("span": a stepped slice);
    fewer: "runs" (a transposed matrix, k of its rows: a run of k elements per source row);
    several slabs: "slabs" (a tall matrix transposed: its storage read by spans of BLOCK_SPAN,
    not by runs of a few bytes). The cheapest (bytes read, plus READ_COST per pread and per slab)
    is taken. A single element always fits.
    """
    dims = sorted(
        (st, n, d)
        for d, (n, st) in enumerate(zip(block.shape, block.strides, strict=True))
        if n > 1 and st > 0
    )
    if not dims:  # one element (repeated by stride-0 dims, if any)
        return dims, 0, 1
    last_stride, last_n, _ = dims[-1]
    best: tuple[int, int, int] | None = None
    span = block.itemsize  # of the inner dims
    for inner in range(len(dims) + 1):
        if inner:
            st, n, _ = dims[inner - 1]
            span += (n - 1) * st
        if inner < len(dims):  # a pread per index of the outer dims, ``per`` of them per index
            per = math.prod(n for _, n, _ in dims[inner:-1])  # of the last dim
            if per > MAX_READS or per * span > BLOCK_SPAN:
                continue
            chunk = min(last_n, MAX_READS // per, BLOCK_SPAN // (per * span))
            reads, size = per * chunk, span
        else:  # a pread per slab, of its span
            base = span - (last_n - 1) * last_stride  # (the span without the last dim)
            if base > BLOCK_SPAN:
                continue
            chunk = min(last_n, 1 + (BLOCK_SPAN - base) // last_stride)
            reads, size = 1, base + (chunk - 1) * last_stride
        cost = -(-last_n // chunk) * (reads * (READ_COST + size) + READ_COST)
        if best is None or cost < best[0]:
            best = (cost, inner, chunk)
    return None if best is None else (dims, best[1], best[2])


class _BlockReader:
    """Reads one strided tensor from the source by blocks, in C order.

    The view is cut into blocks of at most ``limit`` output bytes (:func:`_blocks`, whatever
    their span); each block is read the cheapest way that fits (:func:`_read_plan`), slab by
    slab: a slab's preads land side by side in one reused buffer, and its elements are copied
    from there to their places in the block's output, in C order, in another. A block no way
    fits is cut again with half the limit, down to one element, which always fits.

    ``first`` is the source offset of the tensor's element 0, ``stand_in`` the array its layout
    was built over.
    """

    def __init__(self, fd: int, src: Path, stand_in: Any, first: int) -> None:
        self.fd, self.src, self.first = fd, src, first
        self.dtype = stand_in.dtype
        self.origin = stand_in.__array_interface__["data"][0]
        self.buffer = bytearray()  # the source bytes read for a slab
        self.output = bytearray()  # the block in C order

    def pieces(self, view: Any, limit: int) -> Iterator[memoryview]:
        for block in _blocks(view, span_limit=_UNBOUNDED, bytes_limit=limit):
            plan = _read_plan(block)
            if plan is None:
                yield from self.pieces(block, min(limit, block.nbytes) // 2)
            else:
                yield self.read(block, *plan)

    def read(self, block: Any, dims: _Dims, inner: int, chunk: int) -> memoryview:
        """``block`` in C order, read as :func:`_read_plan` said."""
        import numpy as np

        if len(self.output) < block.nbytes:
            self.output = bytearray(block.nbytes)
        out = np.ndarray(block.shape, dtype=self.dtype, buffer=self.output)
        if not dims:
            self._fill(block, dims, 0, out)
        else:
            stride, extent, dim = dims[-1]
            for at in range(0, extent, chunk):
                n = min(chunk, extent - at)
                index = tuple(
                    slice(at, at + n) if d == dim else slice(None) for d in range(block.ndim)
                )
                self._fill(block[index], [*dims[:-1], (stride, n, dim)], inner, out[index])
        del out
        return memoryview(self.output)[: block.nbytes]

    def _fill(self, block: Any, dims: _Dims, inner: int, out: Any) -> None:
        """Read ``block``, one pread of the span of its ``inner`` first ``dims`` per index of
        the others, and copy its elements to ``out`` (a view of the same shape)."""
        import numpy as np

        at = self.first + block.__array_interface__["data"][0] - self.origin  # its element 0
        slot = block.itemsize + sum((n - 1) * st for st, n, _ in dims[:inner])
        offsets = np.full(1, at, dtype=np.int64)
        for st, n, _ in dims[inner:]:  # the fastest first: the buffer is filled in that order
            offsets = (offsets[None, :] + (np.arange(n, dtype=np.int64) * st)[:, None]).ravel()
        if len(self.buffer) < slot * len(offsets):
            self.buffer = bytearray(slot * len(offsets))
        filled = memoryview(self.buffer)
        pos = 0
        for start in range(0, len(offsets), 1 << 14):  # (a short list of ints at a time)
            for offset in offsets[start : start + (1 << 14)].tolist():
                got = os.preadv(self.fd, [filled[pos : pos + slot]], offset)
                if got != slot:  # (a short read: the rest, or the error of a source that ended)
                    _pread_exactly(self.fd, filled[pos + got : pos + slot], offset + got, self.src)
                pos += slot
        del filled
        strides = [0] * block.ndim  # (the dims that do not move: 0)
        for st, _, d in dims[:inner]:  # within a slot: as in the source
            strides[d] = st
        step = slot
        for _, n, d in dims[inner:]:  # slot after slot
            strides[d] = step
            step *= n
        taken = np.ndarray(block.shape, dtype=self.dtype, buffer=self.buffer, strides=strides)
        np.copyto(out, taken)


def _span(view: Any) -> int:
    """Bytes between the first and the last element of a strided numpy view, inclusive."""
    return view.itemsize + sum(
        (n - 1) * abs(st) for n, st in zip(view.shape, view.strides, strict=True)
    )


def _blocks(
    view: Any, span_limit: int | None = None, bytes_limit: int | None = None
) -> Generator[Any, None, None]:
    """``view`` in C order, as sub-views whose output size and source span are both bounded
    (by ``bytes_limit`` and ``span_limit``; BLOCK_BYTES and BLOCK_SPAN by default): whole rows
    while they fit, else rows split further (dimension by dimension)."""
    limit = BLOCK_SPAN if span_limit is None else span_limit
    most = BLOCK_BYTES if bytes_limit is None else bytes_limit
    if view.size == 0:
        return
    if view.ndim == 0 or (view.nbytes <= most and _span(view) <= limit):
        yield view
        return
    rows = view.shape[0]
    row = view[0]
    row_span = _span(row)
    if view.ndim > 1 and (row.nbytes > most or row_span > limit):
        for i in range(rows):  # a single row is too big or too spread: split inside it
            yield from _blocks(view[i], span_limit, bytes_limit)
        return
    if view.ndim == 1 and row_span > limit:
        half = rows // 2  # (cannot happen for one element; keeps the split logarithmic)
        yield from _blocks(view[:half], span_limit, bytes_limit)
        yield from _blocks(view[half:], span_limit, bytes_limit)
        return
    # k rows take k * row.nbytes output bytes and (k - 1) * |stride| + row_span source bytes.
    stride = max(1, abs(view.strides[0]))
    step = max(1, min(most // max(1, row.nbytes), 1 + (limit - row_span) // stride))
    for i in range(0, rows, step):
        yield view[i : i + step]


# -- verification -------------------------------------------------------------------------------


def _verify(path: Path, plan: list[_Planned], data_start: int) -> int:
    """Re-read the written file: header as planned (read as strictly as the safetensors library
    reads it: see :func:`_read_back_header`), each tensor's bytes as taken from the source."""
    import blake3

    view = memoryview(bytearray(CHUNK))
    with open(path, "rb", buffering=0) as fh:
        size = os.fstat(fh.fileno()).st_size
        entries = _read_back_header(fh, size, path)
        if len(entries) != len(plan):
            raise ConversionError("verification failed: the header lists other tensors")
        for item in sorted(plan, key=lambda p: p.out_offset):
            r = item.record
            entry = entries.get(r.name)
            want = (r.dtype, r.shape, data_start + item.out_offset, r.nbytes)
            if entry is None or (entry.dtype, entry.shape, entry.offset, entry.nbytes) != want:
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


def _read_back_header(fh: Any, size: int, path: Path) -> dict[str, Any]:
    """The written header's tensor entries by name, parsed by the safetensors reader (its limit
    on the header's length, strict UTF-8: no lone surrogate escape, no duplicate key): a file the
    safetensors library would refuse is never called verified."""
    try:
        length = read_header_length(_read_exactly(fh, 8), size, str(path))
        parsed = parse_header(_read_exactly(fh, length), size, str(path))
    except MalformedFileError as exc:
        raise ConversionError(
            f"verification failed: the file written is not one safetensors reads: {exc.reason}",
            hint="nothing was written at the destination; report this as a bug in modelsafe",
        ) from None
    return {t.name: t for t in parsed.tensors}


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
