"""Broken downloads, round 3 (the readers): what a damaged diffusers folder or torch checkpoint
is called.

A permission error inside a diffusers folder was blamed on the format plugin ("report it to the
plugin's author"); broken links of a Hugging Face snapshot (a blob deleted, a snapshot copied
with ``cp -r``) were "no weights file" and "a folder without model_index.json"; a component
still downloading (``NAME.part``) was "has a config.json but no weights file"; a full-size
preallocated ``.ckpt`` whose end was never written was a "truncated archive", a zero region over
its member headers "corrupt", a legacy file's zero tail "storage holds 0 elements"; and a legacy
torch file with zero padding, or stored twice, was ``unsafe`` though ``torch.load`` loads it
(the zip equivalents are warnings).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from modelsafe.errors import FileReadError, MalformedFileError
from modelsafe.registry.audit import audit_path
from modelsafe.registry.read import read_index
from modelsafe.testing import write_safetensors

torch = pytest.importorskip("torch")

LINKS_HINT = "cp -rL"
UNWRITTEN = "download did not finish"


def _json(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


def _pipeline(root: Path) -> Path:
    """An SD 1.5 diffusers pipeline folder of tiny real safetensors files."""
    _json(
        root / "model_index.json",
        {
            "_class_name": "StableDiffusionPipeline",
            "_diffusers_version": "0.30.0",
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "scheduler": ["diffusers", "PNDMScheduler"],
        },
    )
    _json(root / "unet" / "config.json", {"_class_name": "UNet2DConditionModel"})
    write_safetensors(
        root / "unet" / "diffusion_pytorch_model.safetensors",
        [("conv_in.weight", "F16", (32, 4, 3, 3))],
        data="random",
    )
    _json(root / "vae" / "config.json", {"_class_name": "AutoencoderKL", "latent_channels": 4})
    write_safetensors(
        root / "vae" / "diffusion_pytorch_model.safetensors",
        [("encoder.conv_in.weight", "F16", (8, 3, 3, 3))],
        data="random",
    )
    _json(root / "text_encoder" / "config.json", {"architectures": ["CLIPTextModel"]})
    write_safetensors(
        root / "text_encoder" / "model.safetensors",
        [("text_model.embeddings.token_embedding.weight", "F16", (16, 8))],
        data="random",
    )
    _json(root / "tokenizer" / "tokenizer_config.json", {"model_max_length": 77})
    _json(root / "scheduler" / "scheduler_config.json", {"_class_name": "PNDMScheduler"})
    return root


def _cached(tmp_path: Path) -> Path:
    """The pipeline as the Hugging Face cache keeps it: each file a relative link into blobs/.
    Returns the snapshot folder."""
    source = _pipeline(tmp_path / "src")
    repo = tmp_path / "hub" / "models--org--tiny"
    snapshot = repo / "snapshots" / ("a" * 40)
    (repo / "blobs").mkdir(parents=True)
    for file in sorted(source.rglob("*")):
        if not file.is_file():
            continue
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / file.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snapshot


# -- broken links (#4) -------------------------------------------------------------------------


def test_a_deleted_blob_in_a_cached_pipeline_is_named_as_a_broken_link(tmp_path: Path) -> None:
    snapshot = _cached(tmp_path)
    weights = snapshot / "unet" / "diffusion_pytorch_model.safetensors"
    assert read_index(snapshot).components["unet"]
    target = os.readlink(weights)
    Path(os.path.realpath(weights)).unlink()
    with pytest.raises(MalformedFileError) as info:
        read_index(snapshot)
    reason = info.value.reason
    assert "no weights file" not in reason
    assert "unet/diffusion_pytorch_model.safetensors is a broken link" in reason
    assert target in reason and "which does not exist" in reason
    assert LINKS_HINT in info.value.hint and "download it again" in info.value.hint


def test_a_snapshot_copied_with_cp_r_says_its_links_are_broken(tmp_path: Path) -> None:
    snapshot = _cached(tmp_path)
    copied = tmp_path / "copied"
    shutil.copytree(snapshot, copied, symlinks=True)  # (as `cp -r`: relative links kept)
    with pytest.raises(FileReadError) as info:
        read_index(copied)
    reason = info.value.reason
    assert "model_index.json is a broken link to ../../blobs/" in reason
    assert "more links in it are broken too" in reason
    assert LINKS_HINT in info.value.hint

    # audit says it too (not "the folder holds no file a loader could read")
    verdict = audit_path(copied)
    assert verdict.status == "error"
    [error] = [f for f in verdict.findings if f.severity == "error"]
    assert "model_index.json is a broken link" in error.message and LINKS_HINT in error.message

    # generate's folder identification says the same (not "a folder without model_index.json")
    from modelsafe.runtime.diffusers_loader import guess_identity

    with pytest.raises(FileReadError, match="model_index.json is a broken link"):
        guess_identity(copied)


def test_a_component_folder_whose_weights_link_dangles_says_so(tmp_path: Path) -> None:
    snapshot = _cached(tmp_path)
    vae = tmp_path / "vae"
    shutil.copytree(snapshot / "vae", vae, symlinks=True)
    (vae / "config.json").unlink()
    shutil.copyfile(snapshot / "vae" / "config.json", vae / "config.json")  # (a real file)
    with pytest.raises(FileReadError, match=r"diffusion_pytorch_model\.safetensors is a broken"):
        read_index(vae)


# -- still downloading (#7) --------------------------------------------------------------------


def test_a_component_still_downloading_is_said_so(run_cli: Any, tmp_path: Path) -> None:
    root = _pipeline(tmp_path / "sd")
    weights = root / "unet" / "diffusion_pytorch_model.safetensors"
    weights.rename(weights.with_name(weights.name + ".part"))
    with pytest.raises(MalformedFileError) as info:
        read_index(root)
    assert "no weights file" not in info.value.reason
    assert "unet (UNet2DConditionModel) is still downloading its weights" in info.value.reason
    assert "diffusion_pytorch_model.safetensors.part: an unfinished Firefox" in info.value.reason
    assert info.value.hint == "let it finish, then inspect again"
    code, _out, err = run_cli("inspect", str(root))
    assert code == 2 and "is still downloading its weights" in err


# -- permissions (#3) --------------------------------------------------------------------------


def _without_root_powers() -> list[str] | None:
    """A command prefix under which permissions apply (root ignores chmod 000), or None."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    caps = "-dac_override,-dac_read_search"
    prefix = [setpriv, f"--bounding-set={caps}", f"--inh-caps={caps}"]
    probe = subprocess.run([*prefix, "true"], capture_output=True)
    return prefix if probe.returncode == 0 else None


