"""The recipe of one generated image, and its two PNG forms.

A recipe names every input by path *and* hash (sha256 + Civitai AutoV2), with every setting that
decides the pixels. It is written into each PNG twice:

- ``parameters``: the A1111 text block that A1111, Forge, ComfyUI importers and Civitai read
  (prompt line, ``Negative prompt:`` line, then ``Key: value`` pairs);
- ``modelsafe``: the recipe as JSON (``schema`` = ``modelsafe.recipe/1``), which is authoritative
  when both are present.

Both parse back (:func:`recipe_from_png`, which reads the text without decoding pixels, and also
takes a JPEG's or WebP's EXIF UserComment); an A1111 block alone (A1111's, Forge's, Civitai's, or
modelsafe's own) gives a partial recipe whose models are known by name and hash. A setting the
block records that modelsafe cannot apply is refused by name (:class:`UnreproducibleError`), a
damaged or foreign recipe is a :class:`RecipeReadError`, and what will make another tool's image
differ is kept in :attr:`Recipe.warnings`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from modelsafe.errors import ModelsafeError, UsageError

SCHEMA = "modelsafe.recipe/1"
PARAMETERS_KEY = "parameters"
JSON_KEY = "modelsafe"

# scheduler id -> A1111 "Sampler" (and "Schedule type" when not the default one).
SAMPLER_NAMES: dict[str, tuple[str, str]] = {
    "euler": ("Euler", ""),
    "euler_a": ("Euler a", ""),
    "heun": ("Heun", ""),
    "lms": ("LMS", ""),
    "ddim": ("DDIM", ""),
    "pndm": ("PLMS", ""),
    "unipc": ("UniPC", ""),
    "dpmpp_2m": ("DPM++ 2M", ""),
    "dpmpp_2m_karras": ("DPM++ 2M", "Karras"),
    "flow_euler": ("Euler", "Simple"),
}


@dataclass(frozen=True)
class ModelRef:
    """One input model: where it was and what its bytes were."""

    name: str
    path: str = ""
    sha256: str | None = None
    autov2: str | None = None
    weight: float | None = None  # LoRAs: the strength it was applied with
    token: str | None = None  # embeddings: the prompt token it was loaded as
    # LoRAs: the hash A1111/Forge know the file by (hashing.a1111_lora_hash; None: its sha256)
    a1111_lora: str | None = None

    @property
    def short_hash(self) -> str:
        return self.autov2 or (self.sha256 or "")[:10]

    @property
    def lora_hash(self) -> str:
        """Its ``Lora hashes`` value, as A1111 writes it: 12 hex of its A1111 LoRA hash (its
        sha256 for a file that is not safetensors); a value read from an image is kept."""
        return (self.a1111_lora or self.sha256 or "")[:12] or self.short_hash

    @property
    def ti_hash(self) -> str:
        """Its ``TI hashes`` value, as A1111 writes it (``Embedding.set_hash``): 12 hex of its
        sha256; a value read from an image is kept."""
        return (self.sha256 or "")[:12] or self.short_hash


class RecipeReadError(UsageError):
    """An image's recipe cannot be read: damaged, hostile, or not a recipe modelsafe knows.
    :func:`recipe_from_png` says which image (``cannot read the recipe in IMG: ...``)."""


_DEFAULT_HINT = (
    "the image's recipe is damaged or was not written by modelsafe, A1111 or Forge: copy its "
    "prompt into a plain `modelsafe generate --checkpoint MODEL --prompt ...` instead"
)

# The recipe's JSON fields and what each must be: (types, may be null). Bools are not numbers.
_NUMBER = (int, float)
_FIELD_TYPES: dict[str, tuple[tuple[type, ...], bool]] = {
    **dict.fromkeys(("seed", "steps", "width", "height", "clip_skip"), ((int,), False)),
    "upscale_scale": ((int,), True),
    **dict.fromkeys(("cfg", "control_scale", "refiner_switch", "true_cfg"), (_NUMBER, False)),
    **dict.fromkeys(
        ("prompt", "negative_prompt", "scheduler", "family", "backend", "dtype", "device"),
        ((str,), False),
    ),
    "modelsafe_version": ((str,), False),
    **dict.fromkeys(("variant", "prediction_type", "control_image"), ((str,), True)),
    **dict.fromkeys(("plan", "extra"), ((Mapping,), False)),
    **dict.fromkeys(("loras", "text_encoders", "embeddings"), ((list,), True)),
}
_REF_TYPES: dict[str, tuple[tuple[type, ...], bool]] = {
    "name": ((str,), False),
    "path": ((str,), False),
    **dict.fromkeys(("sha256", "autov2", "token", "a1111_lora"), ((str,), True)),
    "weight": (_NUMBER, True),
}
DTYPES = ("fp32", "fp16", "bf16")
PREDICTION_TYPES = ("epsilon", "v_prediction")
DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")  # what modelsafe generates on
_DEVICE = re.compile(rf"({'|'.join(DEVICE_TYPES)})(:\d{{1,3}})?")
# The values of a recorded plan's settings (generate_plan.DEFAULTS names them).
_PLAN_VALUES: dict[str, tuple[str, ...]] = {
    "dtype": DTYPES,
    "offload": ("none", "model", "sequential"),
}


def _shown(value: Any, limit: int = 60) -> str:
    """``value`` for a message: its repr, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _bad_type(where: str, value: Any, types: tuple[type, ...]) -> RecipeReadError:
    whole = "a whole number" if isinstance(value, float) else "a number"
    wanted = " or ".join(
        {int: whole, float: "a number", str: "a string", list: "a list"}.get(t, "an object")
        for t in types
        if not (t is int and float in types)
    )
    return RecipeReadError(f"malformed modelsafe recipe: {where} is {_shown(value)}, not {wanted}")


