"""AnimateDiff motion modules (and MotionLoRAs) and Flux Redux were "no detector recognised
this layout": they are kinds of their own (``motion_module``, ``style_model``), with the base
they go beside, their folders, and refused as a part of a generation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modelsafe.registry.folders import folder_report
from modelsafe.registry.inspect import inspect_path
from modelsafe.testing import write_safetensors
from modelsafe.testing.layouts.base_models import Specs
from modelsafe.testing.layouts.components import meta_state_dict

_SD1_LEVELS = (320, 640, 1280, 1280)
_SDXL_LEVELS = (320, 640, 1280)


def _motion_adapter(levels: tuple[int, ...], frames: int, mid: bool) -> Specs:
    """diffusers' MotionAdapter (as ``animatediff-motion-adapter-v1-5-2`` ships it)."""
    config = {
        "block_out_channels": levels,
        "motion_layers_per_block": 2,
        "motion_mid_block_layers_per_block": 1,
        "motion_num_attention_heads": 8,
        "motion_norm_num_groups": 32,
        "motion_max_seq_length": frames,
        "use_motion_mid_block": mid,
    }
    return meta_state_dict("MotionAdapter", config, "F16")


def _original(specs: Specs) -> Specs:
    """The same weights in guoyww's names (diffusers' conversion script, reversed): a
    ``temporal_transformer`` per module, ``attention_blocks``/``norms``/``ff_norm``, and the
    positional table ``pos_encoder.pe`` ``[1, frames, width]`` each attention block saves."""
    out: Specs = []
    for name, dtype, shape in specs:
        head, sep, rest = name.partition(".motion_modules.")
        if not sep:
            out.append((name, dtype, shape))
            continue
        index, _, rest = rest.partition(".")
        for new, old in ((".attention_blocks.0", ".attn1"), (".attention_blocks.1", ".attn2")):
            rest = rest.replace(old, new)
        rest = rest.replace(".norm1", ".norms.0").replace(".norm2", ".norms.1")
        rest = rest.replace(".norm3", ".ff_norm").replace(".pos_embed.pe", ".pos_encoder.pe")
        out.append((f"{head}.motion_modules.{index}.temporal_transformer.{rest}", dtype, shape))
    return out


@pytest.mark.parametrize(
    ("levels", "frames", "mid", "naming", "want"),
    [
        (_SD1_LEVELS, 32, True, "original", ("sd1", "v2")),  # mm_sd_v15_v2.ckpt
        (_SD1_LEVELS, 32, True, "diffusers", ("sd1", "v2")),
        (_SD1_LEVELS, 24, False, "original", ("sd1", "v1")),  # mm_sd_v15.ckpt
        (_SDXL_LEVELS, 32, False, "original", ("sdxl", None)),  # mm_sdxl_v10_beta.ckpt
    ],
)
def test_animatediff_motion_modules(
    levels: tuple[int, ...],
    frames: int,
    mid: bool,
    naming: str,
    want: tuple[str, str | None],
    tmp_path: Path,
) -> None:
    specs = _motion_adapter(levels, frames, mid)
    specs = _original(specs) if naming == "original" else specs
    assert any(n.endswith(".pe") for n, _, _ in specs)
    report = inspect_path(write_safetensors(tmp_path / "mm.safetensors", specs))
    assert (report.family, report.kind, report.variant) == (want[0], "motion_module", want[1])
    assert report.confidence >= 0.9
    assert report.facts["levels"] == list(levels) and report.facts["max_frames"] == frames
    assert report.facts["naming"] == naming and report.facts["mid_block"] is mid
    assert any(f"clips up to {frames} frames" in e for e in report.evidence)
    # its folder is ComfyUI-AnimateDiff-Evolved's, not ComfyUI's loras/
    problems = folder_report(
        str(tmp_path / "loras" / "mm.safetensors"), report.family, "motion_module"
    )
    assert problems and "animatediff_models/" in " ".join(problems)
    assert not folder_report(
        str(tmp_path / "animatediff_models" / "mm.safetensors"), "sd1", "motion_module"
    )


def test_a_motion_lora_is_a_motion_module_add_on(tmp_path: Path) -> None:
    # guoyww's v2_lora_ZoomIn.ckpt: LoRA pairs on the motion modules' attention projections
    specs: Specs = []
    for block, width in enumerate(_SD1_LEVELS):
        for module in range(2):
            prefix = f"down_blocks.{block}.motion_modules.{module}.temporal_transformer"
            for attn in (0, 1):
                for proj in ("to_q", "to_k", "to_v", "to_out"):
                    base = f"{prefix}.transformer_blocks.0.attention_blocks.{attn}.processor"
                    specs.append((f"{base}.{proj}_lora.down.weight", "F16", (128, width)))
                    specs.append((f"{base}.{proj}_lora.up.weight", "F16", (width, 128)))
    report = inspect_path(write_safetensors(tmp_path / "v2_lora_ZoomIn.safetensors", specs))
    assert (report.family, report.kind, report.variant) == ("sd1", "motion_module", "motion_lora")
    assert any("MotionLoRA" in e for e in report.evidence)


def test_flux_redux_is_a_flux_style_model(tmp_path: Path) -> None:
    # comfy/ldm/flux/redux.py: ReduxImageEncoder(redux_dim=1152, txt_in_features=4096)
    specs: Specs = [
        ("redux_down.bias", "BF16", (4096,)),
        ("redux_down.weight", "BF16", (4096, 12288)),
        ("redux_up.bias", "BF16", (12288,)),
        ("redux_up.weight", "BF16", (12288, 1152)),
    ]
    report = inspect_path(write_safetensors(tmp_path / "flux1-redux-dev.safetensors", specs))
    assert (report.family, report.kind, report.variant) == ("flux1", "style_model", "redux")
    assert report.facts["image_encoder"] == "siglip_so400m_patch14_384"
    assert report.parameter_count == 4096 * 12288 + 4096 + 12288 * 1152 + 12288
    assert not folder_report(
        str(tmp_path / "style_models" / "r.safetensors"), "flux1", "style_model"
    )
    assert folder_report(str(tmp_path / "checkpoints" / "r.safetensors"), "flux1", "style_model")


def test_add_ons_given_as_the_checkpoint_are_refused_by_what_they_are(
    tmp_path: Path, run_cli: Any
) -> None:
    # (generate said "cannot tell which model family mm_sd_v15_v2.safetensors is; pass
    # --family", which cannot help)
    specs = _original(_motion_adapter(_SD1_LEVELS, 32, True))
    motion = write_safetensors(tmp_path / "mm_sd_v15_v2.safetensors", specs)
    code, _, err = run_cli("generate", "--checkpoint", str(motion), "--prompt", "x")
    assert code == 2 and "Traceback" not in err
    assert "mm_sd_v15_v2.safetensors is a motion module (SD1), not a model" in err, err
    assert "generate does not use a motion module" in err
    lora = [
        (
            "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight",
            "F16",
            (4, 768),
        ),
        (
            "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight",
            "F16",
            (320, 4),
        ),
    ]
    path = write_safetensors(tmp_path / "style.safetensors", lora)
    code, _, err = run_cli("generate", "--checkpoint", str(path), "--prompt", "x")
    assert code == 2 and "style.safetensors is a lora (SD1), not a model" in err, err
    assert "--lora PATH:WEIGHT" in err
