"""Red-team findings on generate's load paths: what generate loads is what it audited (a file
swapped after its audit, by a rename over it or a swap in and back while it loads, is refused
with exit 1 and nothing from it is used; the audit cache sees files behind a symlinked component
folder change); files load by their bytes, not their extension; a config folder cannot name a
path as a component; a folder that needs its own code is refused (and audit warns of it)."""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelsafe.errors import UnsafeFileError
from modelsafe.registry import audit
from modelsafe.runtime import generate
from modelsafe.testing.tiny_models import Tiny, tiny_lora_kohya


def hostile_zip(path: Path, marker: Path) -> Path:
    """A torch-style zip whose pickle would run ``touch marker`` if it were ever unpickled."""
    payload = f"cposix\nsystem\n(S'touch {marker}'\ntR.".encode()
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", payload)
        zf.writestr("archive/version", "3\n")
    return path


def _args(t: Tiny, out: Path, *extra: str) -> list[str]:
    return [
        "--catalog", str(out.parent / "catalog.db"), "generate",
        "--checkpoint", str(t.single), "--family", t.base_family,
        "--config-dir", str(t.configs), "--tokenizers", str(t.tokenizers),
        "--prompt", "a lighthouse", "--seed", "1", "--steps", "1",
        "--width", "32", "--height", "32", "--out", str(out), *extra,
    ]  # fmt: skip


@pytest.fixture
def after_audit(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[], None]], None]:
    """``after_audit(change)`` runs ``change()`` when the backend starts loading, after its last
    audit check: what a swapper racing the load does."""
    from modelsafe.plugins.builtin import backend_diffusers

    monkeypatch.setattr(generate, "_AUDITED_SAFE", {})
    real = backend_diffusers.build_pipelines

    def arm(change: Callable[[], None]) -> None:
        def swapping(request: Any) -> Any:
            change()
            return real(request)

        monkeypatch.setattr(backend_diffusers, "build_pipelines", swapping)

    return arm


def test_a_lora_swapped_for_a_hostile_pickle_after_its_audit_is_refused(
    tiny: Callable[[str], Tiny], tmp_path: Path, run_cli: Any, after_audit: Any
) -> None:
    t = tiny("sd1")
    lora = tmp_path / "style.pt"  # a pickled LoRA: safe when audited
    marker = tmp_path / "MARKER"
    import torch
    from safetensors.torch import load_file

    safe = tiny_lora_kohya(t.pipe.unet, tmp_path / "style.safetensors")
    torch.save(load_file(str(safe)), lora)
    hostile = hostile_zip(tmp_path / "hostile.pt", marker)
    after_audit(lambda: os.replace(hostile, lora))
    out = tmp_path / "out"
    code, stdout, err = run_cli(*_args(t, out, "--lora", f"{lora}:0.8"))
    assert code == 1, err
    assert f"{lora} changed after it was audited" in err and "Traceback" not in err
    assert "none of it is used" in err and "report it" not in err
    assert not marker.exists() and not list(out.glob("*.png")) and stdout == ""


def test_a_checkpoint_swapped_in_and_back_while_loading_is_refused(
    tiny: Callable[[str], Tiny], tmp_path: Path, run_cli: Any, after_audit: Any
) -> None:
    t = tiny("sd1")
    ckpt = tmp_path / "model.safetensors"
    shutil.copy(t.single, ckpt)
    moved = tmp_path / "elsewhere.safetensors"

    def swap_in_and_back() -> None:  # the same bytes back under the name: its ctime tells
        os.replace(ckpt, moved)
        os.replace(moved, ckpt)

    after_audit(swap_in_and_back)
    out = tmp_path / "out"
    args = _args(t, out)
    args[args.index(str(t.single))] = str(ckpt)
    code, _, err = run_cli(*args)
    assert code == 1 and f"{ckpt} changed after it was audited" in err
    assert not list(out.glob("*.png"))


def test_a_file_behind_a_symlinked_component_folder_is_audited_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelsafe.testing import write_safetensors

    monkeypatch.setattr(generate, "_AUDITED_SAFE", {})
    audited: list[Path] = []
    real = audit.audit_path
    monkeypatch.setattr(audit, "audit_path", lambda p, *a, **k: audited.append(p) or real(p))
    store = tmp_path / "store" / "unet"
    store.mkdir(parents=True)
    (store / "config.json").write_text('{"_class_name": "UNet2DConditionModel"}')
    weights = write_safetensors(
        store / "diffusion_pytorch_model.safetensors", [("w", "F32", (4, 4))], data="zeros"
    )
    model = tmp_path / "model"
    model.mkdir()
    (model / "model_index.json").write_text(
        '{"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}'
    )
    (model / "unet").symlink_to(store)  # a layout docs/security.md names
    generate.refuse_unsafe([model])
    generate.refuse_unsafe([model])
    assert audited.count(model) == 1  # unchanged: audited once (its files each once)
    weights.unlink()
    marker = tmp_path / "MARKER"
    hostile_zip(store / "diffusion_pytorch_model.bin", marker)
    with pytest.raises(UnsafeFileError) as info:
        generate.refuse_unsafe([model])
    assert audited.count(model) == 2
    # a folder's refusal names the file in it
    assert "unet/diffusion_pytorch_model.bin: posix.system" in info.value.reason
    assert not marker.exists()


