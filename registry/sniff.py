"""Tell what a file really is from its first bytes, whatever its name says."""

from __future__ import annotations

import struct
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelsafe.types import Finding, Format

HEAD_SIZE = 4096

# torch's legacy (pre-1.6) serialisation starts with a protocol-2 pickle of this LONG1 magic number.
LEGACY_TORCH_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PREFIX = b"\x80\x02\x8a\x0a" + LEGACY_TORCH_MAGIC.to_bytes(10, "little")

_LFS_PREFIX = b"version https://git-lfs.github.com/spec/v1"

# Extensions users give each format; used only to report a name that lies about the content.
EXTENSIONS: dict[str, tuple[str, ...]] = {
    Format.SAFETENSORS.value: (".safetensors", ".sft"),
    Format.TORCH_ZIP.value: (".ckpt", ".pt", ".pth", ".bin", ".pkl"),
    Format.ZIP.value: (".ckpt", ".pt", ".pth", ".bin", ".zip"),
    Format.LEGACY_TORCH.value: (".ckpt", ".pt", ".pth", ".bin"),
    Format.PICKLE.value: (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle"),
    Format.GGUF.value: (".gguf",),
    Format.NUMPY.value: (".npy",),
}


@dataclass(frozen=True)
class NotAModel:
    """What a file that is not a model really is: a finding code, the reason and what to do."""

    code: str
    reason: str
    hint: str


# The one table `inspect` (as an error) and `audit` (as an `error` verdict) both say.
_NOT_A_MODEL: dict[str, NotAModel] = {
    Format.EMPTY.value: NotAModel(
        "empty", "the file is empty (0 bytes): an interrupted download", "download it again"
    ),
    Format.LFS_POINTER.value: NotAModel(
        "git-lfs-pointer",
        "the file is a git-lfs pointer (a {size}-byte text stub), not the model's data",
        "run `git lfs pull` in the repository, or download the file itself",
    ),
    Format.HTML.value: NotAModel(
        "html",
        "the file is an HTML page (a login or error page saved instead of the model)",
        "download it again; some sites need you to log in or accept a licence first",
    ),
    Format.JSON.value: NotAModel(
        "json",
        "the file is JSON (a config or an API error), not model weights",
        "look for the weights file beside it",
    ),
    Format.TEXT.value: NotAModel(
        "text", "the file is plain text, not model weights", "download it again"
    ),
    Format.ARCHIVE.value: NotAModel(
        "archive",
        "the file is {archive}, not model weights",
        "extract it; the model file is inside",
    ),
    Format.ZEROS.value: NotAModel(
        "zeros",
        "the file starts with nothing but zero bytes ({size} bytes in all): a download "
        "preallocated at full size that never received its data, or a wiped file",
        "download it again",
    ),
}

# Magic numbers of archive and compression formats people download models packed in.
_ARCHIVES: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "a gzip-compressed file"),
    (b"\xfd7zXZ\x00", "an xz-compressed file"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"\x28\xb5\x2f\xfd", "a zstd-compressed file"),
    (b"BZh", "a bzip2-compressed file"),
)


def archive_kind(head: bytes) -> str | None:
    """What archive or compressed file ``head`` starts, or None."""
    for magic, what in _ARCHIVES:
        if head.startswith(magic) and (magic != b"BZh" or head[3:4].isdigit()):
            return what
    if is_tar_header(head):
        return "a tar archive"
    return None


def not_a_model(fmt: str, size: int, head: bytes = b"") -> NotAModel | None:
    """What a file of sniffed format ``fmt`` really is, when that is not a model at all."""
    found = _NOT_A_MODEL.get(fmt)
    if found is None:
        return None
    archive = archive_kind(head) or "an archive or compressed file"
    return NotAModel(found.code, found.reason.format(size=size, archive=archive), found.hint)


MODEL_EXTENSIONS = frozenset(
    {".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".pkl", ".pickle", ".npy"}
)


def read_head(path: Path, size: int = HEAD_SIZE) -> bytes:
    """The first ``size`` bytes of a file (fewer if the file is shorter)."""
    with open(path, "rb") as fh:
        return fh.read(size)


def sniff(head: bytes) -> Format:
    """Judge a file's format from its first bytes."""
    if not head:
        return Format.EMPTY
    if head.startswith(b"GGUF"):
        return Format.GGUF
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return Format.ZIP
    if head.startswith(b"\x93NUMPY"):
        return Format.NUMPY
    if head.startswith(_LEGACY_PREFIX):
        return Format.LEGACY_TORCH
    if _looks_like_safetensors(head):
        return Format.SAFETENSORS
    if head.startswith(_LFS_PREFIX):
        return Format.LFS_POINTER
    if len(head) >= 2 and head[0] == 0x80 and head[1] <= 5:
        return Format.PICKLE
    if archive_kind(head) is not None:
        return Format.ARCHIVE
    if head.count(0) == len(head):
        return Format.ZEROS
    text = head.lstrip()
    lowered = text[:512].lower()
    if lowered.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml")) or b"<html" in lowered:
        return Format.HTML
    if text[:1] in (b"{", b"["):
        return Format.JSON
    if _is_text(head):
        return Format.TEXT
    # Protocol 0/1 pickles have no header; these openers are how pickle.dumps starts them.
    if head[:1] in (b"(", b"}", b"]", b"c", b"\x80"):
        return Format.PICKLE
    return Format.UNKNOWN


TAR_POLYGLOT = (
    "the file is also a tar archive (its first 512 bytes are a valid tar header): "
    "torch.load without weights_only=True opens it as the ancient tar checkpoint format first "
    "and unpickles its 'storages' member with no checks, whatever the rest of the file says"
)


def check_tar(findings: list[Finding], data: Any) -> None:
    """Add the ``polyglot-tar`` finding when ``data`` opens as a tar archive (once)."""
    if is_tar_header(bytes(data[:512])) and not any(f.code == "polyglot-tar" for f in findings):
        findings.append(Finding("unsafe", "polyglot-tar", TAR_POLYGLOT, "byte 0"))


def is_tar_header(block: bytes) -> bool:
    """True when ``block`` starts with a tar header that ``tarfile.open(mode="r:")`` accepts.

    Only the first 512-byte header is parsed (its number fields and checksum, as tarfile checks
    them); nothing after it is read, so this is cheap and bounded on any input.
    """
    if len(block) < tarfile.BLOCKSIZE or block[: tarfile.BLOCKSIZE].count(0) == tarfile.BLOCKSIZE:
        return False
    try:
        tarfile.TarInfo.frombuf(block[: tarfile.BLOCKSIZE], "utf-8", "surrogateescape")
    except Exception:  # noqa: BLE001 - tarfile raises HeaderError subclasses; anything means no
        return False
    return True


def _looks_like_safetensors(head: bytes) -> bool:
    if len(head) < 10:
        return False
    (length,) = struct.unpack("<Q", head[:8])
    return 2 <= length < (1 << 40) and head[8:9] == b"{"


def _is_text(head: bytes) -> bool:
    try:
        decoded = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(ch.isprintable() or ch in "\r\n\t" for ch in decoded)


def extension_lies(path: Path, fmt: str) -> str | None:
    """A warning when the file's extension belongs to another format than its content."""
    suffix = path.suffix.lower()
    if suffix not in MODEL_EXTENSIONS:
        return None
    expected = EXTENSIONS.get(fmt)
    if expected is None or suffix in expected:
        return None
    return f"extension {suffix!r} says one format but the content is {fmt}; read as {fmt}"
