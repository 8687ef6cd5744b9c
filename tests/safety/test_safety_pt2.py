"""torch.export archives (``.pt2``, ``torch.export.save``): torch.export.load unpickles members
torch.load never names (``use_pickle`` weights and constants, opaque objects, sample inputs,
legacy ``<model>.pt`` weights). Each was `safe` (with a benign ``data.pkl`` added) or an `error`
saying "extract it". Every archive is built from a real torch.export.save file; payloads only
create a marker file in ``tmp_path``, and one child process running torch.export.load proves
them live after every modelsafe command has run without creating one."""

from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from modelsafe.registry.audit import audit_path
from modelsafe.types import Verdict

torch = pytest.importorskip("torch")

RunCli = Callable[..., tuple[int, str, str]]
ROOT = "prog"  # the archive folder torch.export.save names after the file
WEIGHTS = f"{ROOT}/data/weights"
CONSTANTS = f"{ROOT}/data/constants"


class _Opens:
    """Pickles as a call of open(marker, 'w') (io.open): creates the marker when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.marker, "w"))


def _text_pickle(marker: Path) -> bytes:
    """A protocol-0 pickle calling builtins.open(marker, 'w') (no header: sniffs as text)."""
    return f"cbuiltins\nopen\n(S'{marker}'\nS'w'\ntR.".encode()


def _torch_save(value: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real torch.export.save archive: Linear(4, 3) and a buffer ``c``."""

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 3)
            self.register_buffer("c", torch.ones(2))

        def forward(self, x: object) -> object:
            return self.lin(x) + self.c.sum()

    path = tmp_path_factory.mktemp("pt2") / f"{ROOT}.pt2"
    torch.export.save(torch.export.export(Model(), (torch.randn(1, 4),)), str(path))
    return path


