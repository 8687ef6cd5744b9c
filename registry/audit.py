"""``audit``: ask every scanner plugin about a file; never load or execute anything in it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from modelsafe.errors import FileReadError
from modelsafe.registry.sniff import read_head, sniff
from modelsafe.types import Finding, Format, Verdict


def verdict_status(findings: list[Finding]) -> str:
    """``unsafe`` if any finding is unsafe, else ``error`` if any is an error, else ``safe``."""
    severities = {f.severity for f in findings}
    if "unsafe" in severities:
        return "unsafe"
    if "error" in severities:
        return "error"
    return "safe"


def audit_path(path: Path | str) -> Verdict:
    """The verdict for one file or folder; unreadable input is an ``error`` verdict, never an
    exception. A download still in progress is named as such, as ``inspect`` names it."""
    path = Path(path)
    return _as_download(path, _audit_one(path))


def _as_download(path: Path, verdict: Verdict) -> Verdict:
    """``verdict`` for a file still being downloaded, by its name (``.part``, ``.crdownload``),
    as Firefox's empty placeholder of one, or (when it has errors) with a downloader's control
    file beside it (``.aria2``): its errors (truncated, empty) become one ``unfinished-download``
    error that says to let it finish, not to download it again; unsafe findings stay."""
    from dataclasses import replace

    from modelsafe.registry.walk import download_state

    download = download_state(path, unreadable=verdict.status == "error")
    if download is None:
        return _still_filling(path, verdict)
    findings = (
        *(f for f in verdict.findings if f.severity != "error"),
        Finding("error", "unfinished-download", download.reason("audit"), scanner="audit"),
    )
    return replace(verdict, status=verdict_status(list(findings)), findings=findings)


def _still_filling(path: Path, verdict: Verdict) -> Verdict:
    """``verdict`` of a file that reads whole but has a downloader's control file beside it
    (``NAME.aria2``: aria2 may still be writing into it) with a warning that says so, as
    ``inspect`` warns and ``generate`` refuses; its status is what its bytes are."""
    from dataclasses import replace

    from modelsafe.registry.walk import preallocated_download

    if path.is_dir() or verdict.status != "safe":
        return verdict
    download = preallocated_download(path)
    if download is None:
        return verdict
    warning = Finding("warning", "unfinished-download", download.reason("audit"), scanner="audit")
    return replace(verdict, findings=(*verdict.findings, warning))


def _audit_one(path: Path) -> Verdict:
    try:
        if path.is_dir():
            return _audit_folder(path)
        special = _special_kind(path)
        if special:  # opening a FIFO would block for ever; a device never ends
            finding = Finding(
                "error", "unreadable", f"{path} is {special}, not a regular file: not opened"
            )
            return Verdict(path, "error", Format.UNKNOWN.value, (finding,))
        head = read_head(path)
    except OSError as exc:
        finding = Finding("error", "unreadable", f"cannot read {path}: {exc.strerror or exc}")
        return Verdict(path, "error", Format.UNKNOWN.value, (finding,))
    from modelsafe.registry.pickle_vm.limits import file_budget

    with file_budget() as budget:
        verdict = _audit_file(path, head)
    return _within_budget(verdict, budget.spent)


def _within_budget(verdict: Verdict, spent: bool) -> Verdict:
    """``verdict``, with an ``opcode-budget`` error when the file's pickles together ran past
    the opcodes one file may cost (:data:`~modelsafe.registry.pickle_vm.limits.FILE_OPCODES`):
    what came after was only searched for names, so the file is never ``safe``."""
    if not spent:
        return verdict
    from dataclasses import replace

    from modelsafe.registry.pickle_vm import limits

    finding = Finding(
        "error",
        "opcode-budget",
        f"the pickles in this file (its compressed content, its members, one after another) "
        f"run more than {limits.FILE_OPCODES:,} opcodes together: modelsafe stopped running them "
        "there and only searched the rest for names, so it cannot vouch for the file; "
        "do not unpickle it",
        scanner="audit",
    )
    findings = (*verdict.findings, finding)
    return replace(verdict, status=verdict_status(list(findings)), findings=findings)


def _audit_file(path: Path, head: bytes) -> Verdict:
    """The verdict of a regular file whose first bytes are ``head``."""
    from modelsafe.plugin_manager import HookFailure, get_plugin_manager
    from modelsafe.registry.sniff import not_a_model

    fmt = sniff(head).value
    findings: list[Finding] = []
    handled = False
    pm = get_plugin_manager()
    failed: list[HookFailure] = []  # this call's own failures (scan audits files in threads)
    try:
        for plugin, result in pm.call_each(
            "modelsafe_audit", failed=failed, path=path, head=head, fmt=fmt
        ):
            handled = True
            found, wrong = _scanner_findings(result)
            findings.extend(item if item.scanner else _named(item, plugin) for item in found)
            if wrong:
                pm.record_failure(plugin, "modelsafe_audit", wrong, failed)
    except FileReadError as exc:
        findings.append(Finding("error", "unreadable", exc.reason))
        handled = True
    # A scanner that crashed or answered garbage has not vouched for the file: never let that
    # read as "safe" (whatever Findings it did return still count).
    for failure in failed:
        findings.append(
            Finding(
                "error",
                "scanner-failed",
                f"scanner {failure.plugin} failed: {failure.reason}",
                scanner=failure.plugin,
            )
        )
        handled = True
    if not handled:
        what = not_a_model(fmt, path.stat().st_size, head, path.name)
        reason = what.reason if what else f"no scanner reads this format ({fmt})"
        findings.append(Finding("error", "not-a-model", reason))
    if not head.startswith(b"PK\x03\x04") and fmt != Format.ARCHIVE.value:
        # (a plain tar is the archive scanner's: packed, or torch's tar checkpoint format)
        from modelsafe.registry.sniff import check_tar

        check_tar(findings, head)  # torch.load reads a tar before anything else
    if is_index_name(path.name):  # a sharded checkpoint's index: where shards are
        findings.extend(shard_findings(path))
    status = verdict_status(findings)
    if status != "unsafe" and fmt not in _PICKLE_READ and fmt != Format.NUMPY.value:
        # pickle.load, torch.load(weights_only=False) and numpy.load(allow_pickle=True) unpickle
        # any file that is not a zip or a .npy, whatever it also is.
        findings.extend(disguised_pickle(path, head, fmt, valid=status == "safe"))
        findings = _vouched_data(findings)
    return Verdict(path, verdict_status(findings), fmt, tuple(findings))


def _scanner_findings(result: object) -> tuple[list[Finding], str]:
    """The Findings in a scanner's answer, and what was wrong with it ("" when it is a list or
    tuple of Findings, as the hook promises). A bare Finding counts, but is still wrong."""
    if isinstance(result, Finding):
        return [result], f"returned a bare Finding ({_shown(result)}), not a list of Findings"
    if not isinstance(result, (list, tuple)):
        return [], f"returned {_shown(result)}, not a list of Findings"
    found = [item for item in result if isinstance(item, Finding)]
    others = [item for item in result if not isinstance(item, Finding)]
    if not others:
        return found, ""
    what = ", ".join(_shown(item) for item in others[:3]) + (", ..." if len(others) > 3 else "")
    return found, f"returned {len(others)} item(s) that are not Findings: {what}"


def _shown(value: object) -> str:
    """``value`` for a message: its type and a short repr."""
    text = repr(value)
    text = text if len(text) <= 120 else text[:117] + "..."
    kind = type(value).__name__
    return text if text.startswith(kind) else f"{kind} {text}"


def _special_kind(path: Path) -> str:
    """What a path that is not a regular file or folder is ("" for those, or a missing one)."""
    from modelsafe.registry.read import special_kind

    try:
        return special_kind(path.stat().st_mode)
    except OSError:
        return ""


# Formats whose scanners already run every byte that pickle.load would read through the VM.
_PICKLE_READ = frozenset({Format.ZIP.value, Format.PICKLE.value, Format.LEGACY_TORCH.value})


def disguised_pickle(
    path: Path, head: bytes, fmt: str, valid: bool, need_complete: bool = False
) -> list[Finding]:
    """The file run as a pickle (pickle.load, torch.load and numpy.load look at neither the name
    nor the magic of a file that is not a zip or ``.npy``): its ``unsafe`` findings, and
    ``disguised-pickle``. A gzip / bz2 / xz / zlib file is decompressed (bounded) first.

    ``valid``: the file is a valid file of its format (safetensors, GGUF...), so only a named,
    importable global outside the allow-list (or a name computed by a call) counts: random bytes
    that happen to be opcodes never reach one. ``need_complete``: only a pickle that reaches its
    STOP counts (files people read, like ``notes.txt``).

    Cheap on real files: the first 4 KiB are run first, and when the VM stops there where
    CPython stops too (an unknown opcode: the first byte of a safetensors JSON header, a GGUF
    count), nothing more is read.
    """
    from modelsafe.registry.pickle_vm.opcodes import OPCODES
    from modelsafe.registry.torch_archive import read_torch_file

    found: list[Finding] = []
    # (a first byte that is no opcode: pickle.load fails at once; the VM is not even imported)
    if head[:1] and head[0] in OPCODES and _may_run(head, path):
        try:
            tf = read_torch_file(path, Format.PICKLE.value)
        except FileReadError:
            return []
        found = _pickle_findings(tf, fmt, valid, need_complete)
    if fmt == Format.ARCHIVE.value or _is_zlib(head):
        found += _compressed(path, head, need_complete)
    return found


def _may_run(head: bytes, path: Path | None = None) -> bool:
    """False when pickle.load provably fails inside ``head`` before running anything."""
    from modelsafe.registry.pickle_vm.machine import EXACT_STOPS, run_pickle

    probe = run_pickle(head, label="probe")
    if probe.completed or probe.unsafe or not probe.findings:
        return True
    last = probe.findings[-1]
    if last.code == "truncated" and "text argument" in last.message:
        if _text_fails(head[probe.end - 1 : probe.end], head[probe.end :]):
            return False
        # A text argument (UNICODE, STRING ...) that runs past the head: CPython reads on to the
        # next newline. With none in the file its parse fails and nothing runs; only then is the
        # whole file worth the VM (which would otherwise map all of it looking for one).
        return path is None or _newline_after(path, len(head))
    return last.code not in EXACT_STOPS or last.code == "truncated" or probe.end >= len(head)


_SEARCH_CHUNK = 1 << 20


def _newline_after(path: Path, start: int) -> bool:
    """Whether the file holds a newline byte at or after ``start``: read in 1 MiB pieces, so
    memory stays flat (a mapped search kept every page of a 7 GB file resident)."""
    seek_data = getattr(os, "SEEK_DATA", None)
    try:
        with open(path, "rb", buffering=0) as fh:
            pos = start
            while True:
                if seek_data is not None:  # holes of a sparse file read as zeros: skip them
                    try:
                        pos = os.lseek(fh.fileno(), pos, seek_data)
                    except OSError:
                        return False  # (ENXIO: no data after pos)
                fh.seek(pos)
                chunk = fh.read(_SEARCH_CHUNK)
                if not chunk:
                    return False
                if b"\n" in chunk:
                    return True
                pos += len(chunk)
    except OSError:
        return True  # let the full read report it


_SPACE = b" \t\r\v\f"
_NUMBER = b"0123456789_+-" + _SPACE
_LETTERS = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
# opcode -> the bytes its text argument may hold and still parse (before a NUL ends the C parse)
_TEXT_ALLOWED: dict[bytes, bytes] = {
    b"p": _NUMBER,  # PUT, GET: base-10 integers
    b"g": _NUMBER,
    b"I": _NUMBER + _LETTERS,  # INT, LONG: int(text, 0) (0x.., 0o.., 0b..)
    b"L": _NUMBER + _LETTERS,
    b"F": _NUMBER + _LETTERS + b".",  # FLOAT: inf, nan, 1e5
    b"c": _LETTERS + b"0123456789_.",  # GLOBAL, INST: an importable module name
    b"i": _LETTERS + b"0123456789_.",
}


def _text_fails(opcode: bytes, partial: bytes) -> bool:
    """Whether CPython's first ``pickle.load`` certainly fails on a text argument that runs past
    the head (so nothing after it runs, and the rest of the file need not be read): a PERSID (no
    persistent_load there), a STRING without its opening quote, or a byte no parse accepts."""
    if opcode == b"P":
        return True
    if opcode == b"S":
        return partial[:1] not in (b"'", b'"', b"")
    allowed = _TEXT_ALLOWED.get(opcode)
    if allowed is None:
        return False
    for index, byte in enumerate(partial):
        if byte == 0:  # the C parsers stop at a NUL and may accept what came before
            if opcode == b"I":  # strtol: even no digits at all before the NUL is 0
                return False
            return opcode in (b"c", b"i") or not any(c in b"0123456789" for c in partial[:index])
        if byte not in allowed:
            return True
    return False


# In a file that is valid as something else (safetensors, GGUF, a folder's stray file), the VM
# findings that mean a loader runs code or reads the stream differently: a global of any name (a
# placeholder for a huge one too), a computed one, a STOP inside its FRAME (the next reader starts
# elsewhere), a second pickle, and a persistent id where one is resolved (torch's legacy main
# pickle). Not counted there, since real files' bytes read that way and CPython stops on them: a
# call on a constant, BUILD, a persistent id in a first pickle
# (plain pickle.load has no persistent_load), structural findings of the other format.
_CODE_REACHING = frozenset({"global", "dynamic-global", "ambiguous-frame", "second-pickle"})


def _pickle_findings(
    tf: Any, fmt: str, valid: bool, need_complete: bool, pickled: bool = False
) -> list[Finding]:
    """``pickled``: the content is a pickle by format (a decompressed ``.pkl.gz``), so an EXT
    code counts as in any pickle; else the stream is judged up to its first EXT only."""
    if need_complete and not (tf.vm is not None and tf.vm.completed):
        return _limit_stops(tf, fmt, pickled)  # (read on, it might complete)
    unsafe = [
        _named(f, "audit")
        for f in (tf.findings if pickled else _before_extension(tf.findings))
        if f.severity == "unsafe"
        and f.code != "polyglot-tar"  # (a tar header is the archive scanner's to judge)
        and (not valid or _reaches_code(f, tf.format))
    ]
    if unsafe:
        what = (
            "the file is in no format modelsafe knows but is a pickle"
            if not valid and fmt == Format.UNKNOWN.value
            else f"the file is not a valid {fmt} file but is a pickle"
            if not valid
            else f"the file is a valid {fmt} file and also a pickle that calls code"
            if fmt in _MODEL_FORMATS
            else f"the file reads as {fmt} but is also a pickle that calls code"
        )
        unsafe.append(
            Finding(
                "unsafe",
                "disguised-pickle",
                f"{what}: pickle.load, torch.load(weights_only=False) and "
                "numpy.load(allow_pickle=True) would run it",
                scanner="audit",
            )
        )
    return unsafe + _unread_pickle(tf, pickled, fmt)


# Sniffed formats whose files are models when valid (a stray HTML or text file is "valid" only in
# the sense that it is not judged as a model).
_MODEL_FORMATS = frozenset(
    {Format.SAFETENSORS.value, Format.GGUF.value, Format.NUMPY.value, Format.ZIP.value}
)


# VM errors that mean modelsafe stopped reading where CPython reads on: a limit (objects,
# opcodes, the scan after a stop, memo, stack, MARKs, nesting) or a failure of the VM itself.
_UNREAD_CODES = frozenset({"limit", "vm-failure"})


def _unread_pickle(tf: Any, pickled: bool, fmt: str) -> list[Finding]:
    """The errors of content that is a pickle by format (a decompressed ``.pkl.gz``, a legacy
    torch file under any name): a loader unpickles it, and modelsafe could not read all of it,
    so it is not vouched for (a folder holding it is not safe). Other files' errors are only
    bytes that are no pickle, except a limit (:func:`_limit_stops`)."""
    if pickled or tf.format == Format.LEGACY_TORCH.value:
        return [_named(f, "audit") for f in tf.findings if f.severity == "error"]
    return _limit_stops(tf, fmt, pickled)


def _limit_stops(tf: Any, fmt: str, pickled: bool) -> list[Finding]:
    """The VM's limit stops in the file read as a pickle (in a file that is no pickle by format,
    only those before an EXT code, where pickle.load stops), with an error that says so:
    the bytes may be a pickle that runs on past where modelsafe stopped, so the file is never
    ``safe`` (an ``unread-pickle`` error). Real files' bytes read as opcodes stop long before
    any limit."""
    found = tf.findings if pickled else _before_extension(tf.findings)
    stops = [_named(f, "audit") for f in found if f.severity == "error" and f.code in _UNREAD_CODES]
    if not stops:
        return []
    summary = Finding(
        "error",
        "unread-pickle",
        f"the file reads as {fmt} but is also a pickle that modelsafe could not read to its end "
        "(a limit): pickle.load, torch.load(weights_only=False) and "
        "numpy.load(allow_pickle=True) may run code in it; do not load it that way",
        scanner="audit",
    )
    return [*stops, summary]


def _before_extension(findings: list[Finding]) -> list[Finding]:
    """The findings before the stream's first EXT1/2/4 (findings come in stream order): CPython's
    pickle.load raises there ("unregistered extension code", or "code <= 0"), since copyreg's
    extension registry is empty (nothing in CPython, torch, numpy or diffusers registers a code),
    so nothing after it runs. Only for files that are not pickles by format: a real pickle's EXT
    stays an ``unsafe`` finding of its own scanner."""
    cut = next((i for i, f in enumerate(findings) if f.code == "extension"), len(findings))
    return findings[:cut]


def _reaches_code(finding: Finding, file_format: str = "") -> bool:
    if finding.code == "persistent-id":
        return file_format == "legacy-torch"
    return finding.code in _CODE_REACHING


# -- compressed files -----------------------------------------------------------------------------

MAX_DECOMPRESSED = 256 << 20  # a compressed pickle is audited up to this size, decompressed
_READ_STEP = 1 << 17  # (each read1 allocates this much, for the few KiB one step gives)


def _is_zlib(head: bytes) -> bool:
    """A raw zlib stream (joblib's ``compress=`` files, ``zlib.compress`` output)."""
    from modelsafe.registry.sniff import is_zlib

    return is_zlib(head)


def _lz4_frame() -> Any:
    """``lz4.frame`` when the optional ``lz4`` package is installed (joblib needs it as well to
    read its ``compress="lz4"`` files), else None."""
    try:
        import lz4.frame  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except Exception:  # noqa: BLE001 - not installed, or broken: modelsafe cannot decompress
        return None
    return lz4.frame


def _can_decompress(head: bytes) -> bool:
    from modelsafe.registry.sniff import LZ4_FRAME_MAGIC, is_lzma_alone, joblib_zfile_start

    if head.startswith(LZ4_FRAME_MAGIC):
        return _lz4_frame() is not None
    return (
        head.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00"))
        or _is_zlib(head)
        or is_lzma_alone(head)
        or joblib_zfile_start(head) > 0
    )


def _open_compressed(path: Path, head: bytes) -> Any:
    import bz2
    import gzip
    import lzma

    from modelsafe.registry.sniff import LZ4_FRAME_MAGIC, is_lzma_alone, joblib_zfile_start

    if head.startswith(b"\x1f\x8b"):
        return gzip.open(path, "rb")
    if head.startswith(b"BZh"):
        return bz2.open(path, "rb")
    if head.startswith(b"\xfd7zXZ\x00") or is_lzma_alone(head):
        return lzma.open(path, "rb")  # (format auto: xz, or the legacy .lzma "alone" format)
    if head.startswith(LZ4_FRAME_MAGIC):
        frame = _lz4_frame()
        return None if frame is None else frame.LZ4FrameFile(path, "rb")  # (as joblib opens it)
    zfile = joblib_zfile_start(head)
    if zfile or _is_zlib(head):
        return _ZlibReader(path, zfile)
    return None


class _ZlibReader:
    """A raw zlib stream from ``start`` on, read the way joblib's ``BinaryZlibFile`` and
    ``pickle.loads(zlib.decompress(f.read()))`` read it; a stream that ends before its end
    raises EOFError, as gzip's and bz2's readers do."""

    def __init__(self, path: Path, start: int = 0) -> None:
        import zlib

        self.fh = open(path, "rb")  # noqa: SIM115 - closed by __exit__
        self.fh.seek(start)
        self.inflater = zlib.decompressobj()

    def __enter__(self) -> _ZlibReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.fh.close()

    def read1(self, size: int) -> bytes:
        """The next bytes of the content, at most ``size`` (b"" at its end)."""
        while not self.inflater.eof:
            chunk = self.inflater.unconsumed_tail or self.fh.read(_READ_STEP)
            if not chunk:
                raise EOFError("the zlib stream ends before its end-of-stream marker")
            out = self.inflater.decompress(chunk, size)
            if out:
                return out
        return b""


def _decompressed(path: Path, head: bytes) -> tuple[bytes, str] | None:
    """The content of a compressed file, up to :data:`MAX_DECOMPRESSED` + 1 bytes, and why its
    stream broke ("" when it did not). What came out before a break (a missing gzip trailer, a
    wrong CRC, a bz2 or xz file cut short) is kept: loaders that decompress as they unpickle
    (``pickle.load(gzip.open(f))``, ``joblib.load``) run it before they see the break. None when
    it cannot be opened, nothing came out, or its first 4 KiB are no pickle (a ``.csv.gz``, a
    ``.tar.gz``: not decompressed further)."""
    from modelsafe.registry.sniff import HEAD_SIZE

    data = bytearray()
    broken = ""
    checked = False
    try:
        reader = _open_compressed(path, head)
        if reader is None:
            return None
        with reader as fh:
            read = getattr(fh, "read1", None) or fh.read  # (a step at a time: a break loses none)
            while len(data) <= MAX_DECOMPRESSED:
                chunk = read(min(_READ_STEP, MAX_DECOMPRESSED + 1 - len(data)))
                if not chunk:
                    break
                data += chunk
                if not checked and len(data) >= HEAD_SIZE:
                    checked = True
                    if not _may_run(bytes(data[:HEAD_SIZE])):
                        return None
    except Exception as exc:  # noqa: BLE001 - corrupt or cut short: what came out still counts
        broken = (str(exc) or type(exc).__name__)[:200]
    if not data or (not checked and not _may_run(bytes(data))):
        return None
    return bytes(data), broken


def _compressed(path: Path, head: bytes, need_complete: bool) -> list[Finding]:
    """A gzip / bz2 / xz / lzma / zlib / LZ4 / joblib ``ZF`` file holding a pickle
    (``x.pkl.gz``, joblib's ``compress=``): loaders that decompress first (pandas, joblib)
    unpickle it. Its content, decompressed up to :data:`MAX_DECOMPRESSED`, is audited as a
    pickle; a stream that breaks is audited as far as it decompressed, with an error; a pickle
    larger than that is an error; an LZ4 file without the ``lz4`` package is an error; a format
    modelsafe cannot decompress (7-Zip, RAR, zstd) is left to the archive finding."""
    from modelsafe.registry.sniff import LZ4_FRAME_MAGIC, archive_kind
    from modelsafe.registry.torch_archive import read_torch_data

    what = archive_kind(head) or "a zlib-compressed file"
    if head.startswith(LZ4_FRAME_MAGIC) and not _can_decompress(head):
        return [_unaudited_lz4(what)]
    content = _decompressed(path, head)
    if content is None:
        return []
    data, broken = content
    if len(data) > MAX_DECOMPRESSED:
        return [
            Finding(
                "error",
                "compressed-pickle",
                f"{what} whose content may be a pickle and is larger than modelsafe "
                f"decompresses ({MAX_DECOMPRESSED >> 20} MiB): not audited; decompress it and "
                "audit the file it holds",
                scanner="audit",
            )
        ]
    tf = read_torch_data(path, Format.PICKLE.value, data)
    found = _pickle_findings(tf, what, False, need_complete, pickled=True)
    completed = tf.vm is not None and tf.vm.completed
    if broken and (found or completed):
        found.append(
            Finding(
                "error",
                BROKEN_STREAM,
                f"{what} holding a pickle whose compressed stream breaks after "
                f"{len(data):,} decompressed bytes ({broken}): loaders that decompress as they "
                "unpickle (joblib, pickle.load(gzip.open(...))) run what comes before the break "
                "(audited above), then fail; a damaged file or a download cut short",
                scanner="audit",
            )
        )
    if not found and completed:
        return [_data_pickle(what)]
    for item in found:
        if item.code == "disguised-pickle":
            found[found.index(item)] = Finding(
                "unsafe",
                "compressed-pickle",
                f"{what} holding a pickle: loaders that decompress first (joblib, pandas, "
                "pickle.load(gzip.open(...))) would run it",
                scanner="audit",
            )
    return [replace_location(f, "decompressed") for f in found]


BROKEN_STREAM = "broken-compressed-pickle"


def _unaudited_lz4(what: str) -> Finding:
    """An LZ4 frame when the ``lz4`` package is not installed: never ``safe``."""
    return Finding(
        "error",
        "unaudited-archive",
        f"{what}, which joblib.load decompresses and unpickles: a pickle in it may run code. "
        "modelsafe cannot decompress it (the optional lz4 package is not installed), so it is "
        "not audited; install lz4 (pip install lz4) and audit it again, or do not load it",
        scanner="audit",
    )


DATA_PICKLE = "compressed-data-pickle"


def _data_pickle(what: str) -> Finding:
    """What a compressed pickle decompressed whole and run through the VM to its end without a
    finding is: data (``features.pkl.gz``), vouched for, but no model weights."""
    return Finding(
        "warning",
        DATA_PICKLE,
        f"{what} holding a pickle, decompressed and read to its end: nothing in it calls code, "
        "but it is data, not model weights",
        location="decompressed",
        scanner="audit",
    )


# What the audit says of a compressed file it read as a pickle (or an LZ4 file it cannot open).
_COMPRESSED_PICKLE = frozenset(
    {DATA_PICKLE, "compressed-pickle", BROKEN_STREAM, "unaudited-archive"}
)


def _vouched_data(findings: list[Finding]) -> list[Finding]:
    """``findings`` less the scanners' "an archive, not model weights; extract it" error when
    the audit read the compressed file as a pickle: its own findings say what the file is (data
    read to its end: :func:`_data_pickle`; a pickle that calls code; one whose stream breaks;
    an LZ4 file it cannot decompress). As they are otherwise."""
    if not any(f.code in _COMPRESSED_PICKLE for f in findings):
        return findings
    return [f for f in findings if f.code != "not-a-model:archive"]


def replace_location(finding: Finding, prefix: str) -> Finding:
    from dataclasses import replace

    return replace(finding, location=f"{prefix}: {finding.location}".rstrip(": "))


# Suffixes of files people read, not load: a text file with one of them is not probed as a pickle.
_DOC_SUFFIXES = frozenset(
    ".md .txt .rst .json .yaml .yml .toml .cfg .ini .py .html .htm .csv .xml .jinja".split()
)
_CONTENT_FORMATS = frozenset(
    {
        Format.ZIP.value,
        Format.PICKLE.value,
        Format.LEGACY_TORCH.value,
        Format.NUMPY.value,
        Format.GGUF.value,
        Format.SAFETENSORS.value,
    }
)


def _may_load(child: Path) -> bool:
    """Whether a file in a folder is one a loader could run: by name, or by its first bytes
    (``model_best.pth.tar``, ``.npz``, ``.joblib``, no suffix at all)."""
    from modelsafe.registry.sniff import MODEL_EXTENSIONS, is_tar_header

    if child.suffix.lower() in MODEL_EXTENSIONS:
        return True
    try:
        head = read_head(child)
    except OSError:
        return True  # let audit_path report it
    fmt = sniff(head).value
    if fmt in _CONTENT_FORMATS or is_tar_header(head):
        return True
    if fmt == Format.TEXT.value and child.suffix.lower() not in _DOC_SUFFIXES:
        from modelsafe.registry.pickle_vm.machine import EXACT_STOPS, run_pickle
        from modelsafe.registry.sniff import HEAD_SIZE

        probe = run_pickle(head, label="probe")
        if probe.completed or probe.unsafe:
            return True
        # Ran off the end of the head (the file goes on) without an exact stop: look further.
        last = probe.findings[-1].code if probe.findings else ""
        return probe.end >= len(head) >= HEAD_SIZE and last not in EXACT_STOPS
    return False


def _probe_other(child: Path) -> list[Finding]:
    """The pickle probe for a file in a folder that is not audited as a model."""
    from modelsafe.registry.pickle_vm.limits import file_budget
    from modelsafe.registry.sniff import archive_kind

    if _special_kind(child):
        return []
    try:
        head = read_head(child)
        fmt = sniff(head).value
        doc = child.suffix.lower() in _DOC_SUFFIXES
        with file_budget() as budget:
            found = disguised_pickle(child, head, fmt, valid=True, need_complete=doc)
    except OSError:
        return []
    if budget.spent:
        found = list(_within_budget(Verdict(child, "safe", fmt, tuple(found)), True).findings)
    kind = archive_kind(head)
    said = any(f.code == "unaudited-archive" for f in found)  # (an LZ4 file: said already)
    if kind and "tar" not in kind and not _can_decompress(head) and not said:
        found.append(
            Finding(
                "error",
                "unaudited-archive",
                f"{kind} modelsafe cannot open: a loader that decompresses it first may "
                "unpickle what it holds; extract it and audit the files inside",
                scanner="audit",
            )
        )
    return found


def _named(finding: Finding, scanner: str) -> Finding:
    from dataclasses import replace

    return replace(finding, scanner=scanner)


# The kernel's pseudo-file systems: no model is kept there, and reading some of their files
# blocks (``/proc/kmsg``) or never ends. A regular file anywhere else is read like any other
# (``/dev/shm`` and any tmpfs hold ordinary files: weights are copied there to load fast); a
# FIFO, a device or a socket is never opened wherever it is (:func:`_special_kind`).
_SYSTEM_FOLDERS = ("/proc/", "/sys/")


def in_system_folder(path: Path) -> bool:
    """A path into /proc or /sys (through a link): never read."""
    return (os.path.realpath(path) + "/").startswith(_SYSTEM_FOLDERS)


def not_read(child: Path) -> str:
    """Why the audit of a folder does not read ``child``, one of its entries ("" when it reads
    it): a path leading into /proc or /sys, or a FIFO, device or socket (opening one blocks or
    never ends, and a loader that opens it reads whatever is written into it)."""
    if in_system_folder(child):
        where = os.path.realpath(child)
        return f"leads to {where}, in a system folder: not read"
    special = _special_kind(child)
    return f"is {special}, not a regular file: not opened" if special else ""


def _unread_finding(rel: Path, why: str) -> Finding:
    """An entry of a folder a loader may read that the audit did not: never ``safe``."""
    from modelsafe.registry.walk import printable

    return Finding(
        "error",
        "not-read",
        f"{rel.as_posix()} {why}; the audit cannot vouch for what a loader reads there",
        location=printable(str(rel)),
        scanner="audit",
    )


# The Hugging Face hub's bookkeeping, in its own places only: a cache repo folder
# (`models--org--name`, `datasets--`, `spaces--`) keeps empty files marking names the repo does
# not have in `.no_exist/<rev>/<name>`; a `--local-dir` download keeps its state (and partial
# `.incomplete` files) in a `.cache/huggingface/` folder, with no model file in it. A `.no_exist`
# anywhere else, a `mixes.cache/huggingface`, or a `.cache/huggingface` holding a model file
# (`evil.ckpt`, which ComfyUI lists) is an ordinary folder that loaders read.


def _hub_bookkeeping(top: Path, rel: Path) -> bool:
    """Whether the folder ``rel`` (relative to the audited folder ``top``) is hub bookkeeping."""
    parts = rel.parts
    if parts[-1] == ".no_exist":
        from modelsafe.registry.hf_cache import HF_REPO_PREFIXES

        repo = parts[-2] if len(parts) > 1 else os.path.basename(os.path.realpath(top))
        return repo.startswith(HF_REPO_PREFIXES)
    if parts[-2:] != (".cache", "huggingface"):
        return False
    from modelsafe.registry.walk import holds_model_file

    return not holds_model_file(str(top / rel))


def hub_bookkeeping(folder: Path) -> bool:
    """Whether ``folder`` is the Hugging Face hub's own bookkeeping, judged by where it is
    (the rule ``audit DIR`` leaves out: :func:`_hub_bookkeeping`)."""
    return _hub_bookkeeping(folder.parent, Path(folder.parent.name, folder.name))


def folder_files(
    path: Path, unread: list[tuple[Path, Path]] | None = None
) -> list[tuple[Path, Path]]:
    """(file, its path relative to ``path``) for everything under ``path`` that is no folder,
    sorted by that relative path; each folder a link leads into /proc or /sys is not entered,
    and goes to ``unread`` (the caller reports it: :func:`not_read`). Symlinked folders are
    followed (``Path.rglob`` and ``os.walk`` do not, and a ``unet -> ../elsewhere`` link hid
    all it holds), each folder once: one reached again (a link loop, two links to one folder)
    is not walked again."""
    seen: set[tuple[int, int]] = set()
    found: list[tuple[Path, Path]] = []
    stack: list[tuple[Path, Path]] = [(path, Path())]
    while stack:
        folder, rel = stack.pop()
        try:
            st = folder.stat()
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            if rel.parts and in_system_folder(folder):
                if unread is not None:  # (a link into /proc or /sys: not read)
                    unread.append((folder, rel))
                continue
            entries = list(os.scandir(folder))
        except OSError:
            continue  # (a folder that vanished or cannot be listed: nothing a loader reads)
        for entry in entries:
            try:
                is_dir = entry.is_dir()  # (follows a symlink)
            except OSError:
                is_dir = False
            if is_dir and _hub_bookkeeping(path, rel / entry.name):
                continue  # (no loader reads them: empty "does not exist" markers, download state)
            if is_dir:
                stack.append((folder / entry.name, rel / entry.name))
            else:
                found.append((folder / entry.name, rel / entry.name))
    return sorted(found, key=lambda item: item[1].parts)


_MAX_INDEX_JSON = 64 << 20


def is_index_name(name: str) -> bool:
    """Whether ``name`` is a shard index's, as loaders name them: ``<weights>.index.json``, or
    with a variant before the last dot (``model.safetensors.index.fp16.json``,
    ``pytorch_model.bin.index.fp16.json``: what ``from_pretrained(variant="fp16")`` of
    transformers and diffusers opens), in any case (a case-insensitive file system opens
    ``MODEL.SAFETENSORS.INDEX.JSON`` too). ``model_index.json`` is no shard index."""
    lower = name.lower()
    return lower.endswith(".json") and ".index." in lower


def index_shard_names(folder: Path) -> list[str]:
    """The shard names every readable shard index directly in ``folder`` (any name
    :func:`is_index_name` takes) holds in its ``weight_map``, as written (loaders join each to
    the folder)."""
    try:
        names = [entry.name for entry in os.scandir(folder) if is_index_name(entry.name)]
    except OSError:
        return []
    return sorted({shard for name in names for shard in _shard_names(folder / name)})


def shard_findings(index: Path) -> list[Finding]:
    """A sharded checkpoint's index (``*.index.json``) whose ``weight_map`` names a shard by an
    absolute path or through ``..``: transformers and diffusers join the name to the index's
    folder unchecked, so loading reads a file outside the folder, one the audit did not see."""
    outside = sorted(shard for shard in _shard_names(index) if outside_folder(shard))
    return [
        Finding(
            "unsafe",
            "shard-outside",
            f"the shard index names {shard!r}: a shard outside the folder; loading reads a "
            "file the audit did not see",
            scanner="audit",
        )
        for shard in outside[:5]
    ]


def _shard_names(index: Path) -> set[str]:
    """The file names a shard index's ``weight_map`` holds (none when it cannot be read)."""
    try:
        if index.stat().st_size > _MAX_INDEX_JSON:
            return set()
        data = json.loads(index.read_bytes())
    except (OSError, ValueError, RecursionError):
        return set()
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict):
        return set()
    return {shard for shard in weight_map.values() if isinstance(shard, str)}


