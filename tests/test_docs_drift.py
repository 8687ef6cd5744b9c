"""Small CLI behaviours the docs promise (found by a docs walkthrough)."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

from modelsafe.plugin_manager import build_plugin_manager, use_plugin_manager

PLUGINS = Path(__file__).parent / "plugins"


def test_plugins_table_prints_broken_reasons_in_full(
    monkeypatch: pytest.MonkeyPatch, run_cli
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.setenv("COLUMNS", "80")
    eps = [
        importlib.metadata.EntryPoint(
            name="missing", value="no_such_module_anywhere", group="modelsafe"
        )
    ]
    pm = build_plugin_manager(entry_points=eps)
    use_plugin_manager(pm)
    reason = pm.records["missing"].reason
    assert reason and len(reason) > 40
    code, out, _ = run_cli("plugins")
    assert code == 0
    assert f"broken: missing: {reason}" in out.splitlines()
