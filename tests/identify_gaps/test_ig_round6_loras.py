"""Identification round 6: LoRA layouts that were named wrong or not at all.

- HunyuanVideo LoRAs in diffusers names (finetrainers, diffusers' HunyuanVideo LoRA loader) share
  every block name and shape with Flux.1's diffusers LoRAs; only the count differs (20 double +
  40 single blocks against Flux.1's 19 + 38), or the text token refiner only the HunyuanVideo
  lineage has. They were Flux.1 (whole) or Qwen-Image (attention of the double blocks), and
  resolve accepted them on Flux.1.
- Wan LoRAs in diffusers names (``blocks.N.attn1``/``attn2``/``ffn``) were an unknown DiT "with
  attn1/attn2 blocks (LTX-Video, PixArt ...)" patching a UNet.
- LyCORIS GLoRA and OFT files (no metadata) told no base: their parts carry the widths
  (GLoRA ``b1`` ``[r, in]``, OFT ``oft_blocks`` ``[n, b, b]`` = n*b outputs).

Each file is written from the project's layouts (diffusers classes on the meta device), sparse.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelsafe.registry.inspect import inspect_path
from modelsafe.runtime.resolve import resolve
from modelsafe.testing import write_safetensors
from modelsafe.testing.layouts import adapters as ad
from modelsafe.testing.layouts import base_models as bm
from modelsafe.testing.layouts import recent_models as rm
from modelsafe.testing.layouts.base_models import Specs

Module = tuple[str, tuple[int, ...]]

# What finetrainers / diffusers patch in a HunyuanVideo-style transformer (diffusers names).
_DOUBLE_ATTN = (
    r"transformer_blocks\.\d+\.attn\.(?:to_q|to_k|to_v|to_out\.0|add_[qkv]_proj|to_add_out)"
)
_SINGLE = r"single_transformer_blocks\.\d+\.(?:attn\.to_[qkv]|proj_mlp|proj_out)"
_REFINER = r"context_embedder\.token_refiner\.refiner_blocks\.\d+\.attn\.(?:to_[qkv]|to_out\.0)"


def _write(folder: Path, name: str, specs: Specs, meta: dict[str, str] | None = None) -> Path:
    return write_safetensors(folder / f"{name}.safetensors", specs, meta, data="sparse")


def _evidence(report: Any) -> str:
    return " | ".join(report.evidence)


def _peft(specs: Specs, pattern: str, rank: int = 16) -> Specs:
    """A PEFT LoRA (``transformer.<module>.lora_A/B``) of the layers of ``specs`` matching."""
    return ad.peft_lora([("transformer.", ad.modules(specs, re.compile(f"^(?:{pattern})$")))], rank)


def _hunyuan_video_lora() -> Specs:
    return _peft(rm.hunyuan_video("diffusers"), f"{_DOUBLE_ATTN}|{_SINGLE}")


def _first_blocks_with_refiner() -> Specs:
    """Blocks Flux.1 has too (0-3), plus the token refiner: the names decide, not the count."""
    few = r"(?:single_)?transformer_blocks\.[0-3]\.attn\.to_[qkv]"
    return _peft(rm.hunyuan_video("diffusers"), f"{few}|{_REFINER}")


@pytest.mark.parametrize(
    ("name", "build", "family", "score", "says"),
    [
        (
            "whole",
            _hunyuan_video_lora,
            "hunyuan-video",
            0.85,
            "the HunyuanVideo lineage 20 + 40",
        ),
        (
            "double_attention",
            lambda: _peft(rm.hunyuan_video("diffusers"), _DOUBLE_ATTN),
            "hunyuan-video",
            0.75,
            "HunyuanVideo's 20 double blocks",
        ),
        (
            "refiner",
            _first_blocks_with_refiner,
            "hunyuan-video",
            0.85,
            "text token refiner of the HunyuanVideo lineage",
        ),
        (
            "hunyuanimage21",
            lambda: _peft(rm.hunyuan_image21(), f"{_DOUBLE_ATTN}|{_SINGLE}"),
            "hunyuanimage2.1",
            0.85,
            "model width 3584 = HunyuanImage 2.1",
        ),
    ],
)
def test_hunyuan_video_loras_in_diffusers_names_are_not_flux1(
    tmp_path: Path, name: str, build: Callable[[], Specs], family: str, score: float, says: str
) -> None:
    report = inspect_path(_write(tmp_path, name, build()))
    got = (report.family, report.kind, report.confidence, report.facts["targets"])
    assert got == (family, "lora", score, ["transformer"]), report.evidence
    assert says in _evidence(report)
    assert all(c["family"] not in ("flux1", "qwen-image") for c in report.candidates)


def test_flux1_and_qwen_image_diffusers_loras_keep_their_family(tmp_path: Path) -> None:
    """Beside the HunyuanVideo counts: Flux.1's 19 + 38 blocks stay Flux.1, Qwen-Image's 60
    attention blocks Qwen-Image, and HunyuanVideo 1.5's MMDiT attention (2048 wide) is no SD3."""
    flux = inspect_path(
        _write(tmp_path, "flux", ad.peft_lora([("transformer.", ad.flux_modules("diffusers"))]))
    )
    assert (flux.family, flux.confidence) == ("flux1", 0.9), flux.evidence
    qwen = inspect_path(
        _write(tmp_path, "qwen", _peft(bm.diffusers_denoiser("qwen-image"), _DOUBLE_ATTN))
    )
    assert qwen.family == "qwen-image", qwen.evidence
    hv15 = inspect_path(_write(tmp_path, "hv15", _peft(rm.hunyuan_video15(), _DOUBLE_ATTN)))
    assert (hv15.family, hv15.kind) == ("unknown", "lora"), hv15.evidence
    assert "HunyuanVideo 1.5 (2048) have these names too" in _evidence(hv15)


