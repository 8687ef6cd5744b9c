"""Load plugins from the ``modelsafe`` entry-point group and call their hooks defensively.

Built-in plugins are found exactly like third-party ones. A plugin that fails to import, declares
an unsupported hookspec range or implements a hook that does not exist is recorded as broken
(with its name and the reason) and never called. One that raises while a hook runs, or answers
with something the hook does not promise, is recorded in ``failures``, named in a warning on
stderr (``warning: plugin NAME failed in HOOK: reason``, once per distinct failure) and skipped:
it never takes a command down.

Call order: built-ins are registered first, then third-party plugins, so pluggy (which calls the
most recently registered implementation first) asks third-party plugins before the built-ins,
in order of package name then entry-point name; ``tryfirst`` / ``trylast`` marks come before
that.
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
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
    """One implementation that raised or answered with something its hook does not promise."""

    plugin: str
    hook: str
    reason: str

    def message(self) -> str:
        return f"plugin {self.plugin} failed in {self.hook}: {self.reason}"


# The failure lists of the collecting_failures() blocks running in this context (thread/task).
_COLLECTORS: contextvars.ContextVar[tuple[list[HookFailure], ...]] = contextvars.ContextVar(
    "modelsafe_plugin_failure_collectors", default=()
)


class ModelsafePluginManager(pluggy.PluginManager):
    """A pluggy PluginManager that remembers every plugin's package and every failure."""

    def __init__(self) -> None:
        super().__init__("modelsafe")
        self.add_hookspecs(hookspecs)
        self.records: dict[str, PluginRecord] = {}
        self.failures: list[HookFailure] = []
        # Print ``warning: plugin NAME failed in HOOK: reason`` on stderr as failures happen.
        self.warn = True
        self._warned: set[tuple[str, str, str]] = set()
        self._taken = 0
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
        unknown = self._unknown_hooks(plugin)
        if wanted and not version_in_range(hookspecs.HOOKSPEC_VERSION, str(wanted)):
            record.status = "broken"
            record.reason = (
                f"supports hookspec {wanted}, modelsafe provides {hookspecs.HOOKSPEC_VERSION}"
            )
        elif unknown:
            # pluggy would accept a misspelled hook as an unspecified one and never call it.
            record.status = "broken"
            record.reason = "; ".join(unknown)
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

    def _unknown_hooks(self, plugin: object) -> list[str]:
        """``unknown hook NAME (did you mean ...?)`` for every hookimpl that names no hookspec."""
        known = hookspecs.hook_names()
        found = []
        for attr in dir(plugin):
            try:
                opts = self.parse_hookimpl_opts(plugin, attr)
            except Exception:  # noqa: BLE001 - an attribute that cannot be read is no hookimpl
                continue
            if opts is None:
                continue
            name = opts.get("specname") or attr
            if name in known or opts.get("optionalhook"):  # (a hook of a later 1.x: pluggy's
                continue  # way to stay loadable where it does not exist yet)
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]}?" if close else "see docs/plugin_hooks.md"
            found.append(f"unknown hook {name} ({hint})")
        return found

    def record_broken(self, name: str, package: str, version: str, reason: str) -> None:
        self.records[name] = PluginRecord(
            name, package, version, "", package == "modelsafe", status="broken", reason=reason
        )

    # -- calling --------------------------------------------------------------------------------

    def _impls(self, hook_name: str) -> list[pluggy.HookImpl]:
        caller = getattr(self.hook, hook_name)
        # pluggy calls implementations from the end of this list (tryfirst last registered first).
        return list(reversed(caller.get_hookimpls()))

    def record_failure(
        self, plugin: str, hook: str, reason: str, failed: list[HookFailure] | None = None
    ) -> HookFailure:
        """Record that ``plugin`` failed in ``hook`` (raised, or answered with garbage).

        The failure goes into ``failures`` (``modelsafe plugins --json``, :func:`take_failures`)
        and ``failed`` when given (the caller's own list), and is printed on stderr once per
        distinct (plugin, hook, reason) while :attr:`warn` is on.
        """
        failure = HookFailure(plugin, hook, reason)
        for collector in _COLLECTORS.get():
            collector.append(failure)
        with self._lock:
            self.failures.append(failure)
            key = (plugin, hook, reason)
            new = key not in self._warned
            self._warned.add(key)
        if failed is not None:
            failed.append(failure)
        if new and self.warn:
            print(f"warning: {failure.message()}", file=sys.stderr)
        return failure

    def failures_in(self, hook_name: str) -> list[HookFailure]:
        """Every failure recorded so far in ``hook_name`` (for error messages that must say
        why nothing answered)."""
        with self._lock:
            return [f for f in self.failures if f.hook == hook_name]

    @contextlib.contextmanager
    def collecting_failures(self) -> Iterator[list[HookFailure]]:
        """The failures recorded inside the block by this thread (or task), for a library call
        that returns its own (``resolve``): another thread's failures at the same time are not
        in it, as they would be in a slice of :attr:`failures`."""
        found: list[HookFailure] = []
        token = _COLLECTORS.set((*_COLLECTORS.get(), found))
        try:
            yield found
        finally:
            _COLLECTORS.reset(token)

    def take_failures(self) -> list[HookFailure]:
        """The failures recorded since the last call (a command puts them in its ``--json``
        output as ``plugin_failures``)."""
        with self._lock:
            taken = self.failures[self._taken :]
            self._taken = len(self.failures)
        return taken

    def is_builtin(self, name: str) -> bool:
        """Whether the plugin called ``name`` is one of modelsafe's own."""
        record = self.records.get(name)
        return record is not None and record.builtin

    def call_impl(
        self,
        impl: pluggy.HookImpl,
        hook_name: str,
        *,
        failed: list[HookFailure] | None = None,
        **kwargs: Any,
    ) -> tuple[bool, Any]:
        """Call one implementation of ``hook_name`` with the arguments it takes from ``kwargs``:
        ``(True, its result)``, or ``(False, None)`` when it raised (recorded with
        :meth:`record_failure`, also in ``failed`` when given). A ``ModelsafeError`` is a
        deliberate answer and propagates, as does ``KeyboardInterrupt``; any other exception,
        ``SystemExit`` and ``GeneratorExit`` included, is a failure of the plugin and never
        ends the command. What the hook prints to stdout goes to stderr. Traced by
        ``MODELSAFE_TRACE_PLUGINS=1``. For hooks whose arguments change between
        implementations (post-processors get the image the one before returned); otherwise
        use :meth:`call_each`."""
        from modelsafe.errors import ModelsafeError

        trace = os.environ.get("MODELSAFE_TRACE_PLUGINS") == "1"
        args = {name: kwargs[name] for name in impl.argnames if name in kwargs}
        started = time.perf_counter()
        try:
            with plugin_stdout_to_stderr():  # (a print in a hook must not corrupt --json)
                return True, impl.function(**args)
        except ModelsafeError:
            raise
        except KeyboardInterrupt:  # (the user's Ctrl-C: the command stops)
            raise
        except BaseException as exc:  # noqa: BLE001 - SystemExit, GeneratorExit...: a failure
            reason = f"{type(exc).__name__}: {exc}"
            self.record_failure(impl.plugin_name, hook_name, reason, failed)
            if trace or os.environ.get("MODELSAFE_DEBUG") == "1":
                traceback.print_exc(file=sys.stderr)
            return False, None
        finally:
            if trace:
                took = (time.perf_counter() - started) * 1000
                print(f"[plugins] {impl.plugin_name}.{hook_name} ({took:.1f} ms)", file=sys.stderr)

    def call_each(
        self,
        hook_name: str,
        *,
        failed: list[HookFailure] | None = None,
        third_party_only: bool = False,
        **kwargs: Any,
    ) -> Iterator[tuple[str, Any]]:
        """Yield ``(plugin name, result)`` for every implementation that returns non-None
        (with ``third_party_only``, of plugins that are not built-ins), in call order.

        An implementation that raises is recorded (:meth:`record_failure`; also in ``failed``
        when given) and skipped, unless it raised a ``ModelsafeError`` subclass, which is a
        deliberate answer and propagates. Whether a result is what the hook promises is the
        caller's to check: it records a bad one with :meth:`record_failure`.
        """
        for impl in self._impls(hook_name):
            if third_party_only and self.is_builtin(impl.plugin_name):
                continue
            ok, result = self.call_impl(impl, hook_name, failed=failed, **kwargs)
            if ok and result is not None:
                yield impl.plugin_name, result

    def first_result(
        self,
        hook_name: str,
        *,
        failed: list[HookFailure] | None = None,
        third_party_only: bool = False,
        **kwargs: Any,
    ) -> tuple[str, Any] | None:
        """The first non-None ``(plugin name, result)``, in pluggy's call order."""
        for found in self.call_each(
            hook_name, failed=failed, third_party_only=third_party_only, **kwargs
        ):
            return found
        return None

    def all_results(
        self, hook_name: str, *, failed: list[HookFailure] | None = None, **kwargs: Any
    ) -> list[tuple[str, Any]]:
        return list(self.call_each(hook_name, failed=failed, **kwargs))


