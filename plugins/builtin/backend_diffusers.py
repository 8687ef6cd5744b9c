"""Built-in generation backend: diffusers, from local files only.

Loads the pipeline (``modelsafe.runtime.diffusers_loader``), applies the request (scheduler,
prediction type, the model's own sampling: EDM noise schedule, zero terminal SNR, latent format;
LoRAs with weights, textual-inversion embeddings, ControlNet, SDXL refiner) and the plan (device,
dtype, offload, VAE tiling, attention slicing), then runs it once per image with that image's
seeded generator. torch and diffusers are imported only when a generation runs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelsafe.errors import BackendError
from modelsafe.plugins.hookspecs import hookimpl
from modelsafe.runtime.diffusers_loader import error_line, first_line

if TYPE_CHECKING:
    from modelsafe.runtime.backends import Progress
    from modelsafe.runtime.generate import GenerateRequest

# scheduler id -> (diffusers class, extra config)
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": False}),
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "flow_euler": ("FlowMatchEulerDiscreteScheduler", {}),
}
FLOW_FAMILIES = ("sd3", "sd3.5", "flux1")
FLOW_SCHEDULERS = ("flow_euler",)
# Models trained with the EDM noise schedule (Playground v2.5, CosXL; ``request.sampling``
# ``noise_schedule`` ``edm``) run on diffusers' EDM schedulers: scheduler id -> (EDM class, sigma
# schedule). The plain ids space the sigmas log-linearly (``exponential``: what ComfyUI's
# "normal" schedule gives an EDM model), ``_karras`` with Karras' rho 7 spacing. diffusers has
# no EDM version of the others: they are refused for these models, before anything loads.
EDM_SCHEDULERS: dict[str, tuple[str, str]] = {
    "euler": ("EDMEulerScheduler", "exponential"),
    "dpmpp_2m": ("EDMDPMSolverMultistepScheduler", "exponential"),
    "dpmpp_2m_karras": ("EDMDPMSolverMultistepScheduler", "karras"),
}
# The schedulers diffusers can run with zero terminal SNR (``rescale_betas_zero_snr``; a
# ``ztsnr`` marker): Heun, LMS and PNDM cannot, and are refused for those models.
ZERO_SNR_SCHEDULERS = ("euler", "euler_a", "ddim", "unipc", "dpmpp_2m", "dpmpp_2m_karras")
# Model variants whose sampling differs from their family's, as the refusals name them.
SAMPLING_VARIANTS = {"playground-v2.5": "Playground v2.5", "cosxl": "CosXL"}

# family -> (ControlNet model class, ControlNet pipeline class)
CONTROLNET_CLASSES = {
    "sd1": ("ControlNetModel", "StableDiffusionControlNetPipeline"),
    "sd2": ("ControlNetModel", "StableDiffusionControlNetPipeline"),
    "sdxl": ("ControlNetModel", "StableDiffusionXLControlNetPipeline"),
    "sd3": ("SD3ControlNetModel", "StableDiffusion3ControlNetPipeline"),
    "sd3.5": ("SD3ControlNetModel", "StableDiffusion3ControlNetPipeline"),
    "flux1": ("FluxControlNetModel", "FluxControlNetPipeline"),
}


class DiffusersBackend:
    """The ``diffusers`` backend (see the module docstring)."""

    name = "diffusers"

    def check(self, request: GenerateRequest) -> None:
        """What can be told from headers and configs, before any load (see check_request)."""
        check_request(request)

    def generate(self, request: GenerateRequest, progress: Progress | None = None) -> list[Any]:
        from modelsafe.runtime.generate import audited_load

        with audited_load(request.input_files()):  # (remembered: free after generate())
            pipe, refiner = build_pipelines(request)
        return run(pipe, refiner, request, progress)


def build_pipelines(request: GenerateRequest) -> tuple[Any, Any | None]:
    """The ready-to-run pipeline (and SDXL refiner) for ``request``, with the plan applied."""
    from modelsafe.runtime.diffusers_loader import LoadRequest, load_pipeline

    assert request.family is not None
    pipe = load_pipeline(
        LoadRequest(
            family=request.family,
            path=request.checkpoint,
            kind=request.kind or "checkpoint",
            variant=request.variant,
            vae=request.vae,
            text_encoders=request.text_encoders,
            tokenizers=request.tokenizers,
            config_dir=request.config_dir,
            dtype=request.dtype,
        )
    )
    pipe.set_progress_bar_config(disable=True)
    set_scheduler(pipe, request)
    apply_latent_format(pipe, request)
    apply_loras(pipe, request)
    apply_embeddings(pipe, request)
    if request.controlnet is not None:
        pipe = attach_controlnet(pipe, request)
        pipe.set_progress_bar_config(disable=True)  # from_pipe makes a new pipeline
    refiner = load_refiner(pipe, request) if request.refiner is not None else None
    apply_plan(pipe, request)
    if refiner is not None:
        refiner.set_progress_bar_config(disable=True)
        set_scheduler(refiner, request, refiner=True)
        apply_plan(refiner, request)
    from modelsafe.runtime.generate import record_sampling

    record_sampling(sampling_record(pipe, request))
    return pipe, refiner


# -- checks before loading -----------------------------------------------------------------------

# Key fragments of the LyCORIS kinds diffusers cannot apply (it reads LoRA/LoCon/DoRA only).
LYCORIS_KEYS = {"lokr_": "LoKr", "hada_": "LoHa", "oft_": "OFT", ".oft_blocks": "OFT"}


def check_request(request: GenerateRequest) -> None:
    """Refuse, before anything loads, inputs that cannot fit the model: a scheduler its sampling
    cannot use, a VAE of other latent channels or no VAE at all, text encoders under unknown
    names or of the wrong kind, LyCORIS files diffusers cannot apply, a ControlNet made for
    another family."""
    from modelsafe.runtime.diffusers_loader import check_text_encoders, check_vae

    assert request.family is not None
    check_custom_code(request.checkpoint)
    check_sampling(request)
    if request.vae is not None:
        check_vae(
            request.vae, request.family, request.variant, request.config_dir, request.checkpoint
        )
    if request.text_encoders:
        check_text_encoders(
            request.text_encoders, request.family, request.variant, request.config_dir
        )
    for lora in request.loras:
        check_lora_kind(lora.path)
    if request.controlnet is not None:
        check_controlnet(request)


def check_custom_code(path: Path) -> None:
    """Refuse a diffusers folder whose model_index.json names classes of code it ships: only
    ``trust_remote_code`` loads them, and modelsafe never runs a model's code."""
    from modelsafe.errors import UsageError
    from modelsafe.registry.audit import custom_classes

    classes = custom_classes(path) if path.is_dir() else []
    if classes:
        raise UsageError(
            f"{path} needs code shipped in the folder ({'; '.join(classes[:3])}), which "
            "modelsafe never runs",
            hint="use the model as a single-file checkpoint, or a folder of diffusers' own "
            "classes (`modelsafe audit` lists the code files)",
        )


