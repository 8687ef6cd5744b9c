"""Two `modelsafe worker` processes on a real Redis and a shared catalog (PostgreSQL when
MODELSAFE_TEST_POSTGRES_URL is set): a burst completes exactly once, jobs route by VRAM tier, a
worker killed with SIGKILL mid-job loses nothing, a redelivered message changes nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from modelsafe.errors import UsageError
from modelsafe.registry.catalog import Catalog, open_catalog
from modelsafe.registry.catalog.models import Output
from modelsafe.runtime.jobs import (
    JobInfo,
    QueueError,
    cancel_job,
    get_job,
    list_jobs,
    open_queue,
    store,
    submit_job,
)
from modelsafe.runtime.jobs.celery_queue import CeleryQueue, live_workers

Spec = Callable[..., dict[str, Any]]
LEASE_S = 2.0
VISIBILITY_S = 4.0
CLI = "from modelsafe.cli import main; main()"


@dataclass
class Worker:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Cluster:
    redis_url: str
    catalog: Catalog
    queue: CeleryQueue
    workers: dict[str, Worker]
    outputs: Path

    def wait(self, jobs: list[JobInfo], timeout: float = 90) -> list[JobInfo]:
        deadline = time.monotonic() + timeout
        while True:
            now = [get_job(self.catalog, j.id) for j in jobs]
            if all(j.status in ("done", "failed") for j in now):
                return now
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {w.name}\n{w.text()[-3000:]}" for w in self.workers.values())
                pytest.fail(f"jobs not finished: {[j.status for j in now]}\n{logs}")
            time.sleep(0.05)


def start_worker(
    name: str, vram: str, redis_url: str, catalog_url: str, outputs: Path, home: Path
) -> Worker:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELSAFE_")}
    env["MODELSAFE_HOME"] = str(home)
    log = home / f"{name}.log"
    args = [
        sys.executable, "-c", CLI, "--catalog", catalog_url, "worker", "--broker", redis_url,
        "--outputs", str(outputs), "--vram", vram, "--name", name, "--lease", str(LEASE_S),
        "--visibility-timeout", str(VISIBILITY_S),
    ]  # fmt: skip
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            args, stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    return Worker(name, proc, log)


@pytest.fixture(scope="module")
def cluster(
    redis_url: str, shared_catalog_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    home = tmp_path_factory.mktemp("workers")
    outputs = home / "outputs"
    catalog = open_catalog(shared_catalog_url)  # migrated once, before the workers open it
    workers = {
        name: start_worker(name, vram, redis_url, shared_catalog_url, outputs, home)
        for name, vram in (("small", "4GiB"), ("big", "8GiB"))
    }
    queue = CeleryQueue(redis_url, visibility_timeout=VISIBILITY_S)
    try:
        deadline = time.monotonic() + 90
        while {w["name"] for w in live_workers(redis_url)} != set(workers):
            for w in workers.values():
                if w.proc.poll() is not None:
                    pytest.fail(f"worker {w.name} exited:\n{w.text()}")
            if time.monotonic() > deadline:
                pytest.fail(
                    "workers did not start:\n" + "\n".join(w.text() for w in workers.values())
                )
            time.sleep(0.1)
        yield Cluster(redis_url, catalog, queue, workers, outputs)
    finally:
        for w in workers.values():
            if w.proc.poll() is None:
                w.proc.send_signal(signal.SIGTERM)
        for w in workers.values():
            try:
                w.proc.wait(20)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait(5)
        queue.close()
        catalog.close()


def _output_rows(catalog: Catalog) -> list[Output]:
    with catalog.session() as session:
        return list(session.scalars(select(Output).order_by(Output.id)))


def _check_exactly_once(cluster: Cluster, done: list[JobInfo], per_job: int) -> None:
    rows = {o.id: o for o in _output_rows(cluster.catalog)}
    linked = [oid for job in done for oid in job.output_ids]
    assert len(linked) == len(set(linked)), "an output belongs to two jobs"
    for job in done:
        assert job.status == "done", job.error
        assert len(job.output_ids) == per_job
        folder = cluster.outputs.resolve() / job.id / f"attempt-{job.attempts}"
        in_folder = sorted(i for i, o in rows.items() if o.path.startswith(str(folder.parent)))
        assert in_folder == sorted(job.output_ids)  # no row from another attempt
        assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]
        assert len(list(folder.glob("*.png"))) == per_job


def test_a_burst_completes_exactly_once(cluster: Cluster, make_spec: Spec) -> None:
    started = time.perf_counter()
    jobs = [submit_job(cluster.catalog, make_spec(seed=100 + i), cluster.queue) for i in range(10)]
    done = cluster.wait(jobs)
    seconds = time.perf_counter() - started
    print(f"burst: 10 jobs in {seconds:.1f} s ({10 / seconds:.2f} jobs/s) on 2 workers")
    _check_exactly_once(cluster, done, per_job=1)
    assert all(j.attempts == 1 for j in done)
    assert {j.worker for j in done} == {"small", "big"}  # both took a share
    # A redelivered message of a done job changes nothing.
    cluster.queue.enqueue(done[0])
    deadline = time.monotonic() + 30
    needle = f"job {done[0].id}: not claimable"
    while not any(needle in w.text() for w in cluster.workers.values()):
        assert time.monotonic() < deadline, "the redelivered message was not consumed"
        time.sleep(0.1)
    assert get_job(cluster.catalog, done[0].id) == done[0]


def test_jobs_route_by_vram_tier(cluster: Cluster, make_spec: Spec) -> None:
    jobs = [
        submit_job(cluster.catalog, make_spec(vram="6GiB", batch_size=2), cluster.queue)
        for _ in range(3)
    ]
    assert {j.queue for j in jobs} == {"modelsafe.vram.6gib"}
    done = cluster.wait(jobs)
    assert {j.worker for j in done} == {"big"}  # the 4 GiB worker never reads the 6 GiB tier
    _check_exactly_once(cluster, done, per_job=2)
    with pytest.raises(UsageError, match="more than the largest worker tier"):
        submit_job(cluster.catalog, make_spec(vram="100GiB"), cluster.queue)
    with pytest.raises(UsageError, match="no running worker has the budget") as info:
        submit_job(cluster.catalog, make_spec(vram="10GiB"), cluster.queue)
    reason = info.value.reason
    assert "(modelsafe.vram.12gib)" in reason and "biggest has 8.0 GiB" in reason
    assert {j.id for j in list_jobs(cluster.catalog)} >= {j.id for j in jobs}
    assert not [j for j in list_jobs(cluster.catalog) if j.spec.get("vram") == "10GiB"]


def test_a_killed_worker_loses_no_job(cluster: Cluster, make_spec: Spec) -> None:
    job = submit_job(cluster.catalog, make_spec(steps=80, batch_size=2), cluster.queue)
    deadline = time.monotonic() + 60
    while (now := get_job(cluster.catalog, job.id)).status == "queued":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert now.status == "running" and now.worker in cluster.workers
    victim = cluster.workers[now.worker]
    time.sleep(0.3)  # mid-job (80 steps take seconds even on a fast, idle machine)
    assert get_job(cluster.catalog, job.id).status == "running"
    os.killpg(victim.proc.pid, signal.SIGKILL)
    victim.proc.wait(10)
    killed = time.perf_counter()
    (done,) = cluster.wait([job])
    print(f"kill -9: job re-run and done {time.perf_counter() - killed:.1f} s after the kill")
    assert done.status == "done" and done.attempts == 2
    assert done.worker != victim.name
    _check_exactly_once(cluster, [done], per_job=2)
    # The dead worker's message may come back after the visibility timeout: still one completion.
    rows = len(_output_rows(cluster.catalog))
    time.sleep(VISIBILITY_S + 1)
    assert get_job(cluster.catalog, job.id) == done
    assert len(_output_rows(cluster.catalog)) == rows


def _wait_for(cluster: Cluster, job: JobInfo, statuses: tuple[str, ...], timeout: float) -> JobInfo:
    deadline = time.monotonic() + timeout
    while (now := get_job(cluster.catalog, job.id)).status not in statuses:
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {w.name}\n{w.text()[-3000:]}" for w in cluster.workers.values())
            pytest.fail(f"job {job.id} is {now.status}, not {statuses}\n{logs}")
        time.sleep(0.02)
    return now


def test_a_cancelled_job_is_skipped_and_a_running_one_stops(
    cluster: Cluster, make_spec: Spec
) -> None:
    # Cancelled while its message waits in Redis: the worker that receives it does nothing.
    waiting = store.insert_job(
        cluster.catalog, make_spec(seed=300), vram_need=None, queue="modelsafe.vram.2gib"
    )
    assert cancel_job(cluster.catalog, waiting.id, by="tester").status == "cancelled"
    cluster.queue.enqueue(waiting)
    needle = f"job {waiting.id}: not claimable"
    deadline = time.monotonic() + 30
    while not any(needle in w.text() for w in cluster.workers.values()):
        assert time.monotonic() < deadline, "the cancelled job's message was not consumed"
        time.sleep(0.1)
    skipped = get_job(cluster.catalog, waiting.id)
    assert skipped.status == "cancelled" and skipped.attempts == 0 and skipped.worker is None
    assert not (cluster.outputs.resolve() / waiting.id).exists()
    # Cancelled while a worker (another process: it reads the row between steps) runs it.
    job = submit_job(cluster.catalog, make_spec(steps=200, batch_size=2), cluster.queue)
    running = _wait_for(cluster, job, ("running",), 60)
    assert cancel_job(cluster.catalog, job.id, by="tester").status in ("cancelling", "cancelled")
    final = _wait_for(cluster, job, ("cancelled", "done", "failed"), 60)
    assert final.status == "cancelled" and final.output_ids == [] and final.attempts == 1
    assert final.worker == running.worker and final.cancelled_by == "tester"
    folder = cluster.outputs.resolve() / job.id
    assert not list(folder.rglob("*.png")) if folder.exists() else True
    assert not [o for o in _output_rows(cluster.catalog) if o.path.startswith(str(folder))]
    # Its lease ends, the reapers run: a cancelled job is never sent again.
    time.sleep(LEASE_S + 1)
    assert get_job(cluster.catalog, job.id) == final


def test_worker_without_redis_is_a_clear_error(run_cli: Any, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, out, err = run_cli(
        "--catalog", str(tmp_path / "c.db"), "worker", "--broker", f"redis://127.0.0.1:{port}/0"
    )
    assert code == 2
    assert "cannot reach Redis at redis://127.0.0.1" in err and "Hint:" in err
    assert "Traceback" not in err
    with pytest.raises(QueueError, match="cannot reach Redis"):
        open_queue(f"redis://127.0.0.1:{port}/0", str(tmp_path / "c.db"), outputs=tmp_path)


def test_worker_without_celery_says_what_to_install(tmp_path: Path) -> None:
    probe = "import sys; sys.modules['celery'] = None; " + CLI
    proc = subprocess.run(
        [sys.executable, "-c", probe, "worker", "--broker", "redis://127.0.0.1:1/0"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "needs Celery and redis-py" in proc.stderr
    assert "pip install 'modelsafe[serve]'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_job_redis_cannot_take_is_failed_with_the_reason(tmp_path: Path, make_spec: Spec) -> None:
    import shutil
    import socket

    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).is_file():
        pytest.skip("no redis-server to start and stop")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    catalog = open_catalog(tmp_path / "c.db")
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                queue = CeleryQueue(url)
                break
            except QueueError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        server.terminate()
        server.wait(10)
        with pytest.raises(QueueError, match="cannot reach Redis"):
            submit_job(catalog, make_spec(), queue)  # asking which workers run
        assert list_jobs(catalog) == []
        queue.check_route = lambda *_: None  # Redis dies just now
        with pytest.raises(QueueError, match="cannot send job") as info:
            submit_job(catalog, make_spec(), queue)
        assert info.value.hint
        (job,) = list_jobs(catalog)
        assert job.status == "failed" and job.error
        assert job.error["reason"].startswith("cannot send job")
        queue.close()
    finally:
        if server.poll() is None:
            server.kill()
        catalog.close()
