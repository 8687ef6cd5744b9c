"""Torch-pickle forms (A1111 .pt embeddings, ESRGAN .pth), checkpoints left alone, edge layouts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelsafe.registry.identify import collect_candidates
from modelsafe.registry.inspect import inspect_path
from modelsafe.registry.read import read_index
from modelsafe.testing import write_safetensors
from modelsafe.testing.layouts import adapters as ad
from modelsafe.testing.layouts import base_models as bm
from modelsafe.testing.layouts import components as co
from modelsafe.types import TensorIndex, TensorInfo

MINE = ("family_components", "family_adapters")


def _torch_state(specs: bm.Specs) -> dict[str, object]:
    import torch

    dtypes = {"F32": torch.float32, "F16": torch.float16}
    return {n: torch.zeros(s, dtype=dtypes[d]) for n, d, s in specs}


def test_a1111_pt_embedding(tmp_path: Path) -> None:
    import torch

    path = tmp_path / "style.pt"
    torch.save(
        {
            "string_to_token": {"*": 265},
            "string_to_param": {"*": torch.zeros(4, 768)},
            "name": "style",
            "step": 3000,
            "sd_checkpoint": "e1441589",
            "sd_checkpoint_name": "v1-5-pruned-emaonly",
        },
        path,
    )
    report = inspect_path(path)
    assert (report.family, report.kind) == ("sd1", "embedding"), report.evidence
    assert report.facts["token_width"] == 768 and report.facts["num_vectors"] == 4
    assert report.facts["embedding_format"] == "a1111-pt"
    assert (
        report.evidence[0]
        == "string_to_param.* has shape [4, 768]: 4 vector(s) of width 768 (clip_l)"
    )
    assert any("v1-5-pruned-emaonly" in line for line in report.evidence)


@pytest.mark.parametrize(
    ("specs", "wrap", "variant", "scale"),
    [
        (co.esrgan_old(4, num_blocks=2), None, "esrgan x4", 4),
        (co.rrdbnet(4, num_blocks=2), "params_ema", "esrgan x4", 4),
        (co.srvgg_compact(2, num_conv=4), "params", "real-esrgan-compact x2", 2),
    ],
    ids=["esrgan-old-x4", "realesrgan-x4plus", "compact-x2"],
)
def test_pth_upscalers(
    tmp_path: Path, specs: bm.Specs, wrap: str | None, variant: str, scale: int
) -> None:
    import torch

    state = _torch_state(specs)
    path = tmp_path / "upscaler.pth"
    torch.save({wrap: state} if wrap else state, path)
    report = inspect_path(path)
    assert (report.family, report.kind, report.variant) == ("any", "upscaler", variant)
    assert report.facts["scale"] == scale
    assert report.format == "torch-zip"


@pytest.mark.parametrize(
    "specs",
    [
        pytest.param(lambda: bm.unet_checkpoint("sd1"), id="sd15-checkpoint"),
        pytest.param(lambda: bm.unet_checkpoint("sdxl"), id="sdxl-checkpoint"),
        pytest.param(
            lambda: bm.dit_checkpoint(
                bm.bfl_flux(depth=2, depth_single=2), bm.text_encoders_flux()
            ),
            id="flux-all-in-one",
        ),
    ],
)
def test_components_inside_a_checkpoint_are_not_claimed(tmp_path: Path, specs) -> None:  # type: ignore[no-untyped-def]
    path = write_safetensors(tmp_path / "ckpt.safetensors", specs())
    index = read_index(path)
    mine = [c for c in collect_candidates(index) if c.detector in MINE]
    assert mine == [], [(c.family, c.kind, c.score) for c in mine]
    assert inspect_path(path).kind == "checkpoint"


def test_controlnet_bundled_with_a_full_checkpoint_loses_to_it(tmp_path: Path) -> None:
    specs = bm.unet_checkpoint("sd1") + ad.controlnet_ldm("sd1")
    report = inspect_path(write_safetensors(tmp_path / "control_sd15_canny.safetensors", specs))
    assert (report.family, report.kind) == ("sd1", "checkpoint")
    assert any(c["kind"] == "controlnet" for c in report.candidates)


def _index(specs: list[tuple[str, str, tuple[int, ...]]], **metadata: str) -> TensorIndex:
    tensors = tuple(TensorInfo(n, d, s) for n, d, s in specs)
    return TensorIndex(Path("/in-memory"), "safetensors", tensors, metadata)


def _adapters(index: TensorIndex):  # type: ignore[no-untyped-def]
    from modelsafe.plugins.builtin.family_adapters import modelsafe_identify

    return modelsafe_identify(index)


def test_text_encoder_only_sdxl_lora() -> None:
    specs = ad.kohya_lora(
        [("lora_te1_", ad.clip_modules()), ("lora_te2_", ad.clip_modules(1280, 32))], rank=8
    )
    (cand,) = _adapters(_index(specs))
    assert (cand.family, cand.kind) == ("sdxl", "lora")
    assert cand.facts["targets"] == ["text_encoder", "text_encoder_2"]
    assert any("text-encoder-only" in e for e in cand.evidence)


def test_lora_base_unknown_without_keys_or_metadata_then_metadata_decides() -> None:
    # Only self-attention layers of the first level: SD1 and SD2 share these widths.
    mods = [m for m in ad.sd1_unet_modules() if "attn1" in m[0] and "down_blocks.0" in m[0]]
    (cand,) = _adapters(_index(ad.kohya_lora([("lora_unet_", mods)])))
    assert (cand.family, cand.kind) == ("unknown", "lora")
    assert any("SD1 and SD2 share" in e for e in cand.evidence)
    (cand,) = _adapters(
        _index(ad.kohya_lora([("lora_unet_", mods)]), ss_base_model_version="sd_v2")
    )
    assert cand.family == "sd2" and cand.score == 0.6
    assert any("metadata decides" in e for e in cand.evidence)


def test_locon_named_by_metadata() -> None:
    specs = ad.kohya_lora([("lora_unet_", ad.sd1_unet_modules())])
    args = json.dumps({"algo": "locon", "conv_dim": "8"})
    (cand,) = _adapters(_index(specs, ss_network_module="lycoris.kohya", ss_network_args=args))
    assert (cand.family, cand.kind, cand.variant) == ("sd1", "lycoris", "locon")


def test_sd3_kohya_lora_from_joint_blocks() -> None:
    mods = [
        (f"joint_blocks.{i}.{s}_block.attn.qkv", (3 * 1536, 1536))
        for i in range(24)
        for s in ("x", "context")
    ]
    (cand,) = _adapters(_index(ad.kohya_lora([("lora_unet_", mods)])))
    assert (cand.family, cand.kind) == ("sd3", "lora")
    assert cand.facts["hidden_size"] == 1536
    assert any("SD3.5 medium shares the width" in e for e in cand.evidence)


def test_umt5_and_clip_are_family_any_with_users() -> None:
    from modelsafe.plugins.builtin.family_components import modelsafe_identify

    (cand,) = modelsafe_identify(_index(co.clip_g()))
    assert (cand.family, cand.kind, cand.variant) == ("any", "text_encoder", "clip_g")
    assert "sdxl" in cand.facts["used_by"]
