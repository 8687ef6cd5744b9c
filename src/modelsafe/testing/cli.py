"""Run the ``modelsafe`` CLI in-process, as the console script runs it, for tests."""

from __future__ import annotations

import sys


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``modelsafe ARGS`` in this process, on the process-wide plugin manager: (exit code,
    stdout, stderr). ``env`` sets environment variables for the call only."""
    from click.testing import CliRunner

    from modelsafe.cli import main

    with CliRunner().isolation(env=env) as streams:
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        sys.stdout.flush()
        sys.stderr.flush()
        return code, streams[0].getvalue().decode(), streams[1].getvalue().decode()
