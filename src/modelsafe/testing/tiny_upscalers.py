"""Tiny random-weight upscalers for tests: ESRGAN RRDBNet state dicts in each key style
(Real-ESRGAN/BasicSR, original ``model.N``, ESRGAN-repo ``RRDB_trunk``) and Real-ESRGAN's
compact SRVGGNet, saved as real safetensors files::

    from modelsafe.testing.tiny_upscalers import old_style, save, tiny_rrdbnet_state
    save(old_style(tiny_rrdbnet_state()), tmp_path / "4x-tiny.safetensors")

Needs torch.
"""

from __future__ import annotations

from pathlib import Path

import torch

from modelsafe.runtime.upscalers.compact import CompactConfig, build_compact
from modelsafe.runtime.upscalers.esrgan import RRDBConfig, build_rrdbnet

TINY = RRDBConfig(
    in_channels=3, out_channels=3, features=8, growth=4, blocks=2, upsamples=2, unshuffle=1
)


def tiny_rrdbnet_state(config: RRDBConfig = TINY, seed: int = 0) -> dict[str, torch.Tensor]:
    """Canonical (Real-ESRGAN / BasicSR) keys, random weights scaled small."""
    with torch.random.fork_rng(devices=[]):  # the caller's RNG state is left alone
        torch.manual_seed(seed)
        model = build_rrdbnet(config)
    return {k: (v * 0.5).contiguous() for k, v in model.state_dict().items()}


def old_style(state: dict[str, torch.Tensor], config: RRDBConfig = TINY) -> dict[str, torch.Tensor]:
    """The same weights under the original ESRGAN ``model.N`` names."""
    ups = config.upsamples
    rename = {"conv_first": "model.0", "conv_body": f"model.1.sub.{config.blocks}"}
    rename.update({f"conv_up{i + 1}": f"model.{3 + 3 * i}" for i in range(ups)})
    rename.update({"conv_hr": f"model.{3 * ups + 2}", "conv_last": f"model.{3 * ups + 4}"})
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        head, rest = key.rsplit(".", 1)
        if key.startswith("body."):
            _, block, rdb, conv, what = key.split(".")
            out[f"model.1.sub.{block}.RDB{rdb[3:]}.{conv}.0.{what}"] = value
        else:
            out[f"{rename[head]}.{rest}"] = value
    return out


def trunk_style(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same weights under the ESRGAN repository's ``RRDB_trunk`` names."""
    out: dict[str, torch.Tensor] = {}
    renames = {"conv_body": "trunk_conv", "conv_hr": "HRconv"}
    for key, value in state.items():
        head, rest = key.split(".", 1)
        if head == "body":
            block, rdb, conv_what = rest.split(".", 2)
            out[f"RRDB_trunk.{block}.RDB{rdb[3:]}.{conv_what}"] = value
        elif head.startswith("conv_up"):
            out[f"upconv{head[7:]}.{rest}"] = value
        else:
            out[f"{renames.get(head, head)}.{rest}"] = value
    return out


def tiny_compact_state(scale: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_compact(CompactConfig(in_channels=3, features=8, convs=2, scale=scale))
    return {k: (v * 0.5).contiguous() for k, v in model.state_dict().items()}


def save(state: dict[str, torch.Tensor], path: Path) -> Path:
    from safetensors.torch import save_file

    save_file(state, str(path))
    return path
