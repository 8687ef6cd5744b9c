"""Load diffusers pipelines from local files only: single files, component files, folders.

Nothing is fetched from the network. The configs a family needs ship with modelsafe as small
JSON files in ``modelsafe.runtime.configs`` (``<family>[-<variant>].<component>.json``); they are
laid out as a diffusers config folder in a temporary directory for each load. Tokenizers come from
``--tokenizers DIR`` (``MODELSAFE_TOKENIZERS``), the model's own folder, or the user's Hugging Face
cache (offline). Anything missing is a :class:`BackendError` that names what to get.

Every file handed to this module must have been audited safe before (``refuse_unsafe``); pickled
weights are only ever read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from modelsafe.errors import BackendError
from modelsafe.types import NOT_PART_KINDS, a_kind

TOKENIZERS_ENV = "MODELSAFE_TOKENIZERS"

# Where each family's tokenizers are found in a Hugging Face cache: (repo, subfolder), in order.
TOKENIZER_REPOS: dict[str, dict[str, tuple[tuple[str, str], ...]]] = {
    "sd1": {
        "tokenizer": (
            ("stable-diffusion-v1-5/stable-diffusion-v1-5", "tokenizer"),
            ("runwayml/stable-diffusion-v1-5", "tokenizer"),
            ("openai/clip-vit-large-patch14", ""),
        )
    },
    "sd2": {
        "tokenizer": (
            ("stabilityai/stable-diffusion-2-1", "tokenizer"),
            ("stabilityai/stable-diffusion-2-1-base", "tokenizer"),
        )
    },
    "sdxl": {
        "tokenizer": (
            ("stabilityai/stable-diffusion-xl-base-1.0", "tokenizer"),
            ("openai/clip-vit-large-patch14", ""),
        ),
        "tokenizer_2": (("stabilityai/stable-diffusion-xl-base-1.0", "tokenizer_2"),),
    },
    "sdxl_refiner": {
        "tokenizer_2": (
            ("stabilityai/stable-diffusion-xl-refiner-1.0", "tokenizer_2"),
            ("stabilityai/stable-diffusion-xl-base-1.0", "tokenizer_2"),
        ),
    },
    "sd3": {
        name: tuple(
            (repo, name)
            for repo in (
                "stabilityai/stable-diffusion-3-medium-diffusers",
                "stabilityai/stable-diffusion-3.5-large",
                "stabilityai/stable-diffusion-3.5-medium",
            )
        )
        for name in ("tokenizer", "tokenizer_2", "tokenizer_3")
    },
    "flux1": {
        name: tuple(
            (repo, name)
            for repo in ("black-forest-labs/FLUX.1-dev", "black-forest-labs/FLUX.1-schnell")
        )
        for name in ("tokenizer", "tokenizer_2")
    },
}
TOKENIZER_REPOS["sd3.5"] = TOKENIZER_REPOS["sd3"]

# Key prefixes that show a component is inside an original-format (single file) checkpoint.
CHECKPOINT_PREFIXES: dict[str, dict[str, tuple[str, ...]]] = {
    "sd1": {
        "unet": ("model.diffusion_model.",),
        "vae": ("first_stage_model.",),
        "text_encoder": ("cond_stage_model.transformer.",),
    },
    "sd2": {
        "unet": ("model.diffusion_model.",),
        "vae": ("first_stage_model.",),
        "text_encoder": ("cond_stage_model.model.", "cond_stage_model.transformer."),
    },
    "sdxl": {
        "unet": ("model.diffusion_model.",),
        "vae": ("first_stage_model.",),
        "text_encoder": ("conditioner.embedders.0.transformer.",),
        "text_encoder_2": ("conditioner.embedders.1.model.",),
    },
    "sdxl_refiner": {
        "unet": ("model.diffusion_model.",),
        "vae": ("first_stage_model.",),
        "text_encoder_2": ("conditioner.embedders.0.model.",),
    },
    "sd3": {
        "transformer": ("model.diffusion_model.",),
        "vae": ("first_stage_model.",),
        "text_encoder": ("text_encoders.clip_l.",),
        "text_encoder_2": ("text_encoders.clip_g.",),
        "text_encoder_3": ("text_encoders.t5xxl.",),
    },
    "flux1": {
        "transformer": ("model.diffusion_model.", "double_blocks.", "transformer_blocks."),
        "vae": ("vae.", "first_stage_model."),
        "text_encoder": ("text_encoders.clip_l.",),
        "text_encoder_2": ("text_encoders.t5xxl.",),
    },
}
CHECKPOINT_PREFIXES["sd3.5"] = CHECKPOINT_PREFIXES["sd3"]

# Components a pipeline runs without (the prompt is then encoded without them).
OPTIONAL_COMPONENTS = {"sd3": ("text_encoder_3",), "sd3.5": ("text_encoder_3",)}

# What to tell the user to get for a missing component.
COMPONENT_HINTS = {
    "text_encoder": "the CLIP-L text encoder (e.g. clip_l.safetensors)",
    "text_encoder_2": "the second text encoder (CLIP-G clip_g.safetensors for SDXL/SD3, "
    "T5-XXL t5xxl_fp16.safetensors for Flux)",
    "text_encoder_3": "the T5-XXL text encoder (t5xxl_fp16.safetensors)",
    "vae": "the VAE (e.g. ae.safetensors for Flux, or the family's VAE file)",
}

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


@dataclass(frozen=True)
class LoadRequest:
    """What to load; all paths were audited safe before."""

    family: str
    path: Path
    kind: str = "checkpoint"  # checkpoint | unet | transformer | pipeline
    variant: str | None = None
    vae: Path | None = None
    text_encoders: Mapping[str, Path] | None = None
    tokenizers: Path | None = None
    config_dir: Path | None = None
    dtype: str = "fp32"


# -- configs ---------------------------------------------------------------------------------


# What a diffusers model_index.json names a component (and so a folder): never a path.
COMPONENT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")


def _config_object(file: Path, component: str) -> dict[str, Any]:
    """A ``--config-dir`` JSON config: an object (a model index's components, its list values,
    each ``[library, class]``), else a BackendError naming the file."""
    hint = "fix or remove it from --config-dir (the shipped configs are used without it)"
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BackendError(f"config {file} cannot be read: {error_line(exc)}", hint) from None
    if not isinstance(value, dict):
        raise BackendError(f"config {file} is not a JSON object", hint)
    if component == "model_index":
        for name, spec in value.items():
            if name.startswith("_") or not isinstance(spec, list):
                continue  # (not a component: a setting such as requires_safety_checker)
            if len(spec) != 2 or not all(part is None or isinstance(part, str) for part in spec):
                raise BackendError(
                    f"config {file}: component {name!r} is {json.dumps(spec)[:60]}, not "
                    "[library, class] or null",
                    hint,
                )
        if not isinstance(value.get("_class_name"), str):
            raise BackendError(f"config {file} names no pipeline (_class_name)", hint)
    return value


def config_names(family: str, variant: str | None) -> list[str]:
    """Config file stems to try, most specific first (``sd3.5-large``, ``sd3.5``, ``sd3``)."""
    names = [f"{family}-{variant}"] if variant else []
    names.append(family)
    if family == "sd3.5":
        names.append("sd3")
    return names


def read_config(
    family: str, variant: str | None, component: str, config_dir: Path | None = None
) -> dict[str, Any] | None:
    """The JSON config of ``component`` (``config_dir`` first, then the shipped ones)."""
    if not COMPONENT_NAME.fullmatch(component):
        raise BackendError(
            f"{component!r} is not a pipeline component name",
            hint="a model_index.json names components like unet, vae or text_encoder_2",
        )
    stems = config_names(family, variant)
    for stem in stems if config_dir is not None else ():
        assert config_dir is not None
        file = config_dir / f"{stem}.{component}.json"
        if file.is_file():
            return _config_object(file, component)
    for stem in stems:
        name = f"{stem}.{component}.json"
        shipped = resources.files("modelsafe.runtime.configs").joinpath(name)
        if shipped.is_file():
            return dict(json.loads(shipped.read_text(encoding="utf-8")))
    return None


@contextlib.contextmanager
def config_folder(
    family: str, variant: str | None, config_dir: Path | None = None
) -> Iterator[Path]:
    """A temporary diffusers config folder (model_index.json + one config per component)."""
    index = read_config(family, variant, "model_index", config_dir)
    if index is None:
        raise BackendError(
            f"modelsafe has no configs for family {family!r}",
            hint="pass the model as a diffusers folder, or --family with a supported family",
        )
    if not isinstance(index, dict):
        raise BackendError(
            f"the model_index config of {family!r} is not a JSON object",
            hint="check the model_index.json in --config-dir",
        )
    with tempfile.TemporaryDirectory(prefix="modelsafe-config-") as tmp:
        root = Path(tmp)
        (root / "model_index.json").write_text(json.dumps(index), encoding="utf-8")
        for component, spec in index.items():
            if component.startswith("_") or not isinstance(spec, list) or spec[0] is None:
                continue
            if component.startswith("tokenizer"):
                continue
            config = read_config(family, variant, component, config_dir)
            if config is None:
                continue
            folder = root / component
            folder.mkdir()
            filename = "scheduler_config.json" if component == "scheduler" else "config.json"
            (folder / filename).write_text(json.dumps(config), encoding="utf-8")
        yield root


def model_index(family: str, variant: str | None, config_dir: Path | None) -> dict[str, Any]:
    index = read_config(family, variant, "model_index", config_dir)
    if index is None:
        raise BackendError(f"modelsafe has no configs for family {family!r}")
    return index


# -- reading weights (only after the audit) -----------------------------------------------------


def load_state_dict(path: Path) -> dict[str, Any]:
    """Tensors of an audited file: safetensors directly, pickles only with ``weights_only``
    (whatever the file's extension says: a PyTorch zip named ``.safetensors`` loads too)."""
    import torch

    if _safetensors_header(path) is not None:  # the bytes decide, not the name
        from safetensors.torch import load_file

        return dict(load_file(str(path), device="cpu"))
    with open(path, "rb") as fh:  # (given a name ending .safetensors, torch.load reads safetensors)
        loaded = torch.load(fh, map_location="cpu", weights_only=True)
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise BackendError(f"{path} holds no tensor dictionary")
    return dict(loaded)


def tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Name -> shape of the tensors in a single file, from its header (no tensor data read).

    Uses the registry's format readers; a safetensors header is parsed here when no reader
    plugin answers (this is the one place generation depends on the readers).
    """
    from modelsafe.errors import ModelsafeError
    from modelsafe.registry.read import read_index

    try:
        return {t.name: tuple(t.shape) for t in read_index(path).tensors}
    except ModelsafeError:
        header = _safetensors_header(path)
        if header is None:
            raise
        return {
            name: tuple(int(d) for d in info["shape"])
            for name, info in header.items()
            if name != "__metadata__" and isinstance(info, dict)
        }


def _safetensors_header(path: Path) -> dict[str, Any] | None:
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            return None
        size = int.from_bytes(raw, "little")
        if size <= 0 or size > 100_000_000:
            return None
        try:
            header = json.loads(fh.read(size))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None
    return header if isinstance(header, dict) else None


@contextlib.contextmanager
def named_by_content(path: Path) -> Iterator[Path]:
    """``path`` for a diffusers ``from_single_file`` call, or a link to it whose extension says
    what the bytes are: diffusers reads a single file with safetensors only when its name ends in
    ``.safetensors`` (else ``torch.load``), and files arrive misnamed (BFL's ``ae.sft``, a
    PyTorch zip saved as ``.safetensors``). The link lives in a private temporary folder."""
    if path.is_dir() or path.suffix.lower() == ".gguf":
        yield path
        return
    is_safetensors = _safetensors_header(path) is not None
    if is_safetensors == (path.suffix.lower() == ".safetensors"):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="modelsafe-named-") as tmp:
        link = Path(tmp) / (path.stem + (".safetensors" if is_safetensors else ".ckpt"))
        link.symlink_to(path.resolve())
        yield link


# -- identity of a model the detectors could not place ------------------------------------------


_PIPELINE_FAMILIES = {
    "StableDiffusionPipeline": "sd1",
    "StableDiffusionXLPipeline": "sdxl",
    "StableDiffusionXLImg2ImgPipeline": "sdxl_refiner",
    "StableDiffusion3Pipeline": "sd3",
    "FluxPipeline": "flux1",
}


def guess_identity(path: Path) -> tuple[str, str, str | None, str | None]:
    """(family, kind, variant, prediction_type) from a folder's model_index.json or a file's
    tensor layout. Raises a BackendError when the model is none of the families generate knows."""
    if path.is_dir():
        return _guess_folder(path)
    found = _guess_layout(tensor_shapes(path))
    if found is None:
        raise BackendError(
            f"cannot tell which model family {path.name} is",
            hint="pass --family (sd1, sd2, sdxl, sd3, sd3.5, flux1)",
        )
    return found


def guess_variant(path: Path, family: str) -> tuple[str | None, str | None]:
    """(variant, prediction_type) of a model already known to be ``family``, when its layout
    or folder says (Flux dev/schnell, SD3.5 large/medium, SD2 v/epsilon)."""
    try:
        found, _kind, variant, prediction = guess_identity(path)
    except BackendError:
        return None, None
    return (variant, prediction) if found == family else (None, None)


def guess_kind(path: Path, family: str) -> str:
    """``pipeline`` for a folder, ``checkpoint`` for a file with a VAE inside, else the bare
    denoiser (``unet`` or ``transformer``)."""
    if path.is_dir():
        return "pipeline"
    vae = CHECKPOINT_PREFIXES.get(family, {}).get("vae", ("first_stage_model.",))
    if any(name.startswith(vae) for name in tensor_shapes(path)):
        return "checkpoint"
    return "transformer" if family in ("sd3", "sd3.5", "flux1") else "unet"


def _guess_folder(path: Path) -> tuple[str, str, str | None, str | None]:
    index_file = path / "model_index.json"
    if not index_file.is_file():
        from modelsafe.registry.formats.diffusers_dir_reader import refuse_broken_links

        refuse_broken_links(path)  # (a Hugging Face snapshot copied with `cp -r`)
        raise BackendError(
            f"{path} is a folder without model_index.json",
            hint="point --checkpoint at a diffusers pipeline folder or a single model file",
        )
    index = json.loads(index_file.read_text(encoding="utf-8"))
    family = _PIPELINE_FAMILIES.get(str(index.get("_class_name", "")))
    if family is None:
        raise BackendError(f"{path}: pipeline {index.get('_class_name')!r} is not supported")

    def sub(component: str, name: str) -> dict[str, Any]:
        file = path / component / name
        return dict(json.loads(file.read_text(encoding="utf-8"))) if file.is_file() else {}

    prediction = sub("scheduler", "scheduler_config.json").get("prediction_type")
    variant: str | None = None
    if family == "sd1" and sub("unet", "config.json").get("cross_attention_dim") == 1024:
        family = "sd2"
        variant = "768-v" if prediction == "v_prediction" else "512-base"
    elif family == "sd3" and sub("transformer", "config.json").get("qk_norm"):
        family = "sd3.5"
        dual = sub("transformer", "config.json").get("dual_attention_layers")
        variant = "medium" if dual else "large"
    elif family == "flux1":
        guidance = sub("transformer", "config.json").get("guidance_embeds", True)
        variant = "dev" if guidance else "schnell"
    return family, "pipeline", variant, prediction


# UNet cross-attention width (attn2.to_k input features) -> family.
_CONTEXT_WIDTHS = {768: "sd1", 1024: "sd2", 2048: "sdxl", 1280: "sdxl_refiner"}


def _guess_layout(
    shapes: Mapping[str, tuple[int, ...]],
) -> tuple[str, str, str | None, str | None] | None:
    names = shapes.keys()

    def has(fragment: str) -> bool:
        return any(fragment in n for n in names)

    full = any(n.startswith(("first_stage_model.", "vae.")) for n in names)
    if has("double_blocks.") or has("single_transformer_blocks."):
        dev = has("guidance_in.") or has("guidance_embedder.")
        return "flux1", "checkpoint" if full else "transformer", "dev" if dev else "schnell", None
    if has("joint_blocks.") or (has("transformer_blocks.") and has("context_embedder.")):
        kind = "checkpoint" if full else "transformer"
        if has(".ln_q.") or has(".norm_q."):
            medium = has(".attn2.")
            return "sd3.5", kind, "medium" if medium else "large", None
        return "sd3", kind, None, None
    for name, shape in shapes.items():
        if name.endswith("attn2.to_k.weight") and len(shape) == 2 and "control" not in name:
            family = _CONTEXT_WIDTHS.get(shape[1])
            if family is not None:
                return family, "checkpoint" if full else "unet", None, None
    return None


# -- how the model is sampled, and what it takes in (headers and configs only) ----------------

# Playground v2.5 (its diffusers scheduler_config.json and vae/config.json; ComfyUI
# ``supported_models.SDXL.model_type`` + ``latent_formats.SDXL_Playground_2_5``): the EDM noise
# schedule with epsilon prediction, sigmas 0.002..80, sigma_data 0.5, and latents normalised
# per channel (mean/std) with scaling factor 0.5 instead of SDXL's 0.13025.
PLAYGROUND_V25_SAMPLING: dict[str, Any] = {
    "noise_schedule": "edm",
    "prediction_type": "epsilon",
    "sigma_min": 0.002,
    "sigma_max": 80.0,
    "sigma_data": 0.5,
    "scaling_factor": 0.5,
    "latents_mean": [-1.6574, 1.886, -1.383, 2.5155],
    "latents_std": [8.4927, 5.9022, 6.5498, 5.2299],
}
# ComfyUI's V_PREDICTION_EDM (``ModelSamplingContinuousEDM`` defaults: sigmas 0.002..120,
# sigma_data 1.0); CosXL files carry their own ``edm_vpred.sigma_max``/``sigma_min`` scalars.
EDM_VPRED_SAMPLING: dict[str, Any] = {
    "noise_schedule": "edm",
    "prediction_type": "v_prediction",
    "sigma_min": 0.002,
    "sigma_max": 120.0,
    "sigma_data": 1.0,
}
# Families whose checkpoints ComfyUI saves with sampling markers (v_pred, ztsnr, edm_vpred.*).
MARKER_FAMILIES = ("sd1", "sd2", "sdxl")


@dataclass(frozen=True)
class SamplingFound:
    """How a model is to be sampled when that is not its family's default (``settings`` empty
    then): ``noise_schedule`` ``edm`` with ``sigma_min``/``sigma_max``/``sigma_data``, a
    ``prediction_type``, ``zero_terminal_snr``, the latent format (``scaling_factor``,
    ``latents_mean``, ``latents_std``), and ``source`` (what said so)."""

    settings: dict[str, Any]
    variant: str | None = None  # playground-v2.5 / cosxl, when the markers name the model
    notes: tuple[str, ...] = ()  # warnings (a marker value that cannot be used)


def model_sampling(path: Path, family: str) -> SamplingFound:
    """How ``path`` is sampled, from its marker tensors (as ComfyUI reads them:
    ``edm_mean``/``edm_std`` = Playground v2.5; ``edm_vpred.sigma_max``/``sigma_min`` = EDM
    v-prediction, CosXL; ``v_pred`` (+ ``ztsnr``) = v-prediction (with zero terminal SNR)) or a
    diffusers folder's scheduler config. Headers only, plus the two ``edm_vpred`` scalars of a
    safetensors file (a few bytes). A file that cannot be read says nothing (the loader reports
    it)."""
    from modelsafe.errors import ModelsafeError

    if path.is_dir():
        return _folder_sampling(path)
    if family not in MARKER_FAMILIES:
        return SamplingFound({})
    from modelsafe.registry.detect.probe import edm_vpred_markers

    try:
        names = set(tensor_shapes(path))
    except (ModelsafeError, OSError):
        return SamplingFound({})

    def marker(name: str) -> str | None:
        return next((n for n in sorted(names) if n == name or n.endswith("." + name)), None)

    if family == "sdxl" and (marker("edm_mean") or marker("edm_std")):
        found = [n for n in (marker("edm_mean"), marker("edm_std")) if n]
        source = f"{' and '.join(found)} tensor{'s' if len(found) > 1 else ''}"
        settings = {**PLAYGROUND_V25_SAMPLING, "source": source}
        return SamplingFound(settings, "playground-v2.5")
    edm_v = edm_vpred_markers(frozenset(names))
    if edm_v:
        return _edm_vpred_sampling(path, family, edm_v)
    v_pred = marker("v_pred")
    if v_pred:
        settings = {"prediction_type": "v_prediction", "source": f"{v_pred} tensor"}
        ztsnr = marker("ztsnr")
        if ztsnr:
            settings["zero_terminal_snr"] = True
            settings["source"] = f"{v_pred} and {ztsnr} tensors"
        return SamplingFound(settings)
    return SamplingFound({})


def _edm_vpred_sampling(path: Path, family: str, markers: list[str]) -> SamplingFound:
    """EDM v-prediction with the file's own sigma range; ComfyUI's defaults, and a note,
    when the marker values cannot be read or are no range (NaN, <= 0, min >= max)."""
    settings = dict(EDM_VPRED_SAMPLING)
    values = _scalar_values(path, markers)
    high = next((v for n, v in values.items() if n.endswith("sigma_max")), None)
    low = next((v for n, v in values.items() if n.endswith("sigma_min")), None)
    floor = settings["sigma_min"] if low is None else low
    notes: list[str] = []
    if high is not None and math.isfinite(high) and math.isfinite(floor) and 0 < floor < high:
        settings["sigma_max"], settings["sigma_min"] = high, floor
    else:
        shown = ", ".join(f"{n} = {v:g}" for n, v in values.items()) or "values not readable"
        notes.append(
            f"{path.name}: its EDM v-prediction markers ({shown}) give no usable sigma range; "
            f"sampling with ComfyUI's defaults, sigma_min {settings['sigma_min']:g} and "
            f"sigma_max {settings['sigma_max']:g}"
        )
    settings["source"] = f"{' and '.join(markers)} tensor{'s' if len(markers) > 1 else ''}"
    return SamplingFound(settings, "cosxl" if family == "sdxl" else None, tuple(notes))


def _folder_sampling(path: Path) -> SamplingFound:
    """A diffusers folder's own EDM scheduler (Playground's EDMDPMSolverMultistepScheduler,
    with its VAE's latent format) or zero-terminal-SNR setting."""
    file = path / "scheduler" / "scheduler_config.json"
    try:
        config = dict(json.loads(file.read_text(encoding="utf-8"))) if file.is_file() else {}
    except (OSError, ValueError):
        return SamplingFound({})
    source = "scheduler/scheduler_config.json"
    if str(config.get("_class_name", "")).startswith("EDM"):
        settings: dict[str, Any] = {"noise_schedule": "edm", "source": source}
        for key, default in (("sigma_min", 0.002), ("sigma_max", 80.0), ("sigma_data", 0.5)):
            value = config.get(key, default)
            number = isinstance(value, int | float) and not isinstance(value, bool)
            settings[key] = float(value) if number and math.isfinite(value) else default
        settings["prediction_type"] = str(config.get("prediction_type") or "epsilon")
        settings.update(_folder_latent_format(path))
        # An EDM SDXL folder with per-channel latent statistics: Playground v2.5's layout.
        playground = "latents_mean" in settings and _folder_class(path) == "sdxl"
        return SamplingFound(settings, "playground-v2.5" if playground else None)
    if config.get("rescale_betas_zero_snr") is True:
        return SamplingFound({"zero_terminal_snr": True, "source": source})
    return SamplingFound({})


