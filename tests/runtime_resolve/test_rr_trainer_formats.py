"""LoRA formats as trainers write them, checked end to end (detectors + resolve rules).

Each case is a file layout a real trainer or app writes (names and shapes from their public
code: XLabs' Flux processors, LyCORIS Tucker factors, sd-scripts' OFT network, PEFT DoRA,
diffusers' SD3 LoRAs over SAI single files), and each was once read wrongly: accepted without a
check, rejected though ComfyUI loads it, or mapped with false shape mismatches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import rr_layouts as L

from modelsafe.registry.detect.lora_keys import parse_key
from modelsafe.registry.inspect import inspect_path
from modelsafe.registry.model_parts import split_components
from modelsafe.registry.read import read_index
from modelsafe.runtime.lora_mapping import map_lora
from modelsafe.runtime.resolve import resolve
from modelsafe.testing.layouts import base_models

NO_CATALOG = "sqlite:////nonexistent-dir/none.db"


def _reasons(part: Any) -> str:
    return " | ".join(r.reason for r in part.reasons)


def _modules(specs: list[L.Spec], endings: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    return {
        n[: -len(".weight")]: shape
        for n, _, shape in specs
        if n.endswith(".weight") and len(shape) >= 2 and n[: -len(".weight")].endswith(endings)
    }


def _coverage(base: Path, lora: Path, family: str, kind: str) -> Any:
    return map_lora(read_index(lora), split_components(read_index(base), family, kind))


# -- files nothing recognises ---------------------------------------------------------------------


def test_a_file_no_detector_knows_is_not_accepted_as_a_lora(pm: Any, write: Any) -> None:
    base = write("sd1.safetensors", L.sd1_checkpoint())
    odd = write("odd.safetensors", [("foo.weight", "F16", (8, 8)), ("bar.weight", "F16", (8,))])
    result = resolve(base, loras=[str(odd)], catalog=NO_CATALOG)
    part = result.parts[0]
    assert part.kind == "unknown"
    assert part.status == "rejected", _reasons(part)
    assert "0 of 2 LoRA keys map" in _reasons(part)
    assert not result.compatible and result.exit_code == 1


# -- XLabs Flux LoRAs -----------------------------------------------------------------------------


def _xlabs(rank: int = 16, d: int = 3072) -> list[L.Spec]:
    specs: list[L.Spec] = []

    def pair(module: str, out: int, inn: int) -> None:
        specs.append((f"{module}.down.weight", "BF16", (rank, inn)))
        specs.append((f"{module}.up.weight", "BF16", (out, rank)))

    for i in range(19):
        for stream in ("1", "2"):
            pair(f"double_blocks.{i}.processor.qkv_lora{stream}", 3 * d, d)
            pair(f"double_blocks.{i}.processor.proj_lora{stream}", d, d)
    for i in range(38):
        pair(f"single_blocks.{i}.processor.qkv_lora", 3 * d, d)
        pair(f"single_blocks.{i}.processor.proj_lora", d, 5 * d)
    return specs


def test_xlabs_flux_lora_is_flux_and_maps_fully(pm: Any, write: Any) -> None:
    lora = write("xlabs.safetensors", _xlabs())
    report = inspect_path(lora)
    assert (report.family, report.kind) == ("flux1", "lora"), report.evidence
    assert report.facts["naming"] == "xlabs"
    flux = write("flux.safetensors", L.flux_bfl())
    cov = _coverage(flux, lora, "flux1", "transformer")
    assert cov.mapped_keys == cov.lora_keys == 4 * 38 + 4 * 38, (cov.unmapped, cov.shape_mismatches)
    assert cov.lora_format == "xlabs"
    diffusers_flux = write(
        "flux-diffusers.safetensors", base_models.diffusers_denoiser("flux1/dev")
    )
    cov = _coverage(diffusers_flux, lora, "flux1", "transformer")
    assert cov.mapped_keys == cov.lora_keys, (cov.unmapped, cov.shape_mismatches)
    sdxl = write("sdxl.safetensors", L.sdxl_checkpoint())
    on_sdxl = resolve(sdxl, loras=[str(lora)], catalog=NO_CATALOG).parts[0]
    assert on_sdxl.status == "rejected" and "LoRA is for Flux.1, checkpoint is SDXL" in _reasons(
        on_sdxl
    )


def test_xlabs_single_block_qkv_patches_only_the_qkv_rows(pm: Any, write: Any) -> None:
    """linear1 is q, k, v and the MLP in one layer; XLabs' qkv_lora is 3 x width tall."""
    wrong = [
        ("single_blocks.0.processor.qkv_lora.down.weight", "BF16", (16, 3072)),
        ("single_blocks.0.processor.qkv_lora.up.weight", "BF16", (7 * 3072, 16)),
    ]
    cov = _coverage(
        write("flux.safetensors", L.flux_bfl()),
        write("bad.safetensors", wrong),
        "flux1",
        "transformer",
    )
    assert cov.mapped_keys == 0 and cov.shape_mismatches


