"""Diffusers folders: pipelines, sharded and variant weights, single components, broken folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelsafe.errors import MalformedFileError, UnsupportedFormatError
from modelsafe.registry.read import read_index
from modelsafe.testing import write_safetensors


def _json(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


def _pipeline(root: Path) -> Path:
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
            "safety_checker": [None, None],
        },
    )
    unet = root / "unet"
    _json(unet / "config.json", {"_class_name": "UNet2DConditionModel", "cross_attention_dim": 768})
    write_safetensors(
        unet / "diffusion_pytorch_model.safetensors", [("conv_in.weight", "F32", (4,))]
    )
    write_safetensors(
        unet / "diffusion_pytorch_model.fp16.safetensors", [("conv_in.weight", "F16", (4,))]
    )
    vae = root / "vae"
    _json(vae / "config.json", {"_class_name": "AutoencoderKL", "latent_channels": 4})
    write_safetensors(vae / "diffusion_pytorch_model.fp16.safetensors", [("x", "F16", (2,))])
    te = root / "text_encoder"
    _json(te / "config.json", {"architectures": ["CLIPTextModel"], "hidden_size": 768})
    write_safetensors(te / "model-00001-of-00002.safetensors", [("a", "F32", (3,))])
    write_safetensors(te / "model-00002-of-00002.safetensors", [("b", "F32", (5,))])
    _json(
        te / "model.safetensors.index.json",
        {
            "metadata": {"total_size": 32},
            "weight_map": {
                "a": "model-00001-of-00002.safetensors",
                "b": "model-00002-of-00002.safetensors",
            },
        },
    )
    _json(root / "tokenizer" / "tokenizer_config.json", {"model_max_length": 77})
    _json(
        root / "scheduler" / "scheduler_config.json",
        {"_class_name": "PNDMScheduler", "prediction_type": "epsilon"},
    )
    return root


def test_pipeline(tmp_path: Path) -> None:
    index = read_index(_pipeline(tmp_path / "sd15"))
    assert index.format == "diffusers-dir"
    assert set(index.components) == {"unet", "vae", "text_encoder"}
    assert index.extra["pipeline_class"] == "StableDiffusionPipeline"
    facts = index.extra["facts"]
    assert facts["unet.cross_attention_dim"] == 768
    assert facts["vae.latent_channels"] == 4
    assert facts["scheduler.prediction_type"] == "epsilon"
    by = index.by_name()
    assert set(by) == {"unet.conv_in.weight", "vae.x", "text_encoder.a", "text_encoder.b"}
    # the full-precision unet is preferred; the variants are listed
    assert by["unet.conv_in.weight"].dtype == "F32"
    assert by["unet.conv_in.weight"].source == "unet/diffusion_pytorch_model.safetensors"
    unet = index.components["unet"]
    assert unet.extra["variants"] == ["full", "fp16"] and unet.extra["variant"] is None
    assert unet.extra["config"]["cross_attention_dim"] == 768
    # only an fp16 file: it is read, and says so
    vae = index.components["vae"]
    assert vae.extra["variant"] == "fp16" and by["vae.x"].dtype == "F16"
    # sharded: tensors from both shards, each with its shard as source and a real offset
    assert by["text_encoder.b"].source == "text_encoder/model-00002-of-00002.safetensors"
    assert index.components["text_encoder"].tensors[1].source == "model-00002-of-00002.safetensors"
    shard = tmp_path / "sd15" / by["text_encoder.b"].source
    assert by["text_encoder.b"].offset + by["text_encoder.b"].nbytes == shard.stat().st_size
    assert index.parameter_count == 4 + 2 + 3 + 5


def test_single_component_folder(tmp_path: Path) -> None:
    folder = tmp_path / "controlnet"
    _json(folder / "config.json", {"_class_name": "ControlNetModel", "cross_attention_dim": 768})
    write_safetensors(folder / "diffusion_pytorch_model.safetensors", [("w", "F16", (2, 2))])
    index = read_index(folder)
    assert index.format == "diffusers-dir" and index.names() == {"w"}
    assert index.extra["class_name"] == "ControlNetModel"
    assert index.extra["config"]["cross_attention_dim"] == 768


def test_missing_shard(tmp_path: Path) -> None:
    root = _pipeline(tmp_path / "p")
    (root / "text_encoder" / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(MalformedFileError, match="missing"):
        read_index(root)


def test_config_without_weights(tmp_path: Path) -> None:
    folder = tmp_path / "vae"
    _json(folder / "config.json", {"_class_name": "AutoencoderKL"})
    with pytest.raises(MalformedFileError, match="no weights"):
        read_index(folder)


def test_folder_without_model_index(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    with pytest.raises(UnsupportedFormatError, match="model_index.json"):
        read_index(tmp_path / "x")


def test_bad_model_index(tmp_path: Path) -> None:
    (tmp_path / "model_index.json").write_text("{not json")
    with pytest.raises(MalformedFileError, match="not valid JSON"):
        read_index(tmp_path)


def test_real_diffusers_save_pretrained_with_variant(tmp_path: Path) -> None:
    """Names as diffusers itself writes them (variant fp16 beside the full file)."""
    diffusers = pytest.importorskip("diffusers")
    torch = pytest.importorskip("torch")
    vae = diffusers.AutoencoderKL(
        block_out_channels=(8,), norm_num_groups=4, latent_channels=4, sample_size=8
    )
    vae.save_pretrained(tmp_path / "vae")
    vae.to(torch.float16).save_pretrained(tmp_path / "vae", variant="fp16")
    index = read_index(tmp_path / "vae")
    assert index.extra["variants"] == ["full", "fp16"]
    assert {t.dtype for t in index.tensors} == {"F32"}
    assert index.names() == set(vae.state_dict())
    assert index.extra["config"]["latent_channels"] == 4


def _as_hf_cache(folder: Path, cache: Path) -> Path:
    """``folder`` laid out as the Hugging Face cache keeps it: every file a relative link from
    ``snapshots/<rev>/`` into ``blobs/``."""
    import hashlib
    import os

    snapshot = cache / "models--org--model" / "snapshots" / "rev1"
    blobs = cache / "models--org--model" / "blobs"
    blobs.mkdir(parents=True)
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        blob = blobs / hashlib.sha256(file.read_bytes()).hexdigest()
        blob.write_bytes(file.read_bytes())
        link = snapshot / file.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snapshot


def test_a_pipeline_in_the_hugging_face_cache_reads_as_the_folder_does(tmp_path: Path) -> None:
    """Each file of a cached snapshot is a link into blobs/ (outside the folder): a component
    read was refused ("is not in the subpath"), a sharded one "lies outside the folder"."""
    folder = _pipeline(tmp_path / "sd15")
    cached = read_index(_as_hf_cache(folder, tmp_path / "hub"))
    plain = read_index(folder)
    assert [(t.name, t.source) for t in cached.tensors] == [
        (t.name, t.source) for t in plain.tensors
    ]
    assert (
        cached.by_name()["text_encoder.b"].source == "text_encoder/model-00002-of-00002.safetensors"
    )


def test_a_shard_named_outside_its_folder_is_refused(tmp_path: Path) -> None:
    folder = _pipeline(tmp_path / "sd15")
    write_safetensors(tmp_path / "sd15" / "outside.safetensors", [("b", "F32", (5,))])
    index_file = folder / "text_encoder" / "model.safetensors.index.json"
    data = json.loads(index_file.read_text())
    data["weight_map"]["b"] = "../outside.safetensors"
    index_file.write_text(json.dumps(data))
    with pytest.raises(MalformedFileError, match="lies outside the folder"):
        read_index(folder)