def outside_folder(shard: str) -> bool:
    """Whether a shard name leads out of its index's folder: absolute, or through ``..``."""
    from pathlib import PurePosixPath, PureWindowsPath

    return (
        PurePosixPath(shard).is_absolute()
        or PureWindowsPath(shard).anchor != ""
        or ".." in shard.replace("\\", "/").split("/")
    )


def _indexed_shards(files: list[tuple[Path, Path]]) -> dict[str, tuple[Path, Path, bool]]:
    """Every file a shard index in the folder names inside it, as loaders join the name to the
    index's folder: its real path -> (that path, its path relative to the folder, whether a
    loader may pass its index over). torch.load reads each of them whatever its name or folder
    (a ``notes.txt``, a hidden ``.no_exist/``). An index may be passed over when another index
    beside it has all its shards (a download of the safetensors shards only keeps
    ``pytorch_model.bin.index.json``, whose shards it never fetched: loaders take the complete
    one).

    An index in a subfolder names files of the folders above it too (up to the audited one):
    transformers joins the names of the index a config's ``transformers_weights`` names
    (``sub/model.safetensors.index.json``) to the model folder, not to the index's, and loads
    ``MODEL/notes.txt``. Each file a name reaches there is audited as a shard as well (a name
    that reaches none there is no missing shard)."""
    indexes = {
        child: (rel, sorted(_shard_names(child)))
        for child, rel in files
        if is_index_name(child.name)
    }
    complete = {
        i.parent
        for i, (_rel, names) in indexes.items()
        if names and all(_is_file(i, n) for n in names)
    }
    named: dict[str, tuple[Path, Path, bool]] = {}
    for child, (rel, names) in indexes.items():
        optional = child.parent in complete and not all(_is_file(child, n) for n in names)
        for shard in names:
            if not outside_folder(shard):  # (one outside: shard_findings, unsafe)
                _add_shard(named, child.parent / shard, rel.parent / shard, optional)
    for child, (rel, names) in indexes.items():
        for up in range(1, len(rel.parts)):  # (the folders above the index's, in the audited one)
            base, base_rel = child.parents[up], rel.parents[up]
            for shard in names:
                if not outside_folder(shard) and _is_file(base / "index", shard):
                    _add_shard(named, base / shard, base_rel / shard, True)
    return named


