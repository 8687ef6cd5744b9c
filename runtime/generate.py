"""Generation requests and results, seeds, recipes, and the run itself.

:func:`generate` is the whole path: audit every input (an unsafe or unreadable file is refused
before anything loads it), refuse a denoiser text-to-image cannot feed (inpainting, image
editing), identify the checkpoint's family and how it is sampled, fill the family's defaults, hash
the inputs, run the backend (a plugin; diffusers is built in), pass each image through the
post-processor plugins, save PNGs and record each output with its recipe in the catalog.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelsafe.errors import FileReadError, UnsafeFileError, UsageError
from modelsafe.registry.hashing import A1111_LORA
from modelsafe.runtime.recipe import DEVICE_TYPES, ModelRef, Recipe
from modelsafe.types import BASE_KINDS

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from modelsafe.plugin_manager import ModelsafePluginManager
    from modelsafe.registry.catalog import Catalog
    from modelsafe.registry.catalog.models import Model
    from modelsafe.runtime.backends import Backend
    from modelsafe.types import Compatibility, Part

MAX_SEED = 2**32 - 1  # random seeds are drawn in [0, MAX_SEED] (A1111's range)
SEED_LIMIT = 2**64 - 1  # the largest seed torch's generators take
RANDOM_SEED = -1  # --seed -1 / --seeds -1: a random seed (A1111), recorded in the recipe
Progress = Callable[[int, int], None]
Warn = Callable[[str], None]


@dataclass(frozen=True)
class FamilyDefaults:
    width: int
    height: int
    steps: int
    cfg: float
    scheduler: str


# Defaults per family (and "family:variant"), from each model's published inference settings.
FAMILY_DEFAULTS: dict[str, FamilyDefaults] = {
    "sd1": FamilyDefaults(512, 512, 25, 7.0, "euler"),
    "sd2": FamilyDefaults(768, 768, 25, 7.0, "euler"),
    "sd2:512-base": FamilyDefaults(512, 512, 25, 7.0, "euler"),
    "sdxl": FamilyDefaults(1024, 1024, 30, 7.0, "euler"),
    # Playground's published settings: its EDMDPMSolverMultistepScheduler (Karras sigmas),
    # 50 steps, guidance 3.
    "sdxl:playground-v2.5": FamilyDefaults(1024, 1024, 50, 3.0, "dpmpp_2m_karras"),
    "sd3": FamilyDefaults(1024, 1024, 28, 7.0, "flow_euler"),
    "sd3.5": FamilyDefaults(1024, 1024, 28, 4.5, "flow_euler"),
    "flux1": FamilyDefaults(1024, 1024, 28, 3.5, "flow_euler"),
    "flux1:schnell": FamilyDefaults(1024, 1024, 4, 0.0, "flow_euler"),
}
FAMILIES = ("sd1", "sd2", "sdxl", "sd3", "sd3.5", "flux1")


@dataclass(frozen=True)
class LoraSpec:
    path: Path
    weight: float = 1.0


@dataclass(frozen=True)
class EmbeddingSpec:
    path: Path
    token: str


@dataclass(frozen=True)
class ControlNetSpec:
    path: Path
    image: Path
    scale: float = 1.0


@dataclass(frozen=True)
class GenerateRequest:
    """What to generate. ``None`` settings take the family's defaults (see FAMILY_DEFAULTS).

    ``plan`` holds the settings fixed by the caller: ``device`` (cpu/cuda), ``dtype``
    (fp32/fp16/bf16), ``offload`` (none/model/sequential), ``vae_tiling``, ``vae_slicing``,
    ``attention_slicing``, ``denoiser_fp8``, ``text_encoder_fp8`` (booleans). With ``vram`` (a
    budget such as ``"8GiB"``) the VRAM planner chooses every setting not fixed there
    (``modelsafe.runtime.generate_plan``). ``upscale`` names an ESRGAN-family upscaler (a path, a
    catalog name or a hash prefix) that the upscale post-processor runs on each image.
    """

    checkpoint: Path
    prompt: str
    negative_prompt: str = ""
    seed: int | None = None
    seeds: tuple[int, ...] = ()  # explicit per-image seeds (override seed + batch_size)
    batch_size: int = 1
    steps: int | None = None
    cfg: float | None = None
    width: int | None = None
    height: int | None = None
    scheduler: str | None = None
    family: str | None = None
    variant: str | None = None
    kind: str | None = None  # checkpoint | unet | transformer | pipeline (None: detected)
    prediction_type: str | None = None
    loras: tuple[LoraSpec, ...] = ()
    vae: Path | None = None
    text_encoders: Mapping[str, Path] = field(default_factory=dict)
    embeddings: tuple[EmbeddingSpec, ...] = ()
    controlnet: ControlNetSpec | None = None
    refiner: Path | None = None
    refiner_switch: float = 0.8
    clip_skip: int = 1  # A1111's count: 1 the text encoder's last layer, 2 the one before
    # Flux.1's real classifier-free guidance over the negative prompt (Forge's "CFG scale" for
    # Flux, diffusers' true_cfg_scale): 1 is off; above 1 each step runs the model twice.
    true_cfg: float = 1.0
    tokenizers: Path | None = None
    config_dir: Path | None = None  # family configs to use instead of the shipped ones
    plan: Mapping[str, Any] = field(default_factory=dict)
    backend: str = "diffusers"
    vram: int | str | None = None
    upscale: Path | str | None = None
    recipe_plan: Mapping[str, Any] = field(default_factory=dict)  # --from-image: the old record
    # --from-image of a parameters text, which names no family: its "Euler" (scheduler
    # "euler") is flow_euler where the family samples by flow (SD3, Flux.1), Euler elsewhere.
    euler_means_flow: bool = False
    # How the model is sampled where that is not its family's default, from its marker tensors
    # or folder configs (diffusers_loader.model_sampling; filled by with_defaults): noise_schedule
    # "edm" with sigma_min/sigma_max/sigma_data, prediction_type, zero_terminal_snr, the latent
    # format (scaling_factor, latents_mean, latents_std) and source (what said so).
    sampling: Mapping[str, Any] = field(default_factory=dict)

    def image_seeds(self) -> list[int]:
        """One seed per image: ``seeds`` if given, else ``seed``, ``seed+1``, ... (A1111 style)."""
        if self.seeds:
            return [int(s) for s in self.seeds]
        if self.seed is None:
            raise UsageError("no seed chosen yet", hint="call with_defaults() first")
        return [(self.seed + i) % (SEED_LIMIT + 1) for i in range(self.batch_size)]

    def input_files(self) -> list[Path]:
        """Every file or folder the request will load."""
        paths = [self.checkpoint, *(lo.path for lo in self.loras), *self.text_encoders.values()]
        paths += [e.path for e in self.embeddings]
        for extra in (self.vae, self.refiner, self.controlnet and self.controlnet.path):
            if extra:
                paths.append(extra)
        if isinstance(self.upscale, Path):
            paths.append(self.upscale)
        return paths

    @property
    def device(self) -> str:
        return str(self.plan.get("device", "cpu"))

    @property
    def dtype(self) -> str:
        return str(self.plan.get("dtype", "fp32"))


@dataclass(frozen=True)
class GeneratedImage:
    path: Path
    seed: int
    sha256: str
    recipe: Recipe
    output_id: int | None = None


@dataclass(frozen=True)
class GenerateResult:
    images: tuple[GeneratedImage, ...]
    request: GenerateRequest
    seconds: float = 0.0
    warnings: tuple[str, ...] = ()  # what the run warned of (see :func:`warn`), in order
    # How the images were sampled, as the backend set it up (see :func:`record_sampling`).
    sampling: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "images": [
                {
                    "path": str(i.path),
                    "seed": i.seed,
                    "sha256": i.sha256,
                    "output_id": i.output_id,
                    "recipe": i.recipe.to_json(),
                }
                for i in self.images
            ],
            "seconds": round(self.seconds, 3),
            "warnings": list(self.warnings),
            "sampling": dict(self.sampling),
        }


# -- seeds and defaults -------------------------------------------------------------------------


def random_seed() -> int:
    return secrets.randbelow(MAX_SEED + 1)


def family_defaults(family: str, variant: str | None = None) -> FamilyDefaults:
    found = FAMILY_DEFAULTS.get(f"{family}:{variant}") or FAMILY_DEFAULTS.get(family)
    if found is None:
        raise UsageError(
            f"cannot generate with a {family!r} model",
            hint=f"families modelsafe generates with: {', '.join(FAMILIES)}",
        )
    return found


# Beyond these no model of the families here makes a useful image, and a typo (or a hostile
# recipe) would otherwise ask for terabytes: 16384 px is 8x SDXL's size, 4x Flux's largest.
MAX_STEPS = 10_000
MAX_SIDE = 16_384
MAX_BATCH = 1_000
MAX_CLIP_SKIP = 12  # CLIP-L's layers
MAX_TRUE_CFG = 30.0
# Where A1111's "Clip skip" applies (its FrozenCLIPEmbedder; SD2's OpenCLIP and SDXL's encoders
# read the layer before last already, and A1111 leaves them so).
CLIP_SKIP_FAMILIES = frozenset({"sd1"})


def check_numbers(request: GenerateRequest) -> None:
    """Refuse settings no run can use (checked before the family is identified or anything
    loads): steps, sizes, seeds, batch size, LoRA weights and the ControlNet scale."""
    import math

    for name, text in (("prompt", request.prompt), ("negative prompt", request.negative_prompt)):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise UsageError(
                f"the {name} holds bytes that are not UTF-8 text",
                hint="check the terminal's or the script's encoding (a Latin-1 byte such as "
                "\\xff passed as it is)",
            ) from None
    if not 1 <= request.batch_size <= MAX_BATCH:
        raise UsageError(
            f"batch size {request.batch_size} must be 1 to {MAX_BATCH}",
            hint="run more batches for more images",
        )
    if request.steps is not None and request.steps < 1:
        raise UsageError(f"--steps {request.steps}: at least 1 denoising step is needed")
    if request.steps is not None and request.steps > MAX_STEPS:
        raise UsageError(
            f"--steps {request.steps}: more than {MAX_STEPS} denoising steps",
            hint="samplers converge in 20 to 150 steps",
        )
    for name, size in (("width", request.width), ("height", request.height)):
        if size is not None and (size < 8 or size % 8):
            raise UsageError(
                f"--{name} {size}: image sizes are positive multiples of 8",
                hint="e.g. 512, 768 or 1024",
            )
        if size is not None and size > MAX_SIDE:
            raise UsageError(
                f"--{name} {size}: larger than {MAX_SIDE} pixels",
                hint="generate at the model's size and upscale (--upscale MODEL)",
            )
    seeds = [request.seed] if request.seed is not None else []
    for seed in [*seeds, *request.seeds]:
        if seed != RANDOM_SEED and not 0 <= seed <= SEED_LIMIT:
            raise UsageError(
                f"seed {seed} is out of range",
                hint=f"seeds are 0 to {SEED_LIMIT} (2**64-1); -1 picks a random one",
            )
    for number, value in (("cfg", request.cfg), ("refiner switch", request.refiner_switch)):
        if value is not None and not math.isfinite(value):
            raise UsageError(f"{number} {value} is not a finite number")
    if not (math.isfinite(request.true_cfg) and 1 <= request.true_cfg <= MAX_TRUE_CFG):
        raise UsageError(
            f"--true-cfg {request.true_cfg}: 1 (off) to {MAX_TRUE_CFG:g}",
            hint="real CFG for Flux.1 over the negative prompt: 2 to 5 is the usual range",
        )
    for lora in request.loras:
        if not math.isfinite(lora.weight):
            raise UsageError(
                f"LoRA {lora.path.name}: weight {lora.weight} is not a finite number",
                hint="give a weight such as 0.8 (PATH:WEIGHT)",
            )
    if not 1 <= request.clip_skip <= MAX_CLIP_SKIP:
        raise UsageError(
            f"--clip-skip {request.clip_skip}: 1 (the last layer) to {MAX_CLIP_SKIP}",
            hint="A1111 counts as modelsafe does: 2 reads the prompt from the layer before last",
        )
    if request.controlnet is not None and not math.isfinite(request.controlnet.scale):
        raise UsageError(f"--control-scale {request.controlnet.scale} is not a finite number")


def refuse_network_tags(text: str, where: str) -> None:
    """Refuse an A1111 extra-network tag (``<lora:NAME:W>``, ``<lyco:...>``,
    ``<hypernet:...>``) in a prompt a user gives (``where``: the flag or spec key): modelsafe
    gives the prompt to the text encoder as it is, so the tag would be words there, and the
    image's ``parameters`` text would claim a LoRA never applied. (Not for --from-image: an
    image's prompt is what it was made with.)"""
    from modelsafe.runtime.recipe import network_tag

    found = network_tag(text)
    if found is None:
        return
    tag, kind = found
    raise UsageError(
        f"{where} holds the extra-network tag {tag[:80]}: modelsafe does not read such tags "
        "(A1111 does); it would go to the text encoder as words, and the image's recipe would "
        "name a LoRA that was never applied",
        hint="take the tag out of the prompt and give the LoRA file with "
        + _OVERRIDE_FLAGS["LoRA"]
        + ("" if kind in ("lora", "lyco") else " (modelsafe has no hypernetworks)"),
    )


