"""Job queue benchmark: what the queue costs over calling ``generate()`` directly.

Builds the tiny sd1 pipeline in a temp folder, then runs the same N jobs (1 step, 32x32) four ways
in the same run: ``generate()`` in a loop (the baseline), the in-process queue, and 1 and 2
``modelsafe worker`` processes on a private Redis (redis-server from PATH or /usr/bin). Then it
kills a worker with SIGKILL mid-job and measures how long until the job is done elsewhere.
Catalog: a SQLite file, or ``--catalog URL`` (e.g. a PostgreSQL database). Every process runs
torch on one thread (OMP_NUM_THREADS=1), so two workers on two cores do not oversubscribe them.

    python benchmarks/bench_jobs.py [--jobs 10] [--lease 2] [--catalog URL]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

CLI = "from modelsafe.cli import main; main()"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_done(catalog: Any, ids: list[str], timeout: float = 300) -> None:
    from modelsafe.runtime.jobs import get_job

    deadline = time.monotonic() + timeout
    while any(get_job(catalog, i).status in ("queued", "running") for i in ids):
        if time.monotonic() > deadline:
            raise SystemExit("jobs did not finish")
        time.sleep(0.02)
    bad = [get_job(catalog, i) for i in ids if get_job(catalog, i).status != "done"]
    if bad:
        raise SystemExit(f"failed jobs: {[b.error for b in bad]}")


def start_workers(n: int, redis: str, catalog: str, root: Path, lease: float) -> list[Any]:
    from modelsafe.runtime.jobs.celery_queue import live_workers

    procs = []
    for i in range(n):
        log = (root / f"worker{i}.log").open("wb")
        args = [sys.executable, "-c", CLI, "--catalog", catalog, "worker", "--broker", redis,
                "--outputs", str(root / "out"), "--vram", "8GiB", "--name", f"w{i}",
                "--lease", str(lease), "--loglevel", "WARNING"]  # fmt: skip
        procs.append(
            subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        )
    while len(live_workers(redis)) < n:
        time.sleep(0.05)
    return procs


def stop_workers(procs: list[Any]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        p.wait(30)


def main() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"  # before torch loads, here and in the workers
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument("--catalog", default=None)
    args = parser.parse_args()

    from modelsafe.registry.catalog import open_catalog
    from modelsafe.runtime.generate import GenerateRequest, generate
    from modelsafe.runtime.jobs import get_job, open_queue, submit_job
    from modelsafe.testing.tiny_models import tiny_model

    root = Path(tempfile.mkdtemp(prefix="bench-jobs-"))
    tiny = tiny_model("sd1", root / "tiny")
    spec = {
        "checkpoint": str(tiny.single),
        "prompt": "a cat",
        "steps": 1,
        "width": 32,
        "height": 32,
        "family": "sd1",
        "tokenizers": str(tiny.tokenizers),
        "config_dir": str(tiny.configs),
    }
    catalog_url = args.catalog or str(root / "catalog.db")
    catalog = open_catalog(catalog_url)
    n = args.jobs
    rows: list[tuple[str, float]] = []

    request = GenerateRequest(
        checkpoint=tiny.single, prompt="a cat", steps=1, width=32, height=32, family="sd1",
        tokenizers=tiny.tokenizers, config_dir=tiny.configs, seed=0,
    )  # fmt: skip
    generate(request, root / "warm", catalog=catalog)  # imports and caches warm for everyone

    def loop() -> float:
        t = time.perf_counter()
        for i in range(n):
            generate(replace(request, seed=i), root / "base", catalog=catalog)
        return time.perf_counter() - t

    # In a thread, as the in-process queue runs it.
    times: list[float] = []
    worker = threading.Thread(target=lambda: times.append(loop()))
    worker.start()
    worker.join()
    base = times[0]
    rows.append((f"generate() x{n} in a loop (baseline)", base))

    queue = open_queue(None, catalog_url, outputs=root / "inproc")
    t = time.perf_counter()
    ids = [submit_job(catalog, {**spec, "seed": i}, queue).id for i in range(n)]
    wait_done(catalog, ids)
    rows.append((f"in-process queue, {n} jobs", time.perf_counter() - t))
    queue.close()

    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    redis = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--dir", str(root)],
        stdout=subprocess.DEVNULL,
    )
    broker = f"redis://127.0.0.1:{port}/0"
    time.sleep(0.5)
    kill_s = None
    try:
        for workers in (1, 2):
            procs = start_workers(workers, broker, catalog_url, root, args.lease)
            queue = open_queue(broker, catalog_url, outputs=root / "out")
            warm = [submit_job(catalog, {**spec, "seed": 999}, queue).id for _ in range(workers)]
            wait_done(catalog, warm)  # each worker's first job pays for loading
            t = time.perf_counter()
            ids = [submit_job(catalog, {**spec, "seed": i}, queue).id for i in range(n)]
            wait_done(catalog, ids)
            rows.append((f"Celery + Redis, {workers} worker(s), {n} jobs", time.perf_counter() - t))
            if workers == 2:
                job = submit_job(catalog, {**spec, "steps": 12, "batch_size": 2}, queue)
                while (info := get_job(catalog, job.id)).status != "running":
                    time.sleep(0.01)
                time.sleep(0.3)
                victim = procs[int(str(info.worker)[1:])]
                os.killpg(victim.pid, signal.SIGKILL)
                t = time.perf_counter()
                wait_done(catalog, [job.id])
                kill_s = time.perf_counter() - t
                assert get_job(catalog, job.id).attempts == 2
            queue.close()
            stop_workers(procs)
    finally:
        redis.terminate()
    print(f"| case ({n} jobs, tiny sd1, 1 step, 32x32) | seconds | jobs/s | vs baseline |")
    print("| --- | --- | --- | --- |")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.2f} | {n / seconds:.2f} | {seconds / base:.2f}x |")
    print(f"\nSIGKILL mid-job -> done on the other worker: {kill_s:.2f} s (--lease {args.lease})")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
