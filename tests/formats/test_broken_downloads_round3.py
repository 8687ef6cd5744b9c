"""Broken downloads, round 3: what reading the whole file must notice, and what a cut-short
file is called.

A torch zip checkpoint whose tensor storage member fails its CRC-32 (``torch.load`` loads the
damaged bytes silently) read as clean to ``inspect --hash`` and ``scan``, on its own and inside a
diffusers folder; truncated torch checkpoints were "damaged or not a torch checkpoint" where
truncated safetensors and GGUF files say "download it again"; a run of zeros over a torch zip
gave one identical finding per member (124); a GGUF tensor offset of 2**40 in an 83 KB file was
"the download was cut short".
"""

from __future__ import annotations

import json
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from modelsafe.errors import MalformedFileError
from modelsafe.registry.audit import audit_path
from modelsafe.registry.read import read_index

torch = pytest.importorskip("torch")
gguf = pytest.importorskip("gguf")

Cli = Callable[..., tuple[int, str, str]]
CORRUPT = "fails its CRC-32 check: a corrupt copy (bit rot or a broken download)"
CUT_SHORT = "the download was cut short; download it again"


def _checkpoint(path: Path, n: int = 6, legacy: bool = False) -> Path:
    """A real ``torch.save`` file of ``n`` random tensors, 64 KiB each (a zip, or legacy)."""
    gen = torch.Generator().manual_seed(0)
    state = {f"layer{i}.weight": torch.randn(128, 128, generator=gen) for i in range(n)}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    return path


def _member_data(path: Path, suffix: str) -> tuple[str, int, int]:
    """(name, offset of its first byte, size) of the stored zip member ending in ``suffix``."""
    raw = path.read_bytes()
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith(suffix))
    h = info.header_offset
    name_len, extra_len = struct.unpack("<HH", raw[h + 26 : h + 30])
    return info.filename, h + 30 + name_len + extra_len, info.file_size