@pytest.mark.parametrize("what", ["file", "folder"])
def test_a_permission_error_in_a_pipeline_is_a_read_error(tmp_path: Path, what: str) -> None:
    prefix = _without_root_powers()
    if prefix is None:
        pytest.skip("running as root without setpriv: permissions cannot be tested")
    root = _pipeline(tmp_path / "sd")
    locked = root / "unet" / ("diffusion_pytorch_model.safetensors" if what == "file" else "")
    locked = locked if what == "file" else root / "unet"
    locked.chmod(0)
    try:
        done = subprocess.run(
            [*prefix, sys.executable, "-m", "modelsafe.cli", "inspect", str(root)],
            capture_output=True,
            text=True,
            env={**os.environ, "MODELSAFE_HOME": str(tmp_path / "home")},
        )
    finally:
        locked.chmod(0o755)
    assert done.returncode == 2, done.stderr
    assert f"cannot read {locked}: Permission denied" in done.stderr
    assert "check the path and its permissions" in done.stderr
    assert "plugin" not in done.stderr and "format_diffusers_dir" not in done.stderr


# -- torch checkpoints whose end or middle was never written (#8) -------------------------------


def _checkpoint(path: Path, legacy: bool = False, n: int = 12) -> bytes:
    gen = torch.Generator().manual_seed(0)
    state = {f"layer{i}.weight": torch.randn(256, 256, generator=gen) for i in range(n)}
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    return path.read_bytes()


