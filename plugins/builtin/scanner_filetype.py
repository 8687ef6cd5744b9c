"""Built-in scanner: files that are not models at all, named for what they really are.

A git-LFS pointer, an HTML login/error page, JSON, text, an empty file or random bytes saved under a
model's name are ``error`` verdicts that say what the file is. GGUF files (which cannot carry code)
are checked by reading their header.
"""

from __future__ import annotations

from pathlib import Path

from modelsafe.plugins.hookspecs import hookimpl
from modelsafe.registry.sniff import cut_safetensors, describe_unknown, is_tar_header, not_a_model
from modelsafe.types import Finding, Format


@hookimpl
def modelsafe_audit(path: Path, head: bytes, fmt: str) -> list[Finding] | None:
    if fmt == Format.TEXT.value and _is_text_pickle(path):
        from modelsafe.registry.torch_archive import read_torch_file

        return list(read_torch_file(path, Format.PICKLE.value).findings)
    if fmt == Format.ARCHIVE.value and is_tar_header(head):
        return _tar(path, head)
    what = not_a_model(fmt, path.stat().st_size, head, path.name)
    if what is not None:
        if fmt in _PLUGIN_FORMAT_CANDIDATES and _plugin_reader_claims(path, head, fmt):
            return None  # a plugin-taught format: its own scanner judges it
        return [Finding("error", f"not-a-model:{what.code}", f"{what.reason}; {what.hint}")]
    if fmt == Format.UNKNOWN.value:
        hidden = _hidden_zip(path)
        if hidden:
            return hidden
        if _plugin_reader_claims(path, head, fmt):
            return None  # a plugin-taught format: its own scanner judges it
        unknown = Finding("error", "not-a-model:unknown", describe_unknown(head, path.name))
        if cut_safetensors(path.name, head):  # (cut inside its 8-byte header length...)
            from modelsafe.plugins.builtin.scanner_safetensors import validate_safetensors

            return validate_safetensors(path) or [unknown]
        return [unknown]
    if fmt == Format.GGUF.value:
        return _check_gguf(path)
    return None


# Sniffed formats a plugin may teach modelsafe to read (binary formats modelsafe does not know,
# text-based ones); an empty file, zeros, a git-LFS pointer or an HTML page stay "not a model".
_PLUGIN_FORMAT_CANDIDATES = frozenset({Format.UNKNOWN.value, Format.TEXT.value, Format.JSON.value})


def _plugin_reader_claims(path: Path, head: bytes, fmt: str) -> bool:
    """Whether a third-party format reader reads this file (returns its tensor table, or raises
    a ModelsafeError: its format, but broken). Then the file is not "not a model": this scanner
    steps aside, and the verdict is the other scanners' (an error when none handles the
    format: nothing vouched for it). Built-in readers do not count: a file only they claim
    (random bytes named ``.safetensors``) is theirs to call broken."""
    from modelsafe.errors import ModelsafeError
    from modelsafe.plugin_manager import get_plugin_manager
    from modelsafe.types import TensorIndex

    try:
        found = get_plugin_manager().first_result(
            "modelsafe_read_index", third_party_only=True, path=path, head=head, fmt=fmt
        )
    except ModelsafeError:
        return True
    return found is not None and isinstance(found[1], TensorIndex)


def _check_gguf(path: Path) -> list[Finding]:
    from modelsafe.errors import ModelsafeError, UnsupportedFormatError
    from modelsafe.registry.formats.gguf_reader import TruncatedGGUFError
    from modelsafe.registry.read import read_index

    try:
        read_index(path)
    except UnsupportedFormatError:
        return [Finding("warning", "unchecked", "no GGUF reader is installed to check the header")]
    except TruncatedGGUFError as exc:  # (a cut download, said as other formats' cuts are)
        return [Finding("error", "truncated", f"{exc.reason}; {exc.hint}")]
    except ModelsafeError as exc:
        return [Finding("error", "bad-gguf", exc.reason)]
    return []


MAX_TAR_MEMBERS = 64  # members listed and read in place
MAX_TAR_HEADERS = 1_000_000  # headers searched for torch's 'storages' member
TAR_SEARCH_SECONDS = 20.0