def _folder_class(path: Path) -> str | None:
    """The family a folder's model_index.json pipeline class names (None when unreadable)."""
    try:
        index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return (
        _PIPELINE_FAMILIES.get(str(index.get("_class_name", "")))
        if isinstance(index, dict)
        else None
    )


def _folder_latent_format(path: Path) -> dict[str, Any]:
    """``scaling_factor``/``latents_mean``/``latents_std`` of a folder's VAE config, when it
    has per-channel latent statistics (kept for a ``--vae`` given in its place)."""
    file = path / "vae" / "config.json"
    try:
        config = dict(json.loads(file.read_text(encoding="utf-8"))) if file.is_file() else {}
    except (OSError, ValueError):
        return {}
    mean, std = config.get("latents_mean"), config.get("latents_std")
    if not (isinstance(mean, list) and isinstance(std, list) and len(mean) == len(std)):
        return {}
    found: dict[str, Any] = {"latents_mean": mean, "latents_std": std}
    if isinstance(config.get("scaling_factor"), int | float):
        found["scaling_factor"] = float(config["scaling_factor"])
    return found


def _scalar_values(path: Path, names: list[str]) -> dict[str, float]:
    """The values of one-element tensors ``names`` of a safetensors file (empty otherwise)."""
    header = _safetensors_header(path)
    if header is None:
        return {}
    out: dict[str, float] = {}
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            for name in names:
                info = header.get(name)
                if isinstance(info, dict) and _elements(info.get("shape")) == 1:
                    out[name] = _shortest(fh.get_tensor(name))
    except Exception:  # noqa: BLE001 - unreadable markers: the caller falls back to defaults
        return out
    return out


