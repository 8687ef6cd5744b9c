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
        ".cache/huggingface/download/x.safetensors.metadata",
        ".cache/huggingface/download/x.safetensors.0a1b.incomplete",
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


# Review of round 8. 1: a shard index without config.json makes its folder one model too.


def _shards(folder: Path, stem: str = "model", count: int = 2) -> list[Path]:
    """``count`` safetensors shards of ``stem`` and their index in ``folder`` (no config.json)."""
    names = [f"{stem}-{k:05d}-of-{count:05d}.safetensors" for k in range(1, count + 1)]
    for k, name in enumerate(names):
        write_safetensors(folder / name, [(f"w{k}", "F16", (4, 4))], data="random", seed=k)
    index = {"metadata": {}, "weight_map": {f"w{k}": name for k, name in enumerate(names)}}
    (folder / f"{stem}.safetensors.index.json").write_text(json.dumps(index))
    return [folder / name for name in names]


def test_a_shard_index_without_config_makes_the_folder_one_audited_model(
    tmp_path: Path, scan_json: ScanJson, run_cli: Any
) -> None:
    marker = tmp_path / "MARKER"
    folder = tmp_path / "lib" / "ckpt"
    folder.mkdir(parents=True)
    first = _shards(folder)[0]
    (folder / "model-00002-of-00002.safetensors").unlink()
    (folder / "notes.txt").write_bytes(_payload(marker))
    index = {"metadata": {}, "weight_map": {"w0": first.name, "w1": "notes.txt"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))

    summary = scan_json(str(tmp_path / "lib"))
    code, out, _err = run_cli("audit", str(folder))

    assert code == 1 and out.startswith("UNSAFE"), out
    assert summary["unsafe_files"] == [str(folder)]
    assert summary["files"] == 1
    assert not [w for w in summary["warnings"] if "missing" in w["warning"]], summary
    assert not marker.exists()


@pytest.mark.parametrize("stem", ["model", "flux1-dev"])
def test_a_complete_set_without_config_is_read_as_one_model(
    tmp_path: Path, stem: str, scan_json: ScanJson, cli_json: CliJson
) -> None:
    folder = tmp_path / "lib" / "t5xxl"
    folder.mkdir(parents=True)
    _shards(folder, stem, 3)

    summary = scan_json(str(tmp_path / "lib"))
    [row] = cli_json("ls")

    assert (summary["files"], summary["errors"], summary["unsafe"]) == (1, 0, 0), summary
    assert summary["warnings"] == []
    assert row["name"] == "t5xxl"
    shown = cli_json("show", str(folder))
    assert (shown["audit"], shown["format"], shown["error"]) == ("safe", "diffusers-dir", None)
    assert shown["tensor_count"] == 3  # (every shard read, as one model)


# 2. A link into /proc in a model folder: its key and hashes never walk it (a walk of /proc/self
# reaches / through /proc/self/root, and /proc files never end).


def test_a_link_into_proc_is_never_walked(tmp_path: Path, scan_json: ScanJson) -> None:
    from modelsafe.registry.walk import walk_tree

    folder = tmp_path / "lib" / "bert"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    _shards(folder, count=1)
    (folder / "extra").symlink_to("/proc/self")

    walked = []
    for dirpath, _names in walk_tree(str(folder)):
        walked.append(dirpath)
        assert not dirpath.startswith(str(folder / "extra")), dirpath  # (fails at once, no hang)
    summary = scan_json(str(tmp_path / "lib"))

    assert walked == [str(folder)]
    assert [e["path"] for e in summary["error_files"]] == [str(folder)]
    assert "system folder" in summary["error_files"][0]["reason"]


# 3 and 5. A hidden folder is reported when it holds a model file, whatever its name (ComfyUI
# lists it), and only then; an AppleDouble ``._x`` companion is not a model.