def _add_shard(
    named: dict[str, tuple[Path, Path, bool]], shard: Path, rel: Path, optional: bool
) -> None:
    try:
        real = os.path.realpath(shard)
    except (OSError, ValueError):  # (a NUL in the name: no loader opens it)
        real = ""
    named.setdefault(real or str(rel), (shard, rel, optional))


def _bad_indexes(files: list[tuple[Path, Path]]) -> list[Finding]:
    """An ``error`` for each shard index in the folder that the audit cannot read (larger than
    it reads, not JSON), wherever it is: the shards a loader takes from it (one that reads a
    large index, ``from_pretrained(root, subfolder="x")``) are unknown, so the folder is never
    ``safe``."""
    from modelsafe.registry.walk import printable

    found = []
    for child, rel in files:
        if not is_index_name(child.name):
            continue
        why = index_unread(child)
        if why:
            found.append(
                Finding(
                    "error",
                    "unread-index",
                    f"the shard index {rel.as_posix()} {why}: the audit cannot tell which "
                    "files a loader reads from it",
                    location=printable(str(rel)),
                    scanner="audit",
                )
            )
    return found


def index_unread(index: Path) -> str:
    """Why a shard index cannot be read for its shard names ("" when it can)."""
    try:
        size = index.stat().st_size
        if size > _MAX_INDEX_JSON:
            return f"is {size:,} bytes, more than the {_MAX_INDEX_JSON >> 20} MiB the audit reads"
        json.loads(index.read_bytes())
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    except (ValueError, RecursionError):
        return "is not valid JSON (a loader fails on it, or reads it otherwise)"
    return ""


