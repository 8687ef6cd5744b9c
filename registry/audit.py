"""``audit``: ask every scanner plugin about a file; never load or execute anything in it."""

from __future__ import annotations

from pathlib import Path

from modelsafe.errors import FileReadError
from modelsafe.registry.sniff import read_head, sniff
from modelsafe.types import Finding, Format, Verdict


def verdict_status(findings: list[Finding]) -> str:
    """``unsafe`` if any finding is unsafe, else ``error`` if any is an error, else ``safe``."""
    severities = {f.severity for f in findings}
    if "unsafe" in severities:
        return "unsafe"
    if "error" in severities:
        return "error"
    return "safe"


def audit_path(path: Path | str) -> Verdict:
    """The verdict for one file; unreadable input is an ``error`` verdict, never an exception."""
    from modelsafe.plugin_manager import get_plugin_manager
    from modelsafe.registry.sniff import not_a_model

    path = Path(path)
    try:
        if path.is_dir():
            return _audit_folder(path)
        special = _special_kind(path)
        if special:  # opening a FIFO would block for ever; a device never ends
            finding = Finding(
                "error", "unreadable", f"{path} is {special}, not a regular file: not opened"
            )
            return Verdict(path, "error", Format.UNKNOWN.value, (finding,))
        head = read_head(path)
    except OSError as exc:
        finding = Finding("error", "unreadable", f"cannot read {path}: {exc.strerror or exc}")
        return Verdict(path, "error", Format.UNKNOWN.value, (finding,))
    fmt = sniff(head).value
    findings: list[Finding] = []
    handled = False
    pm = get_plugin_manager()
    failed_before = len(pm.failures)
    try:
        for plugin, result in pm.call_each("modelsafe_audit", path=path, head=head, fmt=fmt):
            handled = True
            for item in result:
                if isinstance(item, Finding):
                    findings.append(item if item.scanner else _named(item, plugin))
    except FileReadError as exc:
        findings.append(Finding("error", "unreadable", exc.reason))
        handled = True
    # A scanner that crashed has not vouched for the file: never let silence read as "safe".
    for failure in pm.failures[failed_before:]:
        if failure.hook == "modelsafe_audit":
            findings.append(
                Finding(
                    "error",
                    "scanner-failed",
                    f"scanner {failure.plugin} failed: {failure.reason}",
                    scanner=failure.plugin,
                )
            )
            handled = True
    if not handled:
        what = not_a_model(fmt, path.stat().st_size, head)
        reason = what.reason if what else f"no scanner reads this format ({fmt})"
        findings.append(Finding("error", "not-a-model", reason))
    if not head.startswith(b"PK\x03\x04") and fmt != Format.ARCHIVE.value:
        # (a plain tar is the archive scanner's: packed, or torch's tar checkpoint format)
        from modelsafe.registry.torch_archive import check_tar

        check_tar(findings, head)  # torch.load reads a tar before anything else
    if verdict_status(findings) == "error" and fmt not in _PICKLE_READ:
        findings.extend(_as_pickle(path, fmt))
    return Verdict(path, verdict_status(findings), fmt, tuple(findings))


def _special_kind(path: Path) -> str:
    """What a path that is not a regular file is ("" for a regular file or a missing one)."""
    import stat

    try:
        mode = path.stat().st_mode
    except OSError:
        return ""
    for test, name in (
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return ""


# Formats whose scanners already run every byte that pickle.load would read through the VM.
_PICKLE_READ = frozenset({Format.ZIP.value, Format.PICKLE.value, Format.LEGACY_TORCH.value})


def _as_pickle(path: Path, fmt: str) -> list[Finding]:
    """A file that is not a valid ``fmt`` may still be a pickle (pickle.load, torch.load do not
    look at the name or the magic): run the VM on it, and keep what it finds unsafe."""
    from modelsafe.registry.torch_archive import read_torch_file

    try:
        tf = read_torch_file(path, Format.PICKLE.value)
    except FileReadError:
        return []
    # (a tar header is the archive scanner's to judge, not a sign of a pickle)
    unsafe = [
        _named(f, "audit")
        for f in tf.findings
        if f.severity == "unsafe" and f.code != "polyglot-tar"
    ]
    if unsafe:
        unsafe.append(
            Finding(
                "unsafe",
                "disguised-pickle",
                f"the file is not a valid {fmt} file but is a pickle: pickle.load and "
                "torch.load would run it",
                scanner="audit",
            )
        )
    return unsafe


# Suffixes of files people read, not load: a text file with one of them is not probed as a pickle.
_DOC_SUFFIXES = frozenset(
    ".md .txt .rst .json .yaml .yml .toml .cfg .ini .py .html .htm .csv .xml .jinja".split()
)
_CONTENT_FORMATS = frozenset(
    {
        Format.ZIP.value,
        Format.PICKLE.value,
        Format.LEGACY_TORCH.value,
        Format.NUMPY.value,
        Format.GGUF.value,
        Format.SAFETENSORS.value,
    }
)


def _may_load(child: Path) -> bool:
    """Whether a file in a folder is one a loader could run: by name, or by its first bytes
    (``model_best.pth.tar``, ``.npz``, ``.joblib``, no suffix at all)."""
    from modelsafe.registry.sniff import MODEL_EXTENSIONS, is_tar_header

    if child.suffix.lower() in MODEL_EXTENSIONS:
        return True
    try:
        head = read_head(child)
    except OSError:
        return True  # let audit_path report it
    fmt = sniff(head).value
    if fmt in _CONTENT_FORMATS or is_tar_header(head):
        return True
    if fmt == Format.TEXT.value and child.suffix.lower() not in _DOC_SUFFIXES:
        from modelsafe.registry.pickle_vm.machine import run_pickle

        probe = run_pickle(head, label="probe")
        return probe.completed or probe.unsafe or probe.end >= len(head)
    return False


def _named(finding: Finding, scanner: str) -> Finding:
    from dataclasses import replace

    return replace(finding, scanner=scanner)


def _audit_folder(path: Path) -> Verdict:
    """A folder is as safe as the least safe model file in it, whatever the files are named."""
    findings: list[Finding] = []
    audited = 0
    for child in sorted(path.rglob("*")):
        if child.is_file() and _may_load(child):
            audited += 1
            sub = audit_path(child)
            rel = child.relative_to(path)
            findings.extend(
                Finding(
                    f.severity, f.code, f.message, f"{rel}: {f.location}".rstrip(": "), f.scanner
                )
                for f in sub.findings
            )
            if sub.status != "safe" and not sub.findings:
                findings.append(Finding(sub.status, "component", f"{rel} is {sub.status}"))
    if not audited:
        # Nothing to vouch for is not "safe": a folder named like a model file, an empty download.
        findings.append(
            Finding("error", "no-model-files", "the folder holds no file a loader could read")
        )
    return Verdict(path, verdict_status(findings), Format.DIFFUSERS_DIR.value, tuple(findings))
