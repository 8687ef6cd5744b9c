"""Read torch checkpoint structure without torch: zip archives, legacy (pre-1.6) files, pickles.

Members are resolved the way ``torch.load`` resolves them (PyTorchFileReader over miniz): the
archive folder is the part before the first ``/`` of the *first* central-directory entry, lookups
are case-insensitive, data offsets come from the central directory's local-header offsets taken
literally. Python's ``zipfile`` reads some archives differently (it forgives a prefix, compares
names exactly); every such disagreement is reported as an ``unsafe`` finding, because a file built
to be read two ways is built to fool a scanner.

Legacy files are five pickles in a row (magic number, protocol, sys info, the object, the storage
keys) followed by each storage as an 8-byte element count and its raw bytes.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from modelsafe.errors import FileReadError, MalformedFileError, UnsupportedFormatError
from modelsafe.registry.pickle_vm.limits import Limits
from modelsafe.registry.pickle_vm.machine import VMResult, run_pickle, search_names
from modelsafe.registry.pickle_vm.symbols import (
    Buffer,
    LargeBytes,
    PersistentRef,
    SymDict,
    SymSet,
    describe,
)
from modelsafe.registry.pickle_vm.tensors import Interpretation, TensorRecord, interpret
from modelsafe.registry.sniff import (
    HEAD_SIZE,
    MODEL_EXTENSIONS,
    check_tar,
    packed_archive,
    sniff,
)
from modelsafe.types import DTYPE_SIZES, Finding, Format, TensorIndex, TensorInfo

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
MAX_MEMBERS = 1_000_000
MAX_PICKLE_BYTES = 1 << 31  # a data.pkl larger than this is refused
BOMB_RATIO = 100
_EOCD = b"PK\x05\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"
_EOCD64 = b"PK\x06\x06"
_CENTRAL = b"PK\x01\x02"
_LOCAL = b"PK\x03\x04"


@dataclass(frozen=True)
class ZipMember:
    """One central-directory entry, with where its data really starts (from the local header)."""

    name: str
    index: int
    method: int
    flags: int
    crc: int
    csize: int
    usize: int
    header_offset: int
    data_offset: int  # -1 when the local header cannot be read
    problem: str = ""  # why torch cannot read this member ("" when it can)


@dataclass(frozen=True)
class StorageBlob:
    """Where one storage's bytes lie in the file."""

    key: str
    offset: int  # absolute file offset of the first byte
    nbytes: int
    member: str = ""  # zip member name ("" for legacy files)
    compressed: bool = False
    crc: int | None = None


@dataclass
class TorchFile:
    """What a torch checkpoint (or plain pickle) holds, read without executing anything."""

    path: Path
    format: str
    findings: list[Finding] = field(default_factory=list)
    vm: VMResult | None = None
    content: Interpretation | None = None
    storages: dict[str, StorageBlob] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    pickle_label: str = ""

    def add(self, severity: str, code: str, message: str, location: str = "") -> None:
        self.findings.append(Finding(severity, code, message, location))

    @property
    def status(self) -> str:
        severities = {f.severity for f in self.findings}
        return "unsafe" if "unsafe" in severities else "error" if "error" in severities else "safe"

    def tensor_offset(self, record: TensorRecord) -> int:
        """Absolute file offset of a contiguous tensor's first byte, or -1."""
        blob = self.storages.get(record.storage.key)
        if blob is None or blob.compressed or not record.contiguous:
            return -1
        view = record.storage.view[1] * record.itemsize if record.storage.view else 0
        return blob.offset + view + record.storage_offset * record.itemsize

    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]


# -- CRC-32 of the storage members --------------------------------------------------------------
# torch's miniz build does not check a member's CRC-32 when it loads a tensor: a corrupt copy (bit
# rot, a broken download) loads its damaged bytes silently. Checking needs every stored byte, so
# it is done where the file is read anyway: the hashing pass and convert's copy.

CRC_MEMBERS = "crc_members"  # TensorIndex.extra key: [[name, offset, nbytes, crc, storage], ...]


@dataclass(frozen=True, slots=True)
class CrcMember:
    """A stored zip member (a tensor storage) and the CRC-32 the zip records for its bytes."""

    name: str
    offset: int  # absolute file offset of its first byte
    nbytes: int
    crc: int
    storage: str  # the storage key (``data/<key>``)


def crc32_function() -> Any:
    """ISA-L's CRC-32 (a dependency: ~25 GB/s, the same values as zlib's, ~7 GB/s), else zlib's."""
    try:
        from isal import isal_zlib

        return isal_zlib.crc32
    except ImportError:  # pragma: no cover - isal is a dependency
        return zlib.crc32


def crc_members(tf: TorchFile) -> list[CrcMember]:
    """The storage members of a zip checkpoint whose bytes are the file's (stored, not deflated),
    by offset."""
    members = [
        CrcMember(blob.member, blob.offset, blob.nbytes, blob.crc, key)
        for key, blob in tf.storages.items()
        if blob.crc is not None and not blob.compressed
    ]
    return sorted(members, key=lambda m: (m.offset, m.nbytes))


class MemberCrcCheck:
    """The CRC-32 of zip members, taken from a file's bytes as they stream past: a hasher (the
    ``Hasher`` protocol) for the one hashing pass, and what convert's source thread feeds. Chunks
    come in order, each byte once, cut anywhere; :meth:`mismatches` are the members whose bytes
    do not give the recorded CRC-32 (or were not all seen)."""

    name = "zip-member-crc32"
    cost = 0.05  # ISA-L CRC-32 over (nearly) every byte: ~16 GB/s on one core, SHA-256 ~2

    def __init__(self, members: list[CrcMember]) -> None:
        self.members = sorted(members, key=lambda m: (m.offset, m.nbytes))
        self._crcs = [0] * len(self.members)
        self._first = 0  # members before this one end before the bytes seen so far
        self._end = 0
        self._crc32 = crc32_function()

    @classmethod
    def of_index(cls, index: TensorIndex) -> MemberCrcCheck | None:
        """The check for the members :func:`build_index` recorded; None when there are none."""
        rows = index.extra.get(CRC_MEMBERS) or []
        members = [CrcMember(str(n), int(o), int(b), int(c), str(s)) for n, o, b, c, s in rows]
        return cls(members) if members else None

    def update(self, offset: int, data: bytes | memoryview) -> None:
        members, crcs, crc32 = self.members, self._crcs, self._crc32
        end = offset + len(data)
        index = self._first
        while index < len(members) and members[index].offset < end:
            m = members[index]
            if m.offset + m.nbytes > offset:
                begin = max(m.offset, offset)
                stop = min(m.offset + m.nbytes, end)
                crcs[index] = crc32(data[begin - offset : stop - offset], crcs[index])
            index += 1
        while self._first < len(members) and (
            members[self._first].offset + members[self._first].nbytes <= end
        ):
            self._first += 1
        self._end = max(self._end, end)

    def hexdigest(self) -> str | None:
        return None  # (not a hash: see mismatches)

    def mismatches(self) -> list[CrcMember]:
        return [
            m
            for m, crc in zip(self.members, self._crcs, strict=True)
            if crc != m.crc or m.offset + m.nbytes > self._end
        ]


def corrupt_members_message(bad: list[CrcMember], tensors: dict[str, list[str]]) -> str:
    """What a user is told of members that fail their CRC-32; ``tensors``: member name -> the
    tensors read from it."""
    shown = []
    for m in bad[:3]:
        names = tensors.get(m.name) or []
        used = f" (tensor {names[0]!r}{f' and {len(names) - 1} more' if len(names) > 1 else ''})"
        shown.append(f"{m.name!r}{used if names else ''}")
    more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
    which = (
        f"zip member {shown[0]} fails its CRC-32 check"
        if len(bad) == 1
        else f"{len(bad)} zip members fail their CRC-32 check: {', '.join(shown)}{more}"
    )
    return (
        f"{which}: a corrupt copy (bit rot or a broken download): torch would load the damaged "
        "bytes; download it again"
    )


@contextmanager
def _mapped(path: Path, opened: list[os.stat_result] | None = None) -> Iterator[Any]:
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            if opened is not None:
                opened.append(st)
            size = st.st_size
            if size == 0:
                yield b""
                return
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            try:
                yield mm
            finally:
                try:
                    mm.close()
                except BufferError:
                    pass  # a memoryview of a window still points into it: the GC unmaps it
    except OSError as exc:
        raise FileReadError(f"cannot read {path}: {exc.strerror or exc}") from exc