def _settle_true_cfg(request: GenerateRequest, family: str) -> GenerateRequest:
    """Real CFG (``true_cfg``) applies to Flux.1 only (with an empty negative prompt, as Forge
    runs it, when none is given), and Flux.1 reads a negative prompt with it only: whatever is
    given and not applied is said and left out of the request (so that the image's recipe does
    not claim it)."""
    if family != "flux1":
        if request.true_cfg != 1:
            warn(
                f"--true-cfg {request.true_cfg:g} is not applied to {family}: it is Flux.1's "
                "real CFG (--cfg is this model's classifier-free guidance)"
            )
            return replace(request, true_cfg=1.0)
        return request
    if request.true_cfg <= 1 and request.negative_prompt:
        warn(
            "Flux.1 ignores the negative prompt unless real CFG is on: give --true-cfg above 1 "
            "(e.g. 3.5; each step then runs the transformer twice); it is left out of the recipe"
        )
        return replace(request, negative_prompt="")
    return request


def check_device(device: str) -> None:
    """Refuse a device torch cannot name, or one this machine's torch cannot use (a CPU-only
    build asked for ``cuda``), before anything loads."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise UsageError(
            f"--device {device!r} is not a device torch knows",
            hint="e.g. cpu, cuda, cuda:1, mps or xpu",
        ) from None
    if parsed.type not in DEVICE_TYPES:
        raise UsageError(
            f"--device {device!r}: modelsafe generates on {', '.join(DEVICE_TYPES[:-1])} or "
            f"{DEVICE_TYPES[-1]}",
            hint="e.g. --device cuda, or cuda:1 for the second GPU",
        )
    backends = {"cuda": torch.cuda, "mps": getattr(torch.backends, "mps", None)}
    backends["xpu"] = getattr(torch, "xpu", None)
    module = backends.get(parsed.type)
    if parsed.type != "cpu" and module is not None and not module.is_available():
        build = "a CPU-only build" if not torch.cuda.is_available() else "this build"
        raise UsageError(
            f"--device {device}: this torch ({torch.__version__}, {build}) sees no "
            f"{parsed.type.upper()} device",
            hint="run on --device cpu, or install the torch build for your GPU "
            "(https://pytorch.org/get-started/locally/)",
        )
    if parsed.type == "cuda" and parsed.index is not None:
        if parsed.index >= torch.cuda.device_count():
            raise UsageError(
                f"--device {device}: there are {torch.cuda.device_count()} CUDA devices",
                hint="count from cuda:0",
            )


def with_defaults(request: GenerateRequest) -> GenerateRequest:
    """``request`` with its family identified, seeds chosen and every None setting filled.

    A seed of -1 (``seed`` or an entry of ``seeds``) is replaced by a random one, which the
    recipe then records. The model's own sampling (``sampling``: EDM noise schedule, v-prediction,
    zero terminal SNR, latent format) is read from its marker tensors or folder configs; it sets
    the prediction type and, for Playground v2.5 / CosXL, the variant. A marker that cannot be
    used, or a ``prediction_type`` given against the markers, is a warning (:func:`warn`)."""
    check_numbers(request)
    family, variant, kind, prediction = request.family, request.variant, request.kind, None
    if family is not None:
        from modelsafe.registry.inspect import refuse_partial_download
        from modelsafe.registry.read import read_index
        from modelsafe.runtime.diffusers_loader import guess_kind, guess_variant

        # (--family skips identification, not the checks of the file itself)
        refuse_partial_download(request.checkpoint, "generate", preallocated=True)
        index = read_index(request.checkpoint)  # a broken file or folder: refused, not mid-load
        _warn_of_download_damage(request.checkpoint, index)
        kind = kind or guess_kind(request.checkpoint, family)
        if variant is None:
            variant, prediction = guess_variant(request.checkpoint, family)
    if family is None or kind is None:
        found = identify_model(request.checkpoint)
        family = family or found.family
        variant = variant or found.variant
        kind = kind or found.kind
        prediction = found.prediction_type
    sampling = dict(request.sampling)
    if not sampling:
        from modelsafe.runtime.diffusers_loader import model_sampling

        marked = model_sampling(request.checkpoint, family)
        sampling = dict(marked.settings)
        variant = variant or marked.variant
        for note in marked.notes:
            warn(note)
    if sampling.get("prediction_type"):
        said = str(sampling["prediction_type"])
        if request.prediction_type and request.prediction_type != said:
            warn(
                f"--prediction-type {request.prediction_type} overrides {said}, the prediction "
                f"type of {request.checkpoint.name} (per its {sampling.get('source') or 'configs'})"
            )
        prediction = said
    if family == "sd2" and variant is None:
        variant = "512-base" if (request.prediction_type or prediction) == "epsilon" else None
    base = family_defaults(family, variant)
    if family == "sd2" and variant != "512-base" and request.prediction_type is None:
        prediction = prediction or "v_prediction"
    clip_skip = request.clip_skip
    if clip_skip != 1 and family not in CLIP_SKIP_FAMILIES:
        warn(
            f"clip skip {clip_skip} is not applied to {family}: as in A1111, it moves the "
            "prompt to an earlier text-encoder layer for SD1 models only (SD2 and SDXL already "
            "read the layer before last)"
        )
        clip_skip = 1
    request = _settle_true_cfg(request, family)
    request = replace(
        request,
        family=family,
        variant=variant,
        kind=kind,
        prediction_type=request.prediction_type or prediction,
        seed=random_seed() if request.seed in (None, RANDOM_SEED) else request.seed,
        seeds=tuple(random_seed() if s == RANDOM_SEED else s for s in request.seeds),
        steps=base.steps if request.steps is None else request.steps,
        cfg=base.cfg if request.cfg is None else request.cfg,
        width=base.width if request.width is None else request.width,
        height=base.height if request.height is None else request.height,
        scheduler=_scheduler(request, base),
        clip_skip=clip_skip,
        sampling=sampling,
    )
    check_numbers(request)
    return request


def _scheduler(request: GenerateRequest, base: FamilyDefaults) -> str:
    """The request's scheduler, else the family's; an A1111 "Euler" read from a recipe that
    names no family (``euler_means_flow``) is flow_euler on a family sampled by flow."""
    if request.euler_means_flow and request.scheduler == "euler" and base.scheduler == "flow_euler":
        return "flow_euler"
    return request.scheduler or base.scheduler


# -- the inputs: audit, identity, hashes ---------------------------------------------------------


def check_out_dir(out_dir: Path) -> None:
    """``out_dir`` is a folder, or can be made as one (nothing is created here)."""
    import os

    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(
            f"--out {out_dir} is a file, not a folder",
            hint="give a folder for the images (it is created when missing)",
        )
    existing = out_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(
            f"--out {out_dir}: {existing} is a file, so no folder can be made below it",
            hint="give a folder for the images (it is created when missing)",
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(
            f"--out {out_dir}: {existing} is not writable", hint="choose a folder you can write"
        )


def check_input_files(request: GenerateRequest) -> None:
    """Files where a file is expected (LoRAs, embeddings) and a control image PIL can read."""
    for what, flag, paths in (
        ("a LoRA", "--lora", [lo.path for lo in request.loras]),
        ("an embedding", "--embedding", [e.path for e in request.embeddings]),
    ):
        for path in paths:
            if path.is_dir():
                inside = sorted(p.name for p in path.glob("*.safetensors"))[:3]
                raise UsageError(
                    f"{flag} {path} is a folder; {what} is one file",
                    hint=(
                        "pass the file itself, e.g. " + ", ".join(str(path / n) for n in inside)
                        if inside
                        else f"pass {what} file (.safetensors)"
                    ),
                )
    if request.controlnet is not None:
        check_control_image(request.controlnet.image)


def check_control_image(path: Path) -> None:
    """The control image exists and PIL can decode it."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise FileReadError(f"control image {path} does not exist", hint="check the path")
    try:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            image.load()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise FileReadError(
            f"control image {path} is not an image that can be read: {exc}",
            hint="pass a PNG, JPEG or WebP control image",
        ) from exc


