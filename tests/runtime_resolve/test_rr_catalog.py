"""Catalog answers: `compatible_models` from rows only, references by name/hash, candidates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import rr_layouts as L
from rr_catalog_rows import add_model

from modelsafe.registry.catalog import open_catalog
from modelsafe.runtime.resolve import compatible_models, resolve_parts


def _fill(tmp_path: Path) -> Any:
    cat = open_catalog(tmp_path / "catalog.db")
    with cat.session() as s:
        add_model(
            s,
            "sd15",
            "sd1",
            "checkpoint",
            {"context_dim": 768},
            comps={"unet": {}, "vae": {}, "text_encoder.clip_l": {}},
        )
        add_model(s, "flux-dev", "flux1", "transformer", {}, comps={"transformer": {}})
        add_model(s, "sd1-style", "sd1", "lora", {"context_dim": 768})
        add_model(s, "xl-style", "sdxl", "lora", {"context_dim": 2048})
        add_model(s, "vae-ft-mse", "any", "vae", {"latent_channels": 4})
        add_model(s, "flux-ae", "flux1", "vae", {"latent_channels": 16})
        add_model(s, "t5", "any", "text_encoder", {"hidden_size": 4096}, variant="t5xxl")
        add_model(s, "clip-l", "any", "text_encoder", {"hidden_size": 768}, variant="clip_l")
        add_model(s, "ti-768", "sd1", "embedding", {"token_width": 768})
    return cat


def test_compatible_models_from_rows_only(tmp_path: Path, pm: Any, monkeypatch: Any) -> None:
    cat = _fill(tmp_path)
    import builtins

    real_open = builtins.open

    def no_files(file: Any, *a: Any, **k: Any) -> Any:
        assert not str(file).endswith(".safetensors"), f"opened {file}"
        return real_open(file, *a, **k)

    monkeypatch.setattr(builtins, "open", no_files)
    names = {c.model["name"] for c in compatible_models(cat, "sd15")}
    assert names == {"sd1-style", "vae-ft-mse", "ti-768", "clip-l"}
    loras = compatible_models(cat, "sd15", kind="lora")
    assert [c.model["name"] for c in loras] == ["sd1-style"]
    assert "like the checkpoint" in loras[0].reasons[0].reason
    with_rejected = compatible_models(cat, "sd15", kind="lora", include_rejected=True)
    xl = next(c for c in with_rejected if c.model["name"] == "xl-style")
    assert xl.status == "rejected" and "context 2048" in xl.reasons[0].reason
    cat.close()


def test_missing_parts_list_catalog_candidates(tmp_path: Path, part_of: Any, write: Any) -> None:
    cat = _fill(tmp_path)
    base = part_of(
        write("flux.safetensors", L.flux_bfl(double=1, single=1)),
        "checkpoint",
        "flux1",
        "transformer",
    )
    result = resolve_parts(base, [], cat)
    found = {m.slot: [c.name for c in m.candidates] for m in result.missing}
    assert found == {"clip_l": ["clip-l"], "t5xxl": ["t5"], "vae": ["flux-ae"]}
    cat.close()


def test_resolve_by_hash_prefix_reads_the_catalogued_file(
    tmp_path: Path, pm: Any, write: Any
) -> None:
    from modelsafe.runtime.resolve import load_part

    mods = L.diffusers_modules("UNet2DConditionModel", **L.SD1_UNET_CONFIG)
    path = write("style.safetensors", L.lora_specs(mods, style="kohya", prefix="lora_unet"))
    cat = open_catalog(tmp_path / "catalog.db")
    with cat.session() as s:
        m = add_model(s, "style", "sd1", "lora", {}, path=str(path))
        prefix = m.autov2
    part = load_part(prefix, "lora", catalog=cat, weight=0.5)
    assert part.index is not None and part.family == "sd1" and part.weight == 0.5
    assert part.facts["context_dim"] == 768
    cat.close()
