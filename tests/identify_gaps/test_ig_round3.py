"""Identification round 3: adapters, odd base models and training leftovers.

Each case writes a header-only file (sparse zero data) from the project's layouts and checks that
`inspect` names it, or says `unknown` with the reason, instead of a confident wrong answer:
Qwen-Image ControlNets, AuraFlow and Kolors LoRAs, CosXL, the SD x4 upscaler and SD 2.1 unCLIP,
VAEs with their training loss, bare-tensor `.pt` files, mT5-XXL, IP-Adapter FaceID-Plus,
ComfyUI's `modelspec.predict_key` and the IC-Light / instruct-pix2pix layout tie.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest

from modelsafe.registry.inspect import inspect_path
from modelsafe.testing import write_safetensors
from modelsafe.testing.layouts import adapters as ad
from modelsafe.testing.layouts import base_models as bm
from modelsafe.testing.layouts import components as co
from modelsafe.testing.layouts.base_models import Specs


def _inspect(tmp_path: Path, name: str, specs: Specs, meta: dict[str, str] | None = None) -> Any:
    return inspect_path(write_safetensors(tmp_path / f"{name}.safetensors", specs, meta))


def _all_evidence(report: Any) -> str:
    """The identity's evidence and every candidate's (an `unknown` keeps its reason there)."""
    lines = list(report.evidence)
    for c in report.candidates:
        lines += list(c.get("why", ()))
    return " | ".join(lines)


def _linears(class_name: str, config: dict[str, Any], pattern: str) -> list[bm.TensorSpec]:
    """(module, (out, in)) of every Linear of a diffusers class whose name matches."""
    specs = co.meta_state_dict(class_name, config, "BF16")
    return [
        (name[: -len(".weight")], dtype, shape)
        for name, dtype, shape in specs
        if name.endswith(".weight") and len(shape) == 2 and re.search(pattern, name)
    ]


def _kohya(mods: list[tuple[str, tuple[int, ...]]], prefix: str = "lora_unet_") -> Specs:
    return ad.kohya_lora([(prefix, mods)])


def _torch_state(specs: Specs) -> dict[str, Any]:
    """Tensors for `specs` sharing one storage per dtype, so the pickle stays small."""
    import torch

    dtypes = {
        "F16": torch.float16,
        "F32": torch.float32,
        "BF16": torch.bfloat16,
        "I64": torch.int64,
    }
    size: dict[str, int] = {}
    for _, dtype, shape in specs:
        size[dtype] = max(size.get(dtype, 1), math.prod(shape))
    base = {d: torch.zeros(n, dtype=dtypes[d]) for d, n in size.items()}
    return {
        name: base[dtype][: math.prod(shape)].view(*shape) if shape else base[dtype][0].clone()
        for name, dtype, shape in specs
    }


# -------------------------------------------------------------- 1. Qwen-Image ControlNets


@pytest.mark.parametrize("layout", ["qwen-image", "qwen-image/inpaint"])
def test_qwen_image_controlnet_is_a_controlnet(tmp_path: Path, layout: str) -> None:
    report = _inspect(tmp_path, "qcn", ad.controlnet_dit(layout))
    assert (report.family, report.kind) == ("qwen-image", "controlnet")
    assert not any(c["kind"] == "transformer" for c in report.candidates)
    assert not any(c["family"] == "flux1" for c in report.candidates)
    if layout.endswith("inpaint"):
        assert report.facts["in_channels"] == 68
        assert "inpainting mask" in _all_evidence(report)


def test_flux_controlnet_stays_flux_and_is_no_transformer(tmp_path: Path) -> None:
    report = _inspect(tmp_path, "fcn", ad.controlnet_dit("flux1"))
    assert (report.family, report.kind) == ("flux1", "controlnet")
    assert not any(c["kind"] == "transformer" for c in report.candidates)


def test_controlnet_x_embedder_without_flux_text_width_is_no_flux(tmp_path: Path) -> None:
    specs = [
        (n, d, (3072, 2048) if n == "context_embedder.weight" else s)
        for n, d, s in ad.controlnet_dit("flux1")
    ]
    report = _inspect(tmp_path, "odd_cn", specs)
    assert report.family != "flux1"
    assert "not Flux.1's 4096-wide T5 features" in _all_evidence(report)


def test_qwen_image_transformer_stays_a_transformer(tmp_path: Path) -> None:
    specs = bm.diffusers_denoiser("qwen-image", "BF16", num_layers=2)
    report = _inspect(tmp_path, "qt", specs)
    assert (report.family, report.kind) == ("qwen-image", "transformer")


# -------------------------------------------------------------- 2. AuraFlow LoRAs


def _auraflow(attn_only: bool = False) -> list[tuple[str, tuple[int, ...]]]:
    pattern = r"transformer_blocks\.\d+\.attn\." if attn_only else r"transformer_blocks\.\d+\."
    pattern += r"(?:to_q|to_k|to_v|to_out\.0|add_q_proj|add_k_proj|add_v_proj|to_add_out)" + (
        "" if attn_only else r"|transformer_blocks\.\d+\.ff"
    )
    return [(m, s) for m, _, s in _linears("AuraFlowTransformer2DModel", {}, pattern)]


@pytest.mark.parametrize("form", ["peft", "peft-attn", "kohya"])
def test_auraflow_lora_is_not_flux(tmp_path: Path, form: str) -> None:
    mods = _auraflow(attn_only=form == "peft-attn")
    assert any(m.startswith("joint_transformer_blocks.") for m, _ in mods)
    assert any(m.startswith("single_transformer_blocks.") for m, _ in mods)
    if form == "kohya":
        specs = _kohya(mods)
    else:
        specs = ad.peft_lora([("transformer.", mods)], dtype="BF16")
    report = _inspect(tmp_path, f"aura_{form}", specs)
    assert (report.family, report.kind) == ("unknown", "lora")
    assert "AuraFlow" in _all_evidence(report)
    assert not any(c["family"] == "flux1" for c in report.candidates)


def test_flux_diffusers_lora_still_flux(tmp_path: Path) -> None:
    specs = ad.peft_lora([("transformer.", ad.flux_modules("diffusers"))], dtype="BF16")
    report = _inspect(tmp_path, "flux_peft", specs)
    assert (report.family, report.kind) == ("flux1", "lora")


# -------------------------------------------------------------- 3. CosXL / CosXL-Edit


@pytest.mark.parametrize(("in_channels", "variant"), [(4, "cosxl"), (8, "cosxl-edit")])
def test_cosxl_is_edm_v_prediction(tmp_path: Path, in_channels: int, variant: str) -> None:
    specs = bm.unet_checkpoint("sdxl", in_channels=in_channels)
    specs += [("edm_vpred.sigma_max", "F32", ()), ("edm_vpred.sigma_min", "F32", ())]
    report = _inspect(tmp_path, variant, specs)
    assert (report.family, report.kind, report.variant) == ("sdxl", "checkpoint", variant)
    assert report.prediction_type == "v_prediction"
    assert report.facts["noise_schedule"] == "edm"
    assert report.confidence >= 0.9


def test_sdxl_without_edm_markers_stays_epsilon(tmp_path: Path) -> None:
    report = _inspect(tmp_path, "sdxl", bm.unet_checkpoint("sdxl"))
    assert (report.variant, report.prediction_type) == ("base", "epsilon")
    assert "noise_schedule" not in report.facts


# -------------------------------------------------------------- 4. Kolors LoRA (ChatGLM3 TE)


def _chatglm_te() -> list[tuple[str, tuple[int, ...]]]:
    mods: list[tuple[str, tuple[int, ...]]] = []
    for layer in range(28):
        p = f"encoder.layers.{layer}"
        mods += [
            (f"{p}.self_attention.query_key_value", (4608, 4096)),
            (f"{p}.self_attention.dense", (4096, 4096)),
            (f"{p}.mlp.dense_h_to_4h", (27392, 4096)),
            (f"{p}.mlp.dense_4h_to_h", (4096, 13696)),
        ]
    return mods


def test_kolors_lora_with_chatglm_text_encoder_is_not_sdxl(tmp_path: Path) -> None:
    specs = _kohya(ad.sdxl_unet_modules("sgm")) + _kohya(_chatglm_te(), "lora_te_")
    report = _inspect(tmp_path, "kolors_lora", specs)
    assert (report.family, report.kind) == ("unknown", "lora")
    assert "wider than any CLIP text encoder" in _all_evidence(report)


def test_sdxl_lora_with_clip_text_encoders_still_sdxl(tmp_path: Path) -> None:
    specs = _kohya(ad.sdxl_unet_modules("sgm"))
    specs += _kohya(ad.clip_modules(768, 12), "lora_te1_")
    specs += _kohya(ad.clip_modules(1280, 32), "lora_te2_")
    report = _inspect(tmp_path, "sdxl_lora", specs)
    assert (report.family, report.kind) == ("sdxl", "lora")


# -------------------------------------------------------------- 5. SD x4 upscaler, unCLIP


def test_sd_x4_upscaler_is_not_an_sd2_checkpoint(tmp_path: Path) -> None:
    params = {**bm.UNET_PARAMS["sd2"], "model_channels": 256, "in_channels": 7}
    params.update(channel_mult=(1, 2, 2, 4), depth=(0, 1, 1, 1))
    specs = bm.prefixed("model.diffusion_model.", bm.ldm_unet(**params))
    specs += [("model.diffusion_model.label_emb.weight", "F16", (1000, 1024))]
    specs += bm.prefixed("first_stage_model.", bm.ldm_vae(4, True, "F16"))
    specs += bm.prefixed("cond_stage_model.", bm.openclip_text(1024, 24, "F16"))
    report = _inspect(tmp_path, "x4", specs)
    assert report.family == "unknown"
    assert "SD x4 upscaler" in _all_evidence(report)


def test_diffusers_x4_upscaler_unet_is_unknown(tmp_path: Path) -> None:
    specs = bm.diffusers_denoiser(
        "sd2", in_channels=7, num_class_embeds=1000, block_out_channels=(256, 512, 512, 1024)
    )
    report = _inspect(tmp_path, "x4_diffusers", specs)
    assert report.family == "unknown"
    assert "class-embedding table" in _all_evidence(report)


@pytest.mark.parametrize(("adm", "name"), [(2048, "unCLIP-H"), (1536, "unCLIP-L")])
def test_sd21_unclip_is_not_an_sd2_checkpoint(tmp_path: Path, adm: int, name: str) -> None:
    params = {**bm.UNET_PARAMS["sd2"], "adm_in_channels": adm}
    specs = bm.prefixed("model.diffusion_model.", bm.ldm_unet(**params))
    specs += bm.prefixed("first_stage_model.", bm.ldm_vae(4, True, "F16"))
    specs += bm.prefixed("cond_stage_model.", bm.openclip_text(1024, 24, "F16"))
    specs += [("noise_augmentor.betas", "F32", (1000,))]
    report = _inspect(tmp_path, "unclip", specs)
    assert report.family == "unknown"
    assert name in _all_evidence(report)


def test_plain_sd2_checkpoint_unchanged(tmp_path: Path) -> None:
    report = _inspect(tmp_path, "sd2", bm.unet_checkpoint("sd2"))
    assert (report.family, report.kind, report.prediction_type) == (
        "sd2",
        "checkpoint",
        "ambiguous",
    )


# -------------------------------------------------------------- 6. VAEs with training loss


def _lpips_loss() -> Specs:
    """LDM's LPIPSWithDiscriminator tensors (abridged VGG16 + lin layers + PatchGAN)."""
    specs: Specs = [("loss.logvar", "F32", ())]
    for i, (cin, cout) in enumerate([(3, 64), (64, 64), (64, 128), (128, 128), (128, 256)]):
        specs += bm._conv(f"loss.perceptual_loss.net.slice1.{2 * i}", cout, cin, 3, "F32")
    for i, ch in enumerate([64, 128, 256, 512, 512]):
        specs += [(f"loss.perceptual_loss.lin{i}.model.1.weight", "F32", (1, ch, 1, 1))]
    for i, (cin, cout) in enumerate([(3, 64), (64, 128), (128, 256), (256, 512), (512, 1)]):
        specs += bm._conv(f"loss.discriminator.main.{3 * i}", cout, cin, 4, "F32")
        if 0 < i < 4:
            for part in ("weight", "bias", "running_mean", "running_var"):
                specs += [(f"loss.discriminator.main.{3 * i + 1}.{part}", "F32", (cout,))]
            specs += [(f"loss.discriminator.main.{3 * i + 1}.num_batches_tracked", "I64", ())]
    return specs


