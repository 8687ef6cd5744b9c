"""Review of red-team pass 7's byte search (the one past the scan budget): STACK_GLOBAL forms it
did not tie to its two pushes. Each pickle floods past the VM's object budget, pads past the
2M-opcode scan (the real limits), then opens ``marker`` through a STACK_GLOBAL whose module is an
escaped UNICODE string, comes from a memo slot rewritten past the scan (PUT or MEMOIZE), or has a
FRAME or a DUP/POP between its pushes. pickle.load runs each; the audit says ``unsafe`` and never
creates ``marker``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from modelsafe.registry.audit import audit_path

FLOOD = b"}0" * 2_300_000  # 2.3M empty dicts pushed and popped: past the VM's object budget
PAD = b"N0" * 1_050_000  # past the 2M-opcode scan that runs after the VM stopped
ESCAPED = b"Vbuilt\\u0069ns\n"  # UNICODE decodes raw-unicode-escape: pushes 'builtins'


def _text(value: str | Path) -> bytes:
    return b"V" + str(value).encode() + b"\n"


def _su(text: bytes) -> bytes:
    return b"\x8c" + bytes([len(text)]) + text


def _open(marker: Path) -> bytes:
    """``open(marker, "w")`` on the callable the STACK_GLOBAL just pushed."""
    return _text(marker) + _text("w") + b"\x86R."


def _timeit(marker: Path) -> bytes:
    """``timeit.timeit("pass", <code creating marker>)``: timeit is no "dangerous" module."""
    code = f"open({str(marker)!r}, 'w').close()".encode()
    return _su(b"pass") + _su(code) + b"\x86R."


def _escaped_unicode(marker: Path) -> bytes:
    return FLOOD + PAD + ESCAPED + _text("open") + b"\x93" + _open(marker)


def _stale_memo_put(marker: Path) -> bytes:
    allowed = _text("collections") + b"p0\n0" + _text("OrderedDict") + b"p1\n0"
    rewritten = ESCAPED + b"p0\n0" + _text("open") + b"p1\n0"
    return allowed + FLOOD + PAD + rewritten + b"g0\ng1\n\x93" + _open(marker)


def _stale_memo_memoize(marker: Path) -> bytes:
    allowed = b"\x80\x04" + _text("collections") + b"p2\n0" + _text("OrderedDict") + b"p1\n0"
    rewritten = ESCAPED + b"\x940" + _text("open") + b"p1\n0"  # (MEMOIZE writes slot 2)
    return allowed + FLOOD + PAD + rewritten + b"h\x02h\x01\x93" + _open(marker)


def _frame_between(marker: Path) -> bytes:
    rest = _su(b"timeit") + b"\x93" + _timeit(marker)
    framed = b"\x95" + len(rest).to_bytes(8, "little") + rest
    return b"\x80\x04" + FLOOD + PAD + _su(b"timeit") + framed


def _dup_pop_between(marker: Path) -> bytes:
    tail = _su(b"timeit") + b"20" + _su(b"timeit") + b"\x93" + _timeit(marker)
    return b"\x80\x04" + FLOOD + PAD + tail


@pytest.fixture
def marker(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "marker"
    yield path
    assert not path.exists(), "auditing ran the payload"


@pytest.mark.parametrize(
    ("build", "name"),
    [
        (_escaped_unicode, "builtins.open (STACK_GLOBAL)"),
        (_stale_memo_put, "memo slot(s) 0, 1"),
        (_stale_memo_memoize, "memo slot(s) 2, 1"),
        (_frame_between, "timeit.timeit (STACK_GLOBAL)"),
        (_dup_pop_between, "timeit.timeit (STACK_GLOBAL)"),
    ],
    ids=["escaped-unicode", "stale-memo-put", "stale-memo-memoize", "frame", "dup-pop"],
)
def test_the_byte_search_names_the_stack_global(
    tmp_path: Path, marker: Path, build: Callable[[Path], bytes], name: str
) -> None:
    path = tmp_path / "payload.pkl"
    path.write_bytes(build(marker))
    verdict = audit_path(path)
    assert verdict.status == "unsafe", verdict.findings
    assert any(f.severity == "unsafe" and name in f.message for f in verdict.findings), [
        f.message for f in verdict.findings
    ]
    assert any(
        f.code == "limit" and "only searched for names" in f.message for f in verdict.findings
    )
