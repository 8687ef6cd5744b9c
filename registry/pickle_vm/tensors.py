"""Read torch's tensor records out of a symbolic pickle result, the way torch.load would build them.

The VM leaves ``Call(torch._utils._rebuild_tensor_v2, (PersistentRef(...), offset, size, stride,
...))`` records on its result; this module turns them into :class:`TensorRecord` values (storage
key, dtype, shape, stride, storage offset) named by their flattened state-dict key, and keeps the
plain values (numbers, strings) it meets on the way. Nothing is imported or called.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from modelsafe.registry.pickle_vm.limits import DEFAULT_LIMITS, Limits
from modelsafe.registry.pickle_vm.symbols import (
    Call,
    Global,
    LargeBytes,
    PersistentRef,
    SymDict,
    SymSet,
    describe,
)
from modelsafe.types import DTYPE_SIZES, Finding

# torch storage class -> safetensors dtype name.
STORAGE_DTYPES: dict[str, str] = {
    "DoubleStorage": "F64",
    "FloatStorage": "F32",
    "HalfStorage": "F16",
    "BFloat16Storage": "BF16",
    "LongStorage": "I64",
    "IntStorage": "I32",
    "ShortStorage": "I16",
    "CharStorage": "I8",
    "ByteStorage": "U8",
    "BoolStorage": "BOOL",
    "ComplexFloatStorage": "C64",
    "ComplexDoubleStorage": "C128",
}

# torch dtype attribute name -> safetensors dtype name.
TORCH_DTYPES: dict[str, str] = {
    "float64": "F64",
    "double": "F64",
    "float32": "F32",
    "float": "F32",
    "float16": "F16",
    "half": "F16",
    "bfloat16": "BF16",
    "int64": "I64",
    "long": "I64",
    "int32": "I32",
    "int": "I32",
    "int16": "I16",
    "short": "I16",
    "int8": "I8",
    "uint8": "U8",
    "uint16": "U16",
    "uint32": "U32",
    "uint64": "U64",
    "bool": "BOOL",
    "complex64": "C64",
    "cfloat": "C64",
    "complex128": "C128",
    "cdouble": "C128",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
    "float8_e8m0fnu": "F8_E8M0",
    "float8_e4m3fnuz": "F8_E4M3FNUZ",
    "float8_e5m2fnuz": "F8_E5M2FNUZ",
}

# Quantized storage classes -> a dtype of the same item size (their bytes are sized, never read).
QUANTIZED_STORAGE_SIZES: dict[str, str] = {
    "QInt8Storage": "I8",
    "QUInt8Storage": "U8",
    "QInt32Storage": "I32",
    "QUInt4x2Storage": "U8",
    "QUInt2x4Storage": "U8",
}

_MAX_WRAPS = 16  # Parameter(_rebuild_parameter(...)) nesting a real checkpoint never exceeds
_MAX_STORAGE_SEARCH = 10_000  # values searched for storages inside one unsupported tensor
_MAX_PATH = 1024  # a flattened key longer than this is not extended (deep nesting)
_PLAIN_REBUILD = {"_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3"}
_PARAMETER = {"_rebuild_parameter", "_rebuild_parameter_with_state"}
# Attributes whose setting changes a tensor's values (torch._utils._set_obj_state applies a saved
# attribute state with setattr): ``data`` re-points it at another tensor, ``real`` and ``imag``
# copy into it. Dunder names (``__class__``, ``__dict__``) are refused too.
_DATA_ATTRIBUTES = frozenset({"data", "real", "imag"})
# Index of the ``metadata`` argument per rebuild function: torch.save writes it only for conj()
# and _neg_view() tensors, and torch.load sets the conjugate or negative bit for a "conj" or
# "neg" key whatever its value ({"neg": False} negates too): any metadata is refused.
_METADATA_ARG = {"_rebuild_tensor_v2": 6, "_rebuild_tensor_v3": 7}
# Plain values kept beside the tensors (for convert's ``modelsafe.values``): bounded so a hostile
# pickle cannot make the walk keep millions. Optimizer and scheduler state (a ``params`` list of
# one int per parameter) has its own, smaller budget, so it never crowds out ``epoch``,
# ``global_step`` or ``hyper_parameters``; what a budget leaves out is counted, by top-level key,
# in ``values_omitted``.
_MAX_VALUES = 1000
_MAX_BOOKKEEPING_VALUES = 200
_BOOKKEEPING = frozenset(
    {
        "optimizer",
        "optimizers",
        "optimizer_states",
        "optimizer_state",
        "optimizer_state_dict",
        "optim",
        "lr_scheduler",
        "lr_schedulers",
        "scheduler",
        "schedulers",
        "scheduler_state_dict",
        "scaler",
        "grad_scaler",
        "amp",
    }
)
_MAX_OMITTED_GROUPS = 50  # top-level keys named in values_omitted; the rest counted together
_OTHER_KEYS = "(other keys)"
# A text value is kept whole up to the size of the whole metadata budget (a longer one could not
# fit in it); a longer one is cut to its first _TEXT_PREVIEW characters (a reference to the VM's
# own string otherwise: no copy) and named in values_omitted.
_MAX_TEXT = 64 * 1024
_TEXT_PREVIEW = 4096
# Dict keys that are not text become tensor names as ``str(key)`` does (``(1, 2)``, ``b'raw'``)
# when they are plain constants of bounded size.
_MAX_KEY_ITEMS = 64
_MAX_KEY_DEPTH = 8
_MAX_KEY_BITS = 2048
_NUMPY_MULTIARRAY = ("numpy.core.multiarray", "numpy._core.multiarray")
NUMPY_ARRAY_REASON = "a numpy array (pickled inside data.pkl), not a torch tensor"
MAX_DIM = 1 << 63  # no real tensor has a size, stride or offset this large
MAX_ELEMENTS = 1 << 64  # ... nor this many elements


def bounded_prod(values: Any, limit: int = MAX_ELEMENTS) -> int | None:
    """The product of non-negative ints, or None when it exceeds ``limit`` (stops early, so a
    shape of thousands of huge ints costs no more than a few multiplications)."""
    product = 1
    for value in values:
        if value == 0:
            return 0
    for value in values:
        product *= value
        if product > limit:
            return None
    return product


@dataclass(frozen=True)
class StorageRef:
    """One storage as a persistent id names it. ``numel`` counts elements of ``itemsize`` bytes."""

    key: str
    dtype: str  # safetensors dtype name, "" when the storage is untyped
    numel: int
    location: str
    view: tuple[str, int, int] | None = None  # legacy storage views: (view key, offset, size)

    @property
    def itemsize(self) -> int:
        """Bytes per element of ``numel`` (1 when the storage is untyped)."""
        return int(DTYPE_SIZES[self.dtype]) if self.dtype else 1


@dataclass(frozen=True)
class TensorRecord:
    """One tensor as torch.load would rebuild it (no data)."""

    name: str
    storage: StorageRef
    dtype: str
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    storage_offset: int  # in elements
    parameter: bool = False

    @property
    def itemsize(self) -> int:
        return int(DTYPE_SIZES[self.dtype])

    @cached_property
    def numel(self) -> int:
        # (shapes are checked plausible, every size and the product under 2**64, before a
        # record is made: see bounded_prod)
        return bounded_prod(self.shape) or 0

    @property
    def nbytes(self) -> int:
        return self.numel * self.itemsize

    @property
    def contiguous(self) -> bool:
        if self.numel == 0:
            return True
        expected = 1
        for size, stride in zip(reversed(self.shape), reversed(self.stride), strict=True):
            if size != 1 and stride != expected:
                return False
            expected *= size
        return True


@dataclass
class Interpretation:
    """The tensors and plain values a torch pickle holds, and what was odd about it."""

    tensors: list[TensorRecord] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)  # tensors modelsafe cannot rebuild
    dropped: list[str] = field(default_factory=list)  # tensors outside the unwrapped state_dict
    # numpy arrays (``numpy.core.multiarray._reconstruct``: the array's bytes are inside the
    # pickle, not a storage): never tensors of the output, wherever they are
    numpy_arrays: list[str] = field(default_factory=list)
    # plain values left out of ``values`` or cut short: name (or top-level key) -> why
    values_omitted: dict[str, str] = field(default_factory=dict)
    # Why some tensors get no flat name of their own (a safetensors file needs one per tensor):
    # two that flatten to the same name, a key path too long to extend. torch.load does not care;
    # convert refuses.
    name_problems: list[str] = field(default_factory=list)
    unwrapped: str = ""  # the top-level key whose dict became the state dict ("" = none)
    storages: dict[str, StorageRef] = field(default_factory=dict)


class _Walker:
    def __init__(self, label: str, limits: Limits) -> None:
        self.out = Interpretation()
        self.label = label
        self.budget = limits.max_walk_nodes
        self.active: set[int] = set()
        self.bookkeeping_values = 0  # of out.values, how many are optimizer/scheduler state
        self.capped: dict[str, int] = {}  # values a budget left out, by top-level key
        self.views: dict[str, StorageRef] = {}  # legacy storage views, by view key
        self.ambiguous_views: set[str] = set()

    def finding(self, severity: str, code: str, message: str, where: str = "") -> None:
        self.out.findings.append(Finding(severity, code, message, where or self.label))

    # -- structure ------------------------------------------------------------------------------

    def walk(self, value: Any, path: str, keep: bool, bad_key: str = "") -> None:
        """Depth-first, in order, with an explicit stack: any nesting depth, no recursion.
        ``bad_key``: why a key on the way to ``value`` has no text name ("" when all have)."""
        todo: list[tuple[Any, str, bool, str]] = [(value, path, False, bad_key)]
        while todo:
            value, path, leaving, bad_key = todo.pop()
            if leaving:
                self.active.discard(id(value))
                continue
            self.budget -= 1
            if self.budget < 0:
                if self.budget == -1:
                    self.finding("error", "limit", "the pickle's object graph is too large to walk")
                return
            if id(value) in self.active:
                continue  # a container that holds itself: pickle allows it, tensors never need it
            if isinstance(value, Call) and any(
                _is(value.func, module, "_reconstruct") for module in _NUMPY_MULTIARRAY
            ):
                self.out.numpy_arrays.append(path)  # (its state holds its bytes: not walked)
                continue
            tensor = self.tensor(value, path)
            if tensor is not None:
                if keep:
                    if bad_key and len(self.out.name_problems) < 8:
                        self.out.name_problems.append(
                            f"the tensor {path!r} is under a dict key that is {bad_key}, which "
                            "has no plain text form (only text, numbers, bytes and tuples of "
                            "them do)"
                        )
                    self.out.tensors.append(tensor)
                else:
                    self.out.dropped.append(tensor.name)
                continue
            children = self.children(value)
            if children is None:
                self.leaf(value, path)
                continue
            self.active.add(id(value))
            todo.append((value, path, True, bad_key))
            if len(path) > _MAX_PATH and not self.out.name_problems:
                self.out.name_problems.append(
                    f"a key path longer than {_MAX_PATH} characters ({path[:48]}...)"
                )
            for key, child in reversed(children):
                name, problem = self.key(key)
                todo.append((child, _join(path, name), False, bad_key or problem))

    def children(self, value: Any) -> list[tuple[Any, Any]] | None:
        """A container's (key, child) pairs, keys as in the pickle (see :meth:`key`); a dict's
        as Python builds it (see :func:`_dict_pairs`)."""
        if isinstance(value, (list, tuple)):
            return list(enumerate(value))
        return _dict_pairs(value)

    def key(self, key: Any) -> tuple[str, str]:
        """A dict key as a name part: ``str(key)``, what torch.load's key gives, for text,
        numbers, bytes (``b'raw'``; protocol 2 pickles them as a ``_codecs.encode`` call) and
        tuples of them (``(1, 2)``); for anything else a description, and why it is no name."""
        if isinstance(key, str):
            return key, ""
        constant = _constant(key, _MAX_KEY_DEPTH, [_MAX_KEY_ITEMS])
        if constant is not _NOT_CONSTANT:
            return str(constant), ""
        described = describe(key)
        return described, described

    def leaf(self, value: Any, path: str) -> None:
        group = path.partition(".")[0]
        bookkeeping = group.lower() in _BOOKKEEPING
        if bookkeeping and self.bookkeeping_values >= _MAX_BOOKKEEPING_VALUES:
            self.cap(group)
            return
        if not bookkeeping and len(self.out.values) - self.bookkeeping_values >= _MAX_VALUES:
            self.cap(group)
            return
        kept = self.plain_value(value, path)
        if kept is _NOT_CONSTANT:
            return
        self.out.values[path] = kept
        if bookkeeping:
            self.bookkeeping_values += 1

    def cap(self, group: str) -> None:
        if group not in self.capped and len(self.capped) >= _MAX_OMITTED_GROUPS:
            group = _OTHER_KEYS
        self.capped[group] = self.capped.get(group, 0) + 1

    def omit(self, path: str, why: str) -> None:
        self.out.values_omitted[path] = why

    def plain_value(self, value: Any, path: str) -> Any:
        """What ``modelsafe.values`` keeps of a leaf (_NOT_CONSTANT: nothing)."""
        if isinstance(value, bool) or value is None or isinstance(value, float):
            return value
        if isinstance(value, int):
            return (
                value
                if abs(value) < 1 << 63
                else str(value)
                if value.bit_length() < 10_000
                else f"<a {value.bit_length()}-bit integer>"
            )
        if isinstance(value, str):
            if len(value) <= _MAX_TEXT:
                return value
            self.omit(path, f"cut at {_TEXT_PREVIEW} of its {len(value)} characters")
            return value[:_TEXT_PREVIEW]
        if isinstance(value, LargeBytes) and value.text:
            self.omit(path, f"a text of {value.length} bytes, too long to keep")
            return f"<a text of {value.length} bytes>"
        if isinstance(value, (bytes, LargeBytes)):
            size = value.length if isinstance(value, LargeBytes) else len(value)
            return self.placeholder(path, f"<{size} bytes>", f"{size} bytes, kept as their size")
        if isinstance(value, SymSet):
            size = len(value.items)
            return self.placeholder(path, f"<set of {size}>", f"a set of {size}, kept as its size")
        if isinstance(value, Call) and _is(value.func, "_codecs", "encode"):  # (protocol 2 bytes)
            data = _constant(value, 0, [1])
            if isinstance(data, bytes):
                size = len(data)
                return self.placeholder(
                    path, f"<{size} bytes>", f"{size} bytes, kept as their size"
                )
        if isinstance(value, Call) and (text := _as_text(value)) is not None:
            return text
        if isinstance(value, Call) and _is(value.func, "torch", "Size") and value.args:
            return [v for v in _ints(value.args[0]) or []]
        if isinstance(value, Call) and any(
            _is(value.func, module, "scalar") for module in _NUMPY_MULTIARRAY
        ):
            number = _numpy_scalar(value)
            if number is not _NOT_CONSTANT:
                return number
        if isinstance(value, Call):
            kind = describe(value.func)
            return self.placeholder(path, f"<{kind}>", f"a {kind} object, kept as its type")
        if isinstance(value, Global):
            return f"<{value.dotted}>"
        return _NOT_CONSTANT

    def placeholder(self, path: str, text: str, why: str) -> str:
        """``text``, kept in place of a value that is not kept itself, which ``values_omitted``
        names (nothing is left out silently)."""
        self.omit(path, why)
        return text

    def finish(self) -> None:
        """Name what the value budgets left out, by top-level key, in ``values_omitted``."""
        for group, count in self.capped.items():
            limit = _MAX_BOOKKEEPING_VALUES if group.lower() in _BOOKKEEPING else _MAX_VALUES
            what = (
                "optimizer and scheduler values" if limit == _MAX_BOOKKEEPING_VALUES else "values"
            )
            name = group if group == _OTHER_KEYS else f"{group}.*" if group else "(root)"
            self.out.values_omitted[name] = (
                f"{count} value{'s' if count != 1 else ''} left out: over the "
                f"{limit}-value limit for {what}"
            )

    # -- tensors --------------------------------------------------------------------------------

    def tensor(self, value: Any, name: str, depth: int = 0) -> TensorRecord | None:
        if not isinstance(value, Call) or not isinstance(value.func, Global):
            return None
        if depth > _MAX_WRAPS:
            self.finding("error", "bad-tensor", f"{name}: a tensor wrapped too many times")
            return None
        func = value.func
        args = value.args
        changed = self.data_change(value) if _rebuilds_tensor(func) else ""
        if changed:
            self.out.unsupported.append(f"{name} ({changed})")
            self.used_storages(value, name)
            return None
        if func.module == "torch._utils" and func.name in _PARAMETER:
            refused = len(self.out.unsupported)
            inner = self.tensor(args[0], name, depth + 1) if args else None
            if inner is None:
                if len(self.out.unsupported) == refused:
                    self.finding("error", "bad-tensor", f"{name}: a parameter without tensor data")
                return None
            return TensorRecord(
                inner.name,
                inner.storage,
                inner.dtype,
                inner.shape,
                inner.stride,
                inner.storage_offset,
                parameter=True,
            )
        if _is(func, "torch.nn.parameter", "Parameter"):
            inner = self.tensor(args[0], name, depth + 1) if args else None
            return inner
        if _is(func, "torch._tensor", "_rebuild_from_type_v2"):
            if len(args) >= 3 and isinstance(args[2], tuple):
                rebuilt = Call(args[0], args[2], None, "REDUCE", value.pos)
                return self.tensor(rebuilt, name, depth + 1)
            return None
        if func.module == "torch._utils" and func.name in _PLAIN_REBUILD:
            return self.plain(func.name, args, name)
        if func.module == "torch._utils" and func.name.startswith("_rebuild_"):
            self.out.unsupported.append(f"{name} ({func.name})")
            self.used_storages(args, name)
            return None
        return None

    def data_change(self, call: Call) -> str:
        """Why the state torch.load applies to this tensor (BUILD, a saved attribute state, the
        conjugate/negative metadata) may give it other values than its storage's bytes ("" when
        it cannot). convert refuses such a tensor rather than write other data than torch.load
        gives; torch.save writes none of these for a plain tensor or parameter."""
        if call.state is not None:
            return (
                "a BUILD state, which torch.load applies to the tensor (Tensor.set_ or "
                "__setstate__: it may point it at other data)"
            )
        func, args = call.func, call.args
        if func.name in ("_rebuild_parameter_with_state", "_rebuild_from_type_v2"):
            return self.attribute_change(args[3]) if len(args) > 3 else ""
        index = _METADATA_ARG.get(func.name)
        if index is not None and len(args) > index and _truthy(args[index]):
            keys = [describe(key) for key, _ in _dict_pairs(args[index]) or []][:4]
            return (
                f"its metadata {', '.join(keys) or describe(args[index])} marks a conjugate or "
                "negative view: torch.load gives other values than its bytes"
            )
        return ""

    def attribute_change(self, state: Any) -> str:
        """What a saved attribute state (torch._utils._set_obj_state: a dict, or a (dict, slots)
        pair, applied with setattr) sets that changes the tensor's values or type ("" if none)."""
        parts = state if isinstance(state, tuple) else (state,)
        if isinstance(state, tuple) and len(state) != 2:
            return f"a malformed attribute state {describe(state)}"
        for part in parts:
            if not _truthy(part):
                continue
            pairs = _dict_pairs(part)
            if pairs is None:
                return f"an attribute state that is {describe(part)}, not a dict"
            for key, _ in pairs:
                if not isinstance(key, str) or key.startswith("__") or key in _DATA_ATTRIBUTES:
                    return (
                        f"its saved attributes set {describe(key)}, which changes what "
                        "torch.load gives"
                    )
        return ""

    def used_storages(self, args: Any, name: str) -> None:
        """Register the storages a tensor modelsafe cannot rebuild still reads (sparse indices and
        values, quantized data...): torch.load reads them, so their bytes are part of the file."""
        todo: list[Any] = [args]
        seen = 0
        while todo and seen < _MAX_STORAGE_SEARCH:
            seen += 1
            value = todo.pop()
            if isinstance(value, PersistentRef):
                self.storage(value, name, register_only=True)
            elif isinstance(value, (tuple, list)):
                todo.extend(value)
            elif isinstance(value, Call):
                todo.extend(value.args)
                todo.append(value.state)
            elif isinstance(value, SymDict):
                todo.extend(v for _, v in value.items)

    def plain(self, kind: str, args: tuple[Any, ...], name: str) -> TensorRecord | None:
        need = {"_rebuild_tensor": 4, "_rebuild_tensor_v2": 6, "_rebuild_tensor_v3": 7}[kind]
        if len(args) < need:
            self.finding("error", "bad-tensor", f"{name}: {kind} with {len(args)} arguments")
            return None
        storage = self.storage(args[0], name)
        offset, shape, stride = args[1], _ints(args[2]), _ints(args[3])
        if storage is None:
            return None
        if not isinstance(offset, int) or offset < 0 or shape is None or stride is None:
            self.finding("error", "bad-tensor", f"{name}: offset/size/stride are not integers")
            return None
        if len(shape) != len(stride) or any(s < 0 for s in shape + stride):
            self.finding("error", "bad-tensor", f"{name}: size and stride do not match")
            return None
        if (
            offset > MAX_DIM
            or any(s > MAX_DIM for s in shape + stride)
            or bounded_prod(shape) is None
        ):
            self.finding(
                "error",
                "bad-tensor",
                f"{name}: a size, stride or offset too large for any tensor "
                f"({len(shape)} dimensions)",
            )
            return None
        dtype = storage.dtype
        if kind == "_rebuild_tensor_v3":
            dtype = self.dtype(args[6], name) or ""
        if not dtype:
            if kind == "_rebuild_tensor_v3":
                return None
            self.finding("error", "bad-tensor", f"{name}: untyped storage without a dtype")
            return None
        record = TensorRecord(name, storage, dtype, shape, stride, offset)
        if storage.view is not None and record.itemsize != storage.itemsize:
            # torch.load places a legacy view in storage elements, modelsafe's readers in the
            # tensor's: refused rather than read at another place (no real file does this).
            self.out.unsupported.append(f"{name} (a legacy storage view read as another dtype)")
            return None
        storage_bytes = storage.numel * storage.itemsize
        if record.numel:
            last = offset + sum((s - 1) * st for s, st in zip(shape, stride, strict=True))
            if (last + 1) * record.itemsize > storage_bytes:
                self.finding(
                    "error",
                    "bad-tensor",
                    f"{name}: size/stride/offset read past the end of storage {storage.key!r}",
                )
                return None
        return record

    def dtype(self, value: Any, name: str) -> str | None:
        if isinstance(value, Global) and value.module == "torch":
            found = TORCH_DTYPES.get(value.name)
            if found:
                return found
            self.out.unsupported.append(f"{name} (dtype torch.{value.name})")
            return None
        self.finding("error", "bad-tensor", f"{name}: dtype is {describe(value)}")
        return None

    def storage(self, value: Any, name: str, register_only: bool = False) -> StorageRef | None:
        if not isinstance(value, PersistentRef):
            self.finding("error", "bad-tensor", f"{name}: storage is {describe(value)}")
            return None
        pid = value.pid
        where = f"{self.label} @ byte {value.pos}"
        if not isinstance(pid, tuple) or not pid or pid[0] not in ("storage", b"storage"):
            # The VM made this an unsafe "persistent-id" finding where the PERSID appears.
            self.finding("error", "bad-tensor", f"{name}: storage is not a torch storage", where)
            return None
        if len(pid) not in (5, 6) or not isinstance(pid[1], Global):
            self.finding("error", "bad-storage", f"{name}: malformed storage reference", where)
            return None
        cls, key, location, numel = pid[1], pid[2], pid[3], pid[4]
        if not isinstance(key, str) or not isinstance(numel, int) or not 0 <= numel <= MAX_DIM:
            self.finding("error", "bad-storage", f"{name}: malformed storage reference", where)
            return None
        if cls.name in ("UntypedStorage", "TypedStorage"):
            dtype = ""
        elif cls.name in STORAGE_DTYPES:
            dtype = STORAGE_DTYPES[cls.name]
        elif register_only and cls.name in QUANTIZED_STORAGE_SIZES:
            dtype = QUANTIZED_STORAGE_SIZES[cls.name]  # only to size its bytes
        else:
            self.out.unsupported.append(f"{name} (storage {cls.dotted})")
            return None
        view = None
        if len(pid) == 6 and pid[5] is not None:
            meta = pid[5]
            if not (
                isinstance(meta, tuple)
                and len(meta) == 3
                and isinstance(meta[0], str)
                and isinstance(meta[1], int)
                and isinstance(meta[2], int)
            ):
                self.finding("error", "bad-storage", f"{name}: malformed storage view", where)
                return None
            view = (meta[0], meta[1], meta[2])
        ref = StorageRef(key, dtype, numel, str(location), view)
        known = self.out.storages.get(key)
        if known is not None and (known.dtype, known.numel) != (ref.dtype, ref.numel):
            self.finding(
                "unsafe",
                "ambiguous-storage",
                f"storage {key!r} is declared twice with different types or sizes",
                where,
            )
        self.out.storages.setdefault(key, ref)
        if key in self.views:
            self.ambiguous_view(key, where)
        if view is not None:
            if view[1] < 0 or view[2] < 0 or view[1] + view[2] > numel:
                self.finding("error", "bad-storage", f"{name}: storage view out of range", where)
                return None
            viewed = StorageRef(key, dtype, view[2], ref.location, view)
            if self.views.setdefault(view[0], viewed) != viewed or view[0] in self.out.storages:
                self.ambiguous_view(view[0], where)
            return viewed
        return ref

    def ambiguous_view(self, view_key: str, where: str) -> None:
        """A legacy storage view key declared again differently, or also a storage's key:
        torch.load keeps whichever object it met first under that key (deserialized_objects),
        whatever the later declaration says. Said once per view key."""
        if view_key in self.ambiguous_views:
            return
        self.ambiguous_views.add(view_key)
        self.finding(
            "unsafe",
            "ambiguous-storage",
            f"storage view {view_key!r} is declared twice with different storages, offsets or "
            "sizes, or is also a storage's key: torch.load gives every use the first one",
            where,
        )


