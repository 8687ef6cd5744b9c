"""Find, check, load and run an upscaler model for ``modelsafe generate --upscale MODEL``.

``MODEL`` is a path, a catalog name or a hash prefix. The file must be identified as kind
``upscaler`` by the registry's detectors, with an architecture this module runs (ESRGAN's
RRDBNet in its three key styles, Real-ESRGAN's compact SRVGGNet) and a known scale. Weights are
read only after the audit found the file safe: safetensors directly, a pickle only through
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelsafe.errors import UsageError
from modelsafe.paths import user_path

if TYPE_CHECKING:
    from modelsafe.registry.catalog import Catalog

ARCHITECTURES = ("esrgan", "real-esrgan-compact")
# Images are upscaled in tiles of this many input pixels a side (overlapping by TILE_PAD), so a
# 1024 px image does not need the whole network's activations at once.
TILE = 256
TILE_PAD = 16


@dataclass(frozen=True)
class UpscalerInfo:
    path: Path
    architecture: str
    scale: int


def find_upscaler(ref: Path | str, catalog: Catalog | None = None) -> Path:
    """The file ``ref`` names: a path, or a catalog name / hash prefix."""
    path = user_path(ref)
    if path.exists():
        return path
    looks_like_path = isinstance(ref, Path) or "/" in str(ref) or "\\" in str(ref) or path.suffix
    if catalog is None or looks_like_path:
        from modelsafe.errors import FileReadError

        raise FileReadError(
            f"the upscaler {str(ref)!r} does not exist"
            + ("" if looks_like_path else ", and there is no catalog to look it up in"),
            hint="give the path of an ESRGAN-family model, or a name / hash prefix from "
            "`modelsafe ls --kind upscaler`",
        )
    from modelsafe.errors import ModelNotFoundError
    from modelsafe.registry.catalog.queries import file_on_disk, find_model

    with catalog.session() as session:
        try:
            model = find_model(session, str(ref))
        except ModelNotFoundError as exc:
            raise ModelNotFoundError(
                f"no upscaler {str(ref)!r}: it is not a file, and {exc.reason}", exc.hint
            ) from exc
        found = file_on_disk(model)
        kind = model.kind
    if kind != "upscaler":
        raise UsageError(
            f"{str(ref)!r} is not an upscaler (the catalog says kind {kind})",
            hint="`modelsafe ls --kind upscaler` lists the upscalers it knows",
        )
    if found is not None:
        return found
    raise UsageError(
        f"the upscaler {str(ref)!r} is in the catalog but not on disk",
        hint="put the file back, or `modelsafe scan` its folder again",
    )


def describe_upscaler(path: Path) -> UpscalerInfo:
    """What the detectors say ``path`` is; refused unless an upscaler this module can run."""
    from modelsafe.registry.inspect import inspect_path

    report = inspect_path(path)
    if report.kind != "upscaler":
        what = f"{report.family}/{report.kind}" if report.kind != "unknown" else "not recognised"
        raise UsageError(
            f"{path} is not an upscaler ({what})",
            hint="--upscale takes an ESRGAN-family model (`modelsafe inspect` says kind upscaler)",
        )
    facts = dict(report.facts or {})
    arch, scale = str(facts.get("architecture", "")), facts.get("scale")
    if arch not in ARCHITECTURES:
        raise UsageError(
            f"{path} is a {arch or 'unknown'} upscaler; modelsafe runs ESRGAN (RRDBNet) and "
            "Real-ESRGAN compact models",
            hint="use an ESRGAN / Real-ESRGAN model",
        )
    if not isinstance(scale, int) or scale < 1:
        raise UsageError(f"cannot tell the scale of the upscaler {path}")
    return UpscalerInfo(path, arch, scale)


def read_weights(path: Path) -> dict[str, Any]:
    """The tensors of an upscaler file, after the audit (refused unless safe)."""
    from modelsafe.runtime.diffusers_loader import load_state_dict
    from modelsafe.runtime.generate import audited_load

    with audited_load([path]):
        state = load_state_dict(path)
    for key in ("params_ema", "params"):  # Real-ESRGAN's training checkpoints nest the weights
        if isinstance(state.get(key), dict):
            return dict(state[key])
    return state


_LOADED: dict[tuple[str, tuple[Any, ...]], tuple[Any, int]] = {}


def load_upscaler(path: Path) -> tuple[Any, int]:
    """The upscaling network in ``path`` (eval mode, on the CPU) and its scale; cached per file
    while the file is unchanged."""
    from modelsafe.runtime.generate import stat_key
    from modelsafe.runtime.upscalers import compact, esrgan

    key = (str(path.resolve()), stat_key(path))
    if key in _LOADED:
        return _LOADED[key]
    state = esrgan.strip_wrapper(read_weights(path))
    if esrgan.is_rrdbnet(state):
        model, rrdb = esrgan.load_rrdbnet(state)
        found = (model, rrdb.scale)
    elif compact.is_compact(state):
        model, small = compact.load_compact(state)
        found = (model, small.scale)
    else:
        raise UsageError(f"{path} holds neither an RRDBNet nor an SRVGGNet upscaler")
    _LOADED.clear()  # one upscaler in memory at a time
    _LOADED[key] = found
    return found


def upscale_image(image: Any, path: Path, device: str = "cpu", dtype: str = "fp32") -> Any:
    """``image`` (PIL) upscaled by the model in ``path``; text ``info`` entries are kept."""
    import numpy as np
    import torch
    from PIL import Image

    from modelsafe.runtime.diffusers_loader import torch_dtype

    model, scale = load_upscaler(path)
    wanted = torch_dtype("fp32" if device.split(":")[0] == "cpu" else dtype)
    model = model.to(device=device, dtype=wanted)
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    x = torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0).to(device=device, dtype=wanted)
    with torch.inference_mode():
        y = _tiled(model, x, scale)
    out = (y.squeeze(0).permute(1, 2, 0).float().clamp(0, 1) * 255.0).round().byte().cpu()
    result = Image.fromarray(out.numpy(), "RGB")
    result.info.update({k: v for k, v in image.info.items() if isinstance(v, str)})
    model.to("cpu")
    return result


def _tiled(model: Any, x: Any, scale: int) -> Any:
    """Run ``model`` over ``x`` in overlapping tiles; each output tile keeps its inner part."""
    _, channels, height, width = x.shape
    if height <= TILE and width <= TILE:
        return model(x)
    out = x.new_zeros((1, channels, height * scale, width * scale))
    for top in range(0, height, TILE):
        for left in range(0, width, TILE):
            bottom, right = min(top + TILE, height), min(left + TILE, width)
            t0, l0 = max(top - TILE_PAD, 0), max(left - TILE_PAD, 0)
            b1, r1 = min(bottom + TILE_PAD, height), min(right + TILE_PAD, width)
            tile = model(x[:, :, t0:b1, l0:r1])
            out[:, :, top * scale : bottom * scale, left * scale : right * scale] = tile[
                :,
                :,
                (top - t0) * scale : (bottom - t0) * scale,
                (left - l0) * scale : (right - l0) * scale,
            ]
    return out
