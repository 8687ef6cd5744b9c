"""Video VAEs with wrapped causal convs and the text encoders of known families that were unnamed.

HunyuanVideo's VAE (``decoder.conv_in.conv.weight``: CausalConv3d wrappers) is ``hunyuan-video``
and ``resolve`` pairs it with HunyuanVideo only; CogVideoX's, LTX-Video's and Mochi's VAEs are
``vae`` with their architecture named (modelsafe has no family for them). HunyuanVideo's
LLaVA-Llama-3-8B, HunyuanImage 2.1's glyph ByT5-small and Cosmos' T5 v1.0 XXL are named. Each file
is written header-only in the names and shapes its project ships (diffusers classes built on the
meta device; ComfyUI's configs for the encoders).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from modelsafe.registry.inspect import inspect_path
from modelsafe.testing import write_safetensors
from modelsafe.testing.layouts import base_models as bm
from modelsafe.testing.layouts import components as co
from modelsafe.testing.layouts import recent_models as rm
from modelsafe.testing.layouts.base_models import Specs, _lin, _norm


def _write(folder: Path, name: str, specs: Specs) -> Path:
    return write_safetensors(folder / f"{name}.safetensors", specs, data="sparse")


def _inspect(folder: Path, name: str, specs: Specs) -> Any:
    return inspect_path(_write(folder, name, specs))


def _evidence(report: Any) -> str:
    return " | ".join(report.evidence)


def _statuses(result: Any) -> dict[str, tuple[str, str]]:
    return {p.role: (p.status, " | ".join(r.reason for r in p.reasons)) for p in result.parts}


def _diffusers_vae(cls: str) -> Specs:
    return co.meta_state_dict(cls, {}, "BF16")


# ------------------------------------------------------------------------------------ VAEs


def test_hunyuan_video_vae_is_hunyuan_videos(tmp_path: Path) -> None:
    # hunyuan_video_vae_bf16.safetensors: Tencent's names = diffusers AutoencoderKLHunyuanVideo
    report = _inspect(
        tmp_path, "hunyuan_video_vae_bf16", _diffusers_vae("AutoencoderKLHunyuanVideo")
    )
    assert (report.family, report.kind) == ("hunyuan-video", "vae"), report.evidence
    assert report.facts["latent_channels"] == 16
    assert report.facts["conv3d"] is True
    assert report.facts["architecture"] == "hunyuan-video"
    assert "decoder.conv_in.conv.weight has shape [512, 16, 3, 3, 3]" in _evidence(report)
    # not the Wan 2.1 VAE, which also has 16 latent channels
    assert all(c["family"] != "qwen-image" for c in report.candidates)
    # the same VAE inside a checkpoint is left to the checkpoint
    specs = bm.prefixed("vae.", _diffusers_vae("AutoencoderKLHunyuanVideo"))
    specs += bm.prefixed("model.diffusion_model.", rm.hunyuan_video("original"))
    assert _inspect(tmp_path, "hunyuan_video_aio", specs).kind != "vae"


def _mochi_genmo_decoder() -> Specs:
    """Mochi 1's decoder as genmo/ComfyUI name it (ComfyUI comfy/ldm/genmo/vae/model.py
    ``Decoder``: base 128 x [1, 2, 4, 6], res blocks [3, 3, 4, 6, 3], a 1x1x1 conv from the 12
    latent channels, ``stack`` res blocks, linear ``proj`` upsamplers); decoder only, unprefixed,
    as ComfyUI's first Mochi VAE file."""
    specs: Specs = [("blocks.0.0.weight", "BF16", (768, 12, 1, 1, 1))]
    specs += [("blocks.0.0.bias", "BF16", (768,))]

    def res(name: str, ch: int) -> Specs:
        out: Specs = []
        for i in (0, 3):
            out += _norm(f"{name}.stack.{i}", ch, "BF16")
        for i in (2, 5):
            out += [(f"{name}.stack.{i}.weight", "BF16", (ch, ch, 3, 3, 3))]
            out += [(f"{name}.stack.{i}.bias", "BF16", (ch,))]
        return out

    for j in range(3):
        specs += res(f"blocks.0.{j + 1}", 768)
    for i, (cin, cout, n, t) in enumerate(((768, 512, 6, 3), (512, 256, 4, 2), (256, 128, 3, 1))):
        for j in range(n):
            specs += res(f"blocks.{i + 1}.blocks.{j}", cin)
        specs += _lin(f"blocks.{i + 1}.proj", cout * t * 4, cin, "BF16")
    for j in range(3):
        specs += res(f"blocks.4.{j}", 128)
    return specs + _lin("output_proj", 3, 128, "BF16")


