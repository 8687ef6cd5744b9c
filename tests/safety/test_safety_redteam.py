"""Red-team findings: hostile files that were called safe (or error) before their fix.

Every payload only creates a marker file in ``tmp_path``; no test ever loads a hostile file, and
each checks that the marker never appears.
"""

from __future__ import annotations

import io
import resource
import struct
import tarfile
import time
import warnings
import zipfile
from pathlib import Path

import pytest

from modelsafe.registry.audit import audit_path
from modelsafe.registry.pickle_vm.machine import run_pickle
from modelsafe.registry.torch_archive import read_torch_file
from modelsafe.types import Verdict

MARKER = "marker_redteam"


def _payload(tmp_path: Path) -> bytes:
    """Protocol-0 opcodes for builtins.open(<tmp_path>/marker, 'w'), leaving its result pushed."""
    return f"cbuiltins\nopen\n(S'{tmp_path / MARKER}'\nS'w'\ntR".encode()


def _audit(path: Path) -> Verdict:
    verdict = audit_path(path)
    assert not (path.parent / MARKER).exists(), "a payload ran!"
    return verdict


def _codes(verdict: Verdict) -> set[str]:
    return {f.code for f in verdict.findings}


def _names_open(verdict: Verdict) -> bool:
    return any("builtins.open" in f.message and f.severity == "unsafe" for f in verdict.findings)


def _torch_zip(pickle_bytes: bytes, deflate: bool = False) -> bytes:
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", method) as zf:
        zf.writestr("archive/data.pkl", pickle_bytes)
        zf.writestr("archive/version", b"3\n")
    return buf.getvalue()


# -- 1. tar polyglots ---------------------------------------------------------------------------


