"""``plan``: choose dtype, offload, VAE tiling/slicing and attention slicing for a VRAM budget,
and say the expected peak per phase (text encoding, denoising, decode) and why.

Every combination of the memory-saving options is priced with the formulas of
``modelsafe.runtime.vram_model`` (activations) and ``modelsafe.registry.vram`` (weights); the
plan is the cheapest combination (in speed and quality, see ``COSTS``) whose peak fits. When none
fits, the plan says so, shows the smallest peak, and what would fit (a lower resolution, batch 1).
"""

from __future__ import annotations

import itertools
import sys
import types
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from modelsafe.errors import UsageError
from modelsafe.registry.model_parts import TRANSFORMER_FAMILIES
from modelsafe.runtime.vram_model import (
    CUDA_CONTEXT_BYTES,
    DTYPE_BYTES,
    Arch,
    arch_for,
    decode_activation_bytes,
    denoise_activation_bytes,
    text_activation_bytes,
)
from modelsafe.types import Part, to_jsonable

PHASES = ("text_encoding", "denoising", "decode")
# Relative price of each option (speed or quality given up); the plan minimises the sum.
COSTS = {
    "vae_slicing": 1,
    "vae_tiling": 2,
    "attention_slicing": 3,
    "offload=model": 4,
    "text_encoder_fp8": 5,
    "denoiser_fp8": 6,
    "offload=sequential": 20,
}
# Parameter counts of parts a family needs when the set does not hold them (sizes assumed).
DEFAULT_PARAMS = {
    "clip_l": 123_060_480,
    "openclip_h": 354_030_592,
    "clip_g": 694_659_840,
    "t5xxl": 4_762_310_656,
    # The encoders of the families modelsafe resolves but does not generate (runtime/family_needs
    # OTHER_NEEDS), counted from their released configs without the LM head; Qwen2.5-VL-7B with
    # its vision tower (Qwen-Image loads the whole model).
    "umt5xxl": 5_680_910_336,
    "qwen2.5_vl_7b": 7_747_175_000,
    "qwen3_4b": 4_022_468_096,
    "qwen3_8b": 7_568_405_504,
    "gemma2_2b": 2_614_341_888,
    "llama3.1_8b": 7_504_924_672,
    "llava_llama3_8b": 7_505_186_816,
    "mistral_small_3_24b": 22_901_314_560,
    "byt5_small_glyph": 219_316_000,
    "vae": 83_653_863,
}
# Each encoder's largest layer in fp16 bytes: its token-embedding table.
DEFAULT_LARGEST = {
    "t5xxl": 32128 * 4096 * 2,
    "clip_g": 49408 * 1280 * 2,
    "clip_l": 49408 * 768 * 2,
    "umt5xxl": 256384 * 4096 * 2,
    "qwen2.5_vl_7b": 152064 * 3584 * 2,
    "qwen3_4b": 151936 * 2560 * 2,
    "qwen3_8b": 151936 * 4096 * 2,
    "gemma2_2b": 256000 * 2304 * 2,
    "llama3.1_8b": 128256 * 4096 * 2,
    "llava_llama3_8b": 128320 * 4096 * 2,
    "mistral_small_3_24b": 131072 * 5120 * 2,
}
# Transformer families compute in bf16 and have a width (``hidden_size``) the planner reads.
DIT_FAMILIES = TRANSFORMER_FAMILIES


@dataclass(frozen=True)
class Weights:
    """One model the plan loads: its bytes at each precision and the phase that uses it."""

    name: str
    phase: str
    sizes: dict[str, int]
    largest_layer_fp16: int
    role: str  # denoiser | vae | text_encoder | lora | controlnet
    quantized: bool = False
    assumed: bool = False


@dataclass(frozen=True)
class Options:
    offload: str = "none"  # none | model | sequential
    denoiser_fp8: bool = False
    text_encoder_fp8: bool = False
    vae_tiling: bool = False
    vae_slicing: bool = False
    attention_slicing: bool = False

    def cost(self) -> int:
        names = [k for k in ("vae_slicing", "vae_tiling", "attention_slicing") if getattr(self, k)]
        names += ["text_encoder_fp8"] if self.text_encoder_fp8 else []
        names += ["denoiser_fp8"] if self.denoiser_fp8 else []
        names += [f"offload={self.offload}"] if self.offload != "none" else []
        return sum(COSTS[n] for n in names)