def read_torch_file(path: Path | str, fmt: str, window: tuple[int, int] | None = None) -> TorchFile:
    """Read ``path`` as the sniffed ``fmt`` (zip, legacy-torch or pickle); never executes it.

    ``window`` = (start, size) reads only those bytes of the file, as if they were a file of
    their own (a member stored in a tar archive). Problems are findings on the result; only an
    unreadable path raises FileReadError.
    """
    path = Path(path)
    kept = _KEPT.get() if window is None else None
    opened: list[os.stat_result] = []
    with _mapped(path, opened) as mapped:
        data = mapped
        if window is not None:
            start, length = window
            data = memoryview(mapped)[start : start + length] if length else b""
        tf = read_torch_data(path, fmt, data)
    if kept is not None:
        st = opened[0]
        kept.append(((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns), fmt, tf))
    return tf


# (file identity (st_dev, st_ino, st_size, st_mtime_ns) when opened, fmt asked for, what was read)
KeptRead = tuple[tuple[int, int, int, int], str, TorchFile]
_KEPT: ContextVar[list[KeptRead] | None] = ContextVar("modelsafe_kept_reads", default=None)


@contextmanager
def keep_reads() -> Iterator[list[KeptRead]]:
    """Every whole file :func:`read_torch_file` reads inside the block, in this thread or task
    only, with the identity of the file it opened: convert audits a file, then takes the very
    TorchFile the audit judged instead of parsing the pickle a second time."""
    kept: list[KeptRead] = []
    token = _KEPT.set(kept)
    try:
        yield kept
    finally:
        _KEPT.reset(token)


def read_torch_data(path: Path, fmt: str, data: Any) -> TorchFile:
    """:func:`read_torch_file` on bytes already in memory (``path`` only names them)."""
    if fmt == "zip":
        out, reader = TorchFile(path, "torch-zip"), _read_zip
    elif (
        fmt == "legacy-torch"
        or (fmt == "pickle" and _starts_like_legacy(data))
        or _shaped_like_legacy(data)
    ):
        out, reader = TorchFile(path, "legacy-torch"), _read_legacy
    else:
        out, reader = TorchFile(path, "pickle"), _read_plain_pickle
    if not bytes(data[:4]) == _LOCAL:  # torch.load tries the tar format on anything else
        check_tar(out.findings, data)
    try:
        reader(out, data)
    except Exception as exc:  # noqa: BLE001 - keep what was found before the failure
        out.add(
            "error",
            "reader-failed",
            f"modelsafe could not finish reading the file ({type(exc).__name__})",
        )
    return out


# The legacy-shape probe reads two header pickles of a few opcodes each: a small budget and no
# scan after a stop, so that a plain pickle (a .pkl.gz of 240 MiB) is not run through twice.
_SHAPE_PROBE = Limits(max_opcodes=4096)


def _shaped_like_legacy(data: Any) -> bool:
    """An int pickle followed by a 1001 pickle, each read within :data:`_SHAPE_PROBE`: a legacy
    file, whatever its magic says. A longer first pickle (one padded past a limit) is read as a
    plain pickle: what follows its STOP is ``trailing-data``, and every pickle there is run."""
    first = run_pickle(data, 0, limits=_SHAPE_PROBE, label="probe", scan=False)
    if not first.completed or not isinstance(first.root, int) or first.end >= len(data):
        return False
    second = run_pickle(data, first.end, limits=_SHAPE_PROBE, label="probe", scan=False)
    return second.completed and second.root == LEGACY_PROTOCOL


# -- zip ----------------------------------------------------------------------------------------


def _read_zip(out: TorchFile, data: Any) -> TorchFile:
    members = _zip_members(out, data)
    if members is None:
        return out
    if not members:
        out.add("error", "not-a-checkpoint", "the zip archive is empty")
        return out
    pt2 = _pt2_folder(data, members)
    if pt2 is None and _packs_files(data, members):
        what = packed_archive(_zip_holding(members))
        out.extra["packed_archive"] = what
        out.add("error", f"not-a-model:{what.code}", f"{what.reason}; {what.hint}")
        return out
    first = members[0].name
    if "/" not in first:
        out.add(
            "error",
            "not-a-checkpoint",
            f"a zip archive whose first member {first!r} is not in a folder: not a torch "
            "checkpoint (torch.load refuses it)",
        )
        return out
    folder = first.split("/", 1)[0] + "/"
    out.extra["archive_folder"] = folder[:-1]
    lookup: dict[str, ZipMember] = {}
    for m in members:
        lowered = m.name.lower()
        if lowered in lookup:
            same = lookup[lowered].name == m.name
            out.add(
                "unsafe",
                "duplicate-member" if same else "case-collision",
                f"zip members {lookup[lowered].name!r} and {m.name!r} "
                + ("have the same name" if same else "differ only in case")
                + ": torch (case-insensitive binary search) and zipfile pick different ones",
                f"zip entry {m.index}",
            )
            continue
        lookup[lowered] = m
        if not m.name.lower().startswith(folder.lower()):
            out.add(
                "unsafe",
                "outside-member",
                f"zip member {m.name!r} is outside the archive folder {folder!r} that torch "
                "reads: another loader may read it instead",
                f"zip entry {m.index}",
            )

    def member(rel: str) -> ZipMember | None:
        return lookup.get((folder + rel).lower())

    if member("constants.pkl") is not None or any(
        m.name.lower().startswith((folder + "code/").lower()) for m in members
    ):
        out.add(
            "unsafe",
            "torchscript",
            "a TorchScript archive (constants.pkl / code/): torch.load hands it to "
            "torch.jit.load, which runs the code it contains",
        )
    pkl = member("data.pkl")
    if pt2 is not None:
        _audit_pt2(out, data, members, pt2, pkl)
        if pkl is None:  # (torch.load refuses it: torch.export.load is its loader)
            return out
    if pkl is None:
        out.add(
            "error",
            "not-a-checkpoint",
            f"the zip has no {folder}data.pkl: not a torch checkpoint",
        )
        return out
    if pkl.name != folder + "data.pkl":
        out.add("unsafe", "case-collision", f"the pickle member is spelled {pkl.name!r}")
    pickle_bytes = _member_bytes(out, data, pkl)
    if pickle_bytes is None:
        return out
    out.pickle_label = pkl.name
    _run_main_pickle(out, pickle_bytes, pkl.name, base=pkl.data_offset, end=len(pickle_bytes))
    for m in members:
        rel = m.name[len(folder) :] if m.name.lower().startswith(folder.lower()) else m.name
        if m is not pkl and m.name.lower().endswith(".pkl") and rel.lower() != "constants.pkl":
            extra = _member_bytes(out, data, m)
            if extra is not None:
                second = run_pickle(extra, label=m.name, base=m.data_offset)
                out.findings.extend(f for f in second.findings if f.severity == "unsafe")
                out.add(
                    "unsafe",
                    "second-pickle",
                    f"a second pickle member {m.name!r} that torch.load does not read",
                )
    byteorder = member("byteorder")
    if byteorder is not None:
        order = _member_bytes(out, data, byteorder)
        out.extra["byteorder"] = (order or b"").decode("ascii", "replace")
    # torch reads the format version from .data/version, else from version, and refuses an
    # archive with neither (or one it cannot parse): kept for convert, which refuses it too.
    version = member(".data/version") or member("version")
    if version is None:
        out.extra["version_record"] = None
    elif version.usize > 64:  # (a number: never this long)
        out.extra["version_record"] = f"<{version.usize} bytes>"
    else:
        text = _member_bytes(out, data, version)
        out.extra["version_record"] = (text or b"").decode("ascii", "replace")
    _resolve_zip_storages(out, member)
    return out


# -- torch.export archives (.pt2) ---------------------------------------------------------------
# torch.export.save writes a zip whose ``<folder>/archive_format`` record says ``pt2``.
# torch.export.load unpickles members that torch.load never names: each weight and tensor
# constant its payload config marks ``use_pickle`` (torch.load, weights_only=False), every
# ``opaque_obj_*`` constant (pickle.loads) and ``custom_obj_*`` one (torch's own unpickler), the
# sample inputs and legacy ``<model>.pt`` weights (torch.load, falling back to
# weights_only=False). Each is audited as a file of its own (:func:`read_torch_data`).

