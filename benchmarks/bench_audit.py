"""Audit benchmark: modelsafe vs picklescan, modelscan and fickling on the safety corpus.

Builds the corpus of tests/safety (benign torch files of every shape, one malicious file per
evasion class, broken files) in a temp folder and runs every tool on every file in the same run.
Prints a markdown table: detections, misses, false positives, what each tool says about broken
files, and wall time. Needs the ``bench`` extra (``pip install -e .[bench]``) and torch.

    python benchmarks/bench_audit.py
"""

from __future__ import annotations

import contextlib
import io
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "safety"))

import safety_corpus  # noqa: E402


def modelsafe_tool(path: Path) -> str:
    from modelsafe.registry.audit import audit_path

    return audit_path(path).status  # safe | unsafe | error


def picklescan_tool(path: Path) -> str:
    from picklescan.scanner import scan_file_path

    result = scan_file_path(str(path))
    if result.infected_files:
        return "unsafe"
    return "error" if result.scan_err else "safe"


def modelscan_tool(path: Path) -> str:
    from modelscan.modelscan import ModelScan

    result = ModelScan().scan(str(path))
    if result.get("issues"):
        return "unsafe"
    return (
        "error"
        if result.get("errors")
        or not result.get("summary", {}).get("scanned", {}).get("total_scanned")
        else "safe"
    )


def fickling_tool(path: Path) -> str:
    import fickling

    try:
        return "safe" if fickling.is_likely_safe(str(path)) else "unsafe"
    except Exception:  # noqa: BLE001 - a crash is that tool's "cannot read"
        return "error"


TOOLS: dict[str, Callable[[Path], str]] = {
    "modelsafe": modelsafe_tool,
    "picklescan": picklescan_tool,
    "modelscan": modelscan_tool,
    "fickling": fickling_tool,
}


def run_tool(tool: Callable[[Path], str], files: dict[str, Path]) -> tuple[dict[str, str], float]:
    answers: dict[str, str] = {}
    started = time.perf_counter()
    for name, path in files.items():
        sink = io.StringIO()
        try:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                answers[name] = tool(path)
        except Exception:  # noqa: BLE001
            answers[name] = "error"
    return answers, time.perf_counter() - started


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        groups = {
            "benign": safety_corpus.build_benign(root / "benign"),
            "malicious": safety_corpus.build_malicious(root / "malicious"),
            "broken": safety_corpus.build_broken(root / "broken"),
        }
        every = {n: p for g in groups.values() for n, p in g.items()}
        print(
            f"corpus: {len(groups['benign'])} benign, {len(groups['malicious'])} malicious, "
            f"{len(groups['broken'])} broken files\n"
        )
        print(
            "| tool | malicious flagged | missed (called safe) | benign false positives "
            "| broken called safe | time (s) |"
        )
        print("| --- | --- | --- | --- | --- | --- |")
        misses: dict[str, list[str]] = {}
        for tool_name, tool in TOOLS.items():
            try:
                answers, seconds = run_tool(tool, every)
            except ImportError as exc:
                print(f"| {tool_name} | not installed: {exc} | | | | |")
                continue
            mal = groups["malicious"]
            flagged = sum(answers[n] == "unsafe" for n in mal)
            missed = [n for n in mal if answers[n] == "safe"]
            errors = sum(answers[n] == "error" for n in mal)
            fp = sum(answers[n] != "safe" for n in groups["benign"])
            broken_safe = sum(answers[n] == "safe" for n in groups["broken"])
            misses[tool_name] = missed
            print(
                f"| {tool_name} | {flagged}/{len(mal)} (+{errors} errors) | {len(missed)} "
                f"| {fp}/{len(groups['benign'])} | {broken_safe}/{len(groups['broken'])} "
                f"| {seconds:.2f} |"
            )
            marker = root / "malicious" / safety_corpus.MARKER
            assert not marker.exists(), f"{tool_name} executed a payload"
        print()
        for tool_name, missed in misses.items():
            if missed:
                print(f"{tool_name} called safe: {', '.join(sorted(missed))}")


if __name__ == "__main__":
    main()
