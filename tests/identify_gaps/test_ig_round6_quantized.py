"""Identification round 6: quantized files whose weights are stored packed.

bitsandbytes 4-bit files (Forge's ``flux1-dev-bnb-nf4*.safetensors``, diffusers' bnb-4bit
transformers) store each Linear weight as U8 ``[numel/2, 1]`` beside a quant state whose bytes
are JSON holding the weight's shape; ComfyUI's NVFP4 stores U8 ``[out, in/2]`` beside an F8
``weight_scale``. ``inspect`` reads them at their logical shapes: the family and size of the
unquantized model, its parameter count, the quantization as precision and fact, the VRAM of the
file as stored and of the model dequantized; ``resolve`` maps a LoRA onto them. A training
checkpoint's EMA copy (``v1-5-pruned``) is said and left out of the parameter count. Files are
written full size with sparse data; the small tensors a reader reads hold real bytes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from modelsafe.registry.inspect import InspectReport, inspect_path
from modelsafe.testing import write_safetensors
from modelsafe.testing.layouts import adapters as ad
from modelsafe.testing.layouts import base_models as bm
from modelsafe.testing.layouts import quantized as qz
from modelsafe.testing.layouts import recent_models as rm
from modelsafe.testing.layouts.base_models import Specs

_COMFY = "model.diffusion_model."
_GiB = 1 << 30


def _params(specs: Specs) -> int:
    return sum(math.prod(s) for _, _, s in specs)


def _stored(path: Path, report: InspectReport) -> None:
    assert report.weight_bytes <= path.stat().st_size


def _forge_flux_nf4(folder: Path, nested: bool = False) -> tuple[Path, int]:
    """Forge's all-in-one ``flux1-dev-bnb-nf4-v2``: NF4 transformer, bf16 VAE, fp16 CLIP-L,
    fp8 T5; and the parameters of the same file unquantized."""
    flux = bm.prefixed(_COMFY, bm.bfl_flux())
    rest = bm.prefixed("vae.", bm.ldm_vae(16, False, "BF16")) + bm.text_encoders_flux("F16")
    specs, blobs = qz.bnb_4bit(flux, _COMFY, nested=nested)
    path = qz.write_packed(folder / "flux1-dev-bnb-nf4-v2.safetensors", specs + rest, blobs)
    return path, _params(flux + rest)


def test_forge_flux_dev_nf4_is_flux1_dev_at_its_logical_size(tmp_path: Path) -> None:
    path, params = _forge_flux_nf4(tmp_path)
    report = inspect_path(path)
    assert (report.family, report.kind, report.variant) == ("flux1", "checkpoint", "dev")
    assert report.precision == "nf4"
    assert report.facts["quantization"] == "bnb-4bit"
    assert report.facts["quant_types"] == ["NF4"]
    assert report.parameter_count == params  # the absmax/quant-state tensors are not parameters
    assert "img_in.weight has shape [3072, 64]" in " | ".join(report.evidence)
    transformer = report.vram["components"]["transformer"]
    flux_params = _params(bm.bfl_flux())
    assert transformer["parameters"] == flux_params
    assert transformer["bf16"] == 2 * flux_params  # dequantized
    assert transformer["native"] < 7 * _GiB < transformer["bf16"]  # ~6.3 GiB as stored
    _stored(path, report)


def test_bnb_nested_and_fp4_and_without_a_readable_state(tmp_path: Path) -> None:
    """Double-quantized NF4 (v1), FP4, and a quant state that does not parse (its shape then
    comes from the bias) are all the same Flux.1 [dev] transformer."""
    flux = bm.bfl_flux()
    for name, quant, nested, readable in (
        ("v1", "nf4", True, True),
        ("fp4", "fp4", False, True),
        ("zeros", "nf4", True, False),
    ):
        specs, blobs = qz.bnb_4bit(flux, quant_type=quant, nested=nested)
        path = qz.write_packed(tmp_path / f"{name}.safetensors", specs, blobs if readable else {})
        report = inspect_path(path)
        assert (report.family, report.kind, report.variant) == ("flux1", "transformer", "dev")
        assert report.precision == quant
        assert report.parameter_count == _params(flux), name
        assert report.facts["hidden_size"] == 3072


def test_a_crafted_quant_state_is_not_trusted(tmp_path: Path) -> None:
    """A quant state nested too deep to parse, or recording a shape of another size, is set
    aside: the shape comes from the bias, and inspect answers."""
    flux = bm.bfl_flux()
    specs, blobs = qz.bnb_4bit(flux)
    states = sorted(blobs)
    crafted = {states[0]: b"[" * len(blobs[states[0]])}
    wrong = json.dumps({"shape": [7, 9216, 3072]}).encode()
    crafted[states[1]] = wrong.ljust(len(blobs[states[1]]))  # (JSON may end in spaces)
    path = qz.write_packed(tmp_path / "crafted.safetensors", specs, {**blobs, **crafted})
    report = inspect_path(path)
    assert (report.family, report.variant) == ("flux1", "dev")
    assert report.parameter_count == _params(flux)


def test_flux2_dev_bnb_has_no_biases_and_is_read_by_its_quant_state(tmp_path: Path) -> None:
    """FLUX.2's layers have no bias: only the quant state's recorded shape tells the width."""
    flux2 = rm.flux2_diffusers("dev")
    specs, blobs = qz.bnb_4bit(flux2)
    path = qz.write_packed(tmp_path / "diffusion_pytorch_model.safetensors", specs, blobs)
    report = inspect_path(path)
    assert (report.family, report.kind, report.variant) == ("flux2", "transformer", "dev")
    assert report.facts["hidden_size"] == 6144
    assert report.parameter_count == _params(flux2)
    assert report.precision == "nf4"


@pytest.mark.parametrize(
    "key", ["qwen-image", "sd3.5/large", "hidream", "z-image", "chroma", "flux1/dev"]
)
def test_diffusers_bnb_transformers_are_what_their_bf16_files_are(tmp_path: Path, key: str) -> None:
    specs = bm.diffusers_denoiser(key, dtype="BF16")
    plain = inspect_path(write_safetensors(tmp_path / "bf16.safetensors", specs))
    packed, blobs = qz.bnb_4bit(specs)
    report = inspect_path(qz.write_packed(tmp_path / "nf4.safetensors", packed, blobs))
    assert (report.family, report.kind, report.variant) == (
        plain.family,
        "transformer",
        plain.variant,
    )
    assert report.family != "unknown"
    assert report.parameter_count == plain.parameter_count
    assert report.precision == "nf4"


def test_comfy_nvfp4_is_read_at_its_logical_shapes(tmp_path: Path) -> None:
    flux2 = rm.flux2_bfl("dev")
    specs, blobs = qz.comfy_nvfp4(flux2, skip=("img_in", "txt_in", "final_layer"))
    path = qz.write_packed(tmp_path / "flux2-dev-nvfp4.safetensors", specs, blobs)
    report = inspect_path(path)
    assert (report.family, report.variant) == ("flux2", "dev")
    assert report.precision == "nvfp4"
    assert report.facts["quantization"] == "comfy-nvfp4"
    assert report.parameter_count == _params(flux2)
    assert report.vram["bf16"] >= 2 * _params(flux2) > 3 * report.vram["native"]
    _stored(path, report)


def test_comfy_fp8_layers_say_their_quantization(tmp_path: Path) -> None:
    flux2 = rm.flux2_bfl("dev")
    specs, blobs = qz.comfy_fp8(flux2, skip=("img_in", "txt_in", "final_layer"))
    report = inspect_path(
        qz.write_packed(tmp_path / "flux2_dev_fp8mixed.safetensors", specs, blobs)
    )
    assert (report.family, report.variant) == ("flux2", "dev")
    assert report.precision == "fp8_e4m3fn"
    assert report.facts["quantization"] == "comfy-fp8"


@pytest.mark.parametrize(
    ("key", "family", "variant"),
    [("qwen-image", "qwen-image", None), ("flux1/dev", "flux1", "dev")],
)
def test_nunchaku_int4_transformers_are_read_at_their_logical_shapes(
    tmp_path: Path, key: str, family: str, variant: str | None
) -> None:
    """Qwen-Image's modulation is AWQ-quantized (``img_mod.1.qweight``, no ``.weight``)."""
    specs = bm.diffusers_denoiser(key, dtype="BF16")
    packed = qz.nunchaku_int4(specs, rank=32)
    report = inspect_path(write_safetensors(tmp_path / "svdq-int4_r32.safetensors", packed))
    assert (report.family, report.kind, report.variant) == (family, "transformer", variant)
    assert report.precision == "int4"
    assert report.facts["quantization"] == "nunchaku-int4"
    low_rank = _params([t for t in packed if t[0].endswith((".proj_down", ".proj_up"))])
    assert report.parameter_count == _params(specs) + low_rank


