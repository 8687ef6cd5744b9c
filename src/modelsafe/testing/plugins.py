"""A fresh plugin manager for a test, optionally with extra plugins registered."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from modelsafe.plugin_manager import (
    ModelsafePluginManager,
    build_plugin_manager,
    use_plugin_manager,
)


@contextmanager
def fresh_plugin_manager(
    *extra: object, disable: tuple[str, ...] = ()
) -> Iterator[ModelsafePluginManager]:
    """Build a manager from the installed entry points plus ``extra`` plugin objects and make it
    the process-wide one until the block ends."""
    pm = build_plugin_manager(disable)
    for i, plugin in enumerate(extra):
        name = getattr(plugin, "__name__", f"test_plugin_{i}")
        pm.register_plugin(plugin, name, package="(test)", version="0")
    use_plugin_manager(pm)
    try:
        yield pm
    finally:
        use_plugin_manager(None)
