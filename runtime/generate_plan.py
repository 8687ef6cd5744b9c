"""Turn the VRAM planner's answer into the settings a generation runs with.

``modelsafe generate --vram 8GiB`` asks :func:`modelsafe.runtime.plan.plan` about the resolved set
at the request's size and batch, and runs with its choices: dtype, offload, VAE tiling and slicing,
attention slicing, fp8 storage. A setting given explicitly (a CLI flag, or a key of
``GenerateRequest.plan``) overrides the plan's choice. The result is a :class:`PlanRecord` that
the recipe keeps: every setting, where it came from (``plan``, ``flag``, ``device`` or
``default``) and why (the planner's own reasons).

A plan that cannot fit raises :class:`PlanDoesNotFitError` with the planner's suggestions, before
anything is loaded. On a CPU the planned 16-bit dtype is not used (fp32 unless ``dtype`` is
given: CPUs run 16-bit matrix products slowly or not at all), nor is offload (the weights are in
CPU memory already); tiling and slicing are, and the record says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modelsafe.errors import ModelsafeError

if TYPE_CHECKING:
    from modelsafe.registry.catalog import Catalog
    from modelsafe.runtime.generate import GenerateRequest
    from modelsafe.runtime.plan import Plan

# The settings a generation runs with, and their values when nothing decides them.
DEFAULTS: dict[str, Any] = {
    "device": "cpu",
    "dtype": "fp32",
    "offload": "none",
    "vae_tiling": False,
    "vae_slicing": False,
    "attention_slicing": False,
    "denoiser_fp8": False,
    "text_encoder_fp8": False,
}
SETTINGS = tuple(DEFAULTS)
DIT_COMPUTE = "bf16"


class PlanDoesNotFitError(ModelsafeError):
    """No combination of the memory-saving options brings the set under the VRAM budget."""

    exit_code = 1


@dataclass(frozen=True)
class PlanRecord:
    """The settings a generation ran with and why (kept in the recipe as ``plan``)."""

    settings: dict[str, Any]
    source: dict[str, str]  # setting -> plan | flag | device | default | recipe
    why: dict[str, str] = field(default_factory=dict)  # setting -> reason
    budget: int | None = None
    peak: int | None = None
    choices: tuple[dict[str, str], ...] = ()  # the planner's choices, as it gave them
    notes: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PlanRecord:
        return cls(
            settings=dict(data.get("settings") or {}),
            source=dict(data.get("source") or {}),
            why=dict(data.get("why") or {}),
            budget=data.get("budget"),
            peak=data.get("peak"),
            choices=tuple(dict(c) for c in data.get("choices") or ()),
            notes=tuple(data.get("notes") or ()),
        )

    def to_json(self) -> dict[str, Any]:
        value: dict[str, Any] = {
            "settings": dict(self.settings),
            "source": dict(self.source),
            "why": dict(self.why),
        }
        if self.budget is not None:
            value.update(
                budget=self.budget,
                peak=self.peak,
                choices=[dict(c) for c in self.choices],
                notes=list(self.notes),
            )
        return value


def explicit_settings(request: GenerateRequest) -> dict[str, Any]:
    """The settings the caller fixed (``request.plan``), unknown keys refused."""
    from modelsafe.errors import UsageError

    unknown = sorted(set(request.plan) - set(SETTINGS))
    if unknown:
        raise UsageError(
            f"unknown plan setting(s): {', '.join(unknown)}", hint=f"one of {', '.join(SETTINGS)}"
        )
    return {k: v for k, v in request.plan.items() if v is not None}


def default_device(wanted_plan: bool) -> str:
    """``cuda`` when a VRAM plan is asked for and a CUDA GPU is there, else ``cpu``."""
    if not wanted_plan:
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def settle(request: GenerateRequest, catalog: Catalog | None = None) -> PlanRecord:
    """The settings ``request`` (with its defaults filled) runs with; plans when ``request.vram``
    is set. Raises PlanDoesNotFitError before anything loads when the plan cannot fit."""
    given = explicit_settings(request)
    replay = request.recipe_plan if request.vram is None else {}
    if replay and given == dict(replay.get("settings") or {}):
        return PlanRecord.from_json(replay)  # --from-image, nothing changed: the same record
    replayed = dict(replay.get("settings") or {}) if replay else {}
    settings = dict(DEFAULTS)
    source = dict.fromkeys(SETTINGS, "default")
    why: dict[str, str] = {}
    settings["device"] = str(given.get("device") or default_device(request.vram is not None))
    if "device" not in given and request.vram is not None:
        why["device"] = (
            "a VRAM plan was asked for and a CUDA GPU is present"
            if settings["device"] == "cuda"
            else "no CUDA GPU here: runs on the CPU with the plan's other choices"
        )
    planned = None
    if request.vram is not None:
        planned = run_planner(request, catalog)
        _take_plan(planned, settings, source, why)
    cpu = str(settings["device"]).split(":")[0] == "cpu"
    if cpu and given.get("offload", "none") != "none":
        from modelsafe.errors import UsageError

        raise UsageError(
            f"--offload {given['offload']} moves weights between CPU memory and a GPU; "
            "on device cpu there is no GPU to offload to",
            hint="leave --offload out, or pass --device cuda",
        )
    if cpu and settings["offload"] != "none":
        why["offload"] = (
            f"device cpu: the weights already live in CPU memory (the plan chose "
            f"offload={settings['offload']} for a GPU)"
        )
        settings["offload"], source["offload"] = "none", "device"
    if cpu and "dtype" not in given and settings["dtype"] != "fp32":
        why["dtype"] = (
            f"device cpu: runs in fp32 (the plan chose {settings['dtype']}; CPUs run 16-bit "
            "matrix products slowly or not at all); pass --dtype to change"
        )
        settings["dtype"], source["dtype"] = "fp32", "device"
    for key, value in given.items():
        settings[key] = value
        if key in replayed and replayed[key] == value:
            source[key] = "recipe"
            why[key] = "as the image was made: " + str(
                (replay.get("why") or {}).get(key) or (replay.get("source") or {}).get(key, "")
            )
            continue
        source[key] = "flag"
        chose = _planned(planned, key) if planned is not None else None
        why[key] = "given explicitly" + (
            f" (the plan chose {_show(chose)})" if chose is not None and chose != value else ""
        )
    if planned is None:
        return PlanRecord(settings, source, why)
    return PlanRecord(
        settings,
        source,
        why,
        budget=planned.budget,
        peak=planned.peak,
        choices=tuple({"name": c.name, "value": c.value, "why": c.why} for c in planned.choices),
        notes=tuple(planned.notes),
    )


def run_planner(request: GenerateRequest, catalog: Catalog | None) -> Plan:
    """Ask the planner about the request's set at its size and batch; refuse what cannot fit."""
    from modelsafe.runtime.plan import plan

    assert request.width is not None and request.height is not None
    result = plan(
        str(request.checkpoint),
        vram=request.vram,
        resolution=(request.width, request.height),
        batch=len(request.image_seeds()),
        loras=[(str(lo.path), lo.weight) for lo in request.loras],
        vae=str(request.vae) if request.vae else None,
        embeddings=[str(e.path) for e in request.embeddings],
        controlnets=[str(request.controlnet.path)] if request.controlnet else [],
        text_encoders=[str(p) for p in request.text_encoders.values()],
        catalog=catalog,
    )
    if not result.fits:
        from modelsafe.units import format_size

        worst = max(result.phases, key=lambda p: p.peak)
        raise PlanDoesNotFitError(
            f"{request.width}x{request.height}, batch {result.batch} does not fit "
            f"{format_size(result.budget)} of VRAM: even with every saving option the "
            f"{worst.name} phase peaks at {format_size(worst.peak)}",
            hint="; ".join(result.suggestions) or "give a larger --vram",
        )
    return result