def _tar(path: Path, head: bytes) -> list[Finding]:
    """A tar archive: the model packed for transport (an error: extract it), unless it is laid
    out as torch's ancient tar checkpoint format, which torch.load unpickles unchecked."""
    import tarfile
    import time

    names: list[str] = []
    stored: list[tuple[str, int, int]] = []  # (name, data offset, size) of regular members
    count = 0
    has_storages = False
    complete = limited = False
    deadline = time.monotonic() + TAR_SEARCH_SECONDS
    try:
        with tarfile.open(path, mode="r:") as tar:
            # torch.load's tar.extract("storages") finds the member anywhere (tarfile reads every
            # header, GNU long names and pax paths resolved): so does this search, bounded.
            while True:
                member = tar.next()  # headers only; the data is skipped by seeking
                if member is None:
                    complete = True
                    break
                tar.members.clear()  # type: ignore[attr-defined]  # (only names matter here)
                count += 1
                has_storages = has_storages or member.name == "storages"
                if len(names) < MAX_TAR_MEMBERS:
                    names.append(member.name)
                    if member.isreg() and member.size >= 4:
                        stored.append((member.name, member.offset_data, member.size))
                if has_storages:
                    break
                if count >= MAX_TAR_HEADERS or time.monotonic() > deadline:
                    limited = True
                    break
    except (tarfile.TarError, OSError, ValueError):
        pass  # a damaged tar: named by its header all the same
    if has_storages:
        return [
            Finding(
                "unsafe",
                "tar-checkpoint",
                "a tar archive with a 'storages' member: torch's ancient tar checkpoint format, "
                "whose members torch.load (without weights_only=True) unpickles with no checks; "
                "modelsafe does not audit inside it",
                "byte 0",
            )
        ]
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    findings = [
        Finding(
            "error",
            "not-a-model:archive",
            f"the file is a tar archive ({count}{'' if complete else '+'}"
            f" members: {shown or 'none readable'}), not model weights; extract it and audit "
            "the model file it holds",
        )
    ]
    if limited:
        findings.append(
            Finding(
                "error",
                "limit",
                f"modelsafe stopped reading the tar's headers after {count} members: a "
                "'storages' member further on (torch's tar checkpoint format) was not searched",
            )
        )
    # A torch zip inside is still read, so a payload in it is named (loaders do not open tars,
    # but the file extracted from it is what the user will load).
    findings += _tar_members(path, stored)
    return findings


def _tar_members(path: Path, stored: list[tuple[str, int, int]]) -> list[Finding]:
    """The unsafe findings of checkpoints stored in a tar (read in place, never extracted):
    loaders do not open tars, but the file extracted from it is what the user will load."""
    from dataclasses import replace

    from modelsafe.registry.sniff import sniff
    from modelsafe.registry.torch_archive import read_torch_file

    found: list[Finding] = []
    with open(path, "rb") as fh:
        for name, offset, size in stored:
            fh.seek(offset)
            fmt = sniff(fh.read(min(size, 4096))).value
            if fmt not in (Format.ZIP.value, Format.PICKLE.value, Format.LEGACY_TORCH.value):
                continue
            tf = read_torch_file(path, fmt, window=(offset, size))
            found += [
                replace(f, location=f"{name}: {f.location}".rstrip(": "))
                for f in tf.findings
                if f.severity == "unsafe"
            ]
    return found


def _hidden_zip(path: Path) -> list[Finding]:
    """A file that starts as something else but ends as a zip: a polyglot."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        fh.seek(max(0, size - (1 << 16) - 22))
        tail = fh.read()
    if b"PK\x05\x06" not in tail:
        return []
    from modelsafe.registry.torch_archive import read_torch_file

    tf = read_torch_file(path, Format.ZIP.value)
    findings = [f for f in tf.findings if f.severity == "unsafe"]
    findings.append(
        Finding(
            "unsafe",
            "polyglot",
            "unknown bytes followed by a zip archive: zip readers find the archive, "
            "torch.load and others read the start",
        )
    )
    return findings


def _is_text_pickle(path: Path) -> bool:
    """Protocol 0 pickles are printable text; the VM tells them apart from prose."""
    from modelsafe.registry.pickle_vm.machine import run_pickle

    with open(path, "rb") as fh:
        data = fh.read(1 << 20)
    result = run_pickle(data, label="probe")
    return result.completed or result.unsafe
