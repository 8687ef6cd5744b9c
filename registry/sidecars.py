"""What a download manager wrote beside a model file about it, and whether the file agrees.

Tools that download from Civitai keep the model's page data next to the file, under its stem:

- Civitai Helper / SD-Civitai-Browser+: ``<stem>.civitai.info`` (the Civitai API's model
  version: ``baseModel``, ``trainedWords``, ``model.type`` and ``files`` with ``sizeKB`` and
  ``hashes.SHA256``);
- Stability Matrix: ``<stem>.cm-info.json`` (``BaseModel``, ``ModelType``, ``TrainedWords``,
  ``Hashes.SHA256``);
- ComfyUI-Lora-Manager: ``<stem>.metadata.json`` (``base_model``, ``size``, ``sha256``, and the
  version under ``civitai``);
- AUTOMATIC1111's user metadata (``<stem>.json``: ``sd version`` SD1/SD2/SDXL, ``activation
  text``).

From them modelsafe reports the Civitai facts (``facts["civitai"]``) and three warnings: the
family Civitai names is not the one the tensors show (a file filed under the wrong base model, or
the wrong file saved under the name); the file's size is not the size Civitai lists (a download
cut short or padded: checked by ``stat`` alone); its SHA-256 is none of those listed (damaged or
replaced; checked when the file is hashed anyway: ``inspect --hash``, ``scan``). Nothing is
fetched: only the files already on disk are read, each at most :data:`MAX_SIDECAR` bytes.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

MAX_SIDECAR = 8 << 20  # bytes: a version's page data with a long description is ~100 KB

# Civitai's base model names (``baseModel``) -> modelsafe's family, by prefix of the lower-case
# name, longest first. Names of architectures modelsafe does not name as a family (Pony V7 on
# AuraFlow, Hunyuan 1 = HunyuanDiT, Kolors, PixArt, SVD, Mochi, LTXV, CogVideoX, "Other") map to
# nothing and are never compared.
_BASE_MODELS: tuple[tuple[str, str | None], ...] = (
    ("sd 1", "sd1"),
    ("sd1", "sd1"),
    ("sd 2.1 unclip", None),
    ("sd 2", "sd2"),
    ("sd2", "sd2"),
    ("sdxl", "sdxl"),
    ("pony v7", None),
    ("pony", "sdxl"),
    ("illustrious", "sdxl"),
    ("noobai", "sdxl"),
    ("playground v2", "sdxl"),
    ("sd 3.5", "sd3.5"),
    ("sd 3", "sd3"),
    ("flux.1", "flux1"),
    ("flux.2", "flux2"),
    ("chroma", "chroma"),
    ("hidream", "hidream"),
    ("qwen", "qwen-image"),
    ("hunyuan video", "hunyuan-video"),
    ("wan video", "wan"),
    ("lumina", "lumina2"),
    ("stable cascade", "stable-cascade"),
    ("zimage", "z-image"),
    ("z-image", "z-image"),
    ("kandinsky 5", "kandinsky5"),
)

# Families one Civitai base model may be identified as (SD 3.5 Medium shares SD3's layout).
_SAME_BASE = ({"sd3", "sd3.5"}, {"sdxl", "sdxl_refiner"}, {"flux1", "chroma"})


@dataclass(frozen=True)
class ListedFile:
    """A file of the model version as the sidecar lists it."""

    name: str | None
    size: int | None  # bytes
    sha256: str | None  # lower-case hex


@dataclass(frozen=True)
class Sidecar:
    """What one sidecar file says about the model file beside it."""

    path: Path
    tool: str
    base_model: str | None = None
    model_type: str | None = None
    model_name: str | None = None
    version_name: str | None = None
    model_id: int | None = None
    version_id: int | None = None
    trained_words: list[str] = field(default_factory=list)
    files: list[ListedFile] = field(default_factory=list)

    @property
    def family(self) -> str | None:
        return family_of_base_model(self.base_model)

    def facts(self) -> dict[str, Any]:
        """``facts["civitai"]`` of the inspect report."""
        found = {
            "sidecar": str(self.path),
            "tool": self.tool,
            "base_model": self.base_model,
            "family": self.family,
            "model_type": self.model_type,
            "model_name": self.model_name,
            "version_name": self.version_name,
            "model_id": self.model_id,
            "version_id": self.version_id,
            "trained_words": self.trained_words or None,
        }
        return {k: v for k, v in found.items() if v is not None}


def family_of_base_model(base_model: str | None) -> str | None:
    """modelsafe's family for a Civitai base model name (``SD 1.5`` -> ``sd1``, ``Pony`` ->
    ``sdxl``, ``Flux.1 D`` -> ``flux1``); None when it names none."""
    if not base_model:
        return None
    text = " ".join(base_model.lower().split())
    for prefix, family in _BASE_MODELS:
        if text.startswith(prefix):
            return family
    return None


def read_sidecar(model: Path) -> Sidecar | None:
    """The first readable sidecar of the model file at ``model`` (:data:`SIDECARS`); None when
    there is none. A sidecar that cannot be read or is not what its tool writes is passed over:
    it is not the model's problem."""
    for suffix, tool, parse in SIDECARS:
        path = model.with_name(_stem(model.name) + suffix)
        value = _read_json(path)
        if not isinstance(value, dict):
            continue
        try:
            found = parse(path, tool, value)
        except Exception:  # noqa: BLE001 - values out of place (a number for a list, ...)
            continue
        if found is not None:
            return found
    return None


