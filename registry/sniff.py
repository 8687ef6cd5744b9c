"""Tell what a file really is from its first bytes, whatever its name says."""

from __future__ import annotations

import json
import math
import os
import re
import stat
import struct
import tarfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

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
        "the file starts with nothing but zero bytes ({size_text} in all): a download "
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
    if is_lzma_alone(head):
        return "an lzma-compressed file"
    if head.startswith(LZ4_FRAME_MAGIC):
        return LZ4_KIND
    if joblib_zfile_start(head) > 0:
        return ZFILE_KIND
    return None


# An LZ4 frame (``lz4.frame``: joblib's ``compress="lz4"``, a ``.lz4`` file).
LZ4_FRAME_MAGIC = b"\x04\x22\x4d\x18"
LZ4_KIND = 'an LZ4-compressed file (joblib\'s compress="lz4")'
# joblib's old compressed format (joblib < 0.10; ``joblib.load`` still reads it): ``ZF``, the
# content's length in hex padded to 19 characters (one more space in joblib <= 0.8.4), then a
# zlib stream of the pickle.
ZFILE_KIND = 'a joblib "ZF" file (joblib\'s old zlib-compressed format)'
_ZFILE_PREFIX = b"ZF"
_ZFILE_LENGTH = 19


def joblib_zfile_start(head: bytes) -> int:
    """Where the zlib stream of a joblib ``ZF`` file starts (0: ``head`` starts none): the
    length field parses as ``int(field, 16)`` parses it (joblib's ``read_zfile``) and a zlib
    header follows it."""
    if not head.startswith(_ZFILE_PREFIX):
        return 0
    start = len(_ZFILE_PREFIX) + _ZFILE_LENGTH
    try:
        int(head[len(_ZFILE_PREFIX) : start], 16)
    except ValueError:
        return 0
    if head[start : start + 1] == b" ":  # (joblib <= 0.8.4 wrote one more space)
        start += 1
    return start if is_zlib(head[start:]) else 0


def is_zlib(head: bytes) -> bool:
    """A raw zlib stream's header (joblib's ``compress=`` files, ``zlib.compress`` output)."""
    return (
        len(head) >= 2
        and head[0] & 0x0F == 8
        and head[0] >> 4 <= 7
        and ((head[0] << 8) | head[1]) % 31 == 0
        and not head[1] & 0x20  # no preset dictionary
    )


_LZMA_MAX_PROPERTIES = 225  # (pb * 5 + lp) * 9 + lc, with pb, lp <= 4 and lc <= 8
_LZMA_MAX_SIZE = 1 << 38
_LZMA_UNKNOWN = (1 << 64) - 1


def is_lzma_alone(head: bytes) -> bool:
    """The legacy ``.lzma`` ("alone") header that ``lzma.open``, joblib (``compress="lzma"``) and
    pandas (``.xz``) decompress, as liblzma's format detection checks it (``lzma.open`` reads
    any file that is not xz this way): a properties byte with ``lc + lp <= 4``, a dictionary
    size of 2^n or 2^n + 2^(n-1) (any, 0 and 4 GiB - 1 included), an uncompressed size below
    2^38 or unknown, and the range coder's first byte 0. A declared size of 0 holds nothing to
    unpickle (and keeps a file of zero bytes from reading as one). No pickle that loads starts
    so (its zero bytes are no opcodes)."""
    if len(head) < 14 or head[13] != 0 or head[0] >= _LZMA_MAX_PROPERTIES:
        return False
    lp, lc = divmod(head[0] % 45, 9)
    if lc + lp > 4:
        return False
    dict_size, size = struct.unpack("<IQ", head[1:13])
    low = dict_size & -dict_size  # (the lowest set bit)
    shaped = dict_size in (low, 3 * low, 0xFFFFFFFF)
    return shaped and (size == _LZMA_UNKNOWN or 0 < size < _LZMA_MAX_SIZE)


