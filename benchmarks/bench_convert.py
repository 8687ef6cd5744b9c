"""Convert benchmark: ``modelsafe convert`` vs torch.load(weights_only=True) + safetensors
save_file on a ~2 GiB torch checkpoint: wall time and peak RSS, each route in its own process.

    python benchmarks/bench_convert.py [--gib 2] [--rounds 3] [--case big|many|transposed]
                                       [--old OLD_CONVERT_PY]

Goals: modelsafe's peak RSS < 100 MB whatever the size, wall time <= 0.5x the torch route.
The routes alternate (torch, modelsafe, torch, ...) and each keeps its best time; ``os.sync()``
runs before each, so no run pays for writing back another's dirty pages; the load average
before and after is printed, since the ratio is only meaningful on an idle machine.

``--case many``: 50,000 small tensors (4x4 fp32; the pickle dominates); ``--case transposed``:
one 8192x8192 fp32 tensor (256 MiB) saved transposed, which convert gathers (``--gib`` is
ignored by both). ``--old PATH``: also time a previous ``registry/convert.py`` (e.g. ``git show
HEAD:registry/convert.py > /tmp/convert_old.py``), loaded from that file, in the same rounds.
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

MAKE_MANY = """
import sys, torch
sd = {f"block{i // 100}.layer{i % 100}.weight": torch.randn(4, 4) for i in range(50_000)}
torch.save({"state_dict": sd, "global_step": 1}, sys.argv[2])
"""

MAKE_TRANSPOSED = """
import sys, torch
weight = torch.empty(8192, 8192, dtype=torch.float32).uniform_(-1, 1)
torch.save({"state_dict": {"proj.weight": weight.t()}, "global_step": 1}, sys.argv[2])
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


OLD_ROUTE = """
import importlib.util, resource, sys, time
t = time.perf_counter()
spec = importlib.util.spec_from_file_location("convert_old", sys.argv[3])
old = sys.modules["convert_old"] = importlib.util.module_from_spec(spec)  # (for dataclasses)
spec.loader.exec_module(old)
old.convert_file(sys.argv[1], sys.argv[2], overwrite=True)
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
    parser.add_argument("--case", choices=("big", "many", "transposed"), default="big")
    parser.add_argument("--old", type=Path, help="a previous convert.py to time as well")
    ns = parser.parse_args()
    make = {"big": MAKE, "many": MAKE_MANY, "transposed": MAKE_TRANSPOSED}[ns.case]
    routes = [("torch", TORCH_ROUTE, ()), ("modelsafe", MODELSAFE_ROUTE, ())]
    if ns.old:
        routes.append(("modelsafe_old", OLD_ROUTE, (str(ns.old.resolve()),)))
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "model.ckpt"
        subprocess.run([sys.executable, "-c", make, str(ns.gib), str(src)], check=True)
        os.sync()  # the new checkpoint's dirty pages must not be written back during a timing
        size = src.stat().st_size
        results: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in routes}
        for _ in range(ns.rounds):
            for name, code, extra in routes:
                dst = Path(tmp) / f"{name}.safetensors"
                results[name].append(run(code, str(src), str(dst), *extra))
                dst.unlink()
                os.sync()  # every run starts with no dirty pages (the torch route leaves 2 GiB)
        best = {k: min(v) for k, v in results.items()}
        peak = {k: max(r[1] for r in v) for k, v in results.items()}
        summary = {
            "case": ns.case,
            "checkpoint_bytes": size,
            "torch_seconds": round(best["torch"][0], 2),
            "modelsafe_seconds": round(best["modelsafe"][0], 2),
            "time_ratio": round(best["modelsafe"][0] / best["torch"][0], 2),
            "torch_peak_rss_mib": round(peak["torch"], 1),
            "modelsafe_peak_rss_mib": round(peak["modelsafe"], 1),
            **(
                {
                    "modelsafe_old_seconds": round(best["modelsafe_old"][0], 2),
                    "modelsafe_old_peak_rss_mib": round(peak["modelsafe_old"], 1),
                }
                if ns.old
                else {}
            ),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "all_runs": results,
        }
        print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
