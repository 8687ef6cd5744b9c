"""Real Hugging Face cache layouts: ``models--org--name/snapshots/<revision>/...`` whose files
are relative links into ``blobs/<sha256 of the content>``, with ``refs/main`` naming a revision.

- A repo keeps its single-file checkpoint and a LoRA beside its diffusers pipeline (as
  stabilityai/stable-diffusion-xl-base-1.0 and black-forest-labs/FLUX.1-dev do): each is a model
  of its own, found once across revisions, with the verdicts the same files get outside the cache.
- A cache reached through a link (an ``HF_HOME`` on a bigger drive) is scanned once.
- When ``refs/main`` moves to a new revision, the revision it left is named ``org/name@<rev>``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelsafe.testing import write_safetensors

Scan = Callable[..., dict[str, Any]]
Cli = Callable[..., Any]
REV_A, REV_B, REV_C = "a" * 40, "b" * 40, "c" * 40
LORA = [
    ("lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", "F16", (4, 320)),
    ("lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight", "F16", (320, 4)),
]


def cache_repo(hub: Path, repo_id: str, revision: str, files: dict[str, Path]) -> Path:
    """Put ``files`` (path in the repo -> file whose bytes to store) in the cache as the hub
    does: each under ``blobs/<sha256>`` and linked from ``snapshots/<revision>/<path>`` by a
    relative link; ``refs/main`` names ``revision``. Returns the snapshot folder."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    snapshot = repo / "snapshots" / revision
    for rel, source in files.items():
        data = source.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        if not blob.exists():
            blob.write_bytes(data)
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to("../" * (len(Path(rel).parts) + 1) + f"blobs/{blob.name}")
    (repo / "refs" / "main").write_text(revision, newline="")
    return snapshot


