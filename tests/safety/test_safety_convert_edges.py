"""Convert at the edges users reach: signals, a source replaced mid-run, names and dtypes a
safetensors file cannot hold, metadata that does not fit, destinations that are not files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from modelsafe.errors import ConversionError, UsageError
from modelsafe.registry import convert as convert_mod
from modelsafe.registry.audit import audit_path
from modelsafe.registry.convert import convert_file, default_destination

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")


def _save(path: Path, value: object) -> Path:
    torch.save(value, path)
    return path


def test_sigterm_removes_the_temp_file(tmp_path: Path) -> None:
    src = _save(tmp_path / "model.ckpt", {"w": torch.zeros(16, 16)})
    child = textwrap.dedent(
        f"""
        import time, sys
        from modelsafe.registry import convert
        real = convert._copy
        def slow(*args):
            print("copying", flush=True)
            time.sleep(60)
            return real(*args)
        convert._copy = slow
        from modelsafe.cli import main
        sys.argv = ["modelsafe", "convert", {str(src)!r}]
        main()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", child], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "copying"  # the temp file exists now
    assert [p.name for p in tmp_path.glob(".*.modelsafe-tmp")]
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "terminated (SIGTERM)" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ckpt"]


def test_a_source_replaced_while_audited_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _save(tmp_path / "model.ckpt", {"w": torch.zeros(4)})
    other = _save(tmp_path / "other.ckpt", {"renamed": torch.ones(4)})
    real = convert_mod._checked_source

    def replaced_meanwhile(*args: object) -> object:
        result = real(*args)  # type: ignore[arg-type]
        os.replace(other, src)  # as rsync or a downloader updates a file: by rename
        return result

    monkeypatch.setattr(convert_mod, "_checked_source", replaced_meanwhile)
    with pytest.raises(ConversionError, match="changed while it was being audited"):
        convert_file(src, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ({"__metadata__": torch.zeros(2)}, "named '__metadata__'"),
        ({"bad\ud800": torch.zeros(2)}, "not valid Unicode"),
        ({"c": torch.zeros(2, dtype=torch.complex128)}, "C128, which no safetensors dtype"),
        ({"a.b": torch.zeros(2), "a": {"b": torch.ones(2)}}, "flatten to the same name"),
    ],
)
def test_what_safetensors_cannot_hold_is_refused_up_front(
    tmp_path: Path, value: object, why: str
) -> None:
    src = _save(tmp_path / "model.ckpt", value)
    assert audit_path(src).status == "safe"  # torch.load(weights_only=True) loads them all
    with pytest.raises(ConversionError, match=why):
        convert_file(src, tmp_path / "out.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ckpt"]


def test_fnuz_fp8_and_complex64_convert(tmp_path: Path) -> None:
    tensors = {
        "a": torch.zeros(4).to(torch.float8_e4m3fnuz),
        "b": torch.zeros(4).to(torch.float8_e5m2fnuz),
        "c": torch.ones(3, dtype=torch.complex64),
    }
    src = _save(tmp_path / "model.ckpt", tensors)
    out = convert_file(src, tmp_path / "out.safetensors").destination
    back = safetensors_torch.load_file(out)
    for name, tensor in tensors.items():
        assert back[name].dtype == tensor.dtype
        assert back[name].view(torch.uint8).tolist() == tensor.view(torch.uint8).tolist()


def test_values_that_do_not_fit_are_left_out_one_by_one(tmp_path: Path) -> None:
    src = _save(
        tmp_path / "model.ckpt",
        {
            "state_dict": {"w": torch.zeros(2)},
            "global_step": 1000,
            "epoch": 3,
            "best": float("inf"),
            **{f"config{i:02d}": "x" * 4000 for i in range(20)},  # 80 KB in all
        },
    )
    out = convert_file(src, tmp_path / "out.safetensors").destination
    from safetensors import safe_open

    with safe_open(str(out), framework="pt") as fh:
        meta = fh.metadata()
    values = json.loads(meta["modelsafe.values"])  # strict JSON: no bare Infinity
    assert (values["global_step"], values["epoch"], values["best"]) == (1000, 3, "inf")
    omitted = json.loads(meta["modelsafe.values_omitted"])
    assert omitted and all(k.startswith("config") and k not in values for k in omitted)
    assert len(meta["modelsafe.values"]) <= 64 * 1024


def test_destinations(tmp_path: Path) -> None:
    assert default_destination(Path("a/model.ckpt")) == Path("a/model.safetensors")
    assert default_destination(Path("emb-v1.5")) == Path("emb-v1.5.safetensors")
    src = _save(tmp_path / "model.ckpt", {"w": torch.zeros(2)})
    folder = tmp_path / "out"
    folder.mkdir()
    started = time.perf_counter()
    with pytest.raises(UsageError, match="is a folder"):
        convert_file(src, folder, overwrite=True)
    assert time.perf_counter() - started < 5  # refused before anything is copied


np = pytest.importorskip("numpy")
hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(
    shape=st.lists(st.integers(0, 7), min_size=1, max_size=4),
    perm_seed=st.integers(0, 1000),
    steps=st.lists(st.integers(1, 3), min_size=4, max_size=4),
)
def test_gather_blocks_keep_c_order_and_bound_span_and_size(
    shape: list[int], perm_seed: int, steps: list[int]
) -> None:
    """Any strided view (transposed, stepped) comes out byte for byte in C order, in blocks whose
    output size and source span stay under the limits (what bounds convert's RSS)."""
    limits = {"BLOCK_BYTES": 24, "BLOCK_SPAN": 200}
    base = np.arange(int(np.prod([s * 3 for s in shape])), dtype=np.int16)
    base = base.reshape([s * 3 for s in shape])
    view = base[tuple(slice(None, None, k) for k in steps[: len(shape)])]
    order = np.random.default_rng(perm_seed).permutation(view.ndim)
    view = view.transpose(order)
    with pytest.MonkeyPatch.context() as mp:
        for name, value in limits.items():
            mp.setattr(convert_mod, name, value)
        blocks = list(convert_mod._blocks(view))
    assert b"".join(np.ascontiguousarray(b).tobytes() for b in blocks) == view.tobytes()
    for b in blocks:  # (one element is the floor: it is never split)
        assert b.size <= 1 or b.nbytes <= limits["BLOCK_BYTES"]
        assert b.size <= 1 or convert_mod._span(b) <= limits["BLOCK_SPAN"]