PT2_FORMAT = b"pt2"
_PT2_CONFIG_DIRS = ("data/weights/", "data/constants/")
_PT2_PICKLED_PREFIXES = ("opaque_obj_", "custom_obj_")
_NATIVE_SUFFIXES = (".so", ".dll", ".dylib", ".pyd")
_TORCH_READABLE = frozenset({Format.ZIP.value, Format.LEGACY_TORCH.value})


def _pt2_folder(data: Any, members: list[ZipMember]) -> str | None:
    """The archive folder (``name/``) of a torch.export archive, None for any other zip: its
    ``archive_format`` record says ``pt2``, which torch.export.load requires."""
    first = members[0].name
    if "/" not in first:
        return None
    folder = first.split("/", 1)[0] + "/"
    wanted = (folder + "archive_format").lower()
    record = next((m for m in members if m.name.lower() == wanted), None)
    if record is None or record.usize != len(PT2_FORMAT) or record.problem:
        return None
    return folder if _member_head(data, record, len(PT2_FORMAT)) == PT2_FORMAT else None


def _audit_pt2(
    out: TorchFile, data: Any, members: list[ZipMember], folder: str, pkl: ZipMember | None
) -> None:
    """Audit every member torch.export.load may unpickle, as a file of its own: its findings,
    located in the member. Then say what the archive is: its program (``models/*.json``) is
    rebuilt by torch.export.load, which evaluates its symbolic-shape expressions with
    ``sympy.sympify`` (Python ``eval``); modelsafe does not audit that part."""
    out.extra["torch_export"] = True
    marked = _pt2_marked(out, data, members, folder)
    audited = 0
    for m in members:
        if m is pkl or m.problem or m.name.endswith("/"):
            continue
        if pkl is not None and m.name.lower().endswith(".pkl"):
            continue  # (a second pickle beside data.pkl: audited with the checkpoint)
        rel = m.name[len(folder) :].lower() if m.name.lower().startswith(folder.lower()) else ""
        head = _member_head(data, m, HEAD_SIZE)
        if rel.endswith(_NATIVE_SUFFIXES) or head.startswith(b"\x7fELF"):
            out.add(
                "unsafe",
                "native-code",
                f"a compiled library in a torch.export archive ({m.name!r}): AOTInductor loads "
                "it, and native code runs as it is loaded",
                m.name,
            )
            continue
        fmt = sniff(head).value
        named = _pt2_pickled(rel, marked)
        if named or fmt in _TORCH_READABLE:
            _audit_member(out, data, m, fmt if fmt in _TORCH_READABLE else Format.PICKLE.value)
            audited += 1
        elif fmt == Format.PICKLE.value and not rel.startswith(_PT2_CONFIG_DIRS):
            # (only looks like one: a loader that does not name it may still unpickle it)
            _audit_member(out, data, m, fmt, only_unsafe=True)
            audited += 1
    out.add(
        "error",
        "torch-export",
        f"a torch.export program archive (torch.export.save; {len(members)} members, {audited} "
        "that a loader unpickles audited): not a state dict, so inspect and convert do not take "
        f"it; torch.export.load also rebuilds the program from {folder}models/*.json, evaluating "
        "its symbolic-shape expressions with sympy.sympify (Python eval), which modelsafe does "
        "not audit: load it only from a source you trust",
    )


def _pt2_pickled(rel: str, marked: set[str] | None) -> bool:
    """Whether torch.export.load unpickles the member ``rel`` (relative, lower case) by its
    name: an opaque or custom object, a ``data/**.pt`` file, one its config marks
    ``use_pickle`` (every member beside a config that cannot be read: ``marked`` None)."""
    if rel.rsplit("/", 1)[-1].startswith(_PT2_PICKLED_PREFIXES):
        return True
    if rel.startswith("data/") and rel.endswith(".pt"):
        return True
    if marked is None:
        return rel.startswith(_PT2_CONFIG_DIRS) and not rel.endswith(".json")
    return rel in marked


def _pt2_marked(
    out: TorchFile, data: Any, members: list[ZipMember], folder: str
) -> set[str] | None:
    """The members (relative to ``folder``, lower case) the weights and constants configs mark
    ``use_pickle``; None when a config is not what torch.export writes (JSON of
    ``{"config": {fqn: {"path_name": name, "use_pickle": bool}}}`` with plain names)."""
    marked: set[str] = set()
    for m in members:
        rel = m.name[len(folder) :].lower() if m.name.lower().startswith(folder.lower()) else ""
        if not (rel.startswith(_PT2_CONFIG_DIRS) and rel.endswith(".json")):
            continue
        where = rel.rsplit("/", 1)[0] + "/"
        raw = _member_bytes(out, data, m) if m.usize <= _PT2_CONFIG_BYTES else None
        try:
            entries = json.loads(raw or b"")["config"].values()
            for entry in entries:
                name = entry["path_name"]
                if entry.get("use_pickle") is not False:
                    if not isinstance(name, str) or "/" in name or "\\" in name:
                        return None
                    marked.add(where + name.lower())
        except Exception:  # noqa: BLE001 - not torch.export's shape: every member counts
            return None
    return marked


_PT2_CONFIG_BYTES = 64 << 20  # a payload config larger than this is not read (all members count)


def _audit_member(
    out: TorchFile, data: Any, m: ZipMember, fmt: str, only_unsafe: bool = False
) -> None:
    """Audit member ``m`` as a file of its own read as ``fmt``; its findings, located in it."""
    content = _member_bytes(out, data, m)
    if content is None:
        return
    inner = read_torch_data(out.path, fmt, content)
    out.findings.extend(
        replace(f, location=f"{m.name}: {f.location}".rstrip(": "))
        for f in inner.findings
        if f.severity == "unsafe" or not only_unsafe
    )


_MAX_PACKED_MEMBERS = 1000  # members sniffed to tell a packed archive from a checkpoint
_LOADABLE = frozenset({Format.PICKLE.value, Format.LEGACY_TORCH.value, Format.NUMPY.value})


def _packs_files(data: Any, members: list[ZipMember]) -> bool:
    """Whether a zip is model files packed for transport (``mylora/mylora.safetensors`` and a
    README, Civitai's flat zips), not a checkpoint: no member a loader unpickles (by its name,
    ``*.pkl``, or by its first bytes: a pickle, a legacy torch file, a ``.npy``) and none torch
    cannot read. torch.load refuses such a zip (no data.pkl, no version record); anything that
    could hold a pickle keeps the checkpoint checks (a pickle outside the archive folder)."""
    if len(members) > _MAX_PACKED_MEMBERS:
        return False
    for m in members:
        if m.problem or m.name.lower().endswith((".pkl", ".pickle")):
            return False
        if m.usize and sniff(_member_head(data, m)).value in _LOADABLE:
            return False
    return True


def _member_head(data: Any, m: ZipMember, size: int = 4096) -> bytes:
    """The first ``size`` bytes of a member's content (inflated when deflated), or b""."""
    if m.method not in (0, 8) or m.data_offset < 0:
        return b""
    read = size if m.method == 0 else 1 << 20  # (deflated: enough to inflate ``size`` bytes)
    raw = bytes(data[m.data_offset : m.data_offset + min(m.csize, read)])
    if m.method == 0:
        return raw
    try:
        return zlib.decompressobj(-15).decompress(raw, size)
    except zlib.error:
        return b""


def _zip_holding(members: list[ZipMember]) -> str:
    """``a zip archive holding mylora/mylora.safetensors (2 members)``: model files named first."""
    names = [m.name for m in members if not m.name.endswith("/")]
    models = [n for n in names if Path(n).suffix.lower() in MODEL_EXTENSIONS]
    shown = (models or names)[:3]
    listed = ", ".join(shown) + (", ..." if len(models or names) > 3 else "")
    return f"a zip archive holding {listed or 'only folders'} ({len(members)} members)"


def _resolve_zip_storages(out: TorchFile, member: Any) -> None:
    if out.content is None:
        return
    for key, ref in out.content.storages.items():
        m = member(f"data/{key}")
        if m is None:
            out.add("error", "missing-storage", f"storage {key!r} has no member data/{key}")
            continue
        if m.problem:  # torch cannot read it (already a finding)
            continue
        size = ref.numel * (int(DTYPE_SIZES[ref.dtype]) if ref.dtype else 1)
        if m.usize != size:
            out.add(
                "error",
                "storage-size",
                f"member {m.name!r} holds {m.usize} bytes, the pickle says {size}",
            )
            continue
        out.storages[key] = StorageBlob(
            key, m.data_offset, size, m.name, compressed=m.method != 0, crc=m.crc
        )