def _is_file(index: Path, shard: str) -> bool:
    """Whether ``shard`` (as an index names it) is a regular file beside ``index``; False for
    a name no file system takes (too long, a NUL)."""
    if outside_folder(shard):
        return False
    try:
        return (index.parent / shard).is_file()
    except (OSError, ValueError):
        return False


# The libraries a diffusers model_index.json may name without shipping code of its own.
KNOWN_LIBRARIES = frozenset({"diffusers", "transformers"})


def custom_classes(folder: Path) -> list[str]:
    """``component: module.Class`` for each component of a diffusers folder's model_index.json
    (and the pipeline itself) whose class is code shipped in the folder (``unet/evil.py``),
    which only ``trust_remote_code`` loads."""
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return []
    if not isinstance(index, dict):
        return []
    found = []
    if isinstance(index.get("_class_name"), list):  # a custom pipeline class: [module, class]
        found.append(f"pipeline: {'.'.join(str(x) for x in index['_class_name'])}")
    from modelsafe.registry.formats.diffusers_dir_reader import declared_components

    for name, (library, cls) in declared_components(index).items():
        if not isinstance(library, str) or library in KNOWN_LIBRARIES:
            continue
        # (diffusers also takes its own pipeline modules here, as SD 1.5's safety_checker
        # ["stable_diffusion", ...]: only a module the folder ships is code of its own)
        if any((where / f"{library}.py").is_file() for where in (folder / name, folder)):
            found.append(f"{name}: {library}.{cls}")
    return found