# -- SD3 LoRAs in diffusers naming over SAI single files -----------------------------------------


def test_sd3_diffusers_loras_map_onto_sai_mmdit(pm: Any, write: Any) -> None:
    sai = write("sd35-medium.safetensors", base_models.sai_mmdit(depth=24, attn2_blocks=13))
    diff = base_models.diffusers_denoiser("sd3.5/medium")
    targets = _modules(
        diff,
        (
            "attn.to_q",
            "attn.to_k",
            "attn.to_v",
            "attn.to_out.0",
            "attn.add_q_proj",
            "attn.add_k_proj",
            "attn.add_v_proj",
            "attn.to_add_out",
            "attn2.to_q",
            "attn2.to_out.0",
            "ff.net.0.proj",
            "ff.net.2",
            "ff_context.net.2",
            "norm1.linear",
            "norm1_context.linear",
            "proj_out",
        ),
    )
    peft = write(
        "peft.safetensors", L.lora_specs(targets, style="peft", prefix="transformer.", only=("",))
    )
    cov = _coverage(sai, peft, "sd3.5", "transformer")
    assert cov.lora_keys > 500
    assert cov.mapped_keys == cov.lora_keys, (cov.unmapped[:3], cov.shape_mismatches[:3])
    onetrainer = write(
        "onetrainer.safetensors",
        L.lora_specs(targets, style="kohya", prefix="lora_transformer", only=("",)),
    )
    cov = _coverage(sai, onetrainer, "sd3.5", "transformer")
    assert cov.mapped_keys == cov.lora_keys, (cov.unmapped[:3], cov.shape_mismatches[:3])


def test_attention_only_dit_lora_is_told_by_its_width(pm: Any, write: Any) -> None:
    def attn_lora(width: int, name: str) -> Path:
        mods = {
            f"transformer_blocks.{i}.attn.{p}": (width, width)
            for i in range(4)
            for p in ("to_q", "to_k", "to_v", "to_out.0")
        }
        return write(name, L.lora_specs(mods, style="peft", prefix="transformer.", only=("",)))

    sd3 = inspect_path(attn_lora(1536, "sd3.safetensors"))
    assert (sd3.family, sd3.kind) == ("sd3", "lora"), sd3.evidence
    large = inspect_path(attn_lora(2432, "sd35.safetensors"))
    assert large.family == "sd3.5"
    other = inspect_path(attn_lora(1152, "pixart-like.safetensors"))
    assert other.family == "unknown" and other.kind == "lora"
    assert any("do not tell the family" in e for e in other.evidence)


# -- LyCORIS Tucker factors, sd-scripts OFT, PEFT DoRA --------------------------------------------


def _sd1_convs() -> dict[str, tuple[int, ...]]:
    mods = L.diffusers_modules("UNet2DConditionModel", **L.SD1_UNET_CONFIG)
    return {n: s for n, s in mods.items() if len(s) == 4 and s[2:] == (3, 3)}


