"""Every compatibility rule, on real files: right and wrong base, VAE, embeddings, ControlNet,
text encoders, missing parts, quantised bases."""

from __future__ import annotations

from typing import Any

import rr_layouts as L

from modelsafe.runtime.resolve import resolve_parts


def _reasons(result: Any, i: int = 0) -> str:
    return " | ".join(r.reason for r in result.parts[i].reasons)


def _sd1(part_of: Any, write: Any) -> Any:
    return part_of(write("sd1.safetensors", L.sd1_checkpoint()), "checkpoint", "sd1", "checkpoint")


def _sdxl(part_of: Any, write: Any) -> Any:
    return part_of(
        write("sdxl.safetensors", L.sdxl_checkpoint()), "checkpoint", "sdxl", "checkpoint"
    )


def _sd1_lora(write: Any) -> list[Any]:
    mods = L.diffusers_modules("UNet2DConditionModel", **L.SD1_UNET_CONFIG)
    return L.lora_specs(mods, style="kohya", prefix="lora_unet")


def test_right_base_lora_accepted_with_coverage(part_of: Any, write: Any) -> None:
    base = _sd1(part_of, write)
    lora = part_of(write("l.safetensors", _sd1_lora(write)), "lora", "sd1", "lora", weight=0.7)
    result = resolve_parts(base, [lora])
    assert result.parts[0].status == "accepted", _reasons(result)
    n = len(_sd1_lora(write))
    assert f"{n} of {n} LoRA keys map onto this UNet" in _reasons(result)
    assert "LoRA is for SD1, like the checkpoint (cross-attention context 768)" in _reasons(result)
    assert result.parts[0].weight == 0.7
    assert result.compatible and result.exit_code == 0


def test_wrong_base_lora_rejected_with_context_widths(part_of: Any, write: Any) -> None:
    base = _sd1(part_of, write)
    ldm = {
        n[22:-7]: sh
        for n, _d, sh in L.sdxl_checkpoint()
        if n.startswith("model.diffusion_model.") and n.endswith(".weight") and len(sh) >= 2
    }
    path = write("xl.safetensors", L.lora_specs(ldm, style="kohya", prefix="lora_unet"))
    result = resolve_parts(
        base, [part_of(path, "lora", "sdxl", "lora", facts={"context_dim": 2048})]
    )
    assert result.parts[0].status == "rejected"
    assert "LoRA targets SDXL: cross-attention context 2048, checkpoint is SD1 (768)" in _reasons(
        result
    )
    assert result.exit_code == 1


def test_lora_family_unknown_decided_by_keys(part_of: Any, write: Any) -> None:
    base = _sdxl(part_of, write)
    path = write("l.safetensors", _sd1_lora(write))
    result = resolve_parts(base, [part_of(path, "lora", "unknown", "lora")])
    # no family, but the keys and widths say it: context 768 (from the file) vs 2048
    assert result.parts[0].status == "rejected", _reasons(result)
    assert "LoRA keys map onto this UNet" in _reasons(result)


