"""Find the model files and diffusers folders under some paths, with the stat facts a scan keys on.

What counts as a model (decided here, documented in docs/scan.md):

- a file whose extension is a model extension (``.safetensors``, ``.sft``, ``.ckpt``, ``.pt``,
  ``.pth``, ``.bin``, ``.gguf``, ``.pkl``, ``.pickle``, ``.pt2``, ``.joblib``, ``.pth.tar``,
  ``.pkl.gz``; ``.npy`` is not a model) whatever its bytes
  are: a model file that turns out to be an HTML page is exactly what a scan must report. Trailing
  whitespace and wget's duplicate number (``model.safetensors.1``) after it are allowed. Plugins
  add extensions of their formats (hook ``modelsafe_model_extensions``);
- a folder holding ``model_index.json`` (a diffusers pipeline): one entry for the whole folder;
  nothing in the component folders it declares is listed separately, but what lies beside them
  (a Hugging Face repo's single-file checkpoint or LoRA next to its pipeline) is walked as usual;
- a sharded model folder (a shard index such as
  ``diffusion_pytorch_model.safetensors.index.json`` whose ``weight_map`` names its shard files,
  with or without ``config.json``, as a downloaded FLUX ``transformer/`` or T5
  ``text_encoder_2/`` folder is: accelerate and transformers load either): one entry too, so a
  missing or truncated shard makes the whole model an error instead of leaving its other shards
  listed as models of their own.

Symbolic links are followed, each real folder is entered once (a link back to a folder already
being walked is a loop, reported and not entered again; the same holds inside a diffusers folder)
and each real file is reported with every path that reaches it, so a scan reads it once. Entries
that cannot be read are reported with a reason instead of stopping the walk, and so is a name that
is not valid UTF-8 (the catalog stores text). Hidden entries (a name starting with ``.``) are
not walked, but a hidden model file, or a hidden folder with a model file in it, is reported as
skipped (loaders such as ComfyUI list them), save the hub's bookkeeping (:func:`bookkeeping`) and
macOS AppleDouble companions (``._x.safetensors``); unfinished downloads
(``model.safetensors.part``) are reported as such.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat as stat_module
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from modelsafe.errors import FileReadError

MODEL_FILE_EXTENSIONS = frozenset(
    {
        ".safetensors",
        ".sft",
        ".ckpt",
        ".pt",
        ".pth",
        ".bin",
        ".gguf",
        ".pkl",
        ".pickle",
        ".pt2",  # (torch.export; ComfyUI lists it)
        ".joblib",  # (scikit-learn models on the Hub: joblib.load unpickles them)
        ".pth.tar",  # (torch.save checkpoints: model_best.pth.tar)
        ".pkl.gz",  # (pickle.load(gzip.open(...)))
    }
)
PIPELINE_MARKER = "model_index.json"


@dataclass(frozen=True, eq=False)
class StatKey:
    """What a scan compares to decide that a file did not change (its bytes are never read).

    ``ctime_ns`` is there because ``mtime`` can be set back (``touch -r``, ``cp -p``, ``rsync -t``)
    while the change time cannot: an in-place rewrite of the same size, or a ``chmod`` that makes
    an unreadable file readable, changes it. A ``ctime_ns`` of 0 means "not recorded" (a catalog
    row written before modelsafe stored it) and matches any change time, so an upgrade does not
    read every file again.
    """

    size: int
    mtime_ns: int
    inode: int
    device: int
    ctime_ns: int = 0

    @classmethod
    def of(cls, st: os.stat_result) -> StatKey:
        return cls(st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev, st.st_ctime_ns)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StatKey):
            return NotImplemented
        return (self.size, self.mtime_ns, self.inode, self.device) == (
            other.size,
            other.mtime_ns,
            other.inode,
            other.device,
        ) and (self.ctime_ns == other.ctime_ns or not self.ctime_ns or not other.ctime_ns)

    def __hash__(self) -> int:
        return hash((self.size, self.mtime_ns, self.inode, self.device))

    def ignoring_ctime(self) -> StatKey:
        """This key less its change time, which a rename or a new hard link changes: equal to
        the key of the same file after a move (same device, inode, size and mtime)."""
        return StatKey(self.size, self.mtime_ns, self.inode, self.device)


@dataclass(frozen=True)
class Found:
    """One model file or diffusers folder, with every path under the roots that reaches it."""

    path: str  # the first path (in walk order) that reached it; absolute, links not resolved
    key: StatKey
    is_dir: bool = False
    aliases: tuple[str, ...] = ()  # other paths to the same real file (links, hard links)

    @property
    def paths(self) -> tuple[str, ...]:
        return (self.path, *self.aliases)


@dataclass(frozen=True)
class Skipped:
    """An entry the walk could not use, and why."""

    path: str
    reason: str


@dataclass
class WalkResult:
    found: list[Found] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    # Folders that could not be listed: what is below them may exist, so it is not "missing".
    unlisted: list[str] = field(default_factory=list)


# wget's name for a second download of a file already there: ``model.safetensors.1``, ``.2``...
_WGET_DUPLICATE = re.compile(r"\.[0-9]+\Z")


def model_extension(name: str, extensions: frozenset[str] = MODEL_FILE_EXTENSIONS) -> str | None:
    """The model extension (lower case, one of ``extensions``) that ``name`` ends with, or None
    for no model file.

    Trailing whitespace is not part of it (``model.safetensors `` after a copy-paste rename on a
    Windows share), and neither is wget's number for a duplicate download (``model.safetensors.1``:
    a complete file; the bytes decide its format as for any other). A number after any other name
    (``x.1``) does not make a model file.
    """
    base = name.rstrip()
    duplicate = _WGET_DUPLICATE.search(base)
    for stem in (base, base[: duplicate.start()] if duplicate else None):
        ext = _extension_of(stem, extensions) if stem else None
        if ext is not None:
            return ext
    return None


def _extension_of(name: str, extensions: frozenset[str]) -> str | None:
    """The one of ``extensions`` ``name`` ends with: its last suffix, or its last two
    (``.pth.tar``, ``.pkl.gz``); None for none."""
    stem, last = os.path.splitext(name)
    for ext in (os.path.splitext(stem)[1] + last, last):
        if ext.lower() in extensions:
            return ext.lower()
    return None


def is_model_file(name: str, extensions: frozenset[str] = MODEL_FILE_EXTENSIONS) -> bool:
    return model_extension(name, extensions) is not None


HIDDEN_FOLDER = (
    "a hidden folder: scan does not walk it, but loaders such as ComfyUI list the model files "
    "in it; run `modelsafe audit` on it, or scan it by its own path"
)
HIDDEN_FILE = (
    "a hidden file: scan leaves it out, but loaders such as ComfyUI list it; run "
    "`modelsafe audit` on it, or scan it by its own path"
)
# How many entries of a hidden folder are looked at for a model file before it is reported
# anyway (what lies past them cannot be told): a ComfyUI ``.venv`` holds some 50,000.
_HIDDEN_LOOK_LIMIT = 200_000
# The first bytes of a macOS AppleDouble file (``._model.safetensors``: the resource fork and
# attributes macOS writes beside a file on exFAT, FAT or SMB), no model.
_APPLE_DOUBLE_MAGIC = b"\x00\x05\x16\x07"


def holds_model_file(path: str, extensions: frozenset[str] = MODEL_FILE_EXTENSIONS) -> bool:
    """Whether the folder ``path`` holds a file named as a model file at any depth (links
    followed, each folder once, never into /proc or /sys: :func:`walk_tree`). True when that
    cannot be told: the folder cannot be listed, or it holds more than ``_HIDDEN_LOOK_LIMIT``
    entries."""
    try:
        os.listdir(path)
    except OSError:
        return True
    looked = 0
    for _dirpath, filenames in walk_tree(path):
        if any(is_model_file(name, extensions) for name in filenames):
            return True
        looked += len(filenames) + 1
        if looked > _HIDDEN_LOOK_LIMIT:
            return True
    return False


def apple_double(path: str) -> bool:
    """Whether ``path`` is a macOS AppleDouble companion (``._x.safetensors``): named so, a
    regular file outside /proc and /sys, and it starts with the AppleDouble magic. One named so
    with anything else in it is what a loader listing ``._x.safetensors`` would read."""
    from modelsafe.registry.audit import in_system_folder
    from modelsafe.registry.sniff import open_regular

    if not os.path.basename(path).startswith("._") or in_system_folder(Path(path)):
        return False
    fh = open_regular(path)
    if fh is None:
        return False
    try:
        with fh:
            return fh.read(len(_APPLE_DOUBLE_MAGIC)) == _APPLE_DOUBLE_MAGIC
    except OSError:
        return False


def bookkeeping(path: str, extensions: frozenset[str] = MODEL_FILE_EXTENSIONS) -> bool:
    """Whether the hidden folder ``path`` may be left out of a scan without a word: it holds no
    file named as a model file (``.git``, ``.venv``, ``.ipynb_checkpoints``, the hub's
    ``.locks``: :func:`holds_model_file`), it is ``.git`` (the one hidden folder ComfyUI's
    listing leaves out; git keeps no file under a model's name in it), or it is the Hugging Face
    hub's own, which no loader reads (``models--x/.no_exist``, as ``audit DIR`` leaves it out).
    A trash, ``.svn``, ``.hg`` or a ``.cache/huggingface`` that holds a model file is reported:
    ComfyUI lists what is in it."""
    from modelsafe.registry.audit import hub_bookkeeping

    if os.path.basename(path) == ".git" or hub_bookkeeping(Path(path)):
        return True
    return not holds_model_file(path, extensions)


SYMLINK_LOOP = "symlink loop: leads back to a folder above it"
SELF_LOOP = "symlink loop: it leads back to itself"
ALREADY_WALKED = "already scanned through another path"
VANISHED = "deleted while being read"  # (listed, then gone before it could be read)


def walk_tree(path: str, skipped: list[Skipped] | None = None) -> Iterator[tuple[str, list[str]]]:
    """``(folder, file names)`` for ``path`` and every folder below it, in path order.

    Links are followed and each real folder is entered once, as in the scan's own walk: a link
    back to a folder above it (a loop, added to ``skipped``) or to a folder already entered
    through another path is not entered again. Without that, two links back to the top make the
    walk exponential. Folders that cannot be listed are left out, and so is any folder in
    /proc or /sys or a link into them (the audit's one rule,
    :func:`modelsafe.registry.audit.in_system_folder`: ``extra -> /proc/self`` leads to ``/``
    through ``root``, and ``/proc`` files never end): the audit makes the folder an error for it.
    """
    from modelsafe.registry.audit import in_system_folder

    top = os.stat(path)
    entered = {(top.st_dev, top.st_ino)}
    chains: dict[str, tuple[tuple[int, int], ...]] = {path: ((top.st_dev, top.st_ino),)}
    for dirpath, dirnames, filenames in os.walk(path, followlinks=True):
        chain = chains.pop(dirpath, ())
        keep = []
        for name in sorted(dirnames):
            sub = os.path.join(dirpath, name)
            try:
                st = os.stat(sub)
            except OSError:
                continue
            if in_system_folder(Path(sub)):
                continue
            ident = (st.st_dev, st.st_ino)
            if ident in entered:
                if skipped is not None and ident in chain:
                    skipped.append(Skipped(printable(sub), SYMLINK_LOOP))
                continue
            entered.add(ident)
            chains[sub] = (*chain, ident)
            keep.append(name)
        dirnames[:] = keep
        yield dirpath, sorted(filenames)


def folder_key(path: str, skipped: list[Skipped] | None = None) -> StatKey:
    """A model folder's key: total size and newest mtime of everything in it, its inode, and a
    change stamp in place of a ctime (:func:`_change_stamp`).

    The stamp holds which files the folder is made of, not only how big and how old they are: a
    symlinked component (``unet -> ../store/current/unet``) pointed at other files of the same
    size and mtimes reads as changed, as a single file's link swap does (its inode is in its key).
    It costs a stat and an lstat per file."""
    st = os.stat(path)
    size, newest, changed = 0, st.st_mtime_ns, st.st_ctime_ns
    identity = hashlib.blake2b(digest_size=16)
    for dirpath, filenames in walk_tree(path, skipped):
        dst = os.stat(dirpath)
        newest, changed = max(newest, dst.st_mtime_ns), max(changed, dst.st_ctime_ns)
        _add_identity(identity, path, dirpath, dst)
        for name in filenames:
            full = os.path.join(dirpath, name)
            try:
                fst: os.stat_result | None = os.stat(full)
            except OSError:
                fst = None  # (a broken link: where it leads is still part of the stamp)
            _add_identity(identity, path, full, fst)
            if fst is not None:
                size += fst.st_size
                newest, changed = max(newest, fst.st_mtime_ns), max(changed, fst.st_ctime_ns)
    return StatKey(size, newest, st.st_ino, st.st_dev, _change_stamp(changed, identity))


def _add_identity(
    identity: hashlib.blake2b, top: str, path: str, st: os.stat_result | None
) -> None:
    """Add what ``path`` (a file or folder under ``top``) is to a folder's ``identity``: its
    path in the folder, the device and inode it leads to (links followed), and where it leads
    when it is a symbolic link (links are followed; their own stat changes when re-pointed)."""
    target = _readlink(path) if os.path.islink(path) else ""
    ident = f"{st.st_dev}:{st.st_ino}" if st is not None else "?"
    rel = os.path.relpath(path, top)
    identity.update(os.fsencode(rel) + b"\0" + os.fsencode(target) + f"\0{ident}\n".encode())


def _change_stamp(ctime_ns: int, identity: hashlib.blake2b) -> int:
    """A folder's newest ctime mixed with the identity of the files it is made of: a positive
    63-bit number (never 0, which :class:`StatKey` takes for "not recorded") that changes when
    either does."""
    identity.update(str(ctime_ns).encode())
    return int.from_bytes(identity.digest()[:8], "big") >> 1 or 1


def is_model_folder(path: str) -> bool:
    """A folder that is one model: a diffusers pipeline, or a sharded component folder (its
    index or a shard missing included: one model that does not load)."""
    if os.path.isfile(os.path.join(path, PIPELINE_MARKER)):
        return True
    from modelsafe.registry.formats.diffusers_dir_reader import is_sharded_component

    return is_sharded_component(Path(path))


def _any_entry(entry: os.DirEntry[str]) -> bool:
    return True


def _beside_pipeline(path: str) -> Callable[[os.DirEntry[str]], bool] | None:
    """For a diffusers pipeline folder, which of its entries are models of their own: every
    entry but the component folders ``model_index.json`` declares (a Hugging Face repo keeps
    its single-file checkpoint, a LoRA or another VAE beside the pipeline: ``flux1-dev.safetensors``
    and ``ae.safetensors`` in FLUX.1-dev). None for any other model folder (nothing in it is a
    model of its own); only the loose files when ``model_index.json`` declares no component
    (or cannot be read)."""
    from modelsafe.registry.formats.diffusers_dir_reader import pipeline_components

    if not os.path.isfile(os.path.join(path, PIPELINE_MARKER)):
        return None
    components = pipeline_components(Path(path))
    if not components:
        return lambda entry: not _is_dir(entry)
    return lambda entry: entry.name not in components


class _Walker:
    def __init__(self, extensions: frozenset[str]) -> None:
        self.extensions = extensions
        self.result = WalkResult()
        self._by_inode: dict[tuple[int, int], int] = {}  # (device, inode) -> index in found
        self._entered: set[tuple[int, int]] = set()
        self._skipped: set[Skipped] = set()
        self._top = ""  # the root being walked (the folders above an index, up to it)

    def add(self, path: str, key: StatKey, is_dir: bool = False) -> None:
        ident = (key.device, key.inode)
        at = self._by_inode.get(ident)
        if at is None:
            self._by_inode[ident] = len(self.result.found)
            self.result.found.append(Found(path, key, is_dir))
            return
        first = self.result.found[at]
        if path not in first.paths:
            self.result.found[at] = Found(
                first.path, first.key, first.is_dir, (*first.aliases, path)
            )

    def skip(self, path: str, reason: str) -> None:
        """Report ``path`` once (a loop inside a pipeline folder is met by the folder's key and
        again by the walk of what lies beside its components)."""
        skipped = Skipped(path, reason)
        if skipped not in self._skipped:
            self._skipped.add(skipped)
            self.result.skipped.append(skipped)

    def root(self, root: str) -> None:
        self._top = root
        if not is_utf8(root):
            self.skip(printable(root), NOT_UTF8)
            return
        try:
            st = os.stat(root)
        except FileNotFoundError:
            self.skip(root, "does not exist" if not os.path.islink(root) else "broken symlink")
            return
        except OSError as exc:
            self.skip(root, f"cannot read: {exc.strerror or exc}")
            return
        partial = partial_download(
            os.path.basename(root),
            folder=stat_module.S_ISDIR(st.st_mode),
            extensions=self.extensions,
        )
        if partial:
            self.skip(root, partial.reason("scan"))
        elif stat_module.S_ISDIR(st.st_mode):
            self.folder(root, st, chain=())
        elif stat_module.S_ISREG(st.st_mode):
            self.file(root, st)
        else:
            self.skip(root, "not a regular file or folder")

    def file(self, path: str, st: os.stat_result) -> None:
        """A regular model file; Firefox's empty placeholder of a download is named as such."""
        placeholder = placeholder_download(path, st.st_size)
        if placeholder:
            self.skip(path, placeholder.reason("scan"))
        else:
            self.add(path, StatKey.of(st))

    def folder(self, path: str, st: os.stat_result, chain: tuple[tuple[int, int], ...]) -> None:
        ident = (st.st_dev, st.st_ino)
        if ident in chain:
            self.skip(path, SYMLINK_LOOP)
            return
        if ident in self._entered:
            self.skip(path, ALREADY_WALKED)
            return
        self._entered.add(ident)
        keep: Callable[[os.DirEntry[str]], bool] = _any_entry
        inside: list[Skipped] = []
        try:
            if is_model_folder(path):
                self.add(path, folder_key(path, inside), is_dir=True)
                beside = _beside_pipeline(path)
                if beside is None:
                    self.indexed(path, own=False)  # (its own shards are the folder's)
                    return
                keep = beside
        except OSError as exc:  # (gone or unreadable since it was listed)
            self.skip(printable(path), f"cannot read: {exc.strerror or exc}")
            return
        finally:
            for item in inside:
                self.skip(item.path, item.reason)
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            self.skip(path, f"cannot list folder: {exc.strerror or exc}")
            self.result.unlisted.append(path)
            return
        for entry in entries:
            if not keep(entry):
                continue
            if entry.name.startswith("."):
                self.hidden(entry)
                continue
            self.entry(entry, (*chain, ident))
        if any(is_index_name(e.name) for e in entries):
            self.indexed(path)

    def indexed(self, path: str, own: bool = True) -> None:
        """The files a shard index in a folder names that the walk would not list: loaders read
        each whatever its name or place (``notes.txt``, ``.no_exist/x.bin``, ``../x.bin``), so
        each is scanned as a file of its own. ``own``: those beside the index too (a sharded set
        dropped among single files: the folder is not one model); the files the names reach in
        the folders above it, up to the root walked, always (transformers joins the names of
        an index a config's ``transformers_weights`` puts in a subfolder to the model folder).
        An index named as one (``model.safetensors.index.fp16.json`` too) that cannot be read is
        reported (skipped) in a folder that is no model: the files a loader reads from it are
        unknown."""
        from modelsafe.registry.audit import index_shard_names, index_unread

        folder = Path(path)
        for index in _index_files(folder) if own else ():  # (a model folder's audit says it)
            why = index_unread(index)
            if why:
                self.skip(printable(str(index)), f"a shard index that {why}: {UNREAD_INDEX}")
        names = index_shard_names(folder)
        if own:
            for name in names:
                if "/" not in name and "\\" not in name and is_model_file(name, self.extensions):
                    continue  # (listed with the folder's entries)
                self.shard(os.path.join(path, name))
        for above in self._above(path):
            for name in names:
                if not _leaves(name):
                    self.shard(os.path.join(above, name))

    def shard(self, shard: str) -> None:
        """A file a shard index names, scanned as a file of its own when it is a regular file."""
        from modelsafe.registry.audit import in_system_folder

        try:
            st = os.stat(shard)
            if in_system_folder(Path(shard)) or not stat_module.S_ISREG(st.st_mode):
                return
        except (OSError, ValueError):
            return
        self.file(os.path.normpath(shard), st)

    def _above(self, path: str) -> list[str]:
        """The folders above ``path`` up to the root being walked, nearest first."""
        rel = os.path.relpath(path, self._top) if self._top else os.curdir
        if rel == os.curdir or rel.startswith(os.pardir):
            return []
        parts = rel.split(os.sep)
        return [os.path.join(self._top, *parts[:count]) for count in range(len(parts) - 1, -1, -1)]

    def hidden(self, entry: os.DirEntry[str]) -> None:
        """A hidden entry of a folder is not walked, but never left out silently when a loader
        may read it (ComfyUI lists ``.staging/x.ckpt`` and ``.x.ckpt``): a hidden model file
        or folder is reported as skipped, with what to do. A hidden folder with no model file
        in it, the hub's bookkeeping (:func:`bookkeeping`) and macOS AppleDouble companions
        (:func:`apple_double`) are left out without a word."""
        if _is_dir(entry):
            if not bookkeeping(entry.path, self.extensions):
                self.skip(printable(entry.path), HIDDEN_FOLDER)
        elif is_model_file(entry.name, self.extensions) and not apple_double(entry.path):
            self.skip(printable(entry.path), HIDDEN_FILE)

    def entry(self, entry: os.DirEntry[str], chain: tuple[tuple[int, int], ...]) -> None:
        """One entry of a folder. Every DirEntry call that may stat is in the ``try``: a link
        to itself (ELOOP), a name too long to follow, a folder without search permission or an
        entry deleted since the listing is a skipped entry, never the end of the scan."""
        is_model = is_model_file(entry.name, self.extensions)
        try:
            is_dir = entry.is_dir(follow_symlinks=True)
            partial = partial_download(entry.name, folder=is_dir, extensions=self.extensions)
            if partial:
                self.skip(printable(entry.path), partial.reason("scan"))
                return
            if not is_utf8(entry.name):
                if is_model or entry.is_dir(follow_symlinks=False):
                    self.skip(printable(entry.path), NOT_UTF8)
                return
            if not is_dir and not is_model:
                return
            st = entry.stat(follow_symlinks=True)
        except OSError as exc:
            self.unreadable(entry, exc, is_model)
            return
        if is_dir:
            self.folder(entry.path, st, chain)
        elif stat_module.S_ISREG(st.st_mode):
            self.file(entry.path, st)
        else:
            self.skip(entry.path, "not a regular file")

    def unreadable(self, entry: os.DirEntry[str], exc: OSError, is_model: bool) -> None:
        """Report an entry that could not be stat-ed: a broken link or a link loop (any name:
        it may have led to a folder), or a model file that cannot be read."""
        path = printable(entry.path)
        link = os.path.islink(entry.path)  # (False where it cannot be told either)
        if exc.errno == errno.ELOOP and link:
            self.skip(path, f"{SELF_LOOP} ({exc.strerror})")
        elif isinstance(exc, FileNotFoundError):
            if link:
                self.skip(path, f"broken symlink to {printable(_readlink(entry.path))}")
            elif is_model:
                self.skip(path, VANISHED)
        elif is_model or link or _is_dir(entry, follow_symlinks=False):
            self.skip(path, f"cannot read: {exc.strerror or exc}")


def _is_dir(entry: os.DirEntry[str], *, follow_symlinks: bool = True) -> bool:
    """``entry.is_dir()``, False where it cannot be told (a link loop: :meth:`_Walker.entry`
    reports it)."""
    try:
        return entry.is_dir(follow_symlinks=follow_symlinks)
    except OSError:
        return False


@dataclass(frozen=True)
class PartialDownload:
    """A name a browser or downloader gives a file while it downloads, and what to do."""

    what: str  # "an unfinished Chrome/Edge download"
    todo: str = "let it finish, then {command} again"

    def advice(self, command: str) -> str:
        """What to do, for ``command`` (``scan``, ``inspect``)."""
        return self.todo.format(command=command)

    def reason(self, command: str) -> str:
        return f"{self.what}: {self.advice(command)}"


# Suffixes browsers and downloaders add to a file while it downloads (``model.safetensors.part``).
PARTIAL_DOWNLOADS = {
    ".crdownload": PartialDownload("an unfinished Chrome/Edge download"),
    ".part": PartialDownload("an unfinished Firefox, wget/curl or Transmission download"),
    ".partial": PartialDownload("an unfinished download"),
    ".download": PartialDownload("an unfinished Safari download"),
    ".incomplete": PartialDownload(
        "an unfinished Hugging Face download", "download it again to finish it"
    ),
    ".tmp": PartialDownload("an unfinished download or copy (a temporary file)"),
    ".!qb": PartialDownload("an unfinished qBittorrent download"),
    ".!ut": PartialDownload("an unfinished uTorrent/BitTorrent download"),
    ".bc!": PartialDownload("an unfinished BitComet download"),
    ".filepart": PartialDownload("an unfinished WinSCP transfer"),
    ".dtapart": PartialDownload("an unfinished DownThemAll download"),
    ".opdownload": PartialDownload("an unfinished Opera download"),
}
# Suffixes that mark a download in progress even when the name before them is not a model file's:
# Firefox's random ``Xa3bC.part`` and Chrome's ``Unconfirmed 123456.crdownload`` (the final name is
# not known yet), a Hugging Face blob ``<sha256>.incomplete``. (``.tmp`` alone says too little.)
_PARTIAL_ANY_STEM = frozenset({".crdownload", ".part", ".incomplete"})


def partial_download(
    name: str, *, folder: bool = False, extensions: frozenset[str] = MODEL_FILE_EXTENSIONS
) -> PartialDownload | None:
    """What ``name`` says about a download still in progress, or None for an ordinary name.

    A folder counts only with a model file's name before the suffix (Safari downloads into a
    ``model.safetensors.download`` folder); ``old.part/`` is just a folder.
    """
    stem, suffix = os.path.splitext(name)
    found = PARTIAL_DOWNLOADS.get(suffix.lower())
    if found is None:
        return None
    if is_model_file(stem, extensions):
        return found
    bare = bool(stem) and not os.path.splitext(stem)[1]
    if not folder and bare and suffix.lower() in _PARTIAL_ANY_STEM:
        return found
    return None


def placeholder_download(
    path: str | os.PathLike[str], size: int | None = None
) -> PartialDownload | None:
    """The empty file Firefox keeps under a download's final name while ``NAME.part`` beside it
    fills, or None. ``size``: the file's, when already known (else it is looked up)."""
    name = os.fspath(path)
    try:
        empty = (os.path.getsize(name) if size is None else size) == 0
    except OSError:
        return None
    # (os.path.isfile, not Path: a name near the 255-byte limit makes the sibling's too long)
    if not empty or not os.path.isfile(name + ".part"):
        return None
    return PartialDownload(
        f"Firefox is still downloading it ({os.path.basename(name)}.part is beside it)"
    )


# Control files downloaders keep beside a file they have preallocated at full size and are still
# filling: the file reads as complete (its header is there) while its data is partly zeros.
# (qBittorrent's ``.!qB`` is no control file: it is the suffix of the unfinished file itself,
# renamed to its final name when done; see PARTIAL_DOWNLOADS.)
DOWNLOAD_CONTROL_FILES = {".aria2": "aria2"}


def download_control_file(path: str | os.PathLike[str]) -> tuple[str, str] | None:
    """(the control file's name, the downloader) when one sits beside ``path``, else None."""
    name = os.fspath(path)
    for suffix, tool in DOWNLOAD_CONTROL_FILES.items():
        # (os.path.exists, not Path.exists: a name near the 255-byte limit makes the sibling's
        # name too long, which Path.exists raises as ENAMETOOLONG; such a sibling cannot exist)
        if os.path.exists(name + suffix):
            return os.path.basename(name) + suffix, tool
    return None


def preallocated_download(path: str | os.PathLike[str]) -> PartialDownload | None:
    """A file a downloader is still filling (its control file is beside it), or None."""
    control = download_control_file(path)
    if control is None:
        return None
    beside, tool = control
    return PartialDownload(f"{tool} has not finished downloading it ({beside} is beside it)")


def download_state(
    path: str | os.PathLike[str], *, unreadable: bool = False
) -> PartialDownload | None:
    """What says that ``path`` is a download still in progress, or None: its name
    (``model.safetensors.part``), as Firefox's empty placeholder of one (``NAME.part`` beside it)
    or, when ``unreadable`` (it does not read: cut short, a hole), a downloader's control file
    beside it (``NAME.aria2``: preallocated, still filling). A folder is judged by its name only
    (Safari's ``model.safetensors.download/``)."""
    name = os.fspath(path)
    folder = os.path.isdir(name)
    found = partial_download(Path(name).name, folder=folder)
    if found is None and not folder:
        found = placeholder_download(name)
        if found is None and unreadable:
            found = preallocated_download(name)
    return found


def unfinished_error(path: Path, exc: FileReadError, command: str) -> FileReadError:
    """``exc`` (the file ``path`` does not read) told as what it is when a downloader's control
    file sits beside it: a download still in progress, to let finish, not a damaged file to
    download again. ``exc`` itself otherwise."""
    download = preallocated_download(path)
    if download is None:
        return exc
    prefix = f"{path}: "
    detail = exc.reason[len(prefix) :] if exc.reason.startswith(prefix) else exc.reason
    return FileReadError(f"{path}: {download.what}: {detail}", hint=download.advice(command))


NOT_UTF8 = (
    "its name is not valid UTF-8, which the catalog cannot store; rename it (e.g. with "
    "`convmv -f latin1 -t utf8`) to scan it"
)


def is_utf8(text: str) -> bool:
    """False for text the OS gave as bytes that are not UTF-8 (a file name, a command-line
    argument: Python keeps them as surrogate escapes), which the catalog cannot store."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(path: str) -> str:
    """``path`` with any undecodable byte shown as U+FFFD (for messages, never for opening).

    This is the one rule for text from the file system that modelsafe prints or stores
    (``modelsafe.output`` applies it to every ``--json`` output too).
    """
    if is_utf8(path):
        return path
    try:
        return path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte
        return re.sub("[\ud800-\udfff]", "\ufffd", path)


UNREAD_INDEX = (
    "the files a loader reads from it are not scanned; the audit of its folder is an error"
)


def is_index_name(name: str) -> bool:
    """A shard index's name, a variant's too (:func:`modelsafe.registry.audit.is_index_name`)."""
    from modelsafe.registry.audit import is_index_name as named

    return named(name)


def _index_files(folder: Path) -> list[Path]:
    try:
        return sorted(folder / e.name for e in os.scandir(folder) if is_index_name(e.name))
    except OSError:
        return []


def _leaves(name: str) -> bool:
    """Whether a shard name leads out of the folder it is joined to (absolute, ``..``)."""
    from modelsafe.registry.audit import outside_folder

    return outside_folder(name)


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def walk(
    roots: Iterable[str | os.PathLike[str]], extensions: frozenset[str] = MODEL_FILE_EXTENSIONS
) -> WalkResult:
    """Every model file and diffusers folder under ``roots`` (files or folders), in path order.

    ``extensions`` are the model file extensions (lower case, with the dot): the built-in ones,
    plus those plugins add (``modelsafe_model_extensions``) when a scan passes them.
    """
    walker = _Walker(extensions)
    for root in roots:
        walker.root(os.path.abspath(os.fspath(root)))
    return walker.result