def _member_bytes(out: TorchFile, data: Any, m: ZipMember) -> bytes | None:
    """The bytes torch reads for ``m`` (None, with a finding, when torch cannot read them or they
    are too large). The CRC-32 is not checked by torch's miniz build: a mismatch is a finding,
    and the bytes are still returned, to be audited as torch would read them."""
    if m.problem:  # (reported when the member was read from the central directory)
        return None
    shown = (
        f"only its first {MEMBER_PREFIX >> 20} MiB are audited (torch reads a pickle up to STOP)"
    )
    if m.usize > MAX_PICKLE_BYTES:
        out.add(
            "error",
            "limit",
            f"member {m.name!r} is larger than modelsafe reads ({m.usize} bytes): {shown}",
        )
        return _member_prefix(out, data, m)
    if m.method == 8 and m.usize > max(1 << 26, BOMB_RATIO * m.csize):
        out.add(
            "error",
            "zip-bomb",
            f"member {m.name!r} claims to inflate to {m.usize} bytes: {shown}",
        )
        return _member_prefix(out, data, m)
    raw = data[m.data_offset : m.data_offset + m.csize]
    if m.method == 8:
        inflater = zlib.decompressobj(-15)
        try:
            raw = inflater.decompress(raw, m.usize + 1)
        except zlib.error as exc:
            out.add("error", "bad-member", f"member {m.name!r} does not inflate: {exc}")
            return None
    if len(raw) != m.usize:
        out.add("error", "bad-member", f"member {m.name!r} is not {m.usize} bytes long")
        return None
    if zlib.crc32(raw) != m.crc:
        out.add(
            "error",
            "crc",
            f"member {m.name!r} fails its CRC-32 check (corrupt file; torch does not check it "
            "and reads the bytes anyway, zipfile refuses them): audited as torch reads it",
        )
    return bytes(raw)


# What is audited of a member too large to read whole (a zip bomb's data.pkl: a pickle, then
# gigabytes of zeros it inflates to): its first bytes, inflated a piece at a time.
MEMBER_PREFIX = 1 << 26
_INFLATE_CHUNK = 1 << 20


def _member_prefix(out: TorchFile, data: Any, m: ZipMember) -> bytes | None:
    """The first :data:`MEMBER_PREFIX` bytes of ``m``'s content (no size or CRC check: the rest
    is never read); None, with a finding, when they do not inflate."""
    start, end = m.data_offset, m.data_offset + m.csize
    if m.method == 0:
        return bytes(data[start : min(end, start + MEMBER_PREFIX)])
    inflater = zlib.decompressobj(-15)
    parts: list[bytes] = []
    left = MEMBER_PREFIX
    pending = b""
    try:
        while left > 0 and not inflater.eof:
            if not pending:
                if start >= end:
                    break
                pending = bytes(data[start : min(start + _INFLATE_CHUNK, end)])
                start += len(pending)
            part = inflater.decompress(pending, left)
            pending = inflater.unconsumed_tail
            parts.append(part)
            left -= len(part)
    except zlib.error as exc:
        out.add("error", "bad-member", f"member {m.name!r} does not inflate: {exc}")
        return None
    return b"".join(parts)


def _find_eocd(data: Any) -> int:
    """Where torch's miniz finds the end record (``mz_zip_reader_locate_header_sig``): the last
    signature with a whole 22-byte record after it, searched backwards 4 KiB at a time until
    64 KiB + 22 bytes from the end; -1 when there is none."""
    size = len(data)
    if size < 22:
        return -1
    cur = max(size - 4096, 0)
    while True:
        end = min(cur + 4096, size - 18)  # a signature at p needs p + 22 <= size
        found = bytes(data[cur:end]).rfind(_EOCD) if end > cur else -1
        if found >= 0:
            return cur + found
        if cur == 0 or size - cur >= 0xFFFF + 22:
            return -1
        cur = max(cur - 4093, 0)


def _find(data: Any, sub: bytes, start: int, end: int) -> int:
    """``data.find(sub, start, end)`` for bytes, mmaps and memoryviews (searched 1 MiB at once)."""
    if hasattr(data, "find"):
        return int(data.find(sub, start, end))
    pos = start
    while pos < end:
        stop = min(pos + (1 << 20) + len(sub) - 1, end)
        hit = bytes(data[pos:stop]).find(sub)
        if hit >= 0:
            return pos + hit
        pos += 1 << 20
    return -1


# A finding on bytes a download never wrote: zeros where the archive's records or a legacy
# storage should be (a file preallocated at full size by aria2, IDM or a torrent client, whose
# download stopped). Only a long run counts at the end of a file, where a cut-short file ends
# in whatever bytes it had.
UNWRITTEN = "unwritten"
UNWRITTEN_MIN = 64 << 10  # zeros ending a zip without its end record (miniz looks 64 KiB back)
_ZERO_TAIL_LIMIT = 64 << 20  # zeros read back from the end of a file, at most


def _zero_tail(data: Any, limit: int = _ZERO_TAIL_LIMIT) -> int:
    """How many bytes at the end of ``data`` are zeros (read backwards, at most ``limit``)."""
    size = len(data)
    run = 0
    step = 64 << 10
    while run < min(limit, size):
        begin = max(0, size - run - step)
        chunk = bytes(data[begin : size - run])
        kept = len(chunk.rstrip(b"\x00"))
        if kept:
            return run + len(chunk) - kept
        run += len(chunk)
        step = 1 << 20
    return min(run, limit)


def _amount(zeros: int) -> str:
    """``zeros`` bytes in words, ``or more`` where :func:`_zero_tail` stopped counting."""
    from modelsafe.units import format_size

    return format_size(zeros) + (" or more" if zeros >= _ZERO_TAIL_LIMIT else "")


def _zeros_at(data: Any, pos: int, length: int = 4096) -> bool:
    """Whether the ``length`` bytes at ``pos`` (fewer at the end of the file; at least one)
    are all zeros, read 1 MiB at a time up to the first that is not."""
    end = min(pos + length, len(data))
    step = 1 << 20
    return end > pos and all(
        not bytes(data[at : min(at + step, end)]).strip(b"\x00") for at in range(pos, end, step)
    )


def _zip_end(out: TorchFile, data: Any) -> tuple[int, int, int, int, int] | None:
    """(entries, central directory size, its offset, where the records after it start) as torch's
    miniz reads them (``mz_zip_reader_read_central_dir``), and how many bytes later ``zipfile``
    reads the archive (it shifts every offset by the bytes between the central directory and
    its end records; miniz reads the offsets as they are). Where zipfile reads the end records
    differently (another end record, another zip64 record), an ``unsafe`` finding."""
    size = len(data)
    eocd = _find_eocd(data)
    if eocd < 0:
        zeros = _zero_tail(data)
        if zeros >= UNWRITTEN_MIN:
            out.add(
                "error",
                UNWRITTEN,
                f"no zip end-of-central-directory record: the file ends in {_amount(zeros)} of "
                "zeros where its end should be (a download preallocated at full size that "
                "stopped before its end)",
            )
            return None
        out.add("error", "truncated", "no zip end-of-central-directory record: truncated archive")
        return None
    (_, _, _, _, total, cd_size, cd_offset, comment_len) = struct.unpack(
        "<IHHHHIIH", data[eocd : eocd + 22]
    )
    later = bytes(data[eocd + 1 :]).rfind(_EOCD)
    if later >= 0:
        out.add(
            "unsafe",
            "ambiguous-zip",
            f"another end-record signature at byte {eocd + 1 + later}, after the end record "
            "torch reads (miniz skips one with less than 22 bytes after it): zipfile reads that "
            "one, or refuses the archive",
            f"byte {eocd + 1 + later}",
        )
    if eocd + 22 + comment_len != size:
        _after_end_record(out, data, eocd + 22 + comment_len)
    records = (total, cd_size, cd_offset)
    as_zipfile = records  # zipfile takes the zip64 record right before the locator
    zipfile_end = eocd  # where zipfile takes the records after the central directory to start
    has_locator = eocd >= 20 and data[eocd - 20 : eocd - 16] == _EOCD64_LOCATOR
    if has_locator and eocd >= 76 and data[eocd - 76 : eocd - 72] == _EOCD64:
        as_zipfile = struct.unpack("<QQQ", data[eocd - 44 : eocd - 20])
        zipfile_end = eocd - 76
    cd_end = eocd
    if has_locator and eocd >= 76:  # miniz looks for the locator only there
        (rec,) = struct.unpack("<Q", data[eocd - 12 : eocd - 4])
        if rec > size - 56:
            out.add(
                "error",
                "bad-zip",
                "the zip64 locator points past the end of the file (torch refuses the archive)",
                f"byte {eocd - 20}",
            )
            return None
        if data[rec : rec + 4] == _EOCD64:
            records = struct.unpack("<QQQ", data[rec + 32 : rec + 56])
            cd_end = rec
        else:
            out.add(
                "error",
                "bad-zip",
                "a zip64 locator that points at no zip64 end record (corrupt file): torch "
                "falls back to the 32-bit end record, and so does the audit",
                f"byte {eocd - 20}",
            )
    elif total == 0xFFFF or cd_size == 0xFFFFFFFF or cd_offset == 0xFFFFFFFF:
        out.add(
            "error",
            "bad-zip",
            "a zip64 archive without its locator record (corrupt file): torch takes the 32-bit "
            "end record literally, and so does the audit",
        )
    if tuple(as_zipfile) != tuple(records):
        out.add(
            "unsafe",
            "ambiguous-zip",
            "torch (the zip64 record the locator points at) and zipfile (the one right before "
            "the locator) read different central directories",
            f"byte {eocd - 20}",
        )
    shift = zipfile_end - as_zipfile[1] - as_zipfile[2]
    return records[0], records[1], records[2], cd_end, shift