def not_a_model(fmt: str, size: int, head: bytes = b"", name: str = "") -> NotAModel | None:
    """What a file of sniffed format ``fmt`` really is, when that is not a model at all.
    ``name``: the file's name, when known (a side file's hint then names its model)."""
    found = _NOT_A_MODEL.get(fmt)
    if found is None:
        return None
    if fmt == Format.TEXT.value and _is_url_shortcut(head):
        return _url_shortcut(head)
    for kind, matches, what in _SAVED_ANSWERS:
        if fmt == kind and matches(head):
            model = name.partition(":")[0] if matches is _is_zone_identifier else ""
            return NotAModel(what.code, what.reason, f"the model is {model}") if model else what
    answer = _server_answer(fmt, size, head)
    if answer is not None:
        return answer
    archive = archive_kind(head) or "an archive or compressed file"
    from modelsafe.units import format_size

    reason = found.reason.format(size=size, size_text=format_size(size), archive=archive)
    return NotAModel(found.code, reason, found.hint)


def packed_archive(what: str) -> NotAModel:
    """The "extract it" answer for ``what`` (e.g. "a zip archive holding x.safetensors")."""
    found = _NOT_A_MODEL[Format.ARCHIVE.value]
    return NotAModel(found.code, found.reason.format(archive=what), found.hint)


MODEL_EXTENSIONS = frozenset(
    {".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".pkl", ".pickle", ".npy"}
)


def open_regular(path: str | os.PathLike[str]) -> BinaryIO | None:
    """The regular file at ``path`` (links followed) opened for reading; None for anything else
    (a FIFO, a device or a socket is opened without blocking, then passed over) and for what
    cannot be opened. The caller closes it (``with``)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except (OSError, ValueError):
        return None
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        regular = False
    if not regular:
        os.close(fd)
        return None
    return os.fdopen(fd, "rb")


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
    if _is_url_shortcut(head) or _is_zone_identifier(head) or _is_utf16_text(head):
        return Format.TEXT
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


# JSON's whitespace: the safetensors library (serde_json) takes it before the header's ``{``.
JSON_SPACE = b" \t\r\n"
_MAX_LENGTH = 1 << 40  # a header length past this is no safetensors file's


def _looks_like_safetensors(head: bytes) -> bool:
    if len(head) < 10:
        return False
    (length,) = struct.unpack("<Q", head[:8])
    return 2 <= length < _MAX_LENGTH and head[8 : 8 + length].lstrip(JSON_SPACE)[:1] == b"{"


def _is_text(head: bytes) -> bool:
    try:
        decoded = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return _printable(decoded)


def _printable(text: str) -> bool:
    return all(ch.isprintable() or ch in "\r\n\t" for ch in text)


def _is_utf16_text(head: bytes) -> bool:
    """UTF-16 text with its byte-order mark (a Windows "Access denied" page, a saved note)."""
    if not head.startswith((b"\xff\xfe", b"\xfe\xff")) or len(head) < 4:
        return False
    try:
        decoded = head[: len(head) & ~1].decode("utf-16")
    except UnicodeDecodeError:
        return False
    return _printable(decoded)


_URL_SHORTCUT = b"[internetshortcut]"


def _is_url_shortcut(head: bytes) -> bool:
    """A Windows Internet shortcut (``.url``): ``[InternetShortcut]`` then ``URL=...``."""
    return head.lstrip().lower().startswith(_URL_SHORTCUT)


def _url_shortcut(head: bytes) -> NotAModel:
    url = next(
        (
            line[4:].strip().decode("utf-8", "replace")[:200]
            for line in head.splitlines()
            if line.lower().startswith(b"url=")
        ),
        "",
    )
    return NotAModel(
        "url-shortcut",
        "the file is an Internet shortcut (.url file)"
        + (f" to {url}" if url else "")
        + ", not model weights",
        "open the link and download the model file itself",
    )


def _is_zone_identifier(head: bytes) -> bool:
    """Windows' download-origin note (the ``NAME:Zone.Identifier`` stream, copied out as a file
    by WSL, 7-Zip or a network share): INI text starting ``[ZoneTransfer]``."""
    return head.lstrip(b"\xef\xbb\xbf \t\r\n").lower().startswith(b"[zonetransfer]")


def _hf_gated(head: bytes) -> bool:
    """Hugging Face's answer for a gated model downloaded without access, saved as the model."""
    return head.startswith(b"Access to model ") and b" is restricted" in head[:512]


