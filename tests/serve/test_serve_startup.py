"""`modelsafe --help`, `inspect` and `scan` must not import the serve stack."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from modelsafe.testing import write_safetensors

SERVE_STACK = ("fastapi", "uvicorn", "starlette", "celery", "jinja2", "modelsafe.serve")
PROBE = """
import sys
from modelsafe.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
finally:
    print("LOADED=" + ",".join(m for m in {names!r} if m in sys.modules), file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["--help"], ["inspect"], ["scan"], ["serve", "--help"]])
def test_cli_start_up_leaves_the_serve_stack_alone(args: list[str], tmp_path: Path) -> None:
    model = write_safetensors(tmp_path / "m.safetensors", [("w", "F16", (4, 4))])
    extra = [str(model)] if args[0] != "--help" and args[-1] != "--help" else []
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(names=SERVE_STACK), *args, *extra],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    line = [x for x in proc.stderr.splitlines() if x.startswith("LOADED=")]
    assert line, proc.stderr
    assert line[-1] == "LOADED=", line[-1]
