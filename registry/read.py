"""Read any model file or folder into a TensorIndex through the format-reader plugins."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from modelsafe.errors import FileReadError, UnsupportedFormatError
from modelsafe.registry.sniff import (
    describe_unknown,
    extension_lies,
    not_a_model,
    read_head,
    sniff,
)
from modelsafe.types import Format, TensorIndex


def open_error(path: Path, exc: OSError) -> FileReadError:
    return FileReadError(
        f"cannot read {path}: {exc.strerror or exc}", hint="check the path and its permissions"
    )


_SPECIAL_FILES = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def special_kind(mode: int) -> str:
    """What a stat mode that is neither a folder nor a regular file is ("" for those two)."""
    if stat.S_ISDIR(mode) or stat.S_ISREG(mode):
        return ""
    return next((name for test, name in _SPECIAL_FILES if test(mode)), "not a regular file")


def check_readable_kind(path: Path) -> bool:
    """True for a folder, False for a regular file; a FileReadError for anything else.

    Checked with ``stat`` before any ``open``: opening a FIFO blocks until something writes to
    it, and a device such as ``/dev/zero`` never ends.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):  # (stat follows it; the link itself is there)
            raise FileReadError(
                f"{path} is a broken symlink to {os.readlink(path)} (which does not exist)",
                hint="fix or remove the link; the file it pointed at was moved or deleted",
            ) from None
        raise FileReadError(f"{path} does not exist", hint="check the path") from None
    except OSError as exc:
        raise open_error(path, exc) from exc
    what = special_kind(mode)
    if not what:
        return stat.S_ISDIR(mode)
    raise FileReadError(
        f"{path} is {what}, not a model file", hint="point at a model file or a diffusers folder"
    )


def read_index(path: Path | str) -> TensorIndex:
    """The tensor table of ``path`` (a file or a diffusers folder), from headers only."""
    from modelsafe.plugin_manager import HookFailure, get_plugin_manager

    path = Path(path)
    is_dir = check_readable_kind(path)
    try:
        head = b"" if is_dir else read_head(path)
    except OSError as exc:
        raise open_error(path, exc) from exc
    fmt = Format.DIFFUSERS_DIR.value if is_dir else sniff(head).value
    failed: list[HookFailure] = []
    found = get_plugin_manager().first_result(
        "modelsafe_read_index", failed=failed, path=path, head=head, fmt=fmt
    )
    if found is None:
        if failed:  # a reader that crashed is why nothing read it: say so, not "no format"
            first = failed[0]
            raise UnsupportedFormatError(
                f"{path}: format reader {first.plugin} failed: {first.reason} "
                "(no other reader reads it)",
                hint=f"report it to the plugin's author, or skip it with "
                f"--disable-plugin {first.plugin}",
            )
        raise _unsupported(path, fmt, is_dir)
    _plugin, index = found
    if not isinstance(index, TensorIndex):
        raise FileReadError(
            f"format reader {_plugin!r} returned {type(index).__name__}, not a TensorIndex",
            hint=f"report it to the plugin author, or use --disable-plugin {_plugin}",
        )
    lie = None if is_dir else extension_lies(path, index.format)
    if lie:
        index = TensorIndex(
            path=index.path,
            format=index.format,
            tensors=index.tensors,
            metadata=index.metadata,
            warnings=(*index.warnings, lie),
            components=index.components,
            extra=index.extra,
        )
    return index


def _unsupported(path: Path, fmt: str, is_dir: bool) -> UnsupportedFormatError:
    if is_dir:
        return UnsupportedFormatError(
            f"{path} is a folder without model_index.json or a model config",
            hint="point at a model file, or at a diffusers folder (it has model_index.json)",
        )
    size = os.path.getsize(path)
    head = read_head(path)
    what = not_a_model(fmt, size, head, path.name)
    if what is not None:
        return UnsupportedFormatError(f"{path}: {what.reason}", hint=what.hint)
    if fmt == Format.UNKNOWN.value and head:  # (what `audit` says of it too)
        return UnsupportedFormatError(
            f"{path}: {describe_unknown(head, path.name)} ({size:,} bytes)",
            hint="supported: safetensors, torch .ckpt/.pt/.bin (zip or legacy), GGUF, diffusers "
            "folders; `modelsafe plugins` lists the readers installed",
        )
    return UnsupportedFormatError(
        f"{path}: not a model format modelsafe reads (looks like {fmt}, {size} bytes)",
        hint="supported: safetensors, torch .ckpt/.pt/.bin (zip or legacy), GGUF, diffusers "
        "folders; `modelsafe plugins` lists the readers installed",
    )
