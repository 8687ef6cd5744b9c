"""All hashes of a file in one streaming read: sha256, autov1-3, blake3, crc32, content_id.

Every hasher (the ``modelsafe_hashers`` hook's answers: built-ins from
``plugins/builtin/hashers.py`` plus any a third-party plugin adds) sees every byte of the file
once, in order. How the pass runs (measured, docs/benchmarks.md "Hashing"):

- The file is read with ``preadv`` into a few preallocated buffers that stay in the CPU cache,
  never into fresh ``bytes`` objects, and never through ``mmap`` (hashing page-cache pages in
  place ran ~40 % slower than copying them into a cache-hot buffer first, and a file truncated
  under a mapping kills the process with SIGBUS).
- The hashers are split into *lanes*, one thread per CPU (the calling thread is lane 0), balanced
  by each hasher's ``cost`` (SHA-256 = 1.0; see the built-ins). Hashers never move between lanes,
  so each still sees its chunks in order. Reading is split between the lanes too, the lightest
  lanes reading the most, so every core does about the same work.
- A *split* hasher (two streams: sha256 + AutoV3 of a safetensors file, ``sha256_pair.py``) is
  the exception. On two lanes, lane 1 feeds its second stream beside lane 0's first stream over
  the first part of each window, then lane 0 feeds both (interleaved on one core by the C
  extension) over the rest while lane 1 runs the other hashers; the share is re-balanced after
  every window from which lane reached the barrier first. On 3+ lanes each stream gets a lane.
- Lanes step through the file one *window* (``WINDOW_CHUNKS`` x :data:`CHUNK_SIZE`) at a time
  with double buffering: while a lane hashes window k it has already read its part of window
  k + 1; one barrier per window is the only hand-off (no queues, no per-chunk locking; the split
  hasher adds one semaphore per window). Inside a window each lane runs all its hashers over one
  :data:`CHUNK_SIZE` piece before the next, so the piece is hashed from L2 cache. hashlib,
  blake3, ISA-L, the C extension and ``preadv`` release the GIL.
- Small files (under :data:`PARALLEL_MIN_BYTES`) or a single CPU: one lane, no threads.

Memory: ``2 * WINDOW_CHUNKS * CHUNK_SIZE`` (8 MiB) per parallel pass. A hasher gets a
``memoryview`` of a reused buffer: it must copy what it wants to keep past ``update``.

Embedded hashes in a safetensors header (kohya's ``sshs_model_hash``, ``modelspec.hash_sha256``)
are compared with the sha256 of the tensor data computed in the same pass; a mismatch is reported
under the key ``stale_embedded_hashes`` (None when every embedded hash matches or there is none).
A safetensors file also gets :data:`A1111_LORA`, the hash A1111/Forge know it by as a LoRA.
Definitions, and which tools produce the same values: docs/hashes.md.

The same pass checks the CRC-32 of a torch zip checkpoint's tensor storages (``torch.load``
does not: a corrupt copy loads its damaged bytes silently), from the member byte ranges its
reader recorded (``torch_archive.MemberCrcCheck``, the code convert checks them with too); a
mismatch is reported under the key :data:`CORRUPT_MEMBERS` (absent when there is none), which
``inspect`` and ``scan`` show as a warning (:func:`pop_warnings`). So are the runs of zero MiB
before the end of the tensor data (``inspect.ZeroRuns``: pieces an unfinished torrent or download
never wrote), under the key :data:`ZERO_RUNS`, found by one ``memcmp`` per MiB, and a LoRA whose
every up factor is zeros (untrained: it changes nothing), under :data:`UNTRAINED_LORA`.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeGuard

from modelsafe.errors import FileReadError
from modelsafe.plugins.hookspecs import Hasher
from modelsafe.types import Format, TensorIndex

if TYPE_CHECKING:
    from modelsafe.registry.inspect import ZeroRuns
    from modelsafe.registry.torch_archive import MemberCrcCheck

CHUNK_SIZE = 1 << 20
WINDOW_CHUNKS = 4
PARALLEL_MIN_BYTES = 32 << 20
# Lanes (threads) for one pass; None = the CPUs this process may run on.
LANES: int | None = None
# CPU cost of copying a byte from the page cache, relative to SHA-256 of it (measured: 0.15 vs
# 0.53 s/GiB); used to share the reading between lanes.
READ_COST = 0.28
DEFAULT_HASHER_COST = 1.0
HASH_NAMES = ("sha256", "autov1", "autov2", "autov3", "blake3", "crc32", "content_id")
# Civitai's AutoV3 skips the header only when its length is below this (docs/hashes.md).
AUTOV3_HEADER_LIMIT = 16 << 20
EMBEDDED_HASH_KEYS = ("sshs_model_hash", "modelspec.hash_sha256")
# The hash A1111/Forge know a safetensors LoRA by (docs/hashes.md, "A1111's LoRA hash").
A1111_LORA = "a1111_lora"
CORRUPT_MEMBERS = "corrupt_members"
ZERO_RUNS = "zero_runs"
UNTRAINED_LORA = "untrained_lora"
# What the pass found wrong with the file, shown as warnings (:func:`pop_warnings`).
WARNING_KEYS = (CORRUPT_MEMBERS, ZERO_RUNS, UNTRAINED_LORA)
_TENSOR_DATA = "_tensor_data_sha256"
_HAVE_PREADV = hasattr(os, "preadv")


class HeaderSkip:
    """Where the bytes after a safetensors header begin, learnt from the stream itself: the
    first 8 bytes read as a little-endian u64 N; from 8 + N when N < ``limit`` (None: always),
    else from byte 8 (Civitai's AutoV3 rule). ``usable`` is False for a stream shorter than 8
    bytes or one whose header runs past its end."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.prefix = b""
        self.start: int | None = None
        self.end = 0

    def begin(self, offset: int, data: bytes | memoryview) -> int:
        """Index in ``data`` (the chunk at ``offset``) where the suffix begins; ``len(data)``
        when none of it belongs to the suffix. Chunks must come in order."""
        self.end = max(self.end, offset + len(data))
        if self.start is None:
            self.prefix += bytes(data[: max(0, 8 - offset)])
            if len(self.prefix) < 8:
                return len(data)
            length = int.from_bytes(self.prefix[:8], "little")
            skip = self.limit is None or length < self.limit
            self.start = 8 + length if skip else 8
        return min(len(data), max(0, self.start - offset))

    @property
    def usable(self) -> bool:
        return self.start is not None and self.start <= self.end


class TensorDataSha256:
    """sha256 of everything after a safetensors header (8 + N bytes in), whatever N is.

    kohya's ``sshs_model_hash`` and ``modelspec.hash_sha256`` are defined this way; it equals
    AutoV3 whenever the header is shorter than 16 MiB (with ``header_limit``, it *is* AutoV3).
    """

    cost = 1.0

    def __init__(self, name: str = _TENSOR_DATA, header_limit: int | None = None) -> None:
        self.name = name
        self._skip = HeaderSkip(header_limit)
        self._h = hashlib.sha256()

    def update(self, offset: int, data: bytes | memoryview) -> None:
        begin = self._skip.begin(offset, data)
        if begin < len(data):
            self._h.update(data[begin:] if begin else data)

    def hexdigest(self) -> str | None:
        return self._h.hexdigest() if self._skip.usable else None


def _cost(hasher: Hasher) -> float:
    value = getattr(hasher, "cost", DEFAULT_HASHER_COST)
    return float(value) if isinstance(value, int | float) and value >= 0 else DEFAULT_HASHER_COST


def cpu_lanes() -> int:
    """:data:`LANES` if set, else the CPUs this process may run on (its affinity mask)."""
    if LANES:
        return max(1, LANES)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _assign(
    hashers: Sequence[Hasher], base: Sequence[float]
) -> tuple[list[list[Hasher]], list[float]]:
    """Hashers onto lanes that already carry ``base`` loads: largest first, each to the
    lightest lane. Returns every lane's hashers and its final load."""
    groups: list[list[Hasher]] = [[] for _ in base]
    loads = list(base)
    for hasher in sorted(hashers, key=_cost, reverse=True):
        i = loads.index(min(loads))
        groups[i].append(hasher)
        loads[i] += _cost(hasher)
    return groups, loads


class SplitHasher(Hasher, Protocol):
    """A hasher with two streams (e.g. ``sha256_pair.Sha256AutoV3``): ``update`` feeds both,
    ``update_first`` / ``update_second`` one each, so the pass may run them on two lanes.
    ``stream_cost`` is one stream's cost (``cost``: both at once)."""

    stream_cost: float

    def update_first(self, offset: int, data: bytes | memoryview) -> None: ...

    def update_second(self, offset: int, data: bytes | memoryview) -> None: ...


def _is_split(hasher: Hasher) -> TypeGuard[SplitHasher]:
    return all(hasattr(hasher, a) for a in ("update_first", "update_second", "stream_cost"))


@dataclass
class LanePlan:
    """How one parallel pass shares its work between lanes (threads).

    ``groups[i]`` are the hashers lane i runs over every byte. ``split``, when set, is a
    two-stream hasher: over the first ``split_fraction`` of each window lane 0 feeds its first
    stream while lane 1 feeds the second; lane 0 then feeds both (interleaved) over the rest.
    ``loads`` are the lanes' CPU costs per byte (SHA-256 = 1.0), reading excluded.
    """

    groups: list[list[Hasher]]
    loads: list[float]
    split: SplitHasher | None = None
    split_fraction: float = 0.0


def plan_pass(hashers: Sequence[Hasher], lanes: int) -> LanePlan:
    """The lanes of one pass. Hashers are split into at most ``lanes`` groups of about equal cost
    (largest first, each to the lightest group); empty groups are dropped, but there is always at
    least one. A two-stream hasher on 3+ lanes runs its streams on lanes 0 and 1
    side by side; on 2 lanes it runs them side by side for the share of each window that makes
    both lanes equally busy (lane 1 also carrying the other hashers and the reading), and
    interleaved on lane 0 for the rest."""
    split = next((h for h in hashers if _is_split(h)), None)
    if split is None or lanes < 2:
        groups, loads = _assign(hashers, [0.0] * max(1, lanes))
        kept = [i for i, g in enumerate(groups) if g] or [0]
        return LanePlan([groups[i] for i in kept], [loads[i] for i in kept])
    rest = [h for h in hashers if h is not split]
    stream = float(split.stream_cost)
    pair = _cost(split)
    if lanes >= 3:
        groups, loads = _assign(rest, [stream, stream] + [0.0] * (lanes - 2))
        kept = [i for i, g in enumerate(groups) if g or i < 2]
        return LanePlan([groups[i] for i in kept], [loads[i] for i in kept], split, 1.0)
    groups, loads = _assign(rest, [pair, 0.0])
    others0, others1 = loads[0] - pair, loads[1]
    fraction = 1.0 - (others1 + READ_COST - others0) / pair if pair > 0 else 1.0
    fraction = min(1.0, max(0.0, fraction))
    loads = [others0 + fraction * stream + (1 - fraction) * pair, others1 + fraction * stream]
    return LanePlan(groups, loads, split, fraction)


def read_shares(loads: Sequence[float], read_cost: float = READ_COST) -> list[float]:
    """Fractions of each window that each lane reads, so that hashing + reading is as even as
    it can be (water filling: the lightest lanes read first). Sums to 1."""
    if not loads:
        return []
    order = sorted(range(len(loads)), key=lambda i: loads[i])
    level, budget = loads[order[0]], read_cost
    filled = 1
    while filled < len(order) and budget > 0:
        step = (loads[order[filled]] - level) * filled
        if step >= budget:
            break
        budget -= step
        level = loads[order[filled]]
        filled += 1
    level += budget / filled
    raw = [max(0.0, level - load) for load in loads]
    total = sum(raw) or 1.0
    return [r / total for r in raw]


def _pread_full(fd: int, view: memoryview, offset: int) -> int:
    """Fill ``view`` from ``offset``; fewer bytes only at the end of the file."""
    got = 0
    while got < len(view):
        if _HAVE_PREADV:
            n = os.preadv(fd, [view[got:]], offset + got)
        else:  # e.g. Windows: one extra copy
            data = os.pread(fd, len(view) - got, offset + got)
            n = len(data)
            view[got : got + n] = data
        if n <= 0:
            break
        got += n
    return got


class _Pass:
    """One parallel pass: shared buffers, the plan, and the barrier the lanes meet at."""

    def __init__(self, fd: int, plan: LanePlan, chunk: int) -> None:
        self.fd = fd
        self.groups = groups = plan.groups
        self.chunk = chunk
        self.window = chunk * WINDOW_CHUNKS
        self.buffers = [memoryview(bytearray(self.window)) for _ in range(2)]
        self.split = plan.split
        # Bytes at the start of each window where the split hasher's streams run side by side.
        self.split_bytes = (
            self.window
            if plan.split_fraction >= 1.0
            else int(plan.split_fraction * self.window) // 4096 * 4096
        )
        self.second_done = threading.Semaphore(0)
        bounds = [0]
        acc = 0.0
        for share in read_shares(plan.loads)[:-1]:
            acc += share
            bounds.append(min(self.window, int(acc * self.window) // 4096 * 4096))
        bounds.append(self.window)
        self.parts = list(zip(bounds[:-1], bounds[1:], strict=True))
        self.got = [[0] * len(groups) for _ in range(2)]
        # On two lanes the split share is re-balanced after every window from when each lane
        # got to the barrier, so the costs in the plan only need to be about right.
        self.adaptive = self.split is not None and len(groups) == 2
        self.arrived = [0.0] * len(groups)
        self.released = time.perf_counter()
        self.barrier = threading.Barrier(
            len(groups), action=self._rebalance if self.adaptive else None
        )
        self.read_errors: list[OSError | None] = [None, None]
        self.failures: dict[str, str] = {}
        self.total = 0

    def read_part(self, lane: int, window: int) -> None:
        begin, end = self.parts[lane]
        n = 0
        if begin < end:
            try:
                view = self.buffers[window % 2][begin:end]
                n = _pread_full(self.fd, view, window * self.window + begin)
            except OSError as exc:
                self.read_errors[window % 2] = exc
        self.got[window % 2][lane] = n

    def valid(self, window: int) -> int:
        """Bytes of the window that were read: up to the first short part."""
        for (begin, end), n in zip(self.parts, self.got[window % 2], strict=True):
            if n < end - begin:
                return begin + n
        return self.window

    def _feed(
        self,
        name: str,
        update: Callable[[int, memoryview], None],
        window: int,
        begin: int,
        end: int,
    ) -> None:
        """``update`` over bytes [begin, end) of the window, in pieces of at most one chunk."""
        buf = self.buffers[window % 2]
        base = window * self.window
        for start in range(begin, end, self.chunk):
            self._call(name, update, base + start, buf[start : min(end, start + self.chunk)])

    def _call(
        self, name: str, update: Callable[[int, memoryview], None], offset: int, piece: memoryview
    ) -> None:
        if name in self.failures:
            return
        try:
            update(offset, piece)
        except Exception as exc:  # a broken (third-party) hasher loses only its value
            self.failures[name] = f"{type(exc).__name__}: {exc}"

    def lead(self, lane: int, window: int, length: int) -> None:
        """The split hasher's share of the window: its streams side by side on lanes 0 and 1
        up to ``split_bytes``, then both on lane 0 (lane 0 waits for lane 1's part first)."""
        split = self.split
        if split is None or lane > 1:
            return
        side = min(self.split_bytes, length)
        if lane == 1:
            try:
                self._feed(split.name, split.update_second, window, 0, side)
            finally:
                if side < length:
                    self.second_done.release()
            return
        self._feed(split.name, split.update_first, window, 0, side)
        if side < length:
            while not self.second_done.acquire(timeout=0.05):
                if self.barrier.broken:
                    raise threading.BrokenBarrierError
            self._feed(split.name, split.update, window, side, length)

    def hash_window(self, lane: int, window: int, length: int) -> None:
        buf = self.buffers[window % 2]
        base = window * self.window
        hashers = self.groups[lane]
        for start in range(0, length, self.chunk):
            piece = buf[start : min(length, start + self.chunk)]
            for hasher in hashers:
                self._call(hasher.name, hasher.update, base + start, piece)

    def _rebalance(self) -> None:
        """Barrier action (all lanes waiting): move the split share toward the lane that got
        there first. Shifting x bytes from "both on lane 0" to "side by side" takes about
        x * pair-cost off lane 0 relative to lane 1; half the estimated step, at most 1/8
        window per window, keeps it from oscillating. Timing only: any share gives the same
        values."""
        now = max(self.arrived)  # the last lane's arrival: this window's end
        span = max(now - self.released, 1e-6)
        late = self.arrived[0] - self.arrived[1]  # > 0: lane 0 is the busier one
        step = int(0.5 * late / span * self.window)
        step = max(-self.window // 8, min(self.window // 8, step))
        moved = min(self.window, max(0, self.split_bytes + step))
        self.split_bytes = moved // 4096 * 4096
        self.released = now

    def _meet(self, lane: int) -> None:
        self.arrived[lane] = time.perf_counter()
        self.barrier.wait()

    def run_lane(self, lane: int) -> None:
        try:
            self.read_part(lane, 0)
            self._meet(lane)
            window = 0
            while True:
                length = self.valid(window)
                if self.read_errors[window % 2] is not None:
                    return
                more = length == self.window
                self.lead(lane, window, length)
                if more:
                    self.read_part(lane, window + 1)
                self.hash_window(lane, window, length)
                if lane == 0:
                    self.total += length
                self._meet(lane)
                if not more:
                    return
                window += 1
        except threading.BrokenBarrierError:
            return
        except BaseException:
            self.barrier.abort()
            raise


def _stream_parallel(fd: int, plan: LanePlan, chunk: int) -> tuple[int, dict[str, str]]:
    job = _Pass(fd, plan, chunk)
    errors: list[BaseException] = []

    def lane_main(lane: int) -> None:
        try:
            job.run_lane(lane)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=lane_main, args=(i,), name=f"modelsafe-hash-{i}", daemon=True)
        for i in range(1, len(plan.groups))
    ]
    started: list[threading.Thread] = []
    try:
        for thread in threads:
            thread.start()
            started.append(thread)
        job.run_lane(0)
    except BaseException:
        job.barrier.abort()  # lanes already waiting at the barrier must not wait forever
        raise
    finally:
        for thread in started:
            thread.join()
    if errors:
        raise errors[0]
    for error in job.read_errors:
        if error is not None:
            raise error
    return job.total, job.failures


def _stream_serial(fd: int, hashers: Sequence[Hasher], chunk: int) -> tuple[int, dict[str, str]]:
    view = memoryview(bytearray(chunk))
    failures: dict[str, str] = {}
    total = 0
    while n := _pread_full(fd, view, total):
        piece = view[:n]
        for hasher in hashers:
            if hasher.name in failures:
                continue
            try:
                hasher.update(total, piece)
            except Exception as exc:  # a broken (third-party) hasher loses only its value
                failures[hasher.name] = f"{type(exc).__name__}: {exc}"
        total += n
        if n < chunk:
            break
    return total, failures


def stream_hashers(path: Path, hashers: Sequence[Hasher]) -> tuple[int, dict[str, str]]:
    """Read ``path`` once, feeding every hasher; returns (bytes read, {hasher name: error})."""
    chunk = max(1, CHUNK_SIZE)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise FileReadError(
            f"cannot read {path}: {exc.strerror or exc}", hint="check the path and permissions"
        ) from exc
    try:
        size = os.fstat(fd).st_size
        plan = plan_pass(hashers, cpu_lanes())
        if len(plan.groups) > 1 and size >= PARALLEL_MIN_BYTES:
            return _stream_parallel(fd, plan, chunk)
        return _stream_serial(fd, hashers, chunk)
    except OSError as exc:
        raise FileReadError(
            f"cannot read {path}: {exc.strerror or exc}", hint="check the path and permissions"
        ) from exc
    finally:
        os.close(fd)


def collect_hashers(index: TensorIndex | None) -> list[Hasher]:
    """Fresh hashers from every ``modelsafe_hashers`` implementation (first of a name wins)."""
    return [hasher for hasher, _plugin in _collect_hashers(index)]


def _collect_hashers(index: TensorIndex | None) -> list[tuple[Hasher, str]]:
    """(hasher, the plugin that gave it) for every hasher. Something that is not a hasher (no
    ``name``, ``update`` or ``hexdigest``) is recorded as its plugin's failure and left out."""
    from modelsafe.plugin_manager import get_plugin_manager

    pm = get_plugin_manager()
    found: dict[str, tuple[Hasher, str]] = {}
    shadowed: list[tuple[Hasher, str]] = []
    for plugin, result in pm.call_each("modelsafe_hashers", index=index):
        for hasher in result if isinstance(result, (list, tuple)) else [result]:
            name = getattr(hasher, "name", None)
            if not (isinstance(name, str) and name) or not all(
                callable(getattr(hasher, m, None)) for m in ("update", "hexdigest")
            ):
                pm.record_failure(
                    plugin,
                    "modelsafe_hashers",
                    f"returned {type(hasher).__name__} {hasher!r:.60}, not a hasher (one "
                    "needs a name, update() and hexdigest())",
                )
            elif name not in found:
                found[name] = (hasher, plugin)
            elif _is_split(hasher):
                shadowed.append((hasher, plugin))
    # A two-stream hasher whose first name another hasher took still gives its second value.
    for hasher, plugin in shadowed:
        alone = getattr(hasher, "second_alone", None)
        second = alone() if callable(alone) else None
        if second is not None and second.name not in found:
            found[second.name] = (second, plugin)
    return list(found.values())


def _is_safetensors(index: TensorIndex | None) -> bool:
    return index is not None and index.format == Format.SAFETENSORS.value


def _embedded(index: TensorIndex | None) -> dict[str, str]:
    if not _is_safetensors(index):
        return {}
    assert index is not None
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


def _tensor_data_sha256(values: dict[str, str | None], index: TensorIndex | None) -> str | None:
    """sha256 of a safetensors file's bytes after its header (8 + N), whatever N is: AutoV3
    for a header under 16 MiB, else the pass's own stream (taken out of ``values``)."""
    own = values.pop(_TENSOR_DATA, None)
    if not _is_safetensors(index):
        return None
    return own if _needs_own_tensor_hash(index) else values.get("autov3")


def a1111_lora_hash(embedded: dict[str, str], tensor_sha256: str | None) -> str | None:
    """The hash A1111/Forge name a safetensors LoRA by (``NetworkOnDisk.set_hash``), whose
    first 12 hex they write in ``Lora hashes``: the ``sshs_model_hash`` in its metadata, even
    when stale, else kohya's addnet hash (the tensor data's sha256, header always skipped)."""
    return embedded.get("sshs_model_hash") or tensor_sha256


def a1111_lora_of(index: TensorIndex, hashes: dict[str, object]) -> str | None:
    """:func:`a1111_lora_hash` of a safetensors file from its tensor table and the hashes a
    scan recorded (its data is not read again); None when that takes the data (a header of
    16 MiB or more without an ``sshs_model_hash``)."""
    autov3 = hashes.get("autov3")
    data_sha = None if _needs_own_tensor_hash(index) or not isinstance(autov3, str) else autov3
    return a1111_lora_hash(_embedded(index), data_sha)


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
    AutoV3, content_id and the embedded-hash check. Values are lowercase hex or None.

    A hasher that raises (in ``update``, ``hexdigest`` or ``extra_hexdigests``) or gives a value
    that is not a string loses only its own value: it is None, the reason is in
    ``hash_failures``, and the failure is recorded against the plugin that gave the hasher.
    """
    from modelsafe.plugin_manager import get_plugin_manager

    path = Path(path)
    collected = _collect_hashers(index)
    owners = {hasher.name: plugin for hasher, plugin in collected}
    hashers = [hasher for hasher, _plugin in collected]
    embedded = _embedded(index)
    if _is_safetensors(index) and _needs_own_tensor_hash(index):
        hashers.append(TensorDataSha256())  # the embedded check and A1111's LoRA hash need it
    crc_check = _member_crc_check(index)
    zeros = _zero_runs_check(index)
    checks = [c for c in (crc_check, zeros) if c is not None]
    _size, failures = stream_hashers(path, [*hashers, *checks])
    values: dict[str, str | None] = {}
    for h in hashers:
        if h.name in failures:
            values[h.name] = None
            continue
        try:
            values[h.name] = _hex_value(h.hexdigest(), "hexdigest()")
        except Exception as exc:  # a broken (third-party) hasher loses only its value
            values[h.name] = None
            failures[h.name] = f"{type(exc).__name__}: {exc}"
            continue
        extra = getattr(h, "extra_hexdigests", None)  # values the same object computed
        if callable(extra):
            try:
                more = _extra_values(extra())
            except Exception as exc:  # noqa: BLE001 - its own value is kept
                failures[h.name] = f"{type(exc).__name__}: {exc}"
                continue
            for name, value in more.items():
                values.setdefault(name, value)
    pm = get_plugin_manager()
    for name in sorted(failures):
        pm.record_failure(
            owners.get(name, "modelsafe"), "modelsafe_hashers", f"hasher {name}: {failures[name]}"
        )
    sha = values.get("sha256")
    values.setdefault("autov2", sha[:10] if sha else None)
    tensor_sha = _tensor_data_sha256(values, index)
    result: dict[str, str | None] = {name: values.pop(name, None) for name in HASH_NAMES}
    if _is_safetensors(index):
        result[A1111_LORA] = a1111_lora_hash(embedded, tensor_sha)
    result.update(values)
    stale = stale_embedded_hashes(embedded, tensor_sha)
    result["stale_embedded_hashes"] = "; ".join(stale) if stale else None
    if failures:
        result["hash_failures"] = "; ".join(f"{k}: {v}" for k, v in sorted(failures.items()))
    corrupt = _corrupt_members(crc_check, index, failures)
    if corrupt:
        result[CORRUPT_MEMBERS] = corrupt
    if zeros is not None and zeros.name not in failures:
        for key, found in ((ZERO_RUNS, zeros.warning()), (UNTRAINED_LORA, zeros.untrained())):
            if found:
                result[key] = found
    return result


def _zero_runs_check(index: TensorIndex | None) -> ZeroRuns | None:
    """The zero-run check of a file's tensor data, when its tensors were located."""
    if index is None:
        return None
    from modelsafe.registry.inspect import ZeroRuns

    return ZeroRuns.of_index(index)


def _member_crc_check(index: TensorIndex | None) -> MemberCrcCheck | None:
    """The CRC-32 check of a torch zip's storage members, when its reader recorded any."""
    if index is None or index.format != Format.TORCH_ZIP.value:
        return None
    from modelsafe.registry.torch_archive import MemberCrcCheck

    return MemberCrcCheck.of_index(index)


def _corrupt_members(
    check: MemberCrcCheck | None, index: TensorIndex | None, failures: dict[str, str]
) -> str | None:
    if check is None or index is None or check.name in failures:
        return None
    bad = check.mismatches()
    if not bad:
        return None
    from modelsafe.registry.torch_archive import corrupt_members_message

    tensors: dict[str, list[str]] = {}
    for t in index.tensors:
        tensors.setdefault(t.source, []).append(t.name)
    return corrupt_members_message(bad, tensors)


def pop_warnings(hashes: dict[str, str | None]) -> list[str]:
    """What the hashing pass found wrong with the file (a corrupt zip member, zero runs), taken
    out of its hashes to be shown as warnings."""
    return [found for key in WARNING_KEYS if (found := hashes.pop(key, None))]


def folder_warnings(components: dict[str, dict[str, str | None]]) -> list[str]:
    """:func:`pop_warnings` of a folder's model files (their hashes left as they are), each
    prefixed with the file's path in the folder."""
    return [
        f"{rel}: {found}"
        for rel, hashes in sorted(components.items())
        for key in WARNING_KEYS
        if (found := hashes.get(key))
    ]


def _extra_values(more: object) -> dict[str, str | None]:
    if not isinstance(more, dict):
        raise TypeError(f"extra_hexdigests() returned {type(more).__name__}, not a dict")
    return {
        str(name): _hex_value(value, f"extra_hexdigests()[{name!r}]")
        for name, value in more.items()
    }


def _hex_value(value: object, what: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"{what} returned {type(value).__name__} {value!r:.40}, not a string")
