"""A path with ``~user`` for a user this machine does not have is a path that does not exist, not
a crash: ``Path.expanduser`` raises RuntimeError there (the serve fuzz test found it through
``POST /api/jobs``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelsafe.errors import FileReadError
from modelsafe.paths import user_path

NOBODY = "~no_such_user_modelsafe_test/model.safetensors"


def test_unknown_user_stays_as_typed() -> None:
    assert user_path(NOBODY) == Path(NOBODY)
    assert user_path("~/x") == Path.home() / "x"


def test_resolve_and_jobs_report_a_missing_file() -> None:
    from modelsafe.runtime.jobs.spec import find_input
    from modelsafe.runtime.resolve import load_part

    with pytest.raises(FileReadError, match="does not exist"):
        load_part(NOBODY, "checkpoint")
    with pytest.raises(FileReadError, match="does not exist"):
        find_input(NOBODY, "checkpoint", None)


def test_catalog_path_with_unknown_user() -> None:
    from modelsafe.registry.catalog.db import catalog_url

    assert catalog_url(NOBODY).endswith("no_such_user_modelsafe_test/model.safetensors")
