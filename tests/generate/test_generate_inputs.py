"""Bad inputs to `modelsafe generate` end as exit 2 with a reason (never exit 3), and what can
be checked without loading a model is refused before anything loads: wrong VAE, LoRAs that
apply to nothing, LyCORIS kinds diffusers cannot apply, a ControlNet of another family, an
unreadable control image, bad numbers, an --out that cannot be a folder, folders given as
files. Also: the seed -1, fp16-variant-only folders, A1111 TI hashes and --from-image
overrides."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from test_generate_families import pixels, request_for

from modelsafe.errors import BackendError, UsageError
from modelsafe.runtime.generate import (
    MAX_SEED,
    generate,
    request_from_recipe,
)
from modelsafe.runtime.recipe import ModelRef, Recipe, recipe_from_parameters
from modelsafe.testing.tiny_models import Tiny, _vae, save_tensors, tiny_lora_kohya


def _args(t: Tiny, out: Path, *extra: str, db: Path | None = None) -> list[str]:
    seed = [] if "--seeds" in extra else ["--seed", "42"]  # (both together are refused)
    return [
        "--catalog", str(db or out.parent / "catalog.db"), "generate",
        "--checkpoint", str(t.single), "--family", "sd1",
        "--config-dir", str(t.configs), "--tokenizers", str(t.tokenizers),
        "--prompt", "a cat", *seed, "--steps", "2",
        "--width", "32", "--height", "32", "--out", str(out), *extra,
    ]  # fmt: skip


@pytest.fixture
def no_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any pipeline load fails the test (the input must be refused before it)."""
    import diffusers

    def never(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("the pipeline was loaded before the input was refused")

    for cls in (diffusers.StableDiffusionPipeline,):
        monkeypatch.setattr(cls, "from_single_file", never)
        monkeypatch.setattr(cls, "from_pretrained", never)


def _refused(run_cli: Any, args: list[str], out: Path, *words: str) -> str:
    code, _out, err = run_cli(*args)
    assert code == 2, err
    assert "this is a bug" not in err and "Traceback" not in err
    for word in words:
        assert word in err, err
    assert not out.exists() or not list(out.glob("*.png"))
    return str(err)


# -- 1. VAE, text encoders ------------------------------------------------------------------------


def test_vae_of_other_latent_channels_or_kind_is_refused_before_loading(
    tiny: Callable[[str], Tiny], run_cli: Any, tmp_path: Path, no_load: None
) -> None:
    t = tiny("sd1")
    vae16 = save_tensors(tmp_path / "vae16.safetensors", _vae(latent_channels=16).state_dict())
    out = tmp_path / "o"
    _refused(
        run_cli,
        _args(t, out, "--vae", str(vae16)),
        out,
        "vae16.safetensors has 16 latent channels; sd1 needs 4",
    )
    lora = tiny_lora_kohya(t.pipe.unet, tmp_path / "style.safetensors")
    _refused(run_cli, _args(t, out, "--vae", str(lora)), out, "is a lora, not a VAE")


def test_vae_that_does_not_fit_the_config_is_a_backend_error(
    tiny: Callable[[str], Tiny], run_cli: Any, tmp_path: Path
) -> None:
    # 4 latent channels like sd1, but other block widths: only diffusers can tell
    t = tiny("sd1")
    odd = save_tensors(tmp_path / "odd.safetensors", _vae(4, flow=True).state_dict())
    out = tmp_path / "o"
    _refused(run_cli, _args(t, out, "--vae", str(odd)), out, "diffusers could not load")


def test_unknown_text_encoder_name_is_refused(
    tiny: Callable[[str], Tiny], run_cli: Any, tmp_path: Path, no_load: None
) -> None:
    t = tiny("sd1")
    te = tmp_path / "te.safetensors"
    save_tensors(te, t.pipe.text_encoder.state_dict())
    out = tmp_path / "o"
    _refused(
        run_cli,
        _args(t, out, "--text-encoder", f"text_encoder_9={te}"),
        out,
        "sd1 models have no text_encoder_9",
    )


# -- 2. LoRAs that apply to nothing, 10. LyCORIS ---------------------------------------------------


def test_lora_that_matches_nothing_is_exit_2(
    tiny: Callable[[str], Tiny], run_cli: Any, tmp_path: Path
) -> None:
    t = tiny("sd1")
    xlabs = save_tensors(
        tmp_path / "xlabs.safetensors",
        {
            "double_blocks.0.processor.qkv_lora1.down.weight": torch.randn(2, 32),
            "double_blocks.0.processor.qkv_lora1.up.weight": torch.randn(96, 2),
        },
    )
    te_only = save_tensors(
        tmp_path / "te_nomatch.safetensors",
        {
            "lora_te_text_model_encoder_layers_99_mlp_fc1.lora_down.weight": torch.randn(2, 32),
            "lora_te_text_model_encoder_layers_99_mlp_fc1.lora_up.weight": torch.randn(37, 2),
            "lora_te_text_model_encoder_layers_99_mlp_fc1.alpha": torch.tensor(2.0),
        },
    )
    out = tmp_path / "o"
    for lora in (xlabs, te_only):
        _refused(
            run_cli,
            _args(t, out, "--lora", str(lora)),
            out,
            f"LoRA {lora.name} has no keys that apply to this sd1 model",
        )


def test_lycoris_kinds_are_refused_with_a_short_reason(
    tiny: Callable[[str], Tiny], run_cli: Any, tmp_path: Path, no_load: None
) -> None:
    t = tiny("sd1")
    key = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_k"
    out = tmp_path / "o"
    for kind, tensors in (
        ("LoKr", {f"{key}.lokr_w1": torch.randn(2, 2), f"{key}.lokr_w2": torch.randn(16, 16)}),
        ("LoHa", {f"{key}.hada_w1_a": torch.randn(32, 2), f"{key}.hada_w1_b": torch.randn(2, 32)}),
        ("OFT", {f"{key}.oft_diag": torch.randn(4, 8, 8)}),
    ):
        file = save_tensors(tmp_path / f"{kind}.safetensors", tensors)
        err = _refused(
            run_cli,
            _args(t, out, "--lora", str(file)),
            out,
            f"LyCORIS {kind} file",
            "diffusers cannot apply it",
        )
        assert len(err) < 800, err


# -- 3. ControlNet and control image ------------------------------------------------------------


def _controlnet(t: Tiny, folder: Path, **changes: Any) -> Path:
    from diffusers import ControlNetModel

    torch.manual_seed(5)
    base = ControlNetModel.from_unet(t.pipe.unet, conditioning_embedding_out_channels=(16, 32))
    model = ControlNetModel.from_config({**base.config, **changes}) if changes else base
    model.save_pretrained(str(folder))
    return folder


def test_controlnet_of_other_family_and_unreadable_control_image(
    tiny: Callable[[str], Tiny], run_cli: Any, tmp_path: Path, no_load: None
) -> None:
    t = tiny("sd1")
    Image.new("RGB", (32, 32), (255, 255, 255)).save(tmp_path / "edges.png")
    wide = _controlnet(t, tmp_path / "cn-wide", cross_attention_dim=64)
    out = tmp_path / "o"
    _refused(
        run_cli,
        _args(t, out, "--controlnet", str(wide), "--control-image", str(tmp_path / "edges.png")),
        out,
        "takes 64-wide text conditioning; this sd1 model gives 32",
    )
    good = _controlnet(t, tmp_path / "cn")
    text = tmp_path / "notes.png"
    text.write_text("not an image\n")
    _refused(
        run_cli,
        _args(t, out, "--controlnet", str(good), "--control-image", str(text)),
        out,
        "control image",
        "is not an image that can be read",
    )


# -- 4. LoRA weights -------------------------------------------------------------------------------


def test_lora_weight_must_be_a_finite_number(
    tiny: Callable[[str], Tiny], run_cli: Any, tmp_path: Path, no_load: None
) -> None:
    t = tiny("sd1")
    lora = tiny_lora_kohya(t.pipe.unet, tmp_path / "style.safetensors")
    out = tmp_path / "o"
    for weight in ("nan", "inf", "-inf"):
        _refused(
            run_cli,
            _args(t, out, "--lora", f"{lora}:{weight}"),
            out,
            f"weight '{weight}' is not a finite number",
        )
    _refused(run_cli, _args(t, out, "--lora", f"{lora}:abc"), out, "weight 'abc' is not a number")
    with pytest.raises(UsageError, match="not a finite number"):
        generate(request_for(t, t.single, loras=(_lora(lora, float("nan")),)), tmp_path / "lib")


def _lora(path: Path, weight: float) -> Any:
    from modelsafe.runtime.generate import LoraSpec

    return LoraSpec(path, weight)


def test_lora_file_with_a_colon_in_its_name(tmp_path: Path) -> None:
    from modelsafe.commands.generate_cmd import parse_lora

    odd = tmp_path / "a:b.safetensors"
    odd.write_bytes(b"x")
    assert parse_lora(str(odd)) == (odd, 1.0)
    assert parse_lora(f"{odd}:0.5") == (odd, 0.5)
    # a missing file keeps the whole text as its path (reported as missing, not as a weight)
    assert parse_lora(str(tmp_path / "gone.safetensors:abc")) == (
        tmp_path / "gone.safetensors:abc",
        1.0,
    )


# -- 5. numbers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "value", "words"),
    [
        ("--steps", "0", "at least 1 denoising step"),
        ("--steps", "-1", "at least 1 denoising step"),
        ("--width", "0", "--width 0: image sizes are positive multiples of 8"),
        ("--width", "-64", "--width -64: image sizes are positive multiples of 8"),
        ("--height", "36", "--height 36: image sizes are positive multiples of 8"),
        ("--seeds", str(2**64 + 5), f"seed {2**64 + 5} is out of range"),
        ("--seed", "-7", "seed -7 is out of range"),
        ("--batch", "0", "batch size 0 must be 1 to 1000"),
        ("--batch", "5000", "batch size 5000 must be 1 to 1000"),
        ("--steps", "20000", "--steps 20000: more than 10000 denoising steps"),
        ("--width", "100000", "--width 100000: larger than 16384 pixels"),
        ("--device", "tpu", "--device 'tpu' is not a device torch knows"),
    ],
)
def test_bad_numbers_are_refused_before_loading(
    flag: str,
    value: str,
    words: str,
    tiny: Callable[[str], Tiny],
    run_cli: Any,
    tmp_path: Path,
    no_load: None,
) -> None:
    t = tiny("sd1")
    args = _args(t, tmp_path / "o", flag, value)
    if flag in ("--steps", "--width", "--height"):  # replace the default one in _args
        at = args.index(flag)
        del args[at : at + 2]
        args += [flag, value]
    _refused(run_cli, args, tmp_path / "o", words)


