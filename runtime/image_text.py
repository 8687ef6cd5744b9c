"""The text an image carries for its generation recipe, read without decoding a pixel: a PNG's
text chunks (bounded: a text-chunk bomb is refused, not inflated), or a JPEG's / WebP's EXIF
UserComment, where A1111 and Forge write theirs; and an image's size from its header."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from modelsafe.runtime.recipe import JSON_KEY, PARAMETERS_KEY, RecipeReadError, _clip, _shown

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_TEXT = 16 * 2**20  # the most one text chunk may hold (decompressed) for modelsafe to read it
MAX_TEXT_TOTAL = 64 * 2**20  # ... and all it reads of one image
# The chunks modelsafe reads (the others are only noted by name, to tell which tool wrote it).
_WANTED = frozenset({PARAMETERS_KEY, JSON_KEY, "Software", "Source"})
_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
_KEYWORD_BYTES = 80  # a text chunk's keyword (1 to 79 bytes) and its NUL
MAX_TEXT_CHUNKS = 1024  # the most text chunks an image may have (tools write a handful)
_EXIF_IFD, _USER_COMMENT = 0x8769, 0x9286
_MAX_EXIF = 2 * MAX_TEXT + 2**16  # a UserComment of MAX_TEXT characters in UTF-16, and tags


def read_image_text(path: Path) -> dict[str, str]:
    """The text an image carries for its recipe, without decoding a pixel: a PNG's text chunks
    (``tEXt``/``zTXt``/``iTXt``, before or after the image data; those modelsafe does not read
    are listed with empty values), or a JPEG's / WebP's EXIF UserComment as ``parameters``
    (where A1111 and Forge write it). Raises :class:`RecipeReadError` for a chunk too large or
    damaged to read, and for a file that is no image."""
    try:
        with path.open("rb") as file:
            if file.read(8) == PNG_SIGNATURE:
                return _png_text(file)
    except OSError as exc:
        raise RecipeReadError(
            f"cannot open it: {exc.strerror or exc}", hint="check the path"
        ) from None
    return _exif_text(path)


def _png_text(file: Any) -> dict[str, str]:
    """The text chunks of a PNG whose signature was read. Memory stays small whatever the file
    holds: a chunk modelsafe does not read (pixels, another tool's text) is skipped unread, one
    it reads is refused when larger than it reads before its bytes are read, and an image with
    more text chunks than any tool writes is refused."""
    import zlib

    chunks: dict[str, str] = {}
    budget, count = MAX_TEXT_TOTAL, 0
    while True:
        head = file.read(8)
        if len(head) < 8:
            return chunks  # truncated: the text before the cut is what there is
        length, kind = struct.unpack(">I4s", head)
        if kind == b"IEND":
            return chunks
        if kind not in _TEXT_CHUNKS:
            file.seek(length + 4, 1)
            continue
        count += 1
        if count > MAX_TEXT_CHUNKS:
            raise RecipeReadError(
                f"it holds more than {MAX_TEXT_CHUNKS} text chunks; modelsafe reads no more"
            )
        start = file.read(min(length, _KEYWORD_BYTES))
        name = start.partition(b"\0")[0].decode("latin-1")
        if name not in _WANTED:
            chunks.setdefault(name, "")
            file.seek(length - len(start) + 4, 1)
            continue
        where = f"its {kind.decode()} chunk {_shown(name, 40)}"
        limit = min(MAX_TEXT, budget)
        if length - len(name) - 1 > limit:
            raise RecipeReadError(
                f"{where} holds more than {limit // 2**20} MiB; modelsafe reads no more"
            )
        data = start + file.read(length - len(start))
        crc = file.read(4)
        if len(data) < length or len(crc) < 4:
            raise RecipeReadError(f"{where} is cut short (the file is truncated)")
        if struct.unpack(">I", crc)[0] != zlib.crc32(kind + data) & 0xFFFFFFFF:
            raise RecipeReadError(f"{where} is damaged (its CRC does not match)")
        text = _chunk_text(kind, data[len(name) + 1 :], where, limit)
        budget -= len(text)
        chunks[name] = text


def _chunk_text(kind: bytes, body: bytes, where: str, limit: int) -> str:
    """A text chunk's text (after its keyword), decompressed to at most ``limit`` bytes."""
    import zlib

    encoding = "latin-1"
    compressed = kind == b"zTXt"
    if kind == b"zTXt":
        body = body[1:]  # compression method
    elif kind == b"iTXt":
        compressed, encoding = body[:1] == b"\1", "utf-8"
        body = body[2:].split(b"\0", 2)[-1]  # flag, method, language, translated keyword
    if compressed:
        inflate = zlib.decompressobj()
        try:
            body = inflate.decompress(body, limit + 1)
        except zlib.error as exc:
            raise RecipeReadError(f"{where} does not decompress ({exc})") from None
        if len(body) <= limit and not inflate.eof:
            raise RecipeReadError(f"{where} is damaged (its compressed text stops early)")
    if len(body) > limit:
        raise RecipeReadError(
            f"{where} holds more than {limit // 2**20} MiB of text; modelsafe reads no more"
        )
    try:
        return body.decode(encoding)
    except UnicodeDecodeError:
        raise RecipeReadError(f"{where} is not UTF-8 text") from None


def _exif_text(path: Path) -> dict[str, str]:
    """A JPEG's or WebP's EXIF UserComment (A1111: ``UNICODE\\0`` and UTF-16) as
    ``parameters``. The EXIF block is taken from the file's segments, not from Pillow's opened
    image, so an image of any declared size gives its text (no pixel is decoded); another
    format is opened, not decoded, by Pillow."""
    from PIL import Image

    try:
        with path.open("rb") as file:
            head = file.read(12)
            if head[:2] == b"\xff\xd8":
                exif = _jpeg_exif(file)
            elif head[:4] == b"RIFF" and head[8:12] == b"WEBP":
                exif = _webp_exif(file)
            else:
                return _pillow_exif_text(path)
        if exif is None:
            return {}
        info = Image.Exif()
        info.load(exif)
        comment = info.get_ifd(_EXIF_IFD).get(_USER_COMMENT)
    except (OSError, SyntaxError, ValueError, struct.error) as exc:
        raise RecipeReadError(f"its EXIF cannot be read ({_clip(str(exc), 80)})") from None
    return _comment_text(comment)


def _jpeg_exif(file: Any) -> bytes | None:
    """The first ``Exif`` APP1 segment of a JPEG (its markers are walked from the start up to
    the image data; a segment holds at most 64 KiB)."""
    file.seek(2)
    while True:
        marker = file.read(2)
        while marker[1:] == b"\xff":  # fill bytes before a marker
            marker = marker[1:] + file.read(1)
        if len(marker) < 2 or marker[0] != 0xFF or marker[1] in (0xD9, 0xDA):
            return None  # end of image, start of scan (the image data), or no JPEG
        if 0xD0 <= marker[1] <= 0xD7 or marker[1] == 0x01:
            continue  # markers without a length
        size = file.read(2)
        if len(size) < 2:
            return None
        length = struct.unpack(">H", size)[0] - 2  # (the length counts its own two bytes)
        if length < 0:
            raise RecipeReadError("its JPEG segments are damaged (a segment shorter than 2 bytes)")
        if marker[1] != 0xE1:
            file.seek(length, 1)
            continue
        data = file.read(length)
        if data.startswith(b"Exif\0\0"):
            return bytes(data)


def _webp_chunks(file: Any) -> Iterator[tuple[bytes, int]]:
    """The chunks of a WebP whose RIFF header was read, as (kind, size), the file at the
    chunk's data; a chunk the caller does not read is skipped (seeked past)."""
    while True:
        head = file.read(8)
        if len(head) < 8:
            return
        kind, size = struct.unpack("<4sI", head)
        start = file.tell()
        yield kind, size
        file.seek(start + size + (size & 1))


def _webp_exif(file: Any) -> bytes | None:
    """The ``EXIF`` chunk of a WebP whose RIFF header was read; larger than a UserComment of
    :data:`MAX_TEXT` UTF-16 text is refused before it is read."""
    for kind, size in _webp_chunks(file):
        if kind != b"EXIF":
            continue
        if size > _MAX_EXIF:
            raise RecipeReadError(
                f"its EXIF holds more than {_MAX_EXIF // 2**20} MiB; modelsafe reads no more"
            )
        return bytes(file.read(size))
    return None


def lossy_format(path: Path) -> str:
    """``JPEG`` or ``WebP`` when the image is stored lossily (its decoded pixels are not the
    ones it was made with: a lossy WebP's image chunk is ``VP8 ``, a lossless one's ``VP8L``),
    else ``""``. Only headers are read."""
    with path.open("rb") as file:
        head = file.read(12)
        if head[:3] == b"\xff\xd8\xff":
            return "JPEG"
        if head[:4] != b"RIFF" or head[8:12] != b"WEBP":
            return ""
        for kind, _size in _webp_chunks(file):  # (VP8X, ICCP, ANIM, ALPH come first)
            if kind in (b"VP8 ", b"VP8L"):
                return "WebP" if kind == b"VP8 " else ""
    return ""


def _pillow_exif_text(path: Path) -> dict[str, str]:
    """The EXIF UserComment of an image in another format Pillow opens (not decodes)."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                comment = image.getexif().get_ifd(_EXIF_IFD).get(_USER_COMMENT)
    except Image.DecompressionBombError:
        raise RecipeReadError("it is too large an image for Pillow to open") from None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise RecipeReadError(
            f"it is not an image Pillow can read ({_clip(str(exc), 80)})"
        ) from None
    return _comment_text(comment)


def _comment_text(comment: Any) -> dict[str, str]:
    """``{"parameters": text}`` for an EXIF UserComment (a string, or bytes with their charset
    code); ``{}`` for none."""
    if isinstance(comment, str):
        return {PARAMETERS_KEY: comment}
    if not isinstance(comment, bytes) or len(comment) < 8:
        return {}
    return {PARAMETERS_KEY: _user_comment(comment)}


def _user_comment(raw: bytes) -> str:
    """EXIF UserComment text: an 8-byte charset code, then the text (``UNICODE``: UTF-16 in
    either byte order, as the writers disagree; ``ASCII`` or undefined: UTF-8)."""
    code, text = raw[:8], raw[8:]
    if code.rstrip(b"\0") != b"UNICODE":
        return text.decode("utf-8", "replace").rstrip("\0")
    if text[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return text.decode("utf-16", "replace").rstrip("\0")
    # ASCII-range text has its zero bytes first in big-endian UTF-16, second in little-endian.
    big = text[0::2].count(0) >= text[1::2].count(0)
    return text.decode("utf-16-be" if big else "utf-16-le", "replace").rstrip("\0")


def image_size(path: Path) -> tuple[int, int] | None:
    """An image's width and height from its header, without decoding it (and without Pillow's
    decompression-bomb refusal, which a header alone cannot harm); None when unreadable."""
    import warnings

    from PIL import Image

    try:
        with path.open("rb") as file:
            head = file.read(24)
        if head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR":
            width, height = struct.unpack(">II", head[16:24])
            return int(width), int(height)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                return image.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None
