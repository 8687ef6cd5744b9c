"""Audit red-team pass 11: folders whose loaders read files the audit did not, and slow audits.

1. a shard index named for a variant (``model.safetensors.index.fp16.json``: what
   ``from_pretrained(variant="fp16")`` opens) was not taken for an index;
2. the index a config's ``transformers_weights`` puts in a subfolder names files of the MODEL
   folder (transformers joins the names there), not of the index's;
3. an index too large to read in a subfolder was passed over (``subfolder="x"`` loads it);
4. one opcode budget per file (a .pkl.gz of five huge pickles, an .npz of huge object members,
   each with a budget of its own, took minutes), and the byte search's memo-write check, which
   searched the stream once per memo slot;
5. ``auto_map`` naming a class of another repository (code fetched and run with
   ``trust_remote_code=True``) was not named.

Each payload only creates a marker file. The audit never creates it; where it is cheap, the real
loader (in a subprocess) shows that it does."""

from __future__ import annotations

import gzip
import json
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
from safety_corpus import open_call

from modelsafe.registry import audit
from modelsafe.registry.audit import audit_path
from modelsafe.registry.pickle_vm import limits, machine
from modelsafe.registry.pickle_vm.machine import run_pickle
from modelsafe.registry.walk import walk
from modelsafe.types import Verdict

OPEN = "builtins.open"


def _notes(marker: Path) -> bytes:
    """A ``notes.txt`` a loader unpickles: a protocol-0 pickle calling ``builtins.open(marker,
    "w")``, then text that breaks the stream (it never reaches its STOP)."""
    return (
        b"cbuiltins\nopen\n(S'" + str(marker).encode() + b"'\nS'w'\ntR"
        b"\nNotes for this model: see the README.\n"
    )


def _config() -> dict[str, object]:
    return {
        "model_type": "gpt2",
        "architectures": ["GPT2Model"],
        "n_layer": 1,
        "n_embd": 8,
        "n_head": 2,
        "vocab_size": 16,
        "n_positions": 8,
        "bos_token_id": 0,
        "eos_token_id": 0,
    }


