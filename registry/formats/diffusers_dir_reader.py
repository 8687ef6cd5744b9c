"""Read a diffusers folder (a pipeline, or one component such as a ControlNet or VAE): headers only.

- Pipeline: ``model_index.json`` names the pipeline class and its components; each component
  folder with weights becomes a TensorIndex in ``TensorIndex.components``; the top-level tensors
  are all components' tensors named ``<component>.<tensor>``, with ``source`` the weights file
  relative to the folder. A declared (non-null) component whose folder is missing or empty, a
  model component without weights or without its ``config.json``, or a scheduler without its
  ``scheduler_config.json`` (an interrupted download) makes the pipeline unreadable, naming the
  component, except ``safety_checker`` and ``feature_extractor``, which modelsafe loads
  pipelines without, and SD3's ``text_encoder_3``/``tokenizer_3`` (its T5, which diffusers runs
  without): a warning then.
- Component: a folder with ``config.json`` and weights (``diffusion_pytorch_model*.safetensors``,
  ``model*.safetensors``, a sharded ``*.safetensors.index*.json``, or a torch ``.bin``).
- Variants (``.fp16.``, ``.bf16.``, ...): one per component is read, the full-precision file when
  present (else fp16, bf16, then by name); every variant found is listed in ``extra``.
- Configs go to ``extra`` so detectors can use them: a component's ``extra["config"]``; the
  pipeline's ``extra["configs"]`` (every component, incl. scheduler) and flat ``extra["facts"]``
  such as ``unet.cross_attention_dim``, ``vae.latent_channels``, ``scheduler.prediction_type``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelsafe.errors import FileReadError, MalformedFileError
from modelsafe.registry.formats.safetensors_reader import logical_tensors, read_safetensors_index
from modelsafe.registry.walk import download_state, placeholder_download, unfinished_error
from modelsafe.types import Format, TensorIndex, TensorInfo

MAX_JSON_BYTES = 16 << 20  # configs and shard indexes are kilobytes; refuse absurd ones
# The base names diffusers and transformers give a component's weights file
# (``<base>[.<variant>].safetensors``; its shards and shard index are named after it).
WEIGHT_BASES = ("diffusion_pytorch_model", "model", "pytorch_model")
# What ends the name (before the extension) of one file of a sharded checkpoint: its number and
# the count of the set, as transformers and diffusers write them (``model-00001-of-00003``). A
# regular-expression fragment with the groups ``number`` and ``total``.
SHARD_SUFFIX = r"-(?P<number>\d{5})-of-(?P<total>\d{5})"
_WEIGHT_EXT = r"\.(?P<ext>safetensors|bin)"
_INDEX_SUFFIX = _WEIGHT_EXT + r"\.index(?:\.(?P<variant>[\w-]+))?\.json$"
# <base>[.<variant>].safetensors|bin, and <base>.safetensors.index[.<variant>].json
_SINGLE = re.compile(r"^(?P<base>[\w-]+?)(?:\.(?P<variant>[\w-]+))?" + _WEIGHT_EXT + "$")
_SHARDED = re.compile(r"^(?P<base>[\w-]+?)" + _INDEX_SUFFIX)
_VARIANT_ORDER = ("", "fp32", "fp16", "bf16")
_SHARD_NAME = re.compile(SHARD_SUFFIX + "$")
# One file of a sharded checkpoint, as transformers and diffusers name them:
# ``model-00001-of-00003.safetensors``, ``diffusion_pytorch_model.fp16-00002-of-00002.safetensors``.
_SHARD_FILE = re.compile(r"^(?P<stem>.+?)" + SHARD_SUFFIX + _WEIGHT_EXT + "$")
# A shard index, whatever the weights are called (``model.safetensors.index.json``,
# ``flux1-dev.safetensors.index.json``, ``diffusion_pytorch_model.safetensors.index.fp16.json``).
_ANY_INDEX = re.compile(r"^.+" + _INDEX_SUFFIX)
# Components a pipeline loads without (modelsafe passes None for them): their weights are often
# deleted on purpose.
OPTIONAL_COMPONENTS = frozenset({"safety_checker", "feature_extractor"})
# Components a pipeline class runs without (diffusers takes None for them): SD3's T5, left out
# of a download to save 9 GB (`hf download ... --exclude 'text_encoder_3/*'`).
OPTIONAL_BY_PIPELINE = {
    "StableDiffusion3Pipeline": frozenset({"text_encoder_3", "tokenizer_3"}),
}
# Config keys copied into the flat ``facts`` of a pipeline (component.key).
FACT_KEYS = (
    "_class_name",
    "cross_attention_dim",
    "in_channels",
    "out_channels",
    "sample_size",
    "latent_channels",
    "prediction_type",
    "num_layers",
    "num_single_layers",
    "joint_attention_dim",
    "pooled_projection_dim",
    "guidance_embeds",
    "addition_embed_type",
    "projection_class_embeddings_input_dim",
    "attention_head_dim",
    "upcast_attention",
    "hidden_size",
    "projection_dim",
    "d_model",
    "architectures",
    "model_type",
    "scaling_factor",
    "shift_factor",
)


@dataclass(frozen=True)
class WeightsChoice:
    """The weights file (or shard index) picked for a component, and the others seen."""

    path: Path
    variant: str  # "" for the full-precision file
    sharded: bool
    variants: tuple[str, ...]


def is_diffusers_dir(path: Path) -> bool:
    return (path / "model_index.json").is_file() or (path / "config.json").is_file()


def load_json(path: Path, where: str) -> Any:
    """A small JSON file, refused with a clear error when too big, unreadable or invalid."""
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise MalformedFileError(
                f"{where}: {path.name} is {size:,} bytes, more than any real config",
                hint="the folder is damaged; download it again",
            )
        data = path.read_bytes()
    except OSError as exc:
        raise _os_error(path, exc) from exc
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        from modelsafe.registry.sniff import not_a_model, sniff

        what = not_a_model(sniff(data[:4096]).value, len(data), data[:4096])
        if what is not None and what.code in ("git-lfs-pointer", "html", "empty"):
            raise MalformedFileError(f"{path}: {what.reason}", hint=what.hint) from None
        raise MalformedFileError(
            f"{path}: not valid JSON ({exc})", hint="the folder is damaged; download it again"
        ) from None


def _os_error(path: Path, exc: OSError) -> FileReadError:
    """Why a file or folder of a model folder cannot be read: a broken link named as one (and
    where it points), else the OS's reason (permissions)."""
    if os.path.islink(path) and not os.path.exists(path):
        return broken_links_error(path.parent, [path])
    return FileReadError(
        f"cannot read {path}: {exc.strerror or exc}", hint="check the path and its permissions"
    )


