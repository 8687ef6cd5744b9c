"""`lora_width`: a LoRA of the checkpoint's family trained for another of its sizes.

FLUX.2 and Wan LoRAs are not key-mapped (their two namings have no alias table), so without this
rule a FLUX.2 [klein] 4B LoRA was accepted on FLUX.2 [dev] on family alone. The LoRA probe and
the DiT probes both record the model width (``hidden_size``); when both are known and differ the
LoRA is rejected, naming both widths and the models they are. Files are the project's layouts,
written full size with sparse data and identified by the built-in detectors.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from rr_catalog_rows import add_model

from modelsafe.registry.catalog import open_catalog
from modelsafe.runtime.resolve import compatible_models, resolve
from modelsafe.testing import write_safetensors
from modelsafe.testing.layouts import adapters as ad
from modelsafe.testing.layouts import recent_models as rm
from modelsafe.testing.layouts.base_models import Specs


def _linears(specs: Specs, pattern: str) -> list[tuple[str, tuple[int, ...]]]:
    return [
        (n[: -len(".weight")], s)
        for n, _, s in specs
        if n.endswith(".weight") and len(s) == 2 and re.search(pattern, n)
    ]


def _flux2_lora(variant: str) -> Specs:
    """A PEFT LoRA of a FLUX.2 size in diffusers names (as diffusers / ai-toolkit save them)."""
    return ad.peft_lora(
        [("transformer.", _linears(rm.flux2_diffusers(variant), r"^transformer_blocks\."))]
    )


def _wan_lora(variant: str) -> Specs:
    """A ComfyUI-named LoRA of a Wan size (musubi-tuner's naming: blocks.N.self_attn...)."""
    mods = _linears(rm.wan_transformer(variant), r"blocks\.\d+\.(?:self|cross)_attn")
    return ad.comfy_lora(mods)


def _write(folder: Path, name: str, specs: Specs) -> Path:
    return write_safetensors(folder / f"{name}.safetensors", specs, data="sparse")


def _lora_reasons(result: Any) -> dict[str, tuple[str, str]]:
    """rule -> (status, reason) of the LoRA part."""
    lora = next(p for p in result.parts if p.role == "lora")
    return {r.rule: (r.status, r.reason) for r in lora.reasons}


@pytest.mark.parametrize(
    ("base", "lora", "reason"),
    [
        (
            lambda: rm.flux2_bfl("dev"),
            lambda: _flux2_lora("klein-4b"),
            "the LoRA was trained for a 3072-wide FLUX.2 [klein] 4B, the checkpoint is the "
            "6144-wide FLUX.2 [dev]",
        ),
        (
            lambda: rm.flux2_bfl("klein-4b"),
            lambda: _flux2_lora("klein-9b"),
            "the LoRA was trained for a 4096-wide FLUX.2 [klein] 9B, the checkpoint is the "
            "3072-wide FLUX.2 [klein] 4B",
        ),
        (
            lambda: rm.wan_transformer("t2v-14b"),
            lambda: _wan_lora("t2v-1.3b"),
            "the LoRA was trained for a 1536-wide Wan 2.1 1.3B, the checkpoint is the 5120-wide "
            "Wan 14B",
        ),
    ],
    ids=["klein-4b-on-dev", "klein-9b-on-klein-4b", "wan-1.3b-on-14b"],
)
def test_a_lora_of_another_size_of_the_family_is_rejected(
    tmp_path: Path, base: Any, lora: Any, reason: str
) -> None:
    result = resolve(_write(tmp_path, "base", base()), loras=[str(_write(tmp_path, "l", lora()))])
    lora_part = next(p for p in result.parts if p.role == "lora")
    assert lora_part.status == "rejected" and not result.compatible
    status, why = _lora_reasons(result)["lora_width"]
    assert status == "reject" and why.startswith(reason), why


@pytest.mark.parametrize(
    ("base", "lora"),
    [
        (lambda: rm.flux2_bfl("klein-4b"), lambda: _flux2_lora("klein-4b")),
        (lambda: rm.flux2_bfl("dev"), lambda: _flux2_lora("dev")),
        (lambda: rm.wan_transformer("t2v-1.3b"), lambda: _wan_lora("t2v-1.3b")),
    ],
    ids=["klein-4b", "dev", "wan-1.3b"],
)
def test_a_lora_of_the_checkpoint_s_size_is_accepted(tmp_path: Path, base: Any, lora: Any) -> None:
    result = resolve(_write(tmp_path, "base", base()), loras=[str(_write(tmp_path, "l", lora()))])
    reasons = _lora_reasons(result)
    assert next(p for p in result.parts if p.role == "lora").status == "accepted", reasons
    assert "lora_width" not in reasons


def test_catalog_rows_are_judged_by_their_recorded_widths_only(tmp_path: Path, pm: Any) -> None:
    """From catalog rows (no file read): a width is judged only where both rows record one, and
    a LoRA of another family is the family rule's alone."""
    cat = open_catalog(tmp_path / "catalog.db")
    with cat.session() as s:
        add_model(s, "flux2-dev", "flux2", "transformer", {"hidden_size": 6144}, variant="dev")
        add_model(s, "klein-style", "flux2", "lora", {"hidden_size": 3072})
        add_model(s, "dev-style", "flux2", "lora", {"hidden_size": 6144})
        add_model(s, "old-style", "flux2", "lora", {})  # catalogued before widths were recorded
        add_model(s, "flux1-style", "flux1", "lora", {"hidden_size": 3072})
    found = {
        c.model["name"]: (c.status, {r.rule: r.reason for r in c.reasons})
        for c in compatible_models(cat, "flux2-dev", kind="lora", include_rejected=True)
    }
    cat.close()
    assert found["klein-style"][0] == "rejected"
    assert "3072-wide FLUX.2 [klein] 4B" in found["klein-style"][1]["lora_width"]
    assert found["dev-style"][0] == "accepted" and "lora_width" not in found["dev-style"][1]
    assert found["old-style"][0] == "accepted" and "lora_width" not in found["old-style"][1]
    assert found["flux1-style"][0] == "rejected"
    assert set(found["flux1-style"][1]) == {"family"}
