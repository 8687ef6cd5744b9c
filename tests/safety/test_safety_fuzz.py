"""Acceptance 2: any bytes in, a verdict or a ModelsafeError out, in bounded time and memory."""

from __future__ import annotations

import io
import pickle
import resource
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelsafe.errors import ModelsafeError
from modelsafe.registry.audit import audit_path
from modelsafe.registry.pickle_vm.limits import Limits
from modelsafe.registry.pickle_vm.machine import run_pickle
from modelsafe.registry.pickle_vm.tensors import interpret
from modelsafe.registry.read import read_index
from modelsafe.registry.torch_archive import read_torch_file

FAST = settings(
    max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _seed_files() -> list[bytes]:
    torch = pytest.importorskip("torch")
    seeds = []
    for legacy in (False, True):
        buf = io.BytesIO()
        torch.save(
            {"w": torch.ones(3), "b": torch.zeros(2, 2).t(), "n": 1},
            buf,
            _use_new_zipfile_serialization=not legacy,
        )
        seeds.append(buf.getvalue())
    seeds.append(pickle.dumps({"a": [1, 2.5, "x", b"y", (None, True)]}, protocol=4))
    return seeds


SEEDS = _seed_files()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif data:
            del data[pos : pos + draw(st.integers(1, 16))]
    return bytes(data)


@FAST
@given(st.binary(max_size=2048))
def test_vm_any_bytes(data: bytes) -> None:
    result = run_pickle(data)
    assert result.completed or any(f.severity == "error" for f in result.findings)
    if result.completed:
        interpret(result.root)


@FAST
@given(mutated())
def test_vm_mutated_pickles(data: bytes) -> None:
    result = run_pickle(data)
    if result.completed:
        interpret(result.root)


@FAST
@given(data=st.one_of(mutated(), st.binary(max_size=4096)))
def test_readers_and_audit_any_bytes(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz.ckpt"
    path.write_bytes(data)
    verdict = audit_path(path)
    assert verdict.status in ("safe", "unsafe", "error")
    for fmt in ("zip", "legacy-torch", "pickle"):
        tf = read_torch_file(path, fmt)
        assert tf.status in ("safe", "unsafe", "error")
    try:
        read_index(path)
    except ModelsafeError:
        pass


@FAST
@given(header=st.binary(max_size=512), body=st.binary(max_size=64))
def test_safetensors_header_any_bytes(tmp_path: Path, header: bytes, body: bytes) -> None:
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + body)
    assert audit_path(path).status in ("safe", "unsafe", "error")


@pytest.mark.parametrize(
    "data",
    [
        b"(" * 200_000 + b".",  # nested marks
        b"]" + b"2a" * 100_000 + b".",  # a list appended to itself 100k times
        b"\x80\x02"
        + b"K\x01r"
        + b"".join(i.to_bytes(4, "little") + b"0K\x01r" for i in range(1))
        + b"".join(b"K\x01r" + i.to_bytes(4, "little") + b"0" for i in range(200_000))
        + b"N.",  # memo flood
        b"\x80\x02]" + b"]" * 100_000 + b"e" * 1 + b".",  # deep nesting attempt
        b"\x80\x02" + b"N" * 2_000_000 + b".",  # stack flood
    ],
)
def test_hostile_pickles_are_bounded(data: bytes) -> None:
    limits = Limits(max_opcodes=500_000, max_memo=100_000, max_stack=100_000, max_marks=10_000)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    result = run_pickle(data, limits=limits)
    if result.completed:
        interpret(result.root, limits=limits)
    assert time.perf_counter() - started < 10
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 512 * 1024


def test_limit_findings_are_errors() -> None:
    result = run_pickle(b"\x80\x02" + b"N" * 1000 + b".", limits=Limits(max_stack=100))
    assert not result.completed
    assert [f.code for f in result.findings] == ["limit"]


def test_self_referencing_list_walk_terminates() -> None:
    result = run_pickle(b"\x80\x02]q\x00h\x00a.")  # l = []; l.append(l)
    assert result.completed
    assert interpret(result.root).tensors == []


def test_large_strings_are_not_copied() -> None:
    big = b"\x80\x04\x8e" + (64 << 20).to_bytes(8, "little") + b"\0" * (64 << 20) + b"."
    result = run_pickle(big)
    assert result.completed and type(result.root).__name__ == "LargeBytes"
