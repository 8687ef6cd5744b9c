"""`modelsafe set` corrections reach `resolve` given a path, as they reach `ls` and `generate`:
a LoRA whose family the detectors cannot tell, corrected to SDXL, is judged as an SDXL LoRA."""

from __future__ import annotations

from pathlib import Path

from modelsafe.registry.catalog import open_catalog
from modelsafe.registry.catalog.models import Location
from modelsafe.registry.catalog.queries import set_overrides
from modelsafe.registry.scan import scan
from modelsafe.runtime.resolve import load_part
from modelsafe.testing import write_safetensors


def test_a_catalog_correction_is_used_for_a_path(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    tensors = [("lora_unet_foo_bar.lora_down.weight", "F16", (4, 8))]
    tensors += [("lora_unet_foo_bar.lora_up.weight", "F16", (8, 4))]
    lora = write_safetensors(folder / "odd.safetensors", tensors, data="random", seed=1)
    catalog = open_catalog(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        scan(catalog, [folder], jobs=1)
        detected = load_part(str(lora), "lora", catalog=catalog)
        assert detected.family != "sdxl"
        with catalog.session() as session:
            loc = session.query(Location).filter_by(path=str(lora.resolve())).one()
            assert loc.model is not None
            set_overrides(session, loc.model, {"family": "sdxl"})
        corrected = load_part(str(lora), "lora", catalog=catalog)
        assert corrected.family == "sdxl"
        assert corrected.facts["corrected_in_catalog"] == ["family"]
        assert load_part(str(lora), "lora").family == detected.family  # no catalog: detection
    finally:
        catalog.close()
