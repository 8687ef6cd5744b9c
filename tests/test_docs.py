"""Docs that must stay true: the generated CLI reference, and every hook documented."""

from __future__ import annotations

from pathlib import Path

from modelsafe.plugins.hookspecs import hook_names

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_cli_reference_is_current() -> None:
    from modelsafe.cli_docs import render_cli_reference

    current = (DOCS / "cli.md").read_text(encoding="utf-8")
    assert current == render_cli_reference(), (
        "docs/cli.md is stale: run `python -m modelsafe.cli_docs > docs/cli.md`"
    )


def test_plugin_hooks_are_documented() -> None:
    page = (DOCS / "plugin_hooks.md").read_text(encoding="utf-8")
    missing = [name for name in hook_names() if f"## {name}" not in page]
    assert not missing, f"document these hooks in docs/plugin_hooks.md: {missing}"
