"""VRAM need of a model's weights, per component and precision (formula: docs/vram.md).

``estimate_component_vram`` asks the ``modelsafe_estimate_vram`` plugins (the built-in
``vram_estimator`` answers last, so a third-party estimator overrides it) and falls back to
:func:`estimate_weights`, the documented formula:

    bytes(component, p) = sum over its tensors t of  numel(t) * size(p, t)

where size(p, t) is 4 / 2 / 2 bytes for fp32 / fp16 / bf16 when t is floating point; for fp8 it
is 1 byte for the weight and bias of a Linear/Conv layer and 2 bytes (the compute dtype) for
everything diffusers' layerwise casting leaves alone (norms, embeddings, ``pos_embed``,
``patch_embed``, top-level ``proj_in``/``proj_out``, T5's ``wo``); T5's ``wo`` is 4 bytes at
fp16 (transformers keeps it in fp32 then). Integer tensors and GGUF block-quantised tensors keep
their stored size at every precision except when a precision asks to dequantise (fp32/fp16/bf16
of a GGUF tensor = numel * 4/2/2); so do packed 4-bit weights (bitsandbytes NF4/FP4, ComfyUI
NVFP4, counted at their logical shape), whose quantization state (absmax, scales) counts only
while they stay quantised (native, fp8). Activations are not weights: they
depend on resolution and batch, and ``modelsafe plan`` adds them (``modelsafe.runtime.vram_model``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from modelsafe.registry.model_parts import split_components
from modelsafe.types import (
    DTYPE_SIZES,
    PACKED_DTYPES,
    TensorIndex,
    TensorInfo,
    quant_state_names,
)

# The order is the order of tensor_sizes()'s answer after the stored size.
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16", "fp8")
PRECISION_BYTES: dict[str, float] = {"fp32": 4, "fp16": 2, "bf16": 2, "fp8": 1}
FLOAT_DTYPES = frozenset(
    {"F64", "F32", "F16", "BF16", "F4"}
    | {"F8_E4M3", "F8_E5M2", "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ"}
)
# diffusers hooks/layerwise_casting.py DEFAULT_SKIP_MODULES_PATTERN (kept in compute precision).
_FP8_SKIP = re.compile(r"(pos_embed|patch_embed|norm|(^|\.)ln_|^proj_in$|^proj_out$)")
# Embedding tables are not Linear/Conv layers: layerwise casting leaves them alone too.
_EMBEDDING_LEAVES = (
    "token_embedding",
    "position_embedding",
    "shared",
    "embed_tokens",
    "wte",
    "relative_attention_bias",  # T5
)
# Layers transformers keeps in full precision (``_keep_in_fp32_modules``): T5's feed-forward
# output ``wo``, about a fifth of T5-XXL's parameters. Loaded in fp16 they stay fp32 (bf16: bf16),
# and modelsafe's fp8 storage leaves them as loaded, as diffusers does for its own models.
_KEEP_IN_FP32 = re.compile(r"(^|\.)DenseReluDense\.wo$")
ESTIMATOR_NOTE = (
    "weights only; activations depend on resolution and batch: `modelsafe plan` adds them "
    "(formula and sources: docs/vram.md)"
)


def _layer_ndim(tensors: list[TensorInfo]) -> dict[str, int]:
    """Module name -> ndim of its ``weight`` (2 Linear, 4/5 Conv)."""
    return {t.name[: -len(".weight")]: len(t.shape) for t in tensors if t.name.endswith(".weight")}


def fp8_castable(module: str, param: str, layer_ndim: dict[str, int]) -> bool:
    """True when diffusers' layerwise casting would store ``module.param`` in fp8.

    Only the weight and bias of Linear/Conv layers (``layer_ndim[module] >= 2``) are cast.
    """
    if param not in ("weight", "bias") or layer_ndim.get(module, 0) < 2:
        return False
    leaf = module.rpartition(".")[2]
    if leaf in _EMBEDDING_LEAVES or "embedding" in leaf and "linear" not in leaf:
        return False
    return _FP8_SKIP.search(module) is None and _KEEP_IN_FP32.search(module) is None


def tensor_sizes(tensor: TensorInfo, castable: bool, held_fp32: bool) -> tuple[int, ...]:
    """Bytes ``tensor`` takes as stored and at each precision of :data:`PRECISIONS`.

    ``castable``: fp8 would store it (:func:`fp8_castable`); ``held_fp32``: transformers keeps
    it in fp32 when the model is loaded in fp16 (T5's ``wo``).
    """
    numel = tensor.numel
    stored = tensor.nbytes or int(numel * DTYPE_SIZES.get(tensor.dtype, 0))
    if tensor.dtype in FLOAT_DTYPES:
        return (
            stored,
            numel * 4,
            numel * (4 if held_fp32 else 2),
            numel * 2,
            numel * (1 if castable else 2),
        )
    if tensor.dtype in DTYPE_SIZES and tensor.dtype not in PACKED_DTYPES:
        return (stored,) * 5  # integers, bools: kept as they are
    # GGUF quantised blocks, packed 4-bit weights (NF4, NVFP4): fp8 keeps the (smaller or
    # equal) quantised storage; a float precision means dequantising.
    return (stored, numel * 4, numel * 2, numel * 2, stored)


def weights_by_precision(tensors: Iterable[TensorInfo]) -> dict[str, int]:
    """``parameters``, bytes at ``native`` and every precision in :data:`PRECISIONS`, and
    ``largest_layer_fp16``: the biggest module (weight + bias + ...) at fp16, which is what
    sequential offload keeps on the GPU."""
    tensors = list(tensors)
    layer_ndim = _layer_ndim(tensors)
    state = quant_state_names(tensors)
    totals = [0, 0, 0, 0, 0]
    per_module: dict[str, int] = {}
    parameters = 0
    for t in tensors:
        module, _, param = t.name.rpartition(".")
        if t.name in state:  # a packed weight's absmax/scales: gone once it is dequantised
            totals[0] += t.nbytes
            totals[4] += t.nbytes
            continue
        held = _KEEP_IN_FP32.search(module) is not None
        sizes = tensor_sizes(t, fp8_castable(module, param, layer_ndim), held)
        for i, size in enumerate(sizes):
            totals[i] += size
        per_module[module] = per_module.get(module, 0) + sizes[2]
        parameters += t.numel
    out = {"parameters": parameters, "native": totals[0]}
    out.update(zip(PRECISIONS, totals[1:], strict=True))
    out["largest_layer_fp16"] = max(per_module.values(), default=0)
    return out


def estimate_weights(
    index: TensorIndex, family: str, kind: str, facts: dict[str, Any]
) -> dict[str, Any]:
    """The built-in formula: weight bytes per component and precision (see module docstring)."""
    comps = split_components(index, family, kind)
    components: dict[str, dict[str, int]] = {}
    for comp in comps:
        if comp.role == "other" and len(comps) > 1:
            continue  # EMA copies and stray keys are not loaded for inference
        components[comp.name] = weights_by_precision(comp.tensors)
    total: dict[str, Any] = {
        key: sum(c[key] for c in components.values()) for key in ("native", *PRECISIONS)
    }
    skipped = sum(
        t.nbytes for c in comps if c.role == "other" and len(comps) > 1 for t in c.tensors
    )
    total["components"] = components
    if skipped:
        total["not_loaded_bytes"] = skipped
    total["estimator"] = "vram_estimator"
    total["note"] = ESTIMATOR_NOTE
    return total


def estimate_component_vram(
    index: TensorIndex, family: str, kind: str, facts: dict[str, Any]
) -> dict[str, Any]:
    """VRAM of ``index``'s weights: the first estimator plugin's well-formed answer, else the
    formula. A malformed answer (see :func:`estimate_problem`) is recorded as that plugin's
    failure and the next estimator (in the end the built-in one) answers."""
    from modelsafe.plugin_manager import get_plugin_manager

    pm = get_plugin_manager()
    for plugin, answer in pm.call_each(
        "modelsafe_estimate_vram", index=index, family=family, kind=kind, facts=facts
    ):
        wrong = estimate_problem(answer)
        if wrong:
            pm.record_failure(plugin, "modelsafe_estimate_vram", wrong)
            continue
        answer = dict(answer)
        answer.setdefault("estimator", plugin)
        return answer
    return estimate_weights(index, family, kind, facts)


_SIZE_KEYS = ("native", *PRECISIONS)


def estimate_problem(answer: object) -> str:
    """What is wrong with an estimator's answer ("" if nothing): it must be a dict whose sizes
    (``native``, every precision, ``parameters``...), where given, are numbers (int or float,
    not negative), and whose ``components``, when given, is a dict of such dicts."""
    if not isinstance(answer, dict):
        return f"returned {type(answer).__name__} {answer!r:.60}, not a dict"
    wrong = _sizes_problem(answer, "")
    if wrong:
        return wrong
    components = answer.get("components", {})
    if not isinstance(components, dict):
        return f"returned components {components!r:.60}, not a dict"
    for name, sizes in components.items():
        if not isinstance(sizes, dict):
            return f"returned component {name!r} as {sizes!r:.60}, not a dict"
        wrong = _sizes_problem(sizes, f"component {name!r}: ")
        if wrong:
            return wrong
    return ""


def _sizes_problem(sizes: dict[Any, Any], where: str) -> str:
    for key in (*_SIZE_KEYS, "parameters", "largest_layer_fp16", "not_loaded_bytes"):
        value = sizes.get(key, 0)
        if not _is_size(value):
            return f"returned {where}{key} = {value!r:.40}, not a number of bytes"
    return ""


def _is_size(value: object) -> bool:
    import math
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Real):  # (numpy numbers are)
        return False
    number = float(value)
    return math.isfinite(number) and number >= 0