def _listing(folder: Path) -> list[str]:
    """The names in ``folder``; a FileReadError when it cannot be listed (permissions)."""
    try:
        return os.listdir(folder)
    except OSError as exc:
        raise _os_error(folder, exc) from exc


BROKEN_LINKS_HINT = (
    "the files the links point at are gone: a Hugging Face cache snapshot copied with `cp -r` "
    "keeps its relative links into blobs/ (copy it with `cp -rL`, or download it with `hf "
    "download --local-dir DIR`), or a blob was deleted; download it again"
)


def broken_links(folder: Path) -> list[Path]:
    """The links in ``folder`` and its subfolders whose target does not exist, in path order
    (links to folders are not followed)."""
    found = []
    for dirpath, _dirs, names in os.walk(folder):
        for name in names:
            full = Path(dirpath) / name
            if os.path.islink(full) and not os.path.exists(full):
                found.append(full)
    return sorted(found)


def _link_target(link: Path) -> str:
    try:
        return os.readlink(link)
    except OSError:
        return "?"


def describe_broken_links(folder: Path, links: list[Path]) -> str:
    """``unet/x.safetensors is a broken link to ../../blobs/ab12..., which does not exist``, with
    how many more there are."""
    first = links[0]
    try:
        name = str(first.relative_to(folder))
    except ValueError:
        name = str(first)
    more = f"; {len(links) - 1:,} more links in it are broken too" if len(links) > 1 else ""
    return f"{name} is a broken link to {_link_target(first)}, which does not exist{more}"


