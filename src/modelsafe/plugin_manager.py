"""Load plugins from the ``modelsafe`` entry-point group and call their hooks defensively.

Built-in plugins are found exactly like third-party ones. A plugin that fails to import, declares
an unsupported hookspec range, or raises while a hook runs is recorded as broken (with its name and
the reason) and skipped: it never takes a command down.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pluggy

from modelsafe.plugins import hookspecs

ENTRY_POINT_GROUP = "modelsafe"
IMPORT_TIMEOUT_S = 10.0


@dataclass
class PluginRecord:
    """What ``modelsafe plugins`` shows for one plugin."""

    name: str
    package: str
    version: str
    module: str
    builtin: bool
    hooks: list[str] = field(default_factory=list)
    status: str = "ok"  # ok | broken | disabled
    reason: str = ""
    hookspec_range: str = ""


@dataclass
class HookFailure:
    plugin: str
    hook: str
    reason: str


class ModelsafePluginManager(pluggy.PluginManager):
    """A pluggy PluginManager that remembers every plugin's package and every failure."""

    def __init__(self) -> None:
        super().__init__("modelsafe")
        self.add_hookspecs(hookspecs)
        self.records: dict[str, PluginRecord] = {}
        self.failures: list[HookFailure] = []
        self._lock = threading.Lock()

    # -- registration -------------------------------------------------------------------------

    def register_plugin(
        self,
        plugin: object,
        name: str,
        *,
        package: str = "",
        version: str = "",
        builtin: bool = False,
    ) -> PluginRecord:
        """Register ``plugin`` under ``name``; a plugin outside the hookspec range is refused."""
        module_name = getattr(plugin, "__name__", type(plugin).__name__)
        record = PluginRecord(name, package, version, module_name, builtin)
        wanted = getattr(plugin, "MODELSAFE_HOOKSPEC", "")
        record.hookspec_range = str(wanted)
        if wanted and not version_in_range(hookspecs.HOOKSPEC_VERSION, str(wanted)):
            record.status = "broken"
            record.reason = (
                f"supports hookspec {wanted}, modelsafe provides {hookspecs.HOOKSPEC_VERSION}"
            )
        else:
            try:
                self.register(plugin, name=name)
            except Exception as exc:  # pluggy validation errors, name clashes
                record.status = "broken"
                record.reason = f"{type(exc).__name__}: {exc}"
            else:
                record.hooks = sorted(
                    h.name for h in self.get_hookcallers(plugin) or [] if h.name != "_unused"
                )
        self.records[name] = record
        return record

    def record_broken(self, name: str, package: str, version: str, reason: str) -> None:
        self.records[name] = PluginRecord(
            name, package, version, "", package == "modelsafe", status="broken", reason=reason
        )

    # -- calling --------------------------------------------------------------------------------

    def _impls(self, hook_name: str) -> list[pluggy.HookImpl]:
        caller = getattr(self.hook, hook_name)
        # pluggy calls implementations from the end of this list (tryfirst last registered first).
        return list(reversed(caller.get_hookimpls()))

    def call_each(self, hook_name: str, **kwargs: Any) -> Iterator[tuple[str, Any]]:
        """Yield ``(plugin name, result)`` for every implementation that returns non-None.

        An implementation that raises is recorded in ``failures`` and skipped, unless it raised a
        ``ModelsafeError`` subclass, which is a deliberate answer and propagates.
        """
        from modelsafe.errors import ModelsafeError

        trace = os.environ.get("MODELSAFE_TRACE_PLUGINS") == "1"
        for impl in self._impls(hook_name):
            args = {name: kwargs[name] for name in impl.argnames if name in kwargs}
            started = time.perf_counter()
            try:
                result = impl.function(**args)
            except ModelsafeError:
                raise
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                with self._lock:
                    self.failures.append(HookFailure(impl.plugin_name, hook_name, reason))
                if trace or os.environ.get("MODELSAFE_DEBUG") == "1":
                    traceback.print_exc(file=sys.stderr)
                continue
            finally:
                if trace:
                    took = (time.perf_counter() - started) * 1000
                    print(
                        f"[plugins] {impl.plugin_name}.{hook_name} ({took:.1f} ms)",
                        file=sys.stderr,
                    )
            if result is not None:
                yield impl.plugin_name, result

    def first_result(self, hook_name: str, **kwargs: Any) -> tuple[str, Any] | None:
        """The first non-None ``(plugin name, result)``, in pluggy's call order."""
        for found in self.call_each(hook_name, **kwargs):
            return found
        return None

    def all_results(self, hook_name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        return list(self.call_each(hook_name, **kwargs))


def version_in_range(version: str, spec: str) -> bool:
    """True when ``version`` (like "1.0") satisfies ``spec`` (like ">=1,<2"; "" = any)."""

    def parse(text: str) -> tuple[int, ...]:
        return tuple(int(part) for part in text.strip().split(".") if part.strip().isdigit())

    have = parse(version)
    for clause in (c.strip() for c in spec.split(",") if c.strip()):
        for op in (">=", "<=", "==", "!=", ">", "<"):
            if clause.startswith(op):
                want = parse(clause[len(op) :])
                break
        else:
            op, want = "==", parse(clause)
        width = max(len(have), len(want))
        a = have + (0,) * (width - len(have))
        b = want + (0,) * (width - len(want))
        ok = {
            ">=": a >= b,
            "<=": a <= b,
            "==": a[: len(want)] == b[: len(want)],
            "!=": a != b,
            ">": a > b,
            "<": a < b,
        }[op]
        if not ok:
            return False
    return True


def disabled_plugins(extra: Iterable[str] = ()) -> set[str]:
    """Plugin names disabled by ``MODELSAFE_DISABLE_PLUGINS`` (comma-separated) and ``extra``."""
    names = {n.strip() for n in os.environ.get("MODELSAFE_DISABLE_PLUGINS", "").split(",")}
    names.update(extra)
    return {n for n in names if n}


def _import_with_timeout(load: Callable[[], object], timeout: float) -> object:
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = load()
        except BaseException as exc:  # noqa: BLE001 - reported as a broken plugin
            box["error"] = exc

    thread = threading.Thread(target=run, name="modelsafe-plugin-import", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"import did not finish within {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def build_plugin_manager(
    disable: Iterable[str] = (), entry_points: Iterable[importlib.metadata.EntryPoint] | None = None
) -> ModelsafePluginManager:
    """A fresh plugin manager with every entry-point plugin loaded (broken ones recorded)."""
    pm = ModelsafePluginManager()
    off = disabled_plugins(disable)
    eps = (
        list(entry_points)
        if entry_points is not None
        else list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    )
    timeout = float(os.environ.get("MODELSAFE_PLUGIN_IMPORT_TIMEOUT", IMPORT_TIMEOUT_S))
    for ep in sorted(eps, key=lambda e: (e.dist.name if e.dist else "", e.name)):
        package = ep.dist.name if ep.dist else ""
        version = ep.dist.version if ep.dist else ""
        builtin = package == "modelsafe"
        if ep.name in off:
            pm.records[ep.name] = PluginRecord(
                ep.name,
                package,
                version,
                ep.value,
                builtin,
                status="disabled",
                reason="disabled by --disable-plugin / MODELSAFE_DISABLE_PLUGINS",
            )
            continue
        if ep.name in pm.records:
            pm.record_broken(
                ep.name, package, version, f"name {ep.name!r} is already used by another plugin"
            )
            continue
        try:
            plugin = _import_with_timeout(ep.load, timeout)
        except BaseException as exc:  # noqa: BLE001 - any import failure marks it broken
            pm.record_broken(ep.name, package, version, f"{type(exc).__name__}: {exc}")
            continue
        pm.register_plugin(plugin, ep.name, package=package, version=version, builtin=builtin)
    return pm


_DEFAULT: ModelsafePluginManager | None = None
_DEFAULT_LOCK = threading.Lock()
_EXTRA_DISABLED: set[str] = set()


def set_disabled(names: Iterable[str]) -> None:
    """Disable plugins for the default manager (the CLI's ``--disable-plugin``); resets it."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        _EXTRA_DISABLED.clear()
        _EXTRA_DISABLED.update(names)
        _DEFAULT = None


def get_plugin_manager() -> ModelsafePluginManager:
    """The process-wide plugin manager, built on first use."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = build_plugin_manager(_EXTRA_DISABLED)
        return _DEFAULT


def use_plugin_manager(pm: ModelsafePluginManager | None) -> None:
    """Install ``pm`` as the process-wide manager (None: rebuild on next use). For tests."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        _DEFAULT = pm


def module_plugins(pm: ModelsafePluginManager) -> dict[str, ModuleType]:
    return {n: p for n, p in pm.list_name_plugin() if isinstance(p, ModuleType)}
