"""What a set of the families modelsafe resolves but does not generate is missing.

Wan, Qwen-Image, Z-Image, Lumina 2, SANA, HiDream, HunyuanVideo, HunyuanImage 2.1, Kandinsky 5
and FLUX.2 had their given text encoders checked, but a transformer alone was "compatible", with a
warning that modelsafe had "no table" of what they need. Their text encoders and VAE are listed as
missing now, as for SD and Flux.1: the encoder of the model's size (FLUX.2 [klein] 4B Qwen3-4B,
Wan 2.2 TI2V 5B the 48-channel Wan 2.2 VAE), ComfyUI's own names for the encoders it bundles, and
catalog candidates for a slot any of several encoders fills. The files are the real layouts
(header-only safetensors), read by the real detectors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rr_catalog_rows import add_model

from modelsafe.registry.catalog import open_catalog
from modelsafe.runtime.plan import plan
from modelsafe.runtime.resolve import resolve, resolve_parts
from modelsafe.testing import write_safetensors
from modelsafe.testing.layouts import base_models as bm
from modelsafe.testing.layouts import components as co
from modelsafe.testing.layouts import recent_models as rm


def _file(tmp_path: Path, name: str, specs: Any) -> str:
    return str(write_safetensors(tmp_path / f"{name}.safetensors", specs, data="sparse"))


def _missing(result: Any) -> list[tuple[str, str]]:
    return [(m.slot, m.why) for m in result.missing]


def test_a_wan_transformer_alone_misses_umt5_and_its_vae(tmp_path: Path) -> None:
    result = resolve(_file(tmp_path, "wan2.1_t2v_1.3B_bf16", rm.wan_transformer("t2v-1.3b")))
    assert _missing(result) == [
        ("umt5xxl", "Wan needs the umt5xxl text encoder and the checkpoint does not contain it"),
        ("vae", "Wan needs a 16-channel Wan VAE and the checkpoint does not contain one"),
    ]
    assert not result.compatible
    assert not any("no table" in r.reason for r in result.checkpoint.reasons)


def test_the_wan_ti2v_5b_needs_the_48_channel_vae(tmp_path: Path) -> None:
    """The size (model width 3072) decides: TI2V 5B decodes with the Wan 2.2 VAE."""
    ti2v = _file(tmp_path, "wan2.2_ti2v_5B_fp16", rm.wan_transformer("ti2v-5b"))
    result = resolve(ti2v, vae=_file(tmp_path, "wan_2.1_vae", co.qwen_image_vae()))
    assert result.parts[0].status == "rejected"  # (16 channels: the Wan 2.1 VAE)
    assert (
        "vae",
        "Wan needs a 48-channel Wan 2.2 VAE and the checkpoint does not contain one",
    ) in (_missing(result))


def test_a_complete_wan_set_is_compatible(tmp_path: Path, run_cli: Any) -> None:
    wan = _file(tmp_path, "wan", rm.wan_transformer("t2v-1.3b"))
    te = _file(tmp_path, "umt5_xxl_bf16", co.umt5xxl())
    vae = _file(tmp_path, "wan_2.1_vae", co.qwen_image_vae())
    code, out, err = run_cli("resolve", wan, "--text-encoder", te, "--vae", vae, "--json")
    assert code == 0, (out, err)
    result = json.loads(out)
    assert result["compatible"] and result["missing"] == []
    assert [p["status"] for p in result["parts"]] == ["accepted", "accepted"]


def test_flux2_klein_misses_its_own_sizes_encoder_only(tmp_path: Path) -> None:
    klein = _file(tmp_path, "flux-2-klein-4b", rm.flux2_bfl("klein-4b"))
    vae = _file(tmp_path, "flux2-vae", rm.flux2_vae())
    result = resolve(klein, vae=vae)
    assert _missing(result) == [
        (
            "qwen3_4b",
            "FLUX.2 needs the qwen3_4b text encoder and the checkpoint does not contain it",
        )
    ]
    te = _file(tmp_path, "qwen_3_4b", co.llm_text_encoder("qwen3_4b"))
    done = resolve(klein, vae=vae, text_encoders=[te])
    assert done.compatible and done.missing == ()


def test_comfyui_all_in_one_encoders_fill_their_slots(tmp_path: Path) -> None:
    """ComfyUI saves Qwen-Image's encoder as ``text_encoders.qwen25_7b``: it is the
    qwen2.5_vl_7b the family needs, and the bundled VAE is its VAE."""
    specs = bm.prefixed("model.diffusion_model.", bm.diffusers_denoiser("qwen-image", "BF16"))
    specs += bm.prefixed("vae.", co.qwen_image_vae())
    specs += bm.prefixed(
        "text_encoders.qwen25_7b.transformer.", co.llm_text_encoder("qwen2.5_vl_7b")
    )
    result = resolve(_file(tmp_path, "qwen_image_aio", specs))
    assert (result.checkpoint.family, result.checkpoint.kind) == ("qwen-image", "checkpoint")
    assert result.missing == () and result.compatible, _missing(result)


def test_hunyuanimage_needs_qwen_but_not_the_glyph_encoder(tmp_path: Path) -> None:
    result = resolve(_file(tmp_path, "hunyuanimage2.1", rm.hunyuan_image21()))
    slots = [slot for slot, _ in _missing(result)]
    assert slots == ["qwen2.5_vl_7b", "vae"]  # (ByT5 glyph: may be left out)
    assert "64-channel HunyuanImage 2.1 VAE" in _missing(result)[1][1]


def test_a_flux2_of_no_known_size_needs_one_of_its_encoders(
    tmp_path: Path, part_of: Any, write: Any
) -> None:
    """No size, no variant: any of FLUX.2's three encoders fills the slot, and the catalog's
    candidates for it are those encoders (not a Flux.1 T5-XXL)."""
    cat = open_catalog(tmp_path / "catalog.db")
    with cat.session() as s:
        add_model(s, "qwen-3-8b", "any", "text_encoder", {"hidden_size": 4096}, variant="qwen3_8b")
        add_model(s, "t5", "any", "text_encoder", {"hidden_size": 4096}, variant="t5xxl")
    base = part_of(
        write("f2.safetensors", rm.flux2_bfl("klein-4b")), "checkpoint", "flux2", "transformer"
    )
    result = resolve_parts(base, [], cat)
    te = result.missing[0]
    assert te.slot == "mistral_small_3_24b|qwen3_4b|qwen3_8b"
    assert "FLUX.2 needs a text encoder (mistral_small_3_24b, qwen3_4b, qwen3_8b" in te.why
    assert [c.name for c in te.candidates] == ["qwen-3-8b"]
    cat.close()


def test_plan_prices_the_missing_encoder_of_a_wan_set(tmp_path: Path) -> None:
    """The plan loads what the set will load: umt5-xxl (5.7B parameters) is assumed."""
    wan = _file(tmp_path, "wan", rm.wan_transformer("t2v-1.3b"))
    out = plan(wan, vram="24GB")
    encoding = next(p for p in out.phases if p.name == "text_encoding")
    assert encoding.weights > 10 * 2**30  # (umt5-xxl in 16 bits: 10.6 GiB)
    assert any("umt5xxl is not in the set" in n for n in out.notes)