@pytest.mark.parametrize(
    ("name", "build", "arch", "latent"),
    [
        ("cogvideox_vae", lambda: _diffusers_vae("AutoencoderKLCogVideoX"), "cogvideox", 16),
        ("ltx_video_vae", lambda: _diffusers_vae("AutoencoderKLLTXVideo"), "ltx-video", 128),
        ("mochi_vae_diffusers", lambda: _diffusers_vae("AutoencoderKLMochi"), "mochi", 12),
        ("mochi_preview_vae_bf16", _mochi_genmo_decoder, "mochi", 12),
    ],
)
def test_other_causal_video_vaes_are_vaes_of_no_known_family(
    tmp_path: Path, name: str, build: Any, arch: str, latent: int
) -> None:
    report = _inspect(tmp_path, name, build())
    assert (report.family, report.kind) == ("unknown", "vae"), report.evidence
    assert report.facts["architecture"] == arch
    assert report.facts["latent_channels"] == latent
    assert "modelsafe has no family for this video model" in _evidence(report)
    assert all(c["family"] in ("unknown", "any") for c in report.candidates)


def test_a_3d_vae_without_the_wan_layout_is_not_qwen_images(tmp_path: Path) -> None:
    # EasyAnimate's VAE (diffusers AutoencoderKLMagvit): plain 5-D conv_in, 16 latent channels
    report = _inspect(tmp_path, "easyanimate_vae", _diffusers_vae("AutoencoderKLMagvit"))
    assert (report.family, report.kind) == ("unknown", "vae"), report.evidence
    assert "not the Wan VAE" in _evidence(report)
    wan = _inspect(tmp_path, "wan_2.1_vae", co.qwen_image_vae())
    assert (wan.family, wan.kind) == ("qwen-image", "vae")


def test_resolve_pairs_the_hunyuan_video_vae_with_hunyuan_video_only(tmp_path: Path) -> None:
    from modelsafe.runtime.resolve import resolve

    hv_vae = _write(tmp_path, "hunyuan_video_vae_bf16", _diffusers_vae("AutoencoderKLHunyuanVideo"))
    wan_vae = _write(tmp_path, "wan_2.1_vae", co.qwen_image_vae())
    hunyuan = _write(tmp_path, "hunyuan_video_t2v_720p_bf16", rm.hunyuan_video("original"))
    wan = _write(tmp_path, "wan2.1_t2v_1.3B", rm.wan_transformer("t2v-1.3b"))
    qwen = _write(tmp_path, "qwen_image_edit_2511", rm.qwen_image_edit_2511())

    assert _statuses(resolve(hunyuan, vae=hv_vae))["vae"] == (
        "accepted",
        "VAE latent channels 16 = checkpoint's 16",
    )
    for base, uses in ((wan, "Wan uses Wan's VAE"), (qwen, "Qwen-Image uses Wan's VAE")):
        status, why = _statuses(resolve(base, vae=hv_vae))["vae"]
        assert status == "rejected" and "trained for HunyuanVideo" in why and uses in why, why
    status, why = _statuses(resolve(hunyuan, vae=wan_vae))["vae"]
    assert status == "rejected" and "HunyuanVideo uses HunyuanVideo's VAE" in why, why


def test_cli_resolve_takes_the_hunyuan_video_vae(tmp_path: Path, run_cli: Any) -> None:
    hv_vae = _write(tmp_path, "hunyuan_video_vae_bf16", _diffusers_vae("AutoencoderKLHunyuanVideo"))
    hunyuan = _write(tmp_path, "hunyuan_video_t2v_720p_bf16", rm.hunyuan_video("original"))
    code, out, err = run_cli("resolve", str(hunyuan), "--vae", str(hv_vae), "--json")
    assert code == 1, err  # (its two text encoders are not in the set)
    result = json.loads(out)
    assert result["checkpoint"]["family"] == "hunyuan-video"
    assert [(p["family"], p["status"]) for p in result["parts"]] == [("hunyuan-video", "accepted")]
    assert [m["slot"] for m in result["missing"]] == ["clip_l", "llava_llama3_8b"]


# ------------------------------------------------------------------------------------ encoders