def custom_code_findings(folder: Path, files: list[Path]) -> list[Finding]:
    """Warnings for Python code shipped in a model folder and for components naming classes
    outside diffusers/transformers: nothing runs it when loading without ``trust_remote_code``
    (modelsafe never sets it), but a tool that sets it runs that code."""
    code = [str(rel) for rel in files if rel.suffix.lower() == ".py"]
    classes = custom_classes(folder)
    found = remote_code_findings(folder, files)
    if classes:
        found.append(
            Finding(
                "warning",
                "custom-code",
                f"model_index.json names classes of its own code ({'; '.join(classes[:5])}): "
                "only a loader with trust_remote_code runs them "
                "(modelsafe never does, so it cannot load this model)",
                location="model_index.json",
                scanner="audit",
            )
        )
    if code:
        found.append(
            Finding(
                "warning",
                "python-code",
                f"Python code ships with the model ({', '.join(code[:5])}"
                f"{', ...' if len(code) > 5 else ''}): a loader with trust_remote_code runs it; "
                "read it before letting any tool do that",
                location=code[0],
                scanner="audit",
            )
        )
    return found


# Configs whose ``auto_map`` transformers follows (the model's, a tokenizer's, a processor's).
_AUTO_MAP_CONFIGS = ("config.json", "tokenizer_config.json")
_MAX_CONFIG_JSON = 16 << 20