class _NotConstant:
    pass


_NOT_CONSTANT: Any = _NotConstant()


def _constant(value: Any, depth: int, items: list[int]) -> Any:
    """``value`` as the plain Python constant torch.load would give (str, int, float, bool,
    None, bytes, tuples of them), or _NOT_CONSTANT; ``items`` bounds the elements looked at."""
    items[0] -= 1
    if items[0] < 0 or depth < 0:
        return _NOT_CONSTANT
    if isinstance(value, (str, float, bool, bytes)) or value is None:
        return value
    if isinstance(value, int):
        return value if value.bit_length() <= _MAX_KEY_BITS else _NOT_CONSTANT
    if (
        isinstance(value, Call)
        and _is(value.func, "_codecs", "encode")
        and len(value.args) == 2
        and isinstance(value.args[0], str)
        and value.args[1] in ("latin1", "latin-1")
        and not value.kwargs
        and value.state is None
    ):
        try:
            return value.args[0].encode("latin-1")
        except UnicodeEncodeError:
            return _NOT_CONSTANT
    if isinstance(value, tuple):
        parts = []
        for item in value:
            part = _constant(item, depth - 1, items)
            if part is _NOT_CONSTANT:
                return _NOT_CONSTANT
            parts.append(part)
        return tuple(parts)
    return _NOT_CONSTANT