def _tar_polyglot(tmp_path: Path) -> bytes:
    """A plain pickle (BINBYTES swallowing a tar archive, then STOP) that is also a tar whose
    'storages' member holds the payload: torch.load(weights_only=False) reads the tar first."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in (("dummy", b""), ("storages", _payload(tmp_path) + b".")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    t = bytearray(buf.getvalue())
    t[0:7] = b"\x80\x02B" + struct.pack("<I", len(t) - 8)
    t[-1:] = b"."
    t[148:156] = b" " * 8
    t[148:156] = b"%06o\x00 " % sum(t[:512])
    return bytes(t)


def test_tar_polyglot_pickle_is_unsafe(tmp_path: Path) -> None:
    data = _tar_polyglot(tmp_path)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:  # the premise: a real tar
        assert "storages" in tf.getnames()
    assert run_pickle(data).completed  # and a real pickle holding only bytes
    path = tmp_path / "model.pkl"
    path.write_bytes(data)
    verdict = _audit(path)
    assert verdict.status == "unsafe"
    assert "polyglot-tar" in _codes(verdict)
    assert read_torch_file(path, "pickle").status == "unsafe"  # convert's second look too


def test_tar_header_check_is_cheap_and_exact(tmp_path: Path) -> None:
    from modelsafe.registry.sniff import is_tar_header

    data = _tar_polyglot(tmp_path)
    assert is_tar_header(data[:512])
    broken = bytearray(data[:512])
    broken[150] ^= 1  # the checksum no longer matches: tarfile refuses it, so do we
    assert not is_tar_header(bytes(broken))
    assert not is_tar_header(b"\0" * 512)
    assert not is_tar_header(data[:511])


# -- 2. .npy object dtypes ----------------------------------------------------------------------


def _npy(header_text: str, body: bytes) -> bytes:
    header = header_text.encode("latin1")
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + body


@pytest.mark.parametrize(
    "descr",
    ["'object'", "'object_'", "'|O'", "[('a', 'object')]", "[('a', '<f4'), ('b', 'O')]"],
)
def test_npy_object_dtypes_are_audited(tmp_path: Path, descr: str) -> None:
    path = tmp_path / "array.npy"
    body = b"(" + _payload(tmp_path) + b"l."
    path.write_bytes(_npy(f"{{'descr': {descr}, 'fortran_order': False, 'shape': (1,), }}", body))
    verdict = _audit(path)
    assert verdict.status == "unsafe" and _names_open(verdict)


def test_npy_python2_long_header_is_audited(tmp_path: Path) -> None:
    path = tmp_path / "py2.npy"
    body = b"(" + _payload(tmp_path) + b"l."
    path.write_bytes(_npy("{'descr': '|O', 'fortran_order': False, 'shape': (1L,), }", body))
    verdict = _audit(path)
    assert verdict.status == "unsafe" and _names_open(verdict)


def test_npy_subarray_object_and_unparseable_header(tmp_path: Path) -> None:
    body = b"(" + _payload(tmp_path) + b"l."
    sub = tmp_path / "sub.npy"
    sub.write_bytes(
        _npy("{'descr': [('a', 'O', (2,))], 'fortran_order': False, 'shape': ()}", body)
    )
    assert _audit(sub).status == "unsafe"
    odd = tmp_path / "odd.npy"
    odd.write_bytes(_npy("{'descr': __import__('os'), 'shape': ()}", body))
    verdict = _audit(odd)
    assert verdict.status == "unsafe"  # not provably plain: the data is audited as a pickle
    assert "bad-npy" in _codes(verdict)


def test_plain_npy_stays_safe(tmp_path: Path) -> None:
    numpy = pytest.importorskip("numpy")
    path = tmp_path / "plain.npy"
    numpy.save(path, numpy.arange(6, dtype="<f4").reshape(2, 3))
    assert _audit(path).status == "safe"
    structured = tmp_path / "structured.npy"
    numpy.save(structured, numpy.zeros(3, dtype=[("a", "<i4"), ("b", "<f8", (2,))]))
    assert _audit(structured).status == "safe"


# -- 3. folders ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["model_best.pth.tar", "weights.npz", "model.joblib", "model"])
def test_folder_audits_files_by_content(tmp_path: Path, name: str) -> None:
    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "README.md").write_text("# a model\n")
    (folder / "config.json").write_text('{"a": 1}')
    (folder / name).write_bytes(_torch_zip(b"\x80\x02" + _payload(folder) + b"."))
    verdict = _audit(folder)
    assert verdict.status == "unsafe" and _names_open(verdict)


def test_folder_audits_text_pickle_without_suffix(tmp_path: Path) -> None:
    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "notes.txt").write_text("cat\ndog\nnot a pickle\n")
    (folder / "weights").write_bytes(_payload(folder) + b".")
    verdict = _audit(folder)
    assert verdict.status == "unsafe" and _names_open(verdict)
    assert not any("notes.txt" in f.location for f in verdict.findings)


# -- 4. pickles sniffed as something else -------------------------------------------------------


@pytest.mark.parametrize(
    "prefix",
    [
        b"GGUF\x03\x00\x00\x00\x000",  # BINFLOAT, POP: sniffed as GGUF
        b"N0N0J\x00\x00\x00{0",  # shaped like a safetensors header
        b"K\x010",  # BININT1 then a control byte: unknown binary
        b"S'<html>'\n0",  # protocol 0 with '<html>' in a string: sniffed as HTML
    ],
)
def test_missniffed_pickles_are_unsafe(tmp_path: Path, prefix: bytes) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(prefix + _payload(tmp_path) + b".")
    verdict = _audit(path)
    assert verdict.status == "unsafe" and _names_open(verdict)


def test_real_non_models_stay_errors(tmp_path: Path) -> None:
    page = tmp_path / "model.safetensors"
    page.write_text("<!doctype html><html><body>log in</body></html>")
    assert _audit(page).status == "error"
    noise = tmp_path / "noise.bin"
    noise.write_bytes(bytes(range(256)) * 64)
    assert _audit(noise).status == "error"


# -- 5. VM divergences from CPython -------------------------------------------------------------


@pytest.mark.parametrize(
    "stream",
    [
        b"\x80\x02L" + b"1" * 100 + b"L\n0",  # text LONG over 64 digits
        b"\x80\x02I" + b"1" * 4000 + b"\n0",  # text INT under CPython's 4300 digits
        b"\x80\x04cbuiltins\nset\n)R(K\x01\x900",  # ADDITEMS on set()'s result
        b"\x80\x02]K\x00aK\x00K\x05s0",  # SETITEM on a list
        b"\x80\x02N(e0",  # empty APPENDS on None
        b"\x80\x02K\x01(u0",  # empty SETITEMS on an int
        b"\x80\x04X\x01\x00\x00\x00a(\x900",  # empty ADDITEMS on a str
        b"\x80\x02S'" + b"A" * ((1 << 20) + 10) + b"'\n0",  # a text argument over 1 MiB
    ],
)
def test_vm_goes_on_where_cpython_does(tmp_path: Path, stream: bytes) -> None:
    data = stream + _payload(tmp_path) + b"."
    result = run_pickle(data)
    assert result.completed, [f.message for f in result.findings]
    assert any("builtins.open" in f.message for f in result.findings)
    path = tmp_path / "model.pkl"
    path.write_bytes(data)
    assert _audit(path).status == "unsafe"


def test_globals_after_a_vm_stop_are_still_named(tmp_path: Path) -> None:
    # SETITEM on a tuple stops the VM (CPython too, but the VM must never hide what follows).
    data = b"\x80\x02)K\x00K\x05s0" + _payload(tmp_path) + b"."
    result = run_pickle(data)
    assert not result.completed
    assert any(f.severity == "unsafe" and "builtins.open" in f.message for f in result.findings)
    stack_global = (
        b"\x80\x04)K\x00K\x05s0\x8c\x08builtins\x94\x8c\x04open\x94\x93."  # names via memo
    )
    result = run_pickle(stack_global)
    assert any(f.severity == "unsafe" and "builtins.open" in f.message for f in result.findings)


def test_scan_after_a_stop_ignores_random_bytes() -> None:
    data = b"\x80\x02)K\x00K\x05s" + b"c\xff\xfe\n\x00\n" + b"cnot a name\nx\n."
    result = run_pickle(data)
    assert not any(f.severity == "unsafe" for f in result.findings)


# -- 6. deep nesting ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tail",
    [
        b"]" * 5000 + b"a" * 4999,  # a list nested 5000 deep
        b"N" + b"\x85" * 5000,  # a tuple nested 5000 deep
        b"}" + b"K\x01}" * 4999 + b"s" * 4999,  # a dict nested 5000 deep
    ],
)
def test_deep_nesting_keeps_the_findings(tmp_path: Path, tail: bytes) -> None:
    path = tmp_path / "deep.pkl"
    path.write_bytes(b"\x80\x02" + _payload(tmp_path) + b"0" + tail + b".")
    verdict = _audit(path)
    assert verdict.status == "unsafe" and _names_open(verdict)
    assert "scanner-failed" not in _codes(verdict)


# -- 7. memory ----------------------------------------------------------------------------------


def test_tiny_deflated_set_flood_is_bounded(tmp_path: Path) -> None:
    flood = b"\x80\x04" + (b"(" + b"\x8f" * 900_000) * 6 + b"N."
    path = tmp_path / "flood.pt"
    path.write_bytes(_torch_zip(flood, deflate=True))
    assert path.stat().st_size < 20_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    verdict = _audit(path)
    assert verdict.status == "error"
    assert time.perf_counter() - started < 60
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 400 * 1024  # KiB


def test_object_budget_counts_every_segment_and_container() -> None:
    from modelsafe.registry.pickle_vm.limits import Limits

    limits = Limits(max_object_bytes=1 << 20)
    appended = run_pickle(b"\x80\x04]" + b"\x8fa" * 100_000 + b".", limits=limits)
    assert not appended.completed and appended.findings[-1].code == "limit"
    segments = run_pickle(
        b"\x80\x04" + (b"(" + b"N" * 60) * 100 + b"N.", limits=Limits(max_stack=1000)
    )
    assert not segments.completed and segments.findings[-1].code == "limit"


def test_big_benign_checkpoint_fits_the_limits(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    state = {f"layer{i}.weight": torch.zeros(1) for i in range(3000)}
    path = tmp_path / "big.ckpt"
    torch.save({"state_dict": state, "global_step": 1}, path)
    verdict = _audit(path)
    assert verdict.status == "safe", [f.message for f in verdict.findings][:3]


# -- 8. legacy sparse / quantized ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sparse", "quant"])
def test_legacy_sparse_and_quantized_are_safe(tmp_path: Path, kind: str) -> None:
    torch = pytest.importorskip("torch")
    if kind == "sparse":
        tensor = torch.eye(3).to_sparse()
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # quantized tensors are deprecated in torch
            tensor = torch.quantize_per_tensor(torch.ones(3), 0.1, 0, torch.quint8)
    path = tmp_path / f"legacy-{kind}.pt"
    torch.save({"w": torch.ones(2), "t": tensor}, path, _use_new_zipfile_serialization=False)
    verdict = _audit(path)
    assert verdict.status == "safe", [f.message for f in verdict.findings]
    zipped = tmp_path / f"zip-{kind}.pt"
    torch.save({"w": torch.ones(2), "t": tensor}, zipped)
    assert _audit(zipped).status == "safe"


# -- 9. persistent ids --------------------------------------------------------------------------


def test_non_storage_persistent_id_is_unsafe(tmp_path: Path) -> None:
    pickle_bytes = (
        b"\x80\x02}(X\x01\x00\x00\x00aX\x06\x00\x00\x00moduleK\x01\x86Q"
        b"X\x01\x00\x00\x00bX\x04\x00\x00\x00evil\x85Qu."
    )
    path = tmp_path / "persid.pt"
    path.write_bytes(_torch_zip(pickle_bytes))
    verdict = _audit(path)
    assert verdict.status == "unsafe"
    assert "persistent-id" in _codes(verdict)
