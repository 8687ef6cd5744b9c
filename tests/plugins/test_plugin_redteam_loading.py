"""Red-team findings on loading plugins: the call order does not depend on a package's name, a
misspelled hook marks the plugin broken, and a mistyped ``--disable-plugin`` name is said."""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from modelsafe.plugin_manager import build_plugin_manager, use_plugin_manager
from modelsafe.plugins.hookspecs import hookimpl
from modelsafe.registry.read import read_index
from modelsafe.testing import fresh_plugin_manager, write_safetensors
from modelsafe.types import TensorIndex


@dataclass
class FakeEntryPoint:
    """An installed entry point as ``build_plugin_manager`` uses one (name, value, dist, load)."""

    name: str
    plugin: object
    package: str
    value: str = "fake"
    dist: Any = field(init=False)

    def __post_init__(self) -> None:
        self.dist = SimpleNamespace(name=self.package, version="1.0")

    def load(self) -> object:
        return self.plugin


def claiming_reader(label: str) -> SimpleNamespace:
    """A reader that claims every safetensors file, naming itself in the index's metadata."""

    @hookimpl
    def modelsafe_read_index(path: Path, head: bytes, fmt: str) -> TensorIndex | None:
        return TensorIndex(path, "safetensors", metadata={"read_by": label}) if head else None

    return SimpleNamespace(__name__=label, modelsafe_read_index=modelsafe_read_index)


def installed(*extra: FakeEntryPoint) -> list[Any]:
    """modelsafe's own entry points (the built-ins) plus ``extra``."""
    eps = importlib.metadata.entry_points(group="modelsafe")
    return [*(ep for ep in eps if ep.dist and ep.dist.name == "modelsafe"), *extra]


# -- 5. third-party plugins are asked first, whatever their package is called -----------------


@pytest.mark.parametrize("package", ["aaa-readers", "zzz-readers"])
def test_a_third_party_reader_is_asked_before_the_builtins(tmp_path: Path, package: str) -> None:
    path = write_safetensors(tmp_path / "m.safetensors", [("w", "F16", (4, 4))])
    mine = FakeEntryPoint("mine", claiming_reader("mine"), package)
    use_plugin_manager(build_plugin_manager(entry_points=installed(mine)))
    try:
        index = read_index(path)
    finally:
        use_plugin_manager(None)
    assert index.metadata == {"read_by": "mine"}  # before: only when the package sorted late


def test_third_party_plugins_are_asked_by_package_then_name() -> None:
    eps = [
        FakeEntryPoint("b", claiming_reader("zzz.b"), "zzz-pkg"),
        FakeEntryPoint("a", claiming_reader("aaa.a"), "aaa-pkg"),
        FakeEntryPoint("c", claiming_reader("aaa.c"), "aaa-pkg"),
    ]
    pm = build_plugin_manager(entry_points=installed(*eps))
    order = [impl.plugin_name for impl in pm._impls("modelsafe_read_index")]
    third = [name for name in order if name in ("a", "b", "c")]
    assert third == ["a", "c", "b"]
    assert order[: len(third)] == third  # before every built-in reader


def test_the_recipe_writer_runs_after_every_other_postprocessor() -> None:
    @hookimpl
    def modelsafe_postprocess(image: Any, recipe: Any, request: Any) -> Any:
        return image  # e.g. a framed copy: a new image without the recipe chunks

    framer = SimpleNamespace(__name__="framer", modelsafe_postprocess=modelsafe_postprocess)
    pm = build_plugin_manager(entry_points=installed(FakeEntryPoint("framer", framer, "aaa")))
    order = [impl.plugin_name for impl in pm._impls("modelsafe_postprocess")]
    assert order[0] == "postprocess_upscale"  # tryfirst: the metadata lands on the upscaled image
    assert order.index("framer") < order.index("postprocess_png_metadata")
    assert order[-1] == "postprocess_png_metadata"


