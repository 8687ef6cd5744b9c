"""What generate loads is what it audited: a file swapped after its audit (a rename over it, or
a swap in and back while it loads) is refused with exit 1 and nothing from it is used, and the
audit cache sees files behind a symlinked component folder change."""

from __future__ import annotations

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
    weights = write_safetensors(store / "w.safetensors", [("w", "F32", (4, 4))], data="zeros")
    model = tmp_path / "model"
    model.mkdir()
    (model / "model_index.json").write_text("{}")
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