def _t5(d: int, ff: int, heads: int, dkv: int, layers: int, vocab: int, gated: bool) -> Specs:
    """A T5 encoder in transformers/ComfyUI names (``shared``, ``encoder.block.N.layer``)."""
    specs: Specs = [("shared.weight", "F16", (vocab, d))]
    for i in range(layers):
        b = f"encoder.block.{i}.layer"
        for p in "qkv":
            specs += [(f"{b}.0.SelfAttention.{p}.weight", "F16", (heads * dkv, d))]
        specs += [(f"{b}.0.SelfAttention.o.weight", "F16", (d, heads * dkv))]
        if i == 0:
            specs += [(f"{b}.0.SelfAttention.relative_attention_bias.weight", "F16", (32, heads))]
        specs += [(f"{b}.0.layer_norm.weight", "F16", (d,))]
        ffn = [f"{b}.1.DenseReluDense.wi_0", f"{b}.1.DenseReluDense.wi_1"] if gated else []
        for w in ffn or [f"{b}.1.DenseReluDense.wi"]:
            specs += [(f"{w}.weight", "F16", (ff, d))]
        specs += [(f"{b}.1.DenseReluDense.wo.weight", "F16", (d, ff))]
        specs += [(f"{b}.1.layer_norm.weight", "F16", (d,))]
    return specs + [("encoder.final_layer_norm.weight", "F16", (d,))]


def _llava_llama3() -> Specs:
    # ComfyUI comfy/text_encoders/llama.py Llama2Config: Llama-3-8B with vocabulary 128320
    return [
        (n, d, (128320, s[1]) if n == "model.embed_tokens.weight" else s)
        for n, d, s in co.llm_text_encoder("llama3.1_8b", dtype="F16")
    ]


@pytest.mark.parametrize(
    ("name", "build", "variant", "used_by"),
    [
        ("llava_llama3_fp16", _llava_llama3, "llava_llama3_8b", ["hunyuan-video"]),
        # ComfyUI t5_old_config_xxl.json: d_model 1024, d_ff 65536, 128 heads x 128, ReLU
        (
            "oldt5_xxl_fp16",
            lambda: _t5(1024, 65536, 128, 128, 24, 32128, gated=False),
            "oldt5_xxl",
            ["cosmos"],
        ),
        # ComfyUI byt5_config_small_glyph.json: d_model 1472, d_ff 3584, 6 heads x 64, gated
        (
            "byt5_small_glyphxl_fp16",
            lambda: _t5(1472, 3584, 6, 64, 12, 1510, gated=True),
            "byt5_small_glyph",
            ["hunyuanimage2.1"],
        ),
    ],
)
def test_text_encoders_of_known_families_are_named(
    tmp_path: Path, name: str, build: Any, variant: str, used_by: list[str]
) -> None:
    report = _inspect(tmp_path, name, build())
    assert (report.family, report.kind, report.variant) == ("any", "text_encoder", variant), (
        report.evidence
    )
    assert report.facts["used_by"] == used_by
    assert "no released text encoder has these dimensions" not in _evidence(report)


def test_t5_encoders_of_the_same_width_are_not_taken_for_t5_v1_0_xxl(tmp_path: Path) -> None:
    # t5-large (1024 x 24, d_ff 4096, ReLU) and T5 v1.1 large (d_ff 2816, gated): not t5-11b
    for name, ff, gated in (("t5_large", 4096, False), ("t5_v1_1_large", 2816, True)):
        report = _inspect(tmp_path, name, _t5(1024, ff, 16, 64, 24, 32128, gated))
        assert report.variant is None, (name, report.evidence)
        assert report.facts["d_ff"] == ff
    oldt5 = _inspect(tmp_path, "oldt5", _t5(1024, 65536, 128, 128, 24, 32128, gated=False))
    assert oldt5.facts["d_ff"] == 65536
    assert "T5 v1.0 XXL (t5-11b)" in _evidence(oldt5)


def test_resolve_does_not_take_t5_v1_0_xxl_for_sd2s_openclip(tmp_path: Path) -> None:
    """1024 wide like OpenCLIP-H: unnamed, it was placed in SD2's slot by its width."""
    from modelsafe.runtime.resolve import resolve

    sd2 = _write(tmp_path, "sd2_unet", bm.ldm_unet(**bm.UNET_PARAMS["sd2"]))
    oldt5 = _write(tmp_path, "oldt5_xxl", _t5(1024, 65536, 128, 128, 24, 32128, gated=False))
    status, why = _statuses(resolve(sd2, text_encoders=[oldt5]))["text_encoder"]
    assert status == "rejected" and "oldt5_xxl is not used by SD2" in why, why
