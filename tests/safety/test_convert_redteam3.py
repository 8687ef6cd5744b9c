"""Convert, third red-team pass: CRC-32 of tensor members, numpy arrays, values cut or left out,
temp files of killed converts, dangling links at DST, non-text dict keys, zips without a version
record, destination names too long for a file name. Every checkpoint is a real torch.save file."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelsafe.errors import ConversionError, UsageError
from modelsafe.registry import convert as convert_mod
from modelsafe.registry.convert import convert_file
from modelsafe.registry.pickle_vm.tensors import NUMPY_ARRAY_REASON

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")
np = pytest.importorskip("numpy")

RunCli = Callable[..., tuple[int, str, str]]


def _save(path: Path, value: object) -> Path:
    torch.save(value, path)
    return path


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata() or {})


def _only(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _flip_byte(path: Path, member: str, at: int) -> Path:
    """``path`` with one byte of a stored zip member's data inverted (its CRC-32 now wrong)."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(member)
    name_len, extra_len = struct.unpack(
        "<HH", raw[info.header_offset + 26 : info.header_offset + 30]
    )
    raw[info.header_offset + 30 + name_len + extra_len + at] ^= 0xFF
    bad = path.with_name("bad-" + path.name)
    bad.write_bytes(raw)
    return bad


def _member_of(path: Path, key: str) -> str:
    with zipfile.ZipFile(path) as z:
        return next(n for n in z.namelist() if n.endswith(f"/data/{key}"))


# -- 1. CRC-32 of tensor members -----------------------------------------------------------------


@pytest.mark.parametrize("chunk", [8 << 20, 4096])  # (4096: a member over many reads)
@pytest.mark.parametrize("split", [False, True])  # one tensor per member / two in one member
def test_a_tensor_member_failing_its_crc_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int, split: bool
) -> None:
    # A member that is exactly one tensor's bytes is CRC-checked by the copy; one that two
    # tensors share, by the source-hash thread: both over every byte of the member.
    monkeypatch.setattr(convert_mod._SourceSha256, "BUFFER", chunk)
    monkeypatch.setattr(convert_mod, "CHUNK", chunk)
    torch.manual_seed(0)
    weights = torch.randn(64, 64)
    value = {"a": weights[:32], "c": weights[32:]} if split else {"a": weights}
    good = _save(tmp_path / "model.pt", {**value, "b": torch.ones(3)})
    member = _member_of(good, "0")
    bad = _flip_byte(good, member, 3000)  # inside "a" in both cases
    dst = tmp_path / "out.safetensors"
    with pytest.raises(ConversionError) as caught:
        convert_file(bad, dst)
    assert "CRC-32" in caught.value.reason and repr(member) in caught.value.reason
    assert "'a'" in caught.value.reason and ("'c'" in caught.value.reason) == split
    assert _only(tmp_path) == ["bad-model.pt", "model.pt"]  # nothing at DST, no temp file
    convert_file(good, dst)  # the intact file converts
    assert torch.equal(safetensors_torch.load_file(dst)["a"], torch.load(good)["a"])


def test_a_crc_failure_in_a_gathered_tensor_is_refused(tmp_path: Path, run_cli: RunCli) -> None:
    # a transposed view is gathered by pieces, never read whole by the copy; the CRC is still
    # over the member's whole bytes (here the corrupt byte is one the view does not even read)
    storage = torch.arange(40.0).reshape(5, 8)
    good = _save(tmp_path / "model.pt", {"t": storage[:, :4].t()})
    bad = _flip_byte(good, _member_of(good, "0"), 4 * 6)  # element (0, 6): outside the view
    code, out, err = run_cli("convert", str(bad), str(tmp_path / "out.safetensors"))
    assert code == 2 and "CRC-32" in err and "'t'" in err and "Traceback" not in err
    assert _only(tmp_path) == ["bad-model.pt", "model.pt"]