def check_lora_kind(path: Path) -> None:
    """Refuse a LyCORIS LoKr / LoHa / OFT file with a short reason (diffusers applies LoRA,
    LoCon and DoRA files, kohya, PEFT or diffusers named)."""
    from modelsafe.errors import ModelsafeError
    from modelsafe.runtime.diffusers_loader import tensor_shapes

    try:
        names = tensor_shapes(path)
    except ModelsafeError:
        return  # the load reports what it cannot read
    for fragment, kind in LYCORIS_KEYS.items():
        if any(fragment in name for name in names):
            raise BackendError(
                f"{path.name} is a LyCORIS {kind} file ({fragment.strip('.')}* keys); "
                "diffusers cannot apply it",
                hint="generate applies LoRA files (kohya, PEFT/diffusers, LyCORIS LoCon "
                "and DoRA); use a LoRA version of it, or a UI that reads LyCORIS (ComfyUI, Forge)",
            )


def check_controlnet(request: GenerateRequest) -> None:
    """The ControlNet's cross-attention width and extra conditioning are the model's."""
    import json

    from modelsafe.runtime.diffusers_loader import _CONTEXT_WIDTHS, _inspect, component_config

    assert request.controlnet is not None and request.family is not None
    path = request.controlnet.path
    if request.family not in CONTROLNET_CLASSES:
        raise BackendError(f"no ControlNet pipeline for {request.family}")
    unet = component_config(
        request.family, request.variant, request.config_dir, request.checkpoint, "unet"
    )
    if unet is None:  # a transformer family: diffusers checks its ControlNet when loading
        return
    config: dict[str, Any] = {}
    if path.is_dir() and (path / "config.json").is_file():
        try:
            config = dict(json.loads((path / "config.json").read_text(encoding="utf-8")))
        except (OSError, ValueError):
            config = {}
    width = config.get("cross_attention_dim")
    if width is None and path.is_file():
        report = _inspect(path)
        width = (report.facts or {}).get("context_dim") if report is not None else None
    want = unet.get("cross_attention_dim")
    extra, want_extra = config.get("addition_embed_type"), unet.get("addition_embed_type")
    if isinstance(width, int) and isinstance(want, int) and width != want:
        made_for = _CONTEXT_WIDTHS.get(width)
        raise BackendError(
            f"the ControlNet {path.name} takes {width}-wide text conditioning"
            + (f" ({made_for})" if made_for else "")
            + f"; this {request.family} model gives {want}",
            hint=f"pass a ControlNet made for {request.family} models",
        )
    if config and extra != want_extra:
        raise BackendError(
            f"the ControlNet {path.name} is not made for {request.family} models "
            f"(extra conditioning {extra!r}, the model's {want_extra!r})",
            hint=f"pass a ControlNet made for {request.family} models",
        )


