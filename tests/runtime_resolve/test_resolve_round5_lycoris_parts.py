"""LyCORIS parts beside the delta, round 5: ``train_norm``'s ``w_norm``/``b_norm`` on norm layers,
(IA)^3 vectors that scale a layer's input (the stored ``on_input`` flag), conv (IA)^3
``[1, out, 1, 1]``, and the q/k RMSNorm scales of BFL's Flux control LoRAs.

Each LoRA is written from the layers of the checkpoint it is for (SD1/SDXL single files, Flux.1 as
BFL ships it) in the naming its trainer writes: kohya/LyCORIS ``lora_unet_`` (diffusers module
names for SD1, the original ones for SDXL), LyCORIS's parts (NormModule ``w_norm``/``b_norm``
``[C]``; IA3Module ``weight`` ``[n]`` or ``[1, n, 1, 1]`` and a 0-D int64 ``on_input``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import rr_layouts as L
from safetensors.numpy import save_file

from modelsafe.registry.detect.lora_keys import LoraModule
from modelsafe.registry.inspect import inspect_path
from modelsafe.registry.model_parts import split_components
from modelsafe.registry.read import read_index
from modelsafe.runtime.lora_mapping import ldm_unet_to_diffusers, map_lora
from modelsafe.runtime.resolve import resolve
from modelsafe.testing.layouts import base_models

NO_CATALOG = "sqlite:////nonexistent-dir/none.db"
UNET = "model.diffusion_model."
Specs = list[tuple[str, str, tuple[int, ...]]]
Layers = list[tuple[str, tuple[int, ...]]]


def _reasons(part: Any) -> dict[str, str]:
    return {r.rule: f"{r.status}: {r.reason}" for r in part.reasons}


def _unet_layers(checkpoint: Specs, diffusers_names: bool) -> tuple[Layers, Layers]:
    """(weight layers of 2+ dims, norm layers) of the checkpoint's UNet, in kohya's flat names."""
    layers: Layers = []
    norms: Layers = []
    for n, _, shape in checkpoint:
        if not (n.startswith(UNET) and n.endswith(".weight")):
            continue
        module: str | None = n[len(UNET) : -len(".weight")]
        if diffusers_names and module is not None:
            module = ldm_unet_to_diffusers(module)
        if module is None:
            continue
        flat = "lora_unet_" + module.replace(".", "_")
        (norms if len(shape) == 1 else layers).append((flat, shape))
    return layers, norms


def _locon(layers: Layers, norms: Layers, full: bool = False, rank: int = 8) -> Specs:
    """LyCORIS LoCon (or full diffs) on every layer, with train_norm's w_norm/b_norm."""
    specs: Specs = []
    for name, shape in layers:
        if full:
            specs += [(f"{name}.diff", "F16", shape), (f"{name}.diff_b", "F16", (shape[0],))]
            continue
        kernel = shape[2:]
        specs.append((f"{name}.lora_down.weight", "F16", (rank, shape[1], *kernel)))
        specs.append((f"{name}.lora_up.weight", "F16", (shape[0], rank, *((1, 1)[: len(kernel)]))))
        specs.append((f"{name}.alpha", "F16", ()))
    for name, (channels,) in norms:
        specs += [(f"{name}.w_norm", "F16", (channels,)), (f"{name}.b_norm", "F16", (channels,))]
    return specs


# -- D1: train_norm's w_norm / b_norm -------------------------------------------------------------