# -- 6. a misspelled hook is refused ----------------------------------------------------------


def test_a_misspelled_hook_marks_the_plugin_broken() -> None:
    called: list[str] = []

    @hookimpl
    def modelsafe_identfy(index: TensorIndex) -> None:
        called.append("identfy")

    typo = SimpleNamespace(__name__="typo", modelsafe_identfy=modelsafe_identfy)
    with fresh_plugin_manager(typo) as pm:
        record = pm.records["typo"]
        pm.check_pending()  # pluggy's own check: nothing unknown was registered
        assert pm.get_plugin("typo") is None
    assert record.status == "broken"
    assert record.reason == "unknown hook modelsafe_identfy (did you mean modelsafe_identify?)"
    assert not called


def test_a_hookimpl_with_a_known_specname_is_fine() -> None:
    @hookimpl(specname="modelsafe_identify")
    def detect(index: TensorIndex) -> None:
        return None

    with fresh_plugin_manager(SimpleNamespace(__name__="named", detect=detect)) as pm:
        assert pm.records["named"].status == "ok"
        assert pm.records["named"].hooks == ["modelsafe_identify"]


def test_an_optional_hook_of_a_later_hookspec_is_fine() -> None:
    """pluggy's ``optionalhook=True`` marks a hook a later 1.x may add: the plugin loads and its
    other hooks run (only unmarked unknown names are misspellings)."""
    called: list[str] = []

    @hookimpl(optionalhook=True)
    def modelsafe_some_hook_from_1_9(index: TensorIndex) -> None:
        called.append("future")

    @hookimpl
    def modelsafe_identify(index: TensorIndex) -> None:
        called.append("identify")

    plugin = SimpleNamespace(
        __name__="forward",
        modelsafe_some_hook_from_1_9=modelsafe_some_hook_from_1_9,
        modelsafe_identify=modelsafe_identify,
    )
    with fresh_plugin_manager(plugin) as pm:
        assert pm.records["forward"].status == "ok"
        assert pm.get_plugin("forward") is not None


# -- 8. a mistyped --disable-plugin name is said, once ------------------------------------------


def test_a_mistyped_disable_name_is_warned_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    build_plugin_manager(disable=["famly_unet_redteam"])
    build_plugin_manager(disable=["famly_unet_redteam"])
    err = capsys.readouterr().err
    assert err.count("warning: no plugin called famly_unet_redteam to disable") == 1
    assert "known: " in err and "family_unet" in err
    monkeypatch.setenv("MODELSAFE_DISABLE_PLUGINS", "hashers,no_such_plugin_redteam")
    pm = build_plugin_manager()
    assert pm.records["hashers"].status == "disabled"
    assert "no plugin called no_such_plugin_redteam" in capsys.readouterr().err
    build_plugin_manager(disable=["family_unet"])  # a real name: nothing said
    assert capsys.readouterr().err == ""


# -- post-processors: one implementation at a time, guarded and traced ------------------------


def test_call_impl_guards_and_traces_one_implementation(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    @hookimpl
    def modelsafe_postprocess(image: Any, recipe: Any, request: Any) -> Any:
        raise RuntimeError("frame failed")

    broken = SimpleNamespace(__name__="framer", modelsafe_postprocess=modelsafe_postprocess)
    monkeypatch.setenv("MODELSAFE_TRACE_PLUGINS", "1")
    with fresh_plugin_manager(broken) as pm:
        (impl,) = [i for i in pm._impls("modelsafe_postprocess") if i.plugin_name == "framer"]
        ok, result = pm.call_impl(impl, "modelsafe_postprocess", image=1, recipe=2, request=3)
    assert (ok, result) == (False, None)
    err = capsys.readouterr().err
    assert "[plugins] framer.modelsafe_postprocess (" in err
    assert "warning: plugin framer failed in modelsafe_postprocess: RuntimeError: frame" in err
