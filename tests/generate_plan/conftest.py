"""A tiny SD1 model (folder, single file, configs, tokenizers) built once for the plan tests."""

from __future__ import annotations

import pytest

from modelsafe.testing.tiny_models import Tiny, tiny_model


@pytest.fixture(scope="session")
def sd1(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    return tiny_model("sd1", tmp_path_factory.mktemp("tiny-plan"))