def _check_types(
    values: Mapping[str, Any], types: Mapping[str, tuple[tuple[type, ...], bool]], where: str
) -> None:
    for name, (kinds, nullable) in types.items():
        if name not in values or (values[name] is None and nullable):
            continue
        value = values[name]
        if not isinstance(value, kinds) or isinstance(value, bool):
            raise _bad_type(f"{where}{name}", value, kinds)


def _check_fields(fields: Mapping[str, Any]) -> None:
    """Each field of a JSON recipe has its type, and the settings the run takes as they are
    (dtype, device, prediction type, the recorded plan) have values a run can use."""
    _check_types(fields, _FIELD_TYPES, "")
    for name, allowed in (("dtype", DTYPES), ("prediction_type", (None, *PREDICTION_TYPES))):
        if name in fields and fields[name] not in allowed:
            shown = ", ".join(str(a) for a in allowed if a)
            raise RecipeReadError(
                f"malformed modelsafe recipe: {name} is {_shown(fields[name])}, not one of {shown}"
            )
    if "device" in fields:
        _check_device(fields["device"], "device")
    extra = fields.get("extra") or {}
    for name, ok in (
        ("modules", lambda v: isinstance(v, list) and all(isinstance(m, str) for m in v)),
        ("sampler", lambda v: isinstance(v, str)),
        ("tokenizers", lambda v: isinstance(v, str)),
        ("config_dir", lambda v: isinstance(v, str)),
        ("sampling", lambda v: isinstance(v, Mapping)),
    ):
        if name in extra and not ok(extra[name]):
            raise RecipeReadError(
                f"malformed modelsafe recipe: extra.{name} is {_shown(extra[name])}"
            )
    plan = fields.get("plan") or {}
    for name in ("settings", "source", "why"):
        if not isinstance(plan.get(name, {}), Mapping):
            raise _bad_type(f"plan.{name}", plan[name], (Mapping,))
    for name in ("choices", "notes"):
        if not isinstance(plan.get(name, []), list):
            raise _bad_type(f"plan.{name}", plan[name], (list,))
    _check_plan_settings(plan.get("settings") or {})


def _check_plan_settings(settings: Mapping[str, Any]) -> None:
    from modelsafe.runtime.generate_plan import DEFAULTS

    for name, value in settings.items():
        where = f"plan.settings.{name}"
        if name not in DEFAULTS:
            raise RecipeReadError(f"malformed modelsafe recipe: {where} is not a setting")
        if name == "device":
            _check_device(value, where)
        elif name in _PLAN_VALUES and value not in _PLAN_VALUES[name]:
            raise RecipeReadError(
                f"malformed modelsafe recipe: {where} is {_shown(value)}, not one of "
                + ", ".join(_PLAN_VALUES[name])
            )
        elif name not in _PLAN_VALUES and not isinstance(value, bool):
            raise RecipeReadError(
                f"malformed modelsafe recipe: {where} is {_shown(value)}, not true/false"
            )


def _check_device(value: Any, where: str) -> None:
    if not isinstance(value, str) or not _DEVICE.fullmatch(value):
        raise RecipeReadError(
            f"malformed modelsafe recipe: {where} is {_shown(value)}, not a device "
            "(cpu, cuda, cuda:N, mps, xpu)"
        )


def _ref(value: Any, where: str) -> ModelRef:
    if not isinstance(value, Mapping):
        raise _bad_type(where, value, (Mapping,))
    _check_types(value, _REF_TYPES, f"{where}.")
    if "name" not in value:
        raise RecipeReadError(f"malformed modelsafe recipe: {where} has no name")
    return ModelRef(**{k: v for k, v in value.items() if k in _REF_TYPES})


def _refs(values: Any, where: str) -> tuple[ModelRef, ...]:
    return tuple(_ref(v, f"{where}[{i}]") for i, v in enumerate(values or ()))


def _lora_refs(values: Any) -> tuple[ModelRef, ...]:
    """The recipe's LoRAs: each one's weight is a number (other models' refs have none)."""
    loras = _refs(values, "loras")
    for i, lora in enumerate(loras):
        if lora.weight is None:
            raise RecipeReadError(
                f"malformed modelsafe recipe: loras[{i}].weight is "
                f"{'missing' if 'weight' not in values[i] else 'null'}, not a number"
            )
    return loras