def _rebuild(
    source: Path, dest: Path, replace: dict[str, bytes], add: dict[str, bytes], data_pkl: bool
) -> Path:
    """``source`` with members replaced, added and dropped (a ``b""`` replacement); with
    ``data_pkl`` a benign ``data.pkl`` first, so that torch.load reads the file too."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(dest, "w") as zout:
        if data_pkl:
            zout.writestr(f"{ROOT}/data.pkl", pickle.dumps({"note": "exported"}, protocol=2))
        for info in zin.infolist():
            content = replace.get(info.filename, zin.read(info.filename))
            if content:
                zout.writestr(info.filename, content)
        for name, content in add.items():
            zout.writestr(name, content)
    return dest


def _config(source: Path, member: str, entries: dict[str, dict[str, object]]) -> bytes:
    with zipfile.ZipFile(source) as z:
        config = json.loads(z.read(member))
    for fqn, changes in entries.items():
        config["config"].setdefault(fqn, {}).update(changes)
    return json.dumps(config).encode()


def _weight_path(source: Path, fqn: str) -> str:
    with zipfile.ZipFile(source) as z:
        config = json.loads(z.read(f"{WEIGHTS}/model_weights_config.json"))
    return f"{WEIGHTS}/{config['config'][fqn]['path_name']}"


def _hostile(source: Path, case: str, marker: Path) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """(replaced members, added members) of each way torch.export.load unpickles a member."""
    weights_config = f"{WEIGHTS}/model_weights_config.json"
    pickled_c = _config(source, weights_config, {"c": {"use_pickle": True}})
    if case == "weight-torch-zip":  # torch.load(weights_only=False) of a use_pickle weight
        return {
            _weight_path(source, "c"): _torch_save({"x": _Opens(marker)}),
            weights_config: pickled_c,
        }, {}
    if case == "weight-text-pickle":  # the same, a protocol-0 pickle (no header to sniff)
        return {_weight_path(source, "c"): _text_pickle(marker), weights_config: pickled_c}, {}
    if case == "opaque-object":  # pickle.loads of every opaque_obj_* constant
        constants = {
            "k": {
                "path_name": "opaque_obj_0",
                "is_param": False,
                "use_pickle": True,
                "tensor_meta": None,
            }
        }
        return {
            f"{CONSTANTS}/model_constants_config.json": json.dumps({"config": constants}).encode()
        }, {f"{CONSTANTS}/opaque_obj_0": pickle.dumps(_Opens(marker), protocol=4)}
    if case == "sample-inputs":  # torch.load, falling back to weights_only=False
        inputs = ((torch.ones(1, 4), _Opens(marker)), {})
        return {f"{ROOT}/data/sample_inputs/model.pt": _torch_save(inputs)}, {}
    assert case == "legacy-weights"  # data/weights/<model>.pt: the whole state dict, the same way
    with zipfile.ZipFile(source) as z:
        dropped = {n: b"" for n in z.namelist() if n.startswith(f"{WEIGHTS}/")}
    state = {"lin.weight": torch.ones(3, 4), "lin.bias": torch.ones(3), "x": _Opens(marker)}
    return dropped, {f"{WEIGHTS}/model.pt": _torch_save(state)}


CASES = [
    "weight-torch-zip",
    "weight-text-pickle",
    "opaque-object",
    "sample-inputs",
    "legacy-weights",
]
MEMBERS = {
    "weight-torch-zip": f"{WEIGHTS}/weight_",
    "weight-text-pickle": f"{WEIGHTS}/weight_",
    "opaque-object": f"{CONSTANTS}/opaque_obj_0",
    "sample-inputs": f"{ROOT}/data/sample_inputs/model.pt",
    "legacy-weights": f"{WEIGHTS}/model.pt",
}


def _names_open(verdict: Verdict, member: str) -> bool:
    return any(
        f.severity == "unsafe" and ".open (" in f.message and f.location.startswith(member)
        for f in verdict.findings
    )


@pytest.fixture(scope="module")
def hostile(exported: Path) -> dict[tuple[str, bool], tuple[Path, Path]]:
    """(case, with a data.pkl) -> (the archive, its marker)."""
    built = {}
    for case in CASES:
        for data_pkl in (False, True):
            tag = f"{case}{'-dp' if data_pkl else ''}"
            marker = exported.parent / f"marker-{tag}"
            replace, add = _hostile(exported, case, marker)
            dest = exported.parent / f"{tag}.pt2"
            built[case, data_pkl] = (_rebuild(exported, dest, replace, add, data_pkl), marker)
    return built


@pytest.mark.parametrize("data_pkl", [False, True])
@pytest.mark.parametrize("case", CASES)
def test_a_member_torch_export_unpickles_is_audited(
    hostile: dict[tuple[str, bool], tuple[Path, Path]],
    run_cli: RunCli,
    tmp_path: Path,
    case: str,
    data_pkl: bool,
) -> None:
    path, marker = hostile[case, data_pkl]
    verdict = audit_path(path)
    assert verdict.status == "unsafe", [(f.code, f.message) for f in verdict.findings]
    assert _names_open(verdict, MEMBERS[case]), [(f.location, f.message) for f in verdict.findings]
    code, out, err = run_cli("inspect", str(path))
    assert code == 2 and "torch.export archive" in err and "Traceback" not in err + out
    code, out, err = run_cli("convert", str(path), str(tmp_path / "out.safetensors"))
    assert code == 1 and "unsafe" in err and not (tmp_path / "out.safetensors").exists()
    assert not marker.exists()


def test_the_payloads_are_live(hostile: dict[tuple[str, bool], tuple[Path, Path]]) -> None:
    """The premise: torch.export.load (in a child process) runs every payload above."""
    child = (
        "import sys, warnings, torch\n"
        "warnings.filterwarnings('ignore')\n"
        "for p in sys.argv[1:]:\n"
        "    try:\n"
        "        torch.export.load(p)\n"
        "    except Exception:\n"
        "        pass\n"
    )
    paths = [str(path) for path, _ in hostile.values()]
    assert not any(marker.exists() for _, marker in hostile.values())
    subprocess.run(
        [sys.executable, "-c", child, *paths], capture_output=True, timeout=300, check=False
    )
    assert [key for key, (_, marker) in hostile.items() if not marker.exists()] == []


def test_a_genuine_export_archive_is_named_not_extract_it(
    exported: Path, run_cli: RunCli, tmp_path: Path
) -> None:
    verdict = audit_path(exported)
    assert verdict.status == "error"
    assert [f.code for f in verdict.findings] == ["torch-export"]
    message = verdict.findings[0].message
    assert "torch.export program archive" in message and "not a state dict" in message
    assert "extract it" not in message
    for command in (
        ("inspect", str(exported)),
        ("convert", str(exported), str(tmp_path / "out.safetensors")),
    ):
        code, out, err = run_cli(*command)
        assert code == 2 and "torch.export" in err and "not a state dict" in err, err
        assert "extract it" not in err and "Traceback" not in err + out


def test_a_genuinely_pickled_weight_is_not_unsafe(exported: Path, tmp_path: Path) -> None:
    """A use_pickle weight that is a plain torch.save of a tensor (what torch.export.save writes
    for a tensor subclass or a non-contiguous one) is audited and passes."""
    weights_config = f"{WEIGHTS}/model_weights_config.json"
    replace = {
        _weight_path(exported, "c"): _torch_save(torch.ones(2)),
        weights_config: _config(exported, weights_config, {"c": {"use_pickle": True}}),
    }
    path = _rebuild(exported, tmp_path / "pickled.pt2", replace, {}, data_pkl=False)
    verdict = audit_path(path)
    assert verdict.status == "error"
    assert [f.code for f in verdict.findings] == ["torch-export"]
    assert "2 that a loader unpickles audited" in verdict.findings[0].message


def test_a_compiled_library_in_an_export_archive_is_unsafe(exported: Path, tmp_path: Path) -> None:
    library = {
        f"{ROOT}/data/aotinductor/model/model.wrapper.so": b"\x7fELF\x02\x01\x01" + bytes(57)
    }
    path = _rebuild(exported, tmp_path / "aoti.pt2", {}, library, data_pkl=False)
    verdict = audit_path(path)
    assert verdict.status == "unsafe"
    assert [f.location for f in verdict.findings if f.code == "native-code"] == [
        f"{ROOT}/data/aotinductor/model/model.wrapper.so"
    ]