def test_a_crc_failure_only_in_left_out_tensors_is_a_warning(tmp_path: Path) -> None:
    good = _save(
        tmp_path / "model.ckpt",
        {"state_dict": {"w": torch.ones(4)}, "optimizer_states": [{"m": torch.zeros(8)}]},
    )
    bad = _flip_byte(good, _member_of(good, "1"), 3)
    result = convert_file(bad, tmp_path / "out.safetensors")
    assert result.dropped_tensors == 1
    assert len(result.warnings) == 1 and "CRC-32" in result.warnings[0]
    assert torch.equal(safetensors_torch.load_file(result.destination)["w"], torch.ones(4))


# -- 2. numpy arrays -----------------------------------------------------------------------------


def test_a_numpy_array_is_reported_as_dropped(tmp_path: Path, run_cli: RunCli) -> None:
    src = _save(
        tmp_path / "model.pt",
        {"w": torch.ones(2), "np_weights": np.arange(1000, dtype=np.float32).reshape(10, 100)},
    )
    result = convert_file(src, tmp_path / "a.safetensors")
    assert result.dropped_tensors == 1 and result.tensors == 1
    assert [(d.name, d.reason) for d in result.dropped] == [("np_weights", NUMPY_ARRAY_REASON)]
    meta = _metadata(result.destination)
    assert "np_weights" in json.loads(meta["modelsafe.values_omitted"])
    assert "np_weights" not in json.loads(meta.get("modelsafe.values", "{}"))

    code, out, err = run_cli("convert", str(src), str(tmp_path / "b.safetensors"), "--json")
    assert code == 0, err
    assert "warning: 1 numpy array left out" in err and "np_weights" in err
    report = json.loads(out)
    assert report["dropped_tensors"] == 1
    assert report["dropped"] == [{"name": "np_weights", "reason": NUMPY_ARRAY_REASON}]


# -- 3. values cut or left out -------------------------------------------------------------------


def test_long_texts_kept_whole_or_cut_visibly(tmp_path: Path) -> None:
    config = "model:\n" + "".join(f"  key_{i}: value_{i}\n" for i in range(2000))  # 43 KB
    huge = "x" * 70_000
    src = _save(
        tmp_path / "model.ckpt",
        {"w": torch.ones(1), "config_yaml": config, "notes": huge, "global_step": 9},
    )
    meta = _metadata(convert_file(src, tmp_path / "out.safetensors").destination)
    values = json.loads(meta["modelsafe.values"])
    omitted = json.loads(meta["modelsafe.values_omitted"])
    assert values["config_yaml"] == config and values["global_step"] == 9
    assert values["notes"] == "x" * 4096
    assert omitted == {"notes": "cut at 4096 of its 70000 characters"}


def test_optimizer_bookkeeping_never_crowds_out_hyper_parameters(tmp_path: Path) -> None:
    params = {f"layer{i}.weight": torch.zeros(1) for i in range(1200)}
    checkpoint = {
        "epoch": 1,
        "global_step": 100,
        "state_dict": params,
        "optimizer_states": [
            {"state": {}, "param_groups": [{"lr": 1e-4, "params": list(range(1200))}]}
        ],
        "lr_schedulers": [],
        "hparams_name": "kwargs",
        "hyper_parameters": {"learning_rate": 1e-4, "model_name": "my-model"},
    }
    src = _save(tmp_path / "model.ckpt", checkpoint)
    meta = _metadata(convert_file(src, tmp_path / "out.safetensors").destination)
    values = json.loads(meta["modelsafe.values"])
    assert values["hyper_parameters.learning_rate"] == 1e-4
    assert values["hyper_parameters.model_name"] == "my-model"
    assert (values["epoch"], values["global_step"], values["hparams_name"]) == (1, 100, "kwargs")
    assert values["optimizer_states.0.param_groups.0.lr"] == 1e-4
    omitted = json.loads(meta["modelsafe.values_omitted"])
    assert list(omitted) == ["optimizer_states.*"]
    assert "over the 200-value limit" in omitted["optimizer_states.*"]


def test_values_over_the_count_limit_are_named(tmp_path: Path) -> None:
    src = _save(tmp_path / "model.pt", {"w": torch.ones(1), "counts": list(range(1500))})
    meta = _metadata(convert_file(src, tmp_path / "out.safetensors").destination)
    assert len(json.loads(meta["modelsafe.values"])) == 1000
    omitted = json.loads(meta["modelsafe.values_omitted"])
    assert omitted == {"counts.*": "500 values left out: over the 1000-value limit for values"}


