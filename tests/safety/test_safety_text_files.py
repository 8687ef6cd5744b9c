"""Text files beside models are not pickles: a licence that starts with ``P`` (PERSID) or holds
"c"/"i" followed by prose (GLOBAL/INST of no module) must not make a clean folder unsafe; and a
valid safetensors file whose header length reads as a text opcode is probed in flat memory.

Found by a review of the red-team fixes: LICENSE/AUTHORS files made model folders unsafe, and
one header length in 8,192 made `audit` read a whole 7 GB file through a mapping.
"""

from __future__ import annotations

import pickle
import resource
import time
from pathlib import Path

from modelsafe.registry.audit import audit_path
from modelsafe.registry.pickle_vm.machine import run_pickle
from modelsafe.testing import write_safetensors

LICENSES = {
    "LICENSE": "PYTHON SOFTWARE FOUNDATION LICENSE VERSION 2\n"
    "--------------------------------------------\n\n1. This LICENSE AGREEMENT is between ...\n",
    "NOTICE": "Permission is hereby granted, free of charge, to any person obtaining a copy\n"
    'of this software and associated documentation files (the "Software"), to deal\n',
    "AUTHORS": "Pygments is written and maintained by Georg Brandl <georg@python.org>.\n",
    "COPYING": "copyright (c) 2024 someone\nall rights reserved\n",
    "INSTALL": "install it with pip\nthen run it\n",
}


def test_licence_files_beside_a_model_keep_the_folder_safe(tmp_path: Path) -> None:
    write_safetensors(tmp_path / "model.safetensors", [("w", "F16", (8, 8))])
    for name, text in LICENSES.items():
        (tmp_path / name).write_text(text)
    verdict = audit_path(tmp_path)
    assert verdict.status == "safe", verdict.findings
    for name in LICENSES:
        assert audit_path(tmp_path / name).status == "error"  # plain text, not a model


def test_a_persistent_id_is_unsafe_only_in_a_pickle_that_loads() -> None:
    loads = pickle.dumps(1, protocol=0).replace(b"I1\n", b"(Pmodule\nt", 1)  # PERSID, then STOP
    assert run_pickle(b"Pmodule\n.").unsafe
    assert not run_pickle(b"PYTHON SOFTWARE FOUNDATION LICENSE\n----\n").unsafe
    assert loads  # (the opcodes above are what pickle.dumps writes around a persistent id)


def test_global_of_no_module_name_stops_like_cpython() -> None:
    text = b"charge, to any person obtaining a copy\nof this software\n."
    result = run_pickle(text)
    assert not result.unsafe
    assert result.findings[-1].code == "unimportable"
    assert run_pickle(b"cos\nsystem\n.").unsafe  # a real module name stays unsafe


def test_text_opcode_header_length_is_probed_in_flat_memory(tmp_path: Path) -> None:
    """0x88 ('NEWTRUE') then 0x56 ('V', UNICODE: reads to the next newline): the probe looks for
    a newline in 1 MiB pieces, skipping the holes of a sparse file, instead of mapping it."""
    path = tmp_path / "big.safetensors"
    write_safetensors(path, [("w", "F16", (1024, 1024))])
    raw = path.read_bytes()
    length = int.from_bytes(raw[:8], "little")
    header = raw[8 : 8 + length].rstrip()
    padded = header + b" " * (0x5688 - len(header))
    with open(path, "wb") as fh:
        fh.write(len(padded).to_bytes(8, "little") + padded)
        fh.truncate(8 + len(padded) + 1024 * 1024 * 2 + (3 << 30))  # +3 GiB of sparse zeros
    assert path.read_bytes()[:2] == b"\x88\x56"
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    verdict = audit_path(path)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert verdict.findings is not None
    assert not any(f.code == "disguised-pickle" for f in verdict.findings)
    assert time.perf_counter() - started < 10
    assert grown_kib < 256 * 1024  # not the 3 GiB a mapped search kept resident


def test_a_module_name_python_imports_though_no_identifier_stays_unsafe(tmp_path: Path) -> None:
    """``_sysconfigdata__<platform>`` holds dashes yet is a stdlib module on every Linux CPython:
    treating it as "no module" made a code-running pickle pass a folder audit as safe."""
    import sysconfig

    name = sysconfig._get_sysconfigdata_name()  # type: ignore[attr-defined]
    marker = tmp_path / "marker"
    payload = (
        f"c{name}\nbuild_time_vars\n0cbuiltins\nexec\n(S\"open({str(marker)!r}, 'w').close()\"\ntR."
    ).encode()
    assert run_pickle(f"c{name}\nbuild_time_vars\n.".encode()).unsafe
    folder = tmp_path / "model"
    folder.mkdir()
    write_safetensors(folder / "model.safetensors", [("w", "F16", (8, 8))])
    (folder / "training_state").write_bytes(payload)
    verdict = audit_path(folder)
    assert verdict.status == "unsafe", verdict.findings
    assert any("builtins.exec" in f.message for f in verdict.findings)
    assert not marker.exists()


def test_a_storage_name_under_no_module_is_a_global_torch_resolves(tmp_path: Path) -> None:
    """torch's unpickler returns a storage type for any name holding "Storage" without importing
    the module, so `ca b\\nFloatStorage` loads there and the payload after it runs: the module
    name that is no module must not end the audit."""
    import zipfile

    marker = tmp_path / "marker"
    data = b"\x80\x02ca b\nFloatStorage\n0cbuiltins\nopen\n(V" + str(marker).encode() + b"\nVw\ntR."
    path = tmp_path / "model.pt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", data)
        zf.writestr("archive/version", "3\n")
    verdict = audit_path(path)
    assert verdict.status == "unsafe", verdict.findings
    assert any("builtins.open" in f.message for f in verdict.findings)
    assert not marker.exists()


def test_a_legacy_checkpoint_that_sniffs_as_html_is_audited_in_a_folder(tmp_path: Path) -> None:
    """A protocol-0 legacy checkpoint whose sys_info holds "<html>" sniffs as an HTML page; in a
    folder it was only probed, and the storage-name trick hid its payload: the folder was safe."""
    marker = tmp_path / "marker"
    legacy = (
        b"L%dL\n." % 0x1950A86A20F9469CFC6C
        + b"I1001\n."
        + b"(dp0\nV<html>\nI1\ns."
        + b"ca b\nFloatStorage\n0"
        + f"cbuiltins\nopen\n(V{marker}\nVw\ntR0".encode()
        + b"(dp1\n."
        + b"(l."
    )
    folder = tmp_path / "model"
    folder.mkdir()
    write_safetensors(folder / "model.safetensors", [("w", "F16", (8, 8))])
    (folder / "model_best.pth.tar").write_bytes(legacy)
    verdict = audit_path(folder)
    assert verdict.status == "unsafe", verdict.findings
    assert not marker.exists()