def _stem(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else name


def _read_json(path: Path) -> Any:
    """The JSON in the regular file at ``path`` (a FIFO, a device or a link to one is never
    read: :func:`modelsafe.registry.sniff.open_regular`), or None."""
    from modelsafe.registry.sniff import open_regular

    fh = open_regular(path)
    if fh is None:
        return None
    try:
        with fh:
            data = fh.read(MAX_SIDECAR + 1)
    except OSError:
        return None
    if len(data) > MAX_SIDECAR:
        return None
    try:
        return json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


def _sha256(value: Any) -> str | None:
    return value.lower() if isinstance(value, str) and _SHA256.match(value) else None


def _words(value: Any) -> list[str]:
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list):
        return []
    return [w.strip() for w in value if isinstance(w, str) and w.strip()][:50]


def _bytes_of_kb(size_kb: Any) -> int | None:
    """Civitai's ``sizeKB`` (a float of KiB) in bytes; None when it is no finite positive
    number (``1e400`` reads as infinity)."""
    if isinstance(size_kb, bool) or not isinstance(size_kb, int | float):
        return None
    if not math.isfinite(size_kb) or size_kb <= 0:
        return None
    return round(size_kb * 1024)


def _civitai_version(path: Path, tool: str, value: dict[str, Any]) -> Sidecar | None:
    """The Civitai API's model version (``.civitai.info``; Lora Manager's ``civitai``)."""
    model = _dict(value.get("model"))
    files = []
    listed = value.get("files")
    for entry in listed if isinstance(listed, list) else []:
        if not isinstance(entry, dict):
            continue
        size = _bytes_of_kb(entry.get("sizeKB"))
        hashes = _dict(entry.get("hashes"))
        files.append(ListedFile(_text(entry.get("name")), size, _sha256(hashes.get("SHA256"))))
    if not (files or value.get("baseModel") or value.get("modelId") or value.get("trainedWords")):
        return None
    return Sidecar(
        path,
        tool,
        base_model=_text(value.get("baseModel")),
        model_type=_text(model.get("type")),
        model_name=_text(model.get("name")),
        version_name=_text(value.get("name")),
        model_id=_int(value.get("modelId")),
        version_id=_int(value.get("id")),
        trained_words=_words(value.get("trainedWords")),
        files=files,
    )


def _stability_matrix(path: Path, tool: str, value: dict[str, Any]) -> Sidecar | None:
    if not any(k in value for k in ("ModelId", "VersionId", "BaseModel")):
        return None
    hashes = _dict(value.get("Hashes"))
    sha256 = _sha256(hashes.get("SHA256"))
    return Sidecar(
        path,
        tool,
        base_model=_text(value.get("BaseModel")),
        model_type=_text(value.get("ModelType")),
        model_name=_text(value.get("ModelName")),
        version_name=_text(value.get("VersionName")),
        model_id=_int(value.get("ModelId")),
        version_id=_int(value.get("VersionId")),
        trained_words=_words(value.get("TrainedWords")),
        files=[ListedFile(None, None, sha256)] if sha256 else [],
    )


def _lora_manager(path: Path, tool: str, value: dict[str, Any]) -> Sidecar | None:
    """Its own ``base_model``/``model_name``/``size``/``sha256`` over the Civitai version it
    keeps under ``civitai``."""
    if not any(k in value for k in ("sha256", "base_model", "civitai")):
        return None
    version = _dict(value.get("civitai"))
    from_civitai = _civitai_version(path, tool, version) if version else None
    base = from_civitai or Sidecar(path, tool)
    own = ListedFile(
        _text(value.get("file_name")), _int(value.get("size")), _sha256(value.get("sha256"))
    )
    return replace(
        base,
        base_model=_text(value.get("base_model")) or base.base_model,
        model_name=_text(value.get("model_name")) or base.model_name,
        files=[own] if (own.size or own.sha256) else [],
    )


# AUTOMATIC1111's "sd version" values -> family.
_A1111_VERSIONS = {"sd1": "SD 1", "sd2": "SD 2", "sdxl": "SDXL"}


