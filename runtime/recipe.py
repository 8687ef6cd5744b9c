"""The recipe of one generated image, and its two PNG forms.

A recipe names every input by path *and* hash (sha256 + Civitai AutoV2), with every setting that
decides the pixels. It is written into each PNG twice:

- ``parameters``: the A1111 text block that A1111, Forge, ComfyUI importers and Civitai read
  (prompt line, ``Negative prompt:`` line, then ``Key: value`` pairs);
- ``modelsafe``: the recipe as JSON (``schema`` = ``modelsafe.recipe/1``), which is authoritative
  when both are present.

Both parse back (:func:`recipe_from_png`); an A1111 block alone gives a partial recipe whose models
are known only by hash.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from modelsafe.errors import UsageError

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
    "dpmpp_sde": ("DPM++ SDE", ""),
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

    @property
    def short_hash(self) -> str:
        return self.autov2 or (self.sha256 or "")[:10]


# Recipe fields that must be numbers (a recipe is read from any PNG: its JSON is not trusted).
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "seed": (int,),
    "steps": (int,),
    "width": (int,),
    "height": (int,),
    "cfg": (int, float),
    "control_scale": (int, float),
    "refiner_switch": (int, float),
}


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

    # -- JSON ---------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        from modelsafe.types import to_jsonable

        data = to_jsonable(self)
        assert isinstance(data, dict)
        return {"schema": SCHEMA, **data}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Recipe:
        if data.get("schema") != SCHEMA:
            raise UsageError(
                f"not a modelsafe recipe (schema {data.get('schema')!r})",
                hint=f"expected schema {SCHEMA}",
            )

        def ref(value: Any) -> ModelRef | None:
            return None if value is None else ModelRef(**value)

        def refs(values: Any) -> tuple[ModelRef, ...]:
            return tuple(ModelRef(**v) for v in values or ())

        from dataclasses import fields as dataclass_fields

        known = {f.name for f in dataclass_fields(cls)}
        # Fields a newer modelsafe wrote are ignored (the image is made from the ones known).
        fields = {k: v for k, v in data.items() if k in known}
        for name, kinds in _FIELD_TYPES.items():
            value = fields.get(name)
            if name in fields and (not isinstance(value, kinds) or isinstance(value, bool)):
                raise UsageError(
                    f"malformed modelsafe recipe: {name} is {value!r}, not a number",
                    hint="pass the setting as a flag, or generate anew without --from-image",
                )
        try:
            return cls(
                **{
                    **fields,
                    "checkpoint": ModelRef(**fields["checkpoint"]),
                    "loras": refs(fields.get("loras")),
                    "text_encoders": refs(fields.get("text_encoders")),
                    "embeddings": refs(fields.get("embeddings")),
                    "vae": ref(fields.get("vae")),
                    "controlnet": ref(fields.get("controlnet")),
                    "refiner": ref(fields.get("refiner")),
                    "upscaler": ref(fields.get("upscaler")),
                }
            )
        except (TypeError, KeyError, AttributeError) as exc:
            raise UsageError(f"malformed modelsafe recipe: {exc}") from exc

    # -- A1111 ---------------------------------------------------------------------------------

    def to_parameters(self) -> str:
        """The A1111 ``parameters`` text: prompt, negative prompt, then ``Key: value`` pairs."""
        prompt = self.prompt
        tags = " ".join(f"<lora:{lo.name}:{_num(lo.weight or 0.0)}>" for lo in self.loras)
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
        pairs += [
            ("CFG scale", _num(self.cfg)),
            ("Seed", str(self.seed)),
            ("Size", f"{self.width}x{self.height}"),
            ("Model hash", self.checkpoint.short_hash),
            ("Model", self.checkpoint.name),
        ]
        if self.vae is not None:
            pairs += [("VAE hash", self.vae.short_hash), ("VAE", self.vae.name)]
        if self.controlnet is not None:
            pairs.append(
                (
                    "ControlNet 0",
                    f"Model: {self.controlnet.name}, Weight: {_num(self.control_scale)}",
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
                ("Lora hashes", ", ".join(f"{lo.name}: {lo.short_hash}" for lo in self.loras))
            )
        if self.embeddings:
            pairs.append(
                (
                    "TI hashes",
                    ", ".join(f"{e.token or e.name}: {e.short_hash}" for e in self.embeddings),
                )
            )
        pairs.append(("Version", f"modelsafe {self.modelsafe_version}".strip()))
        lines.append(", ".join(f"{key}: {_quote(value)}" for key, value in pairs if value != ""))
        return "\n".join(lines)


def _num(value: float) -> str:
    """``7`` for 7.0, ``0.8`` for 0.8 (A1111 writes floats without a trailing ``.0``)."""
    return f"{value:g}"


def _quote(text: str) -> str:
    if not any(ch in text for ch in ',:\n"'):
        return text
    return json.dumps(text, ensure_ascii=False)


# A ``Key: value`` pair: the value is a JSON string or runs to the next comma.
_PAIR = re.compile(r'\s*([A-Za-z][\w \-/]*):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')
_LORA_TAG = re.compile(r"\s*<lora:([^:>]+):([-+0-9.eE]+)(?::[^>]*)?>")


def parse_parameters(text: str) -> dict[str, Any]:
    """Parse an A1111 ``parameters`` block into prompt, negative prompt and its pairs.

    Returns ``{"prompt", "negative_prompt", "loras": [(name, weight)], "pairs": {key: value}}``.
    """
    lines = text.strip().split("\n")
    pairs: dict[str, str] = {}
    if lines and _PAIR.match(lines[-1]) and len(_PAIR.findall(lines[-1])) >= 3:
        for key, value in _PAIR.findall(lines.pop()):
            if value.startswith('"') and value.endswith('"') and len(value) >= 2:
                try:
                    value = json.loads(value)
                except json.JSONDecodeError:
                    value = value[1:-1]
            pairs[key.strip()] = value.strip()
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    target = prompt_lines
    for line in lines:
        if line.startswith("Negative prompt:"):
            target = negative_lines
            line = line[len("Negative prompt:") :].lstrip()
        target.append(line)
    prompt = "\n".join(prompt_lines)
    loras = [(name, float(weight)) for name, weight in _LORA_TAG.findall(prompt)]
    prompt = _LORA_TAG.sub("", prompt).strip()
    return {
        "prompt": prompt,
        "negative_prompt": "\n".join(negative_lines).strip(),
        "loras": loras,
        "pairs": pairs,
    }


def scheduler_from_sampler(sampler: str, schedule: str = "", family: str = "") -> str:
    """The scheduler id for an A1111 sampler name (and schedule type)."""
    if family in ("sd3", "sd3.5", "flux1") and sampler == "Euler":
        return "flow_euler"
    for ident, (name, sched) in SAMPLER_NAMES.items():
        if name == sampler and sched == schedule and ident != "flow_euler":
            return ident
    for ident, (name, _sched) in SAMPLER_NAMES.items():
        if name == sampler.replace(" Karras", "") and ident != "flow_euler":
            return ident + ("_karras" if "Karras" in (sampler + schedule) else "")
    return sampler


def recipe_from_parameters(text: str) -> Recipe:
    """A partial recipe from an A1111 block alone: models are known by name and short hash."""
    parsed = parse_parameters(text)
    pairs = parsed["pairs"]
    try:
        width, height = (int(v) for v in pairs.get("Size", "512x512").split("x"))
        steps = int(pairs.get("Steps", "20"))
        cfg = float(pairs.get("CFG scale", "7"))
        seed = int(pairs["Seed"])
    except (KeyError, ValueError) as exc:
        raise UsageError(
            f"the image's parameters do not say {exc}", hint="pass the missing setting as a flag"
        ) from exc
    lora_hashes = _name_hashes(pairs.get("Lora hashes", ""))
    loras = tuple(
        ModelRef(name=name, autov2=lora_hashes.get(name), weight=weight)
        for name, weight in parsed["loras"]
    )
    # Embeddings: A1111 names each by the token the prompt uses (its file's stem by default).
    embeddings = tuple(
        ModelRef(name=token, autov2=digest or None, token=token)
        for token, digest in _name_hashes(pairs.get("TI hashes", "")).items()
    )
    vae = (
        ModelRef(name=pairs.get("VAE", ""), autov2=pairs.get("VAE hash"))
        if pairs.get("VAE") or pairs.get("VAE hash")
        else None
    )
    return Recipe(
        prompt=parsed["prompt"],
        negative_prompt=parsed["negative_prompt"],
        seed=seed,
        steps=steps,
        cfg=cfg,
        width=width,
        height=height,
        scheduler=scheduler_from_sampler(
            pairs.get("Sampler", "Euler"), pairs.get("Schedule type", "")
        ),
        checkpoint=ModelRef(name=pairs.get("Model", ""), autov2=pairs.get("Model hash")),
        loras=loras,
        vae=vae,
        embeddings=embeddings,
        modelsafe_version=pairs.get("Version", ""),
    )


def _name_hashes(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in text.split(","):
        name, _, digest = item.rpartition(":")
        if name.strip():
            out[name.strip()] = digest.strip()
    return out


def png_text_chunks(recipe: Recipe) -> dict[str, str]:
    """The PNG text chunks that carry ``recipe``."""
    return {
        PARAMETERS_KEY: recipe.to_parameters(),
        JSON_KEY: json.dumps(recipe.to_json(), ensure_ascii=False, sort_keys=True),
    }


def recipe_from_chunks(chunks: Mapping[str, str]) -> Recipe | None:
    """The recipe in a PNG's text chunks: the JSON one if present, else the A1111 block."""
    if JSON_KEY in chunks:
        try:
            data = json.loads(chunks[JSON_KEY])
        except json.JSONDecodeError as exc:
            raise UsageError(f"the image's modelsafe chunk is not JSON: {exc}") from exc
        return Recipe.from_json(data)
    if PARAMETERS_KEY in chunks:
        return recipe_from_parameters(chunks[PARAMETERS_KEY])
    return None


def recipe_from_png(path: Path) -> Recipe:
    """Read the recipe back from a PNG written by modelsafe (or A1111/Forge)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            chunks = {str(k): str(v) for k, v in getattr(image, "text", {}).items()}
    except (OSError, UnidentifiedImageError) as exc:
        raise UsageError(f"cannot read image {path}: {exc}") from exc
    recipe = recipe_from_chunks(chunks)
    if recipe is None:
        raise UsageError(
            f"{path} carries no generation recipe",
            hint="modelsafe, A1111 and Forge write one in the PNG 'parameters' chunk",
        )
    return recipe


def with_seed(recipe: Recipe, seed: int) -> Recipe:
    return replace(recipe, seed=seed)
