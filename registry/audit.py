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
        what = not_a_model(fmt, path.stat().st_size)
        reason = what.reason if what else f"no scanner reads this format ({fmt})"
        findings.append(Finding("error", "not-a-model", reason))
    return Verdict(path, verdict_status(findings), fmt, tuple(findings))


def _named(finding: Finding, scanner: str) -> Finding:
    from dataclasses import replace

    return replace(finding, scanner=scanner)


def _audit_folder(path: Path) -> Verdict:
    """A folder is as safe as the least safe model file in it."""
    from modelsafe.registry.sniff import MODEL_EXTENSIONS

    findings: list[Finding] = []
    for child in sorted(path.rglob("*")):
        if child.is_file() and child.suffix.lower() in MODEL_EXTENSIONS:
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
    return Verdict(path, verdict_status(findings), Format.DIFFUSERS_DIR.value, tuple(findings))