def _flip(path: Path, offset: int, count: int = 8) -> None:
    data = bytearray(path.read_bytes())
    for i in range(offset, offset + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _corrupt(path: Path, member: str = "/data/3") -> str:
    """Flip 8 bytes in the middle of a storage member (its CRC-32 no longer matches); returns
    the member's name."""
    name, start, size = _member_data(path, member)
    _flip(path, start + size // 2)
    return name


def _inspect_json(run_cli: Cli, *args: str) -> dict[str, object]:
    code, out, err = run_cli("inspect", *args, "--json")
    assert code == 0, err
    value = json.loads(out)
    assert isinstance(value, dict)
    return value


# -- a corrupt storage member is found by the pass that reads every byte ---------------------------


def _crc_warnings(report: dict[str, object]) -> list[str]:
    warnings = report["warnings"]
    assert isinstance(warnings, list)
    return [w for w in warnings if "CRC-32" in w]


def test_inspect_hash_names_a_corrupt_storage_member(tmp_path: Path, run_cli: Cli) -> None:
    path = _checkpoint(tmp_path / "model.ckpt")
    before = read_index(path)
    assert _crc_warnings(_inspect_json(run_cli, str(path), "--hash")) == []  # healthy: none
    member = _corrupt(path)
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() == member  # what zipfile says of it; torch.load does not check
    loaded = torch.load(path, weights_only=True)  # loads the damaged bytes silently
    assert set(loaded) == before.names()

    report = _inspect_json(run_cli, str(path), "--hash")
    [warning] = _crc_warnings(report)
    assert f"zip member {member!r} (tensor 'layer3.weight')" in warning
    assert CORRUPT in warning and "torch would load the damaged bytes" in warning
    assert warning.endswith("download it again")
    hashes = report["hashes"]
    assert isinstance(hashes, dict) and hashes["sha256"] and "corrupt_members" not in hashes


def test_scan_warns_of_a_corrupt_member_in_a_file_and_in_a_diffusers_folder(
    tmp_path: Path, run_cli: Cli
) -> None:
    lib = tmp_path / "lib"
    single = _corrupt(_checkpoint(lib / "model.pt"))
    pipe = lib / "sd15"
    (pipe / "unet").mkdir(parents=True)
    (pipe / "model_index.json").write_text(
        json.dumps({"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet"]})
    )
    (pipe / "unet" / "config.json").write_text('{"_class_name": "UNet2DConditionModel"}')
    in_pipe = _corrupt(_checkpoint(pipe / "unet" / "diffusion_pytorch_model.bin"), "/data/1")
    code, out, err = run_cli("--catalog", str(tmp_path / "c.db"), "scan", str(lib), "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["errors"] == 0
    warnings = {Path(w["path"]).name: w["warning"] for w in summary["warnings"]}
    assert f"zip member {single!r}" in warnings["model.pt"] and CORRUPT in warnings["model.pt"]
    assert warnings["sd15"].startswith("unet/diffusion_pytorch_model.bin: zip member ")
    assert repr(in_pipe) in warnings["sd15"] and CORRUPT in warnings["sd15"]


def test_convert_and_the_hashing_pass_share_one_member_check(
    tmp_path: Path, run_cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A tensor that is half of its storage: convert's copy cannot take the member's CRC-32 as it
    # copies, its source thread does, with the hashing pass's check (torch_archive.MemberCrcCheck).
    from modelsafe.registry import hashing
    from modelsafe.registry.torch_archive import MemberCrcCheck

    gen = torch.Generator().manual_seed(0)
    whole = torch.randn(256, 128, generator=gen)
    path = tmp_path / "model.pt"
    torch.save({"half": whole[:128], "other": torch.randn(64, 64, generator=gen)}, path)
    with zipfile.ZipFile(path) as zf:
        suffix = next(i.filename for i in zf.infolist() if i.file_size == 256 * 128 * 4)
    member, start, _size = _member_data(path, suffix)
    _flip(path, start + 1000)  # inside the half that is read
    index = read_index(path)

    check = MemberCrcCheck.of_index(index)
    assert check is not None and len(check.members) == 2
    raw, pos = memoryview(path.read_bytes()), 0
    for size in (1, 7, 4093, 65536, 3, 1 << 20):  # any chunking
        check.update(pos, raw[pos : pos + size])
        pos += size
    assert [m.name for m in check.mismatches()] == [member]

    monkeypatch.setattr(hashing, "PARALLEL_MIN_BYTES", 0)  # the pass on two lanes
    monkeypatch.setattr(hashing, "LANES", 2)
    found = hashing.hash_file(path, index)["corrupt_members"]
    assert found and f"zip member {member!r} (tensor 'half')" in found and CORRUPT in found

    code, _out, err = run_cli("convert", str(path))
    assert code != 0 and f"zip member {member!r} fails its CRC-32 check" in err
    assert "tensor 'half'" in err and not (tmp_path / "model.safetensors").exists()


# -- a truncated torch checkpoint is a download cut short ------------------------------------------


@pytest.mark.parametrize(
    ("legacy", "said"),
    [(False, "truncated archive"), (True, "the file ends inside storage")],
)
def test_truncated_torch_checkpoints_say_download_again(
    tmp_path: Path, run_cli: Cli, legacy: bool, said: str
) -> None:
    path = _checkpoint(tmp_path / "model.ckpt", legacy=legacy)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(MalformedFileError) as caught:
        read_index(path)
    assert said in caught.value.reason
    assert caught.value.hint == CUT_SHORT
    code, _out, err = run_cli("inspect", str(path))
    assert code == 2 and CUT_SHORT in err
    # Damage that is not a cut keeps its own hint: a storage's element count zeroed.
    raw = bytearray(_checkpoint(path, legacy=True).read_bytes())
    count = struct.pack("<q", 128 * 128)
    at = raw.find(count)
    raw[at : at + 8] = struct.pack("<q", 0)
    path.write_bytes(bytes(raw))
    with pytest.raises(MalformedFileError) as caught:
        read_index(path)
    assert "holds 0 elements" in caught.value.reason
    assert caught.value.hint.startswith("the file is damaged or is not a torch checkpoint")


# -- a run of zeros over many members is one finding -----------------------------------------------


def test_a_zeroed_run_of_members_is_one_finding(tmp_path: Path) -> None:
    path = _checkpoint(tmp_path / "model.pt", n=40)
    _name, start, _size = _member_data(path, "/data/5")
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        headers = sorted(i.header_offset for i in zf.infolist())
        cd_start = zf.start_dir
    end = max(h for h in headers if h < cd_start - 64)  # the last member's header
    raw[start : end + 4] = bytes(end + 4 - start)
    path.write_bytes(bytes(raw))
    lost = sum(1 for h in headers if start <= h <= end)
    assert lost > 10
    verdict = audit_path(path)
    headers_found = [f for f in verdict.findings if "local header" in f.message]
    assert len(headers_found) == 1
    [finding] = headers_found
    first = min(h for h in headers if h >= start)
    assert f"{lost} members from byte {first:,} are unreadable" in finding.message
    assert verdict.status == "error"


# -- an absurd GGUF tensor offset is a corrupt table, not a short download -------------------------


def _gguf(path: Path) -> Path:
    writer = gguf.GGUFWriter(str(path), "flux")
    rng = np.random.default_rng(0)
    writer.add_tensor("img_in.weight", rng.random((64, 64), dtype=np.float32))
    writer.add_tensor("final.weight", rng.random((32, 64), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_gguf_offset_far_past_the_data_is_a_corrupt_table(tmp_path: Path) -> None:
    path = _gguf(tmp_path / "flux.gguf")
    raw = bytearray(path.read_bytes())
    name = raw.find(b"final.weight")
    field = name + len(b"final.weight") + 4 + 2 * 8 + 4  # n_dims, 2 dims, type, then offset
    assert struct.unpack("<Q", raw[field : field + 8])[0] == 64 * 64 * 4
    raw[field : field + 8] = struct.pack("<Q", 1 << 40)
    path.write_bytes(bytes(raw))
    with pytest.raises(MalformedFileError) as caught:
        read_index(path)
    assert "lies at offset 1,099,511,627,776 of the data region" in caught.value.reason
    assert "the tensor table is corrupt" in caught.value.reason
    assert "truncated" not in caught.value.reason and caught.value.hint != CUT_SHORT
    # A file that really was cut short (every offset plausible) is still "truncated".
    raw = _gguf(path).read_bytes()
    path.write_bytes(raw[: len(raw) - 1000])
    with pytest.raises(MalformedFileError) as caught:
        read_index(path)
    assert "tensor 'final.weight' ends at byte" in caught.value.reason
    assert "the file is truncated" in caught.value.reason and caught.value.hint == CUT_SHORT