def test_seed_minus_one_is_a_random_seed_recorded_in_the_recipe(
    tiny: Callable[[str], Tiny], tmp_path: Path
) -> None:
    t = tiny("sd1")
    image = generate(request_for(t, t.single, seed=-1), tmp_path / "r").images[0]
    assert 0 <= image.seed <= MAX_SEED and image.recipe.seed == image.seed
    again = generate(request_for(t, t.single, seed=image.seed), tmp_path / "again").images[0]
    assert np.array_equal(pixels(image.path), pixels(again.path))
    seeds = generate(request_for(t, t.single, seeds=(-1, 5)), tmp_path / "s").images
    assert seeds[0].seed >= 0 and seeds[1].seed == 5


def test_a_gpu_this_torch_cannot_use_is_refused_before_loading(
    tiny: Callable[[str], Tiny], run_cli: Any, tmp_path: Path, no_load: None
) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this torch sees a CUDA device")
    t = tiny("sd1")
    args = _args(t, tmp_path / "o", "--device", "cuda")
    _refused(run_cli, args, tmp_path / "o", "--device cuda: this torch")


def test_running_out_of_memory_is_said_with_what_to_do(
    tiny: Callable[[str], Tiny], run_cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CPU allocator's error (a real 8192x8192 run on a small machine) is no backend bug."""
    from modelsafe.plugins.builtin import backend_diffusers

    def too_big(request: Any) -> Any:
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: "
            "you tried to allocate 4294967296 bytes"
        )

    monkeypatch.setattr(backend_diffusers, "build_pipelines", too_big)
    t = tiny("sd1")
    code, _, err = run_cli(*_args(t, tmp_path / "o"))
    assert code == 2 and "ran out of memory in backend 'diffusers'" in err
    assert "--vram SIZE" in err and "report it" not in err


