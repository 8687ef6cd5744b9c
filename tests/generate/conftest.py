"""Session-wide tiny models for the generate tests (built once, on CPU, in a few seconds)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from generate_tiny import Tiny, build, tokenizer_dir  # noqa: E402


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