def broken_links_error(folder: Path, links: list[Path]) -> FileReadError:
    """The error for a model folder whose files are ``links`` that point at nothing."""
    return FileReadError(
        f"{folder}: {describe_broken_links(folder, links)}", hint=BROKEN_LINKS_HINT
    )


def refuse_broken_links(folder: Path) -> None:
    """A FileReadError when ``folder``'s ``model_index.json`` or ``config.json`` is a broken link
    (a Hugging Face snapshot copied with ``cp -r``, its blobs left behind): without it, the folder
    would look like no model folder at all."""
    for marker in ("model_index.json", "config.json"):
        path = folder / marker
        if os.path.islink(path) and not os.path.exists(path):
            rest = [link for link in broken_links(folder) if link != path]
            raise broken_links_error(folder, [path, *rest])


def find_weights(folder: Path) -> WeightsChoice | None:
    """Pick one weights file (or shard index) in a component folder; None when there is none."""
    found: dict[tuple[str, str], tuple[Path, bool]] = {}
    try:
        names = sorted(p.name for p in folder.iterdir() if p.is_file())
    except OSError:
        return None
    for name in names:
        sharded = _SHARDED.match(name)
        single = None if sharded else _SINGLE.match(name)
        match = sharded or single
        if match is None or match["base"] not in WEIGHT_BASES:
            continue
        variant = match["variant"] or ""
        if single and _SHARD_NAME.search(variant):
            continue  # one shard of a variant (``model.fp16-00001-of-00002``); its index is read
        key = (variant, match["ext"])
        if key not in found or sharded:
            found[key] = (folder / name, bool(sharded))
    if not found:
        return None
    variants = tuple(sorted({v for v, _ in found}, key=_variant_rank))
    best_variant = variants[0]
    ext = "safetensors" if (best_variant, "safetensors") in found else "bin"
    path, sharded_flag = found[(best_variant, ext)]
    return WeightsChoice(path, best_variant, sharded_flag, variants)


def shard_index_of(folder: Path) -> Path | None:
    """The shard index of a sharded model folder, or None when ``folder`` is not one.

    It is one when it holds a shard index (``<weights>.safetensors.index.json``, any name ending
    ``.index.json``) whose ``weight_map`` names shard files, whatever those names are
    (``notes.txt``, ``.no_exist/x.bin``, ``../elsewhere/x.bin``: loaders join each to the folder
    and read it, so the folder's audit must see them all), with or without a ``config.json``
    beside it: accelerate's ``load_checkpoint_in_model`` and transformers read the shards an
    index names wherever it is. An index named as one (``<x>.safetensors.index.json``,
    ``.bin.index.json``) that cannot be read (cut short, an HTML page, a git-lfs pointer) counts
    too: the folder is still one model, one that does not load. Only the index is read (it is
    small), never a shard.
    """
    found: Path | None = None
    named: set[str] = set()
    for index, weight_map in _indexes(folder):
        if weight_map is None:
            if _ANY_INDEX.match(index.name):
                found = found or index
            continue
        shards = {v for v in weight_map.values() if isinstance(v, str)}
        if shards:
            found = found or index
            named |= shards
    if found is None or (folder / "config.json").is_file() or _owns_folder(folder, named):
        return found
    return None


def _indexes(folder: Path) -> list[tuple[Path, dict[str, Any] | None]]:
    """Each ``*.index.json`` in ``folder``, in name order, with its ``weight_map`` (``{}`` when
    it has none; None when the file cannot be read as JSON)."""
    try:
        paths = sorted(p for p in folder.iterdir() if p.name.endswith(".index.json"))
    except OSError:
        return []
    found: list[tuple[Path, dict[str, Any] | None]] = []
    for index in paths:
        try:
            data = load_json(index, str(folder))
        except FileReadError:
            found.append((index, None))
            continue
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        found.append((index, weight_map if isinstance(weight_map, dict) else {}))
    return found