def test_nunchaku_fp4_transformers_are_nvfp4_not_int4(tmp_path: Path) -> None:
    """nunchaku's ``svdq-fp4_*`` files (Blackwell GPUs only): F8 scales, one per 16 values, and
    per-tensor ``wtscale``/``wcscales``, which are scales, not parameters."""
    specs = bm.diffusers_denoiser("flux1/dev", dtype="BF16")
    packed = qz.nunchaku_int4(specs, rank=32, fp4=True)
    report = inspect_path(write_safetensors(tmp_path / "svdq-fp4_r32.safetensors", packed))
    assert (report.family, report.variant) == ("flux1", "dev")
    assert report.precision == "nvfp4"
    assert report.facts["quantization"] == "nunchaku-nvfp4"
    # (the modulation layers stay AWQ int4: the blocks' NVFP4 holds most of the weights)
    assert report.facts["quant_types"] == ["INT4", "NVFP4"]
    low_rank = _params([t for t in packed if t[0].endswith((".proj_down", ".proj_up"))])
    assert report.parameter_count == _params(specs) + low_rank


def test_v1_5_pruned_counts_the_model_not_its_ema_copy(tmp_path: Path) -> None:
    sd1 = bm.unet_checkpoint("sd1", dtype="F32")
    unet = [(n, d, s) for n, d, s in sd1 if n.startswith(_COMFY)]
    # LitEma keeps the copy with the dots taken out of each name
    ema = [
        ("model_ema.diffusion_model" + n[len(_COMFY) :].replace(".", ""), d, s) for n, d, s in unet
    ]
    extra = [("model_ema.decay", "F32", ()), ("model_ema.num_updates", "I32", ())]
    path = write_safetensors(tmp_path / "v1-5-pruned.safetensors", sd1 + ema + extra)
    report = inspect_path(path)
    assert (report.family, report.kind) == ("sd1", "checkpoint")
    assert report.parameter_count == _params(sd1)
    assert any(
        "EMA copy" in e and f"{_params(ema + extra):,}" in e and "not loaded" in e
        for e in report.evidence
    )
    # Most SD 1.5 files keep only the EMA's two scalars: no copy to speak of.
    scalars = inspect_path(write_safetensors(tmp_path / "v1-5-ema-only.safetensors", sd1 + extra))
    assert scalars.parameter_count == _params(sd1 + extra)
    assert not any("EMA copy" in e for e in scalars.evidence), scalars.evidence


