"""--from-image round 7: what reading a recipe must refuse or leave open, and the memory it may
take. LoRA tag options modelsafe cannot apply, a null LoRA weight in a JSON recipe, Euler with
Simple on an image that is not a flow model's, a compressed text chunk whose stream stops early,
text chunks skipped unread (memory measured in a subprocess), a refusal that names the first
settings only, and EXIF read from a JPEG whose header declares a huge size."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from modelsafe.errors import UsageError
from modelsafe.runtime.generate import request_from_recipe
from modelsafe.runtime.recipe import (
    ModelRef,
    Recipe,
    RecipeReadError,
    UnreproducibleError,
    png_text_chunks,
    recipe_from_chunks,
    recipe_from_parameters,
    recipe_from_png,
)

BASE = (
    "Steps: 2, Sampler: Euler a, CFG scale: 7, Seed: 1234567, Size: 64x64, Model hash: 93f424e738"
)
A1111 = f"a lighthouse\n{BASE}, Model: sd1, Version: v1.10.1"


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _raw_png(path: Path, *chunks: bytes, tail: bytes = b"") -> Path:
    """An 8x8 PNG written chunk by chunk, ``chunks`` before its pixels; ``tail`` after IEND's
    place (a chunk whose declared length runs past the bytes written)."""
    header = _chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0))
    pixels = _chunk(b"IDAT", zlib.compress(b"\0" * (8 * 25)))
    end = tail or _chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + header + b"".join(chunks) + pixels + end)
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
        "checkpoint": ModelRef("sd1", autov2="93f424e738"),
    }
    return Recipe(**{**fields, **changes})


# -- 1. LoRA tag options modelsafe does not apply are refused, not dropped -----------------------


@pytest.mark.parametrize(
    ("tag", "options"),
    [
        ("<lora:style:0.8:lbw=OUTALL:stop=2>", "lbw=, stop="),
        ("<lora:style:0.8:start=3>", "start="),
        ("<lora:style:0.8:step=2>", "step="),
        ("<lyco:style:0.8:x=y>", "x="),
    ],
)
def test_lora_tag_options_are_refused_by_name(tag: str, options: str) -> None:
    with pytest.raises(UnreproducibleError) as info:
        recipe_from_parameters(A1111.replace("a lighthouse", f"a lighthouse {tag}"))
    ((what, why),) = info.value.items
    assert what == f"the tag {tag}"
    assert f"options {options} " in why and "one weight to every block and step" in why
    # The weights A1111 reads by name still read.
    text = A1111.replace("a lighthouse", "a lighthouse <lora:style:te=0.5:unet=0.5>")
    assert [(lo.name, lo.weight) for lo in recipe_from_parameters(text).loras] == [("style", 0.5)]


# -- 2. a JSON recipe's LoRA without a weight is refused ----------------------------------------


@pytest.mark.parametrize(("weight", "said"), [(None, "null"), ("drop", "missing")])
def test_json_lora_without_a_weight_is_refused(tmp_path: Path, weight: Any, said: str) -> None:
    data = _recipe(loras=(ModelRef("style", autov2="0123456789", weight=0.8),)).to_json()
    if weight == "drop":
        del data["loras"][0]["weight"]
    else:
        data["loras"][0]["weight"] = weight
    info = PngInfo()
    info.add_text("modelsafe", json.dumps(data))
    path = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    with pytest.raises(UsageError, match="cannot read the recipe in") as caught:
        recipe_from_png(path)
    assert f"loras[0].weight is {said}, not a number" in caught.value.reason
    # Other models' refs carry no weight (null): they still read.
    assert recipe_from_chunks(png_text_chunks(_recipe())) == _recipe()


# -- 3. Euler with Simple is flow_euler only on a flow model ------------------------------------


def test_euler_simple_is_flow_euler_only_on_a_flow_models_image() -> None:
    text = A1111.replace("Sampler: Euler a", "Sampler: Euler, Schedule type: Simple")
    recipe = recipe_from_parameters(text)
    assert recipe.scheduler == "" and recipe.extra["sampler"] == "Euler, Schedule type: Simple"
    with pytest.raises(UsageError, match="A1111's 'Euler, Schedule type: Simple'") as info:
        request_from_recipe(recipe, None, overridden={"checkpoint"})
    assert "flow_euler" not in info.value.reason and "--scheduler NAME" in info.value.hint
    # A flow model's image keeps it: Forge's Flux (Distilled CFG Scale), modelsafe's own text.
    forge = (
        "a lighthouse\nSteps: 20, Sampler: Euler, Schedule type: Simple, CFG scale: 1, "
        "Distilled CFG Scale: 3.5, Seed: 1, Size: 64x64, Model hash: 93f424e738, Model: flux1, "
        "Version: f2.0.1v1.10.1-previous-313-g8a042934"
    )
    assert recipe_from_parameters(forge).scheduler == "flow_euler"
    own = _recipe(family="sd3", scheduler="flow_euler", modelsafe_version="0.1.0")
    text = own.to_parameters()
    assert "Sampler: Euler, Schedule type: Simple" in text
    assert recipe_from_parameters(text).scheduler == "flow_euler"


# -- 4. a compressed text chunk whose stream stops early is damaged ------------------------------


def _cut_stream(text: bytes, upto: bytes) -> bytes:
    """The shortest start of ``text``'s zlib stream that inflates past ``upto`` but not to
    the whole text (a stream that stops early)."""
    stream = zlib.compress(text, 9)
    want = text[: text.index(upto) + len(upto)]
    for size in range(1, len(stream)):
        out = zlib.decompressobj().decompress(stream[:size])
        if out.startswith(want) and len(out) < len(text):
            return stream[:size]
    raise AssertionError("no cut found")


@pytest.mark.parametrize(("kind", "head"), [(b"zTXt", b"\0"), (b"iTXt", b"\1\0\0\0")])
def test_a_compressed_chunk_whose_stream_stops_early_is_refused(
    tmp_path: Path, kind: bytes, head: bytes
) -> None:
    cut = _cut_stream(A1111.encode(), b"Seed: 12")
    path = _raw_png(tmp_path / "cut.png", _chunk(kind, b"parameters\0" + head + cut))
    with pytest.raises(UsageError, match="stops early") as info:
        recipe_from_png(path)
    assert "cannot read the recipe in" in info.value.reason


# -- 5. memory stays small: chunks skipped or refused before they are read ----------------------

# The reader's peak memory: VmHWM, its own address space's (ru_maxrss would count the test
# process's, which a child spawned from it inherits across exec).
_MAX_RSS = """
import re, sys
from pathlib import Path
from modelsafe.errors import UsageError
from modelsafe.runtime.recipe import recipe_from_png
try:
    print(recipe_from_png(Path(sys.argv[1])).seed)