# numpy float item size -> struct format (bools and ints are read with int.from_bytes)
_NUMPY_FLOATS = {2: "e", 4: "f", 8: "d"}


def _numpy_scalar(value: Call) -> Any:
    """A pickled numpy scalar (``numpy.core.multiarray.scalar(numpy.dtype('f8', ...) with its
    BUILD state, raw bytes)``, e.g. a checkpoint's ``np.float64`` loss) as the Python bool, int or
    float it holds, read from its bytes (nothing unpickled or called); _NOT_CONSTANT unless its
    dtype is a plain bool, int or float one whose item size the bytes match."""
    if len(value.args) != 2 or value.kwargs or value.state is not None:
        return _NOT_CONSTANT
    dtype, raw = value.args
    if not (
        isinstance(dtype, Call)
        and _is(dtype.func, "numpy", "dtype")
        and not dtype.kwargs
        and dtype.args
        and isinstance(dtype.args[0], str)
        and isinstance(dtype.state, tuple)
        and len(dtype.state) >= 2
        and all(part is None for part in dtype.state[2:5])  # no sub-array, no fields
    ):
        return _NOT_CONSTANT
    code = dtype.args[0].lstrip("<>|=")
    order = dtype.state[1]
    data = _constant(raw, 0, [1])
    digits = code[1:]
    if not (0 < len(digits) <= 2 and digits.isascii() and digits.isdigit()):
        return _NOT_CONSTANT
    if not isinstance(data, bytes):
        return _NOT_CONSTANT
    kind, size = code[0], int(digits)
    if len(data) != size or not isinstance(order, str):
        return _NOT_CONSTANT
    if size == 1 and order in ("|", "<", ">"):
        order = "<"  # (one byte: no byte order)
    if order not in ("<", ">"):
        return _NOT_CONSTANT
    if kind == "b" and size == 1:
        return data != b"\x00"
    if kind in ("i", "u") and size in (1, 2, 4, 8):
        return int.from_bytes(data, "big" if order == ">" else "little", signed=kind == "i")
    if kind == "f" and size in _NUMPY_FLOATS:
        return float(struct.unpack(order + _NUMPY_FLOATS[size], data)[0])
    return _NOT_CONSTANT


