"""`generate --from-image` on images other tools made, hostile ones, and modelsafe's own
``parameters`` text alone: each setting is reproduced, or refused by name (exit 2), never
dropped; what cannot be matched exactly is a warning; nothing in an image crashes the reader or
makes it decode pixels."""

from __future__ import annotations

import json
import re
import shutil
import struct
import zlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from modelsafe.errors import UsageError
from modelsafe.runtime.generate import collect_warnings, known_hashes, request_from_recipe
from modelsafe.runtime.image_text import image_size
from modelsafe.runtime.recipe import (
    ModelRef,
    Recipe,
    RecipeReadError,
    UnreproducibleError,
    png_text_chunks,
    recipe_from_chunks,
    recipe_from_parameters,
    recipe_from_png,
    scheduler_from_sampler,
)
from modelsafe.testing.tiny_models import Tiny

BASE = "Steps: 2, Sampler: Euler, CFG scale: 7, Seed: 42, Size: 64x64, Model hash: 93f424e738"
A1111 = f"a lighthouse\n{BASE}, Model: sd1, Version: v1.10.1"


def _png(path: Path, text: dict[str, str], size: tuple[int, int] = (8, 8)) -> Path:
    info = PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    Image.new("RGB", size).save(path, pnginfo=info)
    return path


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _raw_png(path: Path, width: int, height: int, *chunks: bytes) -> Path:
    """A PNG written chunk by chunk: any header size, any text chunks, 8x8 pixels of data."""
    header = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    pixels = _chunk(b"IDAT", zlib.compress(b"\0" * (8 * 25)))
    body = b"".join(chunks)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + header + body + pixels + _chunk(b"IEND", b""))
    return path


def _recipe(**changes: Any) -> Recipe:
    fields: dict[str, Any] = {
        "prompt": "a lighthouse",
        "seed": 1,
        "steps": 2,
        "cfg": 7.0,
        "width": 64,
        "height": 64,
        "scheduler": "euler",
        "checkpoint": ModelRef("sd1"),
    }
    return Recipe(**{**fields, **changes})


# -- settings modelsafe cannot apply: refused by name -------------------------------------------


@pytest.mark.parametrize(
    ("fields", "named", "why"),
    [
        (
            "Denoising strength: 0.5, Hires upscale: 2, Hires steps: 2",
            "Hires upscale: 2, Hires steps: 2",
            "hires fix",
        ),
        ("Denoising strength: 0.45", "Denoising strength: 0.45", "img2img"),
        ("ADetailer model: face_yolov8n.pt", "ADetailer model: face_yolov8n.pt", "ADetailer"),
        ("Variation seed: 123, Variation seed strength: 0.3", "Variation seed: 123", "variation"),
        ("Token merging ratio: 0.5", "Token merging ratio: 0.5", "not a setting modelsafe knows"),
    ],
)
def test_settings_modelsafe_cannot_apply_are_refused_by_name(
    fields: str, named: str, why: str
) -> None:
    settings = BASE if "CFG scale" not in fields else BASE.replace("CFG scale: 7, ", "")
    text = f"a lighthouse\n{settings}, {fields}"
    with pytest.raises(UnreproducibleError) as info:
        recipe_from_parameters(text)
    assert named in info.value.reason and why in info.value.reason
    assert "do not skip them" in info.value.hint


@pytest.mark.parametrize(
    ("tag", "why"),
    [
        ("<lora:style:0.8:0.2>", "own text-encoder and UNet weights"),
        ("<lora:style:te=1:unet=0.5>", "own text-encoder and UNet weights"),
        ("<hypernet:anime:0.5>", "hypernetwork"),
        ("<wildnet:thing:1>", "extra network"),
    ],
)
def test_extra_network_tags_modelsafe_cannot_apply_are_refused(tag: str, why: str) -> None:
    with pytest.raises(UnreproducibleError, match=why) as info:
        recipe_from_parameters(f"a lighthouse {tag}\n{BASE}")
    assert tag in info.value.reason


