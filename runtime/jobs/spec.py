"""A job spec: the JSON object a client submits, checked key by key, and the request it becomes.

:func:`validate_spec` runs where the job is submitted (no model is read); :func:`build_request`
runs on the worker, where the checkpoint and add-ons are found by path or in the catalog.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelsafe.errors import FileReadError, UsageError
from modelsafe.paths import user_path
from modelsafe.runtime.generate import MAX_TRUE_CFG, refuse_network_tags

if TYPE_CHECKING:
    from modelsafe.registry.catalog import Catalog
    from modelsafe.runtime.generate import GenerateRequest

MAX_SEED = 2**32 - 1
DEVICES = ("cpu", "cuda")
HINT = "see docs/deploy.md for the job spec keys"


def _str(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"job spec: {key!r} must be a non-empty string", hint=HINT)
    return value


def _text(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise UsageError(f"job spec: {key!r} must be a string", hint=HINT)
    return value


def _int(low: int, high: int, step: int = 1) -> Callable[[str, Any], int]:
    def check(key: str, value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise UsageError(f"job spec: {key!r} must be an integer", hint=HINT)
        if not low <= value <= high or value % step:
            every = f" and a multiple of {step}" if step > 1 else ""
            raise UsageError(
                f"job spec: {key!r} is {value}; it must be {low}..{high}{every}", hint=HINT
            )
        return value

    return check


def _number(low: float, high: float) -> Callable[[str, Any], float]:
    def check(key: str, value: Any) -> float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise UsageError(f"job spec: {key!r} must be a number", hint=HINT)
        if not low <= float(value) <= high:
            raise UsageError(
                f"job spec: {key!r} is {value}; it must be {low:g}..{high:g}", hint=HINT
            )
        return float(value)

    return check


def _family(key: str, value: Any) -> str:
    from modelsafe.runtime.generate import FAMILIES

    if value not in FAMILIES:
        raise UsageError(
            f"job spec: {key!r} is {value!r}; modelsafe generates with {', '.join(FAMILIES)}",
            hint=HINT,
        )
    return str(value)


def _device(key: str, value: Any) -> str:
    if value not in DEVICES:
        raise UsageError(f"job spec: {key!r} must be one of {', '.join(DEVICES)}", hint=HINT)
    return str(value)


def _vram(key: str, value: Any) -> str:
    from modelsafe.units import parse_size

    if not isinstance(value, str):
        raise UsageError(f"job spec: {key!r} must be a size such as '8GiB'", hint=HINT)
    if parse_size(value) <= 0:
        raise UsageError(f"job spec: {key!r} must be more than 0 bytes", hint=HINT)
    return value


def _items(fields: Mapping[str, Callable[[str, Any], Any]], required: tuple[str, ...]) -> Any:
    def check(key: str, value: Any) -> list[dict[str, Any]]:
        if not isinstance(value, list):
            raise UsageError(f"job spec: {key!r} must be a list of objects", hint=HINT)
        out = []
        for n, item in enumerate(value):
            where = f"{key}[{n}]"
            if not isinstance(item, Mapping):
                raise UsageError(f"job spec: {where} must be an object", hint=HINT)
            out.append(_check_object(item, fields, required, where))
        return out

    return check


def _lora_weight(key: str, value: Any) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise UsageError(f"job spec: {key!r} must be a number", hint=HINT)
    return float(value)


FIELDS: dict[str, Callable[[str, Any], Any]] = {
    "checkpoint": _str,
    "prompt": _text,
    "negative_prompt": _text,
    "seed": _int(0, MAX_SEED),
    "batch_size": _int(1, 8),
    "steps": _int(1, 200),
    "cfg": _number(0.0, 100.0),
    "clip_skip": _int(1, 12),
    "true_cfg": _number(1.0, MAX_TRUE_CFG),
    "width": _int(8, 4096, 8),
    "height": _int(8, 4096, 8),
    "scheduler": _str,
    "loras": _items({"ref": _str, "weight": _lora_weight}, ("ref",)),
    "vae": _str,
    "embeddings": _items({"ref": _str, "token": _str}, ("ref", "token")),
    "family": _family,
    "tokenizers": _str,
    "config_dir": _str,
    "vram": _vram,
    "device": _device,
}
REQUIRED = ("checkpoint", "prompt")


def _check_object(
    value: Mapping[str, Any],
    fields: Mapping[str, Callable[[str, Any], Any]],
    required: tuple[str, ...],
    where: str,
) -> dict[str, Any]:
    prefix = f"{where}." if where else ""
    for key in value:
        if key not in fields:
            raise UsageError(
                f"job spec: unknown key {prefix + str(key)!r}",
                hint=f"known keys: {', '.join(fields)}",
            )
    for key in required:
        if value.get(key) is None:
            raise UsageError(f"job spec: {prefix + key!r} is required", hint=HINT)
    return {
        key: fields[key](f"{prefix}{key}", item) for key, item in value.items() if item is not None
    }


def validate_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The checked, normalised spec (numbers as their types, ``None`` values left out, LoRA
    weights filled); a :class:`UsageError` naming the key for anything else."""
    if not isinstance(spec, Mapping):
        raise UsageError("a job spec must be a JSON object", hint=HINT)
    out = _check_object(spec, FIELDS, REQUIRED, "")
    for key in ("prompt", "negative_prompt"):
        if key in out:
            refuse_network_tags(out[key], f"job spec: {key!r}")
    for lora in out.get("loras", []):
        lora.setdefault("weight", 1.0)
    return out