def test_partial_coverage_warns(part_of: Any, write: Any) -> None:
    base = _sd1(part_of, write)
    good = _sd1_lora(write)
    ghost = {
        # (names no layer under any name: a block past the UNet's last is a rejection)
        f"ghost_blocks.0.attentions.0.transformer_blocks.{i}.attn1.to_q": (320, 320)
        for i in range(len(good) // 20)
    }
    path = write("p.safetensors", good + L.lora_specs(ghost, style="kohya", prefix="lora_unet"))
    result = resolve_parts(base, [part_of(path, "lora", "sd1", "lora")])
    statuses = {r.rule: r.status for r in result.parts[0].reasons}
    assert statuses["lora_keys"] == "warn"
    assert result.parts[0].status == "accepted"
    assert "(the rest would be ignored)" in _reasons(result)


def test_unet_only_checkpoint_lora_text_encoder_keys_named(part_of: Any, write: Any) -> None:
    unet = L.ldm_unet(channels=(320, 640, 1280, 1280), depths=(1, 1, 1, 0), context=768, prefix="")
    base = part_of(write("unet.safetensors", unet), "checkpoint", "sd1", "unet")
    te = {f"text_model.encoder.layers.{i}.self_attn.q_proj": (768, 768) for i in range(12)}
    lora = _sd1_lora(write) + L.lora_specs(te, style="kohya", prefix="lora_te", only=("q_proj",))
    result = resolve_parts(base, [part_of(write("l.safetensors", lora), "lora", "sd1", "lora")])
    assert result.parts[0].status == "accepted", _reasons(result)
    assert "36 keys patch text encoder 1 (CLIP-L), which this file does not contain" in _reasons(
        result
    )


def test_vae_latent_channels(part_of: Any, write: Any) -> None:
    base = _sd1(part_of, write)
    good = part_of(write("vae4.safetensors", L.vae(4, prefix="")), "vae", "any", "vae")
    bad = part_of(write("ae16.safetensors", L.vae(16, prefix="")), "vae", "flux1", "vae")
    result = resolve_parts(base, [good, bad])
    assert result.parts[0].status == "accepted"
    assert "VAE latent channels 4 = checkpoint's 4" in _reasons(result, 0)
    assert result.parts[1].status == "rejected"
    assert "VAE latent channels 16 != 4" in _reasons(result, 1)


def test_embedding_widths(part_of: Any, write: Any) -> None:
    sd1, sdxl = _sd1(part_of, write), _sdxl(part_of, write)
    e768 = part_of(
        write("e768.safetensors", [("emb_params", "F32", (4, 768))]),
        "embedding",
        "sd1",
        "embedding",
    )
    e1024 = part_of(
        write("e1024.safetensors", [("emb_params", "F32", (4, 1024))]),
        "embedding",
        "sd2",
        "embedding",
    )
    exl = part_of(
        write("exl.safetensors", [("clip_l", "F32", (2, 768)), ("clip_g", "F32", (2, 1280))]),
        "embedding",
        "sdxl",
        "embedding",
    )
    r1 = resolve_parts(sd1, [e768, e1024, exl])
    assert r1.parts[0].status == "accepted" and "embedding width 768 fits clip_l" in _reasons(r1, 0)
    assert r1.parts[1].status == "rejected" and "width 1024 fits none" in _reasons(r1, 1)
    assert r1.parts[2].status == "rejected"
    r2 = resolve_parts(sdxl, [exl, e768])
    assert r2.parts[0].status == "accepted", _reasons(r2, 0)
    assert "1280 fits clip_g" in _reasons(r2, 0)
    assert r2.parts[1].status == "rejected" and "also needs a vector for clip_g" in _reasons(r2, 1)


def test_controlnet_family(part_of: Any, write: Any) -> None:
    cn = L.ldm_unet(
        channels=(320, 640, 1280, 1280), depths=(1, 1, 1, 0), context=768, prefix="control_model."
    )
    path = write("cn.safetensors", cn)
    ok = resolve_parts(_sd1(part_of, write), [part_of(path, "controlnet", "sd1", "controlnet")])
    assert ok.parts[0].status == "accepted"
    bad = resolve_parts(_sdxl(part_of, write), [part_of(path, "controlnet", "sd1", "controlnet")])
    assert bad.parts[0].status == "rejected"
    assert (
        "ControlNet targets SD1: cross-attention context 768, checkpoint is SDXL (2048)"
        in _reasons(bad)
    )


def test_role_mismatch_rejected(part_of: Any, write: Any) -> None:
    path = write("l.safetensors", _sd1_lora(write))
    result = resolve_parts(_sd1(part_of, write), [part_of(path, "vae", "sd1", "lora")])
    assert result.parts[0].status == "rejected"
    assert "given as --vae but it is a lora" in _reasons(result)


def test_flux_missing_parts_and_text_encoders(part_of: Any, write: Any) -> None:
    base = part_of(
        write("flux.safetensors", L.flux_bfl(double=1, single=1)),
        "checkpoint",
        "flux1",
        "transformer",
    )
    alone = resolve_parts(base, [])
    assert [m.slot for m in alone.missing] == ["clip_l", "t5xxl", "vae"]
    assert alone.exit_code == 1
    clip_l = part_of(
        write("cl.safetensors", L.clip_text(768, 2, "")),
        "text_encoder",
        "any",
        "text_encoder",
        "clip_l",
    )
    clip_g = part_of(
        write("cg.safetensors", L.clip_text(1280, 2, "")),
        "text_encoder",
        "any",
        "text_encoder",
        "clip_g",
    )
    ae = part_of(write("ae.safetensors", L.vae(16, prefix="")), "vae", "flux1", "vae")
    result = resolve_parts(base, [clip_l, clip_g, ae])
    assert result.parts[0].status == "accepted"
    assert "clip_l (768 wide) is one of Flux.1's text encoders" in _reasons(result, 0)
    assert result.parts[1].status == "rejected" and "clip_g is not used by Flux.1" in _reasons(
        result, 1
    )
    assert [m.slot for m in result.missing] == ["t5xxl"]


def test_sd3_without_text_encoders_names_them(part_of: Any, write: Any) -> None:
    specs = [("model.diffusion_model.x_embedder.proj.weight", "F16", (1536, 16, 2, 2))]
    specs += L.vae(16, prefix="first_stage_model.")
    base = part_of(write("sd3.safetensors", specs), "checkpoint", "sd3", "checkpoint")
    result = resolve_parts(base, [])
    assert [m.slot for m in result.missing] == ["clip_l", "clip_g"]


def test_gguf_base_warns_lora_applied_on_the_fly(part_of: Any, write: Any) -> None:
    from dataclasses import replace

    base = part_of(
        write("flux.safetensors", L.flux_bfl(double=1, single=1, d=64)),
        "checkpoint",
        "flux1",
        "transformer",
    )
    base = replace(base, report={**base.report, "format": "gguf", "precision": "Q4_K"})
    lora = part_of(
        write(
            "l.safetensors",
            [
                ("transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight", "F16", (4, 64)),
                ("transformer.single_transformer_blocks.0.attn.to_q.lora_B.weight", "F16", (64, 4)),
            ],
        ),
        "lora",
        "flux1",
        "lora",
    )
    result = resolve_parts(base, [lora])
    assert result.parts[0].status == "accepted", _reasons(result)
    assert "GGUF-quantised (Q4_K)" in _reasons(result)