def _a1111(path: Path, tool: str, value: dict[str, Any]) -> Sidecar | None:
    version = value.get("sd version")
    if not isinstance(version, str) and "activation text" not in value:
        return None  # (another tool's JSON: a config, a workflow)
    base = _A1111_VERSIONS.get(version.strip().lower()) if isinstance(version, str) else None
    return Sidecar(
        path,
        tool,
        base_model=base,
        trained_words=_words(value.get("activation text")),
    )


# (suffix, tool, parser) in the order they are tried; the first readable one is used.
SIDECARS: tuple[tuple[str, str, Callable[[Path, str, dict[str, Any]], Sidecar | None]], ...] = (
    (".civitai.info", "Civitai Helper", _civitai_version),
    (".cm-info.json", "Stability Matrix", _stability_matrix),
    (".metadata.json", "ComfyUI-Lora-Manager", _lora_manager),
    (".json", "AUTOMATIC1111 user metadata", _a1111),
)


def family_warning(sidecar: Sidecar, family: str | None) -> str | None:
    """A warning when the family the sidecar names is not the one the tensors show."""
    listed = sidecar.family
    if listed is None or family in (None, "unknown", "any") or family == listed:
        return None
    if any({listed, family} <= same for same in _SAME_BASE):
        return None
    return (
        f"{sidecar.path.name} ({sidecar.tool}) lists this file as {sidecar.base_model}, but its "
        f"tensors are {family}: the file was filed under the wrong base model, or another file "
        "was saved under this name"
    )


def _this_file(sidecar: Sidecar, model: Path) -> list[ListedFile]:
    """The listed files that may be this one: the one with its name, else all of them."""
    named = [f for f in sidecar.files if f.name == model.name]
    return named or sidecar.files


def size_warning(sidecar: Sidecar, model: Path, size: int) -> str | None:
    """A warning when the file's size is none of the sizes listed for the version's files
    (within the 1 KB the listed sizes are rounded to): a file saved under another file's name
    (the pruned fp16 one as ``x.safetensors``) is no damaged download. The sizes said are
    those of the file with its name, when one is listed."""
    every = [f.size for f in sidecar.files if f.size]
    sizes = [f.size for f in _this_file(sidecar, model) if f.size]
    if not sizes or any(abs(size - s) <= 1024 for s in every):
        return None
    listed = " or ".join(f"{s:,}" for s in sorted(set(sizes))[:3])
    cut = "shorter" if size < min(sizes) else "longer"
    return (
        f"the file has {size:,} bytes, {cut} than the {listed} bytes {sidecar.path.name} "
        f"({sidecar.tool}) lists for it: a download cut short or damaged; download it again"
    )


def hash_warning(sidecar: Sidecar, model: Path, sha256: str | None) -> str | None:
    """A warning when the file's SHA-256 is none of those listed for it."""
    listed = [f.sha256 for f in _this_file(sidecar, model) if f.sha256]
    every = {f.sha256 for f in sidecar.files if f.sha256}
    if not sha256 or not listed or sha256.lower() in every:
        return None
    return (
        f"the file's SHA-256 {sha256[:10]}... is not the {listed[0][:10]}... "
        f"{sidecar.path.name} ({sidecar.tool}) lists for it: the download is damaged, or the "
        "file was replaced or converted since; download it again if it was not"
    )


def sidecar_findings(
    model: Path, family: str | None, sha256: str | None = None
) -> tuple[dict[str, Any], list[str]]:
    """``(facts, warnings)`` for the model file at ``model`` from its sidecar (``({}, [])``
    when it has none): ``facts`` is ``{"civitai": ...}``; the warnings are those of
    :func:`family_warning`, :func:`size_warning` and, given the file's ``sha256``,
    :func:`hash_warning`."""
    sidecar = read_sidecar(model)
    if sidecar is None:
        return {}, []
    try:
        size = model.stat().st_size
    except OSError:
        size = None
    found = [
        family_warning(sidecar, family),
        size_warning(sidecar, model, size) if size is not None else None,
        hash_warning(sidecar, model, sha256),
    ]
    return {"civitai": sidecar.facts()}, [w for w in found if w]


def civitai_line(facts: dict[str, Any]) -> str:
    """``facts["civitai"]`` in one line: ``Detail Tweaker / v1.0 (SDXL 1.0 LORA, version
    62833) from detail.civitai.info``."""
    name = " / ".join(str(facts[k]) for k in ("model_name", "version_name") if facts.get(k))
    about = " ".join(str(facts[k]) for k in ("base_model", "model_type") if facts.get(k))
    if facts.get("version_id"):
        about = (
            f"{about}, version {facts['version_id']}" if about else f"version {facts['version_id']}"
        )
    where = f"from {Path(str(facts.get('sidecar', ''))).name}"
    return " ".join(x for x in (name, f"({about})" if about else "", where) if x)
