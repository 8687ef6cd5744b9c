"""Convert benchmark: ``modelsafe convert`` vs torch.load(weights_only=True) + safetensors
save_file on a ~2 GiB torch checkpoint: wall time and peak RSS, each route in its own process.

    python benchmarks/bench_convert.py [--gib 2] [--rounds 3]

Goals: modelsafe's peak RSS < 100 MB whatever the size, wall time <= 0.5x the torch route.
The routes alternate (torch, modelsafe, torch, ...) and each keeps its best time; ``os.sync()``
runs before each, so no run pays for writing back another's dirty pages; the load average
before and after is printed, since the ratio is only meaningful on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

MAKE = """
import sys, torch
gib, path = float(sys.argv[1]), sys.argv[2]
total = int(gib * (1 << 30))
sd, i = {}, 0
while total > 0:
    n = min(32 << 20, total) // 2
    sd[f"layer{i}.weight"] = torch.empty(n, dtype=torch.float16).uniform_(-1, 1).reshape(-1, 256)
    total -= n * 2
    i += 1
torch.save({"state_dict": sd, "global_step": 1}, path)
"""

TORCH_ROUTE = """
import resource, sys, time
t = time.perf_counter()
import torch
from safetensors.torch import save_file
obj = torch.load(sys.argv[1], weights_only=True, map_location="cpu")
sd = obj["state_dict"]
save_file({k: v.contiguous() for k, v in sd.items()}, sys.argv[2], metadata={"format": "pt"})
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

MODELSAFE_ROUTE = """
import resource, sys, time
t = time.perf_counter()
from modelsafe.registry.convert import convert_file
convert_file(sys.argv[1], sys.argv[2], overwrite=True)
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def run(code: str, *args: str) -> tuple[float, float]:
    out = subprocess.run(
        [sys.executable, "-c", code, *args], check=True, capture_output=True, text=True
    ).stdout.split()
    return float(out[-2]), float(out[-1]) / 1024  # seconds, MiB


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gib", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    ns = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(dir=Path.home() if False else None) as tmp:
        src = Path(tmp) / "model.ckpt"
        subprocess.run([sys.executable, "-c", MAKE, str(ns.gib), str(src)], check=True)
        os.sync()  # the new checkpoint's dirty pages must not be written back during a timing
        size = src.stat().st_size
        results: dict[str, list[tuple[float, float]]] = {"torch": [], "modelsafe": []}
        for _ in range(ns.rounds):
            for name, code in (("torch", TORCH_ROUTE), ("modelsafe", MODELSAFE_ROUTE)):
                dst = Path(tmp) / f"{name}.safetensors"
                results[name].append(run(code, str(src), str(dst)))
                dst.unlink()
                os.sync()  # every run starts with no dirty pages (the torch route leaves 2 GiB)
        best = {k: min(v) for k, v in results.items()}
        peak = {k: max(r[1] for r in v) for k, v in results.items()}
        summary = {
            "checkpoint_bytes": size,
            "torch_seconds": round(best["torch"][0], 2),
            "modelsafe_seconds": round(best["modelsafe"][0], 2),
            "time_ratio": round(best["modelsafe"][0] / best["torch"][0], 2),
            "torch_peak_rss_mib": round(peak["torch"], 1),
            "modelsafe_peak_rss_mib": round(peak["modelsafe"], 1),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "all_runs": results,
        }
        print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