@dataclass(frozen=True)
class Recipe:
    """Everything that decides one image (see the module docstring)."""

    prompt: str
    seed: int
    steps: int
    cfg: float
    width: int
    height: int
    scheduler: str
    checkpoint: ModelRef
    family: str = ""
    variant: str | None = None
    negative_prompt: str = ""
    prediction_type: str | None = None
    loras: tuple[ModelRef, ...] = ()
    vae: ModelRef | None = None
    text_encoders: tuple[ModelRef, ...] = ()
    embeddings: tuple[ModelRef, ...] = ()
    controlnet: ModelRef | None = None
    control_image: str | None = None
    control_scale: float = 1.0
    refiner: ModelRef | None = None
    refiner_switch: float = 0.8
    clip_skip: int = 1  # A1111's count (2: the text encoder's layer before last)
    true_cfg: float = 1.0  # Flux.1's real CFG over the negative prompt (1: off)
    backend: str = "diffusers"
    dtype: str = "fp32"
    device: str = "cpu"
    # The settings it ran with and why: {"settings", "source", "why"[, "budget", "peak",
    # "choices", "notes"]} (modelsafe.runtime.generate_plan.PlanRecord).
    plan: Mapping[str, Any] = field(default_factory=dict)
    upscaler: ModelRef | None = None  # the post-processing upscaler, if any
    upscale_scale: int | None = None
    modelsafe_version: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)
    # What reading the recipe back found worth telling (a foreign tool's prompt syntax, a
    # parameters text that disagrees with the JSON): said as warnings by --from-image, and
    # neither written nor compared.
    warnings: tuple[str, ...] = field(default=(), compare=False)

    # -- JSON ---------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        from modelsafe.types import to_jsonable

        data = to_jsonable(self)
        assert isinstance(data, dict)
        data.pop("warnings", None)
        return {"schema": SCHEMA, **data}

    @classmethod
    def from_json(cls, data: Any) -> Recipe:
        """The recipe a ``modelsafe`` chunk holds. The JSON is not trusted (any PNG can carry
        one): every field is checked for its type and, where the run depends on it, its value;
        a bad one is a :class:`RecipeReadError` naming it. Fields a newer modelsafe wrote are
        ignored (the image is made from the ones known)."""
        if not isinstance(data, Mapping):
            raise RecipeReadError(f"its modelsafe chunk holds {_shown(data)}, not a JSON object")
        if data.get("schema") != SCHEMA:
            raise RecipeReadError(
                f"not a modelsafe recipe (schema {_shown(data.get('schema'))})",
                hint=f"expected schema {SCHEMA}",
            )
        from dataclasses import fields as dataclass_fields

        known = {f.name for f in dataclass_fields(cls)} - {"warnings"}
        fields = {k: v for k, v in data.items() if k in known}
        if "checkpoint" not in fields:
            raise RecipeReadError("malformed modelsafe recipe: it names no checkpoint")
        _check_fields(fields)
        return cls(
            **{
                **fields,
                "checkpoint": _ref(fields["checkpoint"], "checkpoint"),
                "loras": _lora_refs(fields.get("loras")),
                "text_encoders": _refs(fields.get("text_encoders"), "text_encoders"),
                "embeddings": _refs(fields.get("embeddings"), "embeddings"),
                **{
                    name: None if fields.get(name) is None else _ref(fields[name], name)
                    for name in ("vae", "controlnet", "refiner", "upscaler")
                },
            }
        )

    # -- A1111 ---------------------------------------------------------------------------------

    def to_parameters(self) -> str:
        """The A1111 ``parameters`` text: prompt, negative prompt, then ``Key: value`` pairs.

        Numbers are written so that they read back exactly (``7.123456789``, not ``7.12346``);
        Flux guidance is Forge's ``Distilled CFG Scale``, its real CFG (``true_cfg``) Forge's
        ``CFG scale`` (1: none);
        model names in ``Lora hashes`` / ``TI hashes`` lose ``,`` and ``:`` as A1111 writes them."""
        prompt = self.prompt
        tags = " ".join(
            f"<lora:{_tag_name(lo.name)}:{_num(lo.weight or 0.0)}>" for lo in self.loras
        )
        if tags:
            prompt = f"{prompt} {tags}" if prompt else tags
        lines = [prompt]
        if self.negative_prompt:
            lines.append(f"Negative prompt: {self.negative_prompt}")
        sampler, schedule = SAMPLER_NAMES.get(self.scheduler, (self.scheduler, ""))
        pairs: list[tuple[str, str]] = [
            ("Steps", str(self.steps)),
            ("Sampler", sampler),
        ]
        if schedule:
            pairs.append(("Schedule type", schedule))
        if self.family == "flux1":
            pairs += [("CFG scale", _num(self.true_cfg)), ("Distilled CFG Scale", _num(self.cfg))]
        else:
            pairs.append(("CFG scale", _num(self.cfg)))
        pairs += [
            ("Seed", str(self.seed)),
            ("Size", f"{self.width}x{self.height}"),
            ("Clip skip", str(self.clip_skip) if self.clip_skip != 1 else ""),
            ("Model hash", self.checkpoint.short_hash),
            ("Model", self.checkpoint.name),
        ]
        if self.vae is not None:
            pairs += [("VAE hash", self.vae.short_hash), ("VAE", self.vae.name)]
        if self.controlnet is not None:
            name = _hash_key(self.controlnet.name)
            pairs.append(
                (
                    "ControlNet 0",
                    f"Model: {name} [{self.controlnet.short_hash}], "
                    f"Weight: {_num(self.control_scale)}",
                )
            )
        if self.refiner is not None:
            pairs += [
                ("Refiner", f"{self.refiner.name} [{self.refiner.short_hash}]"),
                ("Refiner switch at", _num(self.refiner_switch)),
            ]
        if self.upscaler is not None:
            pairs += [
                ("Postprocess upscaler", self.upscaler.name),
                ("Postprocess upscaler hash", self.upscaler.short_hash),
                ("Postprocess upscale by", str(self.upscale_scale or "")),
            ]
        if self.loras:
            pairs.append(
                (
                    "Lora hashes",
                    ", ".join(f"{_hash_key(lo.name)}: {lo.lora_hash}" for lo in self.loras),
                )
            )
        if self.embeddings:
            pairs.append(
                (
                    "TI hashes",
                    ", ".join(
                        f"{_hash_key(e.token or e.name)}: {e.ti_hash}" for e in self.embeddings
                    ),
                )
            )
        pairs.append(("Version", f"modelsafe {self.modelsafe_version}".strip()))
        lines.append(", ".join(f"{key}: {_quote(value)}" for key, value in pairs if value != ""))
        return "\n".join(lines)


