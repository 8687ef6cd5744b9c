"""Scan benchmark: 1,000 mixed files (cold and warm catalog), hashing on 1 vs 2 workers, and a
no-change re-scan of 10,000 files against ``find -type f | xargs stat`` over the same tree.

    python benchmarks/bench_scan.py [--files 1000] [--many 10000] [--workdir DIR] [--json]

Everything is generated in a temporary folder (sparse files cost no disk). Figures are printed
as a Markdown table; docs/benchmarks.md records a run.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelsafe.registry.catalog import open_catalog
from modelsafe.registry.scan import scan
from modelsafe.testing import write_safetensors

FOLDERS = ("checkpoints", "loras", "vae", "embeddings", "controlnet")


def _torch_zip(path: Path, payload: bytes) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", payload)
        zf.writestr("archive/version", "3\n")


def make_mixed(root: Path, count: int, seed: int = 0) -> int:
    """``count`` files of every kind a real download folder has; returns their total bytes."""
    rng = random.Random(seed)
    hostile = b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03."
    for i in range(count):
        folder = root / "models" / FOLDERS[i % len(FOLDERS)] / f"set{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        roll = rng.random()
        if roll < 0.60:  # small real safetensors, random bytes
            width = rng.choice((64, 128, 256))
            write_safetensors(
                folder / f"f{i}.safetensors",
                [(f"lora_unet_{i}.lora_down.weight", "F16", (8, width)), ("alpha", "F32", (1,))],
                data="random",
                seed=i,
            )
        elif roll < 0.70:  # bigger, sparse (1-16 MiB, costs no disk)
            rows = rng.choice((256, 1024, 4096))
            write_safetensors(folder / f"f{i}.safetensors", [(f"w{i}", "F16", (rows, 2048))])
        elif roll < 0.80:  # a torch zip holding a plain pickle
            _torch_zip(folder / f"f{i}.ckpt", pickle.dumps({"step": i, "name": f"m{i}"}, 2))
        elif roll < 0.82:  # a hostile pickle
            _torch_zip(folder / f"f{i}.ckpt", hostile)
        elif roll < 0.90:  # a truncated download
            write_safetensors(
                folder / f"f{i}.safetensors", [("w", "F16", (64, 64))], data="random", seed=i
            )
            with open(folder / f"f{i}.safetensors", "r+b") as fh:
                fh.truncate(200)
        elif roll < 0.95:
            (folder / f"f{i}.safetensors").write_text(f"<!DOCTYPE html><html>{i}</html>")
        else:
            (folder / f"f{i}.safetensors").write_text(
                f"version https://git-lfs.github.com/spec/v1\noid sha256:{i:064x}\nsize 1\n"
            )
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def make_many(root: Path, count: int) -> None:
    """``count`` tiny safetensors files in 100 folders."""
    for i in range(count):
        folder = root / f"d{i % 100:02}"
        folder.mkdir(parents=True, exist_ok=True)
        write_safetensors(folder / f"m{i}.safetensors", [(f"w{i}", "F16", (4, 4))], data="zeros")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall seconds, CPU seconds of this process, result)"""
    cpu, wall = cpu_seconds(), time.perf_counter()
    result = fn()
    return time.perf_counter() - wall, cpu_seconds() - cpu, result


def scan_once(db: Path, root: Path, jobs: int, **kw: Any) -> tuple[float, float, Any]:
    catalog = open_catalog(db)
    try:
        return timed(lambda: scan(catalog, [root], jobs=jobs, **kw))
    finally:
        catalog.close()


def find_stat(root: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        f"find {root} -type f | xargs stat > /dev/null", shell=True, check=True, cwd=root
    )
    return time.perf_counter() - start