def _state() -> dict[str, object]:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(**{k: v for k, v in _config().items() if k != "model_type"})
    torch.manual_seed(0)
    model = transformers.GPT2Model(config)
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def _model_folder(folder: Path, weights: str = "model.safetensors") -> dict[str, object]:
    """``folder`` with a tiny GPT-2's config.json and clean safetensors weights; its state."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    state = _state()
    (folder / "config.json").write_text(json.dumps(_config()))
    save_file(state, str(folder / weights))  # type: ignore[arg-type]
    return state


def _index(state: dict[str, object], shard: str) -> str:
    return json.dumps({"metadata": {}, "weight_map": {name: shard for name in state}})


def _names_open(verdict: Verdict, where: str) -> bool:
    return verdict.status == "unsafe" and any(
        f.severity == "unsafe" and OPEN in f.message and f.location.startswith(where)
        for f in verdict.findings
    )


# -- 1. shard indexes named for a variant --------------------------------------------------------

VARIANT_INDEXES = (
    "model.safetensors.index.fp16.json",
    "pytorch_model.bin.index.fp16.json",
    "diffusion_pytorch_model.safetensors.index.fp16.json",
)


def _variant_folder(tmp_path: Path, index_name: str, marker: Path) -> Path:
    folder = tmp_path / "variant"
    state = _model_folder(folder)
    (folder / index_name).write_text(_index(state, "notes.txt"))
    (folder / "notes.txt").write_bytes(_notes(marker))
    return folder


@pytest.mark.parametrize("index_name", VARIANT_INDEXES)
def test_a_variant_shard_index_is_an_index(tmp_path: Path, index_name: str) -> None:
    marker = tmp_path / "marker"
    folder = _variant_folder(tmp_path, index_name, marker)
    verdict = audit_path(folder)
    assert _names_open(verdict, "notes.txt"), verdict.findings
    # the scan lists the file the index names, as a file of its own
    found = {Path(f.path) for f in walk([folder]).found}
    assert folder / "notes.txt" in found, found
    assert audit_path(folder / "notes.txt").status == "unsafe"
    assert not marker.exists(), "auditing ran the payload"


@pytest.mark.parametrize("index_name", ["model.safetensors.index.fp16.json", "X.INDEX.BF16.JSON"])
def test_a_variant_index_naming_a_shard_outside_is_unsafe(tmp_path: Path, index_name: str) -> None:
    folder = tmp_path / "vout"
    state = _model_folder(folder)
    (folder / index_name).write_text(_index(state, "../elsewhere/x.bin"))
    verdict = audit_path(folder)
    assert verdict.status == "unsafe"
    assert any(f.code == "shard-outside" for f in verdict.findings), verdict.findings
    assert any(f.code == "shard-outside" for f in audit_path(folder / index_name).findings)


def test_model_index_json_is_no_shard_index() -> None:
    assert audit.is_index_name("model.safetensors.index.json")
    assert audit.is_index_name("pytorch_model.bin.index.fp16.json")
    assert not audit.is_index_name("model_index.json")
    assert not audit.is_index_name("config.json")


# -- 2. an index in a subfolder names the model folder's files -----------------------------------


def _tw_folder(tmp_path: Path, marker: Path) -> Path:
    """config.json's ``transformers_weights`` names ``sub/model.safetensors.index.json``, which
    names ``notes.txt``: transformers loads MODEL/notes.txt; MODEL/sub/notes.txt is a decoy."""
    torch = pytest.importorskip("torch")
    folder = tmp_path / "tw"
    (folder / "sub").mkdir(parents=True)
    state = _state()
    config = {**_config(), "transformers_weights": "sub/model.safetensors.index.json"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "sub" / "model.safetensors.index.json").write_text(_index(state, "notes.txt"))
    torch.save(state, folder / "sub" / "notes.txt")
    (folder / "notes.txt").write_bytes(_notes(marker))
    return folder


def test_an_index_in_a_subfolder_names_files_of_the_model_folder(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    folder = _tw_folder(tmp_path, marker)
    verdict = audit_path(folder)
    assert _names_open(verdict, "notes.txt"), verdict.findings
    found = {Path(f.path) for f in walk([folder]).found}
    assert folder / "notes.txt" in found, found
    assert not marker.exists(), "auditing ran the payload"


def test_shards_beside_their_index_in_a_subfolder_are_no_missing_shards(tmp_path: Path) -> None:
    """The names of an index in a component folder reach nothing in the folder above: no
    ``shard-missing`` there (a pipeline's ``transformer/`` index)."""
    from safetensors.torch import save_file

    torch = pytest.importorskip("torch")
    component = tmp_path / "pipe" / "transformer"
    component.mkdir(parents=True)
    (component / "config.json").write_text(json.dumps({"_class_name": "X"}))
    weight_map = {}
    for k in (1, 2):
        name = f"diffusion_pytorch_model-0000{k}-of-00002.safetensors"
        save_file({f"w{k}": torch.ones(2)}, str(component / name))
        weight_map[f"w{k}"] = name
    index = json.dumps({"metadata": {}, "weight_map": weight_map})
    (component / "diffusion_pytorch_model.safetensors.index.json").write_text(index)
    verdict = audit_path(tmp_path / "pipe")
    assert verdict.status == "safe", verdict.findings


# -- the real loader runs what these folders name ------------------------------------------------

LOADS = """
import sys
from transformers import AutoModel
for path, kwargs in ((sys.argv[1], {"variant": "fp16"}), (sys.argv[2], {})):
    try:
        AutoModel.from_pretrained(path, weights_only=False, **kwargs)
    except Exception as exc:
        print("load raised", type(exc).__name__, exc)
"""


def test_the_real_loader_runs_what_these_folders_name(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    markers = tmp_path / "variant_marker", tmp_path / "tw_marker"
    variant = _variant_folder(tmp_path, VARIANT_INDEXES[0], markers[0])
    tw = _tw_folder(tmp_path, markers[1])
    assert audit_path(variant).status == audit_path(tw).status == "unsafe"
    assert not any(m.exists() for m in markers)
    subprocess.run(
        [sys.executable, "-W", "ignore", "-c", LOADS, str(variant), str(tw)],
        capture_output=True,
        timeout=300,
        cwd=tmp_path,
        check=False,
    )
    assert all(m.exists() for m in markers), "the real loader did not run: the cases prove nothing"


# -- 3. an index the audit cannot read, anywhere -------------------------------------------------


def _bigidx(tmp_path: Path, marker: Path, name: str = "model.safetensors.index.json") -> Path:
    """bigidx/x/: config, clean ``model.fp16.safetensors``, an index (padded past the patched
    size the audit reads) naming notes.txt, and notes.txt."""
    root = tmp_path / "bigidx"
    state = _model_folder(root / "x", "model.fp16.safetensors")
    text = _index(state, "notes.txt")
    (root / "x" / name).write_text(text[:-1] + " " * 4096 + "}")
    (root / "x" / "notes.txt").write_bytes(_notes(marker))
    return root


def test_an_index_too_large_to_read_in_a_subfolder_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit, "_MAX_INDEX_JSON", 2048)  # (the real limit: 64 MiB)
    marker = tmp_path / "marker"
    root = _bigidx(tmp_path, marker)
    for target in (root, root / "x"):
        verdict = audit_path(target)
        assert verdict.status == "error", (target, verdict.findings)
    assert any(f.code == "unread-index" for f in audit_path(root).findings)
    assert not marker.exists()


def test_a_variant_index_too_large_beside_loadable_weights_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model loads from model.safetensors (so it is no `cannot-load`), but
    ``from_pretrained(variant="fp16")`` reads the index the audit could not."""
    monkeypatch.setattr(audit, "_MAX_INDEX_JSON", 2048)
    folder = tmp_path / "m"
    state = _model_folder(folder)
    (folder / "model.safetensors.index.fp16.json").write_text(
        _index(state, "notes.txt")[:-1] + " " * 4096 + "}"
    )
    (folder / "notes.txt").write_bytes(_notes(tmp_path / "marker"))
    verdict = audit_path(folder)
    assert verdict.status == "error", verdict.findings
    assert any(f.code == "unread-index" for f in verdict.findings)
    skipped = [s.path for s in walk([folder]).skipped]
    assert str(folder / "model.safetensors.index.fp16.json") in skipped
    assert not (tmp_path / "marker").exists()


def test_an_index_that_is_not_json_in_a_subfolder_is_an_error(tmp_path: Path) -> None:
    root = _bigidx(tmp_path, tmp_path / "marker")
    (root / "x" / "model.safetensors.index.json").write_text("<html>rate limited</html>")
    verdict = audit_path(root)
    assert verdict.status == "error", verdict.findings
    assert any(f.code == "unread-index" for f in verdict.findings)


# -- 4. one opcode budget per file ---------------------------------------------------------------

BUDGET = 300_000  # (patched; the real one: 52 M opcodes, a pickle at the limit and its scan)


def _long_pickle(pairs: int = 75_000) -> bytes:
    """A pickle of ``2 * pairs`` opcodes that builds nothing (NONE, POP), then None."""
    return b"\x80\x02" + b"N0" * pairs + b"N."


def _budget_spent(verdict: Verdict) -> bool:
    return any(f.code == "opcode-budget" and f.severity == "error" for f in verdict.findings)


def test_the_pickles_of_a_compressed_file_share_one_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "FILE_OPCODES", BUDGET)
    marker = tmp_path / "marker"
    clean = tmp_path / "multi.pkl.gz"
    clean.write_bytes(gzip.compress(_long_pickle() * 3))
    verdict = audit_path(clean)
    assert verdict.status != "safe" and _budget_spent(verdict), verdict.findings
    # a payload past the budget is still named (the byte search of the rest)
    hostile = tmp_path / "hostile.pkl.gz"
    hostile.write_bytes(gzip.compress(_long_pickle() * 3 + open_call(marker)))
    verdict = audit_path(hostile)
    assert verdict.status == "unsafe", verdict.findings
    assert any(OPEN in f.message for f in verdict.findings), verdict.findings
    # within the budget: read to its end, safe as before
    small = tmp_path / "one.pkl.gz"
    small.write_bytes(gzip.compress(_long_pickle()))
    verdict = audit_path(small)
    assert verdict.status == "safe" and not _budget_spent(verdict), verdict.findings
    assert not marker.exists()


def test_clean_pickles_past_the_budget_are_an_error_not_unsafe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Benign pickles one after another, more than the budget: not all audited, so an error
    (never safe), not "unsafe" for bytes after the end that could not be read through."""
    monkeypatch.setattr(limits, "FILE_OPCODES", BUDGET)
    clean = tmp_path / "multi.pkl"
    clean.write_bytes(_long_pickle() * 3)
    verdict = audit_path(clean)
    assert verdict.status == "error", verdict.findings
    assert _budget_spent(verdict)
    assert any(
        f.code == "trailing-data" and "not all audited" in f.message for f in verdict.findings
    ), verdict.findings


def _npz(path: Path, bodies: list[bytes]) -> None:
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header += " " * (64 - (10 + len(header) + 1) % 64) + "\n"
    head = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for k, body in enumerate(bodies):
            zf.writestr(f"a{k}.npy", head + body)


def test_the_members_of_an_npz_share_one_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "FILE_OPCODES", BUDGET)
    marker = tmp_path / "marker"
    clean = tmp_path / "many.npz"
    _npz(clean, [_long_pickle()] * 3)
    verdict = audit_path(clean)
    assert verdict.status == "error" and _budget_spent(verdict), verdict.findings
    hostile = tmp_path / "hostile.npz"
    _npz(hostile, [_long_pickle()] * 2 + [open_call(marker)])
    verdict = audit_path(hostile)
    assert verdict.status == "unsafe", verdict.findings
    assert any(OPEN in f.message for f in verdict.findings), verdict.findings
    assert not marker.exists()