# -- 6. --out, folders given as files ----------------------------------------------------------


def test_out_and_input_folders_are_checked_before_loading(
    tiny: Callable[[str], Tiny], run_cli: Any, tmp_path: Path, no_load: None
) -> None:
    t = tiny("sd1")
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    db = tmp_path / "c.db"
    _refused(run_cli, _args(t, a_file, db=db), tmp_path / "nothing", "is a file, not a folder")
    _refused(
        run_cli,
        _args(t, a_file / "sub", db=db),
        tmp_path / "nothing",
        "is a file, so no folder can be made below it",
    )
    folder = tmp_path / "peft"
    folder.mkdir()
    tiny_lora_kohya(t.pipe.unet, folder / "adapter_model.safetensors")
    out = tmp_path / "o"
    _refused(run_cli, _args(t, out, "--lora", str(folder)), out, "is a folder; a LoRA is one file")
    _refused(
        run_cli,
        _args(t, out, "--embedding", f"{folder}:zq"),
        out,
        "is a folder; an embedding is one file",
    )
    assert not out.exists()


# -- 7. A1111 TI hashes, 8. --from-image overrides ----------------------------------------------


def test_a1111_ti_hashes_become_embeddings() -> None:
    text = (
        "abc myemb\nSteps: 2, Sampler: Euler, CFG scale: 7, Seed: 42, Size: 64x64, "
        'Model hash: 93f424e738, Model: sd1, TI hashes: "myemb: 4528ee2236, other: 0123456789", '
        "Version: modelsafe 0.1.0"
    )
    recipe = recipe_from_parameters(text)
    assert [(e.token, e.autov2) for e in recipe.embeddings] == [
        ("myemb", "4528ee2236"),
        ("other", "0123456789"),
    ]
    # not on this machine: said plainly, not dropped
    with pytest.raises(UsageError, match="embedding 'myemb'") as info:
        request_from_recipe(recipe, None, overridden={"checkpoint"})
    assert "--embedding" in info.value.hint


