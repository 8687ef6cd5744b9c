"""The folder walk (links, loops, unreadable folders, diffusers folders) and folder conventions."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

import modelsafe.registry.walk as walk_module
from modelsafe.registry.folders import convention_of, family_hint, folder_report
from modelsafe.registry.walk import walk
from modelsafe.testing import write_safetensors


def st(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_safetensors(path, [("w", "F16", (4, 4))], data="random", seed=seed)


def test_walk_lists_model_files_only_and_diffusers_folders_whole(tmp_path: Path) -> None:
    st(tmp_path / "a.safetensors")
    st(tmp_path / "sub" / "b.CKPT")
    (tmp_path / "sub" / "readme.txt").write_text("x")
    (tmp_path / "sub" / "preview.png").write_bytes(b"\x89PNG")
    st(tmp_path / ".hidden" / "c.safetensors")
    pipe = tmp_path / "pipe"
    st(pipe / "unet" / "diffusion_pytorch_model.safetensors")
    (pipe / "model_index.json").write_text("{}")
    result = walk([tmp_path])
    found = {Path(f.path).relative_to(tmp_path).as_posix(): f.is_dir for f in result.found}
    assert found == {"a.safetensors": False, "sub/b.CKPT": False, "pipe": True}
    [folder] = [f for f in result.found if f.is_dir]
    assert (
        folder.key.size
        == (pipe / "unet" / "diffusion_pytorch_model.safetensors").stat().st_size + 2
    )


def test_each_real_file_once_with_every_path(tmp_path: Path) -> None:
    real = st(tmp_path / "models" / "m.safetensors")
    (tmp_path / "link.safetensors").symlink_to(real)
    os.link(real, tmp_path / "hard.safetensors")
    (tmp_path / "dirlink").symlink_to(tmp_path / "models")
    result = walk([tmp_path])
    [found] = result.found
    assert len(found.paths) == 3  # file, symlink, hard link; the linked folder is entered once
    assert [s.reason for s in result.skipped] == ["already scanned through another path"]


def test_unlistable_folder_is_skipped_with_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    st(tmp_path / "ok.safetensors")
    locked = tmp_path / "locked"
    st(locked / "m.safetensors")
    real_scandir = os.scandir

    def scandir(path: str) -> object:  # the OS refusing to list one folder
        if path == str(locked):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(walk_module.os, "scandir", scandir)
    result = walk([tmp_path])
    assert [Path(f.path).name for f in result.found] == ["ok.safetensors"]
    assert [(s.path, s.reason) for s in result.skipped] == [
        (str(locked), "cannot list folder: Permission denied")
    ]
    assert result.unlisted == [str(locked)]


def test_missing_root_is_reported(tmp_path: Path) -> None:
    result = walk([tmp_path / "nope"])
    assert result.found == [] and result.skipped[0].reason == "does not exist"


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("SD1.5", "sd1"),
        ("sd15", "sd1"),
        ("sd-1", "sd1"),
        ("SD 2.1", "sd2"),
        ("SDXL", "sdxl"),
        ("Pony", "sdxl"),
        ("xl loras", "sdxl"),
        ("sdxl-refiner", "sdxl_refiner"),
        ("SD3.5", "sd3.5"),
        ("Flux.1-dev", "flux1"),
        ("characters", None),
        ("pixel", None),
    ],
)
def test_family_hints_from_folder_names(name: str, family: str | None) -> None:
    assert family_hint(name) == family


@pytest.mark.parametrize(
    ("path", "family", "kind", "problem"),
    [
        ("ComfyUI/models/loras/SD1.5/x.safetensors", "sdxl", "lora", "sdxl lora in SD1.5/"),
        ("ComfyUI/models/checkpoints/x.safetensors", "sd1", "lora", "lora in checkpoints/"),
        ("ComfyUI/models/checkpoints/x.safetensors", "sdxl", "unet", "diffusion_models/"),
        ("webui/models/Lora/x.safetensors", "sd1", "checkpoint", "Stable-diffusion/"),
        ("webui/models/Stable-diffusion/x.safetensors", "flux1", "transformer", None),
        ("webui/models/ESRGAN/x.pth", "any", "upscaler", None),
        ("invokeai/models/sd-1/lora/x.safetensors", "sdxl", "lora", "sdxl lora in sd-1/"),
        ("invokeai/models/sdxl/main/x.safetensors", "sdxl", "checkpoint", None),
        ("invokeai/models/any/vae/x.safetensors", "sd1", "vae", None),
        ("ComfyUI/models/loras/x.safetensors", "sdxl", "lycoris", None),
        ("ComfyUI/models/vae/x.safetensors", "unknown", "unknown", None),
        ("downloads/x.safetensors", "sdxl", "lora", None),
    ],
)
def test_wrong_folder_report(path: str, family: str, kind: str, problem: str | None) -> None:
    report = folder_report("/home/u/" + path, family, kind)
    if problem is None:
        assert report == []
    else:
        assert len(report) == 1 and problem in report[0]


def test_convention_names_the_app() -> None:
    comfy = convention_of("/x/ComfyUI/models/upscale_models/4x.pth")
    assert comfy is not None and comfy.app == "ComfyUI" and comfy.kinds == {"upscaler"}
    invoke = convention_of("/x/models/sdxl/lora/a.safetensors")
    assert invoke is not None and invoke.app == "InvokeAI" and invoke.family == "sdxl"
