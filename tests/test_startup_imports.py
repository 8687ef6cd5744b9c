"""`modelsafe`, `inspect`, `audit` and `scan` must not import torch or diffusers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from modelsafe.cli import COMMANDS
from modelsafe.testing import write_safetensors

HEAVY = ("torch", "diffusers", "transformers")
PROBE = """
import sys
from modelsafe.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
finally:
    print("HEAVY=" + ",".join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)
"""


def _heavy_modules_after(args: list[str], cwd: Path) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )
    line = [x for x in proc.stderr.splitlines() if x.startswith("HEAVY=")]
    assert line, proc.stderr
    return line[-1][len("HEAVY=") :]


@pytest.mark.parametrize("command", ["", "inspect", "audit", "scan"])
def test_command_does_not_import_torch(command: str, tmp_path: Path) -> None:
    if command and command not in COMMANDS:
        pytest.skip(f"`modelsafe {command}` is not part of this build")
    model = write_safetensors(tmp_path / "m.safetensors", [("w", "F16", (4, 4))], data="zeros")
    args = {
        "": ["--help"],
        "inspect": ["inspect", str(model), "--json"],
        "audit": ["audit", str(model)],
        "scan": ["--catalog", str(tmp_path / "c.db"), "scan", str(tmp_path)],
    }[command]
    assert _heavy_modules_after(args, tmp_path) == ""
