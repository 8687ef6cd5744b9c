"""Red-team findings on generation plugins: a backend or post-processor that raises or answers
garbage is named and never ends in an unexpected error (exit code 3); the progress callback is
always callable; post-processors are traced like every hook; hashers get the tensor table.

The backends are objects registered directly on a fresh plugin manager; the checkpoint is a
small safetensors file given ``--family sd1`` (nothing is loaded: the backend is fake).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from PIL import Image

from modelsafe.plugins.hookspecs import hookimpl
from modelsafe.testing import fresh_plugin_manager, write_safetensors
from modelsafe.testing.cli import invoke


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    tensors = [("model.diffusion_model.out.0.weight", "F16", (4,))]
    return write_safetensors(tmp_path / "sd15.safetensors", tensors, data="random", seed=1)


class ToyBackend:
    """Answers with ``make(request, progress)``; ``fail_check`` makes check() raise."""

    def __init__(self, make: Callable[[Any, Any], Any], fail_check: bool = False) -> None:
        self.name = "toy"
        self.make = make
        self.fail_check = fail_check
        self.progress_seen: list[Any] = []

    def check(self, request: Any) -> None:
        if self.fail_check:
            raise KeyError("no such thing")

    def generate(self, request: Any, progress: Any = None) -> Any:
        self.progress_seen.append(progress)
        progress(1, request.steps)  # as plugin_hooks.md promises backends may
        return self.make(request, progress)


def images(request: Any, _progress: Any) -> list[Any]:
    return [Image.new("RGB", (8, 8), "white") for _ in request.image_seeds()]


def backend_plugin(backend: Any) -> SimpleNamespace:
    @hookimpl
    def modelsafe_backends() -> list[Any]:
        return [backend]

    return SimpleNamespace(__name__="toy_backend", modelsafe_backends=modelsafe_backends)


def run(args: list[str], *plugins: object) -> tuple[int, str, str]:
    """The CLI in-process as the ``modelsafe`` script runs it (its error handling included),
    with ``plugins`` registered beside the installed ones."""
    with fresh_plugin_manager(*plugins):
        return invoke(*args)


def generate_args(checkpoint: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--catalog",
        f"sqlite:///{out.parent / 'c.db'}",
        "generate",
        "--backend",
        "toy",
        "--checkpoint",
        str(checkpoint),
        "--family",
        "sd1",
        "--prompt",
        "a lighthouse",
        "--seed",
        "7",
        "--steps",
        "2",
        "--out",
        str(out),
        *extra,
    ]


@pytest.mark.parametrize("where", ["check", "generate"])
def test_a_backend_that_raises_is_a_backend_error_naming_it(
    checkpoint: Path, tmp_path: Path, where: str
) -> None:
    def boom(_request: Any, _progress: Any) -> Any:
        raise RuntimeError("toy generate boom")

    backend = ToyBackend(boom if where == "generate" else images, fail_check=where == "check")
    code, out, err = run(generate_args(checkpoint, tmp_path / "out"), backend_plugin(backend))
    assert code == 2, err
    assert f"backend 'toy' failed in {where}()" in err
    assert "unexpected" not in err and "Traceback" not in err
    assert not list((tmp_path / "out").glob("*.png"))


@pytest.mark.parametrize(
    "answer",
    [
        lambda request, _p: "not images",
        lambda request, _p: ["a string" for _ in request.image_seeds()],
        lambda request, _p: None,
    ],
    ids=["str", "list-of-str", "none"],
)
def test_a_backend_answering_garbage_is_named(
    checkpoint: Path, tmp_path: Path, answer: Callable[[Any, Any], Any]
) -> None:
    code, out, err = run(
        generate_args(checkpoint, tmp_path / "out"), backend_plugin(ToyBackend(answer))
    )
    assert code == 2, err
    assert "backend 'toy' returned" in err and "Traceback" not in err


def test_progress_is_callable_with_json_and_without_a_terminal(
    checkpoint: Path, tmp_path: Path
) -> None:
    backend = ToyBackend(images)
    code, out, err = run(
        generate_args(checkpoint, tmp_path / "out", "--json"), backend_plugin(backend)
    )
    assert code == 0, err
    assert backend.progress_seen and all(callable(p) for p in backend.progress_seen)
    assert json.loads(out)["plugin_failures"] == []


def test_a_post_processor_answering_garbage_is_named_and_the_image_kept(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    @hookimpl
    def modelsafe_postprocess(image: Any, recipe: Any, request: Any) -> Any:
        return "framed"

    post = SimpleNamespace(__name__="bad_post", modelsafe_postprocess=modelsafe_postprocess)
    monkeypatch.setenv("MODELSAFE_TRACE_PLUGINS", "1")
    code, out, err = run(
        generate_args(checkpoint, tmp_path / "out", "--json"),
        backend_plugin(ToyBackend(images)),
        post,
    )
    assert code == 0, err
    assert "plugin bad_post failed in modelsafe_postprocess: returned str, not an image" in err
    failures = json.loads(out)["plugin_failures"]
    assert [(f["plugin"], f["hook"]) for f in failures] == [("bad_post", "modelsafe_postprocess")]
    (png,) = (tmp_path / "out").glob("*.png")
    with Image.open(png) as saved:
        assert saved.size == (8, 8) and "a lighthouse" in saved.text["parameters"]
    traced = [line for line in err.splitlines() if "modelsafe_postprocess" in line]
    assert any("bad_post" in line for line in traced if "failed" not in line)  # the trace


def test_hashers_get_the_tensor_table_during_generate(checkpoint: Path, tmp_path: Path) -> None:
    seen: list[Any] = []

    @hookimpl
    def modelsafe_hashers(index: Any) -> list[Any]:
        seen.append(index)
        return []

    hashers = SimpleNamespace(__name__="index_spy", modelsafe_hashers=modelsafe_hashers)
    code, out, err = run(
        generate_args(checkpoint, tmp_path / "out"), backend_plugin(ToyBackend(images)), hashers
    )
    assert code == 0, err
    assert seen and all(i is not None and i.path == checkpoint for i in seen)


def test_a_backends_hook_answering_garbage_is_named_when_the_backend_is_missing(
    checkpoint: Path, tmp_path: Path
) -> None:
    @hookimpl
    def modelsafe_backends() -> list[Any]:
        return ["toy"]  # a name, not a backend

    broken = SimpleNamespace(__name__="toy_backend", modelsafe_backends=modelsafe_backends)
    code, out, err = run(generate_args(checkpoint, tmp_path / "out"), broken)
    assert code == 2, err
    assert "no generation backend called 'toy'" in err
    assert "plugin toy_backend failed in modelsafe_backends: returned str" in err


def test_a_post_processor_after_the_metadata_writer_keeps_the_recipe(
    checkpoint: Path, tmp_path: Path
) -> None:
    @hookimpl(trylast=True)  # (pluggy runs it after the built-in trylast metadata writer)
    def modelsafe_postprocess(image: Any, recipe: Any, request: Any) -> Any:
        framed = Image.new("RGB", (image.width + 4, image.height + 4), "black")
        framed.paste(image, (2, 2))
        framed.info["frame"] = "2px"
        return framed

    post = SimpleNamespace(__name__="late_frame", modelsafe_postprocess=modelsafe_postprocess)
    code, out, err = run(
        generate_args(checkpoint, tmp_path / "out"), backend_plugin(ToyBackend(images)), post
    )
    assert code == 0, err
    (png,) = (tmp_path / "out").glob("*.png")
    with Image.open(png) as saved:
        assert saved.size == (12, 12) and saved.text["frame"] == "2px"
        assert "a lighthouse" in saved.text["parameters"] and "modelsafe" in saved.text