def check_sampling(request: GenerateRequest) -> None:
    """The ``--scheduler`` fits the model's sampling: a known id, flow_euler for flow models
    only, one with an EDM version for EDM models (Playground v2.5, CosXL), one that can run
    zero terminal SNR for ``ztsnr`` models; and no SDXL refiner after an EDM model."""
    name = request.scheduler or ""
    if name not in SCHEDULERS:
        raise BackendError(
            f"unknown scheduler {name!r}", hint=f"one of {', '.join(sorted(SCHEDULERS))}"
        )
    flow = request.family in FLOW_FAMILIES
    if flow != (name in FLOW_SCHEDULERS):
        kinds = ", ".join(FLOW_SCHEDULERS) if flow else "any but flow_euler"
        raise BackendError(
            f"scheduler {name!r} does not fit {request.family} models",
            hint=f"use {kinds}",
        )
    sampling = request.sampling
    model = _model_label(request)
    per = f"per its {sampling.get('source') or 'configs'}"
    if sampling.get("noise_schedule") == "edm":
        if name not in EDM_SCHEDULERS:
            raise BackendError(
                f"scheduler {name!r} cannot sample {model}, trained with the EDM noise schedule "
                f"(sigma {float(sampling['sigma_min']):g} to {float(sampling['sigma_max']):g}, "
                f"{per}): diffusers has EDM versions of Euler and DPM++ 2M only",
                hint="use --scheduler euler, dpmpp_2m or dpmpp_2m_karras (run as "
                "EDMEulerScheduler / EDMDPMSolverMultistepScheduler), or leave --scheduler out",
            )
        if request.refiner is not None:
            raise BackendError(
                f"the SDXL refiner cannot take over from {model}: the base is sampled with the "
                f"EDM noise schedule ({per}), the refiner with SDXL's discrete one, and the "
                "hand-off needs one timestep scale for both",
                hint="leave --refiner out",
            )
    if sampling.get("zero_terminal_snr") and name not in ZERO_SNR_SCHEDULERS:
        raise BackendError(
            f"scheduler {name!r} cannot sample {model} with zero terminal SNR ({per}): "
            f"diffusers' {SCHEDULERS[name][0]} has no rescale_betas_zero_snr",
            hint="use --scheduler " + ", ".join(ZERO_SNR_SCHEDULERS),
        )


def _model_label(request: GenerateRequest) -> str:
    """``this Playground v2.5 model``, ``this CosXL model``, ``this SDXL model``."""
    from modelsafe.runtime.family_needs import label

    named = SAMPLING_VARIANTS.get(request.variant or "")
    return f"this {named or label(request.family or '')} model"


def set_scheduler(pipe: Any, request: GenerateRequest, *, refiner: bool = False) -> None:
    """The request's scheduler on ``pipe``, run the way the model samples: its prediction type,
    its EDM noise schedule (an EDM scheduler, see EDM_SCHEDULERS) or zero terminal SNR
    (``rescale_betas_zero_snr`` with ``trailing`` timesteps), from ``request.sampling``.

    A ``refiner`` keeps its own prediction type and noise schedule: it takes the scheduler id
    only (the base model's markers are not its own)."""
    import diffusers

    check_sampling(request)
    name = request.scheduler or ""
    sampling: Mapping[str, Any] = {} if refiner else request.sampling
    prediction = None if refiner else request.prediction_type
    current = type(pipe.scheduler).__name__
    if sampling.get("noise_schedule") == "edm":
        cls_name, sigma_schedule = EDM_SCHEDULERS[name]
        cls = getattr(diffusers, cls_name)
        base = dict(pipe.scheduler.config) if current.startswith("EDM") else {}
        config = {
            **_accepted(cls, base),
            "sigma_min": float(sampling["sigma_min"]),
            "sigma_max": float(sampling["sigma_max"]),
            "sigma_data": float(sampling["sigma_data"]),
            "sigma_schedule": sigma_schedule,
            "prediction_type": prediction or sampling.get("prediction_type") or "epsilon",
        }
        pipe.scheduler = cls.from_config(config)
        return
    cls_name, extra = SCHEDULERS[name]
    cls = getattr(diffusers, cls_name)
    flow = request.family in FLOW_FAMILIES
    config = dict(pipe.scheduler.config)
    changed = bool(extra)
    if prediction and not flow:
        config["prediction_type"] = prediction
        changed = True
    if sampling.get("zero_terminal_snr"):
        config.update(rescale_betas_zero_snr=True, timestep_spacing="trailing")
        changed = True
    if current != cls_name or changed:
        pipe.scheduler = cls.from_config(config, **extra)