# -- names that do not say what the bytes are ----------------------------------------------------


@pytest.mark.parametrize("how", ["sft", "zip-named-safetensors"])
def test_a_checkpoint_and_lora_load_by_their_bytes_not_their_extension(
    tiny: Callable[[str], Tiny], tmp_path: Path, run_cli: Any, how: str
) -> None:
    """BFL ships safetensors as ``.sft``; a PyTorch zip saved as ``.safetensors`` happens too.
    Both audit safe by content, and both must load (diffusers picks its reader by extension)."""
    import torch
    from safetensors.torch import load_file

    t = tiny("sd1")
    lora_st = tiny_lora_kohya(t.pipe.unet, tmp_path / "lora-src.safetensors")
    if how == "sft":
        ckpt, lora = tmp_path / "model.sft", tmp_path / "style.sft"
        shutil.copy(t.single, ckpt)
        shutil.copy(lora_st, lora)
    else:
        ckpt, lora = tmp_path / "model.safetensors", tmp_path / "style.safetensors"
        torch.save(load_file(str(t.single)), ckpt)
        torch.save(load_file(str(lora_st)), lora)
    out = tmp_path / "out"
    args = _args(t, out, "--lora", f"{lora}:0.8")
    args[args.index(str(t.single))] = str(ckpt)
    code, stdout, err = run_cli(*args)
    assert code == 0, err
    [png] = out.glob("*.png")
    assert png.name in stdout


def test_a_config_dir_naming_a_path_as_component_is_refused_and_writes_nothing(
    tiny: Callable[[str], Tiny], tmp_path: Path, run_cli: Any
) -> None:
    """A config folder (given, or recorded in a PNG's recipe) names components; a name that is
    a path made the loader create that folder and write config.json there."""
    t = tiny("sd1")
    configs = tmp_path / "configs"
    shutil.copytree(t.configs, configs)
    index_file = configs / "sd1.model_index.json"
    index = json.loads(index_file.read_text())
    target = tmp_path / "written-here"
    index[str(target)] = ["diffusers", "AutoencoderKL"]
    index_file.write_text(json.dumps(index))
    (configs / f"sd1.{target}.json").parent.mkdir(parents=True, exist_ok=True)
    (configs / f"sd1.{target}.json").write_text("{}")
    out = tmp_path / "out"
    args = _args(t, out)
    args[args.index(str(t.configs))] = str(configs)
    code, _, err = run_cli(*args)
    assert code != 0 and "is not a pipeline component name" in err and "Traceback" not in err
    assert not target.exists() and not list(out.glob("*.png"))


# -- code shipped with a model -------------------------------------------------------------------