def test_tucker_loha_and_lokr_conv_layers_map_without_mismatches(pm: Any, write: Any) -> None:
    """use_tucker: w1_a [r, out], w1_b [r, in], t1 [r, r, k, k] (LoKr: the w2 factor)."""
    r = 4
    loha: list[L.Spec] = []
    lokr: list[L.Spec] = []
    for module, (out, inn, kh, kw) in sorted(_sd1_convs().items()):
        flat = "lora_unet_" + module.replace(".", "_")
        for w in ("1", "2"):
            loha += [
                (f"{flat}.hada_t{w}", "F16", (r, r, kh, kw)),
                (f"{flat}.hada_w{w}_a", "F16", (r, out)),
                (f"{flat}.hada_w{w}_b", "F16", (r, inn)),
            ]
        lokr += [
            (f"{flat}.lokr_w1", "F16", (4, 4)),
            (f"{flat}.lokr_t2", "F16", (r, r, kh, kw)),
            (f"{flat}.lokr_w2_a", "F16", (r, out // 4)),
            (f"{flat}.lokr_w2_b", "F16", (r, inn // 4)),
        ]
    base = write("sd1.safetensors", L.sd1_checkpoint())
    for name, specs in (("loha.safetensors", loha), ("lokr.safetensors", lokr)):
        cov = _coverage(base, write(name, specs), "sd1", "checkpoint")
        assert cov.lora_keys > 100
        assert cov.mapped_keys == cov.lora_keys, (name, cov.shape_mismatches[:3])


def test_sd_scripts_oft_keys_patch_the_unet(pm: Any, write: Any) -> None:
    key = parse_key("oft_unet_down_blocks_0_attentions_0_proj_in.oft_blocks")
    assert key and (key.target, key.naming, key.part) == ("denoiser", "kohya", "oft_blocks")
    mods = L.diffusers_modules("UNet2DConditionModel", **L.SD1_UNET_CONFIG)
    specs: list[L.Spec] = []
    for module, shape in sorted(mods.items()):
        if module.endswith(L.ATTENTION):
            flat = "oft_unet_" + module.replace(".", "_")
            specs += [(f"{flat}.oft_blocks", "F32", (4, shape[0] // 4, shape[0] // 4))]
            specs += [(f"{flat}.alpha", "F32", ())]
    cov = _coverage(
        write("sd1.safetensors", L.sd1_checkpoint()),
        write("oft.safetensors", specs),
        "sd1",
        "checkpoint",
    )
    assert cov.mapped_keys == cov.lora_keys == len(specs)


def test_peft_dora_magnitude_is_part_of_the_lora(pm: Any, write: Any) -> None:
    mods = L.diffusers_modules("UNet2DConditionModel", **L.SD1_UNET_CONFIG)
    specs = L.lora_specs(mods, style="peft", prefix="unet.")
    specs += [
        (f"unet.{m}.lora_magnitude_vector", "F16", (shape[0],))
        for m, shape in sorted(mods.items())
        if m.endswith(L.ATTENTION)
    ]
    lora = write("dora.safetensors", specs)
    report = inspect_path(lora)
    assert (report.family, report.kind) == ("sd1", "lora"), report.evidence
    assert report.facts.get("dora") is True
    cov = _coverage(write("sd1.safetensors", L.sd1_checkpoint()), lora, "sd1", "checkpoint")
    assert cov.mapped_keys == cov.lora_keys


# -- embeddings, VAEs and reasons ------------------------------------------------------------------


def test_sd1_embedding_on_sdxl_is_rejected_through_the_detector(pm: Any, write: Any) -> None:
    sdxl = write("sdxl.safetensors", L.sdxl_checkpoint())
    emb = write("sd1-emb.safetensors", [("emb_params", "F32", (4, 768))])
    part = resolve(sdxl, embeddings=[str(emb)], catalog=NO_CATALOG).parts[0]
    assert part.family == "sd1"
    assert part.status == "rejected", _reasons(part)
    assert "also needs a vector for clip_g" in _reasons(part)
    g_only = write("g-emb.safetensors", [("clip_g", "F32", (4, 1280))])
    part = resolve(sdxl, embeddings=[str(g_only)], catalog=NO_CATALOG).parts[0]
    assert part.status == "rejected" and "also needs a vector for clip_l" in _reasons(part)


def test_a_vae_whose_family_is_a_tie_says_so(pm: Any, write: Any) -> None:
    vae = write("vae.safetensors", L.vae(prefix=""))
    report = inspect_path(vae)
    assert report.facts["tied_families"] == ["sd1", "sdxl"]
    sd1 = write("sd1.safetensors", L.sd1_checkpoint())
    part = resolve(sd1, vae=str(vae), catalog=NO_CATALOG).parts[0]
    assert part.status == "accepted"
    lineage = [r for r in part.reasons if r.rule == "vae_lineage"]
    assert lineage and lineage[0].status == "warn"
    assert "cannot tell whether this VAE was trained for SD1 or SDXL" in lineage[0].reason


def test_text_encoder_keys_the_family_lacks_are_named_so(pm: Any, write: Any) -> None:
    sd1 = write("sd1.safetensors", L.sd1_checkpoint())
    te2 = {f"text_model.encoder.layers.{i}.self_attn.q_proj": (1280, 1280) for i in range(2)}
    lora = write("te2.safetensors", L.lora_specs(te2, style="kohya", prefix="lora_te2", only=("",)))
    part = resolve(sd1, loras=[str(lora)], catalog=NO_CATALOG).parts[0]
    assert "patch text encoder 2 (CLIP-G), which SD1 does not have" in _reasons(part)


def test_text_encoder_keys_land_on_the_encoders_given_beside(pm: Any, write: Any) -> None:
    flux = write("flux.safetensors", L.flux_bfl())
    clip = write("clip_l.safetensors", L.clip_text(768, 12, ""))
    te = {f"text_model.encoder.layers.{i}.self_attn.q_proj": (768, 768) for i in range(12)}
    blocks = {f"double_blocks.{i}.img_attn.qkv": (9216, 3072) for i in range(19)}
    specs = L.lora_specs(te, style="kohya", prefix="lora_te1", only=("",))
    specs += L.lora_specs(blocks, style="kohya", prefix="lora_unet", only=("",))
    lora = write("flux-te.safetensors", specs)
    alone = resolve(flux, loras=[str(lora)], catalog=NO_CATALOG).parts[0]
    assert "36 keys patch text encoder 1 (CLIP-L), which this file does not contain" in _reasons(
        alone
    )
    result = resolve(flux, loras=[str(lora)], text_encoders=[str(clip)], catalog=NO_CATALOG)
    with_clip = result.parts[0]
    assert f"{len(specs)} of {len(specs)} LoRA keys map" in _reasons(with_clip), _reasons(with_clip)
