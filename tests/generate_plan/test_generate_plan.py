"""`generate --vram`: the planner's choices reach the pipeline, flags override them, the recipe
says which plan ran and why, and a budget nothing fits is refused before anything loads."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from modelsafe.errors import UsageError
from modelsafe.runtime.generate import GenerateRequest, with_defaults
from modelsafe.runtime.generate_plan import PlanDoesNotFitError, settle
from modelsafe.runtime.plan import plan
from modelsafe.testing.tiny_models import Tiny


def _request(t: Tiny, size: int = 32, **extra: Any) -> GenerateRequest:
    return with_defaults(
        GenerateRequest(
            checkpoint=t.single,
            prompt="a cat",
            family="sd1",
            config_dir=t.configs,
            tokenizers=t.tokenizers,
            steps=2,
            seed=7,
            width=size,
            height=size,
            **extra,
        )
    )


def _args(t: Tiny, out: Path, *extra: str) -> list[str]:
    return [
        "generate", "--checkpoint", str(t.single), "--family", "sd1",
        "--config-dir", str(t.configs), "--tokenizers", str(t.tokenizers),
        "--prompt", "a cat", "--steps", "2", "--seed", "7",
        "--width", "32", "--height", "32", "--out", str(out), "--json", *extra,
    ]  # fmt: skip


def _smallest_peak(t: Tiny, size: int) -> int:
    """The lowest peak any combination of options reaches (the planner's own answer)."""
    return plan(str(t.single), vram=1, resolution=(size, size)).peak


def test_tight_budget_turns_on_vae_tiling_in_the_pipeline(sd1: Tiny) -> None:
    from modelsafe.plugins.builtin.backend_diffusers import build_pipelines

    loose = plan(str(sd1.single), vram="1TiB", resolution=(1024, 1024))
    assert loose.options.offload == "none" and not loose.options.vae_tiling
    budget = loose.peak - 1  # the cheapest saving that fits is VAE tiling
    expected = plan(str(sd1.single), vram=budget, resolution=(1024, 1024)).options
    assert expected.vae_tiling
    request = _request(sd1, 1024, vram=budget)
    record = settle(request)
    s = record.settings
    assert (s["vae_tiling"], s["vae_slicing"]) == (expected.vae_tiling, expected.vae_slicing)
    assert record.source["vae_tiling"] == "plan" and record.budget == budget
    assert record.peak is not None and record.peak <= budget
    assert record.why["vae_tiling"].startswith("without VAE tiling the peak is")
    assert (s["dtype"], record.source["dtype"]) == ("fp32", "device")  # cpu: fp32
    pipe, _ = build_pipelines(replace(request, plan=s))
    assert pipe.vae.use_tiling is True and not hasattr(pipe.unet, "_hf_hook")


def _budget_for_model_offload(t: Tiny, size: int) -> int:
    """The smallest budget (MiB steps up from the lowest reachable peak) planned with
    offload=model: found by asking the planner, so it follows the planner's formulas."""
    budget = _smallest_peak(t, size)
    for _ in range(200):
        if plan(str(t.single), vram=budget, resolution=(size, size)).options.offload == "model":
            return budget
        budget += 2**20
    raise AssertionError("the planner never chose offload=model")


def test_tight_budget_turns_on_model_offload_for_a_gpu(sd1: Tiny) -> None:
    """Planned for a CUDA device: the pipeline gets model CPU offload hooks for that device
    (built only; nothing runs, so no GPU is needed)."""
    from modelsafe.plugins.builtin.backend_diffusers import build_pipelines

    budget = _budget_for_model_offload(sd1, 1024)
    request = _request(sd1, 1024, vram=budget, plan={"device": "cuda"})
    record = settle(request)
    assert (record.settings["offload"], record.source["offload"]) == ("model", "plan")
    assert "model CPU offload keeps one model on the GPU per phase" in record.why["offload"]
    assert record.settings["dtype"] == "fp16"  # the plan's dtype, on a GPU
    pipe, _ = build_pipelines(replace(request, plan=record.settings))
    assert hasattr(pipe.unet, "_hf_hook") and str(pipe._offload_device) == "cuda:0"
    assert pipe.vae.use_tiling is record.settings["vae_tiling"]
    assert next(pipe.unet.parameters()).device.type == "cpu"  # waits on the CPU until used


def test_planned_run_on_cpu_records_plan_and_reproduces(
    sd1: Tiny, run_cli: Any, tmp_path: Path
) -> None:
    budget = _smallest_peak(sd1, 32)
    expected = plan(str(sd1.single), vram=budget, resolution=(32, 32))
    assert expected.fits and expected.options.offload != "none"
    db = tmp_path / "c.db"
    code, out, err = run_cli(
        "--catalog", str(db), *_args(sd1, tmp_path / "o", "--vram", str(budget))
    )
    assert code == 0, err
    image = json.loads(out)["images"][0]
    record = image["recipe"]["plan"]
    assert record["budget"] == budget and record["settings"]["device"] == "cpu"
    assert (record["settings"]["offload"], record["source"]["offload"]) == ("none", "device")
    assert f"the plan chose offload={expected.options.offload}" in record["why"]["offload"]
    planned = {c["name"]: c for c in record["choices"]}
    assert planned["offload"]["value"] == expected.options.offload  # the planner's own record
    assert record["why"]["vae_tiling"] == planned["vae_tiling"]["why"]
    code, out, err = run_cli(
        "--catalog", str(db), "generate", "--from-image", image["path"],
        "--out", str(tmp_path / "again"), "--json",
    )  # fmt: skip
    assert code == 0, err
    again = json.loads(out)
    assert again["reproduces"]["identical_pixels"] is True
    assert again["images"][0]["recipe"]["plan"] == record  # the record, reasons and all
    code, out, err = run_cli(
        "--catalog", str(db), "generate", "--from-image", image["path"],
        "--out", str(tmp_path / "tiled"), "--json", "--vae-tiling",
    )  # fmt: skip
    assert code == 0, err
    changed = json.loads(out)["images"][0]["recipe"]["plan"]
    assert changed["settings"]["vae_tiling"] is True and changed["source"]["vae_tiling"] == "flag"
    assert changed["source"]["offload"] == "recipe"
    assert changed["why"]["offload"] == "as the image was made: " + record["why"]["offload"]


def test_flags_override_the_plan(sd1: Tiny) -> None:
    budget = _budget_for_model_offload(sd1, 1024)
    planned = settle(_request(sd1, 1024, vram=budget, plan={"device": "cuda"})).settings
    overrides = {
        "device": "cuda",
        "offload": "none",
        "vae_tiling": not planned["vae_tiling"],
        "attention_slicing": True,
        "dtype": "bf16",
    }
    record = settle(_request(sd1, 1024, vram=budget, plan=overrides))
    for key, value in overrides.items():
        assert record.settings[key] == value and record.source[key] == "flag"
    assert planned["offload"] == "model" and planned["dtype"] == "fp16"
    assert record.why["offload"] == f"given explicitly (the plan chose {planned['offload']})"
    assert record.settings["vae_slicing"] == planned["vae_slicing"]  # not overridden
    no_plan = settle(_request(sd1, plan={"attention_slicing": True}))
    assert no_plan.budget is None and no_plan.settings["dtype"] == "fp32"
    assert no_plan.settings["attention_slicing"] is True
    with pytest.raises(UsageError, match="no GPU to offload to"):
        settle(_request(sd1, vram="1TiB", plan={"offload": "model"}))


def test_attention_slicing_flag_reaches_the_pipeline(sd1: Tiny) -> None:
    from modelsafe.plugins.builtin.backend_diffusers import build_pipelines

    request = _request(sd1, vram="1TiB", plan={"attention_slicing": True, "vae_slicing": True})
    pipe, _ = build_pipelines(replace(request, plan=settle(request).settings))
    kinds = {type(p).__name__ for p in pipe.unet.attn_processors.values()}
    assert kinds == {"SlicedAttnProcessor"} and pipe.vae.use_slicing is True


def test_fp8_storage_reaches_the_denoiser(sd1: Tiny) -> None:
    import torch

    from modelsafe.plugins.builtin.backend_diffusers import build_pipelines, run

    request = _request(sd1, plan={"denoiser_fp8": True})
    request = replace(request, plan=settle(request).settings)
    pipe, _ = build_pipelines(request)
    assert pipe.unet.conv_in.weight.dtype == torch.float8_e4m3fn
    assert pipe.vae.decoder.conv_in.weight.dtype == torch.float32
    (image,) = run(pipe, None, request, None)  # computes in fp32, layer by layer
    assert image.size == (32, 32)


def test_budget_nothing_fits_is_refused_before_loading(
    sd1: Tiny, run_cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import modelsafe.runtime.diffusers_loader as loader

    def never(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("the pipeline was loaded although the plan cannot fit")

    monkeypatch.setattr(loader, "load_pipeline", never)
    code, out, err = run_cli(*_args(sd1, tmp_path / "o", "--vram", "64MiB"))
    assert code == 1, err
    assert "does not fit 64.0 MiB of VRAM" in err
    assert "smallest peak reachable" in err  # the planner's suggestion, as the hint
    assert not list((tmp_path / "o").glob("*.png"))
    with pytest.raises(PlanDoesNotFitError, match="does not fit"):
        settle(_request(sd1, vram="64MiB"))
