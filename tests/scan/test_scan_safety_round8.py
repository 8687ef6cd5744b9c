"""Eighth red-team round, scan vs what loaders run: a component linked into a tmpfs (``/dev/shm``)
was skipped, a shard index naming a shard the walk does not list (``notes.txt``, ``.no_exist/``,
``../outside``) left the catalog clean, a re-pointed component link read as "unchanged", hidden
entries and ``.pt2``/``.pth.tar``/``.joblib``/``.pkl.gz`` files were dropped without a word, and a
custom-code folder's warning was lost. Payloads only create a marker file in ``tmp_path``; each
test proves it never appears during the modelsafe commands (nothing here ever loads them)."""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import modelsafe.registry.audit as audit_module
from modelsafe.registry.audit import audit_path
from modelsafe.testing import write_safetensors

ScanJson = Callable[..., dict[str, Any]]
CliJson = Callable[..., Any]


def _payload(marker: Path, pad: int = 0) -> bytes:
    """A protocol-2 pickle calling builtins.open(marker, 'w'), ``pad`` bytes longer."""
    return b"\x80\x02" + f"cbuiltins\nopen\n(S'{marker}'\nS'w'\ntR".encode() + b"." + b" " * pad


def _benign(size: int) -> bytes:
    """A protocol-2 pickle of a string, exactly ``size`` bytes long."""
    head, tail = b"\x80\x02X", b"."
    body = b"w" * (size - len(head) - 4 - len(tail))
    return head + len(body).to_bytes(4, "little") + body + tail


def _st(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_safetensors(path, [("w", "F16", (4, 4))], data="random", seed=1)


def _pipeline(root: Path, components: dict[str, str]) -> Path:
    """A diffusers pipeline folder declaring ``components`` (name -> class)."""
    root.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {"_class_name": "StableDiffusionPipeline"}
    for name, cls in components.items():
        index[name] = ["transformers" if "Text" in cls else "diffusers", cls]
    (root / "model_index.json").write_text(json.dumps(index))
    return root


def _text_encoder(pipe: Path) -> Path:
    folder = pipe / "text_encoder"
    _st(folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"architectures": ["CLIPTextModel"]}))
    return folder


def _unet_in(folder: Path, weights: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    (folder / "diffusion_pytorch_model.bin").write_bytes(weights)
    return folder


# 1. Regular files are read wherever they are; only /proc and /sys (and FIFOs, devices) are not.


def test_a_component_linked_into_ram_is_audited(tmp_path: Path, scan_json: ScanJson) -> None:
    # /dev/shm (a tmpfs, as the folder below stands for) holds ordinary files: read them.
    assert not any("/dev/shm/unet/".startswith(p) for p in audit_module._SYSTEM_FOLDERS)
    assert any("/proc/kmsg/".startswith(p) for p in audit_module._SYSTEM_FOLDERS)
    marker = tmp_path / "MARKER"
    pipe = _pipeline(tmp_path / "lib" / "pipe", {"unet": "UNet", "text_encoder": "CLIPTextModel"})
    _text_encoder(pipe)
    ram = _unet_in(tmp_path / "ram" / "unet", _payload(marker))  # (as /dev/shm/unet is)
    (pipe / "unet").symlink_to(ram)

    summary = scan_json(str(tmp_path / "lib"))

    assert summary["unsafe_files"] == [str(pipe)]
    assert audit_path(pipe).status == "unsafe"
    assert not marker.exists()


def test_a_component_in_a_system_folder_is_an_error_never_safe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scan_json: ScanJson
) -> None:
    marker = tmp_path / "MARKER"
    pipe = _pipeline(tmp_path / "lib" / "pipe", {"unet": "UNet", "text_encoder": "CLIPTextModel"})
    _text_encoder(pipe)
    system = tmp_path / "proc"
    (pipe / "unet").symlink_to(_unet_in(system / "unet", _payload(marker)))
    monkeypatch.setattr(audit_module, "_SYSTEM_FOLDERS", (f"{system}/",))

    verdict = audit_path(pipe)
    summary = scan_json(str(tmp_path / "lib"))

    assert verdict.status == "error"
    assert [f.code for f in verdict.findings if f.severity == "error"] == ["not-read"]
    assert "unet" in verdict.findings[0].message and "not read" in verdict.findings[0].message
    assert [e["path"] for e in summary["error_files"]] == [str(pipe)]
    assert summary["errors"] == 1
    assert not marker.exists()


def test_a_fifo_in_a_component_is_an_error_and_blocks_nothing(
    tmp_path: Path, scan_json: ScanJson
) -> None:
    pipe = _pipeline(tmp_path / "lib" / "pipe", {"text_encoder": "CLIPTextModel"})
    os.mkfifo(_text_encoder(pipe) / "model.bin")  # (a loader that opens it reads what is sent)

    first = scan_json(str(tmp_path / "lib"))
    again = scan_json(str(tmp_path / "lib"))

    [finding] = [f for f in audit_path(pipe).findings if f.severity == "error"]
    assert (finding.code, finding.location) == ("not-read", "text_encoder/model.bin")
    assert "named pipe" in finding.message
    # The summary counts the folder whose audit is an error, as its row says, read or not.
    for summary in (first, again):
        assert summary["errors"] == 1, summary
        [error] = summary["error_files"]
        assert error["path"] == str(pipe)
    assert "named pipe" in first["error_files"][0]["reason"]
    assert again["unchanged"] == 1