def _shortest(tensor: Any) -> float:
    """A one-element tensor's value, written as short as its dtype allows (a float32 0.002 is
    0.002, not 0.0020000000949949026: the same float32, as the recipe shows it)."""
    import torch

    value = float(tensor.double().item())
    if tensor.dtype == torch.float64 or not math.isfinite(value):
        return value
    import numpy as np

    return float(str(np.float32(value)))


def _elements(shape: Any) -> int | None:
    """How many elements a header's ``shape`` holds (None when it is no list of ints)."""
    if not isinstance(shape, list) or not all(isinstance(d, int) for d in shape):
        return None
    return math.prod(shape)


# (input key, output key) pairs of denoisers whose input and output channels can be compared
# directly: LDM/SGM and diffusers UNets (4D convs), BFL and diffusers Flux (linear layers).
_CHANNEL_KEYS = (
    ("input_blocks.0.0.weight", "out.2.weight"),
    ("conv_in.weight", "conv_out.weight"),
    ("img_in.weight", "final_layer.linear.weight"),
    ("x_embedder.weight", "proj_out.weight"),
)
_DENOISER_PREFIXES = ("model.diffusion_model.", "")


def denoiser_channels(path: Path) -> tuple[int, int] | None:
    """(input, output) channels of the denoiser in a single file or diffusers folder, from its
    header or ``unet``/``transformer`` config; None when they cannot be told. A text-to-image
    denoiser takes what it gives out (the latent, 4 or 16 channels; Flux 64 patched);
    inpainting, image-edit and control models take more (the mask, the image, a depth map)."""
    if path.is_dir():
        for component in ("unet", "transformer"):
            file = path / component / "config.json"
            if not file.is_file():
                continue
            try:
                config = dict(json.loads(file.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                return None
            cin, cout = config.get("in_channels"), config.get("out_channels")
            cout = cin if cout is None else cout
            if isinstance(cin, int) and isinstance(cout, int):
                return cin, cout
        return None
    from modelsafe.errors import ModelsafeError

    try:
        shapes = tensor_shapes(path)
    except (ModelsafeError, OSError):
        return None
    for prefix in _DENOISER_PREFIXES:
        for key_in, key_out in _CHANNEL_KEYS:
            shape_in, shape_out = shapes.get(prefix + key_in), shapes.get(prefix + key_out)
            if shape_in is None or shape_out is None or len(shape_in) < 2 or not shape_out:
                continue
            if len(shape_in) != len(shape_out):
                continue
            return int(shape_in[1]), int(shape_out[0])
    return None


# -- tokenizers ------------------------------------------------------------------------------


def load_tokenizer(family: str, component: str, cls_name: str, sources: list[Path]) -> Any:
    """The tokenizer ``component`` from the first source that has it (then the HF cache)."""
    import transformers

    cls = getattr(transformers, cls_name, None) or transformers.AutoTokenizer
    tried: list[str] = []
    for source in sources:
        # A bare tokenizer folder serves as the first (CLIP) tokenizer.
        for folder in (
            (source / component, source) if component == "tokenizer" else (source / component,)
        ):
            if _has_tokenizer_files(folder):
                return cls.from_pretrained(str(folder), local_files_only=True)
            tried.append(str(folder))
    repos = TOKENIZER_REPOS.get(family, {}).get(component, ())
    for repo, subfolder in repos:
        snapshot = _cached_snapshot(repo)
        if snapshot is not None and _has_tokenizer_files(snapshot / subfolder):
            return cls.from_pretrained(str(snapshot / subfolder), local_files_only=True)
        tried.append(f"HF cache {repo}/{subfolder}".rstrip("/"))
    first = repos[0] if repos else ("<the model's diffusers repo>", component)
    raise BackendError(
        f"no {component} for {family} ({cls_name}) on this machine; looked in: " + ", ".join(tried),
        hint=f"pass --tokenizers DIR (DIR/{component}/ holding vocab.json + merges.txt or "
        f"tokenizer.json), or fetch it once: hf download {first[0]} "
        f"--include '{first[1] + '/' if first[1] else ''}*'",
    )


def _has_tokenizer_files(folder: Path) -> bool:
    return folder.is_dir() and any(
        (folder / name).is_file()
        for name in ("vocab.json", "tokenizer.json", "spiece.model", "tokenizer_config.json")
    )


def _cached_snapshot(repo: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (or no cache at all)
        return None


# -- components from separate files --------------------------------------------------------------


def load_transformers_model(cls_name: str, config: dict[str, Any], path: Path, dtype: Any) -> Any:
    """A text encoder from a folder (``from_pretrained``) or an HF-format single file."""
    import torch
    import transformers

    cls = getattr(transformers, cls_name)
    if path.is_dir():
        return cls.from_pretrained(str(path), local_files_only=True, torch_dtype=dtype)
    state = load_state_dict(path)
    state = _strip_prefixes(state, ("text_model.", "encoder.", "shared.", "text_projection."))
    config_cls = cls.config_class
    cfg = config_cls.from_dict({k: v for k, v in config.items() if k != "architectures"})
    with torch.device("meta"):
        model = cls(cfg)
    state = _fit_keys(state, set(model.state_dict()))
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    real_missing = [
        k for k in missing if not k.endswith("position_ids") and k != "encoder.embed_tokens.weight"
    ]
    if real_missing:
        raise BackendError(
            f"{path.name} is not a {cls_name} for this model: {len(real_missing)} tensors "
            f"missing (e.g. {real_missing[0]})",
            hint="pass the text encoder that belongs to this family",
        )
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    for name, buffer in list(model.named_buffers()):
        if buffer.is_meta:
            _materialize_buffer(model, name, cfg)
    return model.to(dtype).eval()


def _strip_prefixes(state: dict[str, Any], roots: tuple[str, ...]) -> dict[str, Any]:
    """Drop a wrapper prefix (e.g. ``text_encoders.clip_l.transformer.``) before the HF names."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        for root in roots:
            at = key.find(root)
            if at > 0 and key[at - 1] == ".":
                key = key[at:]
                break
        out[key] = value
    return out


def _fit_keys(state: dict[str, Any], expected: set[str]) -> dict[str, Any]:
    """Add or drop a ``text_model.`` level so the file's names match the model's (transformers
    5.6 flattened CLIPTextModel; files keep the original names)."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        for candidate in (key, "text_model." + key, key.removeprefix("text_model.")):
            if candidate in expected:
                key = candidate
                break
        out[key] = value
    return out


def _materialize_buffer(model: Any, name: str, cfg: Any) -> None:
    import torch

    module_name, _, attr = name.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    if attr == "position_ids":
        size = int(getattr(cfg, "max_position_embeddings", 77))
        module.register_buffer(attr, torch.arange(size).expand((1, -1)), persistent=False)
    else:
        old = getattr(module, attr)
        module.register_buffer(attr, torch.zeros(old.shape, dtype=old.dtype), persistent=False)


def load_vae(path: Path, family: str, variant: str | None, config_root: Path, dtype: Any) -> Any:
    from diffusers import AutoencoderKL

    if path.is_dir():
        return AutoencoderKL.from_pretrained(str(path), local_files_only=True, torch_dtype=dtype)
    with named_by_content(path) as named:
        return AutoencoderKL.from_single_file(
            str(named),
            config=str(config_root),
            subfolder="vae",
            local_files_only=True,
            torch_dtype=dtype,
        )


# -- checks before loading (headers and configs only) ----------------------------------------------


def component_config(
    family: str, variant: str | None, config_dir: Path | None, model: Path, component: str
) -> dict[str, Any] | None:
    """The config ``component`` of the model will load with: a pipeline folder's own, else the
    family's (``config_dir`` first, then the shipped ones)."""
    if model.is_dir():
        for name in ("config.json", "scheduler_config.json"):
            file = model / component / name
            if file.is_file():
                try:
                    return dict(json.loads(file.read_text(encoding="utf-8")))
                except (OSError, ValueError):
                    return None
    return read_config(family, variant, component, config_dir)


def _inspect(path: Path) -> Any | None:
    """The registry's report on ``path`` (headers only), or None when it cannot read it."""
    from modelsafe.errors import ModelsafeError
    from modelsafe.registry.inspect import inspect_path

    try:
        return inspect_path(path)
    except ModelsafeError:
        return None


# What a file given as a model part must not be (the detectors' kinds).
_NOT_A_PART = NOT_PART_KINDS


def check_vae(
    path: Path, family: str, variant: str | None, config_dir: Path | None, model: Path
) -> None:
    """Refuse a ``--vae`` that is not a VAE, or whose latent channels are not the model's
    (``this VAE has 16 latent channels; sd1 needs 4``), or that is a 3-D video VAE (Qwen-Image's,
    Wan's: same channel count as Flux's, another latent space), before anything loads."""
    from modelsafe.runtime.family_needs import NEEDS, label

    report = _inspect(path)
    if report is None:
        return  # the loader reports what it cannot read
    kind = str(report.kind)
    if kind in _NOT_A_PART or kind == "text_encoder":
        raise BackendError(
            f"--vae {path.name} is {a_kind(kind)}, not a VAE",
            hint="pass the VAE file of this model family (`modelsafe inspect FILE` says "
            "what a file is)",
        )
    facts = dict(report.facts or {})
    from modelsafe.runtime.resolve import NOT_LOADABLE_VARIANTS

    unloadable = NOT_LOADABLE_VARIANTS.get(("vae", str(report.variant or "")))
    if unloadable:  # (A1111's VAE approximation: the variant resolve refuses too)
        raise BackendError(
            f"--vae {path.name} is {unloadable}",
            hint="pass the VAE made for this model family (or leave --vae out to use the "
            "model's own)",
        )
    if facts.get("conv3d") and kind in ("vae", "unknown"):  # (the image families' are 2-D)
        raise BackendError(
            f"--vae {path.name} is a 3-D (video) VAE ({label(str(report.family))}'s: 5-D conv "
            f"weights, another class of VAE and another latent space); {family} decodes with a "
            "2-D image VAE",
            hint=f"pass the VAE made for {family} models (or leave --vae out to use the "
            "model's own)",
        )
    have = facts.get("vae_latent_channels") if kind == "checkpoint" else None
    have = have or (facts.get("latent_channels") if kind in ("vae", "unknown") else None)
    config = component_config(family, variant, config_dir, model, "vae") or {}
    want = config.get("latent_channels") or (
        NEEDS[family].latent_channels if family in NEEDS else None
    )
    if isinstance(have, int) and isinstance(want, int) and have != want:
        raise BackendError(
            f"the VAE {path.name} has {have} latent channel{'' if have == 1 else 's'}; "
            f"{family} needs {want}",
            hint=f"pass the VAE made for {family} models (or leave --vae out to use the "
            "model's own)",
        )


def check_text_encoders(
    files: Mapping[str, Path], family: str, variant: str | None, config_dir: Path | None
) -> None:
    """Refuse ``--text-encoder NAME=PATH`` with a NAME the family has no slot for, or a PATH
    that is some other kind of model (a VAE, a LoRA...)."""
    index = read_config(family, variant, "model_index", config_dir) or {}
    slots = sorted(n for n in index if n.startswith("text_encoder"))
    for name, path in files.items():
        if slots and name not in slots:
            raise BackendError(
                f"--text-encoder {name}=...: {family} models have no {name}",
                hint=f"{family} text encoder names: {', '.join(slots)}",
            )
        report = _inspect(path)
        kind = str(report.kind) if report is not None else "unknown"
        if kind in _NOT_A_PART or kind == "vae":
            raise BackendError(
                f"--text-encoder {name}={path.name} is {a_kind(kind)}, not a text encoder",
                hint=f"pass {COMPONENT_HINTS.get(name, 'the text encoder of this family')}",
            )


# -- pipelines -------------------------------------------------------------------------------


def torch_dtype(name: str) -> Any:
    import torch

    if name not in DTYPES:
        raise BackendError(f"unknown dtype {name!r}", hint=f"one of {', '.join(DTYPES)}")
    return getattr(torch, DTYPES[name])


def load_pipeline(req: LoadRequest, components: Mapping[str, Any] | None = None) -> Any:
    """The diffusers pipeline for ``req``, loaded from local files only; ``components`` are
    ready objects to use instead of loading those parts (e.g. a refiner sharing the VAE)."""
    import diffusers

    dtype = torch_dtype(req.dtype)
    index = model_index(req.family, req.variant, req.config_dir)
    load_errors = _load_errors()
    with config_folder(req.family, req.variant, req.config_dir) as config_root, _quiet():
        # quiet: the first use of a pipeline class imports transformers' image processors,
        # which log a torchvision notice that has nothing to do with this run
        pipeline_cls = getattr(diffusers, str(index["_class_name"]))
        try:
            given = _given_components(req, index, config_root, dtype, dict(components or {}))
            if req.kind == "pipeline":
                variant = folder_variant(req.path)
                pipe = pipeline_cls.from_pretrained(
                    str(req.path),
                    local_files_only=True,
                    torch_dtype=dtype,
                    **({"variant": variant} if variant else {}),
                    **given,
                )
            else:
                with named_by_content(req.path) as named:
                    pipe = pipeline_cls.from_single_file(
                        str(named),
                        config=str(config_root),
                        local_files_only=True,
                        torch_dtype=dtype,
                        **given,
                    )
        except BackendError:
            raise
        except load_errors as exc:
            raise BackendError(
                f"diffusers could not load {req.path.name} as {req.family}: {error_line(exc)}",
                hint="check --family, and that --vae / --text-encoder files belong to this "
                "family (`modelsafe inspect FILE`)",
            ) from exc
    return pipe


WEIGHT_SUFFIXES = (".safetensors", ".bin")


def folder_variant(path: Path) -> str | None:
    """The weights variant (``fp16``, ``bf16``...) to ask diffusers for when some component of
    the diffusers folder ``path`` holds only variant files (``model.fp16.safetensors``);
    ``None`` when every component has plain weight files. fp16 is preferred when several are."""
    wanted: set[str] = set()
    for component in sorted(p for p in path.iterdir() if p.is_dir()):
        plain, variants = False, set()
        for file in component.iterdir():
            if not file.name.endswith(WEIGHT_SUFFIXES):
                continue
            parts = file.name.split(".")
            if len(parts) == 2:
                plain = True
            elif len(parts) == 3:
                variants.add(parts[1])
        if not plain and variants:
            wanted |= variants
    if not wanted:
        return None
    return "fp16" if "fp16" in wanted else sorted(wanted)[0]


def _load_errors() -> tuple[type[BaseException], ...]:
    """What diffusers/transformers raise for files that do not fit (shapes, keys, configs)."""
    errors: list[type[BaseException]] = [
        OSError,
        ValueError,
        KeyError,
        RuntimeError,
        IndexError,
        TypeError,
    ]
    try:
        from diffusers.loaders.single_file_utils import SingleFileComponentError

        errors.append(SingleFileComponentError)
    except ImportError:  # pragma: no cover - older diffusers
        pass
    return tuple(errors)


def first_line(text: str, limit: int = 300) -> str:
    """The first line of a library's message, at most ``limit`` characters (diffusers can print
    whole key lists)."""
    lines = text.strip().splitlines()
    line = lines[0] if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def error_line(exc: BaseException) -> str:
    """An exception's first line, shortened; its type's name when it says nothing."""
    return first_line(str(exc)) or type(exc).__name__


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No diffusers/transformers loading bars or deprecation chatter (modelsafe shows its own)."""
    import warnings

    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    levels = dlog.get_verbosity(), tlog.get_verbosity()
    dlog.set_verbosity_error()
    tlog.set_verbosity_error()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        try:
            yield
        finally:
            dlog.enable_progress_bar()
            tlog.enable_progress_bar()
            dlog.set_verbosity(levels[0])
            tlog.set_verbosity(levels[1])


@dataclass(frozen=True)
class LibraryMessage:
    """A warning or error diffusers, transformers or peft logged (or warned) inside
    :func:`captured_messages`."""

    source: str  # the library (diffusers, transformers, peft, ...)
    level: str  # WARNING, ERROR, ... (a Python warning: its category, e.g. UserWarning)
    text: str


CAPTURED_LOGGERS = ("diffusers", "transformers", "peft")


# One capture at a time: the loggers and warnings.showwarning it swaps are process-wide.
_CAPTURE_LOCK = threading.RLock()


@contextlib.contextmanager
def captured_messages() -> Iterator[list[LibraryMessage]]:
    """Collect what diffusers, transformers and peft log at WARNING and above, and the Python
    warnings shown, inside the block, instead of printing them; their progress bars are off.

    The caller turns the meaningful ones into modelsafe's own warning lines (see the diffusers
    backend's LoRA loading). Only this thread's messages are taken: another thread's go where
    they would have gone. Every logger, level and ``warnings.showwarning`` is restored after
    the block; nothing is silenced outside it, and inside it nothing is lost: each message is
    in the list."""
    import logging
    import warnings

    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    found: list[LibraryMessage] = []
    owner = threading.get_ident()
    saved: dict[str, tuple[logging.Logger, list[logging.Handler], bool, int, int]] = {}

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            root = record.name.split(".")[0]
            if record.thread != owner:  # not ours: as if no capture were on
                logger, handlers, _propagate, _level, effective = saved[root]
                if record.levelno >= effective:
                    for handler in handlers:
                        handler.handle(record)
                return
            try:
                text = record.getMessage()
            except Exception:  # noqa: BLE001 - a malformed record still counts
                text = str(record.msg)
            found.append(LibraryMessage(root, record.levelname, text))

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        if threading.get_ident() != owner:
            shown(message, category, filename, lineno, file, line)
            return
        source = "python"
        for library in (*CAPTURED_LOGGERS, "torch", "accelerate"):
            if f"{os.sep}{library}{os.sep}" in filename:
                source = library
                break
        found.append(LibraryMessage(source, category.__name__, str(message)))

    with _CAPTURE_LOCK:
        capture = Capture(logging.WARNING)
        for name in CAPTURED_LOGGERS:
            logger = logging.getLogger(name)
            effective = logger.getEffectiveLevel()
            saved[name] = (logger, list(logger.handlers), logger.propagate, logger.level, effective)
            logger.handlers = [capture]
            logger.propagate = False
            if effective > logging.WARNING:
                logger.setLevel(logging.WARNING)
        bars = dlog.is_progress_bar_enabled(), tlog.is_progress_bar_enabled()
        dlog.disable_progress_bar()
        tlog.disable_progress_bar()
        shown = warnings.showwarning
        warnings.showwarning = show
        try:
            yield found
        finally:
            warnings.showwarning = shown
            for logger, handlers, propagate, level, _effective in saved.values():
                logger.handlers = handlers
                logger.propagate = propagate
                logger.setLevel(level)
            if bars[0]:
                dlog.enable_progress_bar()
            if bars[1]:
                tlog.enable_progress_bar()


def _given_components(
    req: LoadRequest,
    index: dict[str, Any],
    config_root: Path,
    dtype: Any,
    given: dict[str, Any],
) -> dict[str, Any]:
    """Components loaded here (tokenizers, separate files) and passed to diffusers as objects."""
    components = {
        name: spec
        for name, spec in index.items()
        if not name.startswith("_")
        and isinstance(spec, list)
        and spec[0] is not None
        and name not in given
    }
    if req.kind == "pipeline":
        for name in ("safety_checker", "feature_extractor"):
            if name in index:
                given[name] = None
        for name in OPTIONAL_COMPONENTS.get(req.family, ()):  # SD3's T5, not downloaded
            folder = req.path / name
            if name in components and (not folder.is_dir() or not any(folder.iterdir())):
                given[name] = None
                given["tokenizer" + name[len("text_encoder") :]] = None
    sources = [p for p in (req.tokenizers, _env_tokenizers()) if p is not None]
    if req.kind == "pipeline":
        sources.append(req.path)
    names = set() if req.kind == "pipeline" else set(tensor_shapes(req.path))
    prefixes = CHECKPOINT_PREFIXES.get(req.family, {})
    optional = OPTIONAL_COMPONENTS.get(req.family, ())
    text_files = dict(req.text_encoders or {})
    for name, (_library, cls_name) in components.items():
        if name.startswith("tokenizer"):
            continue
        if name == "vae" and req.vae is not None:
            given["vae"] = load_vae(req.vae, req.family, req.variant, config_root, dtype)
        elif name in text_files:
            config = read_config(req.family, req.variant, name, req.config_dir) or {}
            given[name] = load_transformers_model(cls_name, config, text_files[name], dtype)
        elif req.kind != "pipeline" and name in prefixes:
            inside = any(n.startswith(prefixes[name]) for n in names)
            bare_denoiser = name in ("unet", "transformer") and req.kind in ("unet", "transformer")
            if not inside and not bare_denoiser:
                if name in optional:
                    given[name] = None
                    given["tokenizer" + name[len("text_encoder") :]] = None
                    continue
                raise BackendError(
                    f"{req.path.name} has no {name} ({cls_name}) and none was given",
                    hint=f"get {COMPONENT_HINTS.get(name, 'that component')} and pass it with "
                    + ("--vae PATH" if name == "vae" else f"--text-encoder {name}=PATH"),
                )
    for name, (_library, cls_name) in components.items():
        if name.startswith("tokenizer") and name not in given:
            if req.kind == "pipeline" and _has_tokenizer_files(req.path / name):
                continue
            given[name] = load_tokenizer(req.family, name, cls_name, sources)
    return given


def _env_tokenizers() -> Path | None:
    value = os.environ.get(TOKENIZERS_ENV)
    return Path(value) if value else None