def _folder_with_code(tmp_path: Path, t: Tiny, marker: Path) -> Path:
    folder = tmp_path / "custom"
    shutil.copytree(t.folder, folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["unet"] = ["evil", "Evil"]
    (folder / "model_index.json").write_text(json.dumps(index))
    (folder / "unet" / "evil.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).touch()\nclass Evil: pass\n"
    )
    return folder


def test_a_folder_that_needs_its_own_code_is_refused_before_loading_and_audit_warns(
    tiny: Callable[[str], Tiny], tmp_path: Path, run_cli: Any
) -> None:
    t = tiny("sd1")
    marker = tmp_path / "MARKER"
    folder = _folder_with_code(tmp_path, t, marker)
    code, out, err = run_cli("audit", str(folder), "--json")
    assert code == 0, err
    [verdict] = json.loads(out)
    codes = {f["code"]: f for f in verdict["findings"]}
    assert "unet: evil.Evil" in codes["custom-code"]["message"]
    assert "unet/evil.py" in codes["python-code"]["message"]
    code, _, err = run_cli(
        "generate", "--checkpoint", str(folder), "--tokenizers", str(t.tokenizers),
        "--prompt", "x", "--steps", "1", "--width", "32", "--height", "32",
        "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 2 and "needs code shipped in the folder (unet: evil.Evil)" in err
    assert not marker.exists()


def test_diffusers_own_pipeline_modules_are_not_custom_code(
    tiny: Callable[[str], Tiny], tmp_path: Path
) -> None:
    """SD 1.5's real model_index.json names its safety checker ["stable_diffusion", ...]: a
    diffusers pipeline module, no code of the folder's own."""
    from modelsafe.registry.audit import audit_path

    folder = tmp_path / "sd15"
    shutil.copytree(tiny("sd1").folder, folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["safety_checker"] = ["stable_diffusion", "StableDiffusionSafetyChecker"]
    (folder / "model_index.json").write_text(json.dumps(index))
    verdict = audit_path(folder)
    assert verdict.status == "safe"
    assert not [f for f in verdict.findings if f.code in ("custom-code", "python-code")]


@pytest.mark.parametrize("family", [None, "sd1"])
def test_a_broken_folder_is_refused_before_loading_with_or_without_family(
    tiny: Callable[[str], Tiny],
    tmp_path: Path,
    run_cli: Any,
    monkeypatch: pytest.MonkeyPatch,
    family: str | None,
) -> None:
    """A folder inspect knows is broken (a component's weights missing) is refused with
    inspect's reason; it was loaded component by component until diffusers failed."""
    from modelsafe.runtime import diffusers_loader

    def never(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("loaded a broken folder")

    monkeypatch.setattr(diffusers_loader, "load_pipeline", never)
    folder = tmp_path / "broken"
    shutil.copytree(tiny("sd1").folder, folder)
    for weights in (folder / "unet").glob("diffusion_pytorch_model*"):
        weights.unlink()
    toks = str(tiny("sd1").tokenizers)
    args = ["generate", "--checkpoint", str(folder), "--prompt", "x", "--steps", "1",
            "--tokenizers", toks, "--out", str(tmp_path / "out")]  # fmt: skip
    code, _, err = run_cli(*args, *(["--family", family] if family else []))
    assert code == 2 and "unet" in err and "Traceback" not in err
    assert "diffusers could not load" not in err


# -- models of families generate does not run ---------------------------------------------------


@pytest.mark.parametrize(
    ("layout", "words"),
    [
        ("flux2_bfl", "is flux2/transformer/dev: modelsafe does not generate FLUX.2 models"),
        ("chroma_radiance", "is chroma/transformer/radiance: modelsafe does not generate Chroma"),
        ("hunyuan_image21", "is hunyuanimage2.1/transformer: modelsafe does not generate Hunyuan"),
        ("sdxl_refiner", "is an SDXL refiner: it refines an SDXL base model's images"),
    ],
)
def test_a_denoiser_of_a_family_generate_does_not_run_is_refused_by_its_name(
    tmp_path: Path, run_cli: Any, monkeypatch: pytest.MonkeyPatch, layout: str, words: str
) -> None:
    """The detectors' answer is trusted: the loader's own layout guess took FLUX.2, Chroma and
    HunyuanImage for Flux.1 (and asked for a CLIP-L text encoder)."""
    from modelsafe.runtime import diffusers_loader
    from modelsafe.testing import write_safetensors
    from modelsafe.testing.layouts import base_models, recent_models

    monkeypatch.setattr(diffusers_loader, "load_pipeline", lambda *a, **k: pytest.fail("loaded"))
    specs = (
        base_models.unet_checkpoint("sdxl_refiner")
        if layout == "sdxl_refiner"
        else getattr(recent_models, layout)()
    )
    path = write_safetensors(tmp_path / "model.safetensors", specs, data="sparse")
    code, _, err = run_cli(
        "generate", "--checkpoint", str(path), "--prompt", "x", "--out", str(tmp_path / "o")
    )
    assert code == 2 and words in err and "text_encoder" not in err


def test_a_prompt_longer_than_clip_takes_is_one_short_warning(
    tiny: Callable[[str], Tiny], tmp_path: Path, run_cli: Any
) -> None:
    """diffusers logs the whole cut-off text (megabytes for a pasted prompt) and transformers'
    tokenizer a second line: one short modelsafe warning says it instead."""
    t = tiny("sd1")
    prompt = " ".join(f"word{i}" for i in range(2000))
    out = tmp_path / "out"
    args = _args(t, out, "--json")
    args[args.index("a lighthouse")] = prompt
    code, stdout, err = run_cli(*args)
    assert code == 0, err[-500:]
    warnings = json.loads(stdout)["warnings"]
    said = [w for w in warnings if "longer than its text encoder's window" in w]
    assert len(said) == 1 and len(said[0]) < 200
    assert "word1999" not in err and "sequence length is longer" not in err


# -- review findings: links re-pointed while loading, config shapes, odd inputs ---------------


def test_a_link_pointed_elsewhere_while_loading_and_back_is_refused(
    tiny: Callable[[str], Tiny], tmp_path: Path, run_cli: Any, after_audit: Any
) -> None:
    """The file the link names at the end is the one audited, unchanged: only the link's own
    stat (a new inode or ctime) shows that something else was loaded."""
    t = tiny("sd1")
    audited = tmp_path / "a.safetensors"
    shutil.copy(t.single, audited)
    other = tmp_path / "b-never-audited.safetensors"
    shutil.copy(t.single, other)
    link = tmp_path / "model.safetensors"
    link.symlink_to(audited)

    def repoint(to: Path) -> None:
        temp = tmp_path / "link.tmp"
        temp.symlink_to(to)
        os.replace(temp, link)

    after_audit(lambda: (repoint(other), repoint(audited)))
    args = _args(t, tmp_path / "out")
    args[args.index(str(t.single))] = str(link)
    code, _, err = run_cli(*args)
    assert code == 1 and "changed after it was audited" in err


@pytest.mark.parametrize(
    ("index", "words"),
    [
        ('[["unet", ["diffusers", "UNet2DConditionModel"]]]', "is not a JSON object"),
        (None, "component 'image_encoder' is [], not [library, class] or null"),
        ('{"_class_name": "StableDiffusionPipeline", "unet": ', "cannot be read"),
    ],
)
def test_a_config_dir_model_index_of_another_shape_is_named(
    tiny: Callable[[str], Tiny], tmp_path: Path, run_cli: Any, index: str | None, words: str
) -> None:
    t = tiny("sd1")
    configs = tmp_path / "configs"
    shutil.copytree(t.configs, configs)
    index_file = configs / "sd1.model_index.json"
    if index is None:
        data = json.loads(index_file.read_text())
        data["image_encoder"] = []
        index = json.dumps(data)
    index_file.write_text(index)
    args = _args(t, tmp_path / "out")
    args[args.index(str(t.configs))] = str(configs)
    code, _, err = run_cli(*args)
    assert code == 2 and words in err and "report it" not in err


@pytest.mark.parametrize(
    ("flag", "value", "words"),
    [
        ("--device", "meta", "modelsafe generates on cpu, cuda, mps or xpu"),
        ("--prompt", "a \udcff cat", "the prompt holds bytes that are not UTF-8 text"),
    ],
)
def test_odd_devices_and_undecodable_prompts_are_usage_errors(
    tiny: Callable[[str], Tiny], tmp_path: Path, run_cli: Any, flag: str, value: str, words: str
) -> None:
    t = tiny("sd1")
    args = _args(t, tmp_path / "out")
    if flag == "--prompt":
        args[args.index("a lighthouse")] = value
    else:
        args += [flag, value]
    code, _, err = run_cli(*args)
    assert code == 2 and words in err


def test_an_sd3_folder_downloaded_without_its_t5_reads_and_generates(
    tiny: Callable[[str], Tiny], tmp_path: Path, run_cli: Any
) -> None:
    """`hf download ... --exclude 'text_encoder_3/*'` saves 9 GB: diffusers runs SD3 without
    T5, so the folder is a warning, not an incomplete download, and generate passes None."""
    t = tiny("sd3")
    folder = tmp_path / "sd3-no-t5"
    shutil.copytree(t.folder, folder)
    shutil.rmtree(folder / "text_encoder_3")
    shutil.rmtree(folder / "tokenizer_3", ignore_errors=True)
    code, out, err = run_cli("inspect", str(folder), "--json")
    assert code == 0, err
    assert any("text_encoder_3" in w for w in json.loads(out)["warnings"])
    code, _, err = run_cli(
        "generate", "--checkpoint", str(folder), "--tokenizers", str(t.tokenizers),
        "--prompt", "x", "--steps", "1", "--width", "32", "--height", "32",
        "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 0, err
    assert len(list((tmp_path / "out").glob("*.png"))) == 1


def test_a_folder_that_is_no_model_is_refused_before_its_audit(
    tmp_path: Path, run_cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--checkpoint /` (or a job submitted with it) audited the whole disk file by file."""
    from modelsafe.registry import audit

    monkeypatch.setattr(audit, "audit_path", lambda *a, **k: pytest.fail("audited"))
    (tmp_path / "notes.txt").write_text("x")
    code, _, err = run_cli(
        "generate", "--checkpoint", str(tmp_path), "--prompt", "x", "--out", str(tmp_path / "o")
    )
    assert code == 2 and "is a folder, but no model folder" in err