def _dict_pairs(value: Any) -> list[tuple[Any, Any]] | None:
    """A dict's or OrderedDict's (key, value) pairs as Python builds it (None for anything
    else): a later key equal to an earlier one (``1``, ``True`` and ``1.0``; a repeated text)
    replaces its value and keeps the first key and place, as ``d[key] = value`` does. Keys with
    no constant form (symbols) are kept as they are."""
    if isinstance(value, SymDict):
        items = value.items
    elif isinstance(value, Call) and _is(value.func, "collections", "OrderedDict", "Counter"):
        items = []
        if value.args and isinstance(value.args[0], (list, tuple)):
            for item in value.args[0]:
                if isinstance(item, (list, tuple)) and len(item) == 2:
                    items.append((item[0], item[1]))
        items.extend(value.dictitems)
    else:
        return None
    pairs: list[tuple[Any, Any]] = []
    where: dict[Any, int] = {}  # constant key -> its place in pairs
    for key, child in items:
        constant = key if type(key) is str else _constant(key, _MAX_KEY_DEPTH, [_MAX_KEY_ITEMS])
        if constant is _NOT_CONSTANT:
            pairs.append((key, child))
            continue
        at = where.setdefault(constant, len(pairs))
        if at == len(pairs):
            pairs.append((key, child))
        else:
            pairs[at] = (pairs[at][0], child)
    return pairs


