"""LoRAs (with weights), textual-inversion tokens, VAE override, ControlNet and the SDXL refiner
change the image the way they should, and land in the recipe."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_generate_families import pixels, request_for

from modelsafe.runtime.generate import (
    ControlNetSpec,
    EmbeddingSpec,
    LoraSpec,
    generate,
)
from modelsafe.testing.tiny_models import Tiny, save_tensors, tiny_lora_kohya


def test_lora_weight_changes_the_image_and_zero_does_not(
    tiny: Callable[[str], Tiny], tmp_path: Path
) -> None:
    t = tiny("sd1")
    lora = tiny_lora_kohya(t.pipe.unet, tmp_path / "style.safetensors")
    plain = pixels(generate(request_for(t, t.single), tmp_path / "plain").images[0].path)
    zero = generate(
        request_for(t, t.single, loras=(LoraSpec(lora, 0.0),)), tmp_path / "zero"
    ).images[0]
    full = generate(
        request_for(t, t.single, loras=(LoraSpec(lora, 0.8),)), tmp_path / "full"
    ).images[0]
    assert np.array_equal(plain, pixels(zero.path))
    assert np.abs(plain - pixels(full.path)).mean() > 1
    assert [(lo.name, lo.weight) for lo in full.recipe.loras] == [("style", 0.8)]
    assert "<lora:style:0.8>" in full.recipe.to_parameters()


def test_embedding_vae_override_and_controlnet(tiny: Callable[[str], Tiny], tmp_path: Path) -> None:
    from diffusers import ControlNetModel

    t = tiny("sd1")
    base = pixels(generate(request_for(t, t.folder, prompt="a zq"), tmp_path / "0").images[0].path)

    gen = torch.Generator().manual_seed(3)
    emb = save_tensors(
        tmp_path / "zq.safetensors", {"emb_params": torch.randn(2, 32, generator=gen)}
    )
    with_emb = generate(
        request_for(t, t.folder, prompt="a zq", embeddings=(EmbeddingSpec(emb, "zq"),)),
        tmp_path / "1",
    ).images[0]
    assert not np.array_equal(base, pixels(with_emb.path))
    assert with_emb.recipe.embeddings[0].token == "zq"

    vae_state = {
        k: v + 0.05 * torch.randn(v.shape, generator=gen)
        for k, v in t.pipe.vae.state_dict().items()
    }
    vae = save_tensors(tmp_path / "other-vae.safetensors", vae_state)
    with_vae = generate(request_for(t, t.folder, prompt="a zq", vae=vae), tmp_path / "2").images[0]
    assert not np.array_equal(base, pixels(with_vae.path))
    assert with_vae.recipe.vae is not None and with_vae.recipe.vae.name == "other-vae"

    torch.manual_seed(5)
    controlnet = ControlNetModel.from_unet(
        t.pipe.unet, conditioning_embedding_out_channels=(16, 32)
    )
    for p in controlnet.controlnet_down_blocks.parameters():
        torch.nn.init.normal_(p, std=0.5)
    controlnet.save_pretrained(str(tmp_path / "cn"))
    Image.new("RGB", (32, 32), (255, 255, 255)).save(tmp_path / "edges.png")
    spec = ControlNetSpec(tmp_path / "cn", tmp_path / "edges.png", 1.0)
    with_cn = generate(
        request_for(t, t.folder, prompt="a zq", controlnet=spec), tmp_path / "3"
    ).images[0]
    assert not np.array_equal(base, pixels(with_cn.path))
    assert with_cn.recipe.control_image == str((tmp_path / "edges.png").resolve())


def test_sdxl_refiner(tiny: Callable[[str], Tiny], tmp_path: Path) -> None:
    base_model, refiner = tiny("sdxl"), tiny("sdxl_refiner")
    plain = generate(request_for(base_model, base_model.folder, steps=4), tmp_path / "a").images[0]
    refined = generate(
        request_for(
            base_model, base_model.folder, steps=4, refiner=refiner.folder, config_dir=None
        ),
        tmp_path / "b",
    ).images[0]
    assert refined.recipe.refiner is not None and refined.recipe.refiner_switch == 0.8
    assert not np.array_equal(pixels(plain.path), pixels(refined.path))


def test_a_clip_l_embedding_on_flux_loads_into_clip_l(
    tiny: Callable[[str], Tiny], tmp_path: Path
) -> None:
    """Flux's second text encoder is T5 (no textual inversion): a one-set embedding goes to
    CLIP-L, whose pooled vector it changes (resolve warns that the effect is small)."""
    t = tiny("flux1")
    gen = torch.Generator().manual_seed(5)
    emb = save_tensors(
        tmp_path / "zq.safetensors", {"emb_params": 5 * torch.randn(2, 32, generator=gen)}
    )
    base = pixels(generate(request_for(t, t.folder, prompt="a zq"), tmp_path / "0").images[0].path)
    with_emb = generate(
        request_for(t, t.folder, prompt="a zq", embeddings=(EmbeddingSpec(emb, "zq"),)),
        tmp_path / "1",
    )
    assert with_emb.images[0].recipe.embeddings[0].token == "zq"
    assert not np.array_equal(base, pixels(with_emb.images[0].path))


def test_a_video_vae_is_refused_before_the_load(tmp_path: Path) -> None:
    """A 16-channel video VAE (Qwen-Image's) has Flux's channel count but another latent space:
    the backend's pre-load check refuses it (headers only)."""
    from modelsafe.errors import BackendError
    from modelsafe.runtime.diffusers_loader import check_vae
    from modelsafe.testing import write_safetensors
    from modelsafe.testing.layouts import base_models, components

    flux = write_safetensors(tmp_path / "flux.safetensors", base_models.bfl_flux(), data="sparse")
    qwen = write_safetensors(tmp_path / "qwen_vae.safetensors", components.qwen_image_vae())
    ae = write_safetensors(tmp_path / "ae.safetensors", base_models.ldm_vae(16, False))
    with pytest.raises(BackendError, match="3-D \\(video\\) VAE"):
        check_vae(qwen, "flux1", None, None, flux)
    check_vae(ae, "flux1", None, None, flux)  # Flux's own kind of VAE passes


def test_a_preview_decoder_is_refused_as_vae_before_the_load(tmp_path: Path) -> None:
    """A1111's VAE approximation (eight convs to RGB) has 4 latent channels like SD1's VAE but
    is a live-preview decoder no pipeline decodes with."""
    from modelsafe.errors import BackendError
    from modelsafe.runtime.diffusers_loader import check_vae
    from modelsafe.testing import write_safetensors
    from modelsafe.testing.layouts import base_models

    sd1 = write_safetensors(
        tmp_path / "sd1.safetensors", base_models.unet_checkpoint("sd1"), data="sparse"
    )
    channels = [4, 8, 16, 32, 64, 32, 16, 8, 3]
    approx = write_safetensors(
        tmp_path / "model.safetensors",
        [
            spec
            for i in range(8)
            for spec in (
                (f"conv{i + 1}.weight", "F32", (channels[i + 1], channels[i], 3, 3)),
                (f"conv{i + 1}.bias", "F32", (channels[i + 1],)),
            )
        ],
    )
    with pytest.raises(BackendError, match="live-preview decoder"):
        check_vae(approx, "sd1", None, None, sd1)


def test_a_lora_s_trigger_words_missing_from_the_prompt_are_said(
    tiny: Callable[[str], Tiny], tmp_path: Path
) -> None:
    """Civitai Helper's ``.civitai.info`` beside a LoRA lists its trigger words: a prompt with
    none of them gets a warning before the load (a LoRA often does little without one)."""
    import json

    t = tiny("sd1")
    lora = tiny_lora_kohya(t.pipe.unet, tmp_path / "style.safetensors")
    info = {"baseModel": "SD 1.5", "trainedWords": ["zwx style, watercolor", "ink"], "files": []}
    (tmp_path / "style.civitai.info").write_text(json.dumps(info))
    said = "the prompt has none of its trigger words 'zwx style, watercolor', 'ink'"
    result = generate(request_for(t, t.single, loras=(LoraSpec(lora, 0.8),)), tmp_path / "a")
    assert any(said in w for w in result.warnings), result.warnings
    with_one = request_for(t, t.single, prompt="a cat, ZWX  Style", loras=(LoraSpec(lora, 0.8),))
    assert not any("trigger" in w for w in generate(with_one, tmp_path / "b").warnings)


@pytest.mark.parametrize(
    ("words", "prompt", "warned"),
    [
        (["(mychar:1.2)"], "photo of mychar in a park", False),
        (["mychar"], "photo of (mychar:1.3) in a park", False),
        (["artoria pendragon (fate)"], "artoria pendragon \\(fate\\), 1girl", False),
        (["blue_hair_girl"], "blue hair girl, smile", False),
        (["mychar."], "mychar, standing", False),
        (["<lora:mychar:1>", ""], "anything", False),
        (["ｍｙｃｈａｒ"], "MyChar", False),
        (["猫耳少女"], "一个猫耳少女在公园", False),
        (["mychar", "(other:1.1)"], "an unrelated prompt", True),
    ],
)
def test_trigger_words_are_compared_as_a1111_prompts_write_them(
    tmp_path: Path, words: list[str], prompt: str, warned: bool
) -> None:
    """Weights, brackets, escapes, network tags, underscores, full-width letters and trailing
    dots do not hide a trigger word that is in the prompt."""
    import json

    from modelsafe.runtime.generate import _warn_of_missing_trigger, collect_warnings

    lora = tmp_path / "style.safetensors"
    lora.write_bytes(b"")
    (tmp_path / "style.civitai.info").write_text(json.dumps({"trainedWords": words, "files": []}))
    with collect_warnings(None) as found:
        _warn_of_missing_trigger(lora, prompt)
    assert bool(found) is warned, found