def _civitai_login(head: bytes) -> bool:
    """Civitai's JSON answer for a model whose creator requires a logged-in download."""
    text = head[:1024].lower()
    return b"requires you to be logged in" in text or b'"error":"unauthorized"' in text


# The longest server answer quoted in a reason, and the size below which a file of text or JSON
# is taken for one (a config or a README is longer, and is not quoted).
_QUOTE_CHARS = 160
_ANSWER_MAX_BYTES = 2048
_JSON_ERROR_KEYS = ("error", "message", "detail", "errors", "msg")
_RETRY_LATER = ("too many requests", "rate limit", "429", "try again later", "slow down")
_GONE = ("not found", "404", "does not exist", "no such", "removed", "deleted")
_EXPIRED = ("expired", "request has expired", "signature", "expiredtoken")


def _quote(text: str) -> str:
    """``text`` on one line, at most ``_QUOTE_CHARS`` long, in double quotes."""
    flat = " ".join(text.split())
    if len(flat) > _QUOTE_CHARS:
        flat = flat[: _QUOTE_CHARS - 3].rstrip() + "..."
    return f'"{flat}"'


def _answer_hint(said: str) -> str:
    """What to do about a server's answer saved as the model, by what it says."""
    low = said.lower()
    if any(w in low for w in _EXPIRED):
        return (
            "the download link had expired (hub and Civitai download links are signed for a "
            "limited time): start the download again from the model's page"
        )
    if any(w in low for w in _RETRY_LATER):
        return "the server was rate-limiting downloads: wait a while, then download it again"
    if any(w in low for w in _GONE):
        return (
            "the server has no file at that address: check the URL (file name, revision), or "
            "whether the model was removed"
        )
    if any(w in low for w in ("unauthori", "credential", "forbidden", "token", "denied")):
        return (
            "the server refused the download: check your access token (Civitai: "
            "`?token=YOUR_TOKEN`; Hugging Face: `huggingface-cli login`), then download it again"
        )
    return "download it again"