def cli_rescan(db: Path, root: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "modelsafe.cli", "--catalog", str(db), "scan", str(root), "--json"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--many", type=int, default=10000)
    parser.add_argument("--big", type=int, default=24, help="32 MiB files for the hashing case")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-scan-", dir=args.workdir))
    figures: dict[str, Any] = {"cpu_count": os.cpu_count()}

    mixed = work / "mixed"
    figures["mixed_bytes"] = make_mixed(mixed, args.files)
    wall, cpu, s = scan_once(work / "mixed.db", mixed, jobs=2)
    figures["mixed_cold"] = {
        "wall": wall,
        "cpu": cpu,
        "files": s.files,
        "errors": s.errors,
        "unsafe": s.unsafe,
        "new": s.new,
    }
    wall, cpu, s = scan_once(work / "mixed.db", mixed, jobs=2)
    figures["mixed_warm"] = {"wall": wall, "cpu": cpu, "unchanged": s.unchanged}
    figures["mixed_find_stat"] = find_stat(mixed)

    big = work / "big"
    big.mkdir()
    for i in range(args.big):  # 32 MiB each, sparse
        write_safetensors(big / f"b{i}.safetensors", [(f"w{i}", "F16", (4096, 4096))])
    for attempt in range(3):  # alternate and keep the best of each: the machine is shared
        for jobs in (1, 2):
            db = work / f"big{jobs}-{attempt}.db"
            wall, cpu, s = scan_once(db, big, jobs=jobs)
            best = figures.get(f"hash_jobs{jobs}")
            if best is None or wall < best["wall"]:
                figures[f"hash_jobs{jobs}"] = {"wall": wall, "cpu": cpu, "bytes": s.bytes_read}

    many = work / "many"
    make_many(many, args.many)
    wall, cpu, s = scan_once(work / "many.db", many, jobs=2)
    figures["many_first"] = {"wall": wall, "cpu": cpu, "new": s.new}
    find_stat(many)  # the same warm page cache for both
    wall, cpu, s = scan_once(work / "many.db", many, jobs=2)
    figures["many_rescan"] = {"wall": wall, "cpu": cpu, "unchanged": s.unchanged}
    figures["many_find_stat"] = find_stat(many)
    figures["many_rescan_cli"] = cli_rescan(work / "many.db", many)
    subprocess.run(["rm", "-rf", str(work)], check=False)

    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(report(figures))


def report(f: dict[str, Any]) -> str:
    mc, mw, fs = f["mixed_cold"], f["mixed_warm"], f["mixed_find_stat"]
    h1, h2 = f["hash_jobs1"], f["hash_jobs2"]
    mr, ms = f["many_rescan"], f["many_find_stat"]
    lines = [
        "| case | modelsafe | baseline | ratio |",
        "| --- | --- | --- | --- |",
        f"| {mc['files']} mixed files, cold catalog ({f['mixed_bytes'] / 2**20:.0f} MiB, "
        f"{mc['errors']} errors, {mc['unsafe']} unsafe) | {mc['wall']:.2f} s "
        f"| find+stat {fs:.3f} s | {mc['wall'] / fs:.0f}x |",
        f"| same, warm catalog (nothing changed) | {mw['wall']:.3f} s | find+stat {fs:.3f} s "
        f"| {mw['wall'] / fs:.1f}x |",
        f"| hashing {h1['bytes'] / 2**20:.0f} MiB, --jobs 1 vs 2 | {h2['wall']:.2f} s "
        f"(CPU {h2['cpu'] / h2['wall']:.2f} cores) | jobs 1: {h1['wall']:.2f} s | "
        f"{h1['wall'] / h2['wall']:.2f}x faster |",
        f"| {mr['unchanged']} unchanged files, re-scan (API) | {mr['wall']:.3f} s | "
        f"find+stat {ms:.3f} s | {mr['wall'] / ms:.2f}x |",
        f"| same, `modelsafe scan` CLI incl. start-up | {f['many_rescan_cli']:.3f} s | "
        f"find+stat {ms:.3f} s | {f['many_rescan_cli'] / ms:.2f}x |",
        f"| {f['many_first']['new']} files, first scan | {f['many_first']['wall']:.1f} s | | |",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
