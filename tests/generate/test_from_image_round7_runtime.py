"""`generate --from-image`, round 7: the sampler an A1111 "Euler" means, one LoRA file named twice,
a damaged or lossy old image, a changed model folder, extra-network tags typed into --prompt, and
an intact second catalog copy. Tiny real models, on CPU."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from test_generate_families import request_for

from modelsafe.errors import UsageError
from modelsafe.runtime.generate import (
    GenerateRequest,
    collect_warnings,
    generate,
    known_hashes,
    request_from_recipe,
    with_defaults,
)
from modelsafe.runtime.recipe import Recipe, recipe_from_parameters, recipe_from_png
from modelsafe.testing.ldm_layout import unet_to_ldm
from modelsafe.testing.tiny_models import Tiny, save_tensors

FORGE_EULER = (
    "a lighthouse\nSteps: 2, Sampler: Euler, Schedule type: Automatic, CFG scale: 3, Seed: 7, "
    "Size: 32x32, Version: f2.0.1"
)


def _scan(tmp_path: Path, *folders: Path) -> Any:
    from modelsafe.registry.catalog import open_catalog
    from modelsafe.registry.scan import scan

    catalog = open_catalog(f"sqlite:///{tmp_path / 'c.db'}")
    scan(catalog, list(folders), jobs=1)
    return catalog


def _from_text(text: str, checkpoint: Path, **changes: Any) -> GenerateRequest:
    """What `--from-image` of an image with this parameters text makes, with --checkpoint."""
    with collect_warnings(None):
        base = request_from_recipe(recipe_from_parameters(text), overridden={"checkpoint"})
    return replace(base, checkpoint=checkpoint, **changes)


# -- 1. A1111's "Euler" is Euler where the family has it, flow_euler on flow models --------------


def _playground(sdxl: Tiny, path: Path) -> Path:
    """The tiny SDXL UNet in ComfyUI's layout with Playground v2.5's EDM marker tensors."""
    state = sdxl.pipe.unet.state_dict()
    plain = {k: v for k, v in state.items() if not k.startswith("add_embedding.")}
    ldm = unet_to_ldm(SimpleNamespace(config=sdxl.pipe.unet.config, state_dict=lambda: plain))
    for number, index in ((1, 0), (2, 2)):
        for kind in ("weight", "bias"):
            ldm[f"model.diffusion_model.label_emb.0.{index}.{kind}"] = state[
                f"add_embedding.linear_{number}.{kind}"
            ]
    markers = {"edm_mean": torch.zeros(1, 4, 1, 1), "edm_std": torch.ones(1, 4, 1, 1)}
    return save_tensors(path, {**ldm, **markers})


def test_a1111_euler_on_playground_runs_edm_euler_not_the_family_default(
    tiny: Callable[[str], Tiny], tmp_path: Path
) -> None:
    from modelsafe.plugins.builtin.backend_diffusers import build_pipelines

    sdxl = tiny("sdxl")
    path = _playground(sdxl, tmp_path / "playground.safetensors")
    wanted = request_for(sdxl, path)
    request = _from_text(
        FORGE_EULER,
        path,
        family="sdxl",  # (--family: the tiny model is too small for the detectors)
        tokenizers=wanted.tokenizers,
        config_dir=wanted.config_dir,
        vae=wanted.vae,
        text_encoders=wanted.text_encoders,
    )
    with collect_warnings(None):
        filled = with_defaults(request)
    assert (filled.variant, filled.scheduler) == ("playground-v2.5", "euler")
    pipe, _ = build_pipelines(filled)
    assert type(pipe.scheduler).__name__ == "EDMEulerScheduler"


def test_a1111_euler_is_flow_euler_on_flux_and_a_given_scheduler_is_kept(
    tiny: Callable[[str], Tiny],
) -> None:
    sd1, flux = tiny("sd1"), tiny("flux1")
    with collect_warnings(None):
        on_sd1 = _from_text(FORGE_EULER, sd1.single, family="sd1", config_dir=sd1.configs)
        assert with_defaults(on_sd1).scheduler == "euler"
        assert with_defaults(_from_text(FORGE_EULER, flux.folder)).scheduler == "flow_euler"
        given = request_from_recipe(
            recipe_from_parameters(FORGE_EULER), overridden={"checkpoint", "scheduler"}
        )
    # --scheduler euler on a flow model is the user's choice: left for the backend to refuse
    assert with_defaults(replace(given, checkpoint=flux.folder, scheduler="euler")).scheduler == (
        "euler"
    )


# -- 2. one LoRA file named twice ------------------------------------------------------------


@pytest.fixture
def loras(tmp_path: Path) -> tuple[Any, str]:
    """A catalog of one LoRA file (kohya keys) and its AutoV2."""
    folder = tmp_path / "loras"
    folder.mkdir()
    style = folder / "style.safetensors"
    save_file(
        {
            "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.ones(2, 8),
            "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.ones(8, 2),
        },
        str(style),
    )
    return _scan(tmp_path, folder), str(known_hashes(style, None)["autov2"])


def test_a_civitai_resource_for_a_tags_file_is_that_lora_once(
    loras: tuple[Any, str], tiny: Callable[[str], Tiny]
) -> None:
    catalog, autov2 = loras
    resources = json.dumps([{"type": "lora", "modelName": "Style", "hash": autov2, "weight": 1}])
    text = (
        f"a lighthouse <lora:style:0.8>\nSteps: 2, Sampler: Euler, CFG scale: 7, Seed: 7, "
        f'Size: 32x32, Lora hashes: "style: {autov2}", Civitai resources: {resources}'
    )
    with collect_warnings(None) as warned:
        request = request_from_recipe(
            recipe_from_parameters(text), catalog, overridden={"checkpoint"}
        )
    assert [(lo.path.name, lo.weight) for lo in request.loras] == [("style.safetensors", 0.8)]
    assert any("applied once, with weight 0.8" in w for w in warned)
    catalog.close()


def test_two_tags_of_one_lora_are_refused_by_name(loras: tuple[Any, str]) -> None:
    catalog, autov2 = loras
    text = (
        "a lighthouse <lora:style:0.5> <lora:style:0.5>\nSteps: 2, Sampler: Euler, CFG scale: 7, "
        f'Seed: 7, Size: 32x32, Lora hashes: "style: {autov2}"'
    )
    with collect_warnings(None), pytest.raises(UsageError, match="'style' twice") as info:
        request_from_recipe(recipe_from_parameters(text), catalog, overridden={"checkpoint"})
    assert "--lora PATH:WEIGHT" in str(info.value.hint) and ":1 " in str(info.value.hint)
    catalog.close()


# -- 3 and 7. the old image: damaged, or lossy -------------------------------------------------


def _made(t: Tiny, run_cli: Any, out: Path) -> tuple[Path, list[str]]:
    """An sd1 image made by modelsafe, and the flags that make it again."""
    common = [
        "--checkpoint", str(t.single), "--family", "sd1", "--config-dir", str(t.configs),
        "--tokenizers", str(t.tokenizers),
    ]  # fmt: skip
    code, out_text, err = run_cli(
        "generate", *common, "--prompt", "a cat", "--seed", "3", "--steps", "2",
        "--width", "32", "--height", "32", "--out", str(out), "--json",
    )  # fmt: skip
    assert code == 0, err
    return Path(json.loads(out_text)["images"][0]["path"]), common


def test_a_damaged_old_image_is_said_after_the_new_one_is_made(
    tiny: Callable[[str], Tiny], run_cli: Any, tmp_path: Path
) -> None:
    first, common = _made(tiny("sd1"), run_cli, tmp_path / "a")
    damaged = tmp_path / "damaged.png"
    data = first.read_bytes()
    damaged.write_bytes(data[: len(data) - 200])  # the pixel data cut short, the recipe kept
    args = ["generate", "--from-image", str(damaged), *common]
    code, out, err = run_cli(*args, "--out", str(tmp_path / "b"), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert Path(result["images"][0]["path"]).is_file()
    assert result["reproduces"]["identical_pixels"] is None
    assert (
        "damaged.png is damaged (image file is truncated" in result["reproduces"]["cannot_compare"]
    )
    code, out, err = run_cli(*args, "--out", str(tmp_path / "c"))
    assert code == 0, err
    assert f"cannot compare pixels: {damaged} is damaged (" in out


def test_a_jpeg_source_is_said_to_be_lossy_not_another_device(
    tiny: Callable[[str], Tiny], run_cli: Any, tmp_path: Path
) -> None:
    first, common = _made(tiny("sd1"), run_cli, tmp_path / "a")
    with Image.open(first) as image:
        exif = Image.Exif()
        text = image.text["parameters"]  # type: ignore[attr-defined]
        exif.get_ifd(0x8769)[0x9286] = b"UNICODE\0" + text.encode("utf-16-be")
        jpeg = tmp_path / "old.jpg"
        image.convert("RGB").save(jpeg, format="JPEG", quality=90, exif=exif.tobytes())
    code, out, err = run_cli(
        "generate", "--from-image", str(jpeg), *common, "--out", str(tmp_path / "b"), "--json"
    )
    assert code == 0, err
    said = json.loads(out)["reproduces"]
    assert said["identical_pixels"] is False and said["lossy"] == "JPEG"
    assert said["difference"].startswith("the old image is lossy JPEG")
    assert "mean difference" in said["difference"] and "device" not in said["difference"]


def test_webp_is_lossy_by_its_image_chunk(tmp_path: Path) -> None:
    from modelsafe.runtime.image_text import lossy_format

    image = Image.new("RGBA", (16, 16), (10, 200, 30, 128))
    image.save(tmp_path / "lossy.webp", format="WEBP", quality=80)
    image.save(tmp_path / "lossless.webp", format="WEBP", lossless=True)
    image.save(tmp_path / "plain.png")
    assert lossy_format(tmp_path / "lossy.webp") == "WebP"
    assert lossy_format(tmp_path / "lossless.webp") == ""
    assert lossy_format(tmp_path / "plain.png") == ""


# -- 4. a model folder changed after the image was made ----------------------------------------


def test_a_changed_model_folder_is_refused_and_old_recipes_still_run(
    tiny: Callable[[str], Tiny], tmp_path: Path
) -> None:
    from modelsafe.runtime.generate import folder_identity

    t = tiny("sd1")
    folder = tmp_path / "models" / "sd1-pipeline"
    shutil.copytree(t.folder, folder)
    catalog = _scan(tmp_path, tmp_path / "models")
    assert folder_identity(folder, catalog) == folder_identity(folder, None)  # scan's own id
    made = generate(request_for(t, folder), tmp_path / "out", catalog=catalog).images[0]
    recipe = recipe_from_png(made.path)
    assert recipe.extra["folder_ids"] == {str(folder.resolve()): folder_identity(folder, None)}
    with collect_warnings(None):
        assert request_from_recipe(recipe, catalog).checkpoint == folder
    weights = next((folder / "unet").glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # the UNet's last weight changed
    weights.write_bytes(bytes(data))
    for db in (catalog, None):
        with collect_warnings(None), pytest.raises(UsageError, match="changed since the image"):
            request_from_recipe(recipe, db)
    older = Recipe(**{**vars(recipe), "extra": {}})  # written before recipes kept folder ids
    with collect_warnings(None):
        assert request_from_recipe(older, catalog).checkpoint == folder
    catalog.close()


# -- 5. extra-network tags typed into --prompt -------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "text"),
    [("--prompt", "a cat <lora:style:0.8>"), ("--negative", "blurry <hypernet:x:1>")],
)
def test_extra_network_tags_in_the_prompt_flags_are_refused(
    tiny: Callable[[str], Tiny], run_cli: Any, tmp_path: Path, flag: str, text: str
) -> None:
    t = tiny("sd1")
    prompt = [] if flag == "--prompt" else ["--prompt", "a cat"]
    code, _, err = run_cli(
        "generate", "--checkpoint", str(t.single), "--family", "sd1", "--config-dir",
        str(t.configs), "--tokenizers", str(t.tokenizers), *prompt, flag, text, "--seed", "1",
        "--steps", "1", "--width", "32", "--height", "32", "--out", str(tmp_path / "o"),
    )  # fmt: skip
    assert code == 2, err
    assert f"{flag} holds the extra-network tag" in err
    assert "--lora PATH:WEIGHT" in err
    assert not (tmp_path / "o").exists()


def test_only_extra_network_tags_are_refused_and_job_specs_too() -> None:
    from modelsafe.errors import UsageError
    from modelsafe.runtime.generate import refuse_network_tags
    from modelsafe.runtime.jobs.spec import validate_spec

    # text that merely looks like a tag is a prompt like any other
    for text in (
        "a poster, aspect ratio <16:9>",
        "a sign that reads <note: closed>",
        "<https://x>",
    ):
        refuse_network_tags(text, "--prompt")
    # a job spec (serve, workers) is refused as the flags are: its recipe would claim the LoRA
    for key in ("prompt", "negative_prompt"):
        spec = {"checkpoint": "m.safetensors", "prompt": "a cat", key: "x <lyco:detail:0.5>"}
        with pytest.raises(UsageError, match=f"job spec: '{key}' holds the extra-network tag"):
            validate_spec(spec)


# -- 6. an intact second copy in the catalog ----------------------------------------------------


def test_an_intact_second_catalog_copy_is_used_when_the_first_changed(
    tiny: Callable[[str], Tiny], tmp_path: Path
) -> None:
    t = tiny("sd1")
    copies = [tmp_path / "dup" / name / "tiny.safetensors" for name in ("a", "b")]
    for copy in copies:
        copy.parent.mkdir(parents=True)
        shutil.copyfile(t.single, copy)
    catalog = _scan(tmp_path, tmp_path / "dup")
    autov2 = str(known_hashes(copies[0], None)["autov2"])
    text = (
        f"a cat\nSteps: 2, Sampler: Euler, CFG scale: 7, Seed: 7, Size: 32x32, Model hash: {autov2}"
    )
    recipe = recipe_from_parameters(text)
    with collect_warnings(None):
        assert request_from_recipe(recipe, catalog).checkpoint == copies[0]
    for number, copy in enumerate(copies):
        data = bytearray(copy.read_bytes())
        data[-1] ^= 1
        copy.write_bytes(bytes(data))
        if number == 0:
            with collect_warnings(None) as warned:
                assert request_from_recipe(recipe, catalog).checkpoint == copies[1]
            assert any(f"at {copies[0]} changed" in w and str(copies[1]) in w for w in warned)
    with collect_warnings(None), pytest.raises(UsageError, match="and 1 more of its copies"):
        request_from_recipe(recipe, catalog)
    catalog.close()
