"""Identification round 4: image models of 2025-2026 that people download today.

Each case writes a full-size header-only file (sparse zero data) from the project's layouts and
checks that `inspect` names it, or says `unknown` with the model named in the evidence, never a
family it resembles: FLUX.2 [dev]/[klein] (and their LoRAs and VAE) as Flux.1, Lumina Image 2.0
as Z-Image, Qwen-Image-Edit-2511 / Qwen-Image-Layered as text-to-image Qwen-Image, Wan, SANA,
HunyuanImage 2.1 and Kandinsky 5 as nothing at all, Chroma1-Radiance as a Chroma needing a VAE.
(Round 5 made FLUX.2, Lumina 2, Wan, HunyuanImage 2.1, Kandinsky 5 and SANA families:
tests/identify_gaps/test_ig_round5_families.py.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from modelsafe.registry.inspect import inspect_path
from modelsafe.testing import write_safetensors
from modelsafe.testing.layouts import adapters as ad
from modelsafe.testing.layouts import base_models as bm
from modelsafe.testing.layouts import components as co
from modelsafe.testing.layouts import recent_models as rm
from modelsafe.testing.layouts.base_models import Specs

Module = tuple[str, tuple[int, ...]]


def _inspect(tmp_path: Path, name: str, specs: Specs) -> Any:
    return inspect_path(write_safetensors(tmp_path / f"{name}.safetensors", specs))


def _all_evidence(report: Any) -> str:
    lines = list(report.evidence)
    for c in report.candidates:
        lines += list(c.get("why", ()))
    return " | ".join(lines)


@dataclass(frozen=True)
class Case:
    build: Callable[[], Specs]
    family: str
    kind: str
    variant: str | None
    says: str  # a phrase the evidence must hold
    facts: dict[str, Any] = field(default_factory=dict)


_COMFY = "model.diffusion_model."

BASE_CASES: dict[str, Case] = {
    # ------------------------------------------------------------------ FLUX.2
    "flux2_dev_bfl": Case(
        lambda: rm.flux2_bfl("dev"),
        "flux2",
        "transformer",
        "dev",
        "FLUX.2 [dev]",
        {"architecture": "flux2", "hidden_size": 6144, "in_channels": 128, "guidance_embed": True},
    ),
    "flux2_dev_comfy_prefix": Case(
        lambda: bm.prefixed(_COMFY, rm.flux2_bfl("dev")),
        "flux2",
        "transformer",
        "dev",
        "FLUX.2 [dev]",
        {"architecture": "flux2", "key_prefix": _COMFY},
    ),
    "flux2_klein_4b": Case(
        lambda: rm.flux2_bfl("klein-4b"),
        "flux2",
        "transformer",
        "klein-4b",
        "FLUX.2 [klein] 4B",
        {"architecture": "flux2", "hidden_size": 3072, "guidance_embed": False},
    ),
    "flux2_klein_9b": Case(
        lambda: rm.flux2_bfl("klein-9b"),
        "flux2",
        "transformer",
        "klein-9b",
        "FLUX.2 [klein] 9B",
        {"architecture": "flux2", "hidden_size": 4096, "context_dim": 12288},
    ),
    "flux2_dev_diffusers": Case(
        lambda: rm.flux2_diffusers("dev"),
        "flux2",
        "transformer",
        "dev",
        "FLUX.2 [dev]",
        {"architecture": "flux2"},
    ),
    "flux2_klein_4b_diffusers": Case(
        lambda: rm.flux2_diffusers("klein-4b"),
        "flux2",
        "transformer",
        "klein-4b",
        "FLUX.2 [klein] 4B",
        {"architecture": "flux2"},
    ),
    # ------------------------------------------------------------------ Lumina Image 2.0
    "lumina2_original": Case(
        lambda: rm.lumina2("original"),
        "lumina2",
        "transformer",
        None,
        "Lumina Image 2.0",
        {"architecture": "lumina2", "hidden_size": 2304, "context_dim": 2304},
    ),
    "lumina2_comfy_prefix": Case(
        lambda: bm.prefixed(_COMFY, rm.lumina2("original")),
        "lumina2",
        "transformer",
        None,
        "not Z-Image",
        {"architecture": "lumina2"},
    ),
    "lumina2_diffusers": Case(
        lambda: rm.lumina2("diffusers"),
        "lumina2",
        "transformer",
        None,
        "Lumina Image 2.0",
        {"architecture": "lumina2"},
    ),
    # ------------------------------------------------------------------ Chroma1-Radiance
    "chroma_radiance": Case(
        rm.chroma_radiance,
        "chroma",
        "transformer",
        "radiance",
        "pixel-space model, no VAE",
        {"pixel_space": True, "in_channels": 3, "patch_size": 16},
    ),
    # ------------------------------------------------------------------ Qwen-Image variants
    "qwen_image_edit_2511": Case(
        rm.qwen_image_edit_2511, "qwen-image", "transformer", "edit-2511", "Qwen-Image-Edit-2511"
    ),
    "qwen_image_layered": Case(
        rm.qwen_image_layered, "qwen-image", "transformer", "layered", "Qwen-Image-Layered"
    ),
    "qwen_image_plain_names_the_edit_tie": Case(
        lambda: bm.diffusers_denoiser("qwen-image", "BF16"),
        "qwen-image",
        "transformer",
        None,
        "cannot say whether this is an editing model",
    ),
    # ------------------------------------------------------------------ other 2025 DiTs
    "wan21_t2v_14b": Case(
        lambda: rm.wan_transformer("t2v-14b"),
        "wan",
        "transformer",
        None,
        "Wan 2.1/2.2 video transformer",
        {"architecture": "wan", "hidden_size": 5120},
    ),
    "wan22_ti2v_5b_comfy_prefix": Case(
        lambda: bm.prefixed(_COMFY, rm.wan_transformer("ti2v-5b")),
        "wan",
        "transformer",
        None,
        "[3072, 48, 1, 2, 2]",
        {"architecture": "wan", "hidden_size": 3072},
    ),
    "wan21_1_3b_diffusers": Case(
        lambda: rm.wan_transformer("t2v-1.3b", "diffusers"),
        "wan",
        "transformer",
        None,
        "Wan 2.1/2.2 video transformer (diffusers naming)",
        {"architecture": "wan", "hidden_size": 1536},
    ),
    "hunyuanimage_2_1": Case(
        rm.hunyuan_image21,
        "hunyuanimage2.1",
        "transformer",
        None,
        "HunyuanImage 2.1",
        {"architecture": "hunyuanimage2.1", "hidden_size": 3584},
    ),
    "kandinsky_5": Case(
        rm.kandinsky5,
        "kandinsky5",
        "transformer",
        None,
        "Kandinsky 5.0",
        {"architecture": "kandinsky5"},
    ),
    "sana_original": Case(
        lambda: rm.sana("original"),
        "sana",
        "transformer",
        None,
        "SANA",
        {"architecture": "sana", "hidden_size": 2240},
    ),
    "sana_diffusers": Case(
        lambda: rm.sana("diffusers"),
        "sana",
        "transformer",
        None,
        "SANA",
        {"architecture": "sana"},
    ),
    # ------------------------------------------------------------------ VAEs, text encoders
    "flux2_vae": Case(
        rm.flux2_vae,
        "flux2",
        "vae",
        None,
        "the FLUX.2 VAE",
        {"architecture": "flux2", "latent_channels": 32},
    ),
    "qwen3_8b_klein_9b_encoder": Case(
        lambda: co.llm_text_encoder("qwen3_8b"),
        "any",
        "text_encoder",
        "qwen3_8b",
        "used by flux2",
        {"hidden_size": 4096, "num_layers": 36},
    ),
    "mistral_small_flux2_dev_encoder": Case(
        lambda: co.llm_text_encoder("mistral_small_3_24b", layers=40),
        "any",
        "text_encoder",
        "mistral_small_3_24b",
        "used by flux2",
        {"hidden_size": 5120},
    ),
}


@pytest.mark.parametrize("name", sorted(BASE_CASES))
def test_recent_models_are_named_or_unknown_with_a_reason(tmp_path: Path, name: str) -> None:
    case = BASE_CASES[name]
    report = _inspect(tmp_path, name, case.build())
    assert (report.family, report.kind, report.variant) == (
        case.family,
        case.kind,
        case.variant,
    ), report.evidence
    assert case.says in _all_evidence(report)
    for key, value in case.facts.items():
        assert report.facts.get(key) == value, (key, report.facts.get(key))
    # never a supported family it resembles, not even as the runner-up
    lookalikes = {"flux1", "z-image", "sd3", "sd3.5"} - {case.family}
    assert not any(c["family"] in lookalikes for c in report.candidates)


def test_flux2_is_not_flux1_even_as_a_weak_guess(tmp_path: Path) -> None:
    report = _inspect(tmp_path, "flux2", rm.flux2_bfl("klein-4b"))
    assert (report.family, report.confidence) == ("flux2", 0.95)
    assert "FLUX.2 is not Flux.1" in _all_evidence(report)
    assert not any(c["family"] == "flux1" for c in report.candidates)


# ---------------------------------------------------------------------- LoRAs


def _flux2_bfl_mods(variant: str, pattern: str) -> list[Module]:
    return ad.linears(rm.flux2_bfl(variant), pattern)


def _flux2_diffusers_mods(variant: str, pattern: str) -> list[Module]:
    return ad.linears(rm.flux2_diffusers(variant), pattern)


_BFL_ALL = r"(?:double|single)_blocks\."
_BFL_ATTN = r"double_blocks\.\d+\.(?:img|txt)_attn\.(?:qkv|proj)"
_DIFF_ATTN = r"^transformer_blocks\.\d+\.attn\.(?:to_q|to_k|to_v|to_out\.0)"

LORA_CASES: dict[str, tuple[Callable[[], Specs], str, str]] = {
    # (build, family, a phrase the evidence must hold); names only FLUX.2 (diffusers) and Wan
    # have give the family, Flux's BFL names at FLUX.2's ratios only say "FLUX.2?"
    "klein4b_peft_full": (
        lambda: ad.peft_lora(
            [("transformer.", _flux2_diffusers_mods("klein-4b", r"transformer_blocks"))]
        ),
        "flux2",
        "FLUX.2's layer names",
    ),
    "klein4b_peft_single_only": (
        lambda: ad.peft_lora(
            [("transformer.", _flux2_diffusers_mods("klein-4b", r"^single_transformer_blocks"))]
        ),
        "flux2",
        "to_qkv_mlp_proj",
    ),
    "klein4b_peft_double_attention": (
        lambda: ad.peft_lora([("transformer.", _flux2_diffusers_mods("klein-4b", _DIFF_ATTN))]),
        "unknown",
        "cannot say Flux.1 or FLUX.2 klein",
    ),
    "klein4b_comfy_double_attention": (
        lambda: ad.comfy_lora(_flux2_bfl_mods("klein-4b", _BFL_ATTN)),
        "unknown",
        "cannot say Flux.1 or FLUX.2 klein",
    ),
    "klein4b_comfy_linear2_only": (
        lambda: ad.comfy_lora(_flux2_bfl_mods("klein-4b", r"single_blocks\.\d+\.linear2")),
        "flux2",
        "FLUX.2 [klein] 4B",
    ),
    "klein4b_kohya_full": (
        lambda: ad.kohya_lora([("lora_unet_", _flux2_bfl_mods("klein-4b", _BFL_ALL))]),
        "flux2",
        "FLUX.2 [klein] 4B",
    ),
    "flux2_dev_peft": (
        lambda: ad.peft_lora(
            [("transformer.", _flux2_diffusers_mods("dev", r"transformer_blocks"))]
        ),
        "flux2",
        "model width 6144",
    ),
    "wan_comfy": (
        lambda: ad.comfy_lora(
            ad.linears(rm.wan_transformer("t2v-14b"), r"blocks\.\d+\.(?:self_attn|cross_attn)")
        ),
        "wan",
        "Wan's layer names",
    ),
}


@pytest.mark.parametrize("name", sorted(LORA_CASES))
def test_loras_of_recent_models_are_not_flux1(tmp_path: Path, name: str) -> None:
    build, family, says = LORA_CASES[name]
    report = _inspect(tmp_path, name, build())
    assert (report.family, report.kind) == (family, "lora"), report.evidence
    assert says in _all_evidence(report)
    assert not any(c["family"] == "flux1" for c in report.candidates)


def _flux1_bfl_mods(pattern: str) -> list[Module]:
    return ad.linears(bm.bfl_flux(), pattern)


def _flux1_diffusers_mods(pattern: str) -> list[Module]:
    return ad.linears(bm.diffusers_denoiser("flux1/dev", "BF16"), pattern)


@pytest.mark.parametrize(
    ("name", "build"),
    [
        ("bfl_full", lambda: ad.comfy_lora(_flux1_bfl_mods(_BFL_ALL))),
        ("bfl_attention", lambda: ad.comfy_lora(_flux1_bfl_mods(_BFL_ATTN))),
        (
            "kohya_single_linear2",
            lambda: ad.kohya_lora(
                [("lora_unet_", _flux1_bfl_mods(r"single_blocks\.\d+\.linear2"))]
            ),
        ),
        (
            "peft_full",
            lambda: ad.peft_lora([("transformer.", _flux1_diffusers_mods(r"transformer_blocks"))]),
        ),
        (
            "peft_double_attention",
            lambda: ad.peft_lora([("transformer.", _flux1_diffusers_mods(_DIFF_ATTN))]),
        ),
    ],
)
def test_flux1_loras_are_still_flux1(tmp_path: Path, name: str, build: Any) -> None:
    report = _inspect(tmp_path, name, build())
    assert (report.family, report.kind) == ("flux1", "lora"), report.evidence


def test_z_image_lora_is_still_z_image(tmp_path: Path) -> None:
    z = bm.z_image_original(bm.diffusers_denoiser("z-image", "BF16"))
    report = _inspect(tmp_path, "z", ad.comfy_lora(ad.linears(z, r"^layers\.\d+\.attention")))
    assert (report.family, report.kind) == ("z-image", "lora")


# ---------------------------------------------------------------------- unchanged neighbours


@pytest.mark.parametrize(
    ("name", "build", "want"),
    [
        ("flux1_dev", lambda: bm.bfl_flux(), ("flux1", "transformer", "dev")),
        ("flux1_schnell", lambda: bm.bfl_flux(guidance=False), ("flux1", "transformer", "schnell")),
        ("chroma", lambda: bm.bfl_flux(chroma=True), ("chroma", "transformer", None)),
        (
            "z_image",
            lambda: bm.z_image_original(bm.diffusers_denoiser("z-image", "BF16")),
            ("z-image", "transformer", None),
        ),
        ("wan21_vae_is_qwen_image", lambda: co.qwen_image_vae(), ("qwen-image", "vae", None)),
    ],
)
def test_known_neighbours_unchanged(tmp_path: Path, name: str, build: Any, want: Any) -> None:
    report = _inspect(tmp_path, name, build())
    assert (report.family, report.kind, report.variant) == want


def test_a_named_4096_wide_text_encoder_is_not_taken_for_flux1s_t5(tmp_path: Path) -> None:
    """Qwen3-8B (FLUX.2 klein's text encoder) is as wide as T5-XXL: resolve named it "ok t5xxl
    (4096 wide) is one of Flux.1's text encoders"; a known name is not re-read by width."""
    from modelsafe.runtime.resolve import resolve
    from modelsafe.testing.layouts import base_models

    flux = write_safetensors(tmp_path / "flux.safetensors", base_models.bfl_flux(), data="sparse")
    qwen = write_safetensors(
        tmp_path / "qwen3_8b.safetensors", co.llm_text_encoder("qwen3_8b"), data="sparse"
    )
    result = resolve(str(flux), text_encoders=[str(qwen)]).as_json()
    part = next(p for p in result["parts"] if p["role"] == "text_encoder")
    slot = next(r for r in part["reasons"] if r["rule"] == "text_encoder_slot")
    assert slot["status"] == "reject" and "t5xxl (4096 wide)" not in slot["reason"]
    assert "qwen3_8b" in slot["reason"] and not result["compatible"]


def test_chroma_radiance_needs_no_vae(tmp_path: Path) -> None:
    """A pixel-space model decodes no latents: resolve listed a missing 16-channel VAE."""
    from modelsafe.runtime.resolve import resolve
    from modelsafe.testing.layouts import recent_models

    path = write_safetensors(
        tmp_path / "radiance.safetensors", recent_models.chroma_radiance(), data="sparse"
    )
    missing = [m["slot"] for m in resolve(str(path)).as_json()["missing"]]
    assert missing == ["t5xxl"]