def test_lora_tags_as_a1111_applies_them() -> None:
    text = (
        "a lighthouse <lora:plain> <lyco:locon:0.8> <lora:same:0.5:0.5> <lora:named:te=0.25>\n"
        f'{BASE}, Lora hashes: "plain: 0123456789, locon: abcdef0123"'
    )
    recipe = recipe_from_parameters(text)
    assert recipe.prompt == "a lighthouse"
    assert [(lo.name, lo.weight, lo.autov2) for lo in recipe.loras] == [
        ("plain", 1.0, "0123456789"),
        ("locon", 0.8, "abcdef0123"),
        ("same", 0.5, None),
        ("named", 0.25, None),
    ]


def test_fields_that_leave_the_pixels_alone_are_read_or_ignored() -> None:
    text = (
        f"a lighthouse\n{BASE}, Model: sd1, Clip skip: 1, Created Date: 2024-09-01, "
        'Emphasis: Original, Hashes: {"model": "93f424e738"}, Version: v1.10.1'
    )
    recipe = recipe_from_parameters(text)
    assert (recipe.seed, recipe.steps, recipe.checkpoint.autov2) == (42, 2, "93f424e738")


def test_civitai_resources_name_the_models() -> None:
    resources = [
        {"type": "checkpoint", "modelName": "DreamShaper", "modelVersionName": "8"},
        {"type": "lora", "weight": 0.8, "modelName": "Detail Tweaker", "hash": "0123456789"},
        {"type": "embed", "modelName": "EasyNegative"},
    ]
    text = (
        "a lighthouse\nNegative prompt: EasyNegative\nSteps: 2, Sampler: Euler a, CFG scale: 7, "
        f"Seed: 42, Size: 64x64, Civitai resources: {json.dumps(resources)}, "
        'Civitai metadata: {"remixOfId": 1}'
    )
    recipe = recipe_from_parameters(text)
    assert recipe.checkpoint.name == "DreamShaper 8"
    assert [(lo.name, lo.weight, lo.autov2) for lo in recipe.loras] == [
        ("Detail Tweaker", 0.8, "0123456789")
    ]
    assert [e.token for e in recipe.embeddings] == ["EasyNegative"]
    assert recipe.warnings and "Civitai" in recipe.warnings[0]
    # not on this machine: named, with the flag that gives it (not dropped)
    with pytest.raises(UsageError, match="LoRA 'Detail Tweaker'") as info:
        request_from_recipe(recipe, None, overridden={"checkpoint"})
    assert "--lora" in info.value.hint


# -- modelsafe's own parameters text reads back whole ------------------------------------------


def test_own_parameters_text_reads_back_every_setting() -> None:
    recipe = _recipe(
        seed=5,
        cfg=7.123456789,
        width=32,
        height=32,
        scheduler="dpmpp_2m_karras",
        checkpoint=ModelRef("sd1", autov2="93f424e738"),
        family="sd1",
        loras=(ModelRef("my style, v2", autov2="0b2c93898e", weight=0.333333333),),
        controlnet=ModelRef("canny", autov2="d14c016b00"),
        control_scale=0.55,
        refiner=ModelRef("refiner", autov2="7440042bbd"),
        refiner_switch=0.7,
        upscaler=ModelRef("4x-tiny", autov2="2a669e13e7"),
        upscale_scale=4,
        modelsafe_version="0.1.0",
    )
    text = recipe.to_parameters()
    assert "CFG scale: 7.123456789" in text and "<lora:my style, v2:0.333333333>" in text
    assert '"my style v2: 0b2c93898e"' in text  # A1111's parser splits names on , and :
    back = recipe_from_parameters(text)
    assert back.cfg == recipe.cfg and back.warnings == ()
    assert [(lo.name, lo.weight, lo.autov2) for lo in back.loras] == [
        ("my style, v2", 0.333333333, "0b2c93898e")
    ]
    assert (back.controlnet, back.control_scale) == (ModelRef("canny", autov2="d14c016b00"), 0.55)
    assert (back.refiner, back.refiner_switch) == (recipe.refiner, 0.7)
    assert (back.upscaler, back.upscale_scale) == (recipe.upscaler, 4)
    assert back.scheduler == "dpmpp_2m_karras"