def _lora_reasons(result: Any) -> dict[str, tuple[str, str]]:
    lora = next(p for p in result.parts if p.role == "lora")
    return {r.rule: (r.status, r.reason) for r in lora.reasons}


def test_resolve_rejects_a_hunyuan_video_lora_on_flux1(tmp_path: Path) -> None:
    lora = str(_write(tmp_path, "hv-lora", _hunyuan_video_lora()))
    flux = _lora_reasons(resolve(_write(tmp_path, "flux1-dev", bm.bfl_flux()), loras=[lora]))
    assert flux["family"] == ("reject", "LoRA is for HunyuanVideo, checkpoint is Flux.1")
    hunyuan = resolve(_write(tmp_path, "hv", rm.hunyuan_video("diffusers")), loras=[lora])
    assert _lora_reasons(hunyuan)["family"] == (
        "accept",
        "LoRA is for HunyuanVideo, like the checkpoint",
    )


# --------------------------------------------------------------------------------------- Wan

_WAN_LAYERS = (
    r"blocks\.\d+\.(?:attn[12]\.(?:to_q|to_k|to_v|to_out\.0)|ffn\.net\.0\.proj|ffn\.net\.2)"
)


@pytest.mark.parametrize(
    ("variant", "width", "label"),
    [
        ("t2v-14b", 5120, "Wan 14B"),
        ("t2v-1.3b", 1536, "Wan 2.1 1.3B"),
        ("ti2v-5b", 3072, "Wan 2.2 TI2V 5B"),
    ],
)
def test_wan_loras_in_diffusers_names_are_wan(
    tmp_path: Path, variant: str, width: int, label: str
) -> None:
    specs = _peft(rm.wan_transformer(variant, "diffusers"), _WAN_LAYERS)
    report = inspect_path(_write(tmp_path, variant, specs))
    got = (report.family, report.kind, report.facts["hidden_size"], report.facts["targets"])
    assert got == ("wan", "lora", width, ["transformer"]), report.evidence
    assert f"model width {width} = {label}" in _evidence(report)
    assert "outside any UNet level" not in _evidence(report)


def test_a_wan_diffusers_lora_of_cross_attention_only_is_wan(tmp_path: Path) -> None:
    """attn2.to_q takes the model width in too (attn2.to_k/to_v take the text's)."""
    cross = r"blocks\.\d+\.attn2\.(?:to_q|to_k|to_v|to_out\.0)"
    specs = _peft(rm.wan_transformer("t2v-14b", "diffusers"), cross)
    report = inspect_path(_write(tmp_path, "wan-attn2", specs))
    assert (report.family, report.facts.get("hidden_size")) == ("wan", 5120), report.evidence


