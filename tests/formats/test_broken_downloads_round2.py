"""Broken and foreign downloads, as `inspect` names them.

A diffusers pipeline with an empty, missing or half component folder read as fine; a zip of a
model renamed to a model name was "not a torch checkpoint ... damaged"; a download preallocated at
full size whose tail never came read as complete; an Internet shortcut was "JSON", random bytes and
UTF-16 text named .safetensors were "a header built to exhaust memory", a .safetensors cut inside
its length field "not a model format", a broken symlink "does not exist".
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from modelsafe.errors import FileReadError, MalformedFileError, ModelsafeError
from modelsafe.registry.audit import audit_path
from modelsafe.registry.inspect import inspect_path
from modelsafe.registry.read import read_index
from modelsafe.testing import write_safetensors

Cli = Callable[..., tuple[int, str, str]]

# -- diffusers pipelines with a component that never arrived --------------------------------------


def _json(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


def _pipeline(root: Path, **extra: list[str | None]) -> Path:
    _json(
        root / "model_index.json",
        {
            "_class_name": "StableDiffusionPipeline",
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "scheduler": ["diffusers", "PNDMScheduler"],
            "safety_checker": [None, None],
            "feature_extractor": [None, None],
            **extra,
        },
    )
    for name, weights in (
        ("unet", "diffusion_pytorch_model"),
        ("vae", "diffusion_pytorch_model"),
        ("text_encoder", "model"),
    ):
        _json(root / name / "config.json", {"_class_name": name})
        write_safetensors(root / name / f"{weights}.safetensors", [("w", "F16", (4,))])
    _json(root / "tokenizer" / "tokenizer_config.json", {"model_max_length": 77})
    _json(root / "scheduler" / "scheduler_config.json", {"_class_name": "PNDMScheduler"})
    return root


def _empty(folder: Path) -> None:
    for child in folder.iterdir():
        child.unlink()


@pytest.mark.parametrize(
    ("breakage", "said"),
    [
        (lambda root: _empty(root / "text_encoder"), "text_encoder (CLIPTextModel) has an empty"),
        (lambda root: _empty(root / "unet"), "unet (UNet2DConditionModel) has an empty folder"),
        (lambda root: _empty(root / "tokenizer"), "tokenizer (CLIPTokenizer) has an empty folder"),
        (
            lambda root: (
                [p.unlink() for p in (root / "text_encoder").iterdir()]
                and (root / "text_encoder").rmdir()
            ),
            "text_encoder (CLIPTextModel) has no folder",
        ),
        (
            lambda root: (root / "vae" / "config.json").unlink(),
            "vae (AutoencoderKL) has a weights file but no config.json",
        ),
        (
            lambda root: (root / "scheduler" / "scheduler_config.json").rename(
                root / "scheduler" / "config.json"
            ),
            "scheduler (PNDMScheduler) has no scheduler_config.json",
        ),
    ],
)
def test_a_pipeline_missing_part_of_a_component_is_an_error_naming_it(
    tmp_path: Path, breakage: object, said: str
) -> None:
    root = _pipeline(tmp_path / "pipe")
    assert read_index(root).components  # the premise: whole, it reads
    breakage(root)  # type: ignore[operator]
    with pytest.raises(MalformedFileError) as caught:
        read_index(root)
    assert said in caught.value.reason and "cannot be loaded" in caught.value.reason
    assert "the download is incomplete" in caught.value.hint


def test_optional_components_may_be_missing_or_null(tmp_path: Path) -> None:
    root = _pipeline(
        tmp_path / "pipe",
        safety_checker=["stable_diffusion", "StableDiffusionSafetyChecker"],
        feature_extractor=["transformers", "CLIPImageProcessor"],
        image_encoder=[None, None],
    )
    index = read_index(root)  # no safety_checker/ or feature_extractor/ folder at all
    assert set(index.components) == {"unet", "vae", "text_encoder"}
    assert any("safety_checker" in w and "has no folder" in w for w in index.warnings)


def test_the_cli_exits_2_for_a_pipeline_with_an_empty_component(
    tmp_path: Path, run_cli: Cli
) -> None:
    root = _pipeline(tmp_path / "pipe")
    _empty(root / "text_encoder")
    code, _out, err = run_cli("inspect", str(root))
    assert code == 2 and "text_encoder (CLIPTextModel) has an empty folder" in err


# -- a zip of model files under a model's name ----------------------------------------------------


def test_a_zip_of_a_model_says_extract_it(tmp_path: Path) -> None:
    model = write_safetensors(tmp_path / "in.safetensors", [("w", "F16", (8, 8))]).read_bytes()
    path = tmp_path / "mylora.safetensors"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mylora/mylora.safetensors", model)
        zf.writestr("README.md", "# my lora\n")
    with pytest.raises(MalformedFileError) as caught:
        read_index(path)
    assert "a zip archive holding mylora/mylora.safetensors (2 members)" in caught.value.reason
    assert "extract it" in caught.value.hint


# -- a download preallocated at full size whose tail never came -----------------------------------

_TENSORS = [(f"t{i}", "U8", (10 << 20,)) for i in range(30)]  # 300 MiB of data


def _preallocated(path: Path, filled: float) -> Path:
    """A 300 MiB sparse file whose first ``filled`` of the data are non-zero bytes."""
    write_safetensors(path, _TENSORS)
    with open(path, "r+b") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        start, size = 8 + length, 300 << 20
        for pos in range(start, start + int(size * filled), 1 << 20):
            fh.seek(pos)
            fh.write(b"\x01" * min(1 << 20, start + int(size * filled) - pos))
    return path


def _zero_warnings(path: Path) -> list[str]:
    return [w for w in inspect_path(path).warnings if "all zeros" in w or "of zeros" in w]


def test_a_preallocated_download_whose_tail_is_zeros_is_a_warning(tmp_path: Path) -> None:
    [warning] = _zero_warnings(_preallocated(tmp_path / "prealloc.safetensors", 0.3))
    assert "64 MiB or more of zeros" in warning and "compare its sha256" in warning
    assert audit_path(tmp_path / "prealloc.safetensors").status == "safe"  # a warning only


def test_a_file_whose_data_ends_in_data_has_no_zero_tail_warning(tmp_path: Path) -> None:
    assert _zero_warnings(_preallocated(tmp_path / "whole.safetensors", 1.0)) == []
    # the last two tensors zero, but under 4 MiB: an untrained layer, not a missing tail
    small = [(f"t{i}", "U8", (10 << 20,)) for i in range(29)] + [
        ("a", "U8", (1 << 20,)),
        ("b", "U8", (1 << 20,)),
    ]
    path = write_safetensors(tmp_path / "real.safetensors", small)
    with open(path, "r+b") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        fh.seek(8 + length + (290 << 20) - 1)
        fh.write(b"\x01")
    assert _zero_warnings(path) == []


def test_a_small_file_with_zero_tensors_at_its_end_is_not_flagged(tmp_path: Path) -> None:
    path = write_safetensors(tmp_path / "lora.safetensors", [("up", "F16", (4096, 4096))])
    assert _zero_warnings(path) == []  # 32 MiB: under the size the check looks at


# -- foreign files under a model's name -----------------------------------------------------------


def _reason(path: Path) -> str:
    with pytest.raises(ModelsafeError) as caught:
        read_index(path)
    return caught.value.reason


def test_an_internet_shortcut_is_named(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"[InternetShortcut]\r\nURL=https://example.com/dl/12345\r\n")
    assert "an Internet shortcut (.url file) to https://example.com/dl/12345" in _reason(path)
    [finding] = audit_path(path).findings
    assert "Internet shortcut" in finding.message


@pytest.mark.parametrize(
    ("content", "said"),
    [
        ("Access denied. Please log in.".encode("utf-16"), "plain text"),
        (bytes(range(256)) * 16, "random-looking bytes"),
        (
            b"L\x00\x00\x00\x01\x14\x02\x00\x00\x00\x00\x00\xc0\x00\x00\x00\x00\x00\x00F"
            + bytes(60),
            "Windows shortcut (.lnk file)",
        ),
    ],
)
def test_inspect_says_what_audit_says_of_foreign_bytes(
    tmp_path: Path, content: bytes, said: str
) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    reason = _reason(path)
    assert said in reason and "exhaust memory" not in reason
    assert any(said in f.message for f in audit_path(path).findings)


def test_a_safetensors_cut_inside_its_length_field_is_truncated(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x70\xb6\x01\x00")
    with pytest.raises(MalformedFileError) as caught:
        read_index(path)
    assert "shorter than the 8-byte header length" in caught.value.reason
    assert "download it again" in caught.value.hint
    [finding] = audit_path(path).findings
    assert "shorter than the 8-byte header length" in finding.message


def test_a_broken_symlink_is_named(tmp_path: Path) -> None:
    link = tmp_path / "model.safetensors"
    os.symlink(tmp_path / "gone.safetensors", link)
    with pytest.raises(FileReadError, match="broken symlink to .*gone.safetensors"):
        read_index(link)


def test_converting_a_truncated_safetensors_named_ckpt_says_it_is_broken(
    tmp_path: Path, run_cli: Cli
) -> None:
    full = write_safetensors(tmp_path / "full.safetensors", [("w", "F16", (64, 64))])
    path = tmp_path / "model.ckpt"
    path.write_bytes(full.read_bytes()[:-100])
    code, _out, err = run_cli("convert", str(path))
    assert code == 2 and "already safetensors" not in err
    assert "a safetensors file" in err and "the file is truncated" in err
