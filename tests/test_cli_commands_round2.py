"""CLI review, round 2: names that fake output, unreadable paths, options silently ignored,
`demo --keep` over a user's files, misbehaving plugins, `convert` of a file already named
.safetensors."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import threading
import zipfile
from pathlib import Path
from typing import Any

import pytest

from modelsafe.testing import write_safetensors
from modelsafe.testing.layouts import adapters, base_models

SPOOF = "m\x1b[2K\rSAFE    model.ckpt"  # shows as "SAFE    model.ckpt" on a terminal


class _Payload:
    """Pickled as a call of os.system: loading the file would run ``command``."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (self.command,))


def _hostile_checkpoint(path: Path, marker: Path) -> Path:
    """A torch-style zip whose data.pkl calls os.system("touch MARKER") when loaded (pickling
    it runs nothing; modelsafe never loads it, and the tests check MARKER is never made)."""
    data = pickle.dumps({"w": _Payload(f"touch {marker}")}, protocol=2)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", data)
        zf.writestr("archive/version", "3\n")
    return path


def _safe_checkpoint(path: Path) -> Path:
    import torch

    torch.save({"w": torch.arange(4, dtype=torch.float32)}, path)
    return path


def _cli(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, prefix: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``modelsafe ARGS`` in a child process (its own plugin manager, real stdout/stderr)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("MODELSAFE_")}
    full["MODELSAFE_HOME"] = str(cwd)
    full.update(env or {})
    return subprocess.run(
        [*(prefix or []), sys.executable, "-c", "from modelsafe.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=full,
        cwd=cwd,
        timeout=300,
    )


# -- 1. file names cannot fake a verdict line ---------------------------------------------------


def test_audit_text_escapes_a_name_that_fakes_a_safe_verdict(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "PWNED"
    spoof = _hostile_checkpoint(tmp_path / SPOOF, marker)
    newline = _hostile_checkpoint(tmp_path / "a.ckpt\nSAFE    b.ckpt", marker)
    code, out, err = run_cli("audit", str(spoof), str(newline))
    assert code == 1, err
    assert "\x1b" not in out and "\r" not in out
    assert "\\x1b[2K\\rSAFE    model.ckpt" in out
    assert "a.ckpt\\nSAFE    b.ckpt" in out
    lines = out.splitlines()
    assert not [line for line in lines if line.startswith("SAFE")], out
    assert len([line for line in lines if line.startswith("UNSAFE")]) == 2
    # JSON keeps the name as it is (JSON escapes it)
    code, out, _ = run_cli("audit", "--json", str(spoof))
    assert code == 1 and json.loads(out)[0]["path"] == str(spoof)
    assert not marker.exists()


def test_convert_and_set_escape_names(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = _safe_checkpoint(tmp_path / "emb\x1b[31m.pt")
    dst = tmp_path / "out\nconverted fake.safetensors"
    code, out, err = run_cli("convert", str(src), str(dst))
    assert code == 0, err
    assert "\x1b" not in out and out.count("\n") == 2, out  # the converted line + sha256
    assert "emb\\x1b[31m.pt -> " in out and "out\\nconverted fake.safetensors" in out
    # set: the model's name in its answer
    lib = tmp_path / "lib"
    lib.mkdir()
    write_safetensors(
        lib / "x\x1b[2Kname.safetensors", adapters.embedding("sd1", vectors=2), data="random"
    )
    catalog = str(tmp_path / "c.db")
    code, _, err = run_cli("--catalog", catalog, "scan", "--no-hash", str(lib))
    assert code == 0, err
    code, out, err = run_cli("--catalog", catalog, "set", "name", "--note", "mine")
    assert code == 0, err
    assert "\x1b" not in out and "x\\x1b[2Kname" in out


def test_resolve_text_escapes_refs(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    checkpoint = write_safetensors(
        tmp_path / "sd15.safetensors", base_models.unet_checkpoint("sd1")
    )
    lora = write_safetensors(
        tmp_path / "xl\nok        lora x.safetensors",
        adapters.kohya_lora([("lora_unet_", adapters.sdxl_unet_modules("sgm"))], rank=4),
        data="random",
    )
    code, out, err = run_cli("resolve", str(checkpoint), "--lora", str(lora))
    assert code == 1, err
    assert "xl\\nok        lora x.safetensors" in out
    assert not [line for line in out.splitlines() if line.startswith("ok")], out


# -- 2. one unreadable path does not hide the others --------------------------------------------


def _unprivileged() -> list[str]:
    """How to run the CLI so file permissions apply: as is for a normal user; for root (who
    reads everything) under setpriv without the capabilities that override them."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("root reads files whatever their permissions, and setpriv is missing")
    caps = "-dac_override,-dac_read_search,-fowner"
    prefix = [setpriv, "--bounding-set", caps, "--inh-caps", caps]
    probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip(f"setpriv cannot drop capabilities here: {probe.stderr!r}")
    return prefix


@pytest.fixture
def unreadable(tmp_path: Path) -> Any:
    made: list[Path] = []

    def make(path: Path) -> Path:
        path.chmod(0)
        made.append(path)
        return path

    yield make
    for path in made:
        path.chmod(0o700)


def test_audit_reports_an_unreadable_file_and_goes_on(tmp_path: Path, unreadable: Any) -> None:
    prefix = _unprivileged()
    marker = tmp_path / "PWNED"
    evil = _hostile_checkpoint(tmp_path / "evil.ckpt", marker)
    noperm = unreadable(_safe_checkpoint(tmp_path / "noperm.ckpt"))
    done = _cli(["audit", str(evil), str(noperm)], tmp_path, prefix=prefix)
    assert done.returncode == 1, done.stderr
    assert "Usage:" not in done.stderr
    assert f"UNSAFE  {evil}" in done.stdout
    assert f"ERROR   {noperm}" in done.stdout and "Permission denied" in done.stdout
    done = _cli(["audit", "--json", str(noperm), str(evil)], tmp_path, prefix=prefix)
    assert done.returncode == 1
    assert [v["status"] for v in json.loads(done.stdout)] == ["error", "unsafe"]
    assert not marker.exists()


def test_scan_goes_on_past_an_unreadable_folder(tmp_path: Path, unreadable: Any) -> None:
    prefix = _unprivileged()
    marker = tmp_path / "PWNED"
    closed = tmp_path / "closed"
    closed.mkdir()
    unreadable(closed)
    other = tmp_path / "other"
    other.mkdir()
    _hostile_checkpoint(other / "evil.ckpt", marker)
    catalog = str(tmp_path / "c.db")
    done = _cli(["--catalog", catalog, "scan", str(closed), str(other)], tmp_path, prefix=prefix)
    assert done.returncode == 1, done.stderr  # (the unsafe file wins)
    assert "Usage:" not in done.stderr
    assert f"UNSAFE  {other / 'evil.ckpt'}" in done.stdout
    assert "the other paths were scanned" in done.stderr and str(closed) in done.stderr
    assert not marker.exists()


def test_scan_of_a_hub_cache_with_an_unreadable_repo_is_a_clean_error(
    tmp_path: Path, unreadable: Any
) -> None:
    """A repo folder of the hub cache this user may not list (root's, another user's) was an
    "unexpected PermissionError" (exit 3, "a bug")."""
    prefix = _unprivileged()
    cache = tmp_path / "hub"
    snapshot = cache / "models--org--m" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (cache / "models--org--m" / "refs").mkdir()
    unreadable(cache / "models--org--m")
    catalog = str(tmp_path / "c.db")
    done = _cli(
        ["--catalog", catalog, "scan", "--hf-cache-dir", str(cache)], tmp_path, prefix=prefix
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "cannot read the Hugging Face cache" in done.stderr, done.stderr
    assert "Permission denied" in done.stderr and "Traceback" not in done.stderr


def test_inspect_and_convert_of_an_unreadable_file_are_clean_errors(
    tmp_path: Path, unreadable: Any
) -> None:
    prefix = _unprivileged()
    noperm = unreadable(_safe_checkpoint(tmp_path / "noperm.ckpt"))
    closed = tmp_path / "closed"
    closed.mkdir()
    unreadable(closed)
    for args in (
        ["inspect", str(noperm)],
        ["inspect", str(closed)],
        ["convert", str(noperm), str(tmp_path / "out.safetensors")],
    ):
        done = _cli(args, tmp_path, prefix=prefix)
        assert done.returncode == 2, (args, done.stderr)
        assert "Error: cannot read" in done.stderr and "permission denied" in done.stderr
        assert "Hint: " in done.stderr
        for bad in ("Usage:", "unexpected", "Traceback", "plugin"):
            assert bad not in done.stderr, (args, done.stderr)
    assert not (tmp_path / "out.safetensors").exists()


# -- 3. filters and options that cannot apply are never silently ignored -------------------------


@pytest.fixture
def duplicates_catalog(run_cli, tmp_path: Path) -> str:  # type: ignore[no-untyped-def]
    """Two copies of an SD1 embedding and two of an SDXL LoRA, scanned."""
    lib = tmp_path / "lib"
    for sub in ("a", "b"):
        (lib / sub).mkdir(parents=True)
        write_safetensors(
            lib / sub / "emb.safetensors", adapters.embedding("sd1", vectors=4), data="random"
        )
        write_safetensors(
            lib / sub / "xl-lora.safetensors",
            adapters.kohya_lora([("lora_unet_", adapters.sdxl_unet_modules("sgm"))], rank=4),
            data="random",
        )
    catalog = str(tmp_path / "c.db")
    code, _, err = run_cli("--catalog", catalog, "scan", str(lib))
    assert code == 0, err
    return catalog


def _duplicate_names(run_cli, catalog: str, *args: str) -> list[str]:  # type: ignore[no-untyped-def]
    code, out, err = run_cli("--catalog", catalog, "ls", "--duplicates", "--json", *args)
    assert code == 0, err
    return sorted(Path(g["keep"]).name for g in json.loads(out)["groups"])


def test_ls_duplicates_applies_family_and_kind(run_cli, duplicates_catalog: str) -> None:  # type: ignore[no-untyped-def]
    both = ["emb.safetensors", "xl-lora.safetensors"]
    assert _duplicate_names(run_cli, duplicates_catalog) == both
    assert _duplicate_names(run_cli, duplicates_catalog, "--kind", "lora") == both[1:]
    assert _duplicate_names(run_cli, duplicates_catalog, "--family", "sdxl") == both[1:]
    assert _duplicate_names(run_cli, duplicates_catalog, "--family", "sd1") == both[:1]
    assert _duplicate_names(run_cli, duplicates_catalog, "--kind", "checkpoint") == []
    assert _duplicate_names(run_cli, duplicates_catalog, "--unsafe") == []
    code, out, _ = run_cli("--catalog", duplicates_catalog, "ls", "--duplicates", "-k", "lora")
    assert code == 0 and "emb" not in out and "1 models stored more than once" in out


def test_ls_refuses_duplicates_with_compatible_with_or_missing(  # type: ignore[no-untyped-def]
    run_cli, duplicates_catalog: str
) -> None:
    for extra in (["--compatible-with", "emb"], ["--missing"]):
        code, out, err = run_cli("--catalog", duplicates_catalog, "ls", "--duplicates", *extra)
        assert code == 2 and not out
        assert "cannot be combined" in err and "Hint: " in err


def test_set_refuses_reset_with_a_value(run_cli, duplicates_catalog: str) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run_cli("--catalog", duplicates_catalog, "set", "emb", "--variant", "v1")
    assert code == 0, err
    code, _, err = run_cli(
        "--catalog", duplicates_catalog, "set", "emb", "--reset", "--family", "sdxl"
    )
    assert code == 2 and "--reset cannot be combined with --family" in err
    code, out, err = run_cli("--catalog", duplicates_catalog, "show", "emb", "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["family"] == "sd1" and shown["variant"] == "v1"  # nothing was changed


def test_generate_refuses_seeds_with_another_batch(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base = ["generate", "--checkpoint", str(tmp_path / "none.safetensors"), "--prompt", "a"]
    code, out, err = run_cli(*base, "--seeds", "1,2", "--batch", "3")
    assert code == 2 and "--batch 3 does not match --seeds, which gives 2 seeds" in err
    code, _, err = run_cli(*base, "--seeds", "1,2", "--batch", "2")
    assert code == 2 and "--seeds" not in err  # (it got past the check: the file is missing)
    code, _, err = run_cli(*base, "--seeds", "1,2", "--seed", "7")  # (--seed was ignored)
    assert code == 2 and "--seed and --seeds both given" in err


# -- 4. demo --keep never writes into a folder that holds something ------------------------------


def test_demo_keep_refuses_a_folder_with_files(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    comfy = tmp_path / "comfy"
    clip = comfy / "models" / "clip" / "clip_l.safetensors"
    clip.parent.mkdir(parents=True)
    clip.write_bytes(b"MY REAL CLIP_L")
    code, out, err = run_cli("demo", "--keep", str(comfy))
    assert code == 2 and not out
    assert f"Error: {comfy} is not empty" in err and "Hint: " in err
    assert clip.read_bytes() == b"MY REAL CLIP_L"
    assert sorted(p.name for p in comfy.rglob("*")) == ["clip", "clip_l.safetensors", "models"]
    # an old catalog.db alone is refused too (the demo would scan into it)
    other = tmp_path / "other"
    other.mkdir()
    (other / "catalog.db").write_bytes(b"x")
    code, _, err = run_cli("demo", "--keep", str(other), "--json")
    assert code == 2 and "is not empty" in err
    assert os.listdir(other) == ["catalog.db"]


def test_build_library_refuses_a_folder_that_is_not_empty(tmp_path: Path) -> None:
    from modelsafe.demo import DemoFolderError, build_library

    (tmp_path / "mine.txt").write_text("mine")
    with pytest.raises(DemoFolderError) as caught:
        build_library(tmp_path)
    assert caught.value.hint
    assert os.listdir(tmp_path) == ["mine.txt"]


# -- 5. a misbehaving third-party plugin cannot corrupt output or fail open ----------------------

_CHATTY = """\
import os
import sys

from modelsafe.plugins.hookspecs import hookimpl

print("chatty loaded")


@hookimpl
def modelsafe_identify(index):
    print("identify called")
    return None


@hookimpl
def modelsafe_audit(path, head, fmt):
    print("audit called")
    if os.environ.get("CHATTY_EXIT"):
        raise SystemExit(0)
    if os.environ.get("CHATTY_GENEXIT"):
        raise GeneratorExit
    return None
"""


@pytest.fixture
def chatty_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A third-party plugin installed as pip installs one: a module and its dist-info with an
    entry point in the ``modelsafe`` group (found by importlib.metadata like any package)."""
    site = tmp_path_factory.mktemp("chatty-site")
    (site / "modelsafe_chatty.py").write_text(_CHATTY)
    info = site / "modelsafe_chatty-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: modelsafe-chatty\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[modelsafe]\nchatty = modelsafe_chatty\n")
    (info / "RECORD").write_text("")
    return site


def test_plugin_prints_go_to_stderr_and_json_stays_valid(chatty_site: Path, tmp_path: Path) -> None:
    env = {"PYTHONPATH": str(chatty_site)}
    done = _cli(["plugins", "--json"], tmp_path, env)
    assert done.returncode == 0, done.stderr
    plugins = json.loads(done.stdout)
    assert "chatty loaded" in done.stderr
    assert "chatty" in json.dumps(plugins)
    model = write_safetensors(
        tmp_path / "emb.safetensors", adapters.embedding("sd1", vectors=2), data="random"
    )
    done = _cli(["inspect", "--json", str(model)], tmp_path, env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["family"] == "sd1"
    assert "identify called" in done.stderr
    done = _cli(["--catalog", str(tmp_path / "c.db"), "scan", "--json", str(model)], tmp_path, env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["files"] == 1
    assert "audit called" in done.stderr


@pytest.mark.parametrize(
    ("variable", "raised"), [("CHATTY_EXIT", "SystemExit: 0"), ("CHATTY_GENEXIT", "GeneratorExit")]
)
def test_plugin_raising_systemexit_cannot_end_audit_or_scan(
    chatty_site: Path, tmp_path: Path, variable: str, raised: str
) -> None:
    marker = tmp_path / "PWNED"
    lib = tmp_path / "lib"
    lib.mkdir()
    evil = _hostile_checkpoint(lib / "evil.ckpt", marker)
    env = {"PYTHONPATH": str(chatty_site), variable: "1"}
    done = _cli(["audit", str(evil)], tmp_path, env)
    assert done.returncode == 1, done.stderr
    assert f"UNSAFE  {evil}" in done.stdout
    assert f"warning: plugin chatty failed in modelsafe_audit: {raised}" in done.stderr
    done = _cli(["audit", "--json", str(evil)], tmp_path, env)
    assert done.returncode == 1 and json.loads(done.stdout)[0]["status"] == "unsafe"
    done = _cli(["--catalog", str(tmp_path / "c.db"), "scan", str(lib)], tmp_path, env)
    assert done.returncode == 1, done.stderr
    assert "1 files: 1 new" in done.stdout and "1 unsafe" in done.stdout
    assert not marker.exists()


def test_keyboard_interrupt_in_a_hook_still_stops_the_command() -> None:
    from modelsafe.plugin_manager import ModelsafePluginManager
    from modelsafe.plugins.hookspecs import hookimpl

    class Interrupted:
        @hookimpl
        def modelsafe_model_extensions(self) -> list[str]:
            raise KeyboardInterrupt

    pm = ModelsafePluginManager()
    pm.register_plugin(Interrupted(), "interrupted")
    with pytest.raises(KeyboardInterrupt):
        list(pm.call_each("modelsafe_model_extensions"))


def test_stdout_redirect_is_per_thread_and_restored(capsys: pytest.CaptureFixture[str]) -> None:
    """A scan calls hooks from worker threads: only their prints go to stderr, the main
    thread's go to stdout, and stdout is restored whatever order the calls end in."""
    from modelsafe.plugin_manager import plugin_stdout_to_stderr

    original = sys.stdout
    inside, release = threading.Event(), threading.Event()

    def plugin_thread() -> None:
        with plugin_stdout_to_stderr():
            print("from plugin thread")
            inside.set()
            release.wait(30)

    worker = threading.Thread(target=plugin_thread)
    worker.start()
    assert inside.wait(30)
    with plugin_stdout_to_stderr():  # (a second call, ending before the first)
        print("from a hook in the main thread")
    print("from the command")
    release.set()
    worker.join(30)
    assert sys.stdout is original
    out, err = capsys.readouterr()
    assert out == "from the command\n"
    assert "from plugin thread" in err and "from a hook in the main thread" in err


# -- 6. convert of a file already named .safetensors says what it is -----------------------------


def test_convert_of_a_safetensors_named_file_says_what_it_is(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pointer = tmp_path / "pointer.safetensors"
    pointer.write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64 + "\nsize 10\n"
    )
    code, _, err = run_cli("convert", str(pointer))
    assert code == 2 and "git-lfs pointer" in err
    assert "destination is the source" not in err
    checkpoint = tmp_path / "model.safetensors"
    shutil.copyfile(_safe_checkpoint(tmp_path / "model.ckpt"), checkpoint)
    code, _, err = run_cli("convert", str(checkpoint))
    assert code == 2 and "destination is the source" not in err
    assert "torch checkpoint (zip) under a .safetensors name" in err
    assert "Hint: give DST: modelsafe convert" in err
    marker = tmp_path / "PWNED"
    evil = _hostile_checkpoint(tmp_path / "evil.safetensors", marker)
    code, _, err = run_cli("convert", str(evil))
    assert code == 1 and "unsafe" in err and "destination is the source" not in err
    assert not marker.exists()
    # DST given: converted
    code, _, err = run_cli("convert", str(checkpoint), str(tmp_path / "out.safetensors"))
    assert code == 0, err
