"""Schemathesis fuzzes every API operation from the app's own OpenAPI spec (bounded examples):
no 5xx, and every response matches its documented status code, content type and schema."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from modelsafe.testing.queues import RecordingQueue

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


EXAMPLES = 40  # per operation; the whole run stays well under a minute


@pytest.mark.parametrize("token", [None, "fuzz-token"])
def test_api_conforms_to_its_openapi_spec(
    make_client: Callable[..., Any], token: str | None
) -> None:
    # A queue that runs nothing: fuzzed jobs must not start generation. With a token, writes
    # without it must answer the documented 401.
    client = make_client(queue=RecordingQueue(), token=token)
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) == 12, [op.label for op in operations]
    failures: dict[str, str] = {}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            case.call_and_validate(checks=CHECKS)

        try:
            run()
        except Exception as exc:  # noqa: BLE001 - collect every operation's failure
            failures[operation.label] = f"{type(exc).__name__}: {exc}"[:3000]
    assert not failures, "\n\n".join(f"{k}\n{v}" for k, v in failures.items())