def test_resolve_checks_a_wan_diffusers_lora_s_width(tmp_path: Path) -> None:
    lora = str(
        _write(
            tmp_path,
            "wan-1.3b-lora",
            _peft(rm.wan_transformer("t2v-1.3b", "diffusers"), _WAN_LAYERS),
        )
    )
    big = _lora_reasons(
        resolve(_write(tmp_path, "wan14b", rm.wan_transformer("t2v-14b")), loras=[lora])
    )
    assert big["lora_width"][0] == "reject"
    assert "1536-wide Wan 2.1 1.3B, the checkpoint is the 5120-wide Wan 14B" in big["lora_width"][1]
    small = resolve(_write(tmp_path, "wan13b", rm.wan_transformer("t2v-1.3b")), loras=[lora])
    assert _lora_reasons(small)["family"] == ("accept", "LoRA is for Wan, like the checkpoint")
    assert "lora_width" not in _lora_reasons(small)


# ------------------------------------------------------------------------- LyCORIS GLoRA / OFT


def _glora(groups: list[tuple[str, list[Module]]], rank: int = 8) -> Specs:
    """LyCORIS GLoRA: a1 / b1 ``[r, in]``, a2 ``[in, r]``, b2 ``[out, r]`` and alpha."""
    specs: Specs = []
    for prefix, mods in groups:
        for module, shape in mods:
            name, out, inp = prefix + module.replace(".", "_"), shape[0], math.prod(shape[1:])
            specs += [
                (f"{name}.a1.weight", "F16", (rank, inp)),
                (f"{name}.a2.weight", "F16", (inp, rank)),
            ]
            specs += [
                (f"{name}.b1.weight", "F16", (rank, inp)),
                (f"{name}.b2.weight", "F16", (out, rank)),
            ]
            specs += [(f"{name}.alpha", "F16", ())]
    return specs


def _oft(groups: list[tuple[str, list[Module]]], blocks: int = 4) -> Specs:
    """OFT (sd-scripts ``oft_unet_``, LyCORIS diag-oft ``lora_unet_``): ``oft_blocks``
    ``[n, out/n, out/n]`` and alpha."""
    specs: Specs = []
    for prefix, mods in groups:
        for module, shape in mods:
            name, size = prefix + module.replace(".", "_"), shape[0] // blocks
            specs += [
                (f"{name}.oft_blocks", "F32", (blocks, size, size)),
                (f"{name}.alpha", "F32", ()),
            ]
    return specs


def _attention(mods: list[Module]) -> list[Module]:
    return [m for m in mods if re.search(r"attn[12]\.(?:to_q|to_k|to_v|to_out\.0)$", m[0])]


@pytest.mark.parametrize(
    ("name", "build", "family", "says"),
    [
        (
            "glora_sd15",
            lambda: _glora([("lora_unet_", [m for m in ad.sd1_unet_modules() if len(m[1]) == 2])]),
            "sd1",
            "attn2_to_k.b1.weight has shape [8, 768]: input width 768 (cross-attention context)",
        ),
        (
            "glora_sdxl",
            lambda: _glora([("lora_unet_", ad.sdxl_unet_modules())]),
            "sdxl",
            "input width 2048 (cross-attention context) = sdxl",
        ),
        (
            "oft_sdscripts_sdxl",
            lambda: _oft([("oft_unet_", _attention(ad.sdxl_unet_modules()))]),
            "sdxl",
            "self-attention widths [640, 1280]",
        ),
        (
            "oft_lycoris_sd15",
            lambda: _oft(
                [("lora_unet_", _attention(ad.sd1_unet_modules())), ("lora_te_", ad.clip_modules())]
            ),
            "sd1",
            "q_proj.oft_blocks has shape [4, 192, 192] (text_encoder width 768)",
        ),
    ],
)
def test_glora_and_oft_without_metadata_tell_their_base(
    tmp_path: Path, name: str, build: Callable[[], Specs], family: str, says: str
) -> None:
    report = inspect_path(_write(tmp_path, name, build()))
    assert (report.family, report.kind) == (family, "lycoris"), report.evidence
    assert says in _evidence(report)