def test_sd1_locon_with_norms_is_lycoris_and_fits_sd1_only(
    pm: Any, write: Any, run_cli: Any
) -> None:
    sd1_specs = L.sd1_checkpoint()
    sd1 = write("sd1.safetensors", sd1_specs)
    sdxl = write("sdxl.safetensors", L.sdxl_checkpoint())
    layers, norms = _unet_layers(sd1_specs, diffusers_names=True)
    specs = _locon(layers, norms)
    lora = write("locon_norm.safetensors", specs, {"ss_network_module": "lycoris.kohya"})
    report = inspect_path(lora)
    assert (report.kind, report.variant, report.family) == ("lycoris", "locon", "sd1")
    assert "w_norm" in report.evidence[0], report.evidence

    part = resolve(sd1, loras=[str(lora)], catalog=NO_CATALOG).parts[0]
    assert part.status == "accepted", _reasons(part)
    assert (
        _reasons(part)["lora_keys"]
        == f"accept: {len(specs)} of {len(specs)} LoRA keys map onto this UNet"
    )
    code, _out, _err = run_cli("resolve", str(sd1), "--lora", str(lora), "--catalog", NO_CATALOG)
    assert code == 0
    code, out, _err = run_cli("resolve", str(sdxl), "--lora", str(lora), "--catalog", NO_CATALOG)
    assert code == 1 and "rejected" in out


def test_sdxl_full_diff_with_norms_and_text_encoder_norms(pm: Any, write: Any) -> None:
    """Norm keys are half the file (the GroupNorms of every resnet, the LayerNorms of every
    transformer block); CLIP-G's LayerNorms land on OpenCLIP's ln_1/ln_2/ln_final."""
    sdxl_specs = L.sdxl_checkpoint()
    sdxl = write("sdxl.safetensors", sdxl_specs)
    layers, norms = _unet_layers(sdxl_specs, diffusers_names=False)
    attn = [m for m in layers if "_attn1_" in m[0]]
    te2 = [
        (f"lora_te2_text_model_encoder_layers_{i}_layer_norm{n}", (1280,))
        for i in range(32)
        for n in (1, 2)
    ]
    te2.append(("lora_te2_text_model_final_layer_norm", (1280,)))
    specs = _locon(attn, norms + te2, full=True)
    lora = write("full_norm.safetensors", specs)
    report = inspect_path(lora)
    assert (report.kind, report.variant, report.family) == ("lycoris", "full", "sdxl")
    part = resolve(sdxl, loras=[str(lora)], catalog=NO_CATALOG).parts[0]
    assert part.status == "accepted", _reasons(part)
    assert _reasons(part)["lora_keys"].startswith(f"accept: {len(specs)} of {len(specs)}")


def test_norm_of_another_width_is_a_shape_mismatch(pm: Any, write: Any) -> None:
    sd1_specs = L.sd1_checkpoint()
    layers, norms = _unet_layers(sd1_specs, diffusers_names=True)
    norm, (channels,) = norms[0]
    wrong = [
        (n, d, (channels + 1,) if n.startswith(norm + ".") else s)
        for n, d, s in _locon(layers, norms)
    ]
    lora = write("locon_norm.safetensors", wrong)
    base = read_index(write("sd1.safetensors", sd1_specs))
    cov = map_lora(read_index(lora), split_components(base, "sd1", "checkpoint"))
    assert cov.mapped_keys == cov.lora_keys - 2
    assert cov.shape_mismatches == (
        f"input_blocks.1.0.in_layers.0: LoRA delta {channels + 1}x?, checkpoint layer "
        f"{channels}x{channels}",
    )


# -- D2: (IA)^3 on the input, conv (IA)^3 ---------------------------------------------------------


def _ia3_file(path: Path, layers: Layers, on_input: set[str], flags: bool = True) -> Path:
    """LyCORIS IA3Module per layer: ``weight`` ``[n]`` (a conv: ``[1, n, 1, 1]``), n the input
    width for the layers in ``on_input``, and ``on_input`` as LyCORIS stores it (0-D int64;
    all 0 when ``flags`` is False)."""
    tensors: dict[str, np.ndarray] = {}
    for name, shape in layers:
        scaled = name in on_input
        width = shape[1] if scaled else shape[0]
        vector = (1, width, *(1 for _ in shape[2:])) if len(shape) > 2 else (width,)
        tensors[f"{name}.weight"] = np.zeros(vector, dtype=np.float16)
        tensors[f"{name}.on_input"] = np.array(int(scaled and flags), dtype=np.int64)
    save_file(tensors, str(path))
    return path


