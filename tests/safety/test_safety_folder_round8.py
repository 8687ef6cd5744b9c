"""Eighth red-team round, folders: the audit of a folder skipped any subfolder named `.no_exist`
or whose path ended in `.cache/huggingface` (`mixes.cache/huggingface/`), and trusted a file a
shard index names only as far as its name (`notes.txt`: probed as text, its pickle dropped for
never reaching STOP). Loaders read both. Payloads only create a marker file in ``tmp_path``;
where cheap, one torch.load(weights_only=False) in a child process proves the premise (the
marker appears); the audit itself never loads anything."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from modelsafe.registry.audit import audit_path
from modelsafe.registry.walk import printable
from modelsafe.types import Verdict


def _payload(marker: Path) -> bytes:
    """A protocol-2 pickle calling builtins.open(marker, 'w')."""
    return b"\x80\x02" + f"cbuiltins\nopen\n(S'{marker}'\nS'w'\ntR".encode() + b"."


def _text_payload(marker: Path) -> bytes:
    """A protocol-0 pickle calling builtins.open(marker, 'w') that runs into markdown and never
    reaches its STOP: pickle.load has run the call before it fails on the text."""
    call = f"cbuiltins\nopen\n(S'{marker}'\nS'w'\ntR".encode()
    return call + b"\n\n# Notes\n\nTraining notes for this model.\n"


def _benign(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"w": [0.0, 1.0]}, protocol=2))


def _index(folder: Path, shards: list[str], name: str = "pytorch_model.bin.index.json") -> None:
    weight_map = {f"w{i}": shard for i, shard in enumerate(shards)}
    (folder / name).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def _config(folder: Path) -> None:
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))


def _torch_runs(tmp_path: Path, paths: list[Path]) -> None:
    """torch.load(weights_only=False) of each path in one child process (errors ignored)."""
    pytest.importorskip("torch")
    child = (
        "import sys, warnings, torch\n"
        "warnings.filterwarnings('ignore')\n"
        "for p in sys.argv[1:]:\n"
        "    try:\n"
        "        torch.load(p, weights_only=False)\n"
        "    except Exception:\n"
        "        pass\n"
    )
    subprocess.run(
        [sys.executable, "-c", child, *map(str, paths)],
        capture_output=True,
        timeout=300,
        cwd=tmp_path,
        check=False,
    )


def _names_open(verdict: Verdict, where: str) -> bool:
    return any(
        f.severity == "unsafe"
        and f.code == "global"
        and "builtins.open" in f.message
        and f.location.startswith(where)
        for f in verdict.findings
    )


# -- 1. hub bookkeeping is skipped only where the hub keeps it ----------------------------------


@pytest.mark.parametrize(
    "where",
    [
        ".no_exist/dreammix.ckpt",  # (no hub repo folder above it)
        "unet/.no_exist/dreammix.ckpt",
        "mixes.cache/huggingface/dreammix.ckpt",  # (not a `.cache` folder)
        "models--org--m/sub/.no_exist/dreammix.ckpt",
        "cache/huggingface/dreammix.ckpt",
    ],
)
def test_a_look_alike_of_hub_bookkeeping_is_audited(tmp_path: Path, where: str) -> None:
    folder = tmp_path / "Stable-diffusion"
    _benign(folder / "good.ckpt")
    evil = folder / where
    evil.parent.mkdir(parents=True)
    evil.write_bytes(_payload(tmp_path / "marker"))
    verdict = audit_path(folder)
    assert verdict.status == "unsafe" and _names_open(verdict, where)
    assert not (tmp_path / "marker").exists()


def test_the_hubs_own_bookkeeping_is_still_skipped(tmp_path: Path) -> None:
    """`models--org--m/.no_exist/<rev>/` (audited as the repo folder, through a link to it, or
    from the hub folder) and a --local-dir download's `.cache/huggingface/` hold no model."""
    hub = tmp_path / "hub"
    repo = hub / "models--org--m"
    _benign(repo / "snapshots" / "abc" / "model.bin")
    (repo / ".no_exist" / "abc").mkdir(parents=True)
    (repo / ".no_exist" / "abc" / "model.safetensors").touch()  # (an empty marker file)
    os.symlink(repo, tmp_path / "link")
    local = tmp_path / "local"
    _benign(local / "model.bin")
    download = local / ".cache" / "huggingface" / "download"
    download.mkdir(parents=True)
    (download / "model.safetensors.incomplete").write_bytes(b"\x00" * 10)
    for folder in (repo, hub, tmp_path / "link", local):
        verdict = audit_path(folder)
        assert verdict.status == "safe", (folder, [f.message for f in verdict.findings])


# -- 2. every file a shard index names is audited in full ---------------------------------------


@pytest.mark.parametrize("config", [True, False])
@pytest.mark.parametrize("name", ["notes.txt", "README.md", "shard-2.json"])
def test_a_doc_named_shard_that_runs_code_is_unsafe(
    tmp_path: Path, name: str, config: bool
) -> None:
    """Without config.json the folder was `safe`; with it, only an `error` saying the file is
    plain text to download again (which gives the same payload)."""
    folder = tmp_path / "model"
    _benign(folder / "pytorch_model-00001-of-00002.bin")
    (folder / name).write_bytes(_text_payload(tmp_path / "marker"))
    _index(folder, ["pytorch_model-00001-of-00002.bin", name])
    if config:
        _config(folder)
    verdict = audit_path(folder)
    assert verdict.status == "unsafe" and _names_open(verdict, name)
    assert not (tmp_path / "marker").exists()