def refuse_unsafe(paths: Iterable[Path]) -> dict[Path, tuple[Any, ...]]:
    """Audit every input; anything not ``safe`` is refused before anything loads it.

    Returns each input's stat key as audited: :func:`refuse_changed` checks after the load that
    the files loaded are those audited (a file swapped in between is refused)."""
    from modelsafe.registry.audit import audit_path

    audited: dict[Path, tuple[Any, ...]] = {}
    for path in paths:
        if not path.exists():
            raise FileReadError(f"{path} does not exist", hint="check the path")
        if path.is_dir() and not _model_folder(path):
            from modelsafe.registry.formats.diffusers_dir_reader import refuse_broken_links

            refuse_broken_links(path)  # (a cached snapshot copied with `cp -r`: say so)
            # (never audited: a folder such as / or ~ would be read whole, file by file)
            raise UsageError(
                f"{path} is a folder, but no model folder (it has no model_index.json or "
                "config.json)",
                hint="point at a model file, a diffusers pipeline folder (model_index.json) or "
                "a component folder (config.json and its weights)",
            )
        key = stat_key(path)
        audited[path] = key
        if _AUDITED_SAFE.get(str(path.resolve())) == key:
            continue
        verdict = audit_path(path)
        if verdict.status == "safe":
            if stat_key(path) == key:  # unchanged while it was read
                _AUDITED_SAFE[str(path.resolve())] = key
            else:
                refuse_changed({path: key})
            continue
        detail = "; ".join(
            _file_in_folder(f) if path.is_dir() else f.message for f in verdict.findings[:3]
        )
        if verdict.status == "unsafe":
            raise UnsafeFileError(
                f"refusing to load {path}: it can run code when loaded ({detail})",
                hint=f"see `modelsafe audit {path}`; use a safetensors copy of the model",
            )
        damaged = any(f.code in _DOWNLOAD_DAMAGE for f in verdict.findings)
        raise FileReadError(
            f"refusing to load {path}: it could not be audited ({detail})",
            hint=f"see `modelsafe audit {path}`"
            + ("; the file is damaged: download it again" if damaged else ""),
        )
    return audited


# Audit error codes that mean the bytes on disk are not the file that was published.
_DOWNLOAD_DAMAGE = frozenset({"trailing-data", "gap", "truncated", "unwritten", "partial-copy"})


def _model_folder(path: Path) -> bool:
    """A folder a loader takes as a model: a diffusers pipeline, a component folder with its
    config, or a sharded component folder."""
    from modelsafe.registry.walk import is_model_folder

    return (path / "config.json").is_file() or is_model_folder(str(path))


def _file_in_folder(finding: Any) -> str:
    """A folder's finding with the file it is about first (``unet/x.bin: message``): the
    folder audit puts that file's path at the start of the location."""
    where = (finding.location or "").split(":", 1)[0].split(" @ ", 1)[0]
    return f"{where}: {finding.message}" if where else finding.message


@contextmanager
def audited_load(paths: Iterable[Path]) -> Iterator[None]:
    """Audit ``paths`` (:func:`refuse_unsafe`), then run the block that loads them and check
    that what it loaded is what was audited (:func:`refuse_changed`), also when the load
    failed: a file swapped in is what makes a weights-only load fail, and is said as such."""
    audited = refuse_unsafe(paths)
    try:
        yield
    except Exception:
        refuse_changed(audited)
        raise
    refuse_changed(audited)


def refuse_changed(audited: dict[Path, tuple[Any, ...]]) -> None:
    """Refuse when a file changed since its audit (``refuse_unsafe`` gave the keys): what was
    loaded may not be what was audited. Call it after loading; a load error is checked with
    it too, as a swapped-in file is what makes a weights-only load fail."""
    for path, key in audited.items():
        try:
            now = stat_key(path)
        except OSError:
            now = None
        if now != key:
            _AUDITED_SAFE.pop(str(path.resolve()), None)
            raise UnsafeFileError(
                f"{path} changed after it was audited, while it was being loaded: what was "
                "loaded may not be what was audited, so none of it is used",
                hint="run again once nothing writes to it (a download or sync still going "
                "on?); if nothing should change it, find out what did",
            )


# path -> stat key of the files found safe in this process (a changed file is audited again).
_AUDITED_SAFE: dict[str, tuple[Any, ...]] = {}


def stat_key(path: Path) -> tuple[Any, ...]:
    """What says a file (or each file of a folder) is unchanged: size, mtime, inode and ctime.

    ``st_ctime_ns`` is there because mtime can be set back (``touch -r``, ``cp -p``,
    ``os.utime``) after a file is rewritten in place with the same size; ctime cannot be set
    back, and a file renamed away and back gets a new one (``registry.walk.StatKey``, which scan
    compares too). A folder's files are found as the audit finds them: through symlinked
    folders (``unet -> ../store/unet``), each real folder once. Every symbolic link on the way
    (the path itself, a folder above it, a link inside a folder) is in the key by its own stat
    too: a link pointed elsewhere while loading and back again gets a new inode or ctime, though
    the file it points to at the end is the one audited."""
    import os

    from modelsafe.registry.walk import StatKey, walk_tree

    links = _link_keys(path)
    if not path.is_dir():
        return (StatKey.of(path.stat()), *links)
    found: list[tuple[str, Any]] = []
    for folder, names in walk_tree(str(path)):
        if folder != str(path) and os.path.islink(folder):
            found.append((os.path.relpath(folder, path) + "/", StatKey.of(os.lstat(folder))))
        for name in names:
            full = os.path.join(folder, name)
            try:
                st = os.stat(full)
                if os.path.islink(full):
                    found.append((os.path.relpath(full, path) + " ->", StatKey.of(os.lstat(full))))
            except OSError:
                continue
            found.append((os.path.relpath(full, path), StatKey.of(st)))
    return (*sorted(found, key=lambda item: item[0]), *links)


def _link_keys(path: Path) -> tuple[tuple[str, Any], ...]:
    """The stat of each symbolic link among ``path`` and the folders above it."""
    import os

    from modelsafe.registry.walk import StatKey

    found = []
    for at in (path, *path.absolute().parents):
        if os.path.islink(at):
            found.append((str(at), StatKey.of(os.lstat(at))))
    return tuple(found)


@dataclass(frozen=True)
class ModelIdentity:
    family: str
    kind: str
    variant: str | None = None
    prediction_type: str | None = None


def identify_model(path: Path) -> ModelIdentity:
    """What the checkpoint is. Asks the registry's detectors, then the loader's layout check.

    (This is the one place generation depends on identification.)
    """
    from modelsafe.errors import MalformedFileError
    from modelsafe.registry.inspect import refuse_partial_download

    refuse_partial_download(path, "generate", preallocated=True)
    try:
        from modelsafe.registry.inspect import inspect_path, read_for_inspect

        index = read_for_inspect(path, "generate")
        report = inspect_path(path, index=index)
        _warn_of_download_damage(path, index)
        if report.family in FAMILIES and report.kind in BASE_KINDS:
            return ModelIdentity(report.family, report.kind, report.variant, report.prediction_type)
    except MalformedFileError:
        raise  # a broken file or folder (a missing shard, a truncated file): no load can help
    except Exception:  # noqa: BLE001 - a detector gap falls back to the loader's own check
        report = None
    if report is not None:
        _refuse_known_unsupported(path, report)
    from modelsafe.runtime.diffusers_loader import guess_identity

    family, kind, variant, prediction = guess_identity(path)
    return ModelIdentity(family, kind, variant, prediction)


def _warn_of_download_damage(path: Path, index: Any) -> None:
    """Pass on, before the slow load, what says the file's data (``index``, read from ``path``)
    is an unfinished download's (a zero tail, runs of zeros before its end): it would load, and
    make noise."""
    from modelsafe.registry.inspect import download_damage_warnings

    for warning in download_damage_warnings(index):
        warn(f"{path.name}: {warning}")


# The flag (:data:`_OVERRIDE_FLAGS`) that takes a file of each kind that is no model to run.
_FLAG_OF_KIND = {
    "lora": "LoRA",
    "lycoris": "LoRA",
    "embedding": "embedding",
    "controlnet": "ControlNet",
    "vae": "VAE",
    "text_encoder": "text encoder",
}


# Kinds whose layout no denoiser shares: a file the detectors call one of these is refused as
# one from this confidence on (its family may be unsure: Flux.1's ae and SD3's VAE look alike).
_NEVER_A_DENOISER = {"vae": 0.3, "text_encoder": 0.3, "image_encoder": 0.3, "lora": 0.3}
_SURE = 0.7


def _refuse_an_add_on(path: Path, report: Any) -> None:
    """Refuse a file the detectors call, with confidence, something other than a model to
    generate with (a LoRA, a VAE, a motion module, ...), naming what it is and the flag that
    takes it (the loader's layout guess said "cannot tell which model family" and asked for
    --family, which cannot help). A VAE, text or image encoder or LoRA is refused from
    :data:`_NEVER_A_DENOISER`'s lower confidence on, as "probably" one."""
    confidence = report.confidence or 0
    if report.kind in ("unknown", "", None) or confidence < _NEVER_A_DENOISER.get(
        report.kind, _SURE
    ):
        return
    from modelsafe.runtime.family_needs import label
    from modelsafe.types import a_kind

    whose = "" if report.family in ("unknown", "any", "", None) else f" ({label(report.family)})"
    flag = _OVERRIDE_FLAGS.get(_FLAG_OF_KIND.get(report.kind, ""))
    probably = "" if confidence >= _SURE else "probably "
    raise UsageError(
        f"{path.name} is {probably}{a_kind(report.kind)}{whose}, not a model to generate with",
        hint=(
            f"give a checkpoint with --checkpoint and this file with {flag}"
            if flag
            else f"generate does not use {a_kind(report.kind)}; give a checkpoint"
        )
        + f" (`modelsafe inspect {path}` shows the evidence)",
    )


