"""Audit red-team pass 6 (the allow-list itself): every name the audit allows is on torch's own
weights-only allow-list, or is named in a warning (numpy helpers, dtype aliases, ``frozenset``,
classes torch does not have); and the protocol that decides name mapping is the last PROTO, as
in CPython."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import pytest

from modelsafe.registry.audit import audit_path
from modelsafe.registry.pickle_vm.allowlist import (
    ALLOWED_GLOBALS,
    NUMPY_HELPERS,
    WEIGHTS_ONLY_REFUSES,
)

torch = pytest.importorskip("torch")


def test_every_allowed_name_is_torchs_or_warned_about() -> None:
    from torch import _weights_only_unpickler as weights_only

    torchs = set(weights_only._get_allowed_globals())
    unwarned = ALLOWED_GLOBALS - NUMPY_HELPERS - WEIGHTS_ONLY_REFUSES
    assert sorted(unwarned - torchs) == []
    assert not (WEIGHTS_ONLY_REFUSES & torchs)  # (a name torch accepts needs no warning)


def test_a_frozenset_value_is_safe_with_the_weights_only_warning(tmp_path: Path) -> None:
    path = tmp_path / "tags.pt"
    torch.save({"w": torch.zeros(2), "tags": frozenset({"ema"})}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)  # what the warning says
    verdict = audit_path(path)
    assert verdict.status == "safe"
    codes = {f.code: f.message for f in verdict.findings}
    assert "builtins.frozenset" in codes["weights-only-refuses"]


def test_the_last_proto_decides_the_name_mapping(tmp_path: Path) -> None:
    """PROTO 4, then PROTO 2, then ``c__builtin__\\neval``: CPython maps the name for the
    protocol-2 read (builtins.eval); the audit names what would run."""
    body = io.BytesIO()
    body.write(b"\x80\x04\x80\x02c__builtin__\neval\n(X\x01\x00\x00\x001tR.")
    path = tmp_path / "p.pkl"
    path.write_bytes(body.getvalue())
    verdict = audit_path(path)
    assert verdict.status == "unsafe"
    assert any("builtins.eval" in f.message for f in verdict.findings), verdict.findings
