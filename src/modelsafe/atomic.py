"""Replacing a file whole or not at all: the new content goes into a temp file beside it, which
is renamed over it once written; the folder is then flushed so that the rename outlives a power
cut. ``convert`` and ``export -o`` write their output this way."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class _Commit:
    """Whether this process has renamed (or is renaming) a replacement into place, and the
    termination signals held meanwhile: see :func:`outcome_fixed`."""

    fixed = False
    held: list[int] = []


def outcome_fixed() -> bool:
    """Whether a replacement has been (or is being) renamed into place: from then on the command
    has done what it was asked, and a termination signal (SIGTERM, SIGHUP, Ctrl-C) must not make
    it report a failure. The CLI's signal handlers then :func:`hold` the signal instead of
    raising; the command finishes (a few statements: the folder's flush, its report) and exits."""
    return _Commit.fixed


def hold(signum: int) -> None:
    """Keep a termination signal that arrived once the outcome was fixed (see outcome_fixed)."""
    _Commit.held.append(signum)


def reset_outcome() -> None:
    """Forget a fixed outcome (a new command starts)."""
    _Commit.fixed = False
    _Commit.held = []


def _commit(tmp: Path, dst: Path) -> None:
    """``os.replace(tmp, dst)`` with the outcome fixed from just before it (a signal that
    arrives during the rename is held); if the rename fails, a signal held meanwhile is raised
    again, now that the command fails anyway."""
    _Commit.fixed = True
    try:
        os.replace(tmp, dst)
    except BaseException:
        _Commit.fixed = False
        for signum in _Commit.held:
            signal.raise_signal(signum)
        _Commit.held = []
        raise


@contextmanager
def replacing(tmp: Path, dst: Path) -> Iterator[None]:
    """Rename ``tmp`` over ``dst`` when the ``with`` body (which writes and flushes ``tmp``)
    ends without an exception, then flush their folder (:func:`fsync_dir`). On any exception,
    Ctrl-C included, ``tmp`` is removed and ``dst`` is left as it was. Once renamed, the
    outcome is fixed (:func:`outcome_fixed`): a termination signal no longer ends the command
    as a failure."""
    try:
        yield
        _commit(tmp, dst)
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