def test_a_preallocated_ckpt_whose_end_was_never_written_says_so(tmp_path: Path) -> None:
    data = _checkpoint(tmp_path / "full.ckpt")
    path = tmp_path / "prealloc.ckpt"
    path.write_bytes(data[: len(data) // 2])
    os.truncate(path, len(data))  # (the size is right; the second half is a hole)
    with pytest.raises(MalformedFileError) as info:
        read_index(path)
    assert "truncated archive" not in info.value.reason
    assert "no zip end-of-central-directory record: the file ends in" in info.value.reason
    assert "of zeros where its end should be" in info.value.reason
    assert UNWRITTEN in info.value.hint and "download it again" in info.value.hint
    [error] = [f for f in audit_path(path).findings if f.severity == "error"]
    assert error.code == "unwritten"


def test_a_cut_short_ckpt_is_still_truncated(tmp_path: Path) -> None:
    data = _checkpoint(tmp_path / "full.ckpt")
    path = tmp_path / "cut.ckpt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MalformedFileError, match="truncated archive"):
        read_index(path)


def test_zeros_over_member_headers_are_named_as_unwritten(tmp_path: Path) -> None:
    data = _checkpoint(tmp_path / "full.ckpt")
    infos = zipfile.ZipFile(tmp_path / "full.ckpt").infolist()
    begin, end = infos[3].header_offset, infos[9].header_offset
    path = tmp_path / "holes.ckpt"
    path.write_bytes(data[:begin] + bytes(end - begin) + data[end:])
    with pytest.raises(MalformedFileError) as info:
        read_index(path)
    assert "6 members from byte" in info.value.reason
    assert "the file holds zeros there" in info.value.reason
    assert "corrupt file" not in info.value.reason
    assert UNWRITTEN in info.value.hint


def test_a_legacy_file_with_a_zero_tail_says_so(tmp_path: Path) -> None:
    data = _checkpoint(tmp_path / "legacy.pt", legacy=True)
    path = tmp_path / "prealloc.pt"
    path.write_bytes(data[: len(data) // 2] + bytes(len(data) - len(data) // 2))
    with pytest.raises(MalformedFileError) as info:
        read_index(path)
    assert "holds 0 elements" not in info.value.reason
    assert (
        "the file is zeros from storage" in info.value.reason and "to its end" in info.value.reason
    )
    assert UNWRITTEN in info.value.hint


# -- bytes after a legacy torch file (#9) ------------------------------------------------------


def _legacy(tmp_path: Path) -> bytes:
    path = tmp_path / "legacy.pt"
    torch.save({"w": torch.randn(64, 64)}, path, _use_new_zipfile_serialization=False)
    return path.read_bytes()


@pytest.mark.parametrize(
    ("tail", "said"),
    [
        (lambda d: bytes(4096), "4,096 zero bytes after the end of the file"),
        (lambda d: d, "repeat its start (the file holds itself twice"),
        (lambda d: d[: len(d) // 3], "repeat its start (the file holds itself again, in part"),
        (lambda d: pickle.dumps({"step": 3}, protocol=2), "more pickles, audited: nothing in"),
    ],
    ids=["zero-padding", "twice", "partial-copy", "clean-pickle"],
)
def test_harmless_bytes_after_a_legacy_file_are_a_warning(
    tmp_path: Path, tail: Any, said: str
) -> None:
    data = _legacy(tmp_path)
    path = tmp_path / "padded.pt"
    path.write_bytes(data + tail(data))
    assert list(torch.load(path, weights_only=True)) == ["w"]  # (torch reads the first copy)
    verdict = audit_path(path)
    assert verdict.status == "safe", verdict.findings
    [warning] = [f for f in verdict.findings if f.severity == "warning"]
    assert warning.code == "trailing-data" and said in warning.message


class _Payload:
    """Pickled as a call of ``open(marker, "w")``: it would create the marker when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def test_a_payload_after_a_legacy_file_stays_unsafe(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    data = _legacy(tmp_path)
    for name, tail in (
        ("evil.pt", pickle.dumps({"x": _Payload(marker)}, protocol=2)),
        ("zeros-then-evil.pt", bytes(64) + pickle.dumps(_Payload(marker), protocol=2)),
        ("junk.pt", random.Random(1).randbytes(4096).replace(b".", b",")),
    ):
        path = tmp_path / name
        path.write_bytes(data + tail)
        verdict = audit_path(path)
        assert verdict.status == "unsafe", (name, verdict.findings)
        assert any(f.code == "trailing-data" and f.severity == "unsafe" for f in verdict.findings)
    assert not marker.exists()