def test_each_file_of_a_folder_has_a_budget_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "FILE_OPCODES", BUDGET)
    folder = tmp_path / "data"
    folder.mkdir()
    for k in range(3):  # (each 200k opcodes: three together would pass the budget)
        (folder / f"part{k}.pkl.gz").write_bytes(gzip.compress(_long_pickle(100_000)))
    verdict = audit_path(folder)
    assert not _budget_spent(verdict), verdict.findings
    read = [f for f in verdict.findings if f.code == audit.DATA_PICKLE]  # (each read to its end)
    assert len(read) == 3, verdict.findings


def _memo_search(slots: int) -> bytes:
    """finder's memosearch.pkl: two strings each memoized in ``slots`` slots, a stop, the
    scan's budget of NONE/POP, then one STACK_GLOBAL per slot pair read from the memo."""
    out = bytearray(b"\x80\x02X\x05\x00\x00\x00torch")
    out += b"".join(b"r" + struct.pack("<I", k) for k in range(256, 256 + slots)) + b"0"
    out += b"X\x04\x00\x00\x00Size"
    out += b"".join(b"r" + struct.pack("<I", k) for k in range(256 + slots, 256 + 2 * slots))
    out += b"0}(Ne"  # APPENDS on a dict: the VM stops (bad-target), the scan goes on
    out += b"N0" * 101  # (past the patched scan budget: the byte search)
    out += b"".join(
        b"j" + struct.pack("<I", 256 + k) + b"j" + struct.pack("<I", 256 + slots + k) + b"\x93"
        for k in range(slots)
    )
    return bytes(out + b".")