def _owns_folder(folder: Path, named: set[str]) -> bool:
    """Whether the shard indexes of a folder without ``config.json``, naming the shards
    ``named``, are all it holds: every model file at its top is one of them. A models folder
    (ComfyUI ``text_encoders/``) with a sharded set dropped among its single files stays a folder
    of models, each catalogued on its own (the walk still reads every file an index there names:
    :mod:`modelsafe.registry.walk`)."""
    from modelsafe.registry.walk import is_model_file

    try:
        files = [p.name for p in folder.iterdir() if not p.name.startswith(".")]
    except OSError:
        return True
    return all(
        name in named for name in files if is_model_file(name) and not name.endswith(".json")
    )


def is_sharded_component(folder: Path) -> bool:
    """Whether ``folder`` is one sharded model: its shard index names its shards
    (:func:`shard_index_of`), or it holds ``config.json`` and shards of a weights file without
    their index (``diffusion_pytorch_model-00001-of-00003.safetensors``, no other weights): parts
    of one model that does not load, not models of their own."""
    return shard_index_of(folder) is not None or bool(_orphan_shards(folder))


def is_model_dir(folder: Path) -> bool:
    """Whether diffusers or transformers take ``folder`` as one model: a pipeline
    (``model_index.json``), or a component folder whose ``config.json`` sits beside weights named
    as they name them (a weights file, a shard index, shards). One whose ``model_index.json`` or
    ``config.json`` is a broken link (a Hugging Face snapshot copied with ``cp -r``) is one too,
    which does not load."""
    if (folder / "model_index.json").is_file():
        return True
    for marker in ("model_index.json", "config.json"):
        if os.path.islink(folder / marker) and not os.path.exists(folder / marker):
            return True
    config = (folder / "config.json").is_file()
    return config and (find_weights(folder) is not None or bool(_orphan_shards(folder)))


def _orphan_shards(folder: Path) -> list[str]:
    """The shards of a weights file (diffusers or transformers name) in a component folder where
    :func:`find_weights` finds nothing: their index is not there."""
    try:
        if not (folder / "config.json").is_file() or find_weights(folder) is not None:
            return []
        names = sorted(p.name for p in folder.iterdir())
    except OSError:
        return []
    return [
        name
        for name in names
        if (match := _SHARD_FILE.match(name)) and match["stem"].split(".")[0] in WEIGHT_BASES
    ]


def lone_shard_warning(path: Path) -> str | None:
    """A warning for one shard of a sharded checkpoint whose set is not all there (``shard 1 of
    3 of x: the index and shard 00003 are missing; it is not a whole model``), judged by its
    ``-NNNNN-of-NNNNN`` name. None for any other file, and for a shard whose set is complete and
    listed by an index beside it."""
    match = _SHARD_FILE.match(path.name)
    gaps = _shard_gaps(path.parent, path.name) if match and path.is_file() else ""
    if not match or not gaps:
        return None
    number, total = int(match["number"]), int(match["total"])
    return f"shard {number} of {total} of {match['stem']}: {gaps}; it is not a whole model"


def _shard_gaps(folder: Path, shard_name: str) -> str:
    """What the set of the shard ``shard_name`` lacks in ``folder``: "the index and shard 00003
    are missing"; "" for a complete set that an index lists (or a name that is no shard's)."""
    shard = _SHARD_FILE.match(shard_name)
    try:
        names = set(os.listdir(folder)) if shard else set()
    except OSError:
        names = set()
    total = int(shard["total"]) if shard else 0
    if shard is None or total < 2 or not names:  # (a set of one is a whole model)
        return ""
    stem, ext = shard["stem"], shard["ext"]
    missing = [
        f"{k:05d}"
        for k in range(1, total + 1)
        if f"{stem}-{k:05d}-of-{total:05d}.{ext}" not in names
    ]
    indexes = sorted(name for name in names if _ANY_INDEX.match(name))
    listed, why_not = _listed_by_an_index(folder, indexes, shard_name)
    absent = [] if listed or indexes else ["the index"]
    if missing:
        shown = missing if len(missing) <= 5 else [*missing[:4], f"... ({len(missing)} in all)"]
        absent.append(f"shard{'s' if len(missing) > 1 else ''} {', '.join(shown)}")
    clauses = [why_not] if why_not else []
    if absent:
        verb = "is" if len(absent) == 1 and len(missing) <= 1 else "are"
        clauses.insert(0, f"{' and '.join(absent)} {verb} missing")
    return "; ".join(clauses)