def remote_code_findings(folder: Path, files: Iterable[Path] = ()) -> list[Finding]:
    """A ``remote-code`` warning for each config (``config.json``, ``*_config.json``, at the
    top of ``folder`` or among ``files``, relative to it) whose ``auto_map`` names a class in
    another repository (``"AutoModel": "attacker/repo--modeling_evil.EvilModel"``): with
    ``trust_remote_code=True`` transformers downloads that repository's code and runs it. The
    folder ships no such code, so nothing of it is audited (a local ``.py`` gets
    ``python-code``)."""
    from modelsafe.registry.walk import printable

    configs = {Path(name) for name in _AUTO_MAP_CONFIGS}
    configs |= {
        rel for rel in files if rel.name == "config.json" or rel.name.endswith("_config.json")
    }
    found = []
    for rel in sorted(configs):
        refs = _remote_refs(folder / rel)
        if not refs:
            continue
        shown = "; ".join(f"{key}: {ref}" for key, ref in refs[:5])
        more = f" and {len(refs) - 5} more" if len(refs) > 5 else ""
        found.append(
            Finding(
                "warning",
                "remote-code",
                f"{rel.as_posix()}'s auto_map names code in another repository ({shown}{more}): "
                "a loader with trust_remote_code=True downloads that code and runs it; "
                "modelsafe cannot audit it (it is not in the folder), and never sets "
                "trust_remote_code",
                location=printable(str(rel)),
                scanner="audit",
            )
        )
    return found


