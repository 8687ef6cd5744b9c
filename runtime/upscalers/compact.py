"""Real-ESRGAN's compact network (SRVGGNetCompact) in torch, built from its state dict.

``body.0`` is a 3x3 conv (input channels -> F), ``body.1`` a per-channel PReLU; then N pairs of
(3x3 conv F -> F, PReLU); the last conv maps F to out x scale^2 channels, pixel-shuffled by the
scale and added to the nearest-upsampled input. Scale = sqrt(last conv outputs / input channels).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelsafe.errors import UsageError
from modelsafe.runtime.upscalers.esrgan import strip_wrapper


@dataclass(frozen=True)
class CompactConfig:
    in_channels: int
    features: int
    convs: int  # the F -> F convs between the first and the last
    scale: int


def is_compact(state: Mapping[str, Any]) -> bool:
    state = strip_wrapper(state)
    return bool(state) and all(k.startswith("body.") for k in state) and "body.1.weight" in state


def read_config(state: Mapping[str, Any]) -> CompactConfig:
    indices = sorted({int(k.split(".")[1]) for k in state})
    convs = [i for i in indices if state[f"body.{i}.weight"].dim() == 4]
    first = state[f"body.{convs[0]}.weight"].shape
    last = state[f"body.{convs[-1]}.weight"].shape
    in_ch = int(first[1])
    ratio = int(last[0]) // in_ch
    scale = math.isqrt(ratio)
    if scale * scale != ratio or scale < 1:
        raise UsageError(f"SRVGGNet last conv has {last[0]} outputs: not {in_ch} x a square")
    return CompactConfig(in_ch, int(first[0]), len(convs) - 2, scale)


def build_compact(config: CompactConfig) -> Any:
    import torch
    from torch import nn
    from torch.nn import functional as F  # noqa: N812

    class SRVGGNetCompact(nn.Module):
        def __init__(self, c: CompactConfig) -> None:
            super().__init__()
            self.scale = c.scale
            layers: list[nn.Module] = [nn.Conv2d(c.in_channels, c.features, 3, 1, 1)]
            layers.append(nn.PReLU(num_parameters=c.features))
            for _ in range(c.convs):
                layers += [nn.Conv2d(c.features, c.features, 3, 1, 1)]
                layers += [nn.PReLU(num_parameters=c.features)]
            layers.append(nn.Conv2d(c.features, c.in_channels * c.scale**2, 3, 1, 1))
            self.body = nn.Sequential(*layers)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = F.pixel_shuffle(self.body(x), self.scale)
            return out + F.interpolate(x, scale_factor=self.scale, mode="nearest")

    return SRVGGNetCompact(config)


def load_compact(state: Mapping[str, Any]) -> tuple[Any, CompactConfig]:
    state = strip_wrapper(state)
    config = read_config(state)
    model = build_compact(config)
    try:
        model.load_state_dict(dict(state), strict=True)
    except RuntimeError as exc:
        raise UsageError(f"the weights do not fit an SRVGGNetCompact: {exc}") from exc
    return model.eval(), config