def test_the_memo_write_check_reads_the_stream_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One search of the rest of the stream per memo slot was quadratic (80,000 slots: 87 s)."""
    monkeypatch.setattr(machine, "_SCAN_OPCODES", 100)
    path = tmp_path / "memosearch.pkl"
    path.write_bytes(_memo_search(60_000))
    started = time.monotonic()
    verdict = audit_path(path)
    assert time.monotonic() - started < 30  # (about 1 s; it took minutes)
    assert verdict.status != "safe", verdict.findings


def _memo_stream(rewrite: bool) -> bytes:
    """Allowed names memoized in slots 1000/1001, a stop, then a STACK_GLOBAL reading them back
    past the scan's budget; with ``rewrite``, a LONG_BINPUT writes slot 1000 before it."""
    out = b"\x80\x04X\x0b\x00\x00\x00collectionsr\xe8\x03\x00\x000"
    out += b"X\x0b\x00\x00\x00OrderedDictr\xe9\x03\x00\x000"
    out += b"}(Ne" + b"N0" * 101
    if rewrite:
        out += b"Nr\xe8\x03\x00\x000"
    return out + b"j\xe8\x03\x00\x00j\xe9\x03\x00\x00\x93."


@pytest.mark.parametrize("piece", [1, 3, 4 << 20])
def test_the_memo_write_index_finds_a_rewrite_anywhere(
    monkeypatch: pytest.MonkeyPatch, piece: int
) -> None:
    monkeypatch.setattr(machine, "_SCAN_OPCODES", 100)
    monkeypatch.setattr(machine, "_INDEX_PIECE", piece)
    rewritten = run_pickle(_memo_stream(rewrite=True))
    assert any(f.code == "dynamic-global" for f in rewritten.findings), rewritten.findings
    kept = run_pickle(_memo_stream(rewrite=False))
    assert not kept.unsafe, kept.findings  # (collections.OrderedDict: allowed)