def _remote_refs(config: Path) -> list[tuple[str, str]]:
    """(auto class, reference) for each ``auto_map`` entry of ``config`` that names another
    repository (``repo--module.Class``; a tokenizer's is a [slow, fast] pair)."""
    try:
        if not config.is_file() or config.stat().st_size > _MAX_CONFIG_JSON:
            return []
        data = json.loads(config.read_bytes())
    except (OSError, ValueError, RecursionError):
        return []
    auto_map = data.get("auto_map") if isinstance(data, dict) else None
    if not isinstance(auto_map, dict):
        return []
    refs = []
    for key, value in auto_map.items():
        for ref in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(ref, str) and "--" in ref:
                refs.append((str(key), ref))
    return refs


def _unloadable(folder: Path) -> list[Finding]:
    """Why a model folder (a diffusers pipeline, a component or sharded folder) cannot be loaded,
    as the reader ``inspect`` uses finds it: a shard or a component's weights missing, an index
    that is not JSON or that names tensors a shard lacks. Its files alone audit clean then."""
    from modelsafe.errors import ModelsafeError
    from modelsafe.registry.formats.diffusers_dir_reader import is_model_dir
    from modelsafe.registry.read import read_index

    if not is_model_dir(folder):
        return []
    try:
        read_index(folder)
    except (ModelsafeError, OSError) as exc:
        reason = exc.reason if isinstance(exc, ModelsafeError) else f"cannot read: {exc}"
        hint = exc.hint if isinstance(exc, ModelsafeError) else ""
        message = f"{reason}; {hint}" if hint else reason
        return [Finding("error", "cannot-load", message, scanner="audit")]
    return []