def _refuse_known_unsupported(path: Path, report: Any) -> None:
    """Refuse a denoiser the detectors placed in a family this backend does not run (Chroma,
    Qwen-Image, HiDream, FLUX.2, Wan, ...), by that family's name, or named as an architecture of
    no family (HunyuanVideo 1.5, SANA-Video, PixArt): the loader's own layout guess would take
    many of them for Flux.1."""
    if report.kind not in BASE_KINDS:
        _refuse_an_add_on(path, report)
        return
    architecture = (getattr(report, "facts", None) or {}).get("architecture")
    hint = (
        f"generate runs {', '.join(FAMILIES)} models; `modelsafe inspect {path}` shows the "
        "evidence (pass --family to override a wrong identification)"
    )
    if report.family == "sdxl_refiner":
        raise UsageError(
            f"{path.name} is an SDXL refiner: it refines an SDXL base model's images",
            hint=f"modelsafe generate --checkpoint SDXL_BASE --refiner {path} --prompt ...",
        )
    if report.family not in ("unknown", "", None):
        from modelsafe.runtime.family_needs import label

        name = label(report.family)
        what = f"{report.family}/{report.kind}" + (f"/{report.variant}" if report.variant else "")
        raise UsageError(
            f"{path.name} is {what}: modelsafe does not generate {name} models", hint=hint
        )
    if architecture:
        raise UsageError(
            f"{path.name} is a {architecture} {report.kind}, which modelsafe cannot generate with",
            hint=hint,
        )


# -- what the denoiser takes in, before any load ------------------------------------------------


class NotTextToImageError(UsageError):
    """The checkpoint's denoiser takes more than the latent it gives out (an inpainting,
    image-editing, relighting or control model): text-to-image generation has nothing to feed
    the extra input channels."""


# (input, output) channels -> (what such a denoiser is, what it takes in)
_CHANNEL_MODELS: dict[tuple[int, int], tuple[str, str]] = {
    (9, 4): ("an inpainting model", "the noisy latent (4), the mask (1) and the masked image (4)"),
    (8, 4): (
        "an image-editing model (instruct-pix2pix, CosXL-Edit; IC-Light fc has the same layout)",
        "the noisy latent (4) and the image to edit or relight (4)",
    ),
    (12, 4): (
        "a relighting model (IC-Light fbc)",
        "the noisy latent (4), the foreground (4) and the background (4)",
    ),
    (5, 4): ("a depth-conditioned model (SD2 depth)", "the noisy latent (4) and a depth map (1)"),
    (384, 64): (
        "an inpainting/outpainting model (Flux.1 Fill)",
        "the packed latent (64), the masked image (64) and the packed mask (256)",
    ),
    (128, 64): (
        "a structure-control model (Flux.1 Depth/Canny)",
        "the packed latent (64) and the control image (64)",
    ),
}
# The identifier's variants of such models, as the refusal names them ({an} {family}: its label).
_VARIANT_NAMES = {
    "inpaint": "{an} {family} inpainting model",
    "instruct-pix2pix": "{an} {family} instruct-pix2pix image-editing model (IC-Light fc has "
    "the same layout)",
    "cosxl-edit": "CosXL-Edit, an SDXL image-editing model",
    "depth": "{an} {family} depth model",
    "fill": "Flux.1 Fill, an inpainting/outpainting model",
    "depth-canny": "Flux.1 Depth/Canny, a structure-control model",
}


def check_denoiser(request: GenerateRequest) -> None:
    """Refuse a checkpoint whose denoiser takes other input channels than it gives out (9 for
    inpainting, 8 for instruct-pix2pix / CosXL-Edit / IC-Light, 384 for Flux Fill...): generate
    feeds it only the noisy latent. Headers and configs only, before anything loads; a model
    whose channels cannot be told is left to the loader. Raises NotTextToImageError (exit 2)."""
    from modelsafe.runtime.diffusers_loader import _inspect, denoiser_channels

    path = request.checkpoint
    channels = denoiser_channels(path)
    if channels is None or channels[0] == channels[1]:
        return
    cin, cout = channels
    what, takes = _CHANNEL_MODELS.get(
        (cin, cout),
        ("not a text-to-image model", f"the noisy latent ({cout}) and {cin - cout} more"),
    )
    report = _inspect(path)  # the identifier's name for it, when it knows the variant
    if report is not None and report.variant in _VARIANT_NAMES:
        from modelsafe.runtime.family_needs import label

        family = label(str(report.family))
        an = "an" if family.startswith("S") else "a"  # SD1, SDXL: "an"
        what = _VARIANT_NAMES[str(report.variant)].format(an=an, family=family)
    raise NotTextToImageError(
        f"{path.name} is {what}: its denoiser takes {cin} input channels, {takes}, "
        f"and gives out {cout}; text-to-image generation has only the noisy latent to give it",
        hint="use a text-to-image checkpoint (the base model this one was made from); "
        "modelsafe generate has no inpainting, image-editing or control-image input",
    )


# -- add-ons against the checkpoint: the rules `modelsafe resolve` uses, before any load --------

# The largest embedding file whose tensors are read to learn its vector widths when the
# registry cannot tell them (textual-inversion files are kilobytes).
EMBEDDING_READ_LIMIT = 64 * 1024 * 1024


def check_compatibility(request: GenerateRequest) -> None:
    """Refuse LoRAs and embeddings that cannot fit the checkpoint, before anything loads.

    Asks the compatibility rules ``modelsafe resolve`` asks (``runtime.resolve.check_part``:
    the ``family``, ``lora_keys`` and ``embedding_width`` rules, from headers and tensor
    shapes), so the two commands give one verdict. The checkpoint is the one generate will load:
    its family, variant and kind are the request's (``--family`` included) and its text
    encoders' widths are those of the configs the loader uses. A ``reject`` refuses the run
    (UsageError, exit 2) with the rule's reason; a ``warn`` is reported (:func:`warn`) and the
    run goes on. A LoRA whose base family the registry cannot tell is tried: its key-coverage
    verdict is a warning, and the backend's own check after loading decides.

    ``request`` has its defaults (:func:`with_defaults`); every input was audited safe.
    """
    if not request.loras and not request.embeddings:
        return
    from modelsafe.runtime.resolve import check_part

    base = _checkpoint_part(request)
    if base is None:
        warn(
            f"cannot read {request.checkpoint.name} to check the LoRAs and embeddings before "
            "loading; they are checked when they load"
        )
        return
    for lora in request.loras:
        part = _addon_part(lora.path, "lora", weight=lora.weight)
        if part is None:
            continue  # unreadable: the load says why
        _, reasons = check_part(base, part)
        _judge(f"LoRA {lora.path.name}", part, base, reasons, request.checkpoint)
        if lora.weight:
            _warn_of_missing_trigger(lora.path, request.prompt)
    for emb in request.embeddings:
        part = _embedding_part(emb.path)
        if part is None:
            continue
        _, reasons = check_part(base, part)
        _judge(f"embedding {emb.path.name}", part, base, reasons, request.checkpoint)


def _warn_of_missing_trigger(path: Path, prompt: str) -> None:
    """Say so when the LoRA's download manager lists trigger words (its Civitai page's
    ``trainedWords``, :mod:`modelsafe.registry.sidecars`) and the prompt holds none of them:
    many LoRAs change little without one."""
    from modelsafe.registry.sidecars import read_sidecar

    sidecar = read_sidecar(path)  # (one that cannot be read is passed over: None)
    if sidecar is None or not sidecar.trained_words:
        return
    text = _prompt_words(prompt)
    pieces = [_prompt_words(p) for w in sidecar.trained_words for p in w.split(",")]
    pieces = [p for p in pieces if len(p) > 1]
    if not pieces or any(p in text for p in pieces):
        return
    shown = ", ".join(repr(w) for w in sidecar.trained_words[:5])
    more = f" (+{len(sidecar.trained_words) - 5} more)" if len(sidecar.trained_words) > 5 else ""
    warn(
        f"LoRA {path.name}: the prompt has none of its trigger words {shown}{more} "
        f"({sidecar.path.name}); many LoRAs do little without one"
    )


_NETWORK_TAG = re.compile(r"<[^<>]*>")  # <lora:name:1>, <lyco:...>, <hypernet:...>
_WEIGHT = re.compile(r":\s*-?[\d.]+\s*(?=[)\]}>]|$)")  # (word:1.2) -> (word)