def test_vae_with_training_loss_is_a_vae(tmp_path: Path) -> None:
    vae = bm.ldm_vae(4, True, "F32")
    loss = _lpips_loss()
    assert len(vae) / (len(vae) + len(loss)) < 0.9  # the old rule refused this file
    report = _inspect(tmp_path, "vae_loss", vae + loss)
    assert report.kind == "vae"
    assert report.family in ("sd1", "sdxl")
    assert "training leftovers" in _all_evidence(report)


def test_vae_pt_with_loss_and_ema_counters_is_a_vae(tmp_path: Path) -> None:
    import torch

    specs = bm.ldm_vae(4, True, "F32") + _lpips_loss()
    state = _torch_state(specs)
    state["model_ema.decay"] = torch.tensor(0.9999)
    state["model_ema.num_updates"] = torch.tensor(1000, dtype=torch.int32)
    path = tmp_path / "kl-f8.vae.pt"
    torch.save({"state_dict": state, "global_step": 1000}, path)
    report = inspect_path(path)
    assert (report.kind, report.family in ("sd1", "sdxl")) == ("vae", True)


def test_checkpoint_with_vae_is_still_a_checkpoint(tmp_path: Path) -> None:
    specs = bm.unet_checkpoint("sd1") + bm.prefixed("first_stage_model.", _lpips_loss())
    report = _inspect(tmp_path, "ckpt", specs)
    assert (report.family, report.kind) == ("sd1", "checkpoint")
    assert not any(c["kind"] == "vae" for c in report.candidates)


