"""A new kind (image_encoder) goes through scan, the catalog and ``ls --kind`` like the others."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ig_build import write_case

Cli = Callable[..., tuple[int, str, str]]


def test_scan_and_ls_image_encoders_and_new_variants(tmp_path: Path, run_cli: Cli) -> None:
    models = tmp_path / "ComfyUI" / "models"
    (models / "clip_vision").mkdir(parents=True)
    (models / "vae_approx").mkdir()
    (models / "upscale_models").mkdir()
    write_case(models / "clip_vision", "clip_vision_h")
    write_case(models / "vae_approx", "taesd_decoder_original")
    write_case(models / "upscale_models", "upscaler_hat_x4")
    catalog = f"sqlite:///{tmp_path / 'catalog.db'}"
    code, out, err = run_cli("--catalog", catalog, "scan", str(models), "--json")
    assert code == 0, err
    code, out, err = run_cli("--catalog", catalog, "ls", "--kind", "image_encoder", "--json")
    assert code == 0, err
    rows = json.loads(out)
    rows = rows["models"] if isinstance(rows, dict) else rows
    assert [(r["kind"], r["variant"]) for r in rows] == [("image_encoder", "clip_vit_h")]
    code, out, err = run_cli("--catalog", catalog, "ls", "--kind", "upscaler", "--json")
    rows = json.loads(out)
    rows = rows["models"] if isinstance(rows, dict) else rows
    assert [r["variant"] for r in rows] == ["hat x4"]
    # A user's correction may name the new kind; an unknown kind's hint lists it.
    upscaler = str(models / "upscale_models" / "upscaler_hat_x4.safetensors")
    code, _, err = run_cli("--catalog", catalog, "set", upscaler, "--kind", "nonsense")
    assert code == 2 and "image_encoder" in err
    code, _, err = run_cli("--catalog", catalog, "set", upscaler, "--kind", "image_encoder")
    assert code == 0, err


def test_inspect_cli_prints_the_new_kind(tmp_path: Path, run_cli: Cli) -> None:
    path = write_case(tmp_path, "te_sd3_incl_clips")
    code, out, err = run_cli("inspect", str(path), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert (report["kind"], report["variant"]) == ("text_encoder", "clip_l+clip_g+t5xxl")
    assert [e["name"] for e in report["facts"]["encoders"]] == ["clip_l", "clip_g", "t5xxl"]