def _truthy(value: Any) -> bool:
    """Whether ``if value:`` takes the branch in torch (a symbol, a non-empty dict: yes)."""
    if isinstance(value, SymDict):
        return bool(value.items)
    if isinstance(value, Call) and _is(value.func, "collections", "OrderedDict"):
        return bool(_dict_pairs(value))
    if value is None or isinstance(value, (bool, int, float, str, bytes, tuple, list)):
        return bool(value)
    return True


def _rebuilds_tensor(func: Global) -> bool:
    """Whether ``func`` is one of torch's tensor or parameter rebuild functions."""
    return (
        (func.module == "torch._utils" and func.name.startswith("_rebuild_"))
        or _is(func, "torch._tensor", "_rebuild_from_type_v2")
        or _is(func, "torch.nn.parameter", "Parameter")
    )


def _join(path: str, key: str) -> str:
    if len(path) > _MAX_PATH:
        return path
    return f"{path}.{key}" if path else str(key)


def _as_text(value: Call) -> str | None:
    """The text ``str()`` gives of a value torch.load builds with a call of plain numbers or text:
    a complex number (``(1+2j)``), a ``torch.device`` (``cuda:0``); else None."""
    args = value.args
    if value.kwargs or not args:
        return None
    if _is(value.func, "builtins", "complex") and len(args) <= 2:
        if all(type(a) in (int, float) and abs(a) < 1 << 63 for a in args):
            return str(complex(*args))
    if _is(value.func, "torch", "device") and len(args) <= 2:
        kind, index = args[0], args[1:]
        plain_kind = isinstance(kind, str) and len(kind) <= 64 and kind.replace("_", "").isalnum()
        plain_index = not index or (type(index[0]) is int and 0 <= index[0] < 1 << 16)
        if plain_kind and plain_index:
            return f"{kind}:{index[0]}" if index else kind
    return None