# -- on the worker -------------------------------------------------------------------------------


def find_input(ref: str, what: str, catalog: Catalog | None) -> Path:
    """A path that exists, or the present location of the catalog model ``ref`` names (a name
    or a hash prefix), as ``resolve`` and ``generate --from-image`` find them."""
    path = user_path(ref)
    if path.exists():
        return path
    if catalog is None:
        raise FileReadError(
            f"the {what} {ref!r} does not exist", hint="give a path or scan it into the catalog"
        )
    from modelsafe.registry.catalog.queries import file_on_disk, find_model

    with catalog.session() as session:
        found = file_on_disk(find_model(session, ref))
    if found is not None:
        return found
    raise FileReadError(
        f"the {what} {ref!r} is in the catalog but none of its files is on this machine",
        hint="put the file on a disk the worker reads (same path), or `modelsafe scan` it there",
    )


def build_request(
    spec: Mapping[str, Any], catalog: Catalog | None, *, device: str | None = None
) -> GenerateRequest:
    """The :class:`GenerateRequest` of a validated spec; every input found on this machine."""
    from modelsafe.runtime.generate import EmbeddingSpec, GenerateRequest, LoraSpec

    def opt_path(key: str) -> Path | None:
        return user_path(spec[key]) if key in spec else None

    return GenerateRequest(
        checkpoint=find_input(spec["checkpoint"], "checkpoint", catalog),
        prompt=spec["prompt"],
        negative_prompt=spec.get("negative_prompt", ""),
        seed=spec.get("seed"),
        batch_size=spec.get("batch_size", 1),
        steps=spec.get("steps"),
        cfg=spec.get("cfg"),
        clip_skip=spec.get("clip_skip", 1),
        true_cfg=spec.get("true_cfg", 1.0),
        width=spec.get("width"),
        height=spec.get("height"),
        scheduler=spec.get("scheduler"),
        family=spec.get("family"),
        loras=tuple(
            LoraSpec(find_input(lo["ref"], "LoRA", catalog), lo.get("weight", 1.0))
            for lo in spec.get("loras", [])
        ),
        vae=find_input(spec["vae"], "VAE", catalog) if "vae" in spec else None,
        embeddings=tuple(
            EmbeddingSpec(find_input(e["ref"], "embedding", catalog), e["token"])
            for e in spec.get("embeddings", [])
        ),
        tokenizers=opt_path("tokenizers"),
        config_dir=opt_path("config_dir"),
        plan={"device": device or spec.get("device", "cpu")},
    )
