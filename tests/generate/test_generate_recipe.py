"""The recipe round-trips through both PNG forms (JSON chunk and the A1111 text block)."""

from __future__ import annotations

from pathlib import Path

from modelsafe.runtime.recipe import (
    ModelRef,
    Recipe,
    parse_parameters,
    png_text_chunks,
    recipe_from_chunks,
    recipe_from_png,
)

RECIPE = Recipe(
    prompt='a "red", cat: on a mat',
    negative_prompt="blurry, low quality",
    seed=4242,
    steps=25,
    cfg=7.5,
    width=512,
    height=768,
    scheduler="dpmpp_2m_karras",
    checkpoint=ModelRef("sd15", "/m/sd15.safetensors", "ab" * 32, "abababab12"),
    family="sd1",
    loras=(ModelRef("style", "/m/style.safetensors", "cd" * 32, "cdcdcdcd34", weight=0.8),),
    vae=ModelRef("vae-ft-mse", "/m/vae.safetensors", "ef" * 32, "efefefef56"),
    embeddings=(
        ModelRef("easyneg", "/m/en.safetensors", "01" * 32, "0101010101", token="easyneg"),
    ),
    modelsafe_version="0.1.0",
)


def test_json_chunk_round_trips_exactly() -> None:
    assert recipe_from_chunks(png_text_chunks(RECIPE)) == RECIPE


def test_a1111_block_reads_back_the_settings() -> None:
    text = png_text_chunks(RECIPE)["parameters"]
    assert "Steps: 25, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.5, Seed: 4242" in text
    assert "Model hash: abababab12" in text and "<lora:style:0.8>" in text
    back = recipe_from_chunks({"parameters": text})
    assert back is not None
    assert (back.prompt, back.negative_prompt) == (RECIPE.prompt, RECIPE.negative_prompt)
    assert (back.seed, back.steps, back.cfg, back.width, back.height) == (4242, 25, 7.5, 512, 768)
    assert back.scheduler == "dpmpp_2m_karras"
    assert back.checkpoint.autov2 == "abababab12"
    assert [(lo.name, lo.weight, lo.autov2) for lo in back.loras] == [
        ("style", 0.8, "cdcdcdcdcdcd")
    ]
    assert back.vae is not None and back.vae.autov2 == "efefefef56"


def test_reads_an_a1111_written_block() -> None:
    text = (
        "masterpiece, castle <lora:detail:0.6>\nNegative prompt: ugly\n"
        "Steps: 30, Sampler: Euler a, CFG scale: 6, Seed: 123, Size: 640x448, "
        'Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Lora hashes: "detail: 0123456789ab", '
        "Version: v1.10.1"
    )
    parsed = parse_parameters(text)
    assert parsed["prompt"] == "masterpiece, castle"
    assert parsed["loras"] == [("detail", 0.6)]
    back = recipe_from_chunks({"parameters": text})
    assert back is not None and back.scheduler == "euler_a" and back.width == 640


def test_png_carries_both_chunks(tmp_path: Path) -> None:
    from PIL import Image

    from modelsafe.runtime.generate import save_png

    image = Image.new("RGB", (8, 8))
    image.info.update(png_text_chunks(RECIPE))
    save_png(image, tmp_path / "x.png")
    with Image.open(tmp_path / "x.png") as back:
        assert set(back.text) >= {"parameters", "modelsafe"}  # type: ignore[attr-defined]
    assert recipe_from_png(tmp_path / "x.png") == RECIPE
