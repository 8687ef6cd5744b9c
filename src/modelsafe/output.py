"""Printing for the CLI: JSON on stdout, human text via rich, progress bars on a TTY only.

Text that comes from the file system (paths, names) follows one rule everywhere: a byte that is
not UTF-8 (Python keeps it as a lone surrogate) is shown as U+FFFD, so ``--json`` output is always
valid UTF-8 JSON; in human text, control characters are also escaped (``\\n``, ``\\t``,
``\\x1b``), so a name cannot split a table row or colour the terminal.
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any

from modelsafe.registry.walk import printable as fs_text
from modelsafe.types import to_jsonable

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def utf8_text(text: str) -> str:
    """``text`` with every byte that is not UTF-8 (a surrogate escape) shown as U+FFFD."""
    return fs_text(text)


def printable(text: str) -> str:
    """``text`` for a terminal: not-UTF-8 bytes as U+FFFD, control characters escaped
    (``new\\nline.safetensors``), so one name stays on one line of a table."""
    return _CONTROL.sub(_escape, utf8_text(text))


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return _ESCAPES.get(char) or f"\\x{ord(char):02x}"


def _utf8_json(value: Any) -> Any:
    if isinstance(value, str):
        return utf8_text(value)
    if isinstance(value, dict):
        return {utf8_text(str(k)): _utf8_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_utf8_json(v) for v in value]
    return finite_json(value)


def finite_json(value: Any) -> Any:
    """``value`` (JSON-ready: dicts, lists, scalars) with every float that is not finite (NaN,
    Infinity: a LoRA whose metadata says ``ss_network_alpha = "nan"``) as None: JSON has no
    such numbers, and ``NaN`` in the text breaks every strict parser (JavaScript, jq, Go)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


def json_text(value: Any) -> str:
    """``value`` as indented JSON text, valid UTF-8 whatever names it holds, NaN and Infinity
    as null."""
    text = json.dumps(_utf8_json(to_jsonable(value)), indent=2, sort_keys=False, allow_nan=False)
    return text + "\n"


class _Stdout:
    json_written = False  # a command wrote its JSON already (the error path must not add one)


def emit_json(value: Any, *, plugin_failures: bool = False) -> None:
    """Write ``value`` as indented JSON to stdout; ``plugin_failures``: with the plugin hook
    failures of this command under that key (``value`` is then a dict or a dataclass)."""
    if plugin_failures:
        from modelsafe.plugin_manager import get_plugin_manager

        value = {**to_jsonable(value), "plugin_failures": get_plugin_manager().take_failures()}
    sys.stdout.write(json_text(value))
    _Stdout.json_written = True


def show_error(message: str, hint: str = "") -> None:
    """``Error: message`` (and ``Hint: hint``) on stderr, each on one line: a reason often
    names a file, and a name's control characters (an ESC sequence, a newline) are shown
    escaped, never sent to the terminal (no reason modelsafe writes spans lines on purpose)."""
    import click

    click.secho(f"Error: {printable(message)}", fg="red", err=True)
    if hint:
        click.echo(f"Hint: {printable(hint)}", err=True)


def json_written(reset: bool = False) -> bool:
    """Whether this command has written its JSON to stdout (``reset``: forget it, at start)."""
    written = _Stdout.json_written
    if reset:
        _Stdout.json_written = False
    return written


def error_json(exc: Any, exit_code: int) -> dict[str, Any]:
    """The object a command given ``--json`` prints on stdout when it fails."""
    reason = getattr(exc, "reason", None)
    if reason is None:  # (click's usage errors)
        format_message = getattr(exc, "format_message", None)
        reason = format_message() if callable(format_message) else str(exc)
    return {
        "error": {
            "type": type(exc).__name__,
            "reason": reason,
            "hint": getattr(exc, "hint", "") or "",
            "exit_code": exit_code,
        }
    }


def stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def stdout_console() -> Any:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def progress(transient: bool = True) -> Any:
    """A rich progress bar on stderr that shows only on a TTY and disappears when done."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    console = stderr_console()
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
        disable=not console.is_terminal,
    )