def test_past_the_put_lines_it_reads_every_slot_may_be_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PUT lines (text) are read up to a count; a memo read past them is not vouched for."""
    monkeypatch.setattr(machine, "_SCAN_OPCODES", 100)
    monkeypatch.setattr(machine, "_PUT_LINES", 2)
    stream = _memo_stream(rewrite=False)
    puts = b"Np7\n0Np8\n0Np9\n0"  # (other slots: within the count they change nothing)
    cut = stream.index(b"j\xe8")
    past = run_pickle(stream[:cut] + puts + stream[cut:])
    assert any(f.code == "dynamic-global" for f in past.findings), past.findings
    monkeypatch.setattr(machine, "_PUT_LINES", 1000)
    within = run_pickle(stream[:cut] + puts + stream[cut:])
    assert not within.unsafe, within.findings


# -- 5. auto_map naming another repository -------------------------------------------------------


def test_auto_map_naming_another_repository_is_a_warning(tmp_path: Path) -> None:
    folder = tmp_path / "remote"
    _model_folder(folder)
    config = {**_config(), "auto_map": {"AutoModel": "attacker/repo--modeling_evil.EvilModel"}}
    (folder / "config.json").write_text(json.dumps(config))
    tokenizer = {"auto_map": {"AutoTokenizer": ["attacker/tok--tok.Tok", None]}}
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer))
    verdict = audit_path(folder)
    remote = [f for f in verdict.findings if f.code == "remote-code"]
    assert verdict.status == "safe"  # (a warning: nothing runs without trust_remote_code)
    assert {f.location for f in remote} == {"config.json", "tokenizer_config.json"}
    assert "attacker/repo--modeling_evil.EvilModel" in remote[0].message
    assert all("trust_remote_code=True" in f.message for f in remote)


def test_auto_map_naming_code_in_the_folder_is_no_remote_code(tmp_path: Path) -> None:
    folder = tmp_path / "local"
    _model_folder(folder)
    config = {**_config(), "auto_map": {"AutoModel": "modeling_x.XModel"}}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_x.py").write_text("X = 1\n")
    codes = {f.code for f in audit_path(folder).findings}
    assert "python-code" in codes and "remote-code" not in codes


def test_scan_of_a_model_file_beside_a_remote_auto_map_warns(tmp_path: Path, run_cli: Any) -> None:
    """`scan`/`show` of the weights file itself gave its folder's local-code warning only: a
    config whose auto_map names another repository's code said nothing."""
    folder = tmp_path / "remote"
    _model_folder(folder)
    config = {**_config(), "auto_map": {"AutoModel": "attacker/repo--modeling_evil.EvilModel"}}
    (folder / "config.json").write_text(json.dumps(config))
    catalog = str(tmp_path / "c.db")
    weights = folder / "model.safetensors"
    code, _, err = run_cli("--catalog", catalog, "scan", str(weights))
    assert code == 0, err
    code, out, err = run_cli("--catalog", catalog, "show", str(weights), "--json")
    assert code == 0, err
    assert "attacker/repo--modeling_evil.EvilModel" in out and "remote-code" in out