# Signatures of zip records: bytes after the end record holding one may be read as another zip.
_ZIP_SIGNATURES = (_LOCAL, _CENTRAL, _EOCD, _EOCD64, _EOCD64_LOCATOR)


def _after_end_record(out: TorchFile, data: Any, end: int) -> None:
    """Bytes after the zip's end record (and its comment). Neither torch nor zipfile reads them
    (both take the last end record, and another one there is ``ambiguous-zip``): junk appended to
    a download is a warning. Any zip record there (a second archive, a local header another tool
    may find) or a comment that runs past the end of the file stays ``unsafe``."""
    size = len(data)
    tail = bytes(data[end:]) if end < size else b""  # (miniz looks only 64 KiB back: small)
    if end < size and not any(sig in tail for sig in _ZIP_SIGNATURES):
        out.add(
            "warning",
            "trailing-data",
            f"{size - end:,} bytes after the zip's end record belong to no member (junk appended "
            "to the file; torch ignores them)",
            f"byte {end}",
        )
        return
    out.add(
        "unsafe",
        "trailing-data",
        f"{size - end} bytes after the zip's end record",
        f"byte {end - 22}",
    )


def _zip_members(out: TorchFile, data: Any) -> list[ZipMember] | None:  # noqa: C901
    """Every central-directory entry, read as torch's miniz reads it. A member torch cannot read
    (encrypted, unknown method, broken local header) is a finding on that member with its
    ``problem`` set, and the rest is still read: torch reads only the members it asks for, so a
    broken member it never asks for stops nothing. None: the archive itself cannot be read."""
    size = len(data)
    end = _zip_end(out, data)
    if end is None:
        return None
    total, cd_size, cd_offset, cd_end, shift = end
    if total > MAX_MEMBERS:
        out.add("error", "limit", f"the zip claims {total} members")
        return None
    if cd_offset + cd_size > size:
        out.add("error", "truncated", "the central directory lies outside the file (truncated?)")
        return None
    if cd_offset + cd_size > cd_end:
        out.add(
            "unsafe",
            "ambiguous-zip",
            "the central directory runs into the end records after it",
            f"byte {cd_offset}",
        )
    elif cd_offset + cd_size < cd_end or shift:
        unloadable = total > 0 and data[cd_offset : cd_offset + 4] != _CENTRAL
        if shift > 0 and _repeats(data, shift):
            if unloadable:  # torch refuses the file; zipfile reads the copy after the prefix
                _partial_copy(out, data, shift)
                return None
            if 2 * shift == size:  # the archive twice: torch reads one copy, zipfile the other
                out.add(
                    "warning",
                    "trailing-data",
                    f"the file holds the archive twice ({shift:,} bytes each): the second copy "
                    "belongs to no member torch reads (a download appended to a finished one?); "
                    f"its first {shift:,} bytes are the checkpoint",
                    f"byte {shift}",
                )
                # (the records after the first copy's central directory are its own: without
                # zip64 records, the end record found is the second copy's, ``shift`` later)
                cd_end -= shift if cd_end >= shift else 0
                shift = 0
        if shift or cd_offset + cd_size < cd_end:
            out.add(
                "unsafe",
                "polyglot",
                f"{shift or cd_end - cd_offset - cd_size} bytes sit between the central "
                "directory and its end record: zipfile shifts every offset (prefix/polyglot), "
                "torch does not",
                f"byte {cd_offset}",
            )
    members: list[ZipMember] = []
    pos = cd_offset
    limit = cd_offset + cd_size
    for index in range(total):
        if pos + 46 > limit or data[pos : pos + 4] != _CENTRAL:
            if _zeros_at(data, pos, min(4096, limit - pos)):
                out.add(
                    "error",
                    UNWRITTEN,
                    "the central directory is zeros (a region an unfinished or preallocated "
                    "download never wrote)",
                    f"byte {pos}",
                )
                return None
            out.add("error", "bad-zip", "the central directory is corrupt", f"byte {pos}")
            return None
        fields = struct.unpack("<IHHHHHHIIIHHHHHII", data[pos : pos + 46])
        flags, method, crc, csize, usize = fields[3], fields[4], fields[7], fields[8], fields[9]
        name_len, extra_len, comment_len, header = fields[10], fields[11], fields[12], fields[16]
        if pos + 46 + name_len + extra_len + comment_len > limit:
            out.add("error", "bad-zip", "the central directory is corrupt", f"byte {pos}")
            return None
        raw_name = bytes(data[pos + 46 : pos + 46 + name_len])
        extra = bytes(data[pos + 46 + name_len : pos + 46 + name_len + extra_len])
        name = raw_name.decode("utf-8", "replace")
        needs_zip64 = max(usize, csize, header) == 0xFFFFFFFF
        usize, csize, header, problem = _zip64_extra(extra, usize, csize, header)
        ambiguity = _extra_ambiguity(extra, needs_zip64) or problem  # (a problem: miniz refuses)
        if ambiguity:
            out.add(
                "unsafe",
                "ambiguous-member",
                f"{ambiguity}: zip readers disagree on its sizes or on where its data lies "
                "(torch's miniz reads the first zip64 field only, zipfile every one)",
                f"zip entry {index} ({name!r})",
            )
        pos += 46 + name_len + extra_len + comment_len
        members.append(
            _local(
                out, data, index, name, raw_name, flags, method, crc, csize, usize, header, problem
            )
        )
    if pos != cd_offset + cd_size:
        out.add("unsafe", "ambiguous-zip", "the central directory size disagrees with its entries")
    _missing_headers(out, members, data)
    if members and min(m.header_offset for m in members) > 0:
        first = min(m.header_offset for m in members)
        out.add(
            "unsafe",
            "polyglot",
            f"{first} bytes before the first zip member: the file is something else too",
            "byte 0",
        )
    readable = [m for m in members if m.data_offset >= 0]
    _check_overlaps(out, readable, cd_offset)
    _check_gaps(out, data, readable, cd_offset)
    _check_names(out, members)
    _is_bomb(out, members, size)
    return members


def _repeats(data: Any, shift: int) -> bool:
    """Whether the file's first ``shift`` bytes are repeated right after them (a download's
    first part, then the whole download again; or one copy after another), compared 16 MiB at
    a time."""
    if 2 * shift > len(data):
        return False
    step = 16 << 20
    return all(
        bytes(data[at : min(at + step, shift)])
        == bytes(data[shift + at : shift + min(at + step, shift)])
        for at in range(0, shift, step)
    )