def test_flux_guidance_is_written_and_read_as_forge_does() -> None:
    recipe = _recipe(
        prompt="a cat",
        seed=3,
        cfg=3.5,
        scheduler="flow_euler",
        checkpoint=ModelRef("flux", autov2="d0f1fa62fd"),
        family="flux1",
    )
    text = recipe.to_parameters()
    assert "CFG scale: 1, Distilled CFG Scale: 3.5" in text
    assert recipe_from_parameters(text).cfg == 3.5
    forge = (
        "a cat\nSteps: 2, Sampler: Euler, Schedule type: Simple, CFG scale: 1, "
        "Distilled CFG Scale: 2.5, Seed: 3, Size: 64x64, Model hash: d0f1fa62fd, "
        "Version: f2.0.1v1.10.1"
    )
    back = recipe_from_parameters(forge)
    assert (back.cfg, back.scheduler, back.true_cfg) == (2.5, "flow_euler", 1.0)
    # Forge's Flux with real CFG (CFG scale above 1 beside its distilled guidance) is Flux.1
    # with --true-cfg: it was refused as a setting modelsafe cannot apply
    real = recipe_from_parameters(forge.replace("CFG scale: 1,", "CFG scale: 3,"))
    assert (real.cfg, real.true_cfg) == (2.5, 3.0)
    again = recipe_from_parameters(replace(recipe, true_cfg=3.5).to_parameters())
    assert (again.cfg, again.true_cfg) == (3.5, 3.5)


# -- settings the image leaves open: refused unless given --------------------------------------


def test_an_image_without_its_seed_is_refused_unless_a_seed_is_given() -> None:
    for text in (A1111.replace("Seed: 42", "Seed: -1"), A1111.replace("Seed: 42, ", "")):
        recipe = recipe_from_parameters(text)
        with pytest.raises(UsageError, match="does not record its seed") as info:
            request_from_recipe(recipe, None, overridden={"checkpoint"})
        assert "--seed N" in info.value.hint
        assert request_from_recipe(recipe, None, overridden={"checkpoint", "seed"}).seed is None


@pytest.mark.parametrize(
    ("sampler", "schedule", "ident"),
    [
        ("Euler", "", "euler"),
        ("Euler a", "Automatic", "euler_a"),
        ("DDIM", "Uniform", "ddim"),
        ("DPM++ 2M", "Karras", "dpmpp_2m_karras"),
        ("DPM++ 2M Karras", "", "dpmpp_2m_karras"),
        ("Euler", "Simple", "flow_euler"),
        ("DPM++ 2M", "Exponential", ""),
        ("DPM++ 2M", "Align Your Steps", ""),
        ("Euler", "Karras", ""),
        ("DPM++ SDE", "", ""),
        ("DPM++ 2M SDE", "Karras", ""),
    ],
)
def test_a1111_samplers_map_exactly_or_not_at_all(sampler: str, schedule: str, ident: str) -> None:
    assert scheduler_from_sampler(sampler, schedule) == ident


def test_a_sampler_the_backend_lacks_is_named_and_can_be_overridden() -> None:
    text = A1111.replace("Sampler: Euler", "Sampler: DPM++ 2M SDE, Schedule type: Karras")
    recipe = recipe_from_parameters(text)
    with pytest.raises(
        UsageError, match=re.escape("A1111's 'DPM++ 2M SDE, Schedule type: Karras'")
    ) as info:
        request_from_recipe(recipe, None, overridden={"checkpoint"})
    assert "--scheduler NAME" in info.value.hint and "dpmpp_2m_karras" in info.value.hint
    request = request_from_recipe(recipe, None, overridden={"checkpoint", "scheduler"})
    assert request.scheduler is None


# -- warnings: another tool's image, its prompt syntax, long prompts -----------------------------