class _StdoutRouter:
    """``sys.stdout`` while plugin code runs in some thread: what a thread inside plugin code
    writes goes to stderr, what any other thread writes goes to the real stdout (a scan's
    workers call hooks while the main thread may print)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.users = 0  # plugin calls running inside it now, in all threads

    def _target(self) -> Any:
        return sys.stderr if getattr(_IN_PLUGIN, "depth", 0) else self.real

    def write(self, text: str) -> Any:
        return self._target().write(text)

    def writelines(self, lines: Iterable[str]) -> None:
        self._target().writelines(lines)

    def flush(self) -> None:
        self._target().flush()

    def __getattr__(self, name: str) -> Any:  # (encoding, isatty, fileno, buffer...)
        return getattr(self._target(), name)


_IN_PLUGIN = threading.local()  # depth: how many plugin calls this thread is inside
_ROUTER_LOCK = threading.Lock()


@contextlib.contextmanager
def plugin_stdout_to_stderr() -> Iterator[None]:
    """Run plugin code (an import, a hook) with its prints to stdout sent to stderr, so a
    chatty plugin cannot corrupt ``--json`` output. Thread-safe: only the threads running plugin
    code are redirected, and stdout is given back when the last call inside it ends, in
    whatever order they end. (Writes to file descriptor 1 itself, from C code, are not
    caught.)"""
    with _ROUTER_LOCK:
        router = sys.stdout if isinstance(sys.stdout, _StdoutRouter) else None
        if router is None:
            router = _StdoutRouter(sys.stdout)
            sys.stdout = router
        router.users += 1
    _IN_PLUGIN.depth = getattr(_IN_PLUGIN, "depth", 0) + 1
    try:
        yield
    finally:
        _IN_PLUGIN.depth -= 1
        with _ROUTER_LOCK:
            router.users -= 1
            # (an import that hangs past its timeout keeps its router, which passes the other
            # threads' writes through; one replaced since by someone else stays replaced)
            if router.users == 0 and sys.stdout is router:
                sys.stdout = router.real


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
            with plugin_stdout_to_stderr():  # (a print at import must not corrupt --json)
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


def _load_order(
    eps: Iterable[importlib.metadata.EntryPoint],
) -> list[importlib.metadata.EntryPoint]:
    """Entry points in registration order: built-ins (package ``modelsafe``) first, sorted by
    name; then third-party ones in reverse (package, name) order. pluggy calls the most recently
    registered implementation first, so third-party plugins are asked before the built-ins,
    by package name then entry-point name, whatever their package is called."""

    def key(ep: importlib.metadata.EntryPoint) -> tuple[str, str]:
        return (ep.dist.name if ep.dist else "", ep.name)

    builtin = sorted((ep for ep in eps if _is_builtin(ep)), key=key)
    third_party = sorted((ep for ep in eps if not _is_builtin(ep)), key=key, reverse=True)
    return builtin + third_party


def _is_builtin(ep: importlib.metadata.EntryPoint) -> bool:
    return ep.dist is not None and ep.dist.name == "modelsafe"


_WARNED_DISABLED: set[str] = set()


def _warn_unknown_disabled(off: set[str], known: set[str]) -> None:
    """``--disable-plugin`` / ``MODELSAFE_DISABLE_PLUGINS`` names no plugin has: said once."""
    for name in sorted(off - known - _WARNED_DISABLED):
        _WARNED_DISABLED.add(name)
        close = difflib.get_close_matches(name, sorted(known), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        print(
            f"warning: no plugin called {name} to disable ({hint}known: "
            f"{', '.join(sorted(known)) or 'none'})",
            file=sys.stderr,
        )


def _import_timeout() -> float:
    """Seconds a plugin may take to import: ``MODELSAFE_PLUGIN_IMPORT_TIMEOUT``, else 10."""
    import math

    from modelsafe.errors import ConfigError

    text = os.environ.get("MODELSAFE_PLUGIN_IMPORT_TIMEOUT", "").strip()
    if not text:
        return IMPORT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(
            f"MODELSAFE_PLUGIN_IMPORT_TIMEOUT={text!r} is not a number of seconds above 0",
            hint=f"give it like 30 or 2.5, or unset it (default {IMPORT_TIMEOUT_S:g} s)",
        )
    return value


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
    timeout = _import_timeout()
    _warn_unknown_disabled(off, {ep.name for ep in eps})
    for ep in _load_order(eps):
        package = ep.dist.name if ep.dist else ""
        version = ep.dist.version if ep.dist else ""
        builtin = _is_builtin(ep)
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
