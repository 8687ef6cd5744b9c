"""Header-only reading of an SDXL-size and a Flux-size safetensors file, against
``safetensors.safe_open`` + listing the keys, in the same run.

    python benchmarks/bench_headers.py [--repeat 20] [--json]

The files are sparse (full size, no disk used) with the tensor count and total size of the real
ones: an SDXL checkpoint (2,515 tensors, ~6.9 GB) and a Flux transformer (780 tensors, ~23.8 GB),
built from ``modelsafe.testing.layouts`` when it has them, else from synthetic names of realistic
length. Also times ``read_index`` (through the plugin manager) and the full ``inspect_path``
(read + identify + VRAM), which depends on the family detectors installed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelsafe.testing import TensorSpec, write_safetensors

CASES = {
    "sdxl checkpoint": (
        2515,
        6_938_000_000,
        "model.diffusion_model.input_blocks.{i}.1.transformer_blocks.0.attn1.to_q.weight",
    ),
    "flux transformer": (780, 23_802_000_000, "double_blocks.{i}.img_attn.qkv.weight"),
}


def _layout_specs(name: str) -> list[TensorSpec] | None:
    try:
        from modelsafe.testing import layouts
    except ImportError:
        return None
    getter = getattr(layouts, "specs_for", None) or getattr(layouts, "layout_specs", None)
    if getter is None:
        return None
    try:
        return list(getter("sdxl" if name.startswith("sdxl") else "flux1"))
    except Exception:
        return None


def _synthetic(count: int, total: int, pattern: str) -> list[TensorSpec]:
    per = total // count // 2  # F16 elements per tensor
    return [(pattern.format(i=i), "F16", (per // 64, 64)) for i in range(count)]


def _median_ms(fn: Callable[[], Any], repeat: int) -> float:
    fn()  # warm the page cache and imports
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def _safe_open_keys(path: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as fh:
        return list(fh.keys())


def run(repeat: int) -> list[dict[str, Any]]:
    from modelsafe.registry.formats.safetensors_reader import read_safetensors_index
    from modelsafe.registry.inspect import inspect_path
    from modelsafe.registry.read import read_index

    rows = []
    with tempfile.TemporaryDirectory(prefix="modelsafe-bench-headers-") as tmp:
        for name, (count, total, pattern) in CASES.items():
            specs = _layout_specs(name) or _synthetic(count, total, pattern)
            path = write_safetensors(Path(tmp) / f"{name.replace(' ', '_')}.safetensors", specs)
            row: dict[str, Any] = {
                "case": name,
                "tensors": len(specs),
                "gb": round(path.stat().st_size / 1e9, 2),
                "source": "layouts" if _layout_specs(name) else "synthetic",
                "safe_open_keys_ms": _median_ms(lambda p=path: _safe_open_keys(p), repeat),
                "reader_ms": _median_ms(lambda p=path: read_safetensors_index(p), repeat),
                "read_index_ms": _median_ms(lambda p=path: read_index(p), repeat),
            }
            try:
                row["inspect_ms"] = _median_ms(lambda p=path: inspect_path(p), repeat)
                row["identified"] = inspect_path(path).family
            except Exception as exc:  # detectors still under construction
                row["inspect_ms"] = None
                row["identified"] = f"{type(exc).__name__}: {exc}"
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = run(args.repeat)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print("| file | safe_open + keys | our header reader | read_index | full inspect |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        base = r["safe_open_keys_ms"]
        inspect = (
            f"{r['inspect_ms']:.1f} ms ({r['inspect_ms'] / base:.2f}x, {r['identified']})"
            if r["inspect_ms"] is not None
            else f"n/a ({r['identified']})"
        )
        print(
            f"| {r['case']}, {r['tensors']} tensors, {r['gb']} GB ({r['source']}) "
            f"| {base:.2f} ms | {r['reader_ms']:.2f} ms ({r['reader_ms'] / base:.2f}x) "
            f"| {r['read_index_ms']:.2f} ms ({r['read_index_ms'] / base:.2f}x) | {inspect} |"
        )


if __name__ == "__main__":
    main()
