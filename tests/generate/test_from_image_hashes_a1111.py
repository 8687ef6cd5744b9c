"""`generate --from-image` and A1111's hashes: a LoRA found by the ``Lora hashes`` value A1111 /
Forge wrote (a stale embedded ``sshs_model_hash``; the addnet hash of a file whose header is
16 MiB or more), else by its exact name, said as such; and the ``Lora hashes`` / ``TI hashes``
modelsafe writes are the values A1111 computes for those files."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm.attributes import flag_modified

from modelsafe.errors import UsageError
from modelsafe.registry.hashing import A1111_LORA, AUTOV3_HEADER_LIMIT
from modelsafe.runtime.generate import collect_warnings, model_ref, request_from_recipe
from modelsafe.runtime.recipe import ModelRef, Recipe, recipe_from_parameters
from modelsafe.testing import write_safetensors

LORA = [
    ("lora_unet_x.lora_down.weight", "F32", (16,)),
    ("lora_unet_x.lora_up.weight", "F32", (16,)),
]
STALE = "ab" * 32
BASE = "Steps: 2, Sampler: Euler a, CFG scale: 7, Seed: 7, Size: 32x32"


def _addnet(path: Path) -> str:
    """A1111's ``addnet_hash_safetensors``: sha256 of everything after 8 + N bytes."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return hashlib.sha256(raw[8 + n :]).hexdigest()


def _loras(folder: Path) -> dict[str, Path]:
    folder.mkdir()
    big = {"ss_tag_frequency": "x" * (AUTOV3_HEADER_LIMIT + 1024)}
    return {
        "stale": write_safetensors(
            folder / "stale.safetensors", LORA, {"sshs_model_hash": STALE}, "random", seed=1
        ),
        "bighdr": write_safetensors(folder / "bighdr.safetensors", LORA, big, "random", seed=2),
        "named": write_safetensors(folder / "named.safetensors", LORA, data="random", seed=3),
        "emb": write_safetensors(folder / "emb.safetensors", [("emb_params", "F32", (2, 8))]),
    }


def _scan(tmp_path: Path, folder: Path) -> Any:
    from modelsafe.registry.catalog import open_catalog
    from modelsafe.registry.scan import scan

    catalog = open_catalog(f"sqlite:///{tmp_path / 'c.db'}")
    scan(catalog, [folder], jobs=1)
    return catalog


@pytest.fixture
def scanned(tmp_path: Path) -> Any:
    files = _loras(tmp_path / "models")
    catalog = _scan(tmp_path, tmp_path / "models")
    yield catalog, files
    catalog.close()


def _lora_paths(text: str, catalog: Any) -> tuple[list[Path], list[str]]:
    with collect_warnings(None) as warned:
        request = request_from_recipe(
            recipe_from_parameters(text), catalog, overridden={"checkpoint"}
        )
    return [lo.path for lo in request.loras], warned


def test_loras_are_found_by_the_hash_a1111_wrote(scanned: Any) -> None:
    catalog, files = scanned
    hashes = f"stale: {STALE[:12]}, bighdr: {_addnet(files['bighdr'])[:12]}"
    text = f'a cat <lora:stale:0.8> <lora:bighdr:0.5>\n{BASE}, Lora hashes: "{hashes}"'
    paths, warned = _lora_paths(text, catalog)
    assert paths == [files["stale"].resolve(), files["bighdr"].resolve()]
    assert not [w for w in warned if "by name" in w]


def test_a_lora_no_hash_names_is_found_by_its_exact_name_and_said_so(scanned: Any) -> None:
    catalog, files = scanned
    text = f'a cat <lora:named:0.8>\n{BASE}, Lora hashes: "named: 0123456789ab"'
    paths, warned = _lora_paths(text, catalog)
    assert paths == [files["named"].resolve()]
    assert any(
        "LoRA 'named' matched by name, not by hash (no scanned file has its hash 0123456789ab)" in w
        for w in warned
    ), warned
    # only an exact name: a part of one is no LoRA
    with pytest.raises(UsageError, match="LoRA 'name' .* is not on this machine"):
        _lora_paths(f'a cat <lora:name:0.8>\n{BASE}, Lora hashes: "name: 0123456789ab"', catalog)


def _recipe(files: dict[str, Path], catalog: Any) -> Recipe:
    return Recipe(
        prompt="a cat",
        seed=1,
        steps=2,
        cfg=7.0,
        width=32,
        height=32,
        scheduler="euler_a",
        checkpoint=ModelRef("ckpt", sha256="0" * 64, autov2="0" * 10),
        loras=tuple(model_ref(files[n], catalog, weight=0.5) for n in ("stale", "bighdr")),
        embeddings=(model_ref(files["emb"], catalog, token="emb"),),
    )


@pytest.mark.parametrize("from_catalog", [True, False])
def test_written_lora_and_ti_hashes_are_the_values_a1111_computes(
    scanned: Any, from_catalog: bool
) -> None:
    catalog, files = scanned
    text = _recipe(files, catalog if from_catalog else None).to_parameters()
    big = _addnet(files["bighdr"])[:12]
    emb = hashlib.sha256(files["emb"].read_bytes()).hexdigest()[:12]
    assert f'Lora hashes: "stale: {STALE[:12]}, bighdr: {big}"' in text
    assert f'TI hashes: "emb: {emb}"' in text
    # and A1111's values find the files again
    paths, _warned = _lora_paths(text, catalog)
    assert paths == [files["stale"].resolve(), files["bighdr"].resolve()]


def test_a_recipe_written_before_a1111_lora_still_reads(scanned: Any) -> None:
    catalog, files = scanned
    data = _recipe(files, catalog).to_json()
    for lora in data["loras"]:
        del lora[A1111_LORA]
    back = Recipe.from_json(data)
    assert [lo.a1111_lora for lo in back.loras] == [None, None]
    assert back.loras[0].lora_hash == back.loras[0].sha256[:12]  # type: ignore[index]


def test_a_catalog_row_scanned_before_a1111_lora_still_gives_it(scanned: Any) -> None:
    from modelsafe.registry.catalog.models import Location

    catalog, files = scanned
    with catalog.session() as session:
        for loc in session.query(Location).all():
            hashes = dict((loc.extra or {}).get("hashes") or {})
            hashes.pop(A1111_LORA, None)
            loc.extra = {**(loc.extra or {}), "hashes": hashes}
            flag_modified(loc, "extra")
        session.commit()
    assert model_ref(files["stale"], catalog).lora_hash == STALE[:12]  # from its header
    assert model_ref(files["bighdr"], catalog).lora_hash == _addnet(files["bighdr"])[:12]
    assert model_ref(files["named"], catalog).lora_hash == _addnet(files["named"])[:12]