def _listed_by_an_index(folder: Path, indexes: list[str], shard: str) -> tuple[bool, str]:
    """Whether one of the shard indexes ``indexes`` (names in ``folder``) lists ``shard``; else
    what is wrong with the first ("X cannot be read", "X does not list it"; "" when none)."""
    why_not = ""
    for name in indexes:
        try:
            data = load_json(folder / name, str(folder))
        except FileReadError:
            why_not = why_not or f"{name} cannot be read"
            continue
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if isinstance(weight_map, dict) and shard in weight_map.values():
            return True, ""
        why_not = why_not or f"{name} does not list it"
    return False, why_not


def _variant_rank(variant: str) -> tuple[int, str]:
    rank = _VARIANT_ORDER.index(variant) if variant in _VARIANT_ORDER else len(_VARIANT_ORDER)
    return rank, variant


def _read_file(path: Path) -> TensorIndex:
    from modelsafe.registry.read import read_index
    from modelsafe.registry.sniff import read_head, sniff

    try:
        head = read_head(path)
    except OSError as exc:  # (unreadable: permissions, a broken link)
        raise _os_error(path, exc) from exc
    if path.suffix == ".safetensors" and sniff(head).value == "safetensors":
        return read_safetensors_index(path)
    # Anything else (a git-LFS pointer from a clone without git-lfs, an HTML error page, a torch
    # .bin) goes through the readers that name what the file really is.
    return read_index(path)  # torch .bin through the torch-zip / legacy readers


def _with_source(
    tensors: tuple[TensorInfo, ...], source: str, prefix: str = "", folder: str = ""
) -> list[TensorInfo]:
    """Tensors renamed ``prefix + name``; ``source`` fills an empty source, ``folder/`` is put
    before every source."""
    return [
        TensorInfo(
            prefix + t.name,
            t.dtype,
            t.shape,
            t.offset,
            t.nbytes,
            (folder + "/" if folder else "") + (t.source or source),
        )
        for t in tensors
    ]


def _read_sharded(
    index_path: Path, root: Path
) -> tuple[list[TensorInfo], dict[str, str], list[str]]:
    where = str(index_path)
    data = load_json(index_path, where)
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise MalformedFileError(f"{where}: no weight_map of tensor -> shard file", "re-download")
    tensors: list[TensorInfo] = []
    metadata: dict[str, str] = {}
    warnings: list[str] = []
    folder = index_path.parent
    for shard in sorted(set(weight_map.values())):
        # Named inside the folder (no absolute path, no ".."); the file itself may be a link
        # out of it, as every file of the Hugging Face cache is (into blobs/).
        parts = shard.replace("\\", "/").split("/")
        shard_path = folder / shard
        if os.path.isabs(shard) or ".." in parts or ":" in parts[0]:
            raise MalformedFileError(
                f"{where}: shard {shard!r} lies outside the folder", "re-download"
            )
        if not shard_path.is_file() or placeholder_download(shard_path):
            raise _missing_shard(where, shard, folder)
        try:
            sub = _read_file(shard_path)
        except FileReadError as exc:
            raise unfinished_error(shard_path, exc, "inspect") from None
        expected = {k for k, v in weight_map.items() if v == shard}
        have = sub.names()
        if expected - have:
            missing = sorted(expected - have)
            raise MalformedFileError(
                f"{where}: {len(missing)} tensors listed for {shard} are not in it "
                f"(e.g. {missing[0]!r})",
                hint="the shard and its index do not belong together; download both again",
            )
        extra = have - expected
        if extra:
            elsewhere = {n for n in extra if n in weight_map}  # (the index puts them in another)
            if elsewhere:
                warnings.append(
                    f"{shard}: {len(elsewhere)} tensors listed for another shard in "
                    f"{index_path.name} (e.g. {sorted(elsewhere)[0]!r})"
                )
            if extra - elsewhere:
                warnings.append(
                    f"{shard}: {len(extra - elsewhere)} tensors not listed in {index_path.name}"
                )
        tensors += _with_source(sub.tensors, os.path.relpath(shard_path, root))
        metadata.update(sub.metadata)
        warnings += [f"{shard}: {w}" for w in sub.warnings]
    # (a packed weight whose quant state was saved into the next shard: read across shards)
    tensors = list(logical_tensors(index_path, tensors, root))
    return tensors, metadata, warnings


