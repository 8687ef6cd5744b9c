"""Build real base-model files (sparse safetensors, diffusers folders, GGUF) for the tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from modelsafe.testing import write_safetensors
from modelsafe.testing.layouts import base_models as bm

Specs = bm.Specs


def _small_te(prefix: str, width: int = 64) -> Specs:
    """A stand-in text encoder (few tensors, real prefix) for all-in-one DiT files."""
    return bm.prefixed(prefix, [("model.embed_tokens.weight", "F16", (1000, width))])


# name -> (specs builder, expected family, kind, variant, prediction_type)
SINGLE_FILES: dict[str, tuple[Callable[[], Specs], str, str, str | None, str]] = {
    "sd15_checkpoint": (
        lambda: bm.unet_checkpoint("sd1"),
        "sd1",
        "checkpoint",
        "normal",
        "epsilon",
    ),
    "sd15_inpaint_checkpoint": (
        lambda: bm.unet_checkpoint("sd1", in_channels=9),
        "sd1",
        "checkpoint",
        "inpaint",
        "epsilon",
    ),
    "sd15_unet_ldm": (lambda: bm.ldm_unet(), "sd1", "unet", "normal", "epsilon"),
    "sd15_unet_diffusers": (
        lambda: bm.diffusers_denoiser("sd1"),
        "sd1",
        "unet",
        "normal",
        "epsilon",
    ),
    "sd2_checkpoint": (lambda: bm.unet_checkpoint("sd2"), "sd2", "checkpoint", None, "ambiguous"),
    "sd2_unet_ldm": (
        lambda: bm.ldm_unet(**bm.UNET_PARAMS["sd2"]),
        "sd2",
        "unet",
        None,
        "ambiguous",
    ),
    "sdxl_checkpoint": (
        lambda: bm.unet_checkpoint("sdxl"),
        "sdxl",
        "checkpoint",
        "base",
        "epsilon",
    ),
    "sdxl_unet_diffusers": (
        lambda: bm.diffusers_denoiser("sdxl"),
        "sdxl",
        "unet",
        "base",
        "epsilon",
    ),
    "sdxl_refiner_checkpoint": (
        lambda: bm.unet_checkpoint("sdxl_refiner"),
        "sdxl_refiner",
        "checkpoint",
        None,
        "epsilon",
    ),
    "sdxl_refiner_unet_ldm": (
        lambda: bm.ldm_unet(**bm.UNET_PARAMS["sdxl_refiner"]),
        "sdxl_refiner",
        "unet",
        None,
        "epsilon",
    ),
    "cascade_stage_c": (
        lambda: bm.cascade_original(bm.diffusers_denoiser("stable-cascade/stage_c", "BF16")),
        "stable-cascade",
        "unet",
        "stage_c",
        "epsilon",
    ),
    "cascade_stage_b": (
        lambda: bm.diffusers_denoiser("stable-cascade/stage_b", "BF16"),
        "stable-cascade",
        "unet",
        "stage_b",
        "epsilon",
    ),
    "cascade_checkpoint": (
        lambda: (
            bm.prefixed(
                "model.diffusion_model.",
                bm.cascade_original(bm.diffusers_denoiser("stable-cascade/stage_c", "BF16")),
            )
            + bm.prefixed("text_encoders.clip_g.transformer.", bm.clip_text(1280, 32, 1280))
        ),
        "stable-cascade",
        "checkpoint",
        "stage_c",
        "epsilon",
    ),
    "sd3_medium_checkpoint": (
        lambda: bm.dit_checkpoint(bm.sai_mmdit(), bm.text_encoders_sd3()),
        "sd3",
        "checkpoint",
        "medium",
        "flow",
    ),
    "sd3_medium_transformer": (lambda: bm.sai_mmdit(), "sd3", "transformer", "medium", "flow"),
    "sd35_large_transformer": (
        lambda: bm.sai_mmdit(**bm.SD3_PARAMS["sd3.5/large"]),
        "sd3.5",
        "transformer",
        "large",
        "flow",
    ),
    "sd35_medium_checkpoint": (
        lambda: bm.dit_checkpoint(
            bm.sai_mmdit(**bm.SD3_PARAMS["sd3.5/medium"]), bm.text_encoders_sd3()
        ),
        "sd3.5",
        "checkpoint",
        "medium",
        "flow",
    ),
    "sd35_large_diffusers": (
        lambda: bm.diffusers_denoiser("sd3.5/large"),
        "sd3.5",
        "transformer",
        "large",
        "flow",
    ),
    "flux1_dev_transformer": (lambda: bm.bfl_flux(), "flux1", "transformer", "dev", "flow"),
    "flux1_schnell_transformer": (
        lambda: bm.bfl_flux(guidance=False),
        "flux1",
        "transformer",
        "schnell",
        "flow",
    ),
    "flux1_fill_transformer": (
        lambda: bm.bfl_flux(in_features=384),
        "flux1",
        "transformer",
        "fill",
        "flow",
    ),
    "flux1_dev_diffusers": (
        lambda: bm.diffusers_denoiser("flux1/dev", "BF16"),
        "flux1",
        "transformer",
        "dev",
        "flow",
    ),
    "flux1_dev_checkpoint": (
        lambda: bm.dit_checkpoint(bm.bfl_flux(), bm.text_encoders_flux()),
        "flux1",
        "checkpoint",
        "dev",
        "flow",
    ),
    "chroma_transformer": (lambda: bm.bfl_flux(chroma=True), "chroma", "transformer", None, "flow"),
    "chroma_checkpoint": (
        lambda: bm.dit_checkpoint(
            bm.bfl_flux(chroma=True),
            bm.prefixed("text_encoders.t5xxl.transformer.", bm.t5_encoder()),
        ),
        "chroma",
        "checkpoint",
        None,
        "flow",
    ),
    "z_image_transformer": (
        lambda: bm.z_image_original(bm.diffusers_denoiser("z-image", "BF16")),
        "z-image",
        "transformer",
        None,
        "flow",
    ),
    "z_image_checkpoint": (
        lambda: bm.dit_checkpoint(
            bm.z_image_original(bm.diffusers_denoiser("z-image", "BF16")),
            _small_te("text_encoders.qwen3_4b.transformer.", 2560),
        ),
        "z-image",
        "checkpoint",
        None,
        "flow",
    ),
    "qwen_image_transformer": (
        lambda: bm.diffusers_denoiser("qwen-image", "BF16"),
        "qwen-image",
        "transformer",
        None,
        "flow",
    ),
    "qwen_image_checkpoint": (
        lambda: bm.dit_checkpoint(
            bm.diffusers_denoiser("qwen-image", "BF16"),
            _small_te("text_encoders.qwen25_7b.transformer.", 3584),
        ),
        "qwen-image",
        "checkpoint",
        None,
        "flow",
    ),
    "hidream_transformer": (
        lambda: bm.diffusers_denoiser("hidream", "BF16"),
        "hidream",
        "transformer",
        None,
        "flow",
    ),
    "hidream_checkpoint": (
        lambda: bm.dit_checkpoint(
            bm.diffusers_denoiser("hidream", "BF16"),
            bm.text_encoders_sd3(t5_layers=2) + _small_te("text_encoders.llama.", 4096),
        ),
        "hidream",
        "checkpoint",
        None,
        "flow",
    ),
}

# name -> (denoiser key, component folder, pipeline class, scheduler config,
#          expected family, variant)
PIPELINES: dict[str, tuple[str, str, str, dict[str, object], str, str | None]] = {
    "sd15": ("sd1", "unet", "StableDiffusionPipeline", {}, "sd1", "normal"),
    "sd2_768v": (
        "sd2",
        "unet",
        "StableDiffusionPipeline",
        {"prediction_type": "v_prediction"},
        "sd2",
        "768-v",
    ),
    "sdxl": ("sdxl", "unet", "StableDiffusionXLPipeline", {}, "sdxl", "base"),
    "sdxl_refiner": (
        "sdxl_refiner",
        "unet",
        "StableDiffusionXLImg2ImgPipeline",
        {},
        "sdxl_refiner",
        None,
    ),
    "cascade_prior": (
        "stable-cascade/stage_c",
        "prior",
        "StableCascadePriorPipeline",
        {},
        "stable-cascade",
        "stage_c",
    ),
    "sd3": ("sd3", "transformer", "StableDiffusion3Pipeline", {}, "sd3", "medium"),
    "sd35_medium": (
        "sd3.5/medium",
        "transformer",
        "StableDiffusion3Pipeline",
        {},
        "sd3.5",
        "medium",
    ),
    "flux1_schnell": ("flux1/schnell", "transformer", "FluxPipeline", {}, "flux1", "schnell"),
    "chroma": ("chroma", "transformer", "ChromaPipeline", {}, "chroma", None),
    "z_image": ("z-image", "transformer", "ZImagePipeline", {}, "z-image", None),
    "qwen_image": ("qwen-image", "transformer", "QwenImagePipeline", {}, "qwen-image", None),
    "hidream": ("hidream", "transformer", "HiDreamImagePipeline", {}, "hidream", None),
}


def write_single(path: Path, name: str, metadata: dict[str, str] | None = None) -> Path:
    specs = SINGLE_FILES[name][0]()
    return write_safetensors(path, specs, metadata, data="sparse")


def write_pipeline(root: Path, name: str) -> Path:
    """A diffusers folder: model_index.json, the denoiser (sparse, full size), a scheduler."""
    key, component, pipeline_class, scheduler, *_ = PIPELINES[name]
    root.mkdir(parents=True)
    index = {
        "_class_name": pipeline_class,
        "_diffusers_version": "0.30.0",
        component: ["diffusers", bm.DIFFUSERS_DENOISERS[key][0]],
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    }
    (root / "model_index.json").write_text(json.dumps(index))
    folder = root / component
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(bm.diffusers_config(key)))
    write_safetensors(
        folder / "diffusion_pytorch_model.safetensors", bm.diffusers_denoiser(key), data="sparse"
    )
    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text(
        json.dumps({"_class_name": "EulerDiscreteScheduler", **scheduler})
    )
    return root


def write_gguf(path: Path, arch: str, specs: list[tuple[str, str, tuple[int, ...]]]) -> Path:
    """A real GGUF file (zero data) with GGML quant types named like ``Q4_K``/``Q8_0``/``F16``."""
    from gguf import GGMLQuantizationType, GGUFWriter
    from gguf.quants import quant_shape_to_byte_shape

    writer = GGUFWriter(str(path), arch)
    for name, qtype_name, shape in specs:
        if qtype_name in ("F32", "F16"):
            dtype = np.float32 if qtype_name == "F32" else np.float16
            writer.add_tensor(name, np.zeros(shape, dtype=dtype))
            continue
        qtype = GGMLQuantizationType[qtype_name]
        raw = np.zeros(quant_shape_to_byte_shape(shape, qtype), dtype=np.uint8)
        writer.add_tensor(name, raw, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