except UsageError as exc:
    print(exc.reason)
status = Path("/proc/self/status").read_text()
print(int(re.search(r"VmHWM:\\s*(\\d+) kB", status)[1]) // 1024)
"""


@pytest.fixture
def _linux() -> None:
    if not Path("/proc/self/status").exists():
        pytest.skip("peak memory is read from /proc/self/status")


def _read_in_subprocess(path: Path) -> tuple[str, int]:
    """What reading ``path``'s recipe says, and the reader's peak memory in MiB."""
    done = subprocess.run(
        [sys.executable, "-c", _MAX_RSS, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    said, peak = done.stdout.strip().rsplit("\n", 1)
    return said, int(peak)


def _sparse_chunk(path: Path, keyword: bytes, size: int) -> Path:
    """A PNG whose tEXt chunk ``keyword`` declares ``size`` bytes (zeros of a sparse file)."""
    text = _chunk(b"tEXt", b"parameters\0" + A1111.encode())
    head = struct.pack(">I", size) + b"tEXt" + keyword + b"\0"
    _raw_png(path, text, tail=head)
    with path.open("r+b") as file:
        file.truncate(path.stat().st_size + size)
    return path


@pytest.mark.usefixtures("_linux")
def test_a_huge_unknown_text_chunk_is_skipped_unread(tmp_path: Path) -> None:
    path = _sparse_chunk(tmp_path / "skip.png", b"Comment", 400 * 2**20)
    said, peak = _read_in_subprocess(path)
    assert said == "1234567"  # the parameters before it, read
    assert peak < 200, peak  # the 400 MiB chunk never read


@pytest.mark.usefixtures("_linux")
def test_a_huge_parameters_chunk_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = _sparse_chunk(tmp_path / "big.png", b"parameters", 400 * 2**20)
    said, peak = _read_in_subprocess(path)
    assert "its tEXt chunk 'parameters' holds more than 16 MiB; modelsafe reads no more" in said
    assert peak < 200, peak


def test_an_image_with_more_text_chunks_than_any_tool_writes_is_refused(tmp_path: Path) -> None:
    junk = [_chunk(b"tEXt", b"k%05d\0" % i) for i in range(1100)]
    text = _chunk(b"tEXt", b"parameters\0" + A1111.encode())
    with pytest.raises(UsageError, match="more than 1024 text chunks; modelsafe reads no more"):
        recipe_from_png(_raw_png(tmp_path / "many.png", *junk, text))
    few = [_chunk(b"tEXt", b"k%05d\0" % i) for i in range(100)]  # a few are no bother
    assert recipe_from_png(_raw_png(tmp_path / "few.png", *few, text)).seed == 1234567


# -- 6. a refusal names the first settings and counts the rest -----------------------------------


def test_a_refusal_names_ten_settings_and_counts_the_others() -> None:
    unknown = ", ".join(f"Field{i}: {i}" for i in range(5000))
    long_key = "K" * 10_000
    with pytest.raises(UnreproducibleError) as info:
        recipe_from_parameters(f"{A1111}, {long_key}: 1, {unknown}")
    said = info.value.reason
    assert len(info.value.items) == 5001
    assert "Field8: 8 (not a setting modelsafe knows); and 4991 more" in said
    assert "Field9:" not in said and len(said) < 1000


# -- 7. EXIF read from a JPEG whose header declares a huge size ----------------------------------


def test_jpeg_recipe_is_read_whatever_size_its_header_declares(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\0" + A1111.encode("utf-16-be")
    path = tmp_path / "huge.jpg"
    Image.new("RGB", (16, 16)).save(path, format="JPEG", exif=exif.tobytes())
    data = bytearray(path.read_bytes())
    sof = data.index(b"\xff\xc0")  # height, width after the segment length and precision
    data[sof + 5 : sof + 9] = struct.pack(">HH", 65500, 65500)
    path.write_bytes(bytes(data))
    with pytest.raises(Image.DecompressionBombError):  # what Pillow says of it
        Image.open(path)
    recipe = recipe_from_png(path)
    assert (recipe.prompt, recipe.seed) == ("a lighthouse", 1234567)


# -- side note: a LoRA name holding ">" survives the parameters text ------------------------------


def test_a_lora_name_with_a_tag_end_reads_back_with_its_hash() -> None:
    recipe = _recipe(loras=(ModelRef("we>ird", autov2="0123456789", weight=0.5),))
    back = recipe_from_parameters(recipe.to_parameters())
    assert back.prompt == "a lighthouse"
    assert [(lo.name, lo.autov2, lo.weight) for lo in back.loras] == [("weird", "0123456789", 0.5)]


def test_a_jpeg_segment_shorter_than_its_length_field_is_refused_not_read_whole(
    tmp_path: Path,
) -> None:
    # length 1 made the reader call read(-1): the whole rest of the file (hundreds of MiB)
    from modelsafe.runtime.image_text import read_image_text

    path = tmp_path / "bad.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0\x00\x01" + bytes(1 << 20))
    with pytest.raises(RecipeReadError, match="segment shorter than 2 bytes"):
        read_image_text(path)
