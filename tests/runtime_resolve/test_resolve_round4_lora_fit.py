"""LoRA identity and fit, round 4: FLUX.2 LoRAs in BFL/ComfyUI names, LyCORIS OFT/BOFT saved with
``rescale``, files whose kind is unknown, and LoRAs whose layers have another model's shapes.

Each LoRA is written from the layers of the checkpoint it is for (FLUX.2 as BFL ships it, SD1 and
SDXL single files), in the naming its trainer writes (ComfyUI/ai-toolkit ``diffusion_model.`` +
``lora_A``/``lora_B``, kohya/LyCORIS ``lora_unet_`` + LyCORIS parts).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import rr_layouts as L

from modelsafe.registry.inspect import inspect_path
from modelsafe.runtime.resolve import resolve
from modelsafe.testing.layouts import base_models, recent_models

NO_CATALOG = "sqlite:////nonexistent-dir/none.db"
Specs = list[tuple[str, str, tuple[int, ...]]]


def _reasons(part: Any) -> dict[str, str]:
    return {r.rule: f"{r.status}: {r.reason}" for r in part.reasons}


def _linears(specs: Specs, *starts: str) -> list[tuple[str, tuple[int, ...]]]:
    """The 2-D weights of the blocks named ``starts``: the layers a LoRA patches."""
    return [
        (n[: -len(".weight")], shape)
        for n, _, shape in specs
        if n.endswith(".weight") and len(shape) == 2 and n.startswith(starts)
    ]


def _comfy_lora(layers: list[tuple[str, tuple[int, ...]]], rank: int = 16) -> Specs:
    """ComfyUI / ai-toolkit naming: ``diffusion_model.<BFL module>.lora_A/B.weight``."""
    specs: Specs = []
    for module, (out, inn) in layers:
        specs.append((f"diffusion_model.{module}.lora_A.weight", "BF16", (rank, inn)))
        specs.append((f"diffusion_model.{module}.lora_B.weight", "BF16", (out, rank)))
    return specs


def _kohya(module: str) -> str:
    return "lora_unet_" + module.replace(".", "_")


# -- D1: FLUX.2 LoRAs in BFL / ComfyUI naming -----------------------------------------------------


def _flux2(write: Any, variant: str) -> tuple[Path, Specs]:
    specs = recent_models.flux2_bfl(variant)
    return write(f"flux2_{variant}.safetensors", specs), specs


def test_flux2_dev_lora_in_comfy_names_is_flux2_and_fits_dev_only(pm: Any, write: Any) -> None:
    dev, dev_specs = _flux2(write, "dev")
    klein, _ = _flux2(write, "klein-4b")
    lora = write(
        "l_flux2.safetensors",
        _comfy_lora(_linears(dev_specs, "double_blocks.", "single_blocks.")),
    )
    report = inspect_path(lora)
    assert (report.kind, report.family) == ("lora", "flux2"), report.evidence
    assert report.facts.get("hidden_size") == 6144
    assert any("FLUX.2 [dev]" in e for e in report.evidence)

    on_dev = resolve(dev, loras=[str(lora)], catalog=NO_CATALOG).parts[0]
    assert on_dev.status == "accepted", _reasons(on_dev)
    assert _reasons(on_dev)["lora_keys"].startswith("accept: 320 of 320"), _reasons(on_dev)

    on_klein = resolve(klein, loras=[str(lora)], catalog=NO_CATALOG).parts[0]
    assert on_klein.status == "rejected", _reasons(on_klein)
    assert _reasons(on_klein)["lora_width"].startswith("reject"), _reasons(on_klein)
    assert _reasons(on_klein)["lora_keys"].startswith("reject"), _reasons(on_klein)


def test_flux2_klein_lora_is_told_from_flux1_by_its_swiglu_mlp(pm: Any, write: Any) -> None:
    klein, klein_specs = _flux2(write, "klein-4b")
    flux1 = write("flux1.safetensors", base_models.bfl_flux())
    lora = write(
        "l_klein.safetensors",
        _comfy_lora(_linears(klein_specs, "double_blocks.", "single_blocks.")),
    )
    report = inspect_path(lora)
    assert report.family == "flux2", report.evidence
    assert any("6x the model width" in e for e in report.evidence), report.evidence
    assert resolve(klein, loras=[str(lora)], catalog=NO_CATALOG).parts[0].status == "accepted"
    on_flux1 = resolve(flux1, loras=[str(lora)], catalog=NO_CATALOG).parts[0]
    assert _reasons(on_flux1)["family"] == "reject: LoRA is for FLUX.2, checkpoint is Flux.1"


def test_flux1_lora_keeps_its_family_and_is_rejected_on_flux2(pm: Any, write: Any) -> None:
    flux1_specs = base_models.bfl_flux()
    dev, _ = _flux2(write, "dev")
    lora = write(
        "l_flux1.safetensors",
        _comfy_lora(_linears(flux1_specs, "double_blocks.", "single_blocks.")),
    )
    assert inspect_path(lora).family == "flux1"
    part = resolve(dev, loras=[str(lora)], catalog=NO_CATALOG).parts[0]
    assert part.status == "rejected", _reasons(part)
    assert _reasons(part)["lora_keys"].startswith("reject"), _reasons(part)


def test_unidentified_lora_whose_keys_map_on_flux2_is_checked(pm: Any, write: Any) -> None:
    # Attention only on klein 4B's 5 double blocks: Flux.1's first blocks look the same, so the
    # family stays unknown; its keys land on every layer of klein 4B, which decides.
    klein, klein_specs = _flux2(write, "klein-4b")
    lora = write(
        "l_attn.safetensors",
        _comfy_lora([m for m in _linears(klein_specs, "double_blocks.") if "_attn." in m[0]]),
    )
    assert inspect_path(lora).family == "unknown"
    part = resolve(klein, loras=[str(lora)], catalog=NO_CATALOG).parts[0]
    assert part.status == "accepted", _reasons(part)
    assert _reasons(part)["lora_keys"].startswith("accept: 40 of 40"), _reasons(part)


# -- D2: LyCORIS OFT / BOFT with rescale, and files of unknown kind -------------------------------


def _sdxl_attn1(sdxl: Specs) -> list[tuple[str, tuple[int, ...]]]:
    return [
        (n[len("model.diffusion_model.") : -len(".weight")], shape)
        for n, _, shape in sdxl
        if n.startswith("model.diffusion_model.") and n.endswith("attn1.to_q.weight")
    ]


def _oft(layers: list[tuple[str, tuple[int, ...]]], boft: bool, block: int = 8) -> Specs:
    specs: Specs = []
    for module, shape in layers:
        n = shape[0] // block
        blocks = (4, n, block, block) if boft else (n, block, block)
        name = _kohya(module)
        specs.append((f"{name}.oft_blocks", "F32", blocks))
        specs.append((f"{name}.rescale", "F32", (shape[0], 1)))
        specs.append((f"{name}.alpha", "F32", ()))
    return specs


def test_rescaled_oft_and_boft_are_lycoris_for_sdxl(pm: Any, write: Any) -> None:
    sdxl = L.sdxl_checkpoint()
    layers = _sdxl_attn1(sdxl)
    oft = inspect_path(write("oft.safetensors", _oft(layers, boft=False)))
    boft = inspect_path(write("boft.safetensors", _oft(layers, boft=True)))
    assert (oft.kind, oft.variant, oft.family) == ("lycoris", "oft", "sdxl"), oft.evidence
    assert (boft.kind, boft.variant, boft.family) == ("lycoris", "boft", "sdxl"), boft.evidence


def test_file_of_unknown_kind_is_not_accepted_on_its_keys_alone(pm: Any, write: Any) -> None:
    base = write("sdxl.safetensors", L.sdxl_checkpoint())
    specs: Specs = []
    for module, (out, inn) in _sdxl_attn1(L.sdxl_checkpoint()):
        name = _kohya(module)
        specs.append((f"{name}.lora_down.weight", "F16", (8, inn)))
        specs.append((f"{name}.lora_up.weight", "F16", (out, 8)))
        specs.append((f"{name}.odd_scale", "F16", (out,)))  # a part no reader knows
    odd = write("odd.safetensors", specs)
    assert inspect_path(odd).kind == "unknown"
    result = resolve(base, loras=[str(odd)], catalog=NO_CATALOG)
    part = result.parts[0]
    assert part.status == "unchecked", _reasons(part)
    assert _reasons(part)["lora_keys"].startswith("warn"), _reasons(part)
    assert not result.compatible


# -- D3: shape mismatches count against the fit ---------------------------------------------------


def test_sdxl_conv_lokr_with_tucker_on_sd1_is_rejected(pm: Any, write: Any) -> None:
    sd1 = write("sd1.safetensors", L.sd1_checkpoint())
    specs: Specs = []
    for n, _, shape in L.sdxl_checkpoint():
        if not (n.startswith("model.diffusion_model.") and n.endswith("_layers.3.weight")):
            continue
        if len(shape) != 4:
            continue
        out, inn = shape[0], shape[1]
        name = _kohya(n[len("model.diffusion_model.") : -len(".weight")])
        specs.append((f"{name}.lokr_w1", "F16", (4, 4)))
        specs.append((f"{name}.lokr_w2_a", "F16", (8, out // 4)))
        specs.append((f"{name}.lokr_w2_b", "F16", (8, inn // 4)))
        specs.append((f"{name}.lokr_t2", "F16", (8, 8, 3, 3)))
        specs.append((f"{name}.alpha", "F16", ()))
    lokr = write("lokr_t2.safetensors", specs)
    part = resolve(sd1, loras=[str(lokr)], catalog=NO_CATALOG).parts[0]
    assert part.status == "rejected", _reasons(part)
    assert "other shapes in this model" in _reasons(part)["lora_keys"], _reasons(part)


def test_oft_on_another_model_names_the_output_width_it_changes(pm: Any, write: Any) -> None:
    """OFT changes a layer's outputs only: a mismatch says ``640x?``, never ``640xNone``."""
    sd1 = write("sd1.safetensors", L.sd1_checkpoint())
    oft = write("oft.safetensors", _oft(_sdxl_attn1(L.sdxl_checkpoint()), boft=False))
    part = resolve(sd1, loras=[str(oft)], catalog=NO_CATALOG).parts[0]
    said = " | ".join([*_reasons(part).values(), *(e for r in part.reasons for e in r.evidence)])
    assert "LoRA delta 640x?" in said and "None" not in said, said
