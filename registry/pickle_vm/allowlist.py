"""The callables a weights-only load may reach: what torch's weights-only unpickler accepts.

Mirrors ``torch/_weights_only_unpickler.py::_get_allowed_globals`` (torch 2.x): storages and tensor
classes, the ``torch._utils._rebuild_*`` helpers, dtypes, ``collections.OrderedDict``, a few
builtins that only build data, plus numpy's array reconstruction helpers (which torch accepts only
after ``add_safe_globals``; they build arrays and call nothing else). The list is data, never
imported: a name matches or it does not.
"""

from __future__ import annotations

_DTYPES = (
    "float64 float32 float16 bfloat16 complex128 complex64 complex32 int64 int32 int16 int8 uint8 "
    "uint16 uint32 uint64 bool qint8 qint32 quint8 quint4x2 quint2x4 float8_e4m3fn float8_e5m2 "
    "float8_e4m3fnuz float8_e5m2fnuz float8_e8m0fnu float4_e2m1fn_x2 bits1x8 bits2x4 bits4x2 "
    "bits8 bits16 uint1 uint2 uint3 uint4 uint5 uint6 uint7 int1 int2 int3 int4 int5 int6 int7 "
    "double float half long int short cfloat cdouble"
).split()

_STORAGE_TYPES = (
    "Double Float Half Long Int Short Char Byte Bool BFloat16 ComplexDouble ComplexFloat QInt8 "
    "QInt32 QUInt8 QUInt4x2 QUInt2x4"
).split()

_TENSOR_TYPES = (
    "Double Float Half Long Int Short Char Byte Bool BFloat16 ComplexDouble ComplexFloat"
)

TENSOR_REBUILDERS = frozenset(
    f"torch._utils.{name}"
    for name in (
        "_rebuild_parameter",
        "_rebuild_parameter_with_state",
        "_rebuild_qtensor",
        "_rebuild_tensor",
        "_rebuild_tensor_v2",
        "_rebuild_tensor_v3",
        "_rebuild_sparse_tensor",
        "_rebuild_meta_tensor_no_storage",
        "_rebuild_nested_tensor",
        "_rebuild_wrapper_subclass",
        "_rebuild_device_tensor_from_numpy",
        "_rebuild_device_tensor_from_cpu_tensor",
    )
) | {"torch._tensor._rebuild_from_type_v2"}

NUMPY_HELPERS = frozenset(
    f"{mod}.{name}"
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
) | {"numpy.ndarray", "numpy.dtype"}


# Allowed here (they only build data, or name a type that does not exist, which no load can
# call), but torch 2.13's weights-only unpickler refuses them: a dtype alias (torch keys dtypes
# by ``str(dtype)``: ``torch.float32``, never ``torch.float``), ``frozenset`` (which
# ``torch.save`` writes for a frozenset value), and tensor/storage classes torch does not have.
WEIGHTS_ONLY_REFUSES = frozenset(
    {
        "builtins.frozenset",
        *(f"torch.{d}" for d in "double float half long int short cfloat cdouble".split()),
        *(f"{p}.Complex{t}Tensor" for p in ("torch", "torch.cuda") for t in ("Double", "Float")),
        *(f"torch.cuda.{t}Storage" for t in "QInt8 QInt32 QUInt8 QUInt4x2 QUInt2x4".split()),
        *(
            f"{p}.{t}Tensor"
            for p in ("torch.sparse", "torch.cuda.sparse")
            for t in ("Bool", "ComplexDouble", "ComplexFloat")
        ),
    }
)


def _build() -> frozenset[str]:
    names: set[str] = {
        "collections.OrderedDict",
        "collections.Counter",
        "torch.nn.parameter.Parameter",
        "torch.serialization._get_layout",
        "torch.Size",
        "torch.Tensor",
        "torch.device",
        "_codecs.encode",
        "builtins.bytearray",
        "builtins.set",
        "builtins.frozenset",
        "builtins.complex",
        "torch.storage.TypedStorage",
        "torch.storage.UntypedStorage",
        "torch.per_tensor_affine",
        "torch.per_tensor_symmetric",
        "torch.per_channel_affine",
        "torch.per_channel_symmetric",
        "torch.per_channel_affine_float_qparams",
    }
    names.update(f"torch.{d}" for d in _DTYPES)
    for prefix in ("torch", "torch.cuda"):
        names.update(f"{prefix}.{t}Storage" for t in _STORAGE_TYPES)
    for prefix in ("torch", "torch.cuda", "torch.sparse", "torch.cuda.sparse"):
        names.update(f"{prefix}.{t}Tensor" for t in _TENSOR_TYPES.split())
    names.update(TENSOR_REBUILDERS)
    names.update(NUMPY_HELPERS)
    return frozenset(names)


ALLOWED_GLOBALS: frozenset[str] = _build()


def is_allowed(module: str, name: str) -> bool:
    """True when ``module.name`` may be referenced by a file we call safe."""
    return f"{module}.{name}" in ALLOWED_GLOBALS


def needs_torch_opt_in(dotted: str) -> bool:
    """Allowed here, but torch.load(weights_only=True) refuses it without add_safe_globals."""
    return dotted in NUMPY_HELPERS or dotted in WEIGHTS_ONLY_REFUSES