def _sd1_ia3_layers() -> tuple[Layers, set[str]]:
    layers, _norms = _unet_layers(L.sd1_checkpoint(), diffusers_names=True)
    picked = [
        m for m in layers if m[0].endswith(("attn1_to_k", "attn1_to_v", "ff_net_2", "proj_in"))
    ]
    return picked, {m[0] for m in picked if m[0].endswith("ff_net_2")}


def test_ia3_on_input_reads_the_flag_and_fits_sd1(pm: Any, write: Any, tmp_path: Path) -> None:
    sd1 = write("sd1.safetensors", L.sd1_checkpoint())
    layers, on_input = _sd1_ia3_layers()
    assert any(len(s) == 4 for _n, s in layers)  # SD1's proj_in is a 1x1 conv: [1, out, 1, 1]
    ia3 = _ia3_file(tmp_path / "ia3_in.safetensors", layers, on_input)
    report = inspect_path(ia3)
    assert (report.kind, report.variant) == ("lycoris", "ia3"), report.evidence
    part = resolve(sd1, loras=[str(ia3)], catalog=NO_CATALOG).parts[0]
    assert part.status == "accepted", _reasons(part)
    keys = 2 * len(layers)
    assert _reasons(part)["lora_keys"] == f"accept: {keys} of {keys} LoRA keys map onto this UNet"
    # The same vectors with every on_input 0: LyCORIS would scale ff.net.2's 320 outputs with a
    # 1280-long vector, so the side comes from the flag, not from a guess.
    flag0 = _ia3_file(tmp_path / "ia3_flag0.safetensors", layers, on_input, flags=False)
    part = resolve(sd1, loras=[str(flag0)], catalog=NO_CATALOG).parts[0]
    assert part.status == "rejected", _reasons(part)
    assert "other shapes in this model" in _reasons(part)["lora_keys"]


def test_ia3_vector_sides() -> None:
    def sides(shape: tuple[int, ...], on_input: bool | None) -> tuple[int | None, int | None]:
        mod = LoraModule("denoiser", "x", False, "kohya", parts={"ia3_w": shape})
        mod.on_input = on_input
        out, inn, _flat = mod.delta_shape()
        return out, inn

    assert sides((1280,), True) == (None, 1280)
    assert sides((320,), False) == (320, None)
    assert sides((320,), None) == (320, None)  # unread: LyCORIS's default, the output
    assert sides((1, 320, 1, 1), False) == (320, None)
    assert sides((1, 768, 1, 1), True) == (None, 768)
    assert sides((1, 1280), None) == (None, 1280)
    assert sides((320, 1), None) == (320, None)


# -- D3: BFL Flux control LoRAs' q/k norm scales --------------------------------------------------


def test_flux_control_lora_norm_scales_land_on_the_rmsnorms(pm: Any, write: Any) -> None:
    depth_specs = base_models.bfl_flux(in_features=128)
    depth = write("flux_depth.safetensors", depth_specs)
    specs: Specs = []
    for name, dtype, shape in depth_specs:
        if name.endswith(".weight") and len(shape) == 2:
            module = name[: -len(".weight")]
            specs += [(f"{module}.lora_A.weight", "BF16", (64, shape[1]))]
            specs += [(f"{module}.lora_B.weight", "BF16", (shape[0], 64))]
        elif name.endswith(("query_norm.scale", "key_norm.scale")):
            specs.append((name, dtype, shape))
    lora = write("canny_lora.safetensors", specs)
    part = resolve(depth, loras=[str(lora)], catalog=NO_CATALOG).parts[0]
    assert part.status == "accepted", _reasons(part)
    reason = _reasons(part)["lora_keys"]
    assert reason == f"accept: {len(specs)} of {len(specs)} LoRA keys map onto this transformer"
    evidence = [e for r in part.reasons for e in r.evidence]
    assert not any("no module for" in e for e in evidence), evidence
