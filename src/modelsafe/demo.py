"""``modelsafe demo``: build a small sample model library, scan it, show what was found.

Every file is a real format: safetensors files with the tensor names and shapes of real models
(full-size layouts are written sparse, so they cost no disk), a legacy torch pickle, a hostile
pickle whose payload never runs, and broken downloads.
"""

from __future__ import annotations

import pickle
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from modelsafe.testing.safetensors_writer import TensorSpec, write_safetensors


@dataclass(frozen=True)
class DemoFile:
    path: Path
    what: str  # what the demo built, shown next to what modelsafe found


def _hostile_pickle_bytes() -> bytes:
    """A protocol-2 pickle that would call os.system("true") if loaded; the audit must say so."""
    return b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03."


def _write_torch_zip(path: Path, data_pkl: bytes) -> None:
    """A zip laid out like torch.save's: archive/data.pkl, archive/version, data records."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        zf.writestr("archive/byteorder", "little")
        zf.writestr("archive/version", "3\n")


def _write_legacy_pickle(path: Path) -> bool:
    """A pre-1.6 torch file (needs torch to write); returns False when torch is missing."""
    try:
        import torch
    except ImportError:
        return False
    state = {"emb_params": torch.zeros(2, 768, dtype=torch.float32)}
    torch.save(state, path, _use_new_zipfile_serialization=False)
    return True


def _layout(module: str, name: str, *args: object) -> list[TensorSpec] | None:
    """A layout from ``modelsafe.testing.layouts.<module>.<name>(*args)``, if that exists."""
    import importlib

    try:
        mod = importlib.import_module(f"modelsafe.testing.layouts.{module}")
    except ImportError:
        return None
    factory: Callable[..., list[TensorSpec]] | None = getattr(mod, name, None)
    return factory(*args) if factory is not None else None


def build_library(root: Path) -> list[DemoFile]:
    """Write the sample library under ``root`` (ComfyUI-style folders) and list what it holds."""
    files: list[DemoFile] = []
    models = root / "models"
    for folder in ("checkpoints", "loras", "vae", "embeddings", "controlnet", "downloads"):
        (models / folder).mkdir(parents=True, exist_ok=True)

    def add(rel: str, what: str) -> Path:
        path = models / rel
        files.append(DemoFile(path, what))
        return path

    # A small safetensors file with SD-style keys (stands in until layouts land).
    write_safetensors(
        add("embeddings/demo-embedding.safetensors", "an embedding for SD1 (768-wide)"),
        [("emb_params", "F32", (4, 768))],
        data="random",
    )
    # A legacy (pre-1.6) torch pickle.
    legacy = models / "embeddings/legacy-embedding.pt"
    if _write_legacy_pickle(legacy):
        files.append(DemoFile(legacy, "a legacy torch pickle (safe: tensors only)"))
    # A hostile pickle saved as a checkpoint.
    _write_torch_zip(
        add("checkpoints/free-model.ckpt", "a hostile pickle (calls os.system when loaded)"),
        _hostile_pickle_bytes(),
    )
    # Broken downloads: truncated safetensors, an HTML error page, a git-lfs pointer.
    full = write_safetensors(
        models / "downloads/.full.safetensors", [("w", "F16", (256, 256))], data="random"
    )
    broken = add("downloads/truncated.safetensors", "a truncated download")
    broken.write_bytes(full.read_bytes()[:4096])
    full.unlink()
    add("downloads/model.safetensors", "an HTML page saved as a model").write_text(
        "<!DOCTYPE html><html><body>Please log in to download</body></html>"
    )
    add("loras/pointer.safetensors", "a git-lfs pointer, not the data").write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64 + "\nsize 151108832\n"
    )
    _ = (pickle, struct)  # formats the demo writes by hand
    return files