def _json_said(head: bytes) -> str | None:
    """The error text of a short JSON answer (``{"error": "..."}``, ``{"detail": ...}``)."""
    try:
        value = json.loads(head.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(value, dict):
        return None
    for key in _JSON_ERROR_KEYS:
        said = value.get(key)
        if isinstance(said, dict):  # {"error": {"code": 404, "message": "..."}}
            said = said.get("message") or said.get("detail")
        if isinstance(said, list) and said and isinstance(said[0], (str, dict)):
            first = said[0]
            said = first.get("message") if isinstance(first, dict) else first
        if isinstance(said, str) and said.strip():
            return said
    return None


def _xml_said(head: bytes) -> tuple[str, str] | None:
    """``(code, message)`` of a cloud storage error answer (S3, R2, GCS, Azure Blob: XML
    ``<Error><Code>AccessDenied</Code><Message>Request has expired</Message>``)."""
    text = head.decode("utf-8", "replace")
    code = re.search(r"<Code>([^<]{1,100})</Code>", text)
    if "<Error>" not in text or code is None:
        return None
    message = re.search(r"<Message>([^<]{0,500})</Message>", text)
    return code.group(1).strip(), (message.group(1).strip() if message else "")


def _server_answer(fmt: str, size: int, head: bytes) -> NotAModel | None:
    """A short server answer saved in a model's place, quoted, with what to do about it: a JSON
    error (``{"error": "Model not found"}``), a plain-text one (``Entry not found``), a cloud
    storage XML error (an expired signed link)."""
    if size > _ANSWER_MAX_BYTES or len(head) < size:
        return None
    if fmt == Format.HTML.value and head.lstrip().lower().startswith(b"<?xml"):
        found = _xml_said(head)
        if found is None:
            return None
        code, message = found
        said = f"{code}: {message}" if message else code
        return NotAModel(
            "storage-error",
            f"the file is a cloud storage error answer (XML, {_quote(said)}), not model weights",
            _answer_hint(said),
        )
    if fmt == Format.JSON.value:
        error = _json_said(head)
        if error is None:
            return None
        return NotAModel(
            "server-error",
            f"the file is a server's error answer (JSON, {_quote(error)}), not model weights",
            _answer_hint(error),
        )
    if fmt == Format.TEXT.value:
        text = head.decode("utf-8", "replace").strip()
        if not text or text.count("\n") > 5:
            return None
        return NotAModel(
            "text",
            f"the file is plain text, not model weights: it says {_quote(text)} (most likely "
            "a server's answer saved in the model's place)",
            _answer_hint(text),
        )
    return None


# Text a download tool, a hub or the OS saved in a model's place, named for what it is.
_SAVED_ANSWERS: tuple[tuple[str, Callable[[bytes], bool], NotAModel], ...] = (
    (
        Format.TEXT.value,
        _is_zone_identifier,
        NotAModel(
            "zone-identifier",
            "the file is Windows' download-origin note (a Zone.Identifier stream: "
            "`[ZoneTransfer]` INI text), not model weights",
            "the model is the file named before `:Zone.Identifier`; this one can be deleted",
        ),
    ),
    (
        Format.TEXT.value,
        _hf_gated,
        NotAModel(
            "gated-model",
            'the file is Hugging Face\'s "access to model ... is restricted" answer (a gated '
            "model), not model weights",
            "log in (`huggingface-cli login`) and accept the model's licence on its page, then "
            "download it again",
        ),
    ),
    (
        Format.JSON.value,
        _civitai_login,
        NotAModel(
            "login-required",
            'the file is Civitai\'s "log in to download" answer (JSON), not model weights',
            "download it with a Civitai API token: add `?token=YOUR_TOKEN` to the download "
            "URL, or send the header `Authorization: Bearer YOUR_TOKEN`",
        ),
    ),
)

_APPLEDOUBLE_MAGIC = b"\x00\x05\x16\x07"
_LNK_MAGIC = b"L\x00\x00\x00\x01\x14\x02\x00\x00\x00\x00\x00\xc0\x00\x00\x00\x00\x00\x00F"


def describe_unknown(head: bytes, name: str = "") -> str:
    """What bytes no format claims look like: macOS metadata, a Windows shortcut, random bytes,
    or unknown. ``name``: the file's name, when known (macOS metadata then names its model)."""
    if head.startswith(_APPLEDOUBLE_MAGIC):
        model = name[2:] if name.startswith("._") and len(name) > 2 else ""
        return (
            "the file is macOS metadata (an AppleDouble `._` file a Mac leaves on other drives), "
            "not model weights: the model is " + (model or "the file of the same name without `._`")
        )
    if head.startswith(_LNK_MAGIC):
        return (
            "the file is a Windows shortcut (.lnk file), not model weights: a link saved "
            "instead of the file; download the model file itself"
        )
    counts = Counter(head)
    total = len(head)
    entropy = -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0
    if entropy > 7.5:
        return (
            f"the file is random-looking bytes (entropy {entropy:.2f} bits/byte, no known "
            "header): encrypted, compressed or corrupt, not a model format"
        )
    return f"unknown binary data (starts {head[:8].hex()}): not a model format modelsafe reads"


def cut_safetensors(name: str, head: bytes) -> bool:
    """Whether a file named ``.safetensors``/``.sft`` that no format claims is a safetensors file
    cut short or broken in its first bytes: shorter than the 8-byte header length, a JSON object
    (after JSON whitespace) after it, or a JSON array or nothing after a plausible length. Any
    other bytes there
    (a header length past every limit before random bytes, UTF-16 text, a ``.lnk``) are not
    safetensors at all."""
    if not name.lower().endswith(EXTENSIONS[Format.SAFETENSORS.value]):
        return False
    if len(head) < 8:
        return True
    rest = head[8:].lstrip(JSON_SPACE)[:1]
    return rest == b"{" or (rest in (b"[", b"") and struct.unpack("<Q", head[:8])[0] < _MAX_LENGTH)


def extension_lies(path: Path, fmt: str) -> str | None:
    """A warning when the file's extension belongs to another format than its content."""
    suffix = path.suffix.lower()
    if suffix not in MODEL_EXTENSIONS:
        return None
    expected = EXTENSIONS.get(fmt)
    if expected is None or suffix in expected:
        return None
    return f"extension {suffix!r} says one format but the content is {fmt}; read as {fmt}"
