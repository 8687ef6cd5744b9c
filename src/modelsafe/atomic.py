"""Replacing a file whole or not at all: the new content goes into a temp file beside it, which
is renamed over it once written; the folder is then flushed so that the rename outlives a power
cut. ``convert`` and ``export -o`` write their output this way."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(tmp: Path, dst: Path) -> Iterator[None]:
    """Rename ``tmp`` over ``dst`` when the ``with`` body (which writes and flushes ``tmp``)
    ends without an exception, then flush their folder (:func:`fsync_dir`). On any exception,
    Ctrl-C included, ``tmp`` is removed and ``dst`` is left as it was."""
    try:
        yield
        os.replace(tmp, dst)
        fsync_dir(dst.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def fsync_dir(folder: Path) -> None:
    """Flush ``folder``'s entries to disk (after a rename in it). Best effort: a folder that
    cannot be opened or flushed (some network file systems) is left as it is."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