def test_foreign_prompt_syntax_and_length_are_warnings_cut_short() -> None:
    long_prompt = "a (lighthouse:1.4), [fog] BREAK sunset " + "word " * 3000
    recipe = recipe_from_parameters(f"{long_prompt}\n{BASE}, Version: v1.10.1")
    said = "\n".join(recipe.warnings)
    assert "made by A1111 (v1.10.1)" in said
    assert "A1111 prompt syntax ( ) : [ ] BREAK" in said or "prompt syntax" in said
    assert "CLIP tokens long" in said
    assert all(len(w) < 400 for w in recipe.warnings)  # never the prompt itself
    with collect_warnings(None) as found:
        request_from_recipe(recipe, None, overridden={"checkpoint"})
    assert found == list(recipe.warnings)


def test_json_recipe_and_edited_parameters_text_disagree_with_a_warning() -> None:
    recipe = _recipe()
    chunks = png_text_chunks(recipe)
    assert recipe_from_chunks(chunks) == recipe
    assert recipe_from_chunks(chunks).warnings == ()  # type: ignore[union-attr]
    edited = {**chunks, "parameters": chunks["parameters"].replace("a lighthouse", "a cat")}
    back = recipe_from_chunks(edited)
    assert back is not None and "another prompt" in back.warnings[0]


# -- malformed and hostile images: exit 2, no pixel decoded -------------------------------------


def _good_json() -> dict[str, Any]:
    recipe = _recipe(prompt="p", loras=(ModelRef("style", weight=0.8),))
    return recipe.to_json()


@pytest.mark.parametrize(
    ("edit", "said"),
    [
        ([1, 2], "holds [1, 2], not a JSON object"),
        (None, "holds None, not a JSON object"),
        ({"plan": "fast"}, "plan is 'fast'"),
        ({"plan": {"settings": [1, 2]}}, "plan.settings is [1, 2]"),
        ({"plan": {"settings": {"device": "tpu"}}}, "plan.settings.device is 'tpu'"),
        ({"extra": [1]}, "extra is [1]"),
        ({"extra": {"modules": 5}}, "extra.modules is 5"),
        ({"extra": {"modules": "abc"}}, "extra.modules is 'abc'"),
        ({"extra": {"sampler": ["x"]}}, "extra.sampler is ['x']"),
        ({"loras": [{"name": "style", "weight": "0.8"}]}, "loras[0].weight is '0.8'"),
        ({"device": "tpu"}, "device is 'tpu'"),
        ({"prediction_type": "x0"}, "prediction_type is 'x0'"),
        ({"prompt": 123}, "prompt is 123"),
        ({"variant": ["x"]}, "variant is ['x']"),
        ({"checkpoint": "sd1"}, "checkpoint is 'sd1'"),
    ],
)
def test_malformed_json_recipes_are_unreadable_not_crashes(
    tmp_path: Path, edit: Any, said: str
) -> None:
    data = {**_good_json(), **edit} if isinstance(edit, dict) else edit
    image = _png(tmp_path / "x.png", {"modelsafe": json.dumps(data)})
    with pytest.raises(UsageError, match="cannot read the recipe in") as info:
        recipe_from_png(image)
    assert said in info.value.reason and info.value.hint


def test_hostile_pngs_are_refused_with_exit_2(run_cli: Any, tmp_path: Path) -> None:
    bomb = zlib.compress(b"A" * (40 * 2**20), 9)
    deep = "[" * 200_000 + "]" * 200_000
    images = {
        "ztxt": _raw_png(tmp_path / "z.png", 8, 8, _chunk(b"zTXt", b"parameters\0\0" + bomb)),
        "itxt": _raw_png(tmp_path / "i.png", 8, 8, _chunk(b"iTXt", b"parameters\0\1\0\0\0" + bomb)),
        "deep": _png(tmp_path / "d.png", {"modelsafe": deep}),
        "bigint": _png(tmp_path / "b.png", {"parameters": A1111.replace("42", "9" * 5000)}),
        "badcrc": _raw_png(
            tmp_path / "c.png",
            8,
            8,
            _chunk(b"tEXt", b"parameters\0" + A1111.encode())[:-4] + b"\0\0\0\0",
        ),
    }
    for name, image in images.items():
        code, _out, err = run_cli("generate", "--from-image", str(image), "--out", str(tmp_path))
        assert code == 2, (name, err)
        assert f"cannot read the recipe in {image}" in err, (name, err)
        assert "Traceback" not in err and len(err) < 2000


