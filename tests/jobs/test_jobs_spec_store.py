"""Job specs are checked key by key; routing picks tiers; the store's state changes are guarded."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from modelsafe.errors import UsageError
from modelsafe.registry.catalog import Catalog, open_catalog
from modelsafe.runtime.jobs import JobNotFoundError, get_job, list_jobs, store, validate_spec
from modelsafe.runtime.jobs.routing import GIB, queue_name, tier_for, worker_queues

BASE = {"checkpoint": "model.safetensors", "prompt": "a cat"}


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return open_catalog(tmp_path / "catalog.db")


def test_a_full_spec_is_normalised() -> None:
    full = {
        **BASE,
        "negative_prompt": None,
        "seed": 42,
        "batch_size": 2,
        "steps": 3,
        "cfg": 7,
        "clip_skip": 2,
        "width": 64,
        "height": 32,
        "scheduler": "euler",
        "loras": [{"ref": "style"}, {"ref": "b.safetensors", "weight": 0.5}],
        "vae": "vae.safetensors",
        "embeddings": [{"ref": "emb.pt", "token": "<e>"}],
        "family": "sd1",
        "tokenizers": "/tok",
        "config_dir": "/cfg",
        "vram": "8GiB",
        "device": "cuda",
    }
    spec = validate_spec(full)
    assert spec["cfg"] == 7.0 and isinstance(spec["cfg"], float)
    assert spec["loras"] == [
        {"ref": "style", "weight": 1.0},
        {"ref": "b.safetensors", "weight": 0.5},
    ]
    assert "negative_prompt" not in spec  # None means "not given"
    assert {k: v for k, v in spec.items() if k not in ("cfg", "loras")} == {
        k: v for k, v in full.items() if k not in ("cfg", "loras", "negative_prompt")
    }


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"sampler": "euler"}, "unknown key 'sampler'"),
        ({"loras": [{"ref": "x", "strength": 1}]}, "unknown key 'loras[0].strength'"),
        ({"checkpoint": None}, "'checkpoint' is required"),
        ({"prompt": 3}, "'prompt' must be a string"),
        ({"checkpoint": ""}, "'checkpoint' must be a non-empty string"),
        ({"seed": "7"}, "'seed' must be an integer"),
        ({"seed": True}, "'seed' must be an integer"),
        ({"seed": -1}, "'seed' is -1"),
        ({"batch_size": 9}, "'batch_size' is 9; it must be 1..8"),
        ({"steps": 0}, "'steps' is 0; it must be 1..200"),
        ({"width": 36}, "'width' is 36; it must be 8..4096 and a multiple of 8"),
        ({"height": 8192}, "'height' is 8192"),
        ({"cfg": "high"}, "'cfg' must be a number"),
        ({"clip_skip": 13}, "'clip_skip' is 13; it must be 1..12"),
        ({"loras": {"ref": "x"}}, "'loras' must be a list"),
        ({"loras": ["x"]}, "loras[0] must be an object"),
        ({"embeddings": [{"ref": "x"}]}, "'embeddings[0].token' is required"),
        ({"family": "sd9"}, "'family' is 'sd9'"),
        ({"device": "tpu"}, "'device' must be one of cpu, cuda"),
        ({"vram": "lots"}, "'lots' is not a size"),
        ({"vram": 8}, "'vram' must be a size"),
    ],
)
def test_bad_specs_say_which_key(change: dict[str, Any], words: str) -> None:
    with pytest.raises(UsageError) as info:
        validate_spec({**BASE, **change})
    assert words in info.value.reason
    assert info.value.hint


def test_a_spec_must_be_an_object() -> None:
    with pytest.raises(UsageError, match="JSON object"):
        validate_spec(["checkpoint"])


def test_tiers() -> None:
    assert tier_for(1) == 2 and tier_for(2 * GIB) == 2 and tier_for(2 * GIB + 1) == 4
    assert tier_for(20 * GIB) == 24 and tier_for(80 * GIB) == 80
    with pytest.raises(UsageError, match="more than the largest worker tier"):
        tier_for(81 * GIB)
    assert worker_queues(8 * GIB) == [queue_name(t) for t in (2, 4, 6, 8)]
    assert worker_queues(int(11.9 * GIB))[-1] == queue_name(8)
    assert len(worker_queues(None)) == 9
    with pytest.raises(UsageError, match="below the smallest tier"):
        worker_queues(GIB)


def _job(catalog: Catalog) -> store.JobInfo:
    return store.insert_job(catalog, validate_spec(BASE), vram_need=GIB, queue=queue_name(2))


def test_claim_is_exclusive_and_fenced(catalog: Catalog) -> None:
    job = _job(catalog)
    first = store.claim(catalog, job.id, "A", lease_s=60)
    assert first is not None and first.attempt == 1
    assert store.claim(catalog, job.id, "B", lease_s=60) is None  # held on a live lease
    assert store.renew(catalog, first, 60)
    assert store.finish(catalog, first, output_ids=[5, 6])
    done = get_job(catalog, job.id)
    assert (done.status, done.output_ids, done.worker, done.attempts) == ("done", [5, 6], "A", 1)
    assert done.finished_at is not None and done.finished_at.tzinfo is not None
    assert store.claim(catalog, job.id, "B", lease_s=60) is None  # a redelivery: no-op
    assert not store.finish(catalog, first, output_ids=[7])  # finishing twice changes nothing
    assert get_job(catalog, job.id).output_ids == [5, 6]


def test_expired_lease_is_taken_over_and_the_old_attempt_is_fenced_off(catalog: Catalog) -> None:
    job = _job(catalog)
    old = store.claim(catalog, job.id, "A", lease_s=0.05)
    assert old is not None
    time.sleep(0.1)
    new = store.claim(catalog, job.id, "B", lease_s=60)
    assert new is not None and new.attempt == 2
    assert not store.renew(catalog, old, 60)
    assert not store.finish(catalog, old, output_ids=[1])
    assert store.finish(catalog, new, error=UsageError("too big", hint="smaller"))
    failed = get_job(catalog, job.id)
    assert failed.status == "failed" and failed.error == {"reason": "too big", "hint": "smaller"}
    assert failed.worker == "B" and failed.attempts == 2


def test_release_stale_requeues_then_gives_up(catalog: Catalog) -> None:
    job = _job(catalog)
    for attempt in range(1, store.MAX_ATTEMPTS + 1):
        held = store.claim(catalog, job.id, f"w{attempt}", lease_s=0.01)
        assert held is not None and held.attempt == attempt
        time.sleep(0.03)
        released = store.release_stale(catalog)
        if attempt < store.MAX_ATTEMPTS:
            assert [j.id for j in released] == [job.id]
            assert get_job(catalog, job.id).status == "queued"
    final = get_job(catalog, job.id)
    assert final.status == "failed" and final.error is not None
    assert f"stopped {store.MAX_ATTEMPTS} times" in final.error["reason"]


def test_stale_jobs_are_requeued_oldest_first(shared_catalog_url: str) -> None:
    """Whatever order their leases were taken and renewed in (on PostgreSQL an updated row
    moves, and an unordered select returns them in that order)."""
    catalog = open_catalog(shared_catalog_url)
    try:
        jobs = [_job(catalog) for _ in range(4)]
        claims = [store.claim(catalog, jobs[i].id, f"w{i}", lease_s=0.3) for i in (2, 0, 3, 1)]
        for held in (claims[1], claims[0]):
            assert held is not None and store.renew(catalog, held, 0.3)
        time.sleep(0.6)
        released = store.release_stale(catalog)
        assert [j.id for j in released] == [j.id for j in jobs]
    finally:
        catalog.close()


def test_get_and_list(catalog: Catalog) -> None:
    jobs = [_job(catalog) for _ in range(3)]
    with pytest.raises(JobNotFoundError) as info:
        get_job(catalog, "nope")
    assert info.value.exit_code == 1
    assert [j.id for j in list_jobs(catalog)] == [j.id for j in reversed(jobs)]
    assert len(list_jobs(catalog, limit=2)) == 2
    assert list_jobs(catalog, status="done") == []
    with pytest.raises(UsageError, match="unknown job status"):
        list_jobs(catalog, status="lost")
    value = jobs[0].to_json()
    assert value["status"] == "queued" and value["queue"] == "modelsafe.vram.2gib"
    assert value["created_at"].endswith("+00:00")


def test_worker_help_and_start_up_import_no_celery_or_torch(tmp_path: Path) -> None:
    probe = (
        "import sys\nfrom modelsafe.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('celery', 'redis', 'kombu', 'torch') if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy), file=sys.stderr)\n"
    )
    for args in (["--help"], ["worker", "--help"]):
        proc = subprocess.run(
            [sys.executable, "-c", probe, *args], capture_output=True, text=True, cwd=tmp_path
        )
        assert "HEAVY=\n" in proc.stderr + "\n", (args, proc.stderr)
        assert "worker" in proc.stdout