def _prompt_words(text: str) -> str:
    """``text`` as words to compare trigger words in: Unicode NFKC, any case, without A1111's
    network tags, weights, brackets and escapes (``(mychar:1.2)``, ``artoria \\(fate\\)``),
    ``_`` as a space (booru tags) and with the punctuation around each piece trimmed."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _WEIGHT.sub("", _NETWORK_TAG.sub(" ", text))
    text = re.sub(r"[\\()\[\]{}]", " ", text).replace("_", " ")
    return " ".join(text.split()).strip(" .;:!?")


def _judge(
    what: str, part: Part, base: Part, reasons: tuple[Compatibility, ...], checkpoint: Path
) -> None:
    """Refuse on a rejection, report the warnings (see check_compatibility)."""
    from modelsafe.runtime.family_needs import label

    tried = part.family in ("unknown", "any")  # key coverage alone does not refuse it

    def refuses(reason: Compatibility) -> bool:
        return reason.status == "reject" and not (tried and reason.rule == "lora_keys")

    for reason in reasons:
        if refuses(reason):
            noun = "a LoRA" if part.role == "lora" else "an embedding"
            family = label(base.family)
            holds = _embedding_holds(part) if part.kind == "embedding" else ""
            fix = (
                f"its layers are not this {family} checkpoint's"
                if reason.rule == "lora_keys"
                else f"use {noun} made for {family}"
            )
            raise UsageError(
                f"{what} does not fit this {family} model: {reason.reason}{holds}",
                hint=f"{fix}; `modelsafe resolve {checkpoint} --{part.role} "
                f"{part.path or part.ref}` shows the same check",
            )
    for reason in reasons:
        if reason.status == "warn":
            warn(f"{what}: {reason.reason}")
        elif reason.status == "reject":  # a LoRA of unknown family (see refuses)
            warn(f"{what}: {reason.reason}; tried anyway, as its base family is unknown")


def _embedding_holds(part: Part) -> str:
    """`` (it holds clip_l and clip_g vectors: an SDXL embedding)`` and the like."""
    widths = dict(part.facts.get("token_widths") or {})
    if "clip_l" in widths and "clip_g" in widths:
        return " (it holds clip_l and clip_g vectors: an SDXL embedding)"
    if len(widths) == 1:
        width = next(iter(widths.values()))
        made_for = {768: ": an SD1 embedding", 1024: ": an SD2 embedding"}.get(width, "")
        return f" (it holds one set of {width}-wide vectors{made_for})"
    return ""


def _checkpoint_part(request: GenerateRequest) -> Part | None:
    """The checkpoint as ``resolve`` sees it, with the identity and text encoders generate
    loads it with; None when the registry cannot read it."""
    from modelsafe.errors import ModelsafeError
    from modelsafe.runtime.resolve import load_part

    assert request.family is not None
    try:
        base = load_part(str(request.checkpoint), "checkpoint")
    except ModelsafeError:
        return None
    facts = dict(base.facts)
    widths = _text_encoder_widths(request)
    if widths:
        facts["text_encoder_widths"] = widths
    encoders = tuple(
        p
        for p in (_addon_part(path, "text_encoder") for path in request.text_encoders.values())
        if p is not None
    )
    return replace(
        base,
        family=request.family,
        variant=request.variant or base.variant,
        kind=request.kind or base.kind,
        facts=facts,
        beside=encoders,
    )


def _text_encoder_widths(request: GenerateRequest) -> dict[str, int]:
    """Token-embedding width of each text encoder slot (``clip_l``, ``clip_g``, ``t5xxl``...)
    in the configs the loader uses: a pipeline folder's own, else the family's
    (``--config-dir`` first). The family's slots are its pipeline's ``text_encoder``,
    ``text_encoder_2``, ``text_encoder_3`` in order."""
    from modelsafe.runtime.diffusers_loader import component_config
    from modelsafe.runtime.family_needs import NEEDS

    assert request.family is not None
    needs = NEEDS.get(request.family)
    if needs is None:
        return {}
    widths: dict[str, int] = {}
    for number, slot in enumerate(needs.text_encoders + needs.optional_text_encoders):
        component = "text_encoder" + (f"_{number + 1}" if number else "")
        config = component_config(
            request.family, request.variant, request.config_dir, request.checkpoint, component
        )
        width = (config or {}).get("hidden_size") or (config or {}).get("d_model")
        if isinstance(width, int):
            widths[slot] = width
    return widths


def _addon_part(path: Path, role: str, weight: float = 1.0) -> Part | None:
    from modelsafe.errors import ModelsafeError
    from modelsafe.runtime.resolve import load_part

    try:
        return load_part(str(path), role, weight=weight)
    except ModelsafeError:
        return None


def _embedding_part(path: Path) -> Part | None:
    """The embedding as ``resolve`` sees it; when the registry cannot tell its vector widths
    (a diffusers ``learned_embeds`` file, a token-named key), they are read off its tensors
    (safetensors, or a pickle with ``weights_only``: the file was audited safe before)."""
    part = _addon_part(path, "embedding")
    if part is None or part.kind not in ("embedding", "unknown"):
        return part
    if part.facts.get("token_widths") or part.facts.get("token_width"):
        return part
    widths = _embedding_widths(path)
    if not widths:
        return part
    return replace(part, kind="embedding", facts={**part.facts, "token_widths": widths})


def _embedding_widths(path: Path) -> dict[str, int]:
    """``{"clip_l": 768, "clip_g": 1280}`` (SDXL), or ``{"emb_params": 768}`` (one vector set,
    whatever its key), from the file's tensors; empty when they say nothing clear."""
    from modelsafe.errors import ModelsafeError
    from modelsafe.runtime.diffusers_loader import load_state_dict

    if path.stat().st_size > EMBEDDING_READ_LIMIT:
        return {}
    try:
        state = load_state_dict(path)
    except (ModelsafeError, OSError, RuntimeError, ValueError):
        return {}

    def widths(value: Any) -> list[int]:
        shape = getattr(value, "shape", None)
        if shape is not None and len(shape) in (1, 2):
            return [int(shape[-1])]
        if isinstance(value, Mapping):
            return [w for v in value.values() for w in widths(v)]
        return []

    named = {k: widths(state[k]) for k in ("clip_l", "clip_g", "t5") if k in state}
    if named:
        return {k: w[0] for k, w in named.items() if w}
    found = sorted(set(widths(state)))
    return {"emb_params": found[0]} if len(found) == 1 else {}


def model_ref(
    path: Path,
    catalog: Catalog | None = None,
    *,
    weight: float | None = None,
    token: str | None = None,
) -> ModelRef:
    """A recipe's reference to ``path``: name, path and hashes (from the catalog when current)."""
    hashes = known_hashes(path, catalog)
    return ModelRef(
        name=path.stem if path.is_file() else path.name,
        path=str(path.resolve()),
        sha256=hashes.get("sha256"),
        autov2=hashes.get("autov2"),
        weight=weight,
        token=token,
        a1111_lora=hashes.get(A1111_LORA),
    )


def known_hashes(path: Path, catalog: Catalog | None) -> dict[str, Any]:
    """sha256/autov2/a1111_lora (+ catalog ``model_id``): the catalog's values when the file
    is unchanged, else computed (files only; a folder's hashes come from the catalog or stay
    unknown)."""
    if catalog is not None:
        found = _catalog_hashes(path, catalog)
        if found:
            return found
    if path.is_file():
        from modelsafe.errors import ModelsafeError
        from modelsafe.registry.hashing import hash_file
        from modelsafe.registry.read import read_index

        try:
            index = read_index(path)  # the tensor table hashers are promised when readable
        except ModelsafeError:
            index = None
        hashes = hash_file(path, index)
        return {key: hashes.get(key) for key in ("sha256", "autov2", A1111_LORA)}
    return {}


def folder_identity(path: Path, catalog: Catalog | None) -> str | None:
    """A model folder's identity as ``modelsafe scan`` records it (``folder_id``: a sha256 over
    its model files' relative paths and content ids): the catalog's while the folder is as it
    was scanned, else computed; None when its files cannot be read."""
    from modelsafe.errors import ModelsafeError
    from modelsafe.registry.analyse import folder_id
    from modelsafe.registry.walk import StatKey, folder_key

    try:
        key = folder_key(str(path))
        if catalog is not None:
            from modelsafe.registry.catalog.queries import location_of_file

            with catalog.session() as session:
                loc = location_of_file(session, path)
                hashes = ((loc.extra or {}).get("hashes") or {}) if loc is not None else {}
                if loc is not None and isinstance(hashes.get("folder_id"), str):
                    scanned = StatKey(
                        loc.size, loc.mtime_ns, loc.inode or 0, loc.device or 0, loc.ctime_ns or 0
                    )
                    if scanned == key:
                        return str(hashes["folder_id"])
        return folder_id(str(path))
    except (OSError, ModelsafeError):
        return None


def _catalog_hashes(path: Path, catalog: Catalog) -> dict[str, Any]:
    """The hashes the catalog has for this very file (its location's own: a model stored as a
    .ckpt and a .safetensors has one row but two sets of file hashes), when it is unchanged."""
    from modelsafe.registry.catalog.queries import location_of_file

    with catalog.session() as session:
        loc = location_of_file(session, path)
        if loc is None or loc.model is None:
            return {}
        model = loc.model
        own = (loc.extra or {}).get("hashes")
        if isinstance(own, dict) and own.get("sha256"):
            a1111 = own.get(A1111_LORA)
            if A1111_LORA not in own and (loc.extra or {}).get("format") == "safetensors":
                a1111 = _scanned_a1111_lora(path, own)  # scanned before it was recorded
                if a1111 is None:
                    return {}  # (computed afresh)
            return {
                "sha256": own["sha256"],
                "autov2": own.get("autov2"),
                A1111_LORA: a1111,
                "model_id": model.id,
            }
        if path.is_file() and (not model.sha256 or len(model.locations) > 1):
            return {}  # (the model's hashes may be another copy's)
        return {"sha256": model.sha256, "autov2": model.autov2, "model_id": model.id}


def _scanned_a1111_lora(path: Path, hashes: dict[str, Any]) -> str | None:
    """A1111's LoRA hash of a safetensors file a scan recorded before it kept that hash: from
    its header and recorded AutoV3 (None when that cannot tell it, or the header is unreadable)."""
    from modelsafe.errors import ModelsafeError
    from modelsafe.registry.hashing import a1111_lora_of
    from modelsafe.registry.read import read_index

    try:
        return a1111_lora_of(read_index(path), hashes)
    except (ModelsafeError, OSError):
        return None


# What a user's `modelsafe set` corrections of the checkpoint change in a request.
_OVERRIDABLE = ("family", "kind", "variant", "prediction_type")


def with_catalog_overrides(request: GenerateRequest, catalog: Catalog | None) -> GenerateRequest:
    """``request`` with the user's corrections of its checkpoint (``modelsafe set MODEL
    --family ...``) where the request does not say otherwise: they win over detection in the
    catalog, and so in generation. Each one used is a warning naming it."""
    if catalog is None:
        return request
    from modelsafe.registry.catalog.queries import location_of_file

    with catalog.session() as session:
        loc = location_of_file(session, Path(request.checkpoint))
        overrides = dict(loc.model.overrides or {}) if loc is not None and loc.model else {}
    changes = {
        name: overrides[name]
        for name in _OVERRIDABLE
        if overrides.get(name) and getattr(request, name) is None
    }
    if not changes:
        return request
    shown = ", ".join(f"{name}={value}" for name, value in changes.items())
    warn(f"using your catalog correction of {Path(request.checkpoint).name}: {shown}")
    return replace(request, **changes)