def _missing_shard(where: str, shard: str, folder: Path) -> MalformedFileError:
    """A shard that is not there: still downloading when a browser's or downloader's partial
    file of it is there (``<shard>.crdownload``, Firefox's ``<shard>.part``), else missing."""
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        names = []
    for name in names:
        partial = download_state(folder / name) if name.startswith(f"{shard}.") else None
        if partial is not None:
            return MalformedFileError(
                f"{where}: shard {shard!r} is still downloading ({name}: {partial.what})",
                hint=partial.advice("inspect"),
            )
    return MalformedFileError(
        f"{where}: shard {shard!r} is missing",
        hint="the download is incomplete; fetch the missing shard",
    )


def read_component(folder: Path) -> TensorIndex | None:
    """The TensorIndex of one component folder, or None when it holds no weights.

    Each tensor's ``source`` is its weights file relative to ``folder``.
    """
    root = folder
    choice = find_weights(folder) or _any_index_choice(folder)
    if choice is None:
        return None
    config_path = folder / "config.json"
    config = load_json(config_path, str(folder)) if config_path.is_file() else {}
    warnings: list[str] = []
    if choice.sharded:
        tensors, metadata, warnings = _read_sharded(choice.path, root)
    else:
        sub = _read_file(choice.path)
        # (the path as found, not resolved: in the Hugging Face cache each file is a link into
        # blobs/, outside the folder)
        rel = os.path.relpath(choice.path, root)
        tensors = _with_source(sub.tensors, rel)
        metadata, warnings = dict(sub.metadata), list(sub.warnings)
    if len(choice.variants) > 1:
        picked = choice.variant or "full"
        warnings.append(
            f"{folder.name}: variants {', '.join(v or 'full' for v in choice.variants)}; "
            f"read {picked}"
        )
    return TensorIndex(
        path=folder,
        format=Format.DIFFUSERS_DIR.value,
        tensors=tuple(tensors),
        metadata=metadata,
        warnings=tuple(warnings),
        extra={
            "config": config if isinstance(config, dict) else {},
            "class_name": config.get("_class_name") if isinstance(config, dict) else None,
            "weights": str(choice.path.relative_to(folder)),
            "variant": choice.variant or None,
            "variants": [v or "full" for v in choice.variants],
            "sharded": choice.sharded,
        },
    )


def _any_index_choice(folder: Path) -> WeightsChoice | None:
    """The shard index of a folder whose weights are not named as diffusers and transformers
    name them (``flux1-dev.safetensors.index.json``), or None (:func:`shard_index_of`)."""
    index = shard_index_of(folder)
    return WeightsChoice(index, "", True, ("",)) if index is not None else None


def _facts(configs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        f"{component}.{key}": config[key]
        for component, config in configs.items()
        for key in FACT_KEYS
        if key in config
    }


def _component_config(folder: Path) -> dict[str, Any]:
    for name in ("config.json", "scheduler_config.json"):
        path = folder / name
        if path.is_file():
            value = load_json(path, str(folder))
            return value if isinstance(value, dict) else {}
    return {}