@dataclass(frozen=True)
class Phase:
    name: str
    peak: int
    weights: int
    activations: int
    overhead: int
    resident: tuple[str, ...]


@dataclass(frozen=True)
class Choice:
    name: str
    value: str
    why: str


@dataclass(frozen=True)
class Plan:
    """``modelsafe plan``'s answer; ``fits`` is True only when ``peak <= budget``."""

    budget: int
    fits: bool
    peak: int
    width: int
    height: int
    batch: int
    options: Options
    dtypes: dict[str, str]
    phases: tuple[Phase, ...]
    choices: tuple[Choice, ...]
    weights: tuple[Weights, ...]
    suggestions: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    resolve: dict[str, Any] | None = field(default=None)

    def as_json(self) -> dict[str, Any]:
        value = to_jsonable(self)
        assert isinstance(value, dict)
        return value


# -- sizing the set ------------------------------------------------------------------------------


def _sizes(part: Part) -> dict[str, dict[str, int]]:
    if part.index is None:
        vram = part.report.get("vram") or {}
        comps = vram.get("components") or {}
        return {str(k): dict(v) for k, v in comps.items() if isinstance(v, dict)}
    from modelsafe.registry.vram import estimate_component_vram

    vram = estimate_component_vram(part.index, part.family, part.kind, dict(part.facts))
    return {str(k): dict(v) for k, v in (vram.get("components") or {}).items()}