def _partial_copy(out: TorchFile, data: Any, shift: int) -> None:
    """A file torch refuses (its end records point ``shift`` bytes before the central directory)
    whose first ``shift`` bytes repeat the archive after them: the start of a download, then the
    whole download again. ``zipfile`` reads that second copy, so it is audited as zipfile reads
    it: its ``unsafe`` findings stay (another loader could run them); else the file is damaged."""
    second = read_torch_data(out.path, "zip", memoryview(data)[shift:])
    unsafe = [f for f in second.findings if f.severity == "unsafe"]
    copy = (
        f"its first {shift:,} bytes repeat the start of the archive after them: torch refuses "
        "the file, zipfile reads that archive"
    )
    if unsafe:
        out.add(
            "unsafe",
            "polyglot",
            f"{copy} (a partial copy followed by a full one?), and it is unsafe (the findings "
            f"below; their offsets count from byte {shift:,})",
            "byte 0",
        )
        out.findings.extend(unsafe)
        return
    # (the errors found so far, a zip64 locator pointing at no record, are this damage)
    out.findings[:] = [f for f in out.findings if f.severity != "error"]
    out.add(
        "error",
        "partial-copy",
        f"damaged: not loadable (a partial copy followed by a full one? download it again): {copy}",
        "byte 0",
    )


def _zip64_extra(extra: bytes, usize: int, csize: int, header: int) -> tuple[int, int, int, str]:
    """The sizes and local-header offset as miniz's ``mz_zip_file_stat_internal`` reads them:
    only when one of the three is 0xFFFFFFFF, from the *first* zip64 (tag 1) extra field, each
    64-bit value present only when its 32-bit one is 0xFFFFFFFF, in the order uncompressed size,
    compressed size, offset. The last item says why miniz refuses the entry ("" if it does not)."""
    if max(usize, csize, header) != 0xFFFFFFFF:
        return usize, csize, header, ""
    pos = 0
    while pos < len(extra):
        if len(extra) - pos < 4:
            return usize, csize, header, "its extra data ends inside a field header"
        tag, length = struct.unpack("<HH", extra[pos : pos + 4])
        if pos + 4 + length > len(extra):
            return usize, csize, header, "an extra field runs past the end of its extra data"
        if tag == 1:
            values = [usize, csize, header]
            at = pos + 4
            for i, value in enumerate(values):
                if value == 0xFFFFFFFF:
                    if at + 8 > pos + 4 + length:
                        return usize, csize, header, "its zip64 field is too short for its values"
                    values[i] = int.from_bytes(extra[at : at + 8], "little")
                    at += 8
            return values[0], values[1], values[2], ""
        pos += 4 + length
    return usize, csize, header, ""


def _extra_ambiguity(extra: bytes, needs_zip64: bool) -> str:
    """Why zip readers may read an entry's extra fields differently ("" when they cannot): more
    than one zip64 field (miniz takes the first, zipfile each in turn), a field running past
    the extra data (zipfile refuses the archive), stray bytes where miniz wants a field."""
    pos = 0
    zip64 = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack("<HH", extra[pos : pos + 4])
        if pos + 4 + length > len(extra):
            return "an extra field runs past the end of its extra data"
        zip64 += tag == 1
        pos += 4 + length
    if zip64 > 1:
        return f"{zip64} zip64 extra fields in one entry"
    if pos != len(extra) and needs_zip64:
        return "stray bytes after its last extra field"
    return ""


def _local(
    out: TorchFile,
    data: Any,
    index: int,
    name: str,
    raw_name: bytes,
    flags: int,
    method: int,
    crc: int,
    csize: int,
    usize: int,
    header: int,
    problem: str = "",
) -> ZipMember:
    """The member as miniz extracts it (``mz_zip_reader_extract_to_mem``). One torch cannot read
    gets a finding and a ``problem`` (``problem`` given: already reported), except a missing local
    header: :func:`_missing_headers` reports those, all in one finding."""
    where = f"zip entry {index} ({name!r})"
    data_offset = -1
    if problem:
        pass
    elif header + 30 > len(data) or data[header : header + 4] != _LOCAL:
        problem = _NO_LOCAL_HEADER
    else:
        name_len, extra_len = struct.unpack("<HH", data[header + 26 : header + 30])
        local_name = bytes(data[header + 30 : header + 30 + name_len])
        if local_name != raw_name:
            out.add(
                "unsafe",
                "ambiguous-member",
                f"the local header names {local_name!r}, the central directory {raw_name!r}",
                where,
            )
        data_offset = header + 30 + name_len + extra_len
        if flags & (1 | 32 | 64 | 0x2000):  # encrypted, patch data, strong encryption, masked
            problem = "encrypted"
            out.add("error", "encrypted", "an encrypted zip member (torch cannot read it)", where)
        elif method not in (0, 8):
            problem = f"compression method {method}"
            out.add("error", "bad-zip", f"compression method {method} (torch reads 0 and 8)", where)
        elif data_offset + csize > len(data):
            problem = "truncated"
            out.add("error", "truncated", "a member's data runs past the end of the file", where)
    if method == 0 and csize != usize:
        out.add("unsafe", "ambiguous-member", "a stored member whose sizes disagree", where)
    return ZipMember(
        name, index, method, flags, crc, csize, usize, header, data_offset, problem=problem
    )


_NO_LOCAL_HEADER = "no local header"


def _missing_headers(out: TorchFile, members: list[ZipMember], data: Any = None) -> None:
    """One finding for the members whose local header is missing (a corrupt file: a run of
    zeros over the archive makes hundreds), naming the first by its place."""
    lost = sorted(
        (m for m in members if m.problem == _NO_LOCAL_HEADER), key=lambda m: m.header_offset
    )
    if not lost:
        return
    first = lost[0]
    what = (
        "a member's local header is missing"
        if len(lost) == 1
        else f"{len(lost)} members from byte {first.header_offset:,} are unreadable: their local "
        "headers are missing"
    )
    where = f"zip entry {first.index} ({first.name!r})"
    them = "it" if len(lost) == 1 else "them"
    if data is not None and _zeros_at(data, first.header_offset):
        out.add(
            "error",
            UNWRITTEN,
            f"{what}: the file holds zeros there (a region an unfinished or preallocated "
            f"download never wrote; torch cannot read {them})",
            where,
        )
        return
    out.add("error", "bad-zip", f"{what} (corrupt file; torch cannot read {them})", where)


# Bytes of a zip no member covers that are searched for a hidden local header (torch.save leaves
# only 16-byte data descriptors between members).
GAP_SEARCH = 1 << 30


def _check_gaps(out: TorchFile, data: Any, members: list[ZipMember], cd_offset: int) -> None:
    """Bytes between members, or after the last one and before the central directory, that no
    member covers: a local header for a pickle hidden there is read by tools that walk local
    headers (streaming unzippers, zip repair), never by torch. Reported, with what it calls."""
    spans = sorted((m.header_offset, m.data_offset + m.csize) for m in members)
    gaps: list[tuple[int, int]] = []
    reach = spans[0][1] if spans else 0
    for start, end in spans[1:]:
        if start > reach:
            gaps.append((reach, start))
        reach = max(reach, end)
    if spans and cd_offset > reach:
        gaps.append((reach, cd_offset))
    budget = GAP_SEARCH
    for start, end in gaps:
        if end - start < 30:  # (a data descriptor: no room for a local header)
            continue
        if end - start > budget:
            out.add(
                "error",
                "unexplained-bytes",
                f"{end - start} bytes belong to no zip member: more than modelsafe searches "
                "for hidden members",
                f"byte {start}",
            )
            continue
        budget -= end - start
        _hidden_members(out, data, start, end)


def _hidden_members(out: TorchFile, data: Any, start: int, end: int) -> None:
    pos = start
    for _ in range(64):
        at = _find(data, _LOCAL, pos, end)
        if at < 0 or at + 30 > len(data):
            return
        pos = at + 4
        flags, method = struct.unpack("<HH", data[at + 6 : at + 10])
        (csize,) = struct.unpack("<I", data[at + 18 : at + 22])
        name_len, extra_len = struct.unpack("<HH", data[at + 26 : at + 30])
        name = bytes(data[at + 30 : at + 30 + name_len]).decode("utf-8", "replace")
        body = at + 30 + name_len + extra_len
        stop = body + csize if csize and not flags & 8 and csize != 0xFFFFFFFF else end
        raw: Any = bytes(data[body : min(stop, body + (64 << 20))])
        if method == 8:
            try:
                raw = zlib.decompressobj(-15).decompress(raw, 64 << 20)
            except zlib.error:
                continue
        label = f"hidden zip member {name!r}"
        result = run_pickle(raw, label=label, base=body if method == 0 else 0)
        if not (name.lower().endswith(".pkl") or result.globals or result.unsafe):
            continue
        out.add(
            "unsafe",
            "hidden-member",
            f"a local header for {name!r} sits in bytes no central-directory entry covers: "
            "tools that walk local headers read it, torch never does",
            f"byte {at}",
        )
        out.findings.extend(f for f in result.findings if f.severity == "unsafe")


