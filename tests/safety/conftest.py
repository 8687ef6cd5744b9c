"""The safety corpus, built once per test session in a temp folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import safety_corpus


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("safety-corpus")


@pytest.fixture(scope="session")
def benign(corpus_dir: Path) -> dict[str, Path]:
    return safety_corpus.build_benign(corpus_dir / "benign")


@pytest.fixture(scope="session")
def malicious(corpus_dir: Path) -> dict[str, Path]:
    return safety_corpus.build_malicious(corpus_dir / "malicious")


@pytest.fixture(scope="session")
def broken(corpus_dir: Path) -> dict[str, Path]:
    return safety_corpus.build_broken(corpus_dir / "broken")
