"""Shared fixtures: an isolated modelsafe home, a fresh plugin manager, a CLI runner."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modelsafe.plugin_manager import ModelsafePluginManager
from modelsafe.testing import fresh_plugin_manager


@pytest.fixture(autouse=True)
def modelsafe_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Every test gets its own user dir and no MODELSAFE_* settings from the outside."""
    home = tmp_path_factory.mktemp("modelsafe-home")
    for var in (
        "MODELSAFE_CATALOG",
        "MODELSAFE_CONFIG",
        "MODELSAFE_VRAM",
        "MODELSAFE_MODEL_ROOTS",
        "MODELSAFE_DISABLE_PLUGINS",
        "MODELSAFE_DEBUG",
        "MODELSAFE_TRACE_PLUGINS",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MODELSAFE_HOME", str(home))
    return home


@pytest.fixture
def pm() -> Iterator[ModelsafePluginManager]:
    """A fresh plugin manager, installed as the process-wide one for the test."""
    with fresh_plugin_manager() as manager:
        yield manager


@pytest.fixture
def run_cli(pm: ModelsafePluginManager):  # type: ignore[no-untyped-def]
    """Run the CLI in-process like the ``modelsafe`` script; returns (exit code, stdout, stderr)."""
    from modelsafe.testing import invoke

    return invoke