def _accepted(cls: Any, config: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of ``config`` that scheduler class ``cls`` takes (diffusers warns of others)."""
    import inspect

    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return dict(config)
    return {k: v for k, v in config.items() if k in params or k.startswith("_")}


def apply_latent_format(pipe: Any, request: GenerateRequest) -> None:
    """A model's own latent format (Playground v2.5: per-channel mean/std and scaling factor
    0.5) on the VAE, whichever VAE it is (``--vae`` too): diffusers' SDXL pipeline reads
    ``vae.config.latents_mean``/``latents_std``/``scaling_factor`` when it decodes."""
    sampling = request.sampling
    vae = getattr(pipe, "vae", None)
    if vae is None or "latents_mean" not in sampling or "latents_std" not in sampling:
        return
    mean, std = list(sampling["latents_mean"]), list(sampling["latents_std"])
    channels = vae.config.get("latent_channels")
    if isinstance(channels, int) and channels != len(mean):
        raise BackendError(
            f"the VAE has {channels} latent channels; {_model_label(request)} gives "
            f"{len(mean)} ({sampling.get('source') or 'its latent format'})",
            hint="pass the VAE made for this model (or leave --vae out)",
        )
    changes: dict[str, Any] = {"latents_mean": mean, "latents_std": std}
    if "scaling_factor" in sampling:
        changes["scaling_factor"] = float(sampling["scaling_factor"])
    vae.register_to_config(**changes)


def sampling_record(pipe: Any, request: GenerateRequest) -> dict[str, Any]:
    """How ``pipe`` samples, as its scheduler and VAE are set (what the recipe keeps as
    ``extra.sampling``): the scheduler class, noise schedule (``discrete``, ``edm``, ``flow``),
    prediction type, the EDM sigmas or the zero-terminal-SNR setting, a latent format with
    per-channel statistics, and what said so when it is not the family's default."""
    scheduler = pipe.scheduler
    config = scheduler.config
    cls_name = type(scheduler).__name__
    record: dict[str, Any] = {"scheduler": request.scheduler, "scheduler_class": cls_name}
    if cls_name.startswith("EDM"):
        record.update(
            noise_schedule="edm",
            prediction_type=config.get("prediction_type"),
            sigma_min=config.get("sigma_min"),
            sigma_max=config.get("sigma_max"),
            sigma_data=config.get("sigma_data"),
            sigma_schedule=config.get("sigma_schedule"),
        )
    elif cls_name.startswith("FlowMatch"):
        record.update(noise_schedule="flow", shift=config.get("shift"))
    else:
        record.update(
            noise_schedule="discrete",
            prediction_type=config.get("prediction_type", "epsilon"),
            zero_terminal_snr=bool(config.get("rescale_betas_zero_snr", False)),
            timestep_spacing=config.get("timestep_spacing"),
        )
    vae = getattr(pipe, "vae", None)
    vae_config = getattr(vae, "config", None) or {}
    if vae_config.get("latents_mean") is not None and vae_config.get("latents_std") is not None:
        record["latent_format"] = {
            "scaling_factor": vae_config.get("scaling_factor"),
            "latents_mean": list(vae_config["latents_mean"]),
            "latents_std": list(vae_config["latents_std"]),
        }
    if request.sampling.get("source"):
        record["source"] = str(request.sampling["source"])
    return record


def apply_loras(pipe: Any, request: GenerateRequest) -> None:
    """Load every LoRA (kohya, PEFT/diffusers or LyCORIS, as diffusers reads them) and set
    its weight.

    What diffusers, transformers and peft log while a LoRA loads is captured
    (``captured_messages``) and said once as modelsafe's own warning lines (:func:`lora_notes`),
    or dropped where modelsafe reports the same thing itself (a failed load is its error)."""
    from modelsafe.runtime.diffusers_loader import captured_messages, load_state_dict
    from modelsafe.runtime.generate import warn

    if not request.loras:
        return
    if not hasattr(pipe, "load_lora_weights"):
        raise BackendError(f"{type(pipe).__name__} cannot take LoRAs")
    names: list[str] = []
    hint = "check that the LoRA was trained for this family (`modelsafe inspect FILE`)"
    for number, lora in enumerate(request.loras):
        adapter = f"lora{number}"
        failure: BackendError | None = None
        with captured_messages() as messages:
            try:
                pipe.load_lora_weights(load_state_dict(lora.path), adapter_name=adapter)
            except IndexError:  # diffusers' get_peft_kwargs when no key matched a layer
                failure = _nothing_applies(pipe, request, lora.path, adapter)
            except (ValueError, KeyError, RuntimeError, TypeError, AttributeError) as exc:
                failure = BackendError(
                    f"diffusers cannot apply LoRA {lora.path.name} to this {request.family} "
                    f"model: {error_line(exc)}",
                    hint=hint,
                )
                failure.__cause__ = exc
        for note in lora_notes(messages, request, lora.path, adapter, failed=failure is not None):
            warn(note)
        if failure is not None:
            raise failure
        if adapter not in _adapters(pipe):
            raise _nothing_applies(pipe, request, lora.path, adapter)
        names.append(adapter)
    with captured_messages() as messages:
        try:
            pipe.set_adapters(names, adapter_weights=[lora.weight for lora in request.loras])
        except (ValueError, KeyError, RuntimeError) as exc:
            raise BackendError(f"diffusers cannot set the LoRA weights: {error_line(exc)}") from exc
    for message in messages:
        if message.level not in ("FutureWarning", "DeprecationWarning"):
            warn(f"setting the LoRA weights, {message.source} says: {first_line(message.text)}")