def test_fitting_values_is_exact_and_linear() -> None:
    values: dict[str, Any] = {f"k{i:04d}": "v" * (i % 300) for i in range(1000)}
    values["inf"] = float("inf")
    kept, omitted = convert_mod._fitting_values(values)
    assert len(convert_mod._values_json(kept)) <= 64 * 1024
    assert set(kept) | set(omitted) == set(values) and not set(kept) & set(omitted)
    smallest_left = min(len(values[k]) for k in omitted)
    assert all(len(str(v)) <= smallest_left for v in kept.values())  # the biggest went first
    # one value fewer left out would not fit
    back = min(omitted, key=lambda k: (len(values[k]), k))
    assert len(convert_mod._values_json({**kept, back: values[back]})) > 64 * 1024


# -- 4. temp files of killed converts ------------------------------------------------------------


def test_a_killed_convert_leaves_a_temp_the_next_one_removes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(convert_mod, "STALE_AFTER", 0)  # (its age is tested below)
    src = _save(tmp_path / "model.ckpt", {"w": torch.zeros(64, 64)})
    child = textwrap.dedent(
        f"""
        import time
        from modelsafe.registry import convert
        real = convert._copy
        def slow(*args):
            print("copying", flush=True)
            time.sleep(60)
            return real(*args)
        convert._copy = slow
        convert.convert_file({str(src)!r})
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "copying"
    live = [p.name for p in tmp_path.glob(".*.modelsafe-tmp")]
    assert len(live) == 1
    # a convert running beside it leaves its (locked) temp file alone
    other = convert_file(src, tmp_path / "other.safetensors")
    assert other.removed_stale_temps == () and (tmp_path / live[0]).exists()
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert (tmp_path / live[0]).exists()  # what SIGKILL leaves: no handler runs
    result = convert_file(src)
    assert result.removed_stale_temps == (live[0],)
    assert _only(tmp_path) == ["model.ckpt", "model.safetensors", "other.safetensors"]


def test_stale_temp_removal_spares_locked_links_and_other_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dst = tmp_path / "m.safetensors"
    tmp, fd, lock = convert_mod._create_temp(dst)
    stale = tmp_path / ".m.safetensors.0123abcd.modelsafe-tmp"
    stale.write_bytes(b"x" * 100)
    # a recent one may be a convert on another machine, whose lock is not seen here: kept
    assert convert_mod._remove_stale_temps(tmp_path) == ()
    monkeypatch.setattr(convert_mod, "STALE_AFTER", 0)
    target = tmp_path / "keep.bin"
    target.write_bytes(b"keep")
    (tmp_path / ".l.safetensors.89abcdef.modelsafe-tmp").symlink_to(target)
    (tmp_path / ".m.safetensors.NOTHEX00.modelsafe-tmp").write_bytes(b"")
    removed = convert_mod._remove_stale_temps(tmp_path)
    assert removed == (stale.name,)
    assert tmp.exists() and target.read_bytes() == b"keep"
    os.close(fd)
    os.close(lock)
    assert convert_mod._remove_stale_temps(tmp_path) == (tmp.name,)  # unlocked now: stale


# -- 5. a dangling link at DST -------------------------------------------------------------------


def test_a_dangling_link_at_dst_needs_force(tmp_path: Path, run_cli: RunCli) -> None:
    src = _save(tmp_path / "small.pt", {"w": torch.ones(2)})
    dst = tmp_path / "dangle.safetensors"
    dst.symlink_to(tmp_path / "store" / "model.safetensors")
    code, _out, err = run_cli("convert", str(src), str(dst))
    assert code == 2 and "already exists" in err and "--force" in err
    assert dst.is_symlink()
    convert_file(src, dst, overwrite=True)
    assert not dst.is_symlink() and torch.equal(
        safetensors_torch.load_file(dst)["w"], torch.ones(2)
    )


# -- 6. dict keys that are not text --------------------------------------------------------------


def test_tuple_and_bytes_keys_are_named_as_str_of_the_key(tmp_path: Path) -> None:
    cases = [
        {(1, 2): torch.ones(1), b"raw": torch.ones(2)},
        {(0, "a"): torch.ones(1), (1, "b"): torch.zeros(1), 2.5: torch.ones(3)},
        {"nested": {((1, b"x"), None): torch.ones(1), True: torch.ones(2)}},
    ]
    for i, value in enumerate(cases):
        src = _save(tmp_path / f"keys{i}.pt", value)
        got = safetensors_torch.load_file(convert_file(src).destination)
        loaded = torch.load(src, weights_only=True)
        flat: dict[str, Any] = {}
        for key, item in loaded.items():
            if isinstance(item, dict):
                flat.update({f"{key}.{k}": v for k, v in item.items()})
            else:
                flat[str(key)] = item
        assert set(got) == set(flat), (got.keys(), flat.keys())
        for name, tensor in flat.items():
            assert torch.equal(got[name], tensor)


def test_a_key_with_no_text_form_is_refused(tmp_path: Path) -> None:
    src = _save(tmp_path / "model.pt", {frozenset({1}): torch.ones(1), "w": torch.ones(2)})
    with pytest.raises(ConversionError, match="frozenset"):
        convert_file(src, tmp_path / "out.safetensors")
    assert _only(tmp_path) == ["model.pt"]


# -- 7. a zip without its version record ---------------------------------------------------------


def _rewrite_zip(src: Path, dst: Path, drop: str, add: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(dst, "w") as out:
        folder = z.namelist()[0].split("/")[0]
        for name in z.namelist():
            if name != f"{folder}/{drop}":
                out.writestr(name, z.read(name))
        for rel, data in add.items():
            out.writestr(f"{folder}/{rel}", data)
    return dst


def test_a_zip_without_a_version_record_is_refused_as_torch_does(
    tmp_path: Path, run_cli: RunCli
) -> None:
    good = _save(tmp_path / "ok.pt", {"a": torch.randn(4, 4)})
    missing = _rewrite_zip(good, tmp_path / "missing.pt", "version", {})
    with pytest.raises(RuntimeError):
        torch.load(missing, weights_only=True)
    code, _out, err = run_cli("convert", str(missing), str(tmp_path / "out.safetensors"))
    assert code == 2 and "no version record" in err
    assert not (tmp_path / "out.safetensors").exists()

    newer = _rewrite_zip(good, tmp_path / "newer.pt", "version", {"version": b"99\n"})
    with pytest.raises(ConversionError, match="'99'"):
        convert_file(newer, tmp_path / "out.safetensors")
    # torch reads .data/version first, when there is one
    data_version = _rewrite_zip(good, tmp_path / "dv.pt", "version", {".data/version": b"3\n"})
    torch.load(data_version, weights_only=True)
    convert_file(data_version, tmp_path / "out.safetensors")


# -- 8. destination names too long for a file name ----------------------------------------------


def test_a_destination_name_too_long_is_a_usage_error(tmp_path: Path, run_cli: RunCli) -> None:
    src = _save(tmp_path / ("m" * 245 + ".ckpt"), {"w": torch.ones(2)})  # a 250-byte name
    with pytest.raises(UsageError, match="257 bytes long") as caught:
        convert_file(src)  # the default destination: 257 bytes
    assert "shorter DST" in caught.value.hint
    code, _out, err = run_cli("convert", str(src), str(tmp_path / ("d" * 300 + ".safetensors")))
    assert code == 2 and "312 bytes long" in err and "shorter DST" in err
    assert "Traceback" not in err and "unexpected" not in err
    assert _only(tmp_path) == [src.name]
    convert_file(src, tmp_path / "short.safetensors")


# -- 9. what the docs say about long names -------------------------------------------------------


def test_a_long_leaf_name_converts_and_a_long_container_path_is_refused(tmp_path: Path) -> None:
    long_leaf = "k" * 5000
    src = _save(tmp_path / "leaf.pt", {long_leaf: torch.ones(1)})
    assert list(safetensors_torch.load_file(convert_file(src).destination)) == [long_leaf]
    deep = _save(tmp_path / "deep.pt", {"c" * 1100: {"w": torch.ones(1)}})
    with pytest.raises(ConversionError, match="longer than 1024"):
        convert_file(deep)