def test_text_chunks_are_read_without_decoding_pixels(tmp_path: Path) -> None:
    many = [
        _chunk(b"zTXt", f"k{i}".encode() + b"\0\0" + zlib.compress(b"B" * 2**20)) for i in range(80)
    ]
    text = _chunk(b"tEXt", b"parameters\0" + A1111.encode())
    huge = _raw_png(tmp_path / "huge.png", 20000, 20000, text, *many)  # Pillow: a bomb
    assert recipe_from_png(huge).seed == 42
    assert image_size(huge) == (20000, 20000)  # for comparing with the new image
    after = _raw_png(tmp_path / "after.png", 8, 8)  # text after the image data
    data = after.read_bytes()
    after.write_bytes(data[:-12] + text + data[-12:])
    assert recipe_from_png(after).steps == 2


@pytest.mark.parametrize(("fmt", "encoding"), [("JPEG", "utf-16-be"), ("WEBP", "utf-16-le")])
def test_jpeg_and_webp_recipes_in_exif_user_comment(
    tmp_path: Path, fmt: str, encoding: str
) -> None:
    exif = Image.Exif()
    text = f"a lighthouse\nNegative prompt: blurry\n{BASE}, Model: sd1, Version: v1.10.1"
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\0" + text.encode(encoding)
    path = tmp_path / f"x.{fmt.lower()}"
    Image.new("RGB", (16, 16)).save(path, format=fmt, exif=exif.tobytes())
    recipe = recipe_from_png(path)
    assert (recipe.prompt, recipe.negative_prompt, recipe.seed) == ("a lighthouse", "blurry", 42)


@pytest.mark.parametrize(
    "comment",
    [b"\xff\xfeA\x00B", b"\xff\xfe\x00\xd8\x41\x00"],  # odd length; lone surrogate
)
def test_a_damaged_exif_user_comment_is_no_crash(
    tmp_path: Path, run_cli: Any, comment: bytes
) -> None:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\0" + comment
    path = tmp_path / "x.jpg"
    Image.new("RGB", (16, 16)).save(path, format="JPEG", exif=exif.tobytes())
    code, _, err = run_cli("generate", "--from-image", str(path), "--out", str(tmp_path / "o"))
    assert code == 2 and "Traceback" not in err and "unexpected" not in err


@pytest.mark.parametrize(
    ("chunks", "tool"),
    [
        ({"prompt": "{}", "workflow": "{}"}, "ComfyUI"),
        ({"invokeai_metadata": "{}"}, "InvokeAI"),
        ({"Software": "NovelAI", "Comment": '{"prompt": "a cat"}'}, "NovelAI"),
        ({"parameters": json.dumps({"sui_image_params": {"seed": 5}})}, "SwarmUI"),
        ({"parameters": json.dumps({"prompt": "a", "version": "Fooocus v2.3.1"})}, "Fooocus"),
    ],
)
def test_other_tools_images_are_named(tmp_path: Path, chunks: dict[str, str], tool: str) -> None:
    with pytest.raises(RecipeReadError, match=f"made by {tool}"):
        recipe_from_chunks(chunks)


def test_a1111_reads_lines_stripped() -> None:
    recipe = recipe_from_parameters(f"  a lighthouse \n Negative prompt: blurry\n{BASE}")
    assert (recipe.prompt, recipe.negative_prompt) == ("a lighthouse", "blurry")


# -- models found by hash: checked, ambiguous, stale --------------------------------------------


def test_a_file_at_the_recipe_path_with_another_autov2_is_refused(
    tiny: Callable[[str], Tiny],
) -> None:
    t = tiny("sd1")
    recipe = _recipe(prompt="p", checkpoint=ModelRef("sd1", str(t.single), autov2="0000000000"))
    with pytest.raises(UsageError, match="changed since the image was made .AutoV2"):
        request_from_recipe(recipe)