def _assumed(name: str, params: int) -> Weights:
    sizes = {"fp32": 4 * params, "fp16": 2 * params, "bf16": 2 * params, "fp8": params}
    sizes["native"] = sizes["bf16"]
    role = "vae" if name == "vae" else "text_encoder"
    phase = "decode" if role == "vae" else "text_encoding"
    largest = DEFAULT_LARGEST.get(name, params // 20)
    return Weights(name, phase, sizes, largest, role, assumed=True)


def collect_weights(
    base: Part, parts: Iterable[Part], missing: Iterable[str] = ()
) -> list[Weights]:
    """Every model the set loads, with the phase it runs in."""
    out: list[Weights] = []
    quantized = str(base.report.get("format")) == "gguf"
    vae_supplied = any(p.kind == "vae" for p in parts)
    for name, sizes in _sizes(base).items():
        largest = int(sizes.get("largest_layer_fp16", 0))
        if name.startswith("text_encoder."):
            out.append(
                Weights(name.split(".", 1)[1], "text_encoding", sizes, largest, "text_encoder")
            )
        elif name == "vae":
            if not vae_supplied:
                out.append(Weights("vae", "decode", sizes, largest, "vae"))
        elif name in ("unet", "transformer", "controlnet"):
            out.append(Weights(name, "denoising", sizes, largest, "denoiser", quantized))
    for part in parts:
        for name, sizes in _sizes(part).items():
            largest = int(sizes.get("largest_layer_fp16", 0))
            label = f"{part.kind}:{part.path or part.ref}"
            if part.kind in ("lora", "lycoris"):
                out.append(Weights(label, "denoising", sizes, largest, "lora"))
            elif part.kind in ("controlnet", "t2i_adapter", "ip_adapter"):
                out.append(Weights(label, "denoising", sizes, largest, "controlnet"))
            elif part.kind == "vae":
                out.append(Weights("vae", "decode", sizes, largest, "vae"))
            elif part.kind == "text_encoder":
                tag = part.variant or name.rsplit(".", 1)[-1]
                gguf = str(part.report.get("format")) == "gguf"
                out.append(Weights(tag, "text_encoding", sizes, largest, "text_encoder", gguf))
    for slot in missing:
        if slot in DEFAULT_PARAMS:
            out.append(_assumed(slot, DEFAULT_PARAMS[slot]))
    return out


# -- pricing one combination ---------------------------------------------------------------------


# How a file stores its weights, by its bytes per parameter (``native`` over ``parameters``):
# packed below 8 bits (bitsandbytes NF4, nunchaku int4, NVFP4), in fp8 (its biases
# and norms, a few per cent of the bytes, may stay 16- or 32-bit: ComfyUI's fp8_e4m3fn and
# scaled-fp8 files), or wider. Loaders keep such weights as stored and compute layer by layer.
_PACKED_BELOW = 0.9
_FP8_UP_TO = 1.1
# Why a model's stored precision is kept (the plan's choice lines).
_GGUF_KEPT = "GGUF-quantised weights stay quantised (dequantised layer by layer)"
_FP8_KEPT = "the file is stored in fp8; upcasting would double the weights for no gain"


def stored(w: Weights) -> str | None:
    """``packed`` or ``fp8`` for weights a file stores that narrow, else None."""
    native, params = w.sizes.get("native", 0), w.sizes.get("parameters", 0)
    if w.assumed or not native or not params:
        return None
    if native < _PACKED_BELOW * params:
        return "packed"
    return "fp8" if native <= _FP8_UP_TO * params else None


def _dtypes(family: str, weights: list[Weights], opts: Options, bf16: bool) -> dict[str, str]:
    compute = "bf16" if bf16 and family in DIT_FAMILIES else "fp16"
    out: dict[str, str] = {}
    for w in weights:
        if w.role == "denoiser":
            kept = stored(w)
            if w.quantized or kept == "packed":
                out[w.name] = "native"
            elif opts.denoiser_fp8 or kept == "fp8":
                out[w.name] = "fp8"
            else:
                out[w.name] = compute
        elif w.role == "text_encoder" and w.quantized:
            out[w.name] = "native"  # (a GGUF encoder stays quantised, as its denoiser would)
        elif w.role == "text_encoder":
            fp8 = stored(w) == "fp8" or (opts.text_encoder_fp8 and w.name == "t5xxl")
            out[w.name] = "fp8" if fp8 else compute
        elif w.role == "vae":
            # SDXL's VAE overflows in fp16: diffusers' SDXL pipelines see `force_upcast` in its
            # config and decode in fp32 (measured: docs/benchmarks.md, H100 SDXL check).
            if family in ("sdxl", "sdxl_refiner"):
                out[w.name] = "fp32"
            else:
                out[w.name] = "bf16" if compute == "bf16" else "fp16"
        else:
            out[w.name] = compute
    return out


def _bytes(w: Weights, dtype: str) -> int:
    return int(w.sizes.get(dtype, w.sizes.get("native", 0)))


def _layer_bytes(w: Weights, dtype: str) -> int:
    if dtype == "native":
        ratio = w.sizes.get("native", 0) / max(1, w.sizes.get("fp16", 1))
        return int(w.largest_layer_fp16 * ratio)
    return int(w.largest_layer_fp16 * (1 if dtype == "fp8" else DTYPE_BYTES[dtype]) / 2)


def price(
    arch: Arch,
    family: str,
    weights: list[Weights],
    opts: Options,
    width: int,
    height: int,
    batch: int,
    *,
    bf16: bool = True,
    attention: str = "sdpa",
) -> tuple[tuple[Phase, ...], dict[str, str]]:
    """The phases (peak, weights, activations) of one combination of options."""
    dtypes = _dtypes(family, weights, opts, bf16)
    compute = "bf16" if bf16 and family in DIT_FAMILIES else "fp16"
    all_bytes = sum(_bytes(w, dtypes[w.name]) for w in weights)
    controlnets = sum(1 for w in weights if w.role == "controlnet")
    vae_dtype = next((dtypes[w.name] for w in weights if w.role == "vae"), compute)
    acts = {
        "text_encoding": text_activation_bytes(arch, batch, compute),
        "denoising": int(
            denoise_activation_bytes(
                arch,
                width,
                height,
                batch,
                compute,
                attention=attention,
                attention_slicing=opts.attention_slicing,
            )
            * (1 + 0.5 * controlnets)
        ),
        "decode": decode_activation_bytes(
            arch,
            width,
            height,
            batch,
            vae_dtype,
            tiling=opts.vae_tiling,
            slicing=opts.vae_slicing,
        ),
    }
    phases = []
    for name in PHASES:
        here = [w for w in weights if w.phase == name]
        if opts.offload == "none":
            resident = all_bytes
            names = tuple(w.name for w in weights)
        elif opts.offload == "model":
            resident = sum(_bytes(w, dtypes[w.name]) for w in here)
            names = tuple(w.name for w in here)
        else:
            resident = max((_layer_bytes(w, dtypes[w.name]) for w in here), default=0)
            names = tuple(f"{w.name} (one layer at a time)" for w in here)
        peak = CUDA_CONTEXT_BYTES + resident + acts[name]
        phases.append(Phase(name, peak, resident, acts[name], CUDA_CONTEXT_BYTES, names))
    return tuple(phases), dtypes


def _combinations(weights: list[Weights], batch: int, attention: str) -> list[Options]:
    has_t5 = any(w.name == "t5xxl" and not w.quantized for w in weights)
    can_fp8 = any(w.role == "denoiser" and not w.quantized for w in weights)
    out = []
    for offload, den8, te8, tiling, slicing, att in itertools.product(
        ("none", "model", "sequential"),
        (False, True) if can_fp8 else (False,),
        (False, True) if has_t5 else (False,),
        (False, True),
        (False, True) if batch > 1 else (False,),
        (False, True) if attention == "naive" else (False,),
    ):
        out.append(Options(offload, den8, te8, tiling, slicing, att))
    return out


# -- the planner ---------------------------------------------------------------------------------


def plan_parts(
    base: Part,
    parts: list[Part],
    budget: int,
    *,
    width: int | None = None,
    height: int | None = None,
    batch: int = 1,
    missing: Iterable[str] = (),
    bf16: bool = True,
    attention: str = "sdpa",
) -> Plan:
    """Plan an already resolved set (no file is opened here)."""
    if budget <= 0:
        raise UsageError("the VRAM budget must be positive", hint="e.g. --vram 8GiB")
    if batch < 1:
        raise UsageError("--batch must be at least 1")
    hidden = base.facts.get("hidden_size") if base.family in DIT_FAMILIES else None
    arch = arch_for(base.family, hidden if isinstance(hidden, int) else None)
    width = width or arch.default_resolution
    height = height or arch.default_resolution
    weights = collect_weights(base, parts, missing)
    if not any(w.role == "denoiser" for w in weights):
        raise UsageError(
            f"{base.ref} holds no UNet or transformer to plan for",
            hint="give a checkpoint, a UNet or a transformer file",
        )

    def run(o: Options) -> tuple[tuple[Phase, ...], dict[str, str]]:
        return price(
            arch, base.family, weights, o, width, height, batch, bf16=bf16, attention=attention
        )

    priced = [(o, *run(o)) for o in _combinations(weights, batch, attention)]
    fitting = [p for p in priced if max(ph.peak for ph in p[1]) <= budget]
    notes = _notes(weights, arch, base.family, attention)
    if fitting:
        opts, phases, dtypes = min(fitting, key=lambda p: (p[0].cost(), max(x.peak for x in p[1])))
        suggestions: tuple[str, ...] = ()
    else:
        opts, phases, dtypes = min(priced, key=lambda p: max(x.peak for x in p[1]))
        suggestions = _suggest(
            base, parts, budget, width, height, batch, missing, bf16, attention, phases
        )
    peak = max(p.peak for p in phases)
    choices = _explain(opts, phases, budget, run, weights, dtypes, base.family, attention)
    return Plan(
        budget=budget,
        fits=peak <= budget,
        peak=peak,
        width=width,
        height=height,
        batch=batch,
        options=opts,
        dtypes=dtypes,
        phases=phases,
        choices=choices,
        weights=tuple(weights),
        suggestions=suggestions,
        notes=notes,
    )


def _gib(n: int) -> str:
    from modelsafe.units import format_size

    return format_size(n)


def _explain(
    opts: Options,
    phases: tuple[Phase, ...],
    budget: int,
    run: Any,
    weights: list[Weights],
    dtypes: dict[str, str],
    family: str,
    attention: str,
) -> tuple[Choice, ...]:
    peak = max(p.peak for p in phases)
    choices: list[Choice] = []

    def without(**change: Any) -> int:
        return max(p.peak for p in run(replace(opts, **change))[0])

    for w in weights:
        d = dtypes[w.name]
        if w.role == "denoiser":
            if d == "native" and w.quantized:
                why = _GGUF_KEPT
            elif d == "native":
                why = (
                    "the file stores its weights packed below 8 bits (NF4, int4, FP4); they stay "
                    "packed, each layer computed in 16 bits"
                )
            elif d == "fp8" and opts.denoiser_fp8:
                alt = _gib(without(denoiser_fp8=False))
                why = f"fp8 storage, computing in 16 bits: without it the peak is {alt}"
            elif d == "fp8":
                why = _FP8_KEPT
            else:
                why = f"{d}: half the bytes of fp32, no visible quality change for inference"
                if d == "bf16":
                    why += f" ({family} is trained in bf16; fp16 overflows in its activations)"
            choices.append(Choice(f"dtype {w.name}", d, why))
        elif w.role == "vae":
            why = (
                "SDXL's VAE overflows in fp16: diffusers upcasts it and decodes in fp32"
                if family.startswith("sdxl")
                else "matches the denoiser"
            )
            choices.append(Choice("dtype vae", d, why))
        elif w.role == "text_encoder" and (w.quantized or stored(w) == "fp8"):
            choices.append(Choice(f"dtype {w.name}", d, _GGUF_KEPT if w.quantized else _FP8_KEPT))
        elif w.role == "text_encoder" and w.name == "t5xxl":
            if opts.text_encoder_fp8:
                why = f"fp8 storage: without it the peak is {_gib(without(text_encoder_fp8=False))}"
            else:
                why = "fits in 16 bits"
            choices.append(Choice("dtype t5xxl", d, why))
    if opts.offload == "none":
        choices.append(Choice("offload", "none", "every model fits on the GPU at once: fastest"))
    else:
        prev = "model" if opts.offload == "sequential" else "none"
        why = f"with offload={prev} the peak is {_gib(without(offload=prev))}"
        if opts.offload == "model":
            why += "; model CPU offload keeps one model on the GPU per phase"
        else:
            why += "; sequential offload keeps one layer on the GPU at a time (much slower)"
        choices.append(Choice("offload", opts.offload, why))
    for name, label in (("vae_tiling", "VAE tiling"), ("vae_slicing", "VAE slicing")):
        if getattr(opts, name):
            choices.append(
                Choice(name, "on", f"without {label} the peak is {_gib(without(**{name: False}))}")
            )
        else:
            choices.append(
                Choice(
                    name,
                    "off",
                    f"not needed: the peak {_gib(peak)} fits {_gib(budget)}"
                    if peak <= budget
                    else "would not bring the peak under the budget",
                )
            )
    if attention == "sdpa":
        choices.append(
            Choice(
                "attention_slicing",
                "off",
                "PyTorch SDPA never builds the N x N score matrix; slicing would swap it for a "
                "slower sliced kernel without saving memory",
            )
        )
    elif opts.attention_slicing:
        choices.append(
            Choice(
                "attention_slicing",
                "on",
                f"without it the peak is {_gib(without(attention_slicing=False))}",
            )
        )
    else:
        choices.append(Choice("attention_slicing", "off", "the attention scores fit"))
    return tuple(choices)


def _notes(weights: list[Weights], arch: Arch, family: str, attention: str) -> tuple[str, ...]:
    notes = []
    for w in weights:
        if w.assumed:
            notes.append(
                f"{w.name} is not in the set; its size is assumed "
                f"({_gib(w.sizes['bf16'])} in 16 bits)"
            )
    if family not in ("sd1", "sd2", "sdxl", "sdxl_refiner", "sd3", "sd3.5", "flux1", "chroma"):
        notes.append(f"activation formula for {family} uses generic DiT/UNet sizes")
    notes.append("peaks include a 400 MiB CUDA context; formula and sources: docs/vram.md")
    return tuple(notes)


def _suggest(
    base: Part,
    parts: list[Part],
    budget: int,
    width: int,
    height: int,
    batch: int,
    missing: Iterable[str],
    bf16: bool,
    attention: str,
    phases: tuple[Phase, ...],
) -> tuple[str, ...]:
    best = max(p.peak for p in phases)
    out = [f"the smallest peak reachable is {_gib(best)} (budget {_gib(budget)})"]
    missing = list(missing)
    if batch > 1:
        p = plan_parts(
            base,
            parts,
            budget,
            width=width,
            height=height,
            batch=1,
            missing=missing,
            bf16=bf16,
            attention=attention,
        )
        if p.fits:
            out.append("batch 1 fits")
    for side in (1024, 768, 512, 384, 256):
        if side * side >= width * height:
            continue
        p = plan_parts(
            base,
            parts,
            budget,
            width=side,
            height=side,
            batch=1,
            missing=missing,
            bf16=bf16,
            attention=attention,
        )
        if p.fits:
            out.append(f"{side}x{side} at batch 1 fits (peak {_gib(p.peak)})")
            break
    worst = max(phases, key=lambda p: p.peak)
    out.append(
        f"the {worst.name} phase needs {_gib(worst.peak)}: a GPU with that much memory would fit"
    )
    return tuple(out)


def parse_resolution(text: str) -> tuple[int, int]:
    """``1024x768`` -> (1024, 768); multiples of 8 only."""
    try:
        w, h = (int(x) for x in text.lower().replace("*", "x").split("x"))
    except ValueError:
        raise UsageError(f"{text!r} is not a resolution", hint="write it like 1024x1024") from None
    if w <= 0 or h <= 0 or w % 8 or h % 8:
        raise UsageError(f"{text!r}: width and height must be positive multiples of 8")
    return w, h


def plan(
    checkpoint: str,
    *,
    vram: int | str | None = None,
    resolution: str | tuple[int, int] | None = None,
    batch: int = 1,
    loras: Iterable[str | tuple[str, float]] = (),
    vae: str | None = None,
    embeddings: Iterable[str] = (),
    controlnets: Iterable[str] = (),
    text_encoders: Iterable[str] = (),
    catalog: Any = None,
    bf16: bool = True,
    attention: str = "sdpa",
) -> Plan:
    """Resolve the set, then plan it for ``vram`` bytes (default: the ``vram`` setting)."""
    from modelsafe.config import load_config
    from modelsafe.runtime.resolve import resolve
    from modelsafe.units import parse_size

    budget = parse_size(vram) if vram is not None else load_config().vram
    if budget is None:
        raise UsageError(
            "no VRAM budget given",
            hint="pass --vram 8GiB, or set vram in the config file / MODELSAFE_VRAM",
        )
    if attention not in ("sdpa", "naive"):
        raise UsageError(f"unknown attention {attention!r}", hint="sdpa or naive")
    width = height = None
    if resolution is not None:
        width, height = parse_resolution(resolution) if isinstance(resolution, str) else resolution
    result = resolve(
        checkpoint,
        loras=loras,
        vae=vae,
        embeddings=embeddings,
        controlnets=controlnets,
        text_encoders=text_encoders,
        catalog=catalog,
    )
    base, *parts = result.loaded
    accepted = [p for p, r in zip(parts, result.parts, strict=True) if r.status != "rejected"]
    out = plan_parts(
        base,
        accepted,
        budget,
        width=width,
        height=height,
        batch=batch,
        missing=[m.slot for m in result.missing],
        bf16=bf16,
        attention=attention,
    )
    return replace(out, resolve=result.as_json())


class _CallableModule(types.ModuleType):
    """Lets ``modelsafe.runtime.plan(...)`` call :func:`plan` after this module was imported."""

    def __call__(self, *args: Any, **kwargs: Any) -> Plan:
        return plan(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
