"""ESRGAN's RRDBNet in torch, built from a state dict in any of its three key styles.

The network (Wang et al. 2018, "ESRGAN"; the same in Real-ESRGAN):

- ``conv_first`` (3x3, input channels -> F features), after an optional pixel-unshuffle of the
  input by 2 or 4 (Real-ESRGAN's x2 and x1 models fold it into ``conv_first``'s input channels);
- a trunk of B residual-in-residual dense blocks: each RRDB is three dense blocks, each dense
  block five 3x3 convs whose inputs grow by G channels (LeakyReLU 0.2 after the first four), the
  last conv's output scaled by 0.2 and added to the block input; the RRDB adds 0.2 x its
  output to its input; then ``conv_body`` (3x3), added to the trunk's input;
- U upsampling steps, each nearest x2 then a 3x3 conv and LeakyReLU; ``conv_hr`` and
  ``conv_last`` (3x3 each, LeakyReLU between).

Scale = 2^U / unshuffle. Key styles, all mapped to the canonical (BasicSR/Real-ESRGAN) names:

- ``conv_first``, ``body.N.rdbK.convM``, ``conv_body``, ``conv_upI``, ``conv_hr``, ``conv_last``
  (Real-ESRGAN, BasicSR), optionally under ``params_ema.``/``params.``;
- ``conv_first``, ``RRDB_trunk.N.RDBK.convM``, ``trunk_conv``, ``upconvI``, ``HRconv``,
  ``conv_last`` (the ESRGAN repository's RRDBNet_arch);
- ``model.0``, ``model.1.sub.N.RDBK.convM.0``, ``model.1.sub.B``, ``model.<i>`` for the upsampling
  convs then HR conv and last conv (the original ESRGAN models, e.g. 4x-UltraSharp).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelsafe.errors import UsageError

WRAPPERS = ("params_ema.", "params.", "module.")
_OLD_CONV = re.compile(r"^model\.(\d+)\.(weight|bias)$")
_OLD_RDB = re.compile(r"^model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)$")
_OLD_TRUNK = re.compile(r"^model\.1\.sub\.(\d+)\.(weight|bias)$")
_TRUNK_RDB = re.compile(r"^RRDB_trunk\.(\d+)\.RDB(\d)\.conv(\d)\.(weight|bias)$")
_TRUNK_RENAMES = {"trunk_conv": "conv_body", "HRconv": "conv_hr"}
_UPCONV = re.compile(r"^(?:upconv|conv_up)(\d+)\.(weight|bias)$")


@dataclass(frozen=True)
class RRDBConfig:
    """The shape of one RRDBNet, read from its weights."""

    in_channels: int
    out_channels: int
    features: int
    growth: int
    blocks: int
    upsamples: int
    unshuffle: int

    @property
    def scale(self) -> int:
        return 2**self.upsamples // self.unshuffle


def strip_wrapper(state: Mapping[str, Any]) -> dict[str, Any]:
    """``state`` without a training wrapper prefix (``params_ema.`` ...) shared by every key."""
    for prefix in WRAPPERS:
        if state and all(k.startswith(prefix) for k in state):
            return {k[len(prefix) :]: v for k, v in state.items()}
    return dict(state)


def is_rrdbnet(state: Mapping[str, Any]) -> bool:
    keys = set(state)
    return "model.0.weight" in keys or (
        "conv_first.weight" in keys and ("conv_body.weight" in keys or "trunk_conv.weight" in keys)
    )


def to_canonical(state: Mapping[str, Any]) -> dict[str, Any]:
    """The state dict under canonical names, whichever key style it came in."""
    state = strip_wrapper(state)
    if "model.0.weight" in state:
        return _from_old(state)
    out: dict[str, Any] = {}
    for key, value in state.items():
        head, _, tail = key.partition(".")
        if m := _TRUNK_RDB.match(key):
            block, rdb, conv, what = m.groups()
            out[f"body.{block}.rdb{rdb}.conv{conv}.{what}"] = value
        elif m := _UPCONV.match(key):
            out[f"conv_up{m.group(1)}.{m.group(2)}"] = value
        elif head in _TRUNK_RENAMES:
            out[f"{_TRUNK_RENAMES[head]}.{tail}"] = value
        else:
            out[key] = value
    return out


def _from_old(state: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    convs: dict[int, dict[str, Any]] = {}
    for key, value in state.items():
        if m := _OLD_RDB.match(key):
            block, rdb, conv, what = m.groups()
            out[f"body.{block}.rdb{rdb}.conv{conv}.{what}"] = value
        elif m := _OLD_TRUNK.match(key):
            out[f"conv_body.{m.group(2)}"] = value
        elif m := _OLD_CONV.match(key):
            convs.setdefault(int(m.group(1)), {})[m.group(2)] = value
        else:
            raise UsageError(f"unexpected key {key!r} in an ESRGAN (model.N) state dict")
    order = sorted(convs)
    if len(order) < 3 or order[0] != 0:
        raise UsageError(
            "an ESRGAN (model.N) state dict needs model.0, upsampling, HR and last convs"
        )
    names = ["conv_first"] + [f"conv_up{i + 1}" for i in range(len(order) - 3)]
    names += ["conv_hr", "conv_last"]
    for name, index in zip(names, order, strict=True):
        for what, value in convs[index].items():
            out[f"{name}.{what}"] = value
    return out


def read_config(state: Mapping[str, Any]) -> RRDBConfig:
    """The network's shape from canonical weights; a clear error when they do not fit."""
    try:
        first = tuple(state["conv_first.weight"].shape)
        last = tuple(state["conv_last.weight"].shape)
        growth = int(state["body.0.rdb1.conv1.weight"].shape[0])
    except KeyError as exc:
        raise UsageError(f"not an RRDBNet (ESRGAN) state dict: no {exc.args[0]}") from exc
    blocks = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("body."))
    upsamples = sum(1 for k in state if re.fullmatch(r"conv_up\d+\.weight", k))
    out_channels = int(last[0])
    ratio = int(first[1]) // out_channels if out_channels else 1
    root = math.isqrt(ratio)
    unshuffle = root if root * root == ratio and root > 1 else 1
    return RRDBConfig(
        in_channels=int(first[1]) // (unshuffle * unshuffle),
        out_channels=out_channels,
        features=int(first[0]),
        growth=growth,
        blocks=blocks,
        upsamples=upsamples,
        unshuffle=unshuffle,
    )


