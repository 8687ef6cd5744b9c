"""Fixtures for resolve/plan tests: real files written in tmp_path, read through the readers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelsafe.testing import write_safetensors


@pytest.fixture
def part_of(pm: Any) -> Callable[..., Any]:
    """Read a real file and make a Part with the given identity (independent of detectors)."""
    from modelsafe.registry.read import read_index
    from modelsafe.runtime.resolve import part_from_index

    def make(
        path: Path,
        role: str,
        family: str,
        kind: str,
        variant: str | None = None,
        facts: dict[str, Any] | None = None,
        weight: float = 1.0,
    ) -> Any:
        index = read_index(path)
        report = {
            "family": family,
            "kind": kind,
            "variant": variant,
            "facts": facts or {},
            "format": index.format,
        }
        return part_from_index(index, report, role, path.name, weight)

    return make


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    def w(name: str, specs: list[Any], metadata: dict[str, str] | None = None) -> Path:
        return write_safetensors(tmp_path / name, specs, metadata)

    return w
