"""The text an image carries for its generation recipe, read without decoding a pixel: a PNG's
text chunks (bounded: a text-chunk bomb is refused, not inflated), or a JPEG's / WebP's EXIF
UserComment, where A1111 and Forge write theirs; and an image's size from its header."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelsafe.runtime.recipe import JSON_KEY, PARAMETERS_KEY, RecipeReadError, _clip, _shown

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_TEXT = 16 * 2**20  # the most one text chunk may hold (decompressed) for modelsafe to read it
MAX_TEXT_TOTAL = 64 * 2**20  # ... and all it reads of one image
# The chunks modelsafe reads (the others are only noted by name, to tell which tool wrote it).
_WANTED = frozenset({PARAMETERS_KEY, JSON_KEY, "Software", "Source"})
_EXIF_IFD, _USER_COMMENT = 0x8769, 0x9286


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
    import struct
    import zlib

    chunks: dict[str, str] = {}
    budget = MAX_TEXT_TOTAL
    while True:
        head = file.read(8)
        if len(head) < 8:
            return chunks  # truncated: the text before the cut is what there is
        length, kind = struct.unpack(">I4s", head)
        if kind == b"IEND":
            return chunks
        if kind not in (b"tEXt", b"zTXt", b"iTXt"):
            file.seek(length + 4, 1)
            continue
        data = file.read(length)
        crc = file.read(4)
        key, _, body = data.partition(b"\0")
        name = key.decode("latin-1")
        if name not in _WANTED:
            chunks.setdefault(name, "")
            continue
        where = f"its {kind.decode()} chunk {_shown(name, 40)}"
        if len(data) < length or len(crc) < 4:
            raise RecipeReadError(f"{where} is cut short (the file is truncated)")
        if struct.unpack(">I", crc)[0] != zlib.crc32(kind + data) & 0xFFFFFFFF:
            raise RecipeReadError(f"{where} is damaged (its CRC does not match)")
        text = _chunk_text(kind, body, where, min(MAX_TEXT, budget))
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
    ``parameters``; the image is opened, not decoded."""
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
    import struct
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
