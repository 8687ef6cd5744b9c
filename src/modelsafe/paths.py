"""Paths the user typed (CLI flags, config files, HTTP job specs)."""

from __future__ import annotations

import os
from pathlib import Path


def user_path(ref: str | os.PathLike[str]) -> Path:
    """``ref`` with a leading ``~`` or ``~user`` expanded. Unlike ``Path.expanduser``, an unknown
    user or a missing home directory leaves the text as it is instead of raising RuntimeError,
    so the path is then simply not found (and reported as such)."""
    return Path(os.path.expanduser(os.fspath(ref)))
