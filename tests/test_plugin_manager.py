"""Loading plugins: built-ins via entry points, broken ones reported and skipped."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import pytest

from modelsafe.plugin_manager import build_plugin_manager, use_plugin_manager, version_in_range
from modelsafe.types import TensorIndex

PLUGINS = Path(__file__).parent / "plugins"


def _ep(name: str, module: str) -> importlib.metadata.EntryPoint:
    return importlib.metadata.EntryPoint(name=name, value=module, group="modelsafe")


@pytest.fixture
def example_plugins_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(PLUGINS))


def test_builtins_come_from_entry_points(pm) -> None:  # type: ignore[no-untyped-def]
    builtin = {name for name, r in pm.records.items() if r.builtin}
    declared = {ep.name for ep in importlib.metadata.entry_points(group="modelsafe")}
    assert builtin and builtin <= declared
    assert all(pm.records[name].package == "modelsafe" for name in builtin)


def test_broken_plugins_are_listed_and_skipped(example_plugins_path, run_cli) -> None:  # type: ignore[no-untyped-def]
    eps = [*importlib.metadata.entry_points(group="modelsafe")]
    eps += [
        _ep("broken", "broken_on_import"),
        _ep("future", "future_hookspec"),
        _ep("missing", "no_such_module_anywhere"),
    ]
    pm = build_plugin_manager(entry_points=eps)
    use_plugin_manager(pm)
    code, out, _ = run_cli("plugins", "--json")
    assert code == 0
    records = {p["name"]: p for p in json.loads(out)["plugins"]}
    assert records["broken"]["status"] == "broken"
    assert "needs a library that is not installed" in records["broken"]["reason"]
    assert records["future"]["status"] == "broken"
    assert "hookspec" in records["future"]["reason"]
    assert records["missing"]["status"] == "broken"
    assert "ModuleNotFoundError" in records["missing"]["reason"]
    # Other commands keep working with broken plugins around.
    code, out, _ = run_cli("config", "show", "--json")
    assert code == 0 and json.loads(out)["settings"]


def test_plugin_raising_in_hook_is_recorded_and_skipped(example_plugins_path, tmp_path) -> None:  # type: ignore[no-untyped-def]
    pm = build_plugin_manager(entry_points=[_ep("raiser", "raises_in_hook")])
    results = pm.all_results("modelsafe_identify", index=TensorIndex(tmp_path, "safetensors"))
    assert results == []
    assert [(f.plugin, f.hook) for f in pm.failures] == [("raiser", "modelsafe_identify")]
    assert "ZeroDivisionError" in pm.failures[0].reason


def test_disable_by_env_and_flag(monkeypatch: pytest.MonkeyPatch, run_cli) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("MODELSAFE_DISABLE_PLUGINS", "hashers")
    pm = build_plugin_manager(disable=["scanner_pickle"])
    assert pm.records["hashers"].status == "disabled"
    assert pm.records["scanner_pickle"].status == "disabled"
    assert pm.get_plugin("hashers") is None


def test_hang_on_import_is_bounded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "hangs_on_import.py").write_text("import time\ntime.sleep(30)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("MODELSAFE_PLUGIN_IMPORT_TIMEOUT", "0.5")
    pm = build_plugin_manager(entry_points=[_ep("slow", "hangs_on_import")])
    assert pm.records["slow"].status == "broken"
    assert "did not finish" in pm.records["slow"].reason


@pytest.mark.parametrize(
    ("version", "spec", "ok"),
    [
        ("1.0", ">=1,<2", True),
        ("1.0", ">=2", False),
        ("1.3", "==1", True),
        ("2.0", "<2", False),
        ("1.0", "", True),
    ],
)
def test_version_ranges(version: str, spec: str, ok: bool) -> None:
    assert version_in_range(version, spec) is ok


def test_collecting_failures_sees_only_its_own_thread() -> None:
    import threading

    from modelsafe.plugin_manager import ModelsafePluginManager

    pm = ModelsafePluginManager()
    pm.warn = False
    started, seen = threading.Barrier(2), {}

    def call(name: str) -> None:
        with pm.collecting_failures() as failed:
            started.wait()
            for i in range(50):
                pm.record_failure(name, "modelsafe_identify", f"boom {i}")
            started.wait()
        seen[name] = {f.plugin for f in failed}, len(failed)

    threads = [threading.Thread(target=call, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {"a": ({"a"}, 50), "b": ({"b"}, 50)}
    assert len(pm.failures) == 100  # the manager still keeps them all
    with pm.collecting_failures() as outer, pm.collecting_failures() as inner:
        pm.record_failure("c", "modelsafe_identify", "nested")
    assert [f.plugin for f in outer] == [f.plugin for f in inner] == ["c"]