def test_a_flux1_lora_maps_onto_the_nf4_checkpoint(tmp_path: Path) -> None:
    from modelsafe.runtime.resolve import resolve

    path, _ = _forge_flux_nf4(tmp_path)
    mods = ad.linears(bm.bfl_flux(), r"(?:double|single)_blocks\.")
    lora = write_safetensors(tmp_path / "lora.safetensors", ad.comfy_lora(mods))
    result = resolve(path, loras=[str(lora)])
    assert result.checkpoint.status == "accepted"
    part = result.parts[0]
    assert part.status == "accepted", [c.reason for c in part.reasons]
    keys = next(c for c in part.reasons if c.rule == "lora_keys")
    total = len(ad.comfy_lora(mods))
    assert keys.reason.startswith(f"{total} of {total} LoRA keys map")
    quantized = next(c for c in part.reasons if c.rule == "quantized_base")
    assert quantized.status == "warn" and "bitsandbytes 4-bit (nf4)" in quantized.reason


def test_a_packed_file_keeps_the_content_id_of_its_stored_bytes(tmp_path: Path) -> None:
    """Reading packed weights at their logical shape changes what `inspect` says, not what
    identifies the file: content_id is over the dtypes and shapes as stored (so a catalog's
    models keep their identity, and the same bytes under another format the same id)."""
    from dataclasses import replace

    from modelsafe.registry.formats.safetensors_reader import (
        read_safetensors_header,
        read_safetensors_index,
    )
    from modelsafe.registry.hashing import hash_file

    specs = bm.prefixed(_COMFY, bm.bfl_flux(depth=1, depth_single=1))
    packed, blobs = qz.bnb_4bit(specs, _COMFY)
    path = qz.write_packed(tmp_path / "small-nf4.safetensors", packed, blobs)
    index = read_safetensors_index(path)
    assert any(t.dtype == "NF4" for t in index.tensors)  # (read at their logical shapes)
    as_stored = replace(index, tensors=read_safetensors_header(path).tensors)
    assert hash_file(path, index)["content_id"] == hash_file(path, as_stored)["content_id"]


