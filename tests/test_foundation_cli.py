"""The CLI's edges: version, help, errors without tracebacks, exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import modelsafe


def test_version(run_cli) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run_cli("--version")
    assert code == 0
    assert out.startswith(f"modelsafe {modelsafe.__version__} (hookspec ")


def test_help_lists_commands(run_cli) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run_cli("--help")
    assert code == 0
    for command in ("inspect", "audit", "plugins", "config"):
        assert f"  {command}" in out


def test_modelsafe_error_has_reason_hint_and_no_traceback(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, out, err = run_cli("inspect", str(tmp_path / "missing.safetensors"))
    assert code == 2
    assert "Error: " in err and "does not exist" in err or "cannot read" in err
    assert "Hint: " in err
    assert "Traceback" not in err + out


def test_debug_env_shows_traceback(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run_cli(
        "inspect", str(tmp_path / "missing.safetensors"), env={"MODELSAFE_DEBUG": "1"}
    )
    assert code == 2
    assert "Traceback" in err


def test_unexpected_exception_is_one_clear_line(run_cli, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import modelsafe.commands.plugins_cmd as plugins_cmd

    def boom() -> None:
        raise RuntimeError("kaboom")

    monkeypatch.setattr("modelsafe.plugin_manager.get_plugin_manager", boom)
    assert plugins_cmd  # imported so the patch target exists
    code, out, err = run_cli("plugins")
    assert code == 3
    assert "Error: unexpected RuntimeError: kaboom" in err
    assert "MODELSAFE_DEBUG=1" in err
    assert "Traceback" not in err + out


def test_unknown_command_is_usage_error(run_cli) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run_cli("frobnicate")
    assert code == 2
    assert "No such command" in err


def test_help_starts_fast_and_imports_no_torch() -> None:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    code = (
        "import sys, time; t=time.perf_counter(); "
        "from modelsafe.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('ELAPSED', time.perf_counter()-t); "
        "print('HEAVY', [m for m in ('torch','diffusers','transformers') if m in sys.modules])"
    )
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        )
        best = min(best, time.perf_counter() - started)
        assert "HEAVY []" in proc.stdout
    assert best < 0.5, f"modelsafe --help took {best:.2f} s (interpreter included)"
