"""`text_encoder_slot` and `resolve` on files that hold several text encoders at once (SD3
``*_incl_clips``, ComfyUI CLIP saves): the real detectors name them ``clip_l+clip_g+t5xxl``,
``clip_l+t5xxl`` ...; each encoder in the file must fill one of the family's slots, and an
accepted file fills all of them."""

from __future__ import annotations

from typing import Any

import rr_layouts as L

from modelsafe.runtime.resolve import load_part, resolve_parts
from modelsafe.testing.layouts import base_models as bm
from modelsafe.testing.layouts import components as co


def _reasons(result: Any, i: int = 0) -> str:
    return " | ".join(r.reason for r in result.parts[i].reasons)


def _encoders(write: Any, name: str, specs: list[Any]) -> Any:
    """A multi-encoder file, identified by the real detectors (not told what it is)."""
    part = load_part(str(write(name, specs)), "text_encoder")
    assert part.kind == "text_encoder"
    return part


def _flux(part_of: Any, write: Any) -> Any:
    path = write("flux.safetensors", L.flux_bfl(double=1, single=1))
    return part_of(path, "checkpoint", "flux1", "transformer")


def _sd3(part_of: Any, write: Any) -> Any:
    specs = [("model.diffusion_model.x_embedder.proj.weight", "F16", (1536, 16, 2, 2))]
    specs += L.vae(16, prefix="first_stage_model.")
    return part_of(write("sd3.safetensors", specs), "checkpoint", "sd3", "checkpoint")


def _sdxl_unet_only(part_of: Any, write: Any) -> Any:
    specs = [(n, d, s) for n, d, s in L.sdxl_checkpoint() if n.startswith("model.")]
    specs += L.vae(4)
    return part_of(write("sdxl.safetensors", specs), "checkpoint", "sdxl", "checkpoint")


def test_flux_pair_fills_both_slots(part_of: Any, write: Any) -> None:
    te = _encoders(write, "te.safetensors", co.multi_text_encoders(("t5xxl", "clip_l"), "{}."))
    assert te.variant == "clip_l+t5xxl"
    base = _flux(part_of, write)
    alone = resolve_parts(base, [])
    assert [m.slot for m in alone.missing] == ["clip_l", "t5xxl", "vae"]
    result = resolve_parts(base, [te])
    assert result.parts[0].status == "accepted", _reasons(result)
    assert (
        "this file holds 2 text encoders (clip_l+t5xxl): clip_l (768 wide) fills Flux.1's clip_l "
        "slot; t5xxl (4096 wide) fills Flux.1's t5xxl slot"
    ) in _reasons(result)
    assert [m.slot for m in result.missing] == ["vae"]  # both encoder slots are filled


def test_sd3_incl_clips_fills_required_and_optional_slots(part_of: Any, write: Any) -> None:
    te = _encoders(write, "te.safetensors", bm.text_encoders_sd3())
    assert te.variant == "clip_l+clip_g+t5xxl"
    base = _sd3(part_of, write)
    assert [m.slot for m in resolve_parts(base, []).missing] == ["clip_l", "clip_g"]
    result = resolve_parts(base, [te])
    assert result.parts[0].status == "accepted", _reasons(result)
    for slot in ("clip_l", "clip_g", "t5xxl"):
        assert f"fills SD3's {slot} slot" in _reasons(result)
    assert result.missing == ()
    assert result.compatible and result.exit_code == 0


def test_sdxl_pair_accepted_but_a_file_with_t5_rejected(part_of: Any, write: Any) -> None:
    base = _sdxl_unet_only(part_of, write)
    pair = _encoders(write, "pair.safetensors", co.multi_text_encoders(("clip_l", "clip_g")))
    assert pair.variant == "clip_l+clip_g"
    ok = resolve_parts(base, [pair])
    assert ok.parts[0].status == "accepted", _reasons(ok)
    assert "clip_g (1280 wide) fills SDXL's clip_g slot" in _reasons(ok)
    assert not any(m.kind == "text_encoder" for m in ok.missing)

    three = _encoders(write, "three.safetensors", bm.text_encoders_sd3())
    bad = resolve_parts(base, [three])
    assert bad.parts[0].status == "rejected"
    assert (
        "this file holds 3 text encoders (clip_l+clip_g+t5xxl): t5xxl is not used by SDXL "
        "(needs clip_l, clip_g) (clip_l, clip_g would fit)"
    ) in _reasons(bad)
    # A rejected file fills nothing: the slots stay missing.
    assert {"clip_l", "clip_g"} <= {m.slot for m in bad.missing}


def test_flux_rejects_an_sdxl_pair_naming_the_misfit(part_of: Any, write: Any) -> None:
    pair = _encoders(write, "pair.safetensors", co.multi_text_encoders(("clip_l", "clip_g")))
    result = resolve_parts(_flux(part_of, write), [pair])
    assert result.parts[0].status == "rejected"
    assert "clip_g is not used by Flux.1 (needs clip_l, t5xxl) (clip_l would fit)" in _reasons(
        result
    )
    assert [m.slot for m in result.missing] == ["clip_l", "t5xxl", "vae"]


def test_an_encoder_the_detector_cannot_name_is_named_as_the_misfit(
    part_of: Any, write: Any
) -> None:
    # A 2-block T5 is no T5-XXL: the detector calls that part unknown(t5xxl) after its prefix.
    te = _encoders(write, "te.safetensors", bm.text_encoders_sd3(t5_layers=2))
    assert te.variant == "clip_l+clip_g+unknown(t5xxl)"
    result = resolve_parts(_sd3(part_of, write), [te])
    assert result.parts[0].status == "rejected"
    assert "unknown(t5xxl) is not used by SD3 (needs clip_l, clip_g, t5xxl)" in _reasons(result)