def _adapters(pipe: Any) -> set[str]:
    return {name for names in pipe.get_list_adapters().values() for name in names}


def _nothing_applies(pipe: Any, request: GenerateRequest, path: Path, adapter: str) -> BackendError:
    """The error for a LoRA some part of which matched no layer: none of it, or (diffusers
    stops at the first component that matches nothing) the components that failed."""
    hint = "check that the LoRA was trained for this family (`modelsafe inspect FILE`)"
    landed = sorted(c for c, names in pipe.get_list_adapters().items() if adapter in names)
    if not landed:
        return BackendError(
            f"LoRA {path.name} has no keys that apply to this {request.family} model", hint=hint
        )
    others = sorted(lora_targets(path) - set(landed) - _denoiser_names(landed))
    which = f"its {' and '.join(others)} keys" if others else "some of its keys"
    return BackendError(
        f"LoRA {path.name}: {which} match no layer of this {request.family} model (its "
        f"{' and '.join(landed)} keys do), and diffusers cannot load it in part",
        hint=hint + "; a LoRA without those keys would load",
    )


def _denoiser_names(landed: list[str]) -> set[str]:
    return {"denoiser"} if {"unet", "transformer"} & set(landed) else set()


def lora_targets(path: Path) -> set[str]:
    """The pipeline components a LoRA file has keys for (``unet``/``transformer`` as
    ``denoiser``, ``text_encoder``, ``text_encoder_2``...), from its header."""
    from modelsafe.errors import ModelsafeError
    from modelsafe.registry.detect.lora_keys import parse_key
    from modelsafe.runtime.diffusers_loader import tensor_shapes

    try:
        names = tensor_shapes(path)
    except ModelsafeError:
        return set()
    found = set()
    for name in names:
        key = parse_key(name)
        if key is not None:
            found.add(key.target)
    return found


_NO_KEYS = re.compile(r"No LoRA keys associated to (\w+) found with the prefix='?([\w.]+)")
_UNEXPECTED = re.compile(
    r"led to unexpected keys found in the model:\s*(.*?)\.\s*(?:Loading|$)", re.S
)
_MISSING = re.compile(r"led to missing keys in the model:\s*(.*?)\.?\s*$", re.S)


def lora_notes(
    messages: list[Any], request: GenerateRequest, path: Path, adapter: str, *, failed: bool
) -> list[str]:
    """modelsafe's warning lines for what the libraries said while ``path`` loaded.

    Dropped: "No LoRA keys associated to <text encoder>" when the file has no keys for it
    (a UNet-only LoRA: nothing is lost), peft's note that the model holds several adapters
    (one per LoRA, on purpose), deprecation notices, and the error logged for a failed load
    (modelsafe's own error says why). Kept, in modelsafe's words: keys that were ignored,
    DoRA magnitudes dropped; anything else is passed on as "<library> says: ...".
    """
    name, family = path.name, request.family
    notes: list[str] = []
    targets: set[str] | None = None
    for message in messages:
        text = message.text
        if message.level in ("FutureWarning", "DeprecationWarning"):
            continue
        if "Already found a `peft_config` attribute" in text:
            continue
        if failed and re.search(r"(Loading|Hotswapping) \S+ was unsuccessful", text):
            continue
        found = _NO_KEYS.search(text)
        if found:
            targets = lora_targets(path) if targets is None else targets
            component = found.group(2)
            has = component in targets or (
                component in ("unet", "transformer") and "denoiser" in targets
            )
            if has:
                notes.append(
                    f"LoRA {name}: none of its {component} keys match this {family} model's "
                    f"{component} ({found.group(1)}); they are ignored"
                )
            continue
        if "DoRA checkpoint" in text:
            notes.append(
                f"LoRA {name}: diffusers drops its DoRA magnitude vectors (dora_scale) and "
                "applies it as a plain LoRA"
            )
            continue
        unexpected, missing = _UNEXPECTED.search(text), _MISSING.search(text)
        if unexpected or missing:
            for match, what in (
                (unexpected, "of its weights match no layer of this {family} model; ignored"),
                (missing, "layers of this {family} model got no weights from it"),
            ):
                if match is None:
                    continue
                keys = [k.strip().replace(f".{adapter}.", ".") for k in match.group(1).split(",")]
                keys = [k for k in keys if k]
                example = f" (e.g. {keys[0]})" if keys else ""
                notes.append(f"LoRA {name}: {len(keys)} {what.format(family=family)}{example}")
            continue
        notes.append(f"LoRA {name}: {message.source} says: {first_line(text)}")
    return notes


