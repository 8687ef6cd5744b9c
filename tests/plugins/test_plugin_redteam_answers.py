"""Red-team findings on plugin answers: a scanner, detector, hasher, VRAM estimator or
compatibility rule that raises or answers garbage is named, never flips a verdict, and never
takes a command down with an unexpected error (exit code 3).

The plugins are objects registered directly on a fresh plugin manager; the file format they
read (``TOYFMT``) exists only in this module.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from modelsafe.errors import MalformedFileError
from modelsafe.plugins.hookspecs import hookimpl
from modelsafe.registry.audit import audit_path
from modelsafe.registry.hashing import HASH_NAMES, hash_file
from modelsafe.registry.identify import collect_candidates
from modelsafe.registry.inspect import inspect_path
from modelsafe.registry.read import read_index
from modelsafe.registry.vram import estimate_component_vram
from modelsafe.testing import fresh_plugin_manager, write_safetensors
from modelsafe.testing.layouts import base_models
from modelsafe.types import Candidate, Compatibility, Finding, TensorIndex, TensorInfo

Run = Callable[..., tuple[int, str, str]]

# -- a made-up format taught by plugins ---------------------------------------------------------

TOY_MAGIC = b"TOYFMT\0\0"


def write_toy(path: Path, tensors: list[tuple[str, str, tuple[int, ...]]]) -> Path:
    """``TOYFMT\\0\\0`` + u32 header length + JSON header + zero bytes of data."""
    header = json.dumps({"tensors": [[n, d, list(s)] for n, d, s in tensors]}).encode()
    data = sum(math.prod(s) * 2 for _n, _d, s in tensors)
    path.write_bytes(TOY_MAGIC + struct.pack("<I", len(header)) + header + b"\0" * data)
    return path


def _toy_index(path: Path) -> TensorIndex:
    raw = path.read_bytes()
    (n,) = struct.unpack("<I", raw[8:12])
    try:
        header = json.loads(raw[12 : 12 + n])
    except ValueError:
        raise MalformedFileError(f"{path}: TOYF header unreadable", "re-export it") from None
    offset, tensors = 12 + n, []
    for name, dtype, shape in header["tensors"]:
        nbytes = math.prod(shape) * 2
        tensors.append(TensorInfo(name, dtype, tuple(shape), offset, nbytes))
        offset += nbytes
    return TensorIndex(path=path, format="toy", tensors=tuple(tensors))


def toy_reader() -> SimpleNamespace:
    @hookimpl
    def modelsafe_read_index(path: Path, head: bytes, fmt: str) -> TensorIndex | None:
        return _toy_index(path) if head.startswith(TOY_MAGIC) else None

    return SimpleNamespace(__name__="toy_reader", modelsafe_read_index=modelsafe_read_index)


def toy_scanner() -> SimpleNamespace:
    @hookimpl
    def modelsafe_audit(path: Path, head: bytes, fmt: str) -> list[Finding] | None:
        return [] if head.startswith(TOY_MAGIC) else None  # toy files hold no code

    return SimpleNamespace(__name__="toy_scanner", modelsafe_audit=modelsafe_audit)


def toy_detector() -> SimpleNamespace:
    @hookimpl
    def modelsafe_identify(index: TensorIndex) -> Candidate | None:
        names = index.names()
        if "toy.core.weight" not in names:
            return None
        kind = "lora" if "toy.core.lora_down.weight" in names else "checkpoint"
        return Candidate("toyfam", kind, 0.95, ("toy.core.weight present",))

    return SimpleNamespace(__name__="toy_detector", modelsafe_identify=modelsafe_identify)


def plugin(name: str, hook: str, answer: Callable[..., Any]) -> SimpleNamespace:
    """A plugin called ``name`` whose ``hook`` returns ``answer(**its arguments)``."""
    args = {
        "modelsafe_audit": "path, head, fmt",
        "modelsafe_identify": "index",
        "modelsafe_hashers": "index",
        "modelsafe_estimate_vram": "index, family, kind, facts",
        "modelsafe_check_compatibility": "base, part",
        "modelsafe_read_index": "path, head, fmt",
        "modelsafe_model_extensions": "",
    }[hook]
    scope: dict[str, Any] = {"answer": answer}
    exec(f"def {hook}({args}):\n    return answer(**locals())\n", scope)
    return SimpleNamespace(__name__=name, **{hook: hookimpl(scope[hook])})


def raises(**_kwargs: Any) -> Any:
    raise RuntimeError("boom in a third-party hook")


@pytest.fixture(scope="module")
def sd1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("redteam") / "sd15.safetensors"
    return write_safetensors(path, base_models.unet_checkpoint("sd1"), data="sparse")


@pytest.fixture
def toy(tmp_path: Path) -> dict[str, Path]:
    return {
        "base": write_toy(tmp_path / "base.toy", [("toy.core.weight", "F16", (64, 32))]),
        "lora": write_toy(
            tmp_path / "lora.toy",
            [("toy.core.weight", "F16", (64, 32)), ("toy.core.lora_down.weight", "F16", (4, 32))],
        ),
    }


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Run:
    """Run the CLI in-process on the current process-wide plugin manager."""
    from modelsafe.testing import invoke

    monkeypatch.chdir(tmp_path)  # (no ./catalog.db: resolve reads files only)
    return invoke


# -- 1. a scanner's wrong answer never reads as safe ------------------------------------------

UNSAFE_DICT = {"severity": "unsafe", "code": "backdoor", "message": "found a backdoor"}
BACKDOOR = Finding("unsafe", "backdoor", "found a backdoor")


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        ([UNSAFE_DICT], "error"),  # was SAFE, exit 0: the dict was skipped
        (BACKDOOR, "unsafe"),  # was "unexpected TypeError", exit 3
        (True, "error"),  # was "unexpected TypeError", exit 3
        ("unsafe", "error"),
        ([BACKDOOR, "and a string"], "unsafe"),
    ],
)
def test_a_scanner_answering_garbage_never_makes_a_file_safe(
    sd1: Path, cli: Run, answer: object, status: str
) -> None:
    with fresh_plugin_manager(plugin("sloppy_scanner", "modelsafe_audit", lambda **_: answer)):
        code, out, err = cli("audit", str(sd1), "--json")
    assert code == {"unsafe": 1, "error": 2}[status], err
    (verdict,) = json.loads(out)
    assert verdict["status"] == status
    failed = [f for f in verdict["findings"] if f["code"] == "scanner-failed"]
    assert failed and failed[0]["scanner"] == "sloppy_scanner"
    assert (
        "not a list of Findings" in failed[0]["message"] or "not Findings" in failed[0]["message"]
    )
    assert "warning: plugin sloppy_scanner failed in modelsafe_audit" in err


def test_a_tuple_of_findings_is_a_valid_answer(sd1: Path) -> None:
    with fresh_plugin_manager(plugin("tuple_scanner", "modelsafe_audit", lambda **_: (BACKDOOR,))):
        verdict = audit_path(sd1)
    assert verdict.status == "unsafe"
    assert not [f for f in verdict.findings if f.code == "scanner-failed"]


# -- 2. failures are shown where they happen ---------------------------------------------------


def test_a_hook_failure_is_warned_on_stderr_once_and_taken_for_json(
    sd1: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with fresh_plugin_manager(plugin("crashy", "modelsafe_identify", raises)) as pm:
        inspect_path(sd1)
        inspect_path(sd1)  # the same failure again: recorded, not warned twice
        err = capsys.readouterr().err
        taken = pm.take_failures()
        assert pm.take_failures() == []
        assert [f.plugin for f in pm.failures_in("modelsafe_identify")] == ["crashy", "crashy"]
    warning = "warning: plugin crashy failed in modelsafe_identify: RuntimeError: boom"
    assert err.count(warning) == 1
    assert [(f.plugin, f.hook) for f in taken] == [("crashy", "modelsafe_identify")] * 2


def test_resolve_json_lists_plugin_failures(toy: dict[str, Path], cli: Run) -> None:
    extra = (toy_reader(), toy_detector(), plugin("crashy", "modelsafe_identify", raises))
    with fresh_plugin_manager(*extra):
        code, out, err = cli("resolve", str(toy["base"]), "--lora", str(toy["lora"]), "--json")
    failures = json.loads(out)["plugin_failures"]
    assert {(f["plugin"], f["hook"]) for f in failures} == {("crashy", "modelsafe_identify")}
    assert "warning: plugin crashy failed in modelsafe_identify" in err


# -- 3. a compatibility rule that could not run leaves the part unchecked ----------------------


@pytest.mark.parametrize(
    "answer", [raises, lambda **_: "accept", lambda **_: [Compatibility("r", "fine", "yes")]]
)
def test_a_failing_rule_makes_the_part_unchecked(
    toy: dict[str, Path], cli: Run, answer: Callable[..., Any]
) -> None:
    readers = (toy_reader(), toy_detector())
    with fresh_plugin_manager(*readers):
        code, out, _ = cli("resolve", str(toy["base"]), "--lora", str(toy["lora"]), "--json")
    assert code == 0 and json.loads(out)["parts"][0]["status"] == "accepted"  # the built-ins fit
    rule = plugin("toy_rule", "modelsafe_check_compatibility", answer)
    with fresh_plugin_manager(*readers, rule):
        code, out, err = cli("resolve", str(toy["base"]), "--lora", str(toy["lora"]), "--json")
        text_code, text, _ = cli("resolve", str(toy["base"]), "--lora", str(toy["lora"]))
    assert code == 1 and text_code == 1  # unchecked: not compatible (docs/resolve.md)
    result = json.loads(out)
    (part,) = result["parts"]
    assert part["status"] == "unchecked" and not result["compatible"]
    failed = [r for r in part["reasons"] if r["rule"] == "toy_rule"]
    assert failed and "failed" in failed[0]["reason"]
    assert "unchecked" in text and "not compatible" in text


# -- 4. hashers, candidates and VRAM estimates are checked --------------------------------------


class _Hasher:
    name = "third_party"

    def __init__(self, digest: Callable[[], object]) -> None:
        self._digest = digest

    def update(self, offset: int, data: bytes | memoryview) -> None:
        pass

    def hexdigest(self) -> object:
        return self._digest()


def _boom() -> object:
    raise ValueError("hexdigest boom")


@pytest.mark.parametrize("digest", [_boom, lambda: 12345])
def test_a_failing_hexdigest_loses_only_its_own_value(
    tmp_path: Path, cli: Run, digest: Callable[[], object]
) -> None:
    path = write_safetensors(tmp_path / "m.safetensors", [("w", "F16", (8, 8))], data="random")
    extra = plugin("bad_hasher", "modelsafe_hashers", lambda **_: [_Hasher(digest), "no hasher"])
    with fresh_plugin_manager(extra) as pm:
        code, out, err = cli("inspect", str(path), "--hash", "--json")
        result = hash_file(path, read_index(path))
        failures = pm.failures_in("modelsafe_hashers")
    assert all(result[name] for name in HASH_NAMES)  # the built-in hashes are all there
    assert result["third_party"] is None and "third_party" in (result["hash_failures"] or "")
    assert {f.plugin for f in failures} == {"bad_hasher"}
    assert any("not a hasher" in f.reason for f in failures)
    assert code == 0, err
    assert json.loads(out)["hashes"]["sha256"] == result["sha256"]
    assert "warning: plugin bad_hasher failed in modelsafe_hashers" in err


@pytest.mark.parametrize(
    "bad",
    [
        Candidate("sd2", "checkpoint", "0.95", ("x",)),  # type: ignore[arg-type]
        Candidate(None, "checkpoint", 0.95, ("x",)),  # type: ignore[arg-type]
        Candidate("sd2", "checkpoint", float("nan"), ("x",)),
        Compatibility("sd2", "accept", "0.95"),
    ],
)
def test_malformed_candidates_are_dropped_and_named(sd1: Path, bad: object) -> None:
    sloppy = plugin("sloppy_detector", "modelsafe_identify", lambda **_: bad)
    with fresh_plugin_manager(sloppy) as pm:
        found = collect_candidates(read_index(sd1))
        report = inspect_path(sd1)  # (was: TypeError, or an IntegrityError in scan)
        failures = [f.plugin for f in pm.failures_in("modelsafe_identify")]
    assert found and all(c.detector != "sloppy_detector" for c in found)
    assert report.family == "sd1"
    assert "sloppy_detector" in failures


def test_evidence_given_as_one_string_is_one_item(sd1: Path) -> None:
    answer = Candidate("sd1", "checkpoint", 0.999, "our house rule")  # type: ignore[arg-type]
    with fresh_plugin_manager(plugin("house", "modelsafe_identify", lambda **_: answer)):
        (best, *_rest) = collect_candidates(read_index(sd1))
    assert best.detector == "house" and best.evidence == ("our house rule",)


@pytest.mark.parametrize(
    "estimate",
    [
        {"native": "lots", "fp16": None},
        "a lot",
        {"native": 1, "fp32": 4, "fp16": 2, "bf16": 2, "fp8": -1},
        {"native": 1, "fp16": float("nan")},
        {"native": 1, "fp32": 4, "fp16": 2, "bf16": 2, "fp8": 1, "components": {"unet": 5}},
        {"native": 1, "components": {"unet": {"fp16": "2 GB"}}},
    ],
)
def test_a_malformed_vram_estimate_falls_back_to_the_builtin(sd1: Path, estimate: object) -> None:
    index = read_index(sd1)
    with fresh_plugin_manager():
        builtin = estimate_component_vram(index, "sd1", "checkpoint", {})
    guess = plugin("vram_guess", "modelsafe_estimate_vram", lambda **_: estimate)
    with fresh_plugin_manager(guess) as pm:
        answer = estimate_component_vram(index, "sd1", "checkpoint", {})
        failures = pm.failures_in("modelsafe_estimate_vram")
    assert answer == builtin and answer["estimator"] == "vram_estimator"
    assert [f.plugin for f in failures] == ["vram_guess"]


# -- 7. a plugin-taught format can pass audit ------------------------------------------------


def test_a_plugin_taught_format_is_audited_by_its_own_scanner(toy: dict[str, Path]) -> None:
    with fresh_plugin_manager():
        alone = audit_path(toy["base"])
    assert alone.status == "error" and alone.findings[0].code == "not-a-model:unknown"
    with fresh_plugin_manager(toy_reader()):
        unscanned = audit_path(toy["base"])  # read, but no scanner vouches for it
    assert unscanned.status == "error"
    assert [f.code for f in unscanned.findings] == ["not-a-model"]
    with fresh_plugin_manager(toy_reader(), toy_scanner()):
        assert audit_path(toy["base"]).status == "safe"


# -- 8. a plugin-taught format is found by scan ---------------------------------------------


def toy_extensions(answer: object = (".TOY",)) -> SimpleNamespace:
    @hookimpl
    def modelsafe_model_extensions() -> object:
        return answer

    return SimpleNamespace(
        __name__="toy_extensions", modelsafe_model_extensions=modelsafe_model_extensions
    )


def _scanned(cli: Run, root: Path) -> tuple[dict[str, Any], dict[str, str]]:
    (root / ".catalog").mkdir(exist_ok=True)  # (hidden: the scan does not enter it)
    catalog = f"sqlite:///{root / '.catalog' / 'c.db'}"
    code, out, err = cli("--catalog", catalog, "scan", str(root), "--json")
    assert code == 0, err
    code, listing, err = cli("--catalog", catalog, "ls", "--json")
    assert code == 0, err
    return json.loads(out), {m["name"]: m["family"] for m in json.loads(listing)}


def test_scan_finds_files_of_a_plugin_format_by_the_extensions_it_adds(
    toy: dict[str, Path], sd1: Path, cli: Run
) -> None:
    root = toy["base"].parent
    (root / "sd15.safetensors").symlink_to(sd1)
    (root / "base.toy.part").write_bytes(b"TOYFMT")  # an unfinished download of one
    toy_format = (toy_reader(), toy_scanner(), toy_detector())
    with fresh_plugin_manager(*toy_format):
        _summary, found = _scanned(cli, root)
    assert "base" not in found and found["sd15"] == "sd1"
    with fresh_plugin_manager(*toy_format, toy_extensions()):
        summary, found = _scanned(cli, root)
    assert found["base"] == found["lora"] == "toyfam"
    assert found["sd15"] == "sd1"
    skipped = {Path(s["path"]).name: s["reason"] for s in summary["skipped"]}
    assert "unfinished" in skipped["base.toy.part"]
    assert summary["unsafe_files"] == [] and summary["plugin_failures"] == []


@pytest.mark.parametrize(
    ("answer", "named"),
    [
        ([".toy", "toy", ".part", 7, "a/b.x"], ["'toy'", "'.part'", "7", "'a/b.x'"]),
        ({"ext": ".toy"}, ["returned dict"]),
    ],
)
def test_a_garbage_extension_answer_is_named_and_the_scan_goes_on(
    toy: dict[str, Path], cli: Run, answer: object, named: list[str]
) -> None:
    root = toy["base"].parent
    with fresh_plugin_manager(toy_reader(), toy_extensions(answer)):
        summary, found = _scanned(cli, root)
    assert ("base" in found) is isinstance(answer, list)
    failures = [f for f in summary["plugin_failures"] if f["plugin"] == "toy_extensions"]
    assert len(failures) == len(named)
    for failure, text in zip(failures, named, strict=True):
        assert failure["hook"] == "modelsafe_model_extensions" and text in failure["reason"]


def test_a_raising_extension_hook_leaves_the_builtin_extensions(
    toy: dict[str, Path], sd1: Path, cli: Run
) -> None:
    root = toy["base"].parent
    (root / "sd15.safetensors").symlink_to(sd1)
    crashy = plugin("crashy_ext", "modelsafe_model_extensions", raises)
    with fresh_plugin_manager(toy_reader(), crashy):
        summary, found = _scanned(cli, root)
    assert set(found) == {"sd15"}
    [failure] = summary["plugin_failures"]
    assert failure["plugin"] == "crashy_ext" and "boom" in failure["reason"]


@pytest.fixture(autouse=True)
def _no_leftover_manager() -> Iterator[None]:
    yield
    from modelsafe.plugin_manager import use_plugin_manager

    use_plugin_manager(None)