def _take_plan(
    planned: Plan, settings: dict[str, Any], source: dict[str, str], why: dict[str, str]
) -> None:
    opts = planned.options
    reasons = {c.name: c.why for c in planned.choices}
    denoiser = next((w for w in planned.weights if w.role == "denoiser"), None)
    dtype = planned.dtypes.get(denoiser.name, "fp16") if denoiser else "fp16"
    stored_fp8 = dtype == "fp8"  # (priced in fp8: kept in fp8 storage, as the plan has it)
    if dtype in ("fp8", "native"):  # fp8 storage / GGUF: compute in 16 bits
        dtype = DIT_COMPUTE if any(v == "bf16" for v in planned.dtypes.values()) else "fp16"
    values = {
        "dtype": dtype,
        "offload": opts.offload,
        "vae_tiling": opts.vae_tiling,
        "vae_slicing": opts.vae_slicing,
        "attention_slicing": opts.attention_slicing,
        "denoiser_fp8": opts.denoiser_fp8 or stored_fp8,
        "text_encoder_fp8": opts.text_encoder_fp8 or planned.dtypes.get("t5xxl") == "fp8",
    }
    den = f"dtype {denoiser.name}" if denoiser else ""
    reason_of = {"dtype": den, "denoiser_fp8": den, "text_encoder_fp8": "dtype t5xxl"}
    for key, value in values.items():
        settings[key], source[key] = value, "plan"
        reason = reasons.get(reason_of.get(key, key))
        if key == "denoiser_fp8" and not value:
            reason = f"the denoiser fits in {dtype}"
        elif reason is None and key == "text_encoder_fp8":
            reason = "no T5 text encoder in the set"
        if reason:
            why[key] = reason


def _planned(planned: Plan, key: str) -> Any:
    """The plan's value for ``key`` (None for a setting the plan does not choose)."""
    settings: dict[str, Any] = {}
    _take_plan(planned, settings, {}, {})
    return settings.get(key)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)