def apply_embeddings(pipe: Any, request: GenerateRequest) -> None:
    """Load textual-inversion embeddings under their token names (SDXL: both encoders).

    ``generate`` has checked each embedding against the model before the load
    (``runtime.generate.check_compatibility``); the checks here are the backstop for what that
    could not read (a checkpoint the registry cannot open, a config without the width), made on
    the loaded text encoders themselves."""
    from modelsafe.runtime.diffusers_loader import load_state_dict

    for emb in request.embeddings:
        state = load_state_dict(emb.path)
        # SDXL's second encoder is CLIP-G and takes vectors too; Flux's is T5, which takes none
        # (a Flux embedding is CLIP-L's alone, reaching the pooled vector).
        second = getattr(pipe, "text_encoder_2", None)
        two_encoders = (
            second is not None
            and hasattr(pipe, "tokenizer_2")
            and type(second).__name__.startswith("CLIPTextModel")
        )
        if two_encoders and not ("clip_l" in state and "clip_g" in state):
            raise BackendError(
                f"embedding {emb.path.name} holds one set of vectors (an SD1/SD2 embedding); "
                f"{request.family} needs clip_l and clip_g vectors",
                hint=f"use an embedding made for {request.family}",
            )
        if not two_encoders:
            _check_embedding_width(pipe, emb.path.name, state)
        try:
            if "clip_l" in state and "clip_g" in state:
                pipe.load_textual_inversion(
                    state["clip_l"],
                    token=emb.token,
                    text_encoder=pipe.text_encoder,
                    tokenizer=pipe.tokenizer,
                )
                pipe.load_textual_inversion(
                    state["clip_g"],
                    token=emb.token,
                    text_encoder=pipe.text_encoder_2,
                    tokenizer=pipe.tokenizer_2,
                )
            else:
                pipe.load_textual_inversion(state, token=emb.token)
        except (ValueError, KeyError, RuntimeError, AttributeError) as exc:
            reason = error_line(exc).split(": {", 1)[0]  # (diffusers prints the whole dict)
            if "state dictionary is incorrect" in reason:
                reason = (
                    f"it holds {len(state)} tensors but no embedding (e.g. {next(iter(state))})"
                )
            raise BackendError(
                f"cannot load embedding {emb.path.name} as {emb.token!r}: {reason}",
                hint="check that the file is a textual-inversion embedding of this family "
                "(`modelsafe inspect FILE`) and its token name",
            ) from exc


def _check_embedding_width(pipe: Any, name: str, state: dict[str, Any]) -> None:
    """The embedding's vectors are as wide as the text encoder's token embeddings."""
    import torch

    encoder = getattr(pipe, "text_encoder", None)
    if encoder is None or not hasattr(encoder, "get_input_embeddings"):
        return
    want = int(encoder.get_input_embeddings().weight.shape[-1])

    def widths(value: Any) -> list[int]:
        if isinstance(value, torch.Tensor):
            return [int(value.shape[-1])] if value.dim() in (1, 2) else []
        if isinstance(value, dict):
            return [w for v in value.values() for w in widths(v)]
        return []

    found = widths(state)
    if found and found[0] != want:
        raise BackendError(
            f"embedding {name} has {found[0]}-wide vectors; this model's text encoder takes {want}",
            hint="use an embedding made for this family (SD1: 768, SD2: 1024)",
        )


def attach_controlnet(pipe: Any, request: GenerateRequest) -> Any:
    import diffusers

    from modelsafe.runtime.diffusers_loader import config_folder, named_by_content, torch_dtype

    assert request.controlnet is not None and request.family is not None
    if request.family not in CONTROLNET_CLASSES:
        raise BackendError(f"no ControlNet pipeline for {request.family}")
    model_cls_name, pipe_cls_name = CONTROLNET_CLASSES[request.family]
    model_cls = getattr(diffusers, model_cls_name)
    path, dtype = request.controlnet.path, torch_dtype(request.dtype)
    if path.is_dir():
        controlnet = model_cls.from_pretrained(str(path), local_files_only=True, torch_dtype=dtype)
    else:
        with config_folder(request.family, request.variant, request.config_dir) as root:
            if not (root / "controlnet").is_dir():
                raise BackendError(
                    f"modelsafe has no single-file ControlNet config for {request.family}",
                    hint="pass the ControlNet as a diffusers folder",
                )
            with named_by_content(path) as named:
                controlnet = model_cls.from_single_file(
                    str(named),
                    config=str(root),
                    subfolder="controlnet",
                    local_files_only=True,
                    torch_dtype=dtype,
                )
    return getattr(diffusers, pipe_cls_name).from_pipe(pipe, controlnet=controlnet)


def load_refiner(pipe: Any, request: GenerateRequest) -> Any:
    from modelsafe.runtime.diffusers_loader import LoadRequest, guess_identity, load_pipeline

    assert request.refiner is not None
    if request.family != "sdxl":
        raise BackendError("a refiner goes with SDXL base models only")
    _family, kind, _variant, _pred = guess_identity(request.refiner)
    return load_pipeline(
        LoadRequest(
            family="sdxl_refiner",
            path=request.refiner,
            kind=kind,
            tokenizers=request.tokenizers,
            config_dir=request.config_dir,
            dtype=request.dtype,
        ),
        components={
            "vae": pipe.vae,
            "text_encoder_2": pipe.text_encoder_2,
            "tokenizer_2": pipe.tokenizer_2,
        },
    )


