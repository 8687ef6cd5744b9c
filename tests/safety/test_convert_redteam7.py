"""Convert, seventh red-team pass: what torch.load applies to a tensor after rebuilding it (a BUILD
state, a saved attribute state, conjugate/negative metadata), dict keys Python treats as equal,
and legacy storage views declared twice. convert either writes exactly what
``torch.load(weights_only=True)`` gives or refuses the file, saying why."""

from __future__ import annotations

import pickle
import struct
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelsafe.errors import ConversionError, UnsafeFileError
from modelsafe.registry.audit import audit_path
from modelsafe.registry.convert import convert_file

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

RunCli = Callable[..., tuple[int, str, str]]


class _Reduced:
    """Pickles as the reduction it is given (torch.save still turns storages into its
    persistent ids): the forms torch.load accepts but torch.save never writes."""

    def __init__(self, *reduction: Any) -> None:
        self.reduction = reduction

    def __reduce_ex__(self, protocol: Any) -> Any:
        return self.reduction


def _typed(tensor: Any) -> Any:
    return torch.storage.TypedStorage(
        wrap_storage=tensor.untyped_storage(), dtype=tensor.dtype, _internal=True
    )


def _v2_args(tensor: Any) -> tuple[Any, ...]:
    return (_typed(tensor), 0, tuple(tensor.shape), tensor.stride(), False, OrderedDict())


def _as_lists(tensors: dict[Any, Any]) -> dict[str, Any]:
    return {str(k): v.resolve_conj().resolve_neg().tolist() for k, v in tensors.items()}


def _converted_or_refused(src: Path) -> tuple[dict[str, Any] | None, str]:
    """(the tensors convert wrote, "") or (None, the refusal's reason and hint)."""
    dst = src.with_suffix(".safetensors")
    try:
        convert_file(src, dst)
    except (ConversionError, UnsafeFileError) as exc:
        assert not dst.exists()
        return None, f"{exc.reason} / {exc.hint}"
    return _as_lists(safetensors_torch.load_file(dst)), ""


# -- 4. state that torch.load applies after rebuilding a tensor ---------------------------------


def _build_state(a: Any, b: Any) -> Any:
    # BUILD with (storage, offset, size, stride): torch.load calls Tensor.set_ with it
    return _Reduced(torch._utils._rebuild_tensor_v2, _v2_args(a), (_typed(b), 0, (2,), (1,)))


def _data_attribute(tensor: Any, other: Any) -> Any:
    # torch.save writes a tensor's or parameter's __dict__ as its attribute state
    tensor.__dict__["data"] = other
    return tensor


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (_build_state, "a BUILD state"),
        (
            lambda a, b: _data_attribute(torch.nn.Parameter(a), b),  # _rebuild_parameter_with_state
            "saved attributes set 'data'",
        ),
        (lambda a, b: _data_attribute(a.clone(), b), "saved attributes set 'data'"),
        (
            lambda a, b: _Reduced(
                torch._utils._rebuild_parameter_with_state,
                (a, False, {}, ({}, {"real": b.repeat(2)})),
            ),
            "saved attributes set 'real'",
        ),
    ],
    ids=["build-set", "parameter-data", "from-type-data", "slots-real"],
)
def test_state_that_changes_a_tensors_data_is_refused(
    tmp_path: Path, make: Callable[[Any, Any], Any], why: str
) -> None:
    a, b = torch.zeros(4), torch.tensor([1.0, 2.0])
    src = tmp_path / "m.pt"
    torch.save({"w": make(a, b)}, src)
    loaded = torch.load(src, weights_only=True)["w"]
    assert loaded.tolist() != [0.0] * 4  # torch.load gives other values than w's bytes

    written, refusal = _converted_or_refused(src)
    assert written is None
    assert "'w' " in refusal or "w (" in refusal
    assert why in refusal
    assert "a kind modelsafe cannot convert" in refusal and "torch.load" in refusal


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.tensor([1 + 2j, 3 - 1j], dtype=torch.complex64).conj(),
        lambda: torch._neg_view(torch.tensor([1.0, -2.0])),
        # torch.load sets the bit for the key, whatever its value: {"neg": False} negates too
        lambda: _Reduced(
            torch._utils._rebuild_tensor_v2, (*_v2_args(torch.ones(2)), {"neg": False})
        ),
        lambda: torch.nn.Parameter(torch._neg_view(torch.ones(2)), requires_grad=False),
    ],
    ids=["conj", "neg", "neg-false", "parameter"],
)
def test_conjugate_and_negative_views_are_refused(tmp_path: Path, make: Callable[[], Any]) -> None:
    src = tmp_path / "m.pt"
    torch.save({"w": make()}, src)  # torch.save writes the bit as the tensor's metadata
    loaded = torch.load(src, weights_only=True)["w"]
    assert loaded.is_conj() or loaded.is_neg()
    written, refusal = _converted_or_refused(src)
    assert written is None
    assert "a conjugate or negative view" in refusal


def test_harmless_attribute_state_still_converts(tmp_path: Path) -> None:
    p = torch.nn.Parameter(torch.arange(4.0))
    p.tensor_model_parallel = True  # (what Megatron sets: _rebuild_parameter_with_state)
    t = torch.arange(3.0)
    t.partition_dim = 0  # (_rebuild_from_type_v2 with state {'partition_dim': 0})
    src = tmp_path / "m.pt"
    torch.save({"p": p, "t": t}, src)
    written, refusal = _converted_or_refused(src)
    assert refusal == ""
    assert written == _as_lists(torch.load(src, weights_only=True))