def files_of(folder: Path) -> dict[str, Path]:
    return {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def sd1_repo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The files of a tiny SD1 repo: a diffusers pipeline, its single-file checkpoint at the
    top and a kohya LoRA in ``lora/``."""
    pytest.importorskip("diffusers")
    from modelsafe.testing.tiny_models import tiny_lora_kohya, tiny_model

    root = tmp_path_factory.mktemp("tiny-sd1")
    tiny = tiny_model("sd1", root)
    files = files_of(tiny.folder)
    files["v1-5-pruned.safetensors"] = tiny.single
    files["lora/pytorch_lora_weights.safetensors"] = tiny_lora_kohya(
        tiny.pipe.unet, root / "lora.safetensors"
    )
    return files


def test_a_checkpoint_and_a_lora_beside_a_cached_pipeline_are_models_of_their_own(
    tmp_path: Path, sd1_repo: dict[str, Path], scan_json: Scan, cli_json: Cli
) -> None:
    hub = tmp_path / "hub"
    for revision in (REV_A, REV_B):  # the same files in two revisions: one blob each
        snapshot = cache_repo(hub, "org/sd1", revision, sd1_repo)
    summary = scan_json("--hf-cache-dir", str(hub))
    # (a pipeline per revision folder; each shared blob once, a location per revision)
    assert (summary["new"], summary["errors"], summary["skipped"]) == (4, 0, [])
    models = {m["name"]: m for m in cli_json("ls")}
    assert set(models) == {"org/sd1", "v1-5-pruned", "org/sd1/lora"}
    assert models["org/sd1/lora"]["kind"] == "lora"
    single = cli_json("show", "v1-5-pruned")
    assert single["paths"] == [
        str(hub / "models--org--sd1" / "snapshots" / r / "v1-5-pruned.safetensors")
        for r in (REV_A, REV_B)
    ]
    # The same verdicts as the same files outside the cache.
    for rel, name in (
        ("v1-5-pruned.safetensors", "v1-5-pruned"),
        ("lora/pytorch_lora_weights.safetensors", "org/sd1/lora"),
    ):
        outside = cli_json("inspect", str(sd1_repo[rel]))
        shown = cli_json("show", name)
        assert (shown["family"], shown["kind"]) == (outside["family"], outside["kind"])
        digest = hashlib.sha256(sd1_repo[rel].read_bytes()).hexdigest()
        assert (shown["audit"], shown["sha256"]) == ("safe", digest)
    pipeline = cli_json("show", "org/sd1")
    assert pipeline["paths"] == [str(snapshot.parent / r) for r in (REV_A, REV_B)]
    again = scan_json("--hf-cache-dir", str(hub))
    assert (again["unchanged"], again["new"], again["changed"]) == (4, 0, 0)


def _lora_repo(hub: Path, tmp_path: Path, revision: str, seed: int) -> Path:
    lora = write_safetensors(tmp_path / f"lora{seed}.safetensors", LORA, data="random", seed=seed)
    return cache_repo(hub, "org/tiny-lora", revision, {"pytorch_lora_weights.safetensors": lora})


def test_a_cache_reached_through_a_link_is_scanned_once(
    tmp_path: Path, scan_json: Scan, cli_json: Cli
) -> None:
    hub = tmp_path / "drive" / "hub"
    snapshot = _lora_repo(hub, tmp_path, REV_A, seed=1)
    (tmp_path / "home").symlink_to(tmp_path / "drive")  # HF_HOME=~/home, a link to a drive
    summary = scan_json("--hf-cache-dir", str(tmp_path / "home" / "hub"))
    assert (summary["new"], summary["skipped"]) == (1, [])
    [loc] = cli_json("show", "org/tiny-lora")["locations"]
    assert loc["path"] == str(snapshot / "pytorch_lora_weights.safetensors")
    assert (loc["hf_repo"], loc["hf_refs"]) == ("org/tiny-lora", ["main"])


def test_main_moving_to_a_new_revision_renames_the_revision_it_left(
    tmp_path: Path, scan_json: Scan, cli_json: Cli
) -> None:
    hub = tmp_path / "hub"
    old = _lora_repo(hub, tmp_path, REV_A, seed=1)
    scan_json("--hf-cache-dir", str(hub))
    assert [m["name"] for m in cli_json("ls")] == ["org/tiny-lora"]

    new = _lora_repo(hub, tmp_path, REV_C, seed=2)  # `hf download` of a new commit: main -> C
    summary = scan_json("--hf-cache-dir", str(hub))
    assert (summary["new"], summary["unchanged"]) == (1, 1)
    assert sorted(m["name"] for m in cli_json("ls")) == [
        "org/tiny-lora",
        f"org/tiny-lora@{REV_A[:12]}",
    ]
    current = cli_json("show", "org/tiny-lora")
    assert current["paths"] == [str(new / "pytorch_lora_weights.safetensors")]
    [left] = cli_json("show", f"org/tiny-lora@{REV_A[:12]}")["locations"]
    assert (left["path"], left["hf_refs"]) == (str(old / "pytorch_lora_weights.safetensors"), [])


def test_a_file_added_beside_a_pipeline_leaves_the_pipelines_identity(
    tmp_path: Path, sd1_repo: dict[str, Path], scan_json: Scan, cli_json: Cli
) -> None:
    """A checkpoint or LoRA beside the components is a model of its own: adding one must not
    make the pipeline another model (its identity is its declared components' files)."""
    import shutil

    folder = tmp_path / "sd1"
    for rel, source in sd1_repo.items():
        if rel.startswith(("unet/", "vae/", "text_encoder/", "tokenizer/", "scheduler/")) or (
            rel == "model_index.json"
        ):
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, folder / rel)
    scan_json(str(folder))
    before = cli_json("show", str(folder))
    shutil.copy(sd1_repo["lora/pytorch_lora_weights.safetensors"], folder / "style.safetensors")
    scan_json(str(folder))
    after = cli_json("show", str(folder))
    assert after["id"] == before["id"] and after["sha256"] == before["sha256"]
    assert cli_json("show", str(folder / "style.safetensors"))["id"] != before["id"]


def test_audit_of_a_cached_repo_skips_the_hubs_bookkeeping(
    tmp_path: Path, sd1_repo: dict[str, Path]
) -> None:
    """`.no_exist/<rev>/<name>` holds empty marker files (names the repo lacks): the audit of a
    healthy repo folder called them interrupted downloads."""
    from modelsafe.registry.audit import audit_path

    snapshot = cache_repo(tmp_path / "hub", "org/sd1", REV_A, sd1_repo)
    marker = (
        snapshot.parent.parent / ".no_exist" / REV_A / "diffusion_pytorch_model.fp16.safetensors"
    )
    marker.parent.mkdir(parents=True)
    marker.touch()
    for root in (snapshot.parent.parent, tmp_path / "hub"):
        verdict = audit_path(root)
        assert verdict.status == "safe", [f.message for f in verdict.findings]


def test_a_plain_scan_of_the_cache_names_revisions_as_hf_cache_does(
    tmp_path: Path, scan_json: Scan, cli_json: Cli
) -> None:
    """Without --hf-cache the facts come from the path and the repo's refs/: two revisions of
    different content were both `org/tiny-lora` (`show org/tiny-lora` was ambiguous)."""
    hub = tmp_path / "hub"
    old = _lora_repo(hub, tmp_path, REV_A, seed=1)
    scan_json(str(hub))
    new = _lora_repo(hub, tmp_path, REV_C, seed=2)  # main -> C
    scan_json(str(hub))
    assert sorted(m["name"] for m in cli_json("ls")) == [
        "org/tiny-lora",
        f"org/tiny-lora@{REV_A[:12]}",
    ]
    assert cli_json("show", "org/tiny-lora")["paths"] == [
        str(new / "pytorch_lora_weights.safetensors")
    ]
    [left] = cli_json("show", f"org/tiny-lora@{REV_A[:12]}")["locations"]
    assert (left["path"], left["hf_refs"]) == (str(old / "pytorch_lora_weights.safetensors"), [])
