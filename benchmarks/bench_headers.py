"""Header-only reading of an SDXL-size and a Flux-size safetensors file, against
``safetensors.safe_open`` + listing the keys, in the same run.

    python benchmarks/bench_headers.py [--repeat 20] [--json]

The files are sparse (full size, no disk used) with the real layouts of an SDXL single-file
checkpoint and a Flux.1-dev transformer (``modelsafe.testing.layouts``). Also times
``read_index`` (through the plugin manager) and the full ``inspect_path``
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


def _sdxl() -> list[TensorSpec]:
    from modelsafe.testing.layouts import base_models

    return list(base_models.unet_checkpoint("sdxl"))


def _flux() -> list[TensorSpec]:
    from modelsafe.testing.layouts import base_models

    return list(base_models.bfl_flux())


# Real layouts (names, dtypes, shapes) of an SDXL single-file checkpoint and a Flux.1-dev
# transformer, from modelsafe.testing.layouts; written sparse at full size.
CASES: dict[str, Callable[[], list[TensorSpec]]] = {
    "sdxl checkpoint": _sdxl,
    "flux transformer": _flux,
}


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
        for name, build in CASES.items():
            specs = build()
            path = write_safetensors(Path(tmp) / f"{name.replace(' ', '_')}.safetensors", specs)
            row: dict[str, Any] = {
                "case": name,
                "tensors": len(specs),
                "gb": round(path.stat().st_size / 1e9, 2),
                "safe_open_keys_ms": _median_ms(lambda p=path: _safe_open_keys(p), repeat),
                "reader_ms": _median_ms(lambda p=path: read_safetensors_index(p), repeat),
                "read_index_ms": _median_ms(lambda p=path: read_index(p), repeat),
            }
            row["inspect_ms"] = _median_ms(lambda p=path: inspect_path(p), repeat)
            report = inspect_path(path)
            row["identified"] = f"{report.family}/{report.kind}"
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
        inspect = f"{r['inspect_ms']:.1f} ms ({r['inspect_ms'] / base:.2f}x, {r['identified']})"
        print(
            f"| {r['case']}, {r['tensors']} tensors, {r['gb']} GB "
            f"| {base:.2f} ms | {r['reader_ms']:.2f} ms ({r['reader_ms'] / base:.2f}x) "
            f"| {r['read_index_ms']:.2f} ms ({r['read_index_ms'] / base:.2f}x) | {inspect} |"
        )


if __name__ == "__main__":
    main()