def apply_plan(pipe: Any, request: GenerateRequest) -> None:
    """fp8 storage, device, offload, VAE tiling/slicing and attention slicing from
    ``request.plan`` (the settings generate_plan.settle chose)."""
    plan = request.plan
    device = request.device
    _apply_fp8(pipe, request)
    offload = str(plan.get("offload", "none"))
    if offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif offload == "sequential" and device.startswith("cpu"):
        sequential_offload_on_cpu(pipe)
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    elif offload in ("none", ""):
        pipe.to(device)
    else:
        raise BackendError(f"unknown offload {offload!r}", hint="none, model or sequential")
    if plan.get("vae_tiling"):
        pipe.vae.enable_tiling()
    if plan.get("vae_slicing"):
        pipe.vae.enable_slicing()
    if plan.get("attention_slicing"):
        pipe.enable_attention_slicing()


def sequential_offload_on_cpu(pipe: Any) -> None:
    """Sequential offload with the CPU as the execution device: every weight waits on the meta
    device and each layer is brought in only while it computes (accelerate's ``cpu_offload`` on
    each component). ``generate`` itself refuses offload on a CPU; the backend's own tests use
    this to run the sequential-offload path for real.

    ``DiffusionPipeline.enable_sequential_cpu_offload`` cannot do it: it names the device with
    an index (``cpu`` becomes ``cpu:0``), for a CPU weight ``Tensor.to("cpu:0")`` is a copy that
    drops the ``Parameter`` class, and accelerate's next ``set_module_tensor_to_device`` then
    calls ``torch.Tensor(value, requires_grad=...)`` and fails with a TypeError (diffusers
    0.42.1, accelerate 1.15/1.16, torch 2.13). On accelerators diffusers' method is used as is.
    """
    import torch
    from accelerate import cpu_offload

    execution = torch.device("cpu")
    pipe.remove_all_hooks()  # a part shared with the base pipeline gets its weights back
    for name, model in pipe.components.items():
        if not isinstance(model, torch.nn.Module):
            continue
        if name in pipe._exclude_from_cpu_offload:
            model.to(execution)
        else:
            # buffers too when the component holds parameters of its own (as diffusers does)
            cpu_offload(model, execution, offload_buffers=len(model._parameters) > 0)


def _apply_fp8(pipe: Any, request: GenerateRequest) -> None:
    """Store the denoiser (``denoiser_fp8``) and the T5 encoder (``text_encoder_fp8``) in fp8,
    each layer upcast to the run's dtype when it computes (diffusers layerwise casting).

    In a text encoder, the layers transformers keeps in full precision (``_keep_in_fp32_modules``:
    T5's ``wo``) and the embeddings stay as they are: T5 casts its hidden states to
    ``wo.weight.dtype`` before calling ``wo`` (fp8 outside that layer's own forward: the matmul
    fails), and pipelines cast the prompt embeddings to ``text_encoder.dtype``, the dtype of its
    first parameter, the token embedding (fp8 latents: no random numbers in fp8). T5-XXL's
    embedding is 131 M of its 4.76 G parameters.
    """
    import re

    import torch
    from diffusers.hooks import apply_layerwise_casting
    from diffusers.hooks.layerwise_casting import DEFAULT_SKIP_MODULES_PATTERN

    from modelsafe.runtime.diffusers_loader import torch_dtype

    compute = torch_dtype(request.dtype)
    targets: list[tuple[Any, bool]] = []
    if request.plan.get("denoiser_fp8"):
        targets += [(getattr(pipe, n, None), False) for n in ("unet", "transformer")]
    if request.plan.get("text_encoder_fp8"):  # the T5 encoder (Flux text_encoder_2, SD3 _3)
        names = ("text_encoder", "text_encoder_2", "text_encoder_3")
        encoders = [getattr(pipe, n, None) for n in names]
        targets += [(e, True) for e in encoders if type(e).__name__.startswith("T5")]
    for module, is_text_encoder in targets:
        if module is None or _layerwise_cast(module):
            continue  # absent, or shared with the base pipeline and cast there already
        keep = getattr(module, "_keep_in_fp32_modules", None) or ()
        skip = tuple(DEFAULT_SKIP_MODULES_PATTERN) + tuple(
            rf"(^|\.){re.escape(name)}$" for name in keep
        )
        apply_layerwise_casting(
            module,
            storage_dtype=torch.float8_e4m3fn,
            compute_dtype=compute,
            skip_modules_pattern=skip,
            skip_modules_classes=(torch.nn.Embedding,) if is_text_encoder else None,
        )


def _layerwise_cast(module: Any) -> bool:
    """True when diffusers' layerwise casting is already applied inside ``module``."""
    return any(
        "layerwise_casting" in getattr(getattr(m, "_diffusers_hook", None), "hooks", {})
        for m in module.modules()
    )