def test_from_image_flags_override_models_before_the_lookup(tmp_path: Path) -> None:
    recipe = Recipe(
        prompt="p",
        seed=1,
        steps=2,
        cfg=7.0,
        width=64,
        height=64,
        scheduler="euler",
        checkpoint=ModelRef("gone", str(tmp_path / "gone.safetensors"), "ab" * 32),
        vae=ModelRef("vae-gone", str(tmp_path / "vae.safetensors"), "cd" * 32),
        family="sd1",
    )
    with pytest.raises(UsageError, match="checkpoint 'gone'"):
        request_from_recipe(recipe)
    request = request_from_recipe(recipe, overridden={"checkpoint", "vae"})
    assert request.vae is None and request.steps == 2


def test_a1111_only_image_remade_with_checkpoint_flag(
    tiny: Callable[[str], Tiny], run_cli: Any, tmp_path: Path
) -> None:
    t = tiny("sd1")
    code, out, err = run_cli(*_args(t, tmp_path / "first", "--json"))
    assert code == 0, err
    first = Path(json.loads(out)["images"][0]["path"])
    with Image.open(first) as image:
        info = PngInfo()
        info.add_text("parameters", image.text["parameters"])  # type: ignore[attr-defined]
        image.save(tmp_path / "a1111.png", pnginfo=info)
    code, out, err = run_cli(
        "--catalog", str(tmp_path / "other.db"), "generate",
        "--from-image", str(tmp_path / "a1111.png"), "--checkpoint", str(t.single),
        "--family", "sd1", "--config-dir", str(t.configs), "--tokenizers", str(t.tokenizers),
        "--out", str(tmp_path / "again"), "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["reproduces"]["identical_pixels"] is True


def test_recipe_json_unknown_field_is_ignored_and_bad_number_refused() -> None:
    from modelsafe.runtime.recipe import SCHEMA

    data = {
        "schema": SCHEMA,
        "prompt": "p",
        "seed": 1,
        "steps": 2,
        "cfg": 7.0,
        "width": 64,
        "height": 64,
        "scheduler": "euler",
        "checkpoint": {"name": "x"},
        "from_the_future": 1,
    }
    assert Recipe.from_json(data).steps == 2
    with pytest.raises(UsageError, match="steps is 'two', not a number"):
        Recipe.from_json({**data, "steps": "two"})


# -- 9. fp16-variant-only folders ---------------------------------------------------------------


def test_folder_with_only_fp16_variant_files(tiny: Callable[[str], Tiny], tmp_path: Path) -> None:
    from modelsafe.runtime.diffusers_loader import folder_variant

    t = tiny("sd1")
    folder = tmp_path / "fp16"
    shutil.copytree(t.folder, folder)
    for file in list(folder.glob("*/*.safetensors")):
        file.rename(file.with_name(file.name.replace(".safetensors", ".fp16.safetensors")))
    assert folder_variant(folder) == "fp16" and folder_variant(t.folder) is None
    plain = generate(request_for(t, t.folder), tmp_path / "a").images[0]
    variant = generate(request_for(t, folder), tmp_path / "b").images[0]
    assert np.array_equal(pixels(plain.path), pixels(variant.path))


def test_backend_errors_name_the_cause(tiny: Callable[[str], Tiny], tmp_path: Path) -> None:
    """The library path raises BackendError (not diffusers' own exceptions)."""
    t = tiny("sd1")
    bad = save_tensors(tmp_path / "odd.safetensors", _vae(4, flow=True).state_dict())
    with pytest.raises(BackendError, match="diffusers could not load"):
        generate(request_for(t, t.single, vae=bad), tmp_path / "x")
    assert not (tmp_path / "x").exists()


# -- minor: embeddings (more in test_generate_preload.py) ----------------------------------------


def test_embedding_of_other_width_or_single_vector_on_sdxl_is_refused(
    tiny: Callable[[str], Tiny], run_cli: Any, tmp_path: Path, no_load: None
) -> None:
    t = tiny("sd1")
    wide = save_tensors(tmp_path / "wide.safetensors", {"emb_params": torch.randn(2, 768)})
    out = tmp_path / "o"
    err = _refused(
        run_cli,
        _args(t, out, "--embedding", f"{wide}:zq"),
        out,
        "embedding wide.safetensors does not fit this SD1 model: embedding width 768 fits none "
        "of SD1's text encoders (clip_l 32)",
    )
    assert "{" not in err  # not diffusers' unfilled message template
    xl = tiny("sdxl")
    one = save_tensors(tmp_path / "one.safetensors", {"emb_params": torch.randn(2, 32)})
    request = request_for(xl, xl.folder, embeddings=(_embedding(one, "zq"),))
    with pytest.raises(UsageError, match="SDXL also needs a vector for clip_g"):
        generate(request, tmp_path / "xl")


def _embedding(path: Path, token: str) -> Any:
    from modelsafe.runtime.generate import EmbeddingSpec

    return EmbeddingSpec(path, token)
