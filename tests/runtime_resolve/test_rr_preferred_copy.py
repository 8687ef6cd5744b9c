"""A model known by several copies is offered by its best copy (the one generate would use)."""

from __future__ import annotations

from pathlib import Path

from rr_catalog_rows import add_model

from modelsafe.registry.catalog import open_catalog
from modelsafe.registry.catalog.models import Location
from modelsafe.runtime.resolve import part_from_model


def test_a_model_with_a_ckpt_and_a_safetensors_copy_is_offered_as_the_safetensors(
    tmp_path: Path,
) -> None:
    catalog = open_catalog(tmp_path / "catalog.db")
    try:
        with catalog.session() as session:
            model = add_model(session, "lora", "sd1", "lora", {}, path="/models/b/lora.safetensors")
            model.locations[0].audit_status = "safe"
            model.locations[0].extra = {"format": "safetensors"}
            # (first by path, and first recorded: neither may decide)
            session.add(
                Location(
                    path="/models/a/lora.ckpt",
                    size=1,
                    mtime_ns=0,
                    status="present",
                    audit_status="safe",
                    extra={"format": "torch-zip"},
                    model=model,
                )
            )
            session.flush()
            session.expire(model)
            assert [loc.path for loc in model.locations][0] == "/models/a/lora.ckpt"
            assert part_from_model(model).path == "/models/b/lora.safetensors"
    finally:
        catalog.close()