# -------------------------------------------------------------- 7. bare tensors vs embeddings


def test_bare_tensor_pt_is_no_embedding(tmp_path: Path) -> None:
    import torch

    path = tmp_path / "aesthetic.pt"
    torch.save(torch.zeros(1, 768), path)
    report = inspect_path(path)
    assert report.kind != "embedding"
    assert report.family == "unknown"


def test_a1111_pt_embedding_still_identified(tmp_path: Path) -> None:
    import torch

    path = tmp_path / "ti.pt"
    torch.save(
        {
            "string_to_token": {"*": 265},
            "string_to_param": {"*": torch.zeros(4, 768)},
            "name": "my-style",
            "step": 3000,
        },
        path,
    )
    report = inspect_path(path)
    assert (report.family, report.kind) == ("sd1", "embedding")


@pytest.mark.parametrize(("family", "want"), [("sd1", "sd1"), ("sd2", "sd2"), ("sdxl", "sdxl")])
def test_safetensors_embeddings_still_identified(tmp_path: Path, family: str, want: str) -> None:
    report = _inspect(tmp_path, f"emb_{family}", ad.embedding(family))
    assert (report.family, report.kind) == (want, "embedding")


def test_diffusers_learned_embeds_still_identified(tmp_path: Path) -> None:
    report = _inspect(tmp_path, "learned", [("<cat-toy>", "F32", (768,))])
    assert (report.family, report.kind) == ("sd1", "embedding")
    assert report.facts["token"] == "<cat-toy>"


