"""Find the model files and diffusers folders under some paths, with the stat facts a scan keys on.

What counts as a model (decided here, documented in docs/scan.md):

- a file whose extension is a model extension (``.safetensors``, ``.sft``, ``.ckpt``, ``.pt``,
  ``.pth``, ``.bin``, ``.gguf``, ``.pkl``, ``.pickle``; ``.npy`` is not a model) whatever its bytes
  are: a model file that turns out to be an HTML page is exactly what a scan must report;
- a folder holding ``model_index.json`` (a diffusers pipeline): one entry for the whole folder,
  nothing inside it is listed separately.

Symbolic links are followed, each real folder is entered once (a link back to a folder already
being walked is a loop, reported and not entered again) and each real file is reported with every
path that reaches it, so a scan reads it once. Entries that cannot be read are reported with a
reason instead of stopping the walk, and so is a name that is not valid UTF-8 (the catalog stores
text). Hidden entries (a name starting with ``.``) are skipped.
"""

from __future__ import annotations

import os
import stat as stat_module
from collections.abc import Iterable
from dataclasses import dataclass, field

MODEL_FILE_EXTENSIONS = frozenset(
    {".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".pkl", ".pickle"}
)
PIPELINE_MARKER = "model_index.json"


@dataclass(frozen=True)
class StatKey:
    """What a scan compares to decide that a file did not change (its bytes are never read)."""

    size: int
    mtime_ns: int
    inode: int
    device: int

    @classmethod
    def of(cls, st: os.stat_result) -> StatKey:
        return cls(st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)


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


def is_model_file(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in MODEL_FILE_EXTENSIONS


def folder_key(path: str) -> StatKey:
    """A diffusers folder's key: total size and newest mtime of everything in it, its inode."""
    st = os.stat(path)
    size, newest = 0, st.st_mtime_ns
    for dirpath, dirnames, filenames in os.walk(path, followlinks=True):
        newest = max(newest, os.stat(dirpath).st_mtime_ns)
        dirnames.sort()
        for name in filenames:
            try:
                fst = os.stat(os.path.join(dirpath, name))
            except OSError:
                continue
            size += fst.st_size
            newest = max(newest, fst.st_mtime_ns)
    return StatKey(size, newest, st.st_ino, st.st_dev)


class _Walker:
    def __init__(self) -> None:
        self.result = WalkResult()
        self._by_inode: dict[tuple[int, int], int] = {}  # (device, inode) -> index in found
        self._entered: set[tuple[int, int]] = set()

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
        self.result.skipped.append(Skipped(path, reason))

    def root(self, root: str) -> None:
        if not _utf8(root):
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
        if stat_module.S_ISDIR(st.st_mode):
            self.folder(root, st, chain=())
        elif stat_module.S_ISREG(st.st_mode):
            self.add(root, StatKey.of(st))
        else:
            self.skip(root, "not a regular file or folder")

    def folder(self, path: str, st: os.stat_result, chain: tuple[tuple[int, int], ...]) -> None:
        ident = (st.st_dev, st.st_ino)
        if ident in chain:
            self.skip(path, "symlink loop: leads back to a folder above it")
            return
        if ident in self._entered:
            self.skip(path, "already scanned through another path")
            return
        self._entered.add(ident)
        if os.path.isfile(os.path.join(path, PIPELINE_MARKER)):
            try:
                self.add(path, folder_key(path), is_dir=True)
            except OSError as exc:
                self.skip(path, f"cannot read: {exc.strerror or exc}")
            return
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            self.skip(path, f"cannot list folder: {exc.strerror or exc}")
            self.result.unlisted.append(path)
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            self.entry(entry, (*chain, ident))

    def entry(self, entry: os.DirEntry[str], chain: tuple[tuple[int, int], ...]) -> None:
        stem, partial = os.path.splitext(entry.name)
        if partial.lower() in PARTIAL_DOWNLOADS and is_model_file(stem):
            self.skip(printable(entry.path), PARTIAL_DOWNLOADS[partial.lower()])
            return
        if not _utf8(entry.name):
            if is_model_file(entry.name) or entry.is_dir(follow_symlinks=False):
                self.skip(printable(entry.path), NOT_UTF8)
            return
        try:
            is_dir = entry.is_dir(follow_symlinks=True)
            if not is_dir and not is_model_file(entry.name):
                return
            st = entry.stat(follow_symlinks=True)
        except FileNotFoundError:
            if is_model_file(entry.name) or entry.is_symlink():
                target = _readlink(entry.path)
                self.skip(entry.path, f"broken symlink to {target}")
            return
        except OSError as exc:
            self.skip(entry.path, f"cannot read: {exc.strerror or exc}")
            return
        if is_dir:
            self.folder(entry.path, st, chain)
        elif stat_module.S_ISREG(st.st_mode):
            self.add(entry.path, StatKey.of(st))
        else:
            self.skip(entry.path, "not a regular file")


# Names browsers and downloaders give a model file while it downloads.
PARTIAL_DOWNLOADS = {
    ".crdownload": "an unfinished Chrome/Edge download: let it finish, then scan again",
    ".part": "an unfinished Firefox (or wget/curl) download: let it finish, then scan again",
    ".partial": "an unfinished download: let it finish, then scan again",
    ".download": "an unfinished Safari download: let it finish, then scan again",
    ".incomplete": "an unfinished Hugging Face download: download it again to finish it",
}
NOT_UTF8 = (
    "its name is not valid UTF-8, which the catalog cannot store; rename it (e.g. with "
    "`convmv -f latin1 -t utf8`) to scan it"
)


def _utf8(name: str) -> bool:
    """False for a name the OS gave as bytes that are not UTF-8 (surrogate escapes)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(path: str) -> str:
    """``path`` with any undecodable byte shown as U+FFFD (for messages, never for opening)."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def walk(roots: Iterable[str | os.PathLike[str]]) -> WalkResult:
    """Every model file and diffusers folder under ``roots`` (files or folders), in path order."""
    walker = _Walker()
    for root in roots:
        walker.root(os.path.abspath(os.fspath(root)))
    return walker.result