# -- 5. dict keys Python treats as equal ---------------------------------------------------------


@pytest.mark.parametrize(
    "pairs",
    [
        [(1, "A"), (True, "B")],
        [(1, "A"), (1.0, "B")],
        [("a", "A"), ("x", "C"), ("a", "B")],
        [((1, 2), "A"), ((True, 2.0), "B")],
    ],
    ids=["1-True", "1-1.0", "text-twice", "tuples"],
)
def test_equal_keys_make_one_tensor_as_in_python(tmp_path: Path, pairs: list[Any]) -> None:
    values = {"A": torch.zeros(2), "B": torch.ones(2), "C": torch.full((2,), 3.0)}
    items = iter([(key, values[which]) for key, which in pairs])
    src = tmp_path / "m.pt"
    torch.save(_Reduced(OrderedDict, (), None, None, items), src)  # SETITEMS, key by key
    expected = _as_lists(torch.load(src, weights_only=True))

    written, refusal = _converted_or_refused(src)
    assert refusal == ""
    assert written == expected
    assert [1.0, 1.0] in written.values() and [0.0, 0.0] not in written.values()


def test_a_state_dict_wrapper_given_twice_unwraps_the_last(tmp_path: Path) -> None:
    first, last = {"w": torch.zeros(2)}, {"w": torch.ones(2)}
    items = iter([("state_dict", first), ("epoch", 1), ("state_dict", last)])
    src = tmp_path / "m.ckpt"
    torch.save(_Reduced(OrderedDict, (), None, None, items), src)
    written, refusal = _converted_or_refused(src)
    assert refusal == ""
    assert written == _as_lists(torch.load(src, weights_only=True)["state_dict"])


# -- 6. legacy storage views ---------------------------------------------------------------------


class _LegacyPickler(pickle.Pickler):
    def persistent_id(self, obj: Any) -> Any:
        return obj.pid if isinstance(obj, _Pid) else None


class _Pid:
    def __init__(self, pid: tuple[Any, ...]) -> None:
        self.pid = pid


def _legacy_file(path: Path, root: Any, storages: dict[str, bytes]) -> Path:
    """A pre-1.6 (non-zip) torch file: magic, protocol, sys_info, the pickle, its storage keys,
    then each storage as its element count and bytes (float32 here)."""

    def dumped(value: Any) -> bytes:
        out = __import__("io").BytesIO()
        _LegacyPickler(out, protocol=2).dump(value)
        return out.getvalue()

    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"long": 4}}
    data = dumped(0x1950A86A20F9469CFC6C) + dumped(1001) + dumped(sys_info)
    data += dumped(root) + dumped(list(storages))
    for raw in storages.values():
        data += struct.pack("<q", len(raw) // 4) + raw
    path.write_bytes(data)
    return path


def _view_tensor(view_key: str, offset: int, root_key: str = "r") -> Any:
    pid = ("storage", torch.FloatStorage, root_key, "cpu", 4, (view_key, offset, 2))
    return _Reduced(
        torch._utils._rebuild_tensor_v2, (_Pid(pid), 0, (2,), (1,), False, OrderedDict())
    )


@pytest.mark.parametrize(
    ("views", "unsafe"),
    [
        ((("v", 0), ("w", 2)), False),  # two views of one storage: converts, as torch gives
        ((("v", 0), ("v", 2)), True),  # one view key, two offsets: torch gives both the first
        ((("r", 2), ("w", 0)), True),  # a view key that is also the storage's key
    ],
    ids=["distinct", "view-key-twice", "view-key-is-root"],
)
def test_legacy_views_declared_twice_are_refused(
    tmp_path: Path, views: tuple[tuple[str, int], ...], unsafe: bool
) -> None:
    root = OrderedDict((name, _view_tensor(*view)) for name, view in zip("ab", views, strict=True))
    src = _legacy_file(tmp_path / "m.pt", root, {"r": struct.pack("<4f", 1, 2, 3, 4)})
    expected = _as_lists(torch.load(src, weights_only=True))

    written, refusal = _converted_or_refused(src)
    if not unsafe:
        assert written == expected == {"a": [1.0, 2.0], "b": [3.0, 4.0]}
        return
    assert written is None and "it is unsafe" in refusal
    assert f"storage view {views[0][0]!r} is declared twice" in refusal
    assert audit_path(src).status == "unsafe"


def test_a_legacy_view_read_as_another_dtype_is_refused(tmp_path: Path) -> None:
    # torch.load places a view in elements of its storage's dtype (here 4-byte floats), whatever
    # dtype _rebuild_tensor_v3 reads it as
    pid = ("storage", torch.FloatStorage, "r", "cpu", 4, ("v", 1, 2))
    half = (_Pid(pid), 0, (4,), (1,), False, OrderedDict(), torch.float16)
    root = OrderedDict(a=_Reduced(torch._utils._rebuild_tensor_v3, half))
    raw = struct.pack("<8e", 1, 2, 3, 4, 5, 6, 7, 8)
    src = _legacy_file(tmp_path / "m.pt", root, {"r": raw})
    assert _as_lists(torch.load(src, weights_only=True)) == {"a": [3.0, 4.0, 5.0, 6.0]}

    written, refusal = _converted_or_refused(src)
    assert written is None
    assert "a legacy storage view read as another dtype" in refusal