def _check_overlaps(out: TorchFile, members: list[ZipMember], cd_offset: int) -> None:
    spans = sorted((m.header_offset, m.data_offset + m.csize, m) for m in members)
    for (_, end, m), (start, _, nxt) in zip(spans, spans[1:], strict=False):
        if start < end:
            out.add(
                "unsafe",
                "overlapping-members",
                f"zip members {m.name!r} and {nxt.name!r} share bytes",
                f"byte {start}",
            )
            return
    if spans and spans[-1][1] > cd_offset:
        out.add("unsafe", "overlapping-members", "a member's data overlaps the central directory")


def _check_names(out: TorchFile, members: list[ZipMember]) -> None:
    for m in members:
        parts = m.name.split("/")
        tricky = (
            m.name.startswith("/")
            or "\\" in m.name
            or "\x00" in m.name
            or any(p in ("", ".", "..") for p in parts[:-1])
            or parts[-1] in (".", "..")
            or "\ufffd" in m.name
        )
        if tricky:
            out.add(
                "unsafe",
                "path-trick",
                f"zip member name {m.name!r} uses path tricks (absolute, '..', '\\\\', "
                "empty parts): readers resolve it differently",
                f"zip entry {m.index}",
            )


def _is_bomb(out: TorchFile, members: list[ZipMember], size: int) -> bool:
    total = sum(m.usize for m in members)
    if not members or total <= BOMB_RATIO * max(size, 1) or total <= (1 << 26):
        return False
    worst = max(members, key=lambda m: m.usize / max(m.csize, 1))
    out.add(
        "error",
        "zip-bomb",
        f"a zip bomb: {size} bytes claim to expand to {total} bytes "
        f"(member {worst.name!r}); not a model",
    )
    return True


# -- legacy -------------------------------------------------------------------------------------


def _starts_like_legacy(data: Any) -> bool:
    head = bytes(data[:32])
    return b"\x8a\x0a" + LEGACY_MAGIC.to_bytes(10, "little") in head


def _read_legacy(out: TorchFile, data: Any) -> TorchFile:
    """torch's legacy reader: three header pickles (magic number, protocol, sys info), the main
    pickle, the storage keys, the storages. Whatever the header says, every later pickle is run:
    a header torch refuses stops torch, not a reader that goes on (and a value the VM cannot
    decide, ``complex(1001)``, may well let torch read on)."""
    pos = 0
    header: list[Any] = []
    for what in ("magic number", "protocol version", "sys info"):
        result = run_pickle(data, pos, label=f"legacy {what}")
        out.findings.extend(result.findings)
        if not result.completed:
            out.add("error", "bad-legacy", f"the legacy {what} pickle cannot be read")
            if result.resume < 0:  # CPython stops there too, or the rest was searched
                return out
            header.append(_UNREAD)  # (the VM stopped, not CPython: torch may read on)
            pos = result.resume
            continue
        header.append(result.root)
        pos = result.end
    magic, protocol, sys_info = header
    if not _header_may_pass(out, magic, protocol):
        _later_pickles(out, data, pos, "legacy header", second=False)
        return out
    out.extra["sys_info"] = _sys_info(sys_info)
    start = pos
    result = _run_main_pickle(out, data, "legacy pickle", base=0, start=pos, end=None)
    if not result.completed:
        if result.resume >= 0:  # (torch reads the storage keys next: a pickle too)
            _later_pickles(out, data, result.resume, "legacy pickle", second=False)
        return out
    out.pickle_label = "legacy pickle"
    keys_result = run_pickle(data, result.end, label="legacy storage keys")
    out.findings.extend(keys_result.findings)
    keys = keys_result.root
    if not keys_result.completed or not isinstance(keys, list):
        out.add("error", "bad-legacy", "the legacy storage-key list cannot be read")
        return out
    out.extra["pickle_bytes"] = result.end - start
    _legacy_storages(out, data, keys, keys_result.end)
    return out


_UNREAD = object()  # a header pickle the VM could not finish (CPython may)
# Values that never compare equal to an int: anything else (a call's result such as
# complex(1001) or a numpy scalar, a global, an unparsed number) may.
_NEVER_A_NUMBER = (str, bytes, LargeBytes, tuple, list, SymDict, SymSet, PersistentRef, Buffer)


def _may_equal(value: Any, wanted: int) -> bool:
    """Whether ``value`` (as the VM holds it) may be ``== wanted`` in CPython."""
    if isinstance(value, (bool, int, float)):
        return value == wanted
    return value is not None and not isinstance(value, _NEVER_A_NUMBER)


def _header_may_pass(out: TorchFile, magic: Any, protocol: Any) -> bool:
    """torch's two header checks (``magic_number != MAGIC_NUMBER``, then the protocol): False,
    with the error, when one provably fails; a value that is no plain number but may compare
    equal is a warning, and the file is read on as torch may read it."""
    if not _may_equal(magic, LEGACY_MAGIC):
        out.add("error", "wrong-magic", "wrong magic number: not a legacy torch file (corrupt?)")
        return False
    if not _may_equal(protocol, LEGACY_PROTOCOL):
        out.add("error", "bad-legacy", f"legacy protocol {describe(protocol)}, torch expects 1001")
        return False
    for what, value, wanted in (
        ("magic number", magic, LEGACY_MAGIC),
        ("protocol", protocol, LEGACY_PROTOCOL),
    ):
        if value is not _UNREAD and type(value) is not int:
            out.add(
                "warning",
                "odd-legacy-header",
                f"the legacy {what} is {describe(value)}, not the plain integer torch writes: "
                f"torch compares it with {wanted} and may read on, so the file is audited as if "
                "it does",
            )
    return True


def _sys_info(value: Any) -> dict[str, Any]:
    if not isinstance(value, SymDict):
        return {}
    info: dict[str, Any] = {}
    for key, item in value.items:
        if isinstance(key, str) and isinstance(item, (bool, int, str)):
            info[key] = item
        elif key == "type_sizes" and isinstance(item, SymDict):
            info[key] = {k: v for k, v in item.items if isinstance(k, str) and isinstance(v, int)}
    return info


def _legacy_storages(out: TorchFile, data: Any, keys: list[Any], pos: int) -> None:
    refs = out.content.storages if out.content else {}
    if len(set(map(str, keys))) != len(keys):
        out.add(
            "unsafe", "ambiguous-storage", "a storage key is listed twice: its bytes are read twice"
        )
    for key in keys:
        ref = refs.get(key) if isinstance(key, str) else None
        if ref is None:
            out.add("error", "bad-legacy", f"storage key {key!r} is not used by the pickle")
            return
        itemsize = int(DTYPE_SIZES[ref.dtype]) if ref.dtype else 1
        if pos + 8 > len(data):
            out.add("error", "truncated", f"the file ends before storage {key!r}")
            return
        (count,) = struct.unpack("<q", data[pos : pos + 8])
        if count != ref.numel and _zero_tail(data, len(data) - pos) >= len(data) - pos:
            out.add(
                "error",
                UNWRITTEN,
                f"the file is zeros from storage {key!r} to its end ({_amount(len(data) - pos)}): "
                "a download preallocated at full size that stopped before its end",
                f"byte {pos}",
            )
            return
        if count != ref.numel:
            out.add(
                "error",
                "storage-size",
                f"storage {key!r} holds {count} elements, the pickle says {ref.numel}",
                f"byte {pos}",
            )
            return
        nbytes = count * itemsize
        if pos + 8 + nbytes > len(data):
            out.add("error", "truncated", f"the file ends inside storage {key!r}", f"byte {pos}")
            return
        out.storages[key] = StorageBlob(key, pos + 8, nbytes)
        pos += 8 + nbytes
    missing = set(refs) - set(out.storages)
    if missing:
        out.add("error", "missing-storage", f"storages {sorted(missing)[:5]} are not in the file")
    if pos != len(data):
        _after_end(out, data, pos)


# -- plain pickles and shared helpers -----------------------------------------------------------


def _read_plain_pickle(out: TorchFile, data: Any) -> TorchFile:
    out.pickle_label = "pickle"
    _run_main_pickle(out, data, "pickle", base=0, start=0, end=len(data))
    return out