def _is(value: Any, module: str, *names: str) -> bool:
    return isinstance(value, Global) and value.module == module and value.name in names


def _ints(value: Any) -> tuple[int, ...] | None:
    if isinstance(value, Call) and _is(value.func, "torch", "Size") and value.args:
        value = value.args[0]
    if isinstance(value, (tuple, list)) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return tuple(value)
    return None


def interpret(
    root: Any, label: str = "data.pkl", limits: Limits = DEFAULT_LIMITS
) -> Interpretation:
    """The tensors (named by flattened key) and plain values in a torch pickle's result.

    A top-level ``state_dict`` wrapper (Lightning, original SD checkpoints) is unwrapped: its
    tensors keep their own names, tensors elsewhere (optimizer states) are listed as dropped.
    Other nesting is joined with ``.``.
    """
    walker = _Walker(label, limits)
    wrapper = _state_dict_wrapper(root)
    if wrapper is None:
        walker.walk(root, "", keep=True)
    else:
        walker.out.unwrapped = "state_dict"
        for key, child in walker.children(root) or []:
            if key == "state_dict" and child is wrapper:
                walker.walk(child, "", keep=True)
            else:
                name, problem = walker.key(key)
                walker.walk(child, name, keep=False, bad_key=problem)
    walker.finish()
    seen: set[str] = set()
    for record in walker.out.tensors:
        if record.name in seen:
            walker.out.name_problems.append(f"two tensors flatten to the same name {record.name!r}")
        seen.add(record.name)
    return walker.out


def _state_dict_wrapper(root: Any) -> Any:
    pairs: list[tuple[Any, Any]] = []
    if isinstance(root, SymDict) or (
        isinstance(root, Call) and _is(root.func, "collections", "OrderedDict")
    ):
        pairs = _dict_pairs(root) or []
    for key, value in pairs:
        if key == "state_dict" and (
            isinstance(value, SymDict)
            or (isinstance(value, Call) and _is(value.func, "collections", "OrderedDict"))
        ):
            return value
    return None