def test_hidden_folders_with_model_files_are_reported_and_only_they(
    tmp_path: Path, scan_json: ScanJson
) -> None:
    marker = tmp_path / "MARKER"
    ck = tmp_path / "lib" / "models" / "checkpoints"
    hostile = [".Trash-1000", ".svn", ".hg", ".cache"]
    for name in hostile:
        sub = ck / name / ("huggingface" if name == ".cache" else "")
        sub.mkdir(parents=True, exist_ok=True)
        (sub / "realistic_v6.ckpt").write_bytes(_payload(marker))
    (ck / "._evil.ckpt").write_bytes(_payload(marker))  # (named as an AppleDouble, but a pickle)
    _st(ck / "ok.safetensors")
    benign = [".github/workflows/ci.yml", ".venv/lib/site.py", ".ipynb_checkpoints/a.ipynb"]
    for rel in [*benign, "hub/.locks/models--a--b/x.lock"]:
        (ck / rel).parent.mkdir(parents=True, exist_ok=True)
        (ck / rel).write_text("{}")
    (ck / "._ok.safetensors").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X")

    summary = scan_json(str(tmp_path / "lib"))
    verdict = audit_path(ck)

    skipped = sorted(s["path"] for s in summary["skipped"])
    assert skipped == sorted(str(ck / n) for n in [*hostile, "._evil.ckpt"])
    assert verdict.status == "unsafe"
    unsafe_at = {f.location.split(":")[0] for f in verdict.findings if f.severity == "unsafe"}
    assert ".cache/huggingface/realistic_v6.ckpt" in unsafe_at
    assert not marker.exists()


# 4. A harmless gzip pickle, decompressed and run whole, is safe (data, not weights) in audit and
# scan alike; a hostile one stays unsafe.


def test_a_harmless_compressed_pickle_is_safe_and_a_hostile_one_unsafe(
    tmp_path: Path, scan_json: ScanJson, cli_json: CliJson
) -> None:
    import gzip

    marker = tmp_path / "MARKER"
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "features.pkl.gz").write_bytes(gzip.compress(pickle.dumps({"a": [1, 2]}, protocol=2)))
    (lib / "evil.pkl.gz").write_bytes(gzip.compress(_payload(marker)))

    summary = scan_json(str(lib))
    rows = {row["name"]: row for row in cli_json("ls")}
    verdict = audit_path(lib / "features.pkl.gz")

    assert verdict.status == "safe"
    assert [f.severity for f in verdict.findings] == ["warning"]
    assert "not model weights" in verdict.findings[0].message
    assert summary["unsafe_files"] == [str(lib / "evil.pkl.gz")]
    assert str(lib / "features.pkl.gz") not in [e["path"] for e in summary["error_files"]]
    assert (rows["features"]["status"], rows["features"]["audit"]) == ("present", "safe")
    assert audit_path(lib / "evil.pkl.gz").status == "unsafe"
    assert not marker.exists()


# 6. A rescan tells why a folder's audit is an error as the first scan did.


def test_a_rescan_gives_the_same_error_reason(tmp_path: Path, scan_json: ScanJson) -> None:
    folder = tmp_path / "lib" / "bert"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    _shards(folder, count=1)
    os.mkfifo(folder / "pipe")

    first = scan_json(str(tmp_path / "lib"))
    again = scan_json(str(tmp_path / "lib"))

    assert again["unchanged"] == 1
    assert again["error_files"] == first["error_files"]
    assert "named pipe" in again["error_files"][0]["reason"]


def test_a_sharded_set_dropped_in_a_models_folder_keeps_the_other_models(
    tmp_path: Path, scan_json: ScanJson, cli_json: CliJson
) -> None:
    """ComfyUI's text_encoders/ with single files and a sharded set (index, no config.json): the
    folder is no model of its own, every single file stays a model, and a file the index names
    under another name (`notes.txt`, hidden) is still scanned and found unsafe."""
    marker = tmp_path / "MARKER"
    folder = tmp_path / "lib" / "text_encoders"
    folder.mkdir(parents=True)
    _st(folder / "clip_l.safetensors")
    (folder / "t5_other.safetensors").write_bytes((folder / "clip_l.safetensors").read_bytes())
    first = _shards(folder)[0]
    (folder / "model-00002-of-00002.safetensors").unlink()
    hidden = folder / ".no_exist" / "part2.bin"
    hidden.parent.mkdir()
    hidden.write_bytes(_payload(marker))
    (folder / "notes.txt").write_bytes(_payload(marker))
    weight_map = {"w0": first.name, "w1": ".no_exist/part2.bin", "w2": "notes.txt"}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))

    summary = scan_json(str(tmp_path / "lib"))
    names = sorted(row["name"] for row in cli_json("ls"))

    assert str(folder) not in {row["paths"][0] for row in cli_json("ls")}
    assert "clip_l" in names and first.stem in names, names
    assert sorted(summary["unsafe_files"]) == sorted([str(hidden), str(folder / "notes.txt")])
    assert not marker.exists()