def build_rrdbnet(config: RRDBConfig) -> Any:
    """An RRDBNet module (random weights) of ``config``'s shape."""
    import torch
    from torch import nn
    from torch.nn import functional as F  # noqa: N812

    class DenseBlock(nn.Module):
        def __init__(self, features: int, growth: int) -> None:
            super().__init__()
            for i in range(5):
                out = features if i == 4 else growth
                setattr(self, f"conv{i + 1}", nn.Conv2d(features + i * growth, out, 3, 1, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            feats = [x]
            for i in range(1, 5):
                conv = getattr(self, f"conv{i}")
                feats.append(F.leaky_relu(conv(torch.cat(feats, 1)), 0.2))
            last = getattr(self, "conv5")  # noqa: B009 - set by name above
            return x + 0.2 * last(torch.cat(feats, 1))

    class RRDB(nn.Module):
        def __init__(self, features: int, growth: int) -> None:
            super().__init__()
            self.rdb1 = DenseBlock(features, growth)
            self.rdb2 = DenseBlock(features, growth)
            self.rdb3 = DenseBlock(features, growth)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + 0.2 * self.rdb3(self.rdb2(self.rdb1(x)))

    class RRDBNet(nn.Module):
        def __init__(self, c: RRDBConfig) -> None:
            super().__init__()
            self.config = c
            nf = c.features
            self.conv_first = nn.Conv2d(c.in_channels * c.unshuffle**2, nf, 3, 1, 1)
            self.body = nn.Sequential(*(RRDB(nf, c.growth) for _ in range(c.blocks)))
            self.conv_body = nn.Conv2d(nf, nf, 3, 1, 1)
            for i in range(c.upsamples):
                setattr(self, f"conv_up{i + 1}", nn.Conv2d(nf, nf, 3, 1, 1))
            self.conv_hr = nn.Conv2d(nf, nf, 3, 1, 1)
            self.conv_last = nn.Conv2d(nf, c.out_channels, 3, 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.config.unshuffle > 1:
                x = F.pixel_unshuffle(x, self.config.unshuffle)
            feat = self.conv_first(x)
            feat = feat + self.conv_body(self.body(feat))
            for i in range(self.config.upsamples):
                up = F.interpolate(feat, scale_factor=2, mode="nearest")
                feat = F.leaky_relu(getattr(self, f"conv_up{i + 1}")(up), 0.2)
            return self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))

    return RRDBNet(config)


def load_rrdbnet(state: Mapping[str, Any]) -> tuple[Any, RRDBConfig]:
    """The RRDBNet that ``state`` (any key style) holds, its weights loaded, in eval mode."""
    canonical = to_canonical(state)
    config = read_config(canonical)
    model = build_rrdbnet(config)
    try:
        model.load_state_dict(canonical, strict=True)
    except RuntimeError as exc:
        raise UsageError(f"the ESRGAN weights do not fit an RRDBNet: {exc}") from exc
    return model.eval(), config
