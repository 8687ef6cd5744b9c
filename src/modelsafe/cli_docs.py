"""Render the CLI reference (docs/cli.md) from the click commands themselves.

Regenerate with ``python -m modelsafe.cli_docs > docs/cli.md``; a test fails when it is stale.
"""

from __future__ import annotations

from typing import Any

import click

HEADER = """# CLI reference

Generated from the commands' own help by `python -m modelsafe.cli_docs > docs/cli.md`;
`tests/test_docs.py` fails when this page is stale.

Exit codes for every command: 0 success (safe, compatible), 1 a negative answer (unsafe file,
rejected component), 2 an error (unreadable input, bad usage, catalog trouble), 3 an unexpected
internal error (a bug: run with `MODELSAFE_DEBUG=1` for the traceback), 130 interrupted.

With `--json` the result is JSON on stdout (progress and messages go to stderr). A command that
fails prints one object there instead, `{"error": {"type": "FileReadError", "reason": "...",
"hint": "...", "exit_code": 2}}` (`type`: the error's class; `InternalError` for exit 3,
`Interrupted` for 130 and SIGTERM's 143), as well as the message on stderr
(a command that wrote its result before it failed, as `scan` does for a path it could not read,
leaves that result alone).
A file name that is not valid UTF-8 is written with U+FFFD for each undecodable byte.
"""


# The same help options the CLI uses (click caches a command's help option on first use).
HELP_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"]}


def _walk(command: click.Command, path: list[str]) -> list[tuple[list[str], click.Command]]:
    found = [(path, command)]
    if isinstance(command, click.Group):
        ctx = click.Context(command, info_name=path[-1], **HELP_SETTINGS)
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                found.extend(_walk(sub, [*path, name]))
    return found


def render_cli_reference() -> str:
    from modelsafe.cli import cli

    parts = [HEADER]
    for path, command in _walk(cli, ["modelsafe"]):
        title = " ".join(path)
        parent: click.Context | None = None
        for i, name in enumerate(path):
            parent = click.Context(
                cli if i == 0 else command, info_name=name, parent=parent, **HELP_SETTINGS
            )
        ctx = click.Context(
            command, info_name=path[-1], parent=parent.parent if parent else None, **HELP_SETTINGS
        )
        with ctx:
            formatter = ctx.make_formatter()
            formatter.width = 100
            command.format_help(ctx, formatter)
            text = formatter.getvalue().rstrip()
        parts.append(f"## `{title}`\n\n```\n{text}\n```\n")
    return "\n".join(parts)


if __name__ == "__main__":  # pragma: no cover
    print(render_cli_reference(), end="")