def test_catalog_lookups_refuse_ambiguous_and_stale_copies(
    tiny: Callable[[str], Tiny], tmp_path: Path
) -> None:
    import torch
    from safetensors.torch import save_file

    from modelsafe.registry.catalog import open_catalog
    from modelsafe.registry.scan import scan

    t = tiny("sd1")
    models = tmp_path / "models"
    models.mkdir()
    checkpoint = models / "ckpt.safetensors"
    shutil.copyfile(t.single, checkpoint)
    for name in ("a", "b"):  # small files: their old A1111 hash (AutoV1) is sha256 of nothing
        save_file({name: torch.zeros(4)}, str(models / f"{name}.safetensors"))
    catalog = open_catalog(f"sqlite:///{tmp_path / 'c.db'}")
    scan(catalog, [models], jobs=1)
    autov2 = str(known_hashes(checkpoint, None)["autov2"])
    recipe = _recipe(
        prompt="p",
        checkpoint=ModelRef("x", autov2=autov2),
        loras=(ModelRef("style", autov2="e3b0c442", weight=1.0),),
    )
    with pytest.raises(UsageError, match="LoRA 'style' cannot be told by its hash") as info:
        request_from_recipe(recipe, catalog)
    assert "a (" in info.value.reason and "b (" in info.value.reason
    assert "--lora" in info.value.hint
    recipe = replace(recipe, loras=())
    assert request_from_recipe(recipe, catalog).checkpoint == checkpoint
    data = bytearray(checkpoint.read_bytes())
    data[-1] ^= 1  # the catalog's copy now holds other bytes
    checkpoint.write_bytes(bytes(data))
    with pytest.raises(UsageError, match="changed since it was scanned .sha256 now") as info:
        request_from_recipe(recipe, catalog)
    assert "modelsafe scan" in info.value.hint
    catalog.close()


# -- end to end: modelsafe's upscaled PNG with its parameters text alone ------------------------


def test_own_upscaled_image_with_only_its_parameters_text_reproduces(
    tiny: Callable[[str], Tiny], run_cli: Any, tmp_path: Path
) -> None:
    from modelsafe.testing.tiny_upscalers import old_style, save, tiny_rrdbnet_state

    t = tiny("sd1")
    up = tmp_path / "up"
    up.mkdir()
    save(old_style(tiny_rrdbnet_state()), up / "4x-tiny.safetensors")
    db = str(tmp_path / "c.db")
    assert run_cli("--catalog", db, "scan", str(up))[0] == 0
    common = [
        "--family", "sd1", "--config-dir", str(t.configs), "--tokenizers", str(t.tokenizers),
    ]  # fmt: skip
    code, out, err = run_cli(
        "--catalog", db, "generate", "--checkpoint", str(t.single), *common,
        "--prompt", "a cat", "--seed", "3", "--steps", "2", "--width", "32", "--height", "32",
        "--upscale", str(up / "4x-tiny.safetensors"), "--out", str(tmp_path / "a"), "--json",
    )  # fmt: skip
    assert code == 0, err
    first = Path(json.loads(out)["images"][0]["path"])
    only = tmp_path / "only.png"
    with Image.open(first) as image:
        info = PngInfo()
        info.add_text("parameters", image.text["parameters"])  # type: ignore[attr-defined]
        image.save(only, pnginfo=info)
    code, out, err = run_cli(
        "--catalog", db, "generate", "--from-image", str(only), "--checkpoint", str(t.single),
        *common, "--out", str(tmp_path / "b"), "--json",
    )  # fmt: skip
    assert code == 0, err
    again = json.loads(out)
    assert again["images"][0]["recipe"]["upscaler"]["name"] == "4x-tiny"
    assert again["reproduces"]["identical_pixels"] is True