# -- recipes -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputRefs:
    checkpoint: ModelRef
    loras: tuple[ModelRef, ...] = ()
    vae: ModelRef | None = None
    text_encoders: tuple[ModelRef, ...] = ()
    embeddings: tuple[ModelRef, ...] = ()
    controlnet: ModelRef | None = None
    refiner: ModelRef | None = None
    upscaler: ModelRef | None = None
    # Each model folder's identity (:func:`folder_identity`), by its path as the refs give it
    # (a folder has no file hashes); kept as the recipe's ``extra["folder_ids"]``.
    folder_ids: Mapping[str, str] = field(default_factory=dict)


def input_refs(request: GenerateRequest, catalog: Catalog | None = None) -> InputRefs:
    def one(path: Path | None) -> ModelRef | None:
        return None if path is None else model_ref(path, catalog)

    folders = {
        str(p.resolve()): folder_identity(p, catalog) for p in request.input_files() if p.is_dir()
    }
    return InputRefs(
        folder_ids={path: ident for path, ident in folders.items() if ident is not None},
        checkpoint=model_ref(request.checkpoint, catalog),
        loras=tuple(model_ref(lo.path, catalog, weight=lo.weight) for lo in request.loras),
        vae=one(request.vae),
        text_encoders=tuple(
            replace(model_ref(p, catalog), token=name)
            for name, p in sorted(request.text_encoders.items())
        ),
        embeddings=tuple(model_ref(e.path, catalog, token=e.token) for e in request.embeddings),
        controlnet=one(request.controlnet.path if request.controlnet else None),
        refiner=one(request.refiner),
        upscaler=one(request.upscale if isinstance(request.upscale, Path) else None),
    )


def build_recipe(
    request: GenerateRequest,
    seed: int,
    refs: InputRefs,
    plan: Mapping[str, Any] | None = None,
    upscale_scale: int | None = None,
    *,
    sampling: Mapping[str, Any] | None = None,
) -> Recipe:
    """The recipe of the image made with ``seed`` (``request`` already has its defaults);
    ``plan`` is the settings record (generate_plan.PlanRecord.to_json()), ``sampling`` how
    the backend sampled (:func:`record_sampling`), kept as ``extra["sampling"]``."""
    from modelsafe import __version__

    assert request.steps is not None and request.cfg is not None
    assert request.width is not None and request.height is not None
    return Recipe(
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        seed=seed,
        steps=request.steps,
        cfg=request.cfg,
        width=request.width,
        height=request.height,
        scheduler=request.scheduler or "",
        checkpoint=refs.checkpoint,
        family=request.family or "",
        variant=request.variant,
        prediction_type=request.prediction_type,
        loras=refs.loras,
        vae=refs.vae,
        text_encoders=refs.text_encoders,
        embeddings=refs.embeddings,
        controlnet=refs.controlnet,
        control_image=str(request.controlnet.image.resolve()) if request.controlnet else None,
        control_scale=request.controlnet.scale if request.controlnet else 1.0,
        refiner=refs.refiner,
        refiner_switch=request.refiner_switch,
        clip_skip=request.clip_skip,
        true_cfg=request.true_cfg,
        backend=request.backend,
        dtype=request.dtype,
        device=request.device,
        plan=dict(plan or {}),
        upscaler=refs.upscaler,
        upscale_scale=upscale_scale if refs.upscaler is not None else None,
        modelsafe_version=__version__,
        extra={
            **{
                name: str(value.resolve())
                for name, value in (
                    ("tokenizers", request.tokenizers),
                    ("config_dir", request.config_dir),
                )
                if value is not None
            },
            **({"sampling": dict(sampling)} if sampling else {}),
            **({"folder_ids": dict(refs.folder_ids)} if refs.folder_ids else {}),
        },
    )


def request_from_recipe(
    recipe: Recipe, catalog: Catalog | None = None, overridden: Iterable[str] = ()
) -> GenerateRequest:
    """A request that makes ``recipe``'s image again; each model is found by path, else by hash
    in the catalog, and a file whose hash changed is refused.

    ``overridden`` names the request fields the caller replaces (``checkpoint``, ``vae``,
    ``loras``, ``embeddings``, ``text_encoders``, ``controlnet``, ``refiner``, ``upscale``):
    the recipe's models there are not looked up (they may be on no machine at all). A recipe
    may leave ``seed`` (an image that does not record it) and ``scheduler`` (a sampler the
    backend lacks) open: that is refused unless ``overridden`` names them too. What reading the
    recipe found worth saying (:attr:`Recipe.warnings`: another tool's image, its prompt
    syntax) is reported with :func:`warn`."""
    skip = set(overridden)
    _refuse_open_settings(recipe, skip)
    for message in recipe.warnings:
        warn(message)

    folder_ids = _recipe_folder_ids(recipe)

    def find(ref: ModelRef, what: str) -> Path:
        return _find_model(ref, what, catalog, folder_ids)

    def unless(name: str, ref: ModelRef | None, what: str) -> Path | None:
        return None if ref is None or name in skip else find(ref, what)

    control = None
    if recipe.controlnet is not None and "controlnet" not in skip:
        if not recipe.control_image:
            raise UsageError(
                f"the image was made with the ControlNet {recipe.controlnet.name!r}, but its "
                "recipe does not record the control image (a parameters text never does)",
                hint=f"give both: {_OVERRIDE_FLAGS['ControlNet']}",
            )
        control = ControlNetSpec(
            find(recipe.controlnet, "ControlNet"),
            Path(recipe.control_image),
            recipe.control_scale,
        )
    checkpoint = (
        Path(recipe.checkpoint.path or recipe.checkpoint.name)
        if "checkpoint" in skip
        else find(recipe.checkpoint, "checkpoint")
    )
    return GenerateRequest(
        checkpoint=checkpoint,
        prompt=recipe.prompt,
        negative_prompt=recipe.negative_prompt,
        seed=None if recipe.seed == RANDOM_SEED else recipe.seed,
        steps=recipe.steps,
        cfg=recipe.cfg,
        width=recipe.width,
        height=recipe.height,
        scheduler=recipe.scheduler or None,
        # An A1111 block names no family: its "Euler" is flow_euler on a flow model.
        euler_means_flow=not recipe.family and "scheduler" not in skip,
        family=recipe.family or None,
        variant=recipe.variant,
        prediction_type=recipe.prediction_type,
        loras=() if "loras" in skip else _recipe_loras(recipe, find),
        vae=unless("vae", recipe.vae, "VAE"),
        text_encoders={}
        if "text_encoders" in skip
        else {(te.token or te.name): find(te, "text encoder") for te in recipe.text_encoders},
        embeddings=()
        if "embeddings" in skip
        else tuple(
            EmbeddingSpec(find(e, "embedding"), e.token or e.name) for e in recipe.embeddings
        ),
        controlnet=control,
        refiner=unless("refiner", recipe.refiner, "refiner"),
        refiner_switch=recipe.refiner_switch,
        clip_skip=recipe.clip_skip,
        true_cfg=recipe.true_cfg,
        plan=_recipe_settings(recipe),
        recipe_plan=dict(recipe.plan),
        backend=recipe.backend,
        upscale=unless("upscale", recipe.upscaler, "upscaler"),
        tokenizers=_existing(recipe.extra.get("tokenizers")),
        config_dir=_existing(recipe.extra.get("config_dir")),
    )


def _recipe_loras(recipe: Recipe, find: Callable[[ModelRef, str], Path]) -> tuple[LoraSpec, ...]:
    """The recipe's LoRAs, found. A parameters text (no family) may name one file twice: a
    ``Civitai resources`` entry (another name: the reader drops one named as a tag) for the
    file of a prompt tag is that tag's LoRA, applied once with the tag's weight; two tags of
    one name are refused (A1111 would apply the file twice; modelsafe never doubles it
    silently). A modelsafe recipe is run as it was made."""
    loras: list[LoraSpec] = []
    names: dict[Path, ModelRef] = {}  # resolved file -> the recipe's first entry for it
    for ref in recipe.loras:
        path = find(ref, "LoRA")
        first = names.get(path.resolve())
        if first is None or recipe.family:
            names.setdefault(path.resolve(), ref)
            loras.append(LoraSpec(path, ref.weight or 0.0))
            continue
        if first.name == ref.name:  # (the reader keeps a resource of a tag's name out)
            raise UsageError(
                f"the image's prompt gives the LoRA {ref.name[:80]!r} twice (weights "
                f"{first.weight or 0:g} and {ref.weight or 0:g}), both {path}: modelsafe does "
                "not apply one file twice",
                hint=f"give it once with {_OVERRIDE_FLAGS['LoRA']} (A1111 added the two: "
                f"--lora {path}:{(first.weight or 0) + (ref.weight or 0):g} is that for a plain "
                "LoRA)",
            )
        if (first.weight or 0.0) != (ref.weight or 0.0):
            warn(
                f"the image names the LoRA {path.name} twice, as {first.name[:80]!r} (weight "
                f"{first.weight or 0:g}) and as {ref.name[:80]!r} (weight {ref.weight or 0:g}, "
                f"its Civitai resources entry): applied once, with weight {first.weight or 0:g}"
            )
    return tuple(loras)


def _refuse_open_settings(recipe: Recipe, given: set[str]) -> None:
    """Refuse what the recipe leaves open and the caller does not give: the seed of an image
    that does not record it (A1111's ``Seed: -1``), a sampler the backend does not have, the
    Forge modules (VAE, text encoders) an image names by file name only."""
    if recipe.seed == RANDOM_SEED and "seed" not in given:
        raise UsageError(
            "the image does not record its seed (Seed: -1, or none): a random seed would make "
            "another image",
            hint="pass --seed N to make it with seed N",
        )
    if not recipe.scheduler and "scheduler" not in given:
        from modelsafe.runtime.recipe import SAMPLER_NAMES, SUPPORTED_SAMPLERS

        sampler = str(recipe.extra.get("sampler") or "")[:80]
        raise UsageError(
            f"the image was sampled with A1111's {sampler!r}, which modelsafe's diffusers "
            f"backend does not have (it runs {SUPPORTED_SAMPLERS})",
            hint="pass --scheduler NAME to make it with another sampler (the image will differ): "
            + ", ".join(SAMPLER_NAMES),
        )
    modules = recipe.extra.get("modules")
    if modules and not {"vae", "text_encoders"} & given:
        names = ", ".join(repr(str(m)[:60]) for m in list(modules)[:6])
        raise UsageError(
            f"the image was made with the Forge modules {names} (a VAE and text encoders, named "
            "by file name only, without a hash to find them by)",
            hint=f"give them: {_OVERRIDE_FLAGS['VAE']}, {_OVERRIDE_FLAGS['text encoder']}",
        )


