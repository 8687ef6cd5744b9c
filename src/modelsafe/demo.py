"""``modelsafe demo``: build a small sample model library, scan it, show what was found.

Every file is a real format: safetensors files with the tensor names and shapes of real models
(full-size layouts are written sparse, so they cost no disk), a legacy torch pickle, a hostile
pickle whose payload never runs, and broken downloads.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from modelsafe.errors import UsageError
from modelsafe.testing.safetensors_writer import write_safetensors


class DemoFolderError(UsageError):
    """``demo --keep DIR`` was given a folder that already holds something: the demo would
    write over the user's files (a real ``clip_l.safetensors``) and scan into their catalog."""


@dataclass(frozen=True)
class DemoFile:
    path: Path
    what: str  # what the demo built, shown next to what modelsafe found


def _hostile_pickle_bytes() -> bytes:
    """A protocol-2 pickle that would call os.system("true") if loaded; the audit must say so."""
    return b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03."


def _write_torch_zip(path: Path, data_pkl: bytes) -> None:
    """A zip laid out like torch.save's: archive/data.pkl, archive/version, data records (with
    a fixed date, so the demo's hashes are stable)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in (
            ("archive/data.pkl", data_pkl),
            ("archive/byteorder", b"little"),
            ("archive/version", b"3\n"),
        ):
            zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)


def _nonzero_data(path: Path, size: int = 64 * 1024, every: int = 1 << 20) -> None:
    """Give a sparse file real bytes where a real model has weights: its last ``size`` bytes
    and a few bytes in every ``every`` bytes (a fixed pattern, so the demo's hashes are
    stable). An all-zero end or whole zero MiB are what an unfinished download looks like, and
    inspect/scan warn of them; this costs about 4 KiB of disk per MiB."""
    pattern = bytes(range(1, 256))
    with path.open("r+b") as fh:
        end = fh.seek(0, 2)
        for offset in range(every // 2, end, every):
            fh.seek(offset)
            fh.write(pattern[:16])
        fh.seek(-size, 2)
        fh.write((pattern * (size // 255 + 1))[:size])


def _write_legacy_pickle(path: Path) -> bool:
    """A pre-1.6 torch file (needs torch to write); returns False when torch is missing."""
    try:
        import torch
    except ImportError:
        return False
    import io
    import struct

    state = {"emb_params": torch.zeros(2, 768, dtype=torch.float32)}
    buffer = io.BytesIO()
    torch.save(state, buffer, _use_new_zipfile_serialization=False)
    # torch names each storage by its memory address (a protocol-2 BINUNICODE string in the
    # object pickle and in the key list): name it "0", so the demo's hashes are stable.
    key = str(state["emb_params"].untyped_storage()._cdata).encode()
    as_written = b"X" + struct.pack("<I", len(key)) + key
    data = buffer.getvalue()
    if data.count(as_written) == 2:
        data = data.replace(as_written, b"X" + struct.pack("<I", 1) + b"0")
    path.write_bytes(data)
    return True


def check_empty_folder(root: Path) -> None:
    """Refuse a ``root`` that holds anything (DemoFolderError): the demo writes files with the
    names of real models (``models/clip/clip_l.safetensors``) and a ``catalog.db``, and must
    never write over a user's. A folder that does not exist yet, or is empty, is fine."""
    try:
        with os.scandir(root) as entries:
            first = next(iter(entries), None)
    except (FileNotFoundError, NotADirectoryError):
        return  # (not there yet: made empty; a file in the way is the caller's error)
    if first is not None:
        raise DemoFolderError(
            f"{root} is not empty ({first.name} is in it): the demo would write its "
            "sample models and catalog.db over what is there",
            hint="give a folder that does not exist yet, e.g. "
            "`modelsafe demo --keep /tmp/modelsafe-demo`",
        )


def build_library(root: Path) -> list[DemoFile]:
    """Write the sample library under ``root`` (ComfyUI-style folders) and list what it holds.
    ``root`` must be empty or not exist yet (DemoFolderError otherwise: nothing is written)."""
    from modelsafe.testing.layouts import adapters, base_models, components

    check_empty_folder(root)
    files: list[DemoFile] = []
    models = root / "models"
    for folder in ("checkpoints", "loras/sd15", "vae", "embeddings", "clip", "downloads"):
        (models / folder).mkdir(parents=True, exist_ok=True)

    def add(rel: str, what: str) -> Path:
        path = models / rel
        files.append(DemoFile(path, what))
        return path

    # Full-size layouts of real models, written sparse: a 2 GB checkpoint costs ~8 MiB of disk.
    # Its data gets bytes in every MiB and at its end, as a real model's weights do (whole zero
    # MiB or an all-zero end are what an unfinished download looks like: inspect/scan warn).
    _nonzero_data(
        write_safetensors(
            add("checkpoints/sd15-base.safetensors", "an SD1.5 checkpoint (full size, sparse)"),
            base_models.unet_checkpoint("sd1"),
        )
    )
    write_safetensors(
        add("loras/sd15-style.safetensors", "a kohya LoRA for SD1.5"),
        adapters.kohya_lora(
            [("lora_unet_", adapters.sd1_unet_modules()), ("lora_te_", adapters.clip_modules())],
            rank=8,
        ),
        metadata={"ss_network_module": "networks.lora", "ss_network_dim": "8"},
        data="random",  # (trained weights: an all-zero lora_up is an untrained LoRA)
        seed=1,
    )
    # The same LoRA by mistake in an SD1.5 folder, but made for SDXL: the scan says so.
    write_safetensors(
        add("loras/sd15/xl-detail.safetensors", "a kohya LoRA for SDXL in an SD1.5 folder"),
        adapters.kohya_lora([("lora_unet_", adapters.sdxl_unet_modules("sgm"))], rank=4),
        data="random",
        seed=2,
    )
    _nonzero_data(
        write_safetensors(
            add("vae/ft-mse.safetensors", "an SD VAE (4 latent channels)"), base_models.ldm_vae()
        )
    )
    _nonzero_data(
        write_safetensors(
            add("clip/clip_l.safetensors", "a CLIP-L text encoder"), components.clip_l()
        )
    )
    write_safetensors(
        add("embeddings/demo-embedding.safetensors", "an embedding for SD1 (768-wide)"),
        adapters.embedding("sd1", vectors=4),
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
    return files