def test_a_doc_named_shard_runs_code_in_torch_load(tmp_path: Path) -> None:
    """The premise: torch.load(weights_only=False) of the shard runs the call, then fails."""
    shard = tmp_path / "notes.txt"
    shard.write_bytes(_text_payload(tmp_path / "marker"))
    assert not (tmp_path / "marker").exists()
    _torch_runs(tmp_path, [shard])
    assert (tmp_path / "marker").exists()


@pytest.mark.parametrize(
    "shard",
    [
        ".cache/huggingface/download/pytorch_model-00002-of-00002.bin",
        ".no_exist/abc/pytorch_model-00002-of-00002.bin",
    ],
)
def test_a_shard_in_a_skipped_folder_is_audited(tmp_path: Path, shard: str) -> None:
    """The index of a hub repo folder or a --local-dir download names a shard inside the
    bookkeeping the walk skips: loaders join the name to the folder and read it all the same."""
    folder = tmp_path / "models--org--m"
    _benign(folder / "pytorch_model-00001-of-00002.bin")
    (folder / shard).parent.mkdir(parents=True)
    (folder / shard).write_bytes(_payload(tmp_path / "marker"))
    _index(folder, ["pytorch_model-00001-of-00002.bin", shard])
    _config(folder)
    verdict = audit_path(folder)
    assert verdict.status == "unsafe" and _names_open(verdict, shard)
    assert not (tmp_path / "marker").exists()


def test_a_shard_the_index_names_but_the_folder_lacks_is_not_safe(tmp_path: Path) -> None:
    """No config.json, so no loader check: the folder read `safe` though a shard is missing."""
    folder = tmp_path / "model"
    _benign(folder / "pytorch_model-00001-of-00002.bin")
    (folder / "sub").mkdir()
    shards = ["pytorch_model-00002-of-00002.bin", "sub", "nul\x00name.bin", "\ud800.bin"]
    _index(folder, ["pytorch_model-00001-of-00002.bin", *shards])
    verdict = audit_path(folder)
    assert verdict.status == "error"
    missing = sorted(f.location for f in verdict.findings if f.code == "shard-missing")
    assert missing == sorted(printable(shard) for shard in shards)  # (text output prints it)


def test_a_shard_the_index_names_twice_through_a_link_is_audited_once(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    _benign(folder / "real" / "pytorch_model-00001-of-00002.bin")
    os.symlink("real", folder / "alias")
    (folder / "real" / "notes.txt").write_bytes(_text_payload(tmp_path / "marker"))
    _index(folder, ["real/pytorch_model-00001-of-00002.bin", "alias/notes.txt"])
    verdict = audit_path(folder)
    assert verdict.status == "unsafe"
    opens = [f for f in verdict.findings if f.code == "global"]
    assert len(opens) == 1
    assert not (tmp_path / "marker").exists()


def test_a_shard_through_a_link_into_proc_is_not_read(tmp_path: Path) -> None:
    """/proc/kmsg reads block for ever (as root): a named shard there is no file to audit."""
    folder = tmp_path / "model"
    _benign(folder / "pytorch_model-00001-of-00002.bin")
    os.symlink("/proc", folder / "proc")
    _index(folder, ["pytorch_model-00001-of-00002.bin", "proc/kmsg", "proc/self/status"])
    verdict = audit_path(folder)
    assert verdict.status == "error"
    missing = sorted(f.location for f in verdict.findings if f.code == "shard-missing")
    assert missing == ["proc/kmsg", "proc/self/status"]


@pytest.mark.parametrize("name", ["a" * 300 + ".bin", ("d" * 200 + "/") * 30 + "x.bin"])
def test_a_shard_name_too_long_keeps_the_folder_unsafe(tmp_path: Path, name: str) -> None:
    """A name no file system takes is a missing shard: it must not turn the whole audit into an
    'unreadable' error that drops what the folder's other files run."""
    folder, marker = tmp_path / "model", tmp_path / "MARKER"
    folder.mkdir()
    (folder / "pytorch_model.bin").write_bytes(_payload(marker))
    _index(folder, [name], name="extra.index.json")
    verdict = audit_path(folder)
    assert verdict.status == "unsafe" and _names_open(verdict, "pytorch_model.bin"), verdict
    assert any(f.code == "shard-missing" for f in verdict.findings)
    assert not marker.exists()


def test_an_index_whose_shards_were_never_fetched_beside_a_complete_one_is_no_error(
    tmp_path: Path,
) -> None:
    """snapshot_download(allow_patterns=["*.safetensors", "*.json"]) keeps both indexes but only
    the safetensors shards: loaders take the complete index, so the folder is safe. Without the
    complete one, the missing shards are an error again."""
    from modelsafe.testing import write_safetensors

    folder = tmp_path / "text_encoder_2"
    folder.mkdir()
    _config(folder)
    names = [f"model-0000{i}-of-00002.safetensors" for i in (1, 2)]
    for i, name in enumerate(names):
        write_safetensors(folder / name, [(f"w{i}", "F16", (8, 8))])
    _index(folder, names, name="model.safetensors.index.json")
    _index(folder, [f"pytorch_model-0000{i}-of-00002.bin" for i in (1, 2)])
    verdict = audit_path(folder)
    assert verdict.status == "safe", verdict.findings
    (folder / names[1]).unlink()
    verdict = audit_path(folder)
    assert verdict.status == "error"
    assert any("missing" in f.message for f in verdict.findings), verdict.findings