# Component classes that hold no weights: their folders hold tokenizer files, a scheduler config,
# a preprocessor config.
_WEIGHTLESS_CLASSES = ("Tokenizer", "Scheduler", "FeatureExtractor", "Processor")
_NO_WEIGHTS = "has a config.json but no weights file"


def _has_files(folder: Path) -> bool:
    try:
        return any(p.is_file() for p in folder.rglob("*"))
    except OSError:
        return False


def _component_problem(folder: Path, library: Any, class_name: str, has_weights: bool) -> str:
    """Why diffusers cannot load a (non-empty) component folder, or "": a model without weights or
    without its config.json (both are needed to build it), a scheduler without its config."""
    if "Scheduler" in class_name and not (folder / "scheduler_config.json").is_file():
        return "has no scheduler_config.json"
    if library not in ("diffusers", "transformers") or any(
        word in class_name for word in _WEIGHTLESS_CLASSES
    ):
        return ""  # (a tokenizer's files, or a class modelsafe does not know)
    config = (folder / "config.json").is_file()
    if not has_weights:
        return _NO_WEIGHTS if config else "has neither a weights file nor a config.json"
    return "" if config else "has a weights file but no config.json"


@dataclass(frozen=True)
class _Problem:
    """What is wrong with a declared component's folder, and what kind of wrong: ``missing``
    (an incomplete download), ``links`` (links that point at nothing), ``downloading`` (a
    download of its weights still running, whose advice is ``advice``)."""

    label: str
    what: str
    kind: str = "missing"
    advice: str = ""


def _why_unloadable(folder: Path, label: str, problem: str) -> _Problem:
    """``problem`` of a component folder, told as what causes it where something does: its
    files are broken links, or its weights are still downloading (``NAME.part``)."""
    links = broken_links(folder)
    if links:
        what = f"cannot be read: {describe_broken_links(folder.parent, links)}"
        return _Problem(label, what, "links")
    if problem in (_NO_WEIGHTS, "has neither a weights file nor a config.json"):
        for name in sorted(_listing(folder)):
            partial = download_state(folder / name)
            if partial is not None:
                what = f"is still downloading its weights ({name}: {partial.what})"
                return _Problem(label, what, "downloading", partial.advice("inspect"))
    return _Problem(label, problem)


def declared_components(index: dict[str, Any]) -> dict[str, list[Any]]:
    """The components ``model_index.json`` declares: name -> [library, class]."""
    return {
        name: value
        for name, value in index.items()
        if not name.startswith("_") and isinstance(value, list) and len(value) == 2
    }


def pipeline_components(root: Path) -> frozenset[str] | None:
    """The names of the component folders ``root/model_index.json`` declares (the folders a
    pipeline loads from); None when it cannot be read as a JSON object."""
    try:
        index = load_json(root / "model_index.json", str(root / "model_index.json"))
    except FileReadError:
        return None
    return frozenset(declared_components(index)) if isinstance(index, dict) else None