# -------------------------------------------------------------- 8. mT5-XXL


def test_mt5_xxl_is_not_t5xxl(tmp_path: Path) -> None:
    specs = [(n, d, (250112, 4096) if n == "shared.weight" else s) for n, d, s in co.t5xxl("BF16")]
    report = _inspect(tmp_path, "mt5", specs)
    assert report.kind == "text_encoder"
    assert report.variant == "mt5xxl"
    assert "t5xxl" not in report.facts.get("used_by", [])
    assert "mT5" in _all_evidence(report)


@pytest.mark.parametrize(("build", "variant"), [(co.t5xxl, "t5xxl"), (co.umt5xxl, "umt5xxl")])
def test_t5_and_umt5_unchanged(tmp_path: Path, build: Any, variant: str) -> None:
    report = _inspect(tmp_path, variant, build())
    assert (report.kind, report.variant) == ("text_encoder", variant)


# -------------------------------------------------------------- 9. IP-Adapter FaceID-Plus


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_faceid_plus_is_named_and_needs_clip_vision(tmp_path: Path, family: str) -> None:
    report = _inspect(tmp_path, "faceid_plus", ad.ip_adapter(family, "faceid-plus"))
    assert (report.family, report.kind, report.variant) == (family, "ip_adapter", "faceid-plus")
    assert report.facts["image_encoder"] == "clip_vit_h"
    assert report.facts["face_encoder"] == "insightface"
    assert "PlusV2 share this layout" in _all_evidence(report)


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_plain_faceid_unchanged(tmp_path: Path, family: str) -> None:
    report = _inspect(tmp_path, "faceid", ad.ip_adapter(family, "faceid"))
    assert (report.family, report.kind, report.variant) == (family, "ip_adapter", "faceid")
    assert report.facts["image_encoder"] == "insightface"


# -------------------------------------------------------------- 10. modelspec.predict_key


@pytest.mark.parametrize(
    ("value", "variant", "prediction"),
    [("epsilon", "512-base", "epsilon"), ("v", "768-v", "v_prediction")],
)
def test_comfyui_predict_key_decides_sd2(
    tmp_path: Path, value: str, variant: str, prediction: str
) -> None:
    meta = {"modelspec.predict_key": value}
    report = _inspect(tmp_path, "sd2_pk", bm.unet_checkpoint("sd2"), meta)
    assert (report.family, report.variant, report.prediction_type) == ("sd2", variant, prediction)
    assert any("modelspec.predict_key" in line for line in report.evidence)


# -------------------------------------------------------------- 11. IC-Light fc vs ip2p


def test_eight_channel_sd1_unet_names_the_ic_light_tie(tmp_path: Path) -> None:
    report = _inspect(tmp_path, "ip2p", bm.diffusers_denoiser("sd1", in_channels=8))
    assert (report.family, report.kind, report.variant) == ("sd1", "unet", "instruct-pix2pix")
    assert report.confidence < 0.95
    assert "IC-Light" in _all_evidence(report)