@pytest.mark.parametrize(
    ("quantization", "precision", "said"),
    [
        ("comfy-nvfp4", "nvfp4", "on the fly to dequantised layers"),
        ("nunchaku-int4", "int4", "only through nunchaku's own loader"),
        (None, "bf16", None),
    ],
)
def test_a_lora_on_a_packed_checkpoint_is_told_how_it_is_applied(
    quantization: str | None, precision: str, said: str | None
) -> None:
    from modelsafe.plugins.builtin.compatibility_rules import quantized_base_rule
    from modelsafe.types import Part

    facts = {"quantization": quantization} if quantization else {}
    base = Part(
        "checkpoint", "ck", "flux1", "transformer", facts=facts, report={"precision": precision}
    )
    lora = Part("lora", "l", "flux1", "lora")
    found = quantized_base_rule(base, lora)
    if said is None:
        assert found is None
    else:
        assert found is not None and found.status == "warn" and said in found.reason


def test_a_lora_on_a_nunchaku_checkpoint_is_left_to_nunchakus_loader(tmp_path: Path) -> None:
    """nunchaku's layers (``qweight``/``wscales``) are not the model's modules: its own loader
    converts a LoRA, so resolve does not reject one for keys that map onto nothing."""
    from modelsafe.runtime.resolve import resolve

    specs = bm.diffusers_denoiser("flux1/dev", dtype="BF16")
    base = write_safetensors(tmp_path / "svdq-int4-flux.safetensors", qz.nunchaku_int4(specs))
    lora = write_safetensors(
        tmp_path / "lora.safetensors",
        ad.peft_lora([("transformer.", ad.flux_modules("diffusers"))], rank=8, dtype="BF16"),
    )
    part = resolve(base, loras=[str(lora)]).parts[0]
    assert part.status != "rejected", [c.reason for c in part.reasons]
    assert not any(c.rule == "lora_keys" for c in part.reasons)
    quantized = next(c for c in part.reasons if c.rule == "quantized_base")
    assert "nunchaku's own loader" in quantized.reason


def test_a_sharded_bnb_transformer_is_read_across_its_shards(tmp_path: Path) -> None:
    """save_pretrained cuts big models into shards anywhere: a weight whose quant state went
    into the next shard is read at its logical shape too."""
    flux2 = rm.flux2_diffusers("klein-4b")
    specs, blobs = qz.bnb_4bit(flux2)
    cut = 1 + next(
        i
        for i in range(len(specs) // 2, len(specs))
        if specs[i][0].endswith(".weight") and specs[i][1] == "U8"
    )
    folder = tmp_path / "transformer"
    folder.mkdir()
    weight_map: dict[str, str] = {}
    for k, part in enumerate((specs[:cut], specs[cut:]), 1):
        shard = f"diffusion_pytorch_model-0000{k}-of-00002.safetensors"
        names = {name for name, _, _ in part}
        qz.write_packed(folder / shard, part, {n: b for n, b in blobs.items() if n in names})
        weight_map.update(dict.fromkeys(names, shard))
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    (folder / "config.json").write_text(json.dumps({"_class_name": "Flux2Transformer2DModel"}))
    report = inspect_path(folder)
    assert (report.family, report.variant) == ("flux2", "klein-4b")
    assert report.parameter_count == _params(flux2)  # (one weight stayed U8 [numel/2, 1])