def _recipe_settings(recipe: Recipe) -> dict[str, Any]:
    """The settings the recipe's image ran with (all of them when it records its plan)."""
    settings = recipe.plan.get("settings") if recipe.plan else None
    if isinstance(settings, Mapping):
        return dict(settings)
    return {"device": recipe.device, "dtype": recipe.dtype}


def _existing(path: Any) -> Path | None:
    return Path(path) if isinstance(path, str) and Path(path).is_dir() else None


def _recipe_folder_ids(recipe: Recipe) -> dict[str, str]:
    """The model folders' identities a recipe records (``extra["folder_ids"]``, path -> id;
    none in a recipe written before modelsafe kept them, or from a parameters text)."""
    value = recipe.extra.get("folder_ids")
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise UsageError(
            "the recipe's extra.folder_ids is not an object of folder paths and ids",
            hint="the image's recipe is damaged: give the models as flags, or generate anew "
            "without --from-image",
        )
    return dict(value)


def _find_model(
    ref: ModelRef, what: str, catalog: Catalog | None, folder_ids: Mapping[str, str] | None = None
) -> Path:
    """The file ``ref`` names: at its recorded path when that file still has the recorded
    sha256 (or AutoV2), or that folder its recorded identity (``folder_ids``), else the
    catalog's copy with that hash (checked to be unchanged since it was scanned). A file or
    folder that changed, a hash several models share, or none found is refused."""
    if ref.path and Path(ref.path).exists():
        path = Path(ref.path)
        _refuse_changed_folder(path, what, (folder_ids or {}).get(ref.path), catalog)
        recorded = ref.sha256 or ref.autov2
        if recorded and path.is_file():
            hashes = known_hashes(path, catalog)
            actual = str(hashes.get("sha256" if ref.sha256 else "autov2") or "")
            if actual.lower() != recorded.lower():
                kind = "sha256" if ref.sha256 else "AutoV2"
                raise UsageError(
                    f"the {what} {path} changed since the image was made "
                    f"({kind} {actual[:12]}..., recipe says {recorded[:12]}...)",
                    hint="restore the original file, or generate anew without --from-image",
                )
        return path
    digest = ref.sha256 or ref.autov2
    flag = _OVERRIDE_FLAGS.get(what, "")
    if catalog is not None and digest and _is_hash(digest):
        found = _catalog_copy(ref, digest, what, catalog)
        if found is not None:
            return found
    if catalog is not None and what == "LoRA" and not ref.path:
        found = _catalog_copy_by_name(ref, digest, what, catalog)
        if found is not None:
            return found
    raise UsageError(
        f"the {what} {ref.name[:80]!r} ({ref.path or 'no path'}, hash {digest or 'unknown'}) "
        "is not on this machine",
        hint=("put the file back, or " if ref.path else "")
        + "`modelsafe scan` the folder that holds it"
        + (f", or give it with {flag}" if flag else ""),
    )


def _refuse_changed_folder(
    path: Path, what: str, recorded: str | None, catalog: Catalog | None
) -> None:
    """Refuse a model folder whose identity is not the one the recipe records."""
    if recorded is None or not path.is_dir():
        return
    now = folder_identity(path, catalog)
    if now != recorded:
        raise UsageError(
            f"the {what} folder {path} changed since the image was made (its model files' "
            f"identity is now {(now or 'unreadable')[:12]}..., recipe says {recorded[:12]}...)",
            hint="restore the original files, or generate anew without --from-image",
        )


def _is_hash(digest: str) -> bool:
    """A hash prefix the catalog looks models up by (never a name: a recipe's hash is text
    from the image)."""
    from modelsafe.registry.catalog.queries import hash_prefix

    return hash_prefix(digest) is not None


def _catalog_copy(ref: ModelRef, digest: str, what: str, catalog: Catalog) -> Path | None:
    """The catalog's file with hash ``digest`` (None when it has none on disk). Refused: a
    prefix several models share, and a copy whose bytes changed since it was scanned."""
    from modelsafe.errors import ModelNotFoundError
    from modelsafe.registry.catalog import queries

    flag = _OVERRIDE_FLAGS.get(what, "")
    with catalog.session() as session:
        try:
            model = queries.find_model(session, digest)
        except ModelNotFoundError:
            return None
        except UsageError as exc:  # several models have that hash prefix
            raise UsageError(
                f"the {what} {ref.name[:80]!r} cannot be told by its hash: {exc.reason}",
                hint=f"give the one meant with {flag}" if flag else exc.hint,
            ) from None
        copies = _present_copies(session, model, queries.hash_prefix(digest))
    return _intact_copy(ref, what, copies)


def _catalog_copy_by_name(
    ref: ModelRef, digest: str | None, what: str, catalog: Catalog
) -> Path | None:
    """The copy of the one catalog model named exactly ``ref.name``, as A1111 finds a LoRA
    its image's hash does not name (None when no model, or several, have that name). Said in a
    warning: the file may not be the one the image was made with."""
    from modelsafe.registry.catalog import queries

    with catalog.session() as session:
        named = queries.models_named(session, ref.name)
        if len(named) != 1:
            return None
        copies = _present_copies(session, named[0], None)
    found = _intact_copy(ref, what, copies)
    if found is not None:
        why = f"no scanned file has its hash {digest}" if digest else "the image gives no hash"
        warn(
            f"the {what} {ref.name[:80]!r} matched by name, not by hash ({why}): using {found}, "
            "which may not be the file the image was made with"
        )
    return found


def _present_copies(
    session: Session, model: Model, digest: str | None
) -> list[tuple[Path, str, bool]]:
    """(path, recorded sha256, unchanged since scanned) of the model's copies on disk, best
    first; with ``digest`` (a lower-case hash prefix), only those with that hash."""
    from modelsafe.registry.catalog import queries

    return [
        (
            Path(loc.path),
            str(((loc.extra or {}).get("hashes") or {}).get("sha256") or model.sha256),
            queries.location_of_file(session, Path(loc.path)) is not None,
        )
        for loc in sorted(model.locations, key=queries.copy_preference)
        if loc.status == "present"
        and Path(loc.path).exists()
        and (
            digest is None
            or not (loc.extra or {}).get("hashes")
            or queries.location_hash_matches(loc, digest)
        )
    ]


def _intact_copy(ref: ModelRef, what: str, copies: list[tuple[Path, str, bool]]) -> Path | None:
    """The first of ``copies`` whose bytes are still the scanned ones (None when there is
    none); a copy that changed is refused when no other is left."""
    flag = _OVERRIDE_FLAGS.get(what, "")
    changed: list[tuple[Path, str, str]] = []  # (copy, sha256 now, recorded)
    for path, recorded, unchanged in copies:
        if not (path.is_file() and not unchanged):
            intact: Path | None = path  # (a folder's identity is the catalog's; a file unchanged)
        else:
            now = str(known_hashes(path, None).get("sha256"))
            intact = path if now == recorded else None
            if intact is None:
                changed.append((path, now, recorded))
        if intact is not None:
            if changed:
                warn(
                    f"the catalog's copy of the {what} {ref.name[:80]!r} at {changed[0][0]} "
                    f"changed since it was scanned; using its copy at {intact}, which still has "
                    "the recorded hash"
                )
            return intact
    if not changed:
        return None
    path, now, recorded = changed[0]
    others = f" (and {len(changed) - 1} more of its copies)" if len(changed) > 1 else ""
    raise UsageError(
        f"the catalog's copy of the {what} {ref.name[:80]!r} at {path}{others} changed since it "
        f"was scanned (sha256 now {now[:12]}..., recorded {recorded[:12]}...)",
        hint="run `modelsafe scan` on its folder"
        + (f", or give the file with {flag}" if flag else ""),
    )


# The generate flag that replaces a recipe's model of each kind (--from-image).
_OVERRIDE_FLAGS = {
    "checkpoint": "--checkpoint PATH",
    "LoRA": "--lora PATH:WEIGHT",
    "VAE": "--vae PATH",
    "text encoder": "--text-encoder NAME=PATH",
    "embedding": "--embedding PATH:TOKEN",
    "ControlNet": "--controlnet PATH --control-image IMAGE",
    "refiner": "--refiner PATH",
    "upscaler": "--upscale MODEL",
}


# -- warnings ------------------------------------------------------------------------------------

# Where warn() sends a warning while generate() runs (set by generate for its run).
_WARNINGS: ContextVar[Warn | None] = ContextVar("modelsafe_generate_warnings", default=None)


def warn(message: str) -> None:
    """Report a warning of the running generation: the run goes on, the user is told once.

    :func:`generate` collects them into ``GenerateResult.warnings`` and passes each to its
    ``warn`` callback as it happens (the CLI prints ``warning: ...`` on stderr at once, so a
    warning found before a slow load shows before it). Backends call this too (the diffusers
    backend turns diffusers/transformers/peft log lines into these). Outside a run it is a
    Python warning."""
    sink = _WARNINGS.get()
    if sink is None:
        import warnings

        warnings.warn(message, stacklevel=2)
        return
    sink(message)


@contextmanager
def collect_warnings(callback: Warn | None) -> Iterator[list[str]]:
    found: list[str] = []

    def sink(message: str) -> None:
        if message in found:
            return  # said once
        found.append(message)
        if callback is not None:
            callback(message)

    token = _WARNINGS.set(sink)
    try:
        yield found
    finally:
        _WARNINGS.reset(token)


# -- how the run samples -----------------------------------------------------------------------

# Where record_sampling() puts what the backend says while generate() runs its backend.
_SAMPLING: ContextVar[dict[str, Any] | None] = ContextVar(
    "modelsafe_generate_sampling", default=None
)


def record_sampling(info: Mapping[str, Any]) -> None:
    """A backend says how it samples the run's images (scheduler class, noise schedule,
    prediction type, sigmas, latent format): :func:`generate` keeps it in each image's recipe
    (``extra["sampling"]``) and in its result (``sampling``). Outside a run it is dropped."""
    sink = _SAMPLING.get()
    if sink is not None:
        sink.clear()
        sink.update(info)


