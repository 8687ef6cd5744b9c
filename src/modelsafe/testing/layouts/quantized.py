"""Layouts turned into the packed forms quantizers save them in, and a writer for them.

- :func:`bnb_4bit`: bitsandbytes 4-bit (NF4/FP4), as ``Params4bit`` + ``QuantState.as_dict(
  packed=True)`` save each Linear weight: U8 ``[ceil(numel/2), 1]`` beside ``.absmax``,
  ``.quant_map`` (``.nested_absmax``/``.nested_quant_map`` when double-quantized) and
  ``.quant_state.bitsandbytes__nf4``, whose U8 bytes are JSON holding the original shape and dtype
  (Forge's ``flux1-dev-bnb-nf4*.safetensors``, diffusers' bnb-4bit transformers);
- :func:`comfy_nvfp4`: ComfyUI's NVFP4 (``comfy_quant``): U8 ``[out, in/2]``, an F8
  ``weight_scale`` ``[out, in/16]``, ``weight_scale_2``, ``input_scale`` and a ``comfy_quant``
  marker (JSON bytes) per layer;
- :func:`comfy_fp8`: ComfyUI's newer fp8 form: F8 weight, ``weight_scale``, ``input_scale`` and
  a ``comfy_quant`` marker per layer;
- :func:`nunchaku_int4`: nunchaku's SVDQuant int4 transformers (``svdq-int4_r32-*``): each
  block Linear as I8 ``qweight`` ``[out, in/2]`` + ``wscales`` ``[in/64, out]`` + smoothing
  factors + a low-rank ``proj_down``/``proj_up`` branch, the modulation layers as AWQ int4
  (I32 ``qweight`` ``[out/4, in/2]``, ``wscales``, ``wzeros``); q/k/v are left unfused here.

The small tensors a reader must read (quant states, markers) come back as bytes, for
:func:`write_packed` to write into an otherwise sparse file.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from modelsafe.testing.safetensors_writer import TensorSpec, safetensors_header, write_safetensors
from modelsafe.types import DTYPE_SIZES

Specs = list[TensorSpec]
Blobs = dict[str, bytes]
_TORCH_DTYPES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}


def _linear_weight(name: str, shape: tuple[int, ...], under: str) -> bool:
    return name.startswith(under) and name.endswith(".weight") and len(shape) == 2


def bnb_4bit(
    specs: Iterable[TensorSpec],
    under: str = "",
    quant_type: str = "nf4",
    nested: bool = True,
    blocksize: int = 64,
) -> tuple[Specs, Blobs]:
    """``specs`` with every Linear weight under ``under`` bitsandbytes-4-bit packed, and the
    bytes of each quant state (JSON, as bitsandbytes' pack_dict_to_tensor writes it)."""
    out: Specs = []
    blobs: Blobs = {}
    for name, dtype, shape in specs:
        if not _linear_weight(name, shape, under):
            out.append((name, dtype, shape))
            continue
        numel = math.prod(shape)
        blocks = math.ceil(numel / blocksize)
        out.append((name, "U8", ((numel + 1) // 2, 1)))
        state: dict[str, object] = {
            "quant_type": quant_type,
            "blocksize": blocksize,
            "dtype": _TORCH_DTYPES.get(dtype, "bfloat16"),
            "shape": list(shape),
        }
        if nested:
            out.append((name + ".absmax", "U8", (blocks,)))
            out.append((name + ".nested_absmax", "F32", (math.ceil(blocks / 256),)))
            out.append((name + ".nested_quant_map", "F32", (256,)))
            state.update(nested_blocksize=256, nested_dtype="float32", nested_offset=0.0315)
        else:
            out.append((name + ".absmax", "F32", (blocks,)))
        out.append((name + ".quant_map", "F32", (16,)))
        raw = json.dumps(state).encode()
        key = f"{name}.quant_state.bitsandbytes__{quant_type}"
        out.append((key, "U8", (len(raw),)))
        blobs[key] = raw
    return out, blobs


def _comfy_marker(base: str, fmt: str, out: Specs, blobs: Blobs) -> None:
    raw = json.dumps({"format": fmt}).encode()
    out.append((base + ".comfy_quant", "U8", (len(raw),)))
    blobs[base + ".comfy_quant"] = raw


def comfy_nvfp4(
    specs: Iterable[TensorSpec], under: str = "", skip: tuple[str, ...] = ()
) -> tuple[Specs, Blobs]:
    """``specs`` with the Linear weights under ``under`` (not naming any of ``skip``, and whose
    input width divides by 16) in ComfyUI's NVFP4 form, and the bytes of their markers."""
    out: Specs = []
    blobs: Blobs = {}
    for name, dtype, shape in specs:
        if not _linear_weight(name, shape, under) or any(s in name for s in skip) or shape[1] % 16:
            out.append((name, dtype, shape))
            continue
        base = name[: -len(".weight")]
        out.append((name, "U8", (shape[0], shape[1] // 2)))
        out.append((base + ".weight_scale", "F8_E4M3", (shape[0], shape[1] // 16)))
        out.append((base + ".weight_scale_2", "F32", ()))
        out.append((base + ".input_scale", "F32", ()))
        _comfy_marker(base, "nvfp4", out, blobs)
    return out, blobs


def comfy_fp8(
    specs: Iterable[TensorSpec], under: str = "", skip: tuple[str, ...] = ()
) -> tuple[Specs, Blobs]:
    """``specs`` with the Linear weights under ``under`` in ComfyUI's newer fp8 form."""
    out: Specs = []
    blobs: Blobs = {}
    for name, dtype, shape in specs:
        if not _linear_weight(name, shape, under) or any(s in name for s in skip):
            out.append((name, dtype, shape))
            continue
        base = name[: -len(".weight")]
        out.append((name, "F8_E4M3", shape))
        out.append((base + ".weight_scale", "F32", ()))
        out.append((base + ".input_scale", "F32", ()))
        _comfy_marker(base, "float8_e4m3fn", out, blobs)
    return out, blobs


_BLOCKS = ("transformer_blocks.", "single_transformer_blocks.")
_MODULATION = re.compile(
    r"(img_mod\.1|txt_mod\.1|norm1\.linear|norm1_context\.linear|norm\.linear)$"
)


def nunchaku_int4(specs: Iterable[TensorSpec], rank: int = 32, fp4: bool = False) -> Specs:
    """``specs`` (a diffusers transformer) with its block Linears in nunchaku's int4 forms
    (``fp4``: its NVFP4 form, ``svdq-fp4_*``: F8 scales, one per 16 values, and per-tensor
    ``wtscale``/``wcscales``)."""
    out: Specs = []
    for name, dtype, shape in specs:
        if not (_linear_weight(name, shape, "") and name.startswith(_BLOCKS)):
            out.append((name, dtype, shape))
            continue
        base, (o, i) = name[: -len(".weight")], shape
        if fp4 and not _MODULATION.search(base):
            out.append((base + ".wscales", "F8_E4M3", (i // 16, o)))
            out += [(base + ".wtscale", "F32", (1,)), (base + ".wcscales", "BF16", (o,))]
        else:
            out.append((base + ".wscales", "BF16", (i // 64, o)))
        if _MODULATION.search(base):
            out.append((base + ".qweight", "I32", (o // 4, i // 2)))
            out.append((base + ".wzeros", "BF16", (i // 64, o)))
            continue
        out.append((base + ".qweight", "I8", (o, i // 2)))
        out += [
            (base + ".smooth_factor", "BF16", (i,)),
            (base + ".smooth_factor_orig", "BF16", (i,)),
        ]
        out += [(base + ".proj_down", "BF16", (i, rank)), (base + ".proj_up", "BF16", (o, rank))]
    return out


def write_packed(
    path: str | os.PathLike[str], specs: Iterable[TensorSpec], blobs: Mapping[str, bytes]
) -> Path:
    """A sparse safetensors file of ``specs`` whose tensors named in ``blobs`` hold those bytes."""
    specs = list(specs)
    path = write_safetensors(path, specs)
    head, _size = safetensors_header(specs)
    offsets: dict[str, int] = {}
    at = len(head)
    for name, dtype, shape in specs:
        offsets[name] = at
        at += math.ceil(math.prod(shape) * DTYPE_SIZES[dtype])
    with open(path, "r+b") as fh:
        for name, raw in blobs.items():
            fh.seek(offsets[name])
            fh.write(raw)
    return path