def _num(value: float) -> str:
    """``7`` for 7.0, ``7.123456789`` for 7.123456789: the shortest text that reads back as the
    same float (Python's repr), without A1111's trailing ``.0``."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def _hash_key(name: str) -> str:
    """A model's name as ``Lora hashes`` / ``TI hashes`` hold it (A1111 drops ``,`` and ``:``,
    which its parser would split on; ``>``, which ends a tag, is dropped as in the tag)."""
    return _tag_name(name).replace(",", "").strip()


def _tag_name(name: str) -> str:
    """A LoRA's name as its ``<lora:NAME:W>`` tag holds it: without the ``:`` and ``>`` that
    would end it."""
    return name.replace(":", "").replace(">", "")


def _quote(text: str) -> str:
    if not any(ch in text for ch in ',:\n"'):
        return text
    return json.dumps(text, ensure_ascii=False)


# One ``Key: value`` pair's key (A1111: a word character, then words, spaces, - and /).
_KEY = re.compile(r"\s*(\w[\w \-/]*):\s*")
_JSON = json.JSONDecoder()
# An extra-network tag as A1111 reads it: <kind:arg:arg...> (``<lora:style:0.8>``).
_NETWORK_TAG = re.compile(r"\s*<(\w+):([^>]+)>")
_WHOLE = re.compile(r"[+-]?\d{1,30}")
_REAL = re.compile(r"[+-]?(\d{1,30}(\.\d{0,30})?|\.\d{1,30})([eE][+-]?\d{1,3})?")


def _scan_pairs(line: str) -> list[tuple[str, str]]:
    """The ``Key: value`` pairs of an A1111 settings line: a value is a JSON string (unquoted,
    as A1111 does), a JSON list or object (Civitai writes ``Civitai resources: [...]`` bare), or
    runs to the next comma."""
    pairs: list[tuple[str, str]] = []
    pos, end = 0, len(line)
    while pos < end:
        key = _KEY.match(line, pos)
        if key is None:
            comma = line.find(",", pos)
            if comma < 0:
                break
            pos = comma + 1
            continue
        pos = key.end()
        value, after = _json_value(line, pos)
        if value is None:
            comma = line.find(",", pos)
            after = end if comma < 0 else comma
            value = line[pos:after].strip()
        pairs.append((key.group(1).strip(), value))
        pos = after + 1
    return pairs


def _json_value(line: str, pos: int) -> tuple[str | None, int]:
    """A JSON string, list or object starting at ``pos`` and ending the pair (the text for a list
    or object, the decoded text for a string), and where the pair ends; else ``(None, pos)``."""
    if pos >= len(line) or line[pos] not in '"[{':
        return None, pos
    try:
        value, after = _JSON.raw_decode(line, pos)
    except (ValueError, RecursionError):
        return None, pos
    rest = line[after:].lstrip()
    if rest and not rest.startswith(","):
        return None, pos
    after = len(line) - len(rest)
    return (value if isinstance(value, str) else line[pos:after].rstrip()), after


def parse_parameters(text: str) -> dict[str, Any]:
    """Parse an A1111 ``parameters`` block as A1111 does: prompt lines, a ``Negative prompt:``
    line (each line stripped first), then the ``Key: value`` pairs of the last line (when it
    holds at least three).

    Returns ``{"prompt", "negative_prompt", "loras": [(name, weight)], "tags": [(kind, args)],
    "pairs": {key: value}}``; extra-network tags (``<lora:...>``, ``<hypernet:...>``) are taken
    out of the prompt into ``tags`` (LoRA and LyCORIS ones also into ``loras``)."""
    lines = text.strip().split("\n")
    pairs: dict[str, str] = {}
    found = _scan_pairs(lines[-1]) if lines else []
    if len(found) >= 3:
        lines.pop()
        pairs = dict(found)
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    target = prompt_lines
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            target = negative_lines
            line = line[len("Negative prompt:") :].strip()
        target.append(line)
    prompt = "\n".join(prompt_lines)
    tags = [(kind, args.split(":")) for kind, args in _NETWORK_TAG.findall(prompt)]
    return {
        "prompt": _NETWORK_TAG.sub("", prompt).strip(),
        "negative_prompt": "\n".join(negative_lines).strip(),
        "loras": [_lora_of_tag(kind, args)[:2] for kind, args in tags if kind in _LORA_TAGS],
        "tags": tags,
        "pairs": pairs,
    }


_LORA_TAGS = ("lora", "lyco")
# The extra-network tags A1111 applies from a prompt: LoRA/LyCORIS and hypernetworks.
NETWORK_KINDS = (*_LORA_TAGS, "hypernet")


def network_tag(text: str) -> tuple[str, str] | None:
    """The first A1111 extra-network tag in ``text`` (``<lora:NAME:W>``, ``<lyco:...>``,
    ``<hypernet:...>``) as (the tag, its kind); None when there is none."""
    for found in _NETWORK_TAG.finditer(text):
        if found.group(1).lower() in NETWORK_KINDS:
            return found.group(0).strip(), found.group(1).lower()
    return None


def _lora_of_tag(kind: str, args: list[str]) -> tuple[str, float, str]:
    """``(name, weight, problem)`` of ``<lora:NAME[:TE[:UNET]]>`` as A1111 applies it: no
    weight is 1, the UNet takes the text encoders' weight unless given its own (``te=`` and
    ``unet=`` too). modelsafe applies one weight to both: ``problem`` says why it cannot apply
    this tag (different weights, a ``dyn`` dimension, an option such as the LoRA Block Weight
    extension's ``lbw=`` / ``start=`` / ``stop=``), else it is empty."""
    tag = f"<{kind}:{':'.join(args)}>"
    named = dict(a.split("=", 1) for a in args[1:] if "=" in a)
    positional = [a for a in args[1:] if "=" not in a]
    te = _tag_weight(tag, named.get("te", positional[0] if positional else "1"))
    unet = _tag_weight(tag, named.get("unet", positional[1] if len(positional) > 1 else str(te)))
    options = [f"{_clip(key, 20)}=" for key in named if key not in _LORA_WEIGHTS]
    problem = ""
    if te != unet:
        problem = "a LoRA with its own text-encoder and UNet weights: modelsafe applies one"
    elif "dyn" in named or len(positional) > 2:
        problem = "a LoRA cut to a dyn dimension: modelsafe applies the whole LoRA"
    elif options:
        problem = (
            f"a LoRA with the options {', '.join(options[:5])} (an extension's, such as LoRA "
            "Block Weight's): modelsafe applies the LoRA at one weight to every block and step"
        )
    return args[0].strip(), te, problem


_LORA_WEIGHTS = ("te", "unet")  # the named weights A1111 reads (dyn is refused on its own)


def _tag_weight(tag: str, text: str) -> float:
    if not _REAL.fullmatch(text.strip()):
        raise RecipeReadError(f"the tag {_clip(tag)} has weight {_shown(text)}, not a number")
    return float(text)


# A1111 sampler names (and its pre-1.9 "... Karras" names) modelsafe's backend runs.
_A1111_SAMPLERS = {
    "Euler": "euler",
    "Euler a": "euler_a",
    "Heun": "heun",
    "LMS": "lms",
    "DDIM": "ddim",
    "PLMS": "pndm",
    "UniPC": "unipc",
    "DPM++ 2M": "dpmpp_2m",
}
# Schedule types that give a sampler its own (discretization's) sigmas, as diffusers does.
_OWN_SCHEDULES = ("", "Automatic", "Uniform", "Normal")


def scheduler_from_sampler(sampler: str, schedule: str = "", family: str = "") -> str:
    """The scheduler id for an A1111 sampler name and schedule type; ``""`` when modelsafe's
    backend has no such sampler (see :data:`SUPPORTED_SAMPLERS`)."""
    if sampler.endswith(" Karras") and schedule in _OWN_SCHEDULES:
        sampler, schedule = sampler[: -len(" Karras")], "Karras"
    ident = _A1111_SAMPLERS.get(sampler)
    if ident is None:
        return ""
    if ident == "euler" and (schedule == "Simple" or family in ("sd3", "sd3.5", "flux1")):
        return "flow_euler" if schedule in (*_OWN_SCHEDULES, "Simple") else ""
    if schedule == "Karras":
        return f"{ident}_karras" if f"{ident}_karras" in SAMPLER_NAMES else ""
    return ident if schedule in _OWN_SCHEDULES else ""


SUPPORTED_SAMPLERS = (
    "Euler, Euler a, Heun, LMS, DDIM, PLMS, UniPC, DPM++ 2M (schedule type Automatic, "
    "Uniform or Normal), DPM++ 2M Karras, and Euler with Simple on flow models"
)


_SHOWN = 10  # the settings an UnreproducibleError names (it counts the others)


class UnreproducibleError(UsageError):
    """The image was made with settings modelsafe cannot apply: ``items`` holds each one (the
    field as the image says it) with why. No flag skips them (they are not overridable)."""

    def __init__(self, items: list[tuple[str, str]], source: str = "the image") -> None:
        self.items = items
        groups: dict[str, list[str]] = {}
        for what, why in items[:_SHOWN]:
            groups.setdefault(why, []).append(what)
        said = "; ".join(f"{', '.join(whats)} ({why})" for why, whats in groups.items())
        if len(items) > _SHOWN:
            said += f"; and {len(items) - _SHOWN} more"
        super().__init__(
            f"{source} was made with settings modelsafe cannot reproduce: {said}",
            hint="flags such as --checkpoint, --seed or --steps do not skip them; to make a new "
            "image from the same prompt, run a plain `modelsafe generate --checkpoint MODEL "
            "--prompt ...` without --from-image",
        )


# Fields that do not change the pixels (or that only name what other fields say).
_NO_PIXELS = frozenset(
    {
        "Version",
        "Model name",
        "Created Date",
        "Civitai metadata",
        "Template",
        "Negative Template",
        "Emphasis",  # how the prompt syntax is weighted: the syntax warning covers it
        "RNG",  # where the noise was drawn: the foreign-tool warning covers it
        "Batch size",
        "Batch pos",
        "Hashes",
    }
)
# Fields modelsafe reads.
_READ = frozenset(
    {
        "Steps",
        "Sampler",
        "Schedule type",
        "CFG scale",
        "Distilled CFG Scale",
        "Seed",
        "Size",
        "Model hash",
        "Model",
        "VAE hash",
        "VAE",
        "Lora hashes",
        "TI hashes",
        "Refiner",
        "Refiner switch at",
        "ControlNet 0",
        "Postprocess upscaler",
        "Postprocess upscaler hash",
        "Postprocess upscale by",
        "Civitai resources",
        "Clip skip",
    }
)
_FORGE_MODULE = re.compile(r"Module \d+")
# Fields modelsafe cannot apply, by the start of their name: why.
_CANNOT = (
    (("Hires ", "First pass size"), "hires fix: a second, upscaled pass"),
    (("ADetailer ",), "ADetailer: faces or hands inpainted after generation"),
    (("Variation seed", "Seed resize from"), "variation seed: noise mixed from a second seed"),
    (
        ("Denoising strength", "Mask blur", "Inpaint", "Masked content", "Init image hash"),
        "img2img or inpainting: made from another image",
    ),
)
_NAMED_HASH = re.compile(r"(.*?)\s*\[([0-9A-Fa-f]{6,64})\]")


def _why_not(key: str, pairs: Mapping[str, str]) -> str:
    """Why modelsafe cannot apply field ``key``."""
    if key == "Denoising strength" and any(k.startswith("Hires ") for k in pairs):
        return _CANNOT[0][1]
    for starts, why in _CANNOT:
        if key.startswith(starts):
            return why
    return "not a setting modelsafe knows"


def recipe_from_parameters(text: str) -> Recipe:
    """A recipe from an A1111 / Forge / Civitai ``parameters`` block alone: models are known by
    name and short hash (``Civitai resources`` entries too).

    A setting modelsafe cannot apply (hires fix, img2img, ADetailer, a variation seed, any field
    it does not know to leave the pixels alone) raises
    :class:`UnreproducibleError` naming each; a value that is no number raises
    :class:`RecipeReadError`. What it cannot tell from the text but a flag can give is left
    open for :func:`~modelsafe.runtime.generate.request_from_recipe`: a missing or ``-1`` seed is
    ``seed`` -1, a sampler the backend lacks is ``scheduler`` ``""`` (``extra["sampler"]`` says
    which). What makes the pixels differ without being a setting is in ``warnings``."""
    parsed = parse_parameters(text)
    pairs: dict[str, str] = parsed["pairs"]
    own = pairs.get("Version", "").startswith("modelsafe")
    cannot = [
        (f"{_clip(key, 40)}: {_clip(value, 40)}", _why_not(key, pairs))
        for key, value in pairs.items()
        if key not in _READ | _NO_PIXELS and not _FORGE_MODULE.fullmatch(key)
    ]
    cfg = _real(pairs, "CFG scale")
    true_cfg = 1.0
    if "Distilled CFG Scale" in pairs:  # Forge's Flux: distilled guidance; CFG 1 = no real CFG
        true_cfg, cfg = cfg, _real(pairs, "Distilled CFG Scale")
    loras, embeddings, checkpoint = _parameters_models(parsed, pairs, cannot)
    upscaler, upscale_scale = _parameters_upscaler(pairs, cannot)
    if cannot:
        raise UnreproducibleError(cannot)
    scheduler = _parameters_scheduler(pairs, own)
    extra: dict[str, Any] = {}
    if not scheduler:
        sampler, schedule = pairs.get("Sampler", ""), pairs.get("Schedule type", "")
        extra["sampler"] = f"{sampler}, Schedule type: {schedule}" if schedule else sampler
    modules = [value for key, value in pairs.items() if _FORGE_MODULE.fullmatch(key)]
    if modules:
        extra["modules"] = modules
    width, height = _size(pairs)
    controlnet, control_scale = _parameters_controlnet(pairs)
    refiner = _named_ref(pairs["Refiner"]) if pairs.get("Refiner") else None
    seed = _whole(pairs, "Seed") if "Seed" in pairs else -1
    return Recipe(
        prompt=parsed["prompt"],
        negative_prompt=parsed["negative_prompt"],
        seed=seed,
        steps=_whole(pairs, "Steps"),
        cfg=cfg,
        width=width,
        height=height,
        scheduler=scheduler,
        checkpoint=checkpoint,
        loras=loras,
        vae=(
            ModelRef(name=pairs.get("VAE", ""), autov2=pairs.get("VAE hash"))
            if pairs.get("VAE") or pairs.get("VAE hash")
            else None
        ),
        embeddings=embeddings,
        controlnet=controlnet,
        control_scale=control_scale,
        refiner=refiner,
        refiner_switch=_real(pairs, "Refiner switch at") if "Refiner switch at" in pairs else 0.8,
        clip_skip=_whole(pairs, "Clip skip") if "Clip skip" in pairs else 1,
        true_cfg=true_cfg,
        upscaler=upscaler,
        upscale_scale=upscale_scale,
        modelsafe_version=pairs.get("Version", "").removeprefix("modelsafe").strip() if own else "",
        extra=extra,
        warnings=() if own else _foreign_warnings(parsed, pairs),
    )


def _parameters_scheduler(pairs: Mapping[str, str], own: bool) -> str:
    """The scheduler a parameters block's ``Sampler`` and ``Schedule type`` name (``""`` when
    the backend has none such). Euler with Simple is ``flow_euler`` only on a flow model: a
    Forge Flux image (it records ``Distilled CFG Scale``) or modelsafe's own text (which writes
    it for ``flow_euler`` alone); A1111 and Forge write it for SD1 and SDXL too, sampled with
    their own Simple sigmas, which diffusers lacks, so there it is left open."""
    scheduler = scheduler_from_sampler(pairs.get("Sampler", ""), pairs.get("Schedule type", ""))
    flow = own or "Distilled CFG Scale" in pairs
    return "" if scheduler == "flow_euler" and not flow else scheduler


def _parameters_models(
    parsed: Mapping[str, Any], pairs: Mapping[str, str], cannot: list[tuple[str, str]]
) -> tuple[tuple[ModelRef, ...], tuple[ModelRef, ...], ModelRef]:
    """The LoRAs (prompt tags, then ``Civitai resources``), embeddings (``TI hashes``, then
    ``Civitai resources``) and checkpoint a parameters block names; what cannot be applied is
    added to ``cannot``."""
    lora_hashes = _name_hashes(pairs.get("Lora hashes", ""))
    loras: list[ModelRef] = []
    for kind, args in parsed["tags"]:
        tag = _clip(f"<{kind}:{':'.join(args)}>", 60)
        if kind not in _LORA_TAGS:
            why = "a hypernetwork" if kind == "hypernet" else "an extra network"
            cannot.append((f"the tag {tag}", f"{why}; modelsafe cannot apply it"))
            continue
        name, weight, problem = _lora_of_tag(kind, args)
        if problem:
            cannot.append((f"the tag {tag}", problem))
        loras.append(ModelRef(name=name, autov2=lora_hashes.get(_hash_key(name)), weight=weight))
    # Embeddings: A1111 names each by the token the prompt uses (its file's stem by default).
    embeddings = [
        ModelRef(name=token, autov2=digest or None, token=token)
        for token, digest in _name_hashes(pairs.get("TI hashes", "")).items()
    ]
    checkpoint = ModelRef(
        name=pairs.get("Model", ""),
        autov2=pairs.get("Model hash") or _hashes_field(pairs).get("model"),
    )
    for item in _civitai_resources(pairs):
        kind = str(item.get("type", "")).lower()
        name = " ".join(
            str(item[k]) for k in ("modelName", "modelVersionName") if item.get(k) is not None
        )
        digest = item.get("hash") if isinstance(item.get("hash"), str) else None
        title = str(item.get("modelName") or name)
        if kind == "checkpoint":
            if not checkpoint.name and not checkpoint.autov2:
                checkpoint = ModelRef(name=name, autov2=digest)
        elif kind in ("lora", "locon", "lycoris"):
            if not any(_hash_key(lo.name) == _hash_key(title) for lo in loras):
                loras.append(ModelRef(name=title, autov2=digest, weight=_weight(item)))
        elif kind in ("embed", "embedding", "textualinversion"):
            if not any(e.token == title for e in embeddings):
                embeddings.append(ModelRef(name=title, autov2=digest, token=title))
        else:
            cannot.append(
                (
                    f"the Civitai resource {_clip(name, 40)} ({_clip(kind, 20)})",
                    "a kind of model modelsafe does not place",
                )
            )
    return tuple(loras), tuple(embeddings), checkpoint


def _civitai_resources(pairs: Mapping[str, str]) -> list[Mapping[str, Any]]:
    if "Civitai resources" not in pairs:
        return []
    try:
        items = json.loads(pairs["Civitai resources"])
    except (ValueError, RecursionError):
        items = None
    if not isinstance(items, list) or not all(isinstance(i, Mapping) for i in items):
        raise RecipeReadError("its Civitai resources field is not a JSON list of models")
    return items


def _hashes_field(pairs: Mapping[str, str]) -> dict[str, str]:
    """The ``Hashes: {"model": ...}`` object some tools add, when it is one."""
    try:
        value = json.loads(pairs.get("Hashes", "{}"))
    except (ValueError, RecursionError):
        return {}
    return {k: v for k, v in value.items() if isinstance(v, str)} if isinstance(value, dict) else {}


def _weight(item: Mapping[str, Any]) -> float:
    value = item.get("weight", 1.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RecipeReadError(f"its Civitai resources give weight {_shown(value)}, not a number")
    return float(value)


def _parameters_upscaler(
    pairs: Mapping[str, str], cannot: list[tuple[str, str]]
) -> tuple[ModelRef | None, int | None]:
    """The ``Postprocess upscaler`` (modelsafe writes its hash) and its whole-number scale."""
    if not pairs.get("Postprocess upscaler"):
        return None, None
    by = pairs.get("Postprocess upscale by", "")
    scale = int(by) if _WHOLE.fullmatch(by.strip()) else None
    if by and scale is None:
        cannot.append(
            (
                f"Postprocess upscale by: {_clip(by, 20)}",
                "modelsafe upscales by the upscaler's own whole-number scale",
            )
        )
    name = pairs["Postprocess upscaler"]
    return ModelRef(name=name, autov2=pairs.get("Postprocess upscaler hash") or None), scale


def _parameters_controlnet(pairs: Mapping[str, str]) -> tuple[ModelRef | None, float]:
    """``ControlNet 0: "Model: NAME [HASH], Weight: W, ..."`` (modelsafe's and the A1111
    extension's form). The control image is never in the text: generate asks for it."""
    if not pairs.get("ControlNet 0"):
        return None, 1.0
    unit = dict(_scan_pairs(pairs["ControlNet 0"]))
    ref = _named_ref(unit.get("Model", ""))
    return ref, (_real(unit, "Weight") if "Weight" in unit else 1.0)


def _named_ref(text: str) -> ModelRef:
    """``name [hash]`` (A1111's way of naming a model with its short hash)."""
    found = _NAMED_HASH.fullmatch(text.strip())
    return ModelRef(name=found[1], autov2=found[2]) if found else ModelRef(name=text.strip())


def _field_text(pairs: Mapping[str, str], key: str, pattern: re.Pattern[str], what: str) -> str:
    """Field ``key``'s text, which must match ``pattern`` (bounded digits: no 5000-digit int)."""
    text = pairs.get(key)
    if text is None:
        raise RecipeReadError(f"its parameters do not say {key}")
    if not pattern.fullmatch(text.strip()):
        raise RecipeReadError(f"its {key} is {_shown(text)}, not {what}")
    return text


def _whole(pairs: Mapping[str, str], key: str) -> int:
    return int(_field_text(pairs, key, _WHOLE, "a whole number"))


def _real(pairs: Mapping[str, str], key: str) -> float:
    return float(_field_text(pairs, key, _REAL, "a number"))


def _size(pairs: Mapping[str, str]) -> tuple[int, int]:
    text = pairs.get("Size")
    if text is None:
        raise RecipeReadError("its parameters do not say Size")
    found = re.fullmatch(r"\s*(\d{1,12})x(\d{1,12})\s*", text)
    if found is None:
        raise RecipeReadError(f"its Size is {_shown(text)}, not WIDTHxHEIGHT")
    return int(found[1]), int(found[2])


def _name_hashes(text: str) -> dict[str, str]:
    """``name: hash, name: hash`` -> {name as A1111 writes it (no ``,`` or ``:``): hash}."""
    out: dict[str, str] = {}
    for item in text.split(","):
        name, _, digest = item.rpartition(":")
        if name.strip():
            out[_hash_key(name)] = digest.strip()
    return out


# A1111 prompt syntax modelsafe does not interpret: (word:1.4), (word), [word], [a:b:0.5],
# [a|b], BREAK, AND (escaped \( \) \[ \] are literal).
_PROMPT_SYNTAX = re.compile(r"(?<!\\)[()\[\]]|\bBREAK\b|\bAND\b")
_CLIP_PIECES = re.compile(r"[^\W\d_]+|\d|[^\s\w]+")
CLIP_TOKENS = 75  # a CLIP text encoder's tokens besides its start and end ones


def _foreign_warnings(parsed: Mapping[str, Any], pairs: Mapping[str, str]) -> tuple[str, ...]:
    """What makes another tool's image come out otherwise from modelsafe, the settings being the
    same: its samplers and noise, its prompt syntax, its prompts longer than CLIP takes."""
    version = pairs.get("Version", "")
    tool = (
        "Civitai"
        if "Civitai resources" in pairs
        else "Forge"
        if version.startswith("f")
        else "A1111"
        if version
        else "another tool"
    )
    said = f" ({_clip(version, 40)})" if version else ""
    warnings = [
        f"the image was made by {tool}{said}, not modelsafe: modelsafe runs its settings with "
        "diffusers' samplers and noise drawn by torch on the CPU, so the pixels will differ"
    ]
    for name in ("prompt", "negative_prompt"):
        text = parsed[name]
        syntax = sorted({m.group(0) for m in _PROMPT_SYNTAX.finditer(text)})
        if syntax:
            warnings.append(
                f"the {name.replace('_', ' ')} uses A1111 prompt syntax ({' '.join(syntax)}): "
                "modelsafe passes it to the text encoder as plain text, without its weighting, "
                "scheduling or BREAK chunks, so the image will differ"
            )
        pieces = len(_CLIP_PIECES.findall(text))
        if pieces > CLIP_TOKENS:
            warnings.append(
                f"the {name.replace('_', ' ')} is at least {pieces} CLIP tokens long: "
                f"A1111 encodes such prompts in chunks of {CLIP_TOKENS}, diffusers' CLIP text "
                f"encoders keep the first {CLIP_TOKENS} and drop the rest"
            )
    return tuple(warnings)


def _clip(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters for a message (prompts can be megabytes)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def png_text_chunks(recipe: Recipe) -> dict[str, str]:
    """The PNG text chunks that carry ``recipe``."""
    return {
        PARAMETERS_KEY: recipe.to_parameters(),
        JSON_KEY: json.dumps(recipe.to_json(), ensure_ascii=False, sort_keys=True),
    }


def recipe_from_chunks(chunks: Mapping[str, str]) -> Recipe | None:
    """The recipe in a PNG's text chunks: the JSON one if present (with a warning when the
    ``parameters`` text says otherwise), else the A1111 block; None when there is neither.
    Another tool's metadata (ComfyUI, InvokeAI, NovelAI, SwarmUI, Fooocus) is refused with its
    name."""
    if JSON_KEY in chunks:
        try:
            data = json.loads(chunks[JSON_KEY])
        except (ValueError, RecursionError) as exc:
            reason = "nested too deep" if isinstance(exc, RecursionError) else str(exc)
            raise RecipeReadError(
                f"its modelsafe chunk is not JSON ({_clip(reason, 80)})"
            ) from None
        recipe = Recipe.from_json(data)
        differ = _disagreement(recipe, chunks.get(PARAMETERS_KEY))
        if differ:
            note = (
                f"the image's parameters text says another {', '.join(differ)} than its "
                "modelsafe recipe (edited after the image was made?): running the recipe's"
            )
            recipe = replace(recipe, warnings=(*recipe.warnings, note))
        return recipe
    tool = other_tool(chunks)
    if tool:
        raise RecipeReadError(
            f"it was made by {tool}, whose images modelsafe cannot reproduce "
            "(it reads modelsafe, A1111 and Forge recipes)",
            hint="copy its prompt and settings into a plain `modelsafe generate --checkpoint "
            "MODEL --prompt ...`",
        )
    if PARAMETERS_KEY in chunks:
        return recipe_from_parameters(chunks[PARAMETERS_KEY])
    return None


def _disagreement(recipe: Recipe, text: str | None) -> list[str]:
    """The settings a ``parameters`` text gives otherwise than the JSON ``recipe``."""
    if not text:
        return []
    try:
        parsed = parse_parameters(text)
    except ModelsafeError:
        return ["text (it does not parse)"]
    pairs = parsed["pairs"]
    differ = [
        name
        for name, said, wanted in (
            ("prompt", parsed["prompt"], _as_a1111_reads(recipe.prompt)),
            ("negative prompt", parsed["negative_prompt"], _as_a1111_reads(recipe.negative_prompt)),
            ("seed", pairs.get("Seed"), str(recipe.seed)),
            ("steps", pairs.get("Steps"), str(recipe.steps)),
            ("size", pairs.get("Size"), f"{recipe.width}x{recipe.height}"),
        )
        if said != wanted
    ]
    return differ


def _as_a1111_reads(text: str) -> str:
    return "\n".join(line.strip() for line in text.strip().split("\n")).strip()


# Text chunks (or JSON keys) other tools write: the tool that wrote them.
_OTHER_TOOLS = (
    (("prompt", "workflow"), "ComfyUI (its 'prompt'/'workflow' chunks)"),
    (("invokeai_metadata", "sd-metadata", "Dream"), "InvokeAI"),
    (("fooocus_scheme",), "Fooocus"),
)


def other_tool(chunks: Mapping[str, str]) -> str:
    """Which other tool wrote these PNG text chunks (``""`` when none modelsafe knows)."""
    for keys, tool in _OTHER_TOOLS:
        if any(k in chunks for k in keys):
            return tool
    if "NovelAI" in chunks.get("Software", "") or "NovelAI" in chunks.get("Source", ""):
        return "NovelAI"
    text = chunks.get(PARAMETERS_KEY, "").strip()
    if not (text.startswith("{") and text.endswith("}")):
        return ""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return ""  # A1111 text whose prompt is in braces
    if not isinstance(data, dict):
        return ""
    if "sui_image_params" in data:
        return "SwarmUI (its JSON 'parameters')"
    if "fooocus" in text.lower():
        return "Fooocus (its JSON 'parameters')"
    return "a tool that writes JSON 'parameters' (not A1111 text)"


def recipe_from_png(path: Path) -> Recipe:
    """Read the recipe back from an image written by modelsafe (or A1111/Forge/Civitai: PNG
    text, or JPEG/WebP EXIF). Each refusal names the image: ``cannot read the recipe in IMG:
    ...`` for a damaged or foreign one, ``IMG was made with settings modelsafe cannot
    reproduce: ...`` for settings it cannot apply."""
    from modelsafe.runtime.image_text import read_image_text

    try:
        chunks = read_image_text(path)
        recipe = recipe_from_chunks(chunks)
    except UnreproducibleError as exc:
        raise UnreproducibleError(exc.items, str(path)) from None
    except RecipeReadError as exc:
        raise UsageError(
            f"cannot read the recipe in {path}: {exc.reason}", hint=exc.hint or _DEFAULT_HINT
        ) from None
    if recipe is None:
        raise UsageError(
            f"{path} carries no generation recipe",
            hint="modelsafe, A1111 and Forge write one in the PNG 'parameters' chunk (JPEG and "
            "WebP: the EXIF UserComment)",
        )
    return recipe


def with_seed(recipe: Recipe, seed: int) -> Recipe:
    return replace(recipe, seed=seed)