def _run_main_pickle(
    out: TorchFile, data: Any, label: str, base: int, start: int = 0, end: int | None = None
) -> VMResult:
    result = run_pickle(data, start, label=label, base=base)
    out.vm = result
    out.findings.extend(result.findings)
    out.extra["pickle_protocol"] = result.protocol
    out.extra["globals"] = sorted({g.dotted for g in result.globals})
    if result.completed:
        try:
            content = interpret(result.root, label)
        except Exception as exc:  # noqa: BLE001 - the VM's findings above are kept
            out.add(
                "error",
                "bad-pickle",
                f"the pickle's result cannot be interpreted ({type(exc).__name__})",
                label,
            )
            return result
        out.content = content
        out.findings.extend(content.findings)
        if end is not None and result.end != end:
            _after_end(out, data, result.end, label, base)
        return result
    if not any(f.severity == "error" for f in result.findings):
        out.add("error", "bad-pickle", "the pickle could not be read to its end")
    if end is not None and 0 <= result.resume < end:  # (the VM stopped, CPython reads on)
        _after_end(out, data, result.resume, label, base, read=False)
    return result


def _after_end(
    out: TorchFile, data: Any, pos: int, label: str = "file", base: int = 0, read: bool = True
) -> None:
    """Bytes after the last thing a loader reads (``read``: the stream was read to its end; not
    when the VM stopped where CPython reads on, whose rest is ``unsafe`` whatever it holds).
    torch.load never reads them, so what they are decides: zeros (padding, a preallocated
    download's tail) and another copy of what came before (a download appended to a finished
    one) are a warning; pickles are audited, ``unsafe`` when one is, a warning when every one
    reads to its end and none is; anything else cannot be audited (another reader may read it):
    ``unsafe``, as any pickle found in it."""
    rest = len(data) - pos
    where = f"{label} @ byte {base + pos}"
    if read and _zeros_at(data, pos, rest):
        out.add(
            "warning",
            "trailing-data",
            f"{rest:,} zero bytes after the end of the {label} (padding, or a download's "
            "preallocated tail); torch.load never reads them",
            where,
        )
        return
    if read and label == "file" and _repeats_start(data, pos):
        out.add(
            "warning",
            "trailing-data",
            f"{rest:,} bytes after the end of the file repeat its start (the file holds itself "
            f"{'twice' if rest == pos else 'again, in part'}: a download appended to a finished "
            "one?); torch.load reads the first copy only",
            where,
        )
        return
    at = len(out.findings)
    clean = _later_pickles(out, data, pos, label, base, second=not read)
    none_unsafe = read and not any(f.severity == "unsafe" for f in out.findings[at:])
    never_read = f"{rest:,} bytes after the end of the {label} that torch.load never reads"
    if none_unsafe and clean is None:
        severity = "error"
        message = f"{never_read}: more pickles, not all audited (the file's opcode budget ran out)"
    elif none_unsafe and clean:
        severity = "warning"
        message = f"{never_read}: more pickles, audited: nothing in them can run code"
    else:
        severity = "unsafe"
        message = f"{rest} bytes after the end of the {label} that torch.load never reads; another "
        message += "reader may"
    out.findings.insert(at, Finding(severity, "trailing-data", message, where))


def _repeats_start(data: Any, pos: int) -> bool:
    """Whether the bytes from ``pos`` on repeat the file's first ``pos`` bytes (once, several
    times, the last copy possibly cut short), compared 16 MiB at a time."""
    size = len(data)
    step = 16 << 20
    return pos > 0 and all(
        bytes(data[at : min(at + step, size)]) == bytes(data[at - pos : min(at + step, size) - pos])
        for at in range(pos, size, step)
    )


_LATER_PICKLES = 1024  # pickles run one by one after a stream's end; past them, a byte search


def _later_pickles(
    out: TorchFile, data: Any, pos: int, label: str, base: int = 0, second: bool = True
) -> bool | None:
    """The pickles from ``pos`` on, run one after another as a loop of ``pickle.load`` reads
    them (one the VM stopped in is scanned to its STOP and the next read from there): their
    ``unsafe`` findings, and with ``second`` a ``second-pickle`` finding for each that names a
    callable or a storage. True when every one read to its end and they fill the rest of the
    file (zeros after the last allowed); None when the file's opcode budget ran out in them (the
    audit's ``opcode-budget`` error says so: not all of them were run)."""
    where = f"{label} (after end)"
    whole = True
    for _ in range(_LATER_PICKLES):
        if pos >= len(data) or (whole and _zeros_at(data, pos, len(data) - pos)):
            return whole
        hidden = run_pickle(data, pos, label=where, base=base)
        if hidden.budget_spent:
            out.findings.extend(f for f in hidden.findings if f.severity == "unsafe")
            return None
        whole = whole and hidden.completed
        if second and hidden.completed and (hidden.globals or hidden.persistent_ids):
            out.add(
                "unsafe",
                "second-pickle",
                "another pickle follows the end of the stream",
                f"{label} @ byte {base + pos}",
            )
        # A pickle that breaks may have called something before it broke (pickle.load runs
        # each opcode as it reads it): what it did is kept.
        out.findings.extend(f for f in hidden.findings if f.severity == "unsafe")
        after = hidden.end if hidden.completed else hidden.resume
        if after <= pos:
            return False
        pos = after
    out.findings.extend(search_names(data, pos, label=where, base=base))
    return False


# -- the TensorIndex contract -------------------------------------------------------------------


def build_index(tf: TorchFile) -> TensorIndex:
    """The TensorIndex of a torch file read by :func:`read_torch_file` (raises when unreadable).

    Offsets are absolute file offsets of contiguous tensors (-1 otherwise), ``source`` the zip
    member holding the storage. VM facts (protocol, globals, plain values) go in ``extra``.
    """
    if tf.extra.get("torch_export"):
        raise UnsupportedFormatError(
            f"{tf.path}: a torch.export archive (torch.export.save): not a state dict; "
            "inspect and convert do not take it",
            hint="load it with torch.export.load only if you trust its source; `modelsafe audit` "
            "checks the members it unpickles",
        )
    errors = tf.errors()
    packed = tf.extra.get("packed_archive")
    if packed is not None:  # model files zipped for transport: say what to do, as for a tar
        raise MalformedFileError(f"{tf.path}: {packed.reason}", hint=packed.hint)
    if errors or tf.content is None:
        first = errors[0] if errors else Finding("error", "bad-pickle", "no pickle content")
        where = f" ({first.location})" if first.location else ""
        raise MalformedFileError(
            f"{tf.path}: {first.message}{where}",
            hint="the download was cut short; download it again"
            if first.code == "truncated"
            else "the download did not finish (what it never wrote reads as zeros); download "
            "it again"
            if first.code == UNWRITTEN
            else "download it again"
            if first.code == "partial-copy"
            else "the file is damaged or is not a torch checkpoint; `modelsafe audit` says more",
        )
    tensors = []
    for record in tf.content.tensors:
        blob = tf.storages.get(record.storage.key)
        tensors.append(
            TensorInfo(
                name=record.name,
                dtype=record.dtype,
                shape=record.shape,
                offset=tf.tensor_offset(record),
                nbytes=record.nbytes,
                source=blob.member if blob else "",
            )
        )
    unsafe = sorted({f.message for f in tf.findings if f.severity == "unsafe"})
    warnings = tuple(f"unsafe: {m}" for m in unsafe[:20])
    warnings += tuple(
        f.message for f in tf.findings if f.code == "trailing-data" and f.severity == "warning"
    )
    if tf.content.unsupported:
        warnings += (f"{len(tf.content.unsupported)} tensors of a kind modelsafe cannot rebuild",)
    extra: dict[str, Any] = dict(tf.extra)
    extra.update(
        audit=tf.status,
        values=tf.content.values,
        unsupported_tensors=tf.content.unsupported[:100],
        dropped_tensors=len(tf.content.dropped),
        unwrapped=tf.content.unwrapped,
        storages=len(tf.storages),
    )
    # (for the hashing pass, which reads every byte: MemberCrcCheck)
    extra[CRC_MEMBERS] = [[m.name, m.offset, m.nbytes, m.crc, m.storage] for m in crc_members(tf)]
    return TensorIndex(
        path=tf.path,
        format=tf.format,
        tensors=tuple(tensors),
        metadata={},
        warnings=warnings,
        extra=extra,
    )