# -- the run -------------------------------------------------------------------------------------


def generate(
    request: GenerateRequest,
    out_dir: Path | None = None,
    *,
    progress: Progress | None = None,
    catalog: Catalog | None = None,
    pm: ModelsafePluginManager | None = None,
    warn: Warn | None = None,
) -> GenerateResult:
    """Run ``request``; save PNGs under ``out_dir`` and record them in ``catalog`` (if given).

    ``warn`` is called with each warning as the run finds it (they are also in the result)."""
    import time

    started = time.perf_counter()
    with collect_warnings(warn) as warnings:
        result = _generate(request, out_dir, progress=progress, catalog=catalog, pm=pm)
    return replace(result, seconds=time.perf_counter() - started, warnings=tuple(warnings))


def _generate(
    request: GenerateRequest,
    out_dir: Path | None,
    *,
    progress: Progress | None,
    catalog: Catalog | None,
    pm: ModelsafePluginManager | None,
) -> GenerateResult:
    from modelsafe.plugin_manager import get_plugin_manager
    from modelsafe.runtime.generate_plan import settle

    pm = pm or get_plugin_manager()
    out_dir = out_dir or Path("outputs")
    # Everything that can be checked without loading a model, before anything loads.
    check_numbers(request)
    check_out_dir(out_dir)
    check_input_files(request)
    upscaler = None
    if request.upscale is not None:
        from modelsafe.runtime.upscalers.select import find_upscaler

        request = replace(request, upscale=find_upscaler(request.upscale, catalog))
    refuse_unsafe(request.input_files())
    request = with_catalog_overrides(request, catalog)
    request, backend = check_before_load(request, pm)
    if isinstance(request.upscale, Path):
        from modelsafe.runtime.upscalers.select import describe_upscaler

        upscaler = describe_upscaler(request.upscale)
    settled = settle(request, catalog)  # the VRAM plan: refused here, before any load
    check_device(str(settled.settings.get("device", "cpu")))
    request = replace(request, plan=settled.settings)
    refs = input_refs(request, catalog)
    seeds = request.image_seeds()
    said: dict[str, Any] = {}
    token = _SAMPLING.set(said)
    try:
        images = _call_backend(
            backend, "generate", backend.generate, request, progress or _no_progress
        )
    finally:
        _SAMPLING.reset(token)
    sampling = said or dict(request.sampling)  # a backend that says nothing: the markers'
    _check_images(backend.name, images, len(seeds))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the output folder {out_dir}: {exc}") from exc
    results: list[GeneratedImage] = []
    number = _next_number(out_dir)
    for offset, (image, seed) in enumerate(zip(images, seeds, strict=True)):
        recipe = build_recipe(
            request,
            seed,
            refs,
            settled.to_json(),
            upscaler.scale if upscaler else None,
            sampling=sampling,
        )
        image = postprocess(image, recipe, request, pm)
        path = out_dir / f"{number + offset:05d}-{seed}.png"
        digest = save_png(image, path)
        results.append(GeneratedImage(path, seed, digest, recipe))
    if catalog is not None:
        results = record_outputs(catalog, results, refs)
    return GenerateResult(tuple(results), request, sampling=sampling)


def check_before_load(
    request: GenerateRequest, pm: ModelsafePluginManager | None = None
) -> tuple[GenerateRequest, Backend]:
    """generate's refusals of an audited request that read only headers and configs: a denoiser
    text-to-image cannot feed (:func:`check_denoiser`), the family and its defaults
    (:func:`with_defaults`), the backend's own ``check`` (a scheduler the model's sampling cannot
    use, a VAE or LoRA it cannot apply), the LoRAs and embeddings against the checkpoint
    (:func:`check_compatibility`). Returns the request with its defaults and the backend."""
    from modelsafe.runtime.backends import get_backend

    check_denoiser(request)  # an inpainting / image-editing model: nothing to feed it
    request = with_defaults(request)
    backend = get_backend(request.backend, pm)
    check = getattr(backend, "check", None)
    if callable(check):  # a backend's own checks of the inputs (headers only, no load)
        _call_backend(backend, "check", check, request)
    check_compatibility(request)  # LoRAs and embeddings, as `modelsafe resolve` judges them
    return request, backend


def check_later_run(
    request: GenerateRequest,
    pm: ModelsafePluginManager | None = None,
    catalog: Catalog | None = None,
) -> None:
    """For a request that runs later, maybe on another machine (a job being submitted): raise
    now what generate would refuse it with before loading anything (:func:`check_before_load`),
    its warnings dropped (the run reports them). Not checked here: the output folder and the
    VRAM plan (the run's machine decides them) and the upscaler (not looked up). An input that
    the audit does not find safe is left to the run, whose audit refuses it with its findings;
    with no backend of the request's name here, only the denoiser is checked."""
    from modelsafe.runtime.backends import available_backends

    with collect_warnings(None):
        check_numbers(request)
        check_input_files(request)
        try:
            refuse_unsafe(request.input_files())
        except (UnsafeFileError, FileReadError):
            return
        request = with_catalog_overrides(request, catalog)
        if request.backend not in available_backends(pm):
            check_denoiser(request)
            return
        check_before_load(request, pm)


def _no_progress(step: int, total: int) -> None:
    """The progress callback when nothing shows one: backends may always call it."""


def _call_backend(backend: Any, what: str, call: Callable[..., Any], *args: Any) -> Any:
    """A backend's ``check()`` or ``generate()``: a ModelsafeError is its answer; anything else
    it raises is a BackendError naming the backend (exit 2), not an unexpected error."""
    from modelsafe.errors import BackendError, ModelsafeError

    try:
        return call(*args)
    except ModelsafeError:
        raise
    except Exception as exc:
        if _out_of_memory(exc):
            raise BackendError(
                f"ran out of memory in backend {backend.name!r} ({type(exc).__name__}: "
                f"{str(exc)[:200]})",
                hint="lower --width/--height/--batch, or let the planner fit the run to your "
                "memory: --vram SIZE (or --vae-tiling, --offload model)",
            ) from exc
        raise BackendError(
            f"backend {backend.name!r} failed in {what}(): {type(exc).__name__}: {exc}",
            hint="report it to the backend's author (MODELSAFE_DEBUG=1 shows the traceback), "
            "or choose another with --backend",
        ) from exc


def _out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is the machine running out of memory: Python's MemoryError, torch's
    OutOfMemoryError (CUDA and others), or the CPU allocator's "can't allocate memory"."""
    if isinstance(exc, MemoryError):
        return True
    if any(cls.__name__ == "OutOfMemoryError" for cls in type(exc).__mro__):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def _check_images(backend: str, images: Any, seeds: int) -> None:
    """What a backend returned must be one PIL image per seed."""
    from PIL import Image

    from modelsafe.errors import BackendError

    if not isinstance(images, list | tuple):
        raise BackendError(
            f"backend {backend!r} returned {type(images).__name__}, not a list of images",
            hint="report it to the backend's author, or choose another with --backend",
        )
    if len(images) != seeds:
        raise BackendError(f"backend {backend!r} returned {len(images)} images for {seeds} seeds")
    wrong = next((i for i in images if not isinstance(i, Image.Image)), None)
    if wrong is not None:
        raise BackendError(
            f"backend {backend!r} returned a {type(wrong).__name__} where an image was due",
            hint="report it to the backend's author, or choose another with --backend",
        )


def postprocess(image: Any, recipe: Recipe, request: GenerateRequest, pm: Any) -> Any:
    """Pass ``image`` through every ``modelsafe_postprocess`` plugin, in turn (each sees the
    image the one before returned). One that raises, or returns something that is not an image,
    is named in a warning and skipped: a broken plugin never loses the image. Traced by
    ``MODELSAFE_TRACE_PLUGINS=1`` like every hook."""
    from PIL import Image

    recipe_chunks: dict[str, str] = {}  # what the metadata writer wrote, kept to the end
    for impl in pm._impls("modelsafe_postprocess"):
        ok, replaced = pm.call_impl(
            impl, "modelsafe_postprocess", image=image, recipe=recipe, request=request
        )
        if ok and replaced is not None and not isinstance(replaced, Image.Image):
            pm.record_failure(
                impl.plugin_name,
                "modelsafe_postprocess",
                f"returned {type(replaced).__name__}, not an image: ignored",
            )
        elif ok and replaced is not None:
            image = replaced
        if impl.plugin_name == METADATA_WRITER:
            recipe_chunks = {k: v for k, v in image.info.items() if isinstance(v, str)}
    for key, value in recipe_chunks.items():  # a later plugin's new image keeps the recipe
        image.info.setdefault(key, value)
    return image


# The built-in post-processor that writes the recipe chunks (``parameters``, ``modelsafe``).
METADATA_WRITER = "postprocess_png_metadata"


def save_png(image: Any, path: Path) -> str:
    """Write ``image`` as PNG with its text ``info`` entries as chunks; return the file's sha256."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in image.info.items():
        if isinstance(key, str) and isinstance(value, str):
            info.add_text(key, value)
    tmp = path.with_name(path.name + ".part")
    image.save(tmp, format="PNG", pnginfo=info)
    tmp.replace(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _next_number(out_dir: Path) -> int:
    numbers = [int(p.name[:5]) for p in out_dir.glob("*.png") if p.name[:5].isdigit()]
    return max(numbers, default=-1) + 1


def record_outputs(
    catalog: Catalog, images: list[GeneratedImage], refs: InputRefs
) -> list[GeneratedImage]:
    """One ``outputs`` row per image (path, sha256, recipe, the checkpoint's catalog id)."""
    from modelsafe.registry.catalog.models import Output

    checkpoint = Path(refs.checkpoint.path)
    model_id = _catalog_hashes(checkpoint, catalog).get("model_id") if checkpoint.exists() else None
    done: list[GeneratedImage] = []
    with catalog.session() as session:
        rows = []
        for image in images:
            row = Output(
                path=str(image.path.resolve()),
                sha256=image.sha256,
                checkpoint_id=model_id,
                recipe=image.recipe.to_json(),
            )
            session.add(row)
            rows.append(row)
        session.flush()
        done = [replace(img, output_id=row.id) for img, row in zip(images, rows, strict=True)]
    return done