def _unseen_shards(
    shards: Iterable[tuple[Path, Path, bool]],
) -> tuple[list[Finding], list[Finding]]:
    """The files shard indexes name that the folder's walk did not reach (in a folder it skips,
    or reached through another path): the findings of each one, audited in full, and a
    ``shard-missing`` error for each that is no file (the audit cannot vouch for what loading
    reads), unless its index is one loaders pass over (:func:`_indexed_shards`)."""
    from modelsafe.registry.walk import printable

    found: list[Finding] = []
    missing: list[Path] = []
    for shard, rel, optional in shards:
        try:
            absent = shard.is_dir() or not (shard.exists() or shard.is_symlink())
        except (OSError, ValueError):  # (a name too long for the file system: no loader opens it)
            absent = True
        if absent or in_system_folder(shard):
            if not (absent and optional):
                missing.append(rel)
            continue
        sub = audit_path(shard)
        found.extend(replace_location(f, printable(str(rel))) for f in sub.findings)
    missed = [
        Finding(
            "error",
            "shard-missing",
            f"the shard index names {rel.as_posix()!r}, which is no file in the folder: "
            "loading fails or reads a file the audit did not see",
            location=printable(str(rel)),
            scanner="audit",
        )
        for rel in missing[:5]  # (as many as shard_findings names)
    ]
    return found, missed


def _audit_folder(path: Path) -> Verdict:
    """A folder is as safe as the least safe model file in it, whatever the files are named;
    symlinked folders in it are audited too (a loader follows them)."""
    findings: list[Finding] = []
    audited = 0
    unread: list[tuple[Path, Path]] = []
    files = folder_files(path, unread)
    shards = _indexed_shards(files)
    for child, rel in sorted([*files, *unread], key=lambda item: item[1].parts):
        why = not_read(child)
        if why:
            findings.append(_unread_finding(rel, why))
            continue
        if not child.is_file():
            continue
        shard = bool(shards) and shards.pop(os.path.realpath(child), None) is not None
        if not shard and not _may_load(child):
            # Not a model by name or content, but pickle.load / torch.load / numpy.load would
            # still unpickle it (an unknown-looking pickle, an "HTML" one, a long protocol-0
            # one, a gzip / zlib-compressed one): only what it runs is reported.
            findings.extend(replace_location(f, str(rel)) for f in _probe_other(child))
            if is_index_name(child.name):
                findings.extend(replace_location(f, str(rel)) for f in shard_findings(child))
            continue
        audited += 1
        sub = audit_path(child)
        findings.extend(replace_location(f, str(rel)) for f in sub.findings)
        if sub.status != "safe" and not sub.findings:
            findings.append(Finding(sub.status, "component", f"{rel} is {sub.status}"))
    unseen, missing = _unseen_shards(shards.values())
    findings.extend(unseen)
    audited += len(shards)  # (one that is missing is an error below)
    unloadable = _unloadable(path) if verdict_status(findings) == "safe" else []
    findings.extend(unloadable or missing)  # (inspect's reason, when it gives one)
    if not unloadable:  # (else it says why the model does not load: an index among them)
        findings.extend(_bad_indexes(files))
    rels = [rel for _child, rel in files]
    if any((path / name).is_file() for name in ("model_index.json", "config.json")):
        findings.extend(custom_code_findings(path, rels))
    else:  # (a tokenizer's folder, configs deeper down)
        findings.extend(remote_code_findings(path, rels))
    skipped = any(f.code == "not-read" for f in findings)  # (an error of its own)
    if not audited and not unloadable and not skipped:
        # Nothing to vouch for is not "safe": a folder named like a model file, an empty download.
        findings.append(
            Finding("error", "no-model-files", "the folder holds no file a loader could read")
        )
    return Verdict(path, verdict_status(findings), Format.DIFFUSERS_DIR.value, tuple(findings))