def run(
    pipe: Any, refiner: Any | None, request: GenerateRequest, progress: Progress | None
) -> list[Any]:
    """Run the pipeline(s) once per image, each with its own seeded CPU generator, so each image
    depends on its seed only: not on the batch size nor its place in the batch, and the same on
    every device family that draws noise on the CPU.

    One call per image (not one call for the whole batch) because the math libraries do not
    promise the same floats for a row whatever the batch around it: torch's CPU GEMM (MKL)
    gives a row of a 4-row product other low bits than the same row of a 2-row product, and
    GPU libraries choose kernels by shape too. Those differences grow over the denoising steps
    and can move a pixel, so a batched image could not be remade alone from its recipe
    (``generate --from-image``)."""
    import torch

    from modelsafe.runtime.diffusers_loader import captured_messages
    from modelsafe.runtime.generate import warn

    seeds = request.image_seeds()
    done = [0]

    def on_step(p: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        done[0] += 1
        if progress is not None:
            per_image = int(getattr(p, "_num_timesteps", 0) or request.steps or 0)
            total = per_image * len(seeds)
            progress(done[0], max(total, done[0]) if refiner is None else 0)
        return tensors

    common: dict[str, Any] = {
        "prompt": request.prompt,
        "num_inference_steps": request.steps,
        "guidance_scale": request.cfg,
        "width": request.width,
        "height": request.height,
        "num_images_per_prompt": 1,
        "callback_on_step_end": on_step,
    }
    if request.family != "flux1":
        common["negative_prompt"] = request.negative_prompt or None
    elif request.true_cfg > 1:  # Flux.1's real CFG: diffusers runs it with a negative prompt only
        common.update(negative_prompt=request.negative_prompt, true_cfg_scale=request.true_cfg)
    if request.clip_skip > 1:  # (diffusers counts the layers skipped: A1111's 2 is its 1)
        common["clip_skip"] = request.clip_skip - 1
        _flat_clip_compat(pipe.text_encoder)
    if request.controlnet is not None:
        common["image"] = _control_image(request)
        common["controlnet_conditioning_scale"] = request.controlnet.scale
    if refiner is not None:
        common.update(output_type="latent", denoising_end=request.refiner_switch)
    images: list[Any] = []
    with torch.inference_mode(), captured_messages() as messages:
        for seed in seeds:
            generator = [torch.Generator("cpu").manual_seed(seed)]
            result = pipe(**common, generator=generator).images
            if refiner is None:
                images.extend(result)
                continue
            refined = refiner(
                prompt=request.prompt,
                negative_prompt=request.negative_prompt or None,
                num_inference_steps=request.steps,
                guidance_scale=request.cfg,
                denoising_start=request.refiner_switch,
                image=result,  # the base's latents
                num_images_per_prompt=1,
                generator=generator,
                callback_on_step_end=on_step,
            )
            images.extend(refined.images)
    for note in run_notes(messages):
        warn(note)
    return images


# What diffusers (the cut-off text, quoted whole) and transformers' tokenizer say of a prompt
# longer than the text encoder takes.
_TRUNCATED = (
    "truncated because CLIP can only handle",
    "sequence length is longer than the specified maximum sequence length",
)


def run_notes(messages: list[Any]) -> list[str]:
    """What the libraries said while the images were made, as modelsafe's own warning lines,
    once each and shortened: diffusers' "truncated because CLIP can only handle sequences up
    to 77 tokens" quotes the whole cut-off text (megabytes for a pasted prompt): one short line
    says it instead."""
    notes: list[str] = []
    for message in messages:
        if message.level in ("FutureWarning", "DeprecationWarning"):
            continue
        if any(words in message.text for words in _TRUNCATED):
            note = (
                "a prompt is longer than its text encoder's window (77 tokens for CLIP): what "
                "follows is cut off (diffusers encodes one window; A1111 chunks long prompts)"
            )
        else:
            note = f"while generating, {message.source} says: {first_line(message.text)}"
        if note not in notes:
            notes.append(note)
    return notes


def _flat_clip_compat(text_encoder: Any) -> None:
    """diffusers' clip_skip reads ``text_encoder.text_model.final_layer_norm``; transformers 5
    flattened CLIPTextModel (its ``final_layer_norm`` is on the model itself). Give such a model
    a ``text_model`` that is itself, set past torch's module registry so that it is no
    submodule (a module inside itself would make ``state_dict`` recurse)."""
    if not hasattr(text_encoder, "text_model") and hasattr(text_encoder, "final_layer_norm"):
        object.__setattr__(text_encoder, "text_model", text_encoder)


def _control_image(request: GenerateRequest) -> Any:
    from PIL import Image

    assert request.controlnet is not None
    with Image.open(Path(request.controlnet.image)) as image:
        control = image.convert("RGB")
    size = (request.width or control.width, request.height or control.height)
    return control.resize(size) if control.size != size else control


@hookimpl
def modelsafe_backends() -> list[Any]:
    return [DiffusersBackend()]