# 2. A shard index makes its folder one model, audited in full whatever the shards are named.


@pytest.mark.parametrize(
    "shard",
    [
        ".no_exist/pytorch_model-00002-of-00002.bin",
        "notes.txt",
        "pytorch_model-00002-of-00002",
        "../outside/pytorch_model-00002-of-00002.bin",
    ],
)
def test_every_shard_an_index_names_is_audited_by_scan(
    tmp_path: Path, shard: str, scan_json: ScanJson, cli_json: CliJson
) -> None:
    marker = tmp_path / "MARKER"
    folder = tmp_path / "lib" / "bert"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    first = "pytorch_model-00001-of-00002.bin"
    (folder / first).write_bytes(pickle.dumps({"a": [0.0]}, protocol=2))
    (folder / shard).parent.mkdir(parents=True, exist_ok=True)
    (folder / shard).write_bytes(_payload(marker))
    index = {"metadata": {}, "weight_map": {"a": first, "b": shard}}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index))

    summary = scan_json(str(tmp_path / "lib"))
    unsafe = cli_json("ls", "--unsafe")

    assert str(folder) in summary["unsafe_files"]  # (../outside is one of its own too)
    warned = [w["warning"] for w in summary["warnings"] if w["path"].startswith(str(folder))]
    assert not any("missing" in w for w in warned)
    assert "bert" in [m["name"] for m in unsafe]
    assert not marker.exists()


# 3. A rescan reads a folder again when the files it is made of are other files.


def test_a_re_pointed_component_link_is_read_again(tmp_path: Path, scan_json: ScanJson) -> None:
    marker = tmp_path / "MARKER"
    store = tmp_path / "store"
    evil = _payload(marker)
    stamp = 1_700_000_000_000_000_000
    for version, weights in (("v2", evil), ("v1", _benign(len(evil)))):
        unet = _unet_in(store / version / "unet", weights)
        for path in (unet / "config.json", unet / "diffusion_pytorch_model.bin", unet):
            os.utime(path, ns=(stamp, stamp))  # (same sizes and mtimes: only the files differ)
    (store / "current").symlink_to("v1")
    pipe = _pipeline(tmp_path / "lib" / "pipe", {"unet": "UNet", "text_encoder": "CLIPTextModel"})
    _text_encoder(pipe)
    (pipe / "unet").symlink_to(store / "current" / "unet")
    assert scan_json(str(tmp_path / "lib"))["unsafe"] == 0

    (store / "current").unlink()
    (store / "current").symlink_to("v2")
    summary = scan_json(str(tmp_path / "lib"))

    assert (summary["changed"], summary["unchanged"]) == (1, 0)
    assert summary["unsafe_files"] == [str(pipe)]
    assert not marker.exists()


# 4. What loaders list is scanned, or reported as skipped; bookkeeping is left out quietly.


def test_loader_files_are_scanned_or_reported(tmp_path: Path, scan_json: ScanJson) -> None:
    marker = tmp_path / "MARKER"
    lib = tmp_path / "lib"
    scanned = ["a.pt2", "model_best.pth.tar", "sklearn_model.joblib"]
    for name in scanned:
        (lib / name).parent.mkdir(parents=True, exist_ok=True)
        (lib / name).write_bytes(_payload(marker))
    import gzip

    (lib / "features.pkl.gz").write_bytes(gzip.compress(_payload(marker)))
    reported = [lib / ".staging", lib / ".dreammix.ckpt"]
    (lib / ".staging").mkdir()
    (lib / ".staging" / "x.ckpt").write_bytes(_payload(marker))
    (lib / ".dreammix.ckpt").write_bytes(_payload(marker))
    quiet = [
        ".git/objects/x.ckpt",
        ".Trash-1000/files/x.ckpt",
        ".cache/huggingface/download/x.ckpt",
        "models--org--name/.no_exist/abc/model.bin",
        "models--org--name/snapshots/abc/.gitattributes",
    ]
    for rel in quiet:
        (lib / rel).parent.mkdir(parents=True, exist_ok=True)
        (lib / rel).write_bytes(b"x")

    summary = scan_json(str(lib))

    expected = sorted(str(lib / n) for n in [*scanned, "features.pkl.gz"])
    assert sorted(summary["unsafe_files"]) == expected
    skipped = {s["path"]: s["reason"] for s in summary["skipped"]}
    assert sorted(skipped) == sorted(str(p) for p in reported)
    assert all("modelsafe audit" in reason for reason in skipped.values())
    assert not marker.exists()


# 5. The catalog keeps audit's warning for code shipped with a transformers model.


def test_custom_code_beside_a_model_file_is_warned_of(
    tmp_path: Path, scan_json: ScanJson, cli_json: CliJson
) -> None:
    marker = tmp_path / "MARKER"
    repo = tmp_path / "lib" / "custom"
    weights = _st(repo / "model.safetensors")
    config = {"model_type": "evil", "auto_map": {"AutoConfig": "configuration_evil.EvilConfig"}}
    (repo / "config.json").write_text(json.dumps(config))
    (repo / "configuration_evil.py").write_text(f"open({str(marker)!r}, 'w')\n")

    scan_json(str(tmp_path / "lib"))
    shown = json.dumps(cli_json("show", str(weights)))

    assert "Python code ships with the model (configuration_evil.py)" in shown
    assert not marker.exists()
