"""Session-wide tiny models for the generate tests (built once, on CPU, in a few seconds)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from modelsafe.testing.tiny_models import Tiny, build, tokenizer_dir


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Tiny]:
    """``tiny("sd1")`` -> the tiny model of that family, built on first use."""
    root = tmp_path_factory.mktemp("tiny-models")
    built: dict[str, Tiny] = {}
    toks: dict[bool, Path] = {}

    def get(family: str) -> Tiny:
        if family not in built:
            flux = family.startswith("flux1")
            if flux not in toks:
                toks[flux] = tokenizer_dir(root / ("tok-flux" if flux else "tok"), flux=flux)
            built[family] = build(family, root, toks[flux])
        return built[family]

    return get
