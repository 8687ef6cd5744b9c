"""Byte sizes as people write them ("8GiB", "512 MB") and as modelsafe prints them."""

from __future__ import annotations

import re

from modelsafe.errors import UsageError

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$")
# The unit rule, as errors state it.
SIZE_RULE = (
    "KB/MB/GB/TB are powers of 1000, KiB/MiB/GiB/TiB powers of 1024, and a number without a "
    "unit is a count of bytes"
)


def parse_size(text: str | int) -> int:
    """Bytes for a size such as ``8GiB``, ``7.5 GB`` or ``1024`` (plain bytes); an int is a
    count of bytes. Anything else (True, 8.5) is a :class:`UsageError`."""
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise UsageError(
            f"{text!r} is not a size",
            hint=f"give a size with its unit as text, like '8GiB' ({SIZE_RULE})",
        )
    if isinstance(text, int):
        return text
    match = _SIZE_RE.match(text)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise UsageError(
            f"{text!r} is not a size",
            hint=f"write it like 8GiB, 12GB or 6144MiB ({SIZE_RULE})",
        )
    return int(float(match.group(1)) * _UNITS[unit])


def format_size(n: int | float) -> str:
    """``1536`` -> ``1.5 KiB``; binary units, one decimal."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_count(n: int) -> str:
    """``859520964`` -> ``859.5M``."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)