def read_pipeline(root: Path) -> TensorIndex:
    """The TensorIndex of a diffusers pipeline folder (it has model_index.json)."""
    where = str(root / "model_index.json")
    index = load_json(root / "model_index.json", where)
    if not isinstance(index, dict):
        raise MalformedFileError(f"{where}: not a JSON object", hint="download it again")
    declared = declared_components(index)
    components: dict[str, TensorIndex] = {}
    configs: dict[str, dict[str, Any]] = {}
    warnings: list[str] = []
    tensors: list[TensorInfo] = []
    broken: list[_Problem] = []  # what is wrong with a component's folder
    for name, (library, class_name) in declared.items():
        if library is None and class_name is None:
            continue  # e.g. safety_checker: [null, null]
        folder = root / name
        label = f"{name} ({class_name})"
        if folder.is_dir():
            _listing(folder)  # (one that cannot be listed is said so, not taken for empty)
        if not folder.is_dir() or not _has_files(folder):
            problem = "has no folder" if not folder.is_dir() else "has an empty folder"
            broken.append(
                _why_unloadable(folder, label, problem)
                if folder.is_dir()
                else _Problem(label, problem)
            )
            continue
        configs[name] = _component_config(folder)
        component = read_component(folder)
        problem = _component_problem(folder, library, str(class_name), component is not None)
        if problem:
            broken.append(_why_unloadable(folder, label, problem))
        if component is None:
            continue
        components[name] = component
        warnings += [f"{name}: {w}" for w in component.warnings]
        tensors += _with_source(component.tensors, "", prefix=f"{name}.", folder=name)
    optional = OPTIONAL_COMPONENTS | OPTIONAL_BY_PIPELINE.get(str(index.get("_class_name")), set())
    missing = [p for p in broken if p.label.split(" ", 1)[0] not in optional]
    if missing:
        # diffusers cannot load the pipeline without them (an interrupted download has fetched the
        # small config files, not the weights, or left a folder empty).
        what = "; ".join(f"{p.label} {p.what}" for p in missing)
        raise MalformedFileError(
            f"{root}: component{'s' if len(missing) > 1 else ''} {what}, so the pipeline cannot "
            "be loaded",
            hint=_fix(missing),
        )
    if not components:
        raise MalformedFileError(
            f"{root}: model_index.json declares no component with weights",
            hint="the download is incomplete: fetch the component folders' weights files",
        )
    # (components pipelines load without: their weights are often deleted on purpose)
    warnings += [f"component {p.label} {p.what}" for p in broken]
    return TensorIndex(
        path=root,
        format=Format.DIFFUSERS_DIR.value,
        tensors=tuple(tensors),
        metadata={},
        warnings=tuple(warnings),
        components=components,
        extra={
            "pipeline_class": index.get("_class_name"),
            "diffusers_version": index.get("_diffusers_version"),
            "declared_components": {k: list(v) for k, v in declared.items()},
            "configs": configs,
            "facts": _facts(configs),
        },
    )


def _fix(problems: list[_Problem]) -> str:
    """What to do about the components ``problems`` names."""
    if any(p.kind == "links" for p in problems):
        return BROKEN_LINKS_HINT
    if all(p.kind == "downloading" for p in problems):
        return problems[0].advice
    names = ", ".join(p.label.split(" ", 1)[0] for p in problems)
    weights = all(p.what == _NO_WEIGHTS for p in problems)
    return f"the download is incomplete: fetch the {'weights ' if weights else ''}files of {names}"


def _refuse_orphan_shards(folder: Path) -> None:
    """A component folder holding shards without their index: what is missing, as an error."""
    orphans = _orphan_shards(folder)
    gaps = _shard_gaps(folder, orphans[0]) if orphans else ""
    if gaps:
        shown = ", ".join(orphans[:3]) + (", ..." if len(orphans) > 3 else "")
        raise MalformedFileError(
            f"{folder}: {shown}: {gaps}, so the model cannot be loaded",
            hint="the download is incomplete: fetch the shard index and every shard",
        )


def read_diffusers_dir(path: Path) -> TensorIndex | None:
    """A pipeline or single-component folder's index; None when the folder is neither."""
    _listing(path)  # (a folder that cannot be listed is said so, not taken for no model)
    refuse_broken_links(path)
    if (path / "model_index.json").is_file():
        return read_pipeline(path)
    if not (path / "config.json").is_file():
        # (shards and their index without a config: one model, read as the index lists it)
        return read_component(path) if shard_index_of(path) is not None else None
    component = read_component(path)
    if component is None:
        _refuse_orphan_shards(path)
        links = broken_links(path)
        if links:
            raise broken_links_error(path, links)
        raise MalformedFileError(
            f"{path}: config.json but no weights file (diffusion_pytorch_model.safetensors, "
            "model.safetensors, a *.safetensors.index.json or a .bin)",
            hint="the download is incomplete; fetch the weights file",
        )
    return component