def test_a_foreign_image_runs_with_its_open_settings_filled_by_flags_and_says_so(
    tiny: Callable[[str], Tiny], run_cli: Any, tmp_path: Path
) -> None:
    """An A1111 image without its seed runs with --seed (the flag fills what it leaves open);
    what reading it warned of reaches --json, and a size that differs is named as such."""
    t = tiny("sd1")
    text = "a lighthouse\nSteps: 1, Sampler: Euler, CFG scale: 7, Size: 64x64, Version: v1.10.1"
    old = _png(tmp_path / "a1111.png", {"parameters": text}, size=(64, 64))
    args = [
        "generate", "--from-image", str(old), "--checkpoint", str(t.single), "--family", "sd1",
        "--config-dir", str(t.configs), "--tokenizers", str(t.tokenizers),
        "--out", str(tmp_path / "out"), "--json",
    ]  # fmt: skip
    code, _, err = run_cli(*args)
    assert code == 2 and "seed" in err.lower()
    code, out, err = run_cli(*args, "--seed", "7", "--width", "32", "--height", "32")
    assert code == 0, err
    result = json.loads(out)
    assert result["images"][0]["seed"] == 7
    assert any("was made by A1111" in w for w in result["warnings"])
    assert result["reproduces"]["identical_pixels"] is False
    assert result["reproduces"]["difference"] == "a1111.png is 64x64, the new image is 32x32"


# -- clip skip -------------------------------------------------------------------------------------


def test_clip_skip_changes_an_sd1_image_and_round_trips_through_both_chunks(
    tiny: Callable[[str], Tiny], run_cli: Any, tmp_path: Path
) -> None:
    """A1111's Clip skip 2 (diffusers' clip_skip 1) is applied to SD1, written as `Clip skip: 2`
    and in the JSON recipe, and an image made with it reproduces from either chunk."""
    t = tiny("sd1")
    common = [
        "generate", "--checkpoint", str(t.single), "--family", "sd1",
        "--config-dir", str(t.configs), "--tokenizers", str(t.tokenizers), "--prompt", "a cat",
        "--seed", "5", "--steps", "2", "--width", "32", "--height", "32", "--json",
    ]  # fmt: skip
    runs = {}
    for skip in ("1", "2"):
        code, out, err = run_cli(*common, "--clip-skip", skip, "--out", str(tmp_path / skip))
        assert code == 0, err
        runs[skip] = json.loads(out)["images"][0]
    with Image.open(runs["1"]["path"]) as a, Image.open(runs["2"]["path"]) as b:
        assert a.tobytes() != b.tobytes()  # the prompt read from another layer
    assert runs["2"]["recipe"]["clip_skip"] == 2
    made = Path(runs["2"]["path"])
    with Image.open(made) as image:
        text = image.text["parameters"]  # type: ignore[attr-defined]
    assert ", Clip skip: 2," in text
    assert "Clip skip" not in Image.open(Path(runs["1"]["path"])).text["parameters"]  # type: ignore[attr-defined]
    only = _png(tmp_path / "only.png", {"parameters": text}, size=(32, 32))
    for source in (made, only):
        code, out, err = run_cli(
            "generate", "--from-image", str(source), "--checkpoint", str(t.single),
            "--family", "sd1", "--config-dir", str(t.configs), "--tokenizers", str(t.tokenizers),
            "--out", str(tmp_path / f"again-{source.stem}"), "--json",
        )  # fmt: skip
        assert code == 0, err
        again = json.loads(out)
        assert again["images"][0]["recipe"]["clip_skip"] == 2
        with Image.open(again["images"][0]["path"]) as a, Image.open(made) as b:
            assert a.tobytes() == b.tobytes()  # the same pixels (the files' texts differ)


def test_clip_skip_is_left_out_with_a_warning_where_a1111_leaves_it_out(
    tiny: Callable[[str], Tiny], tmp_path: Path
) -> None:
    from test_generate_families import request_for

    from modelsafe.runtime.generate import generate

    t = tiny("sdxl")
    result = generate(request_for(t, t.single, clip_skip=2), tmp_path / "x")
    assert result.images[0].recipe.clip_skip == 1
    assert any("clip skip 2 is not applied to sdxl" in w for w in result.warnings)


def test_clip_skip_out_of_range_is_refused() -> None:
    from modelsafe.runtime.generate import GenerateRequest, check_numbers

    with pytest.raises(UsageError, match="--clip-skip 0: 1"):
        check_numbers(GenerateRequest(checkpoint=Path("x"), prompt="p", clip_skip=0))
    parsed = recipe_from_parameters(f"a lighthouse\n{BASE}, Clip skip: 2, Version: v1.10.1")
    assert parsed.clip_skip == 2
