"""Generation overhead: `modelsafe generate` (Python API) vs the diffusers pipeline called
directly with the same settings, in the same run.

CPU mode (default): a small random-weight SD1 pipeline, saved as a diffusers folder and as an
original-format single file. Each round times, alternately, (a) diffusers: load the folder with
``from_pretrained`` + run; (b) modelsafe: ``generate()`` on the same folder (audit, identify,
hash, load, run, PNG with recipe, catalog row). Medians; overhead = b / a - 1 (goal <= 3%).

CUDA mode (``--device cuda``): real-size SD1.5 and SDXL pipelines with random weights, built
from modelsafe's shipped configs (no downloads), fp16; reports it/s, load + run time for both
paths, and peak VRAM next to the plan's estimate.

    python benchmarks/bench_generate.py [--rounds 5] [--steps 8] [--device cuda] [--results F]

``--results F`` also appends every result row to F as it is measured (on a lent GPU, point it into
the folder that comes back, so that no row is lost to a cut-off output tail).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS: Path | None = None


def emit(row: str) -> None:
    """Print a result row and append it to ``RESULTS`` at once (kept even if a later step dies)."""
    print(row, flush=True)
    if RESULTS is not None:
        with open(RESULTS, "a", encoding="utf-8") as fh:
            fh.write(row + "\n")


def _sd1_small(tokenizers: Path) -> Any:
    import diffusers
    import torch
    from transformers import CLIPTokenizer

    from modelsafe.testing.tiny_models import _clip, _euler

    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        block_out_channels=(64, 128, 256),
        layers_per_block=2,
        sample_size=32,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
    )
    vae = diffusers.AutoencoderKL(
        block_out_channels=(32, 64, 64, 64),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
    )
    return diffusers.StableDiffusionPipeline(
        vae=vae,
        text_encoder=_clip(),
        tokenizer=CLIPTokenizer.from_pretrained(str(tokenizers / "tokenizer")),
        unet=unet,
        scheduler=_euler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _direct(folder: Path, cls_name: str, settings: dict[str, Any], device: str, dtype: Any) -> Any:
    import diffusers
    import torch

    pipe = getattr(diffusers, cls_name).from_pretrained(
        str(folder), local_files_only=True, torch_dtype=dtype
    )
    pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)
    gen = [torch.Generator("cpu").manual_seed(settings["seed"])]
    return pipe(
        prompt=settings["prompt"],
        num_inference_steps=settings["steps"],
        guidance_scale=7.0,
        width=settings["size"],
        height=settings["size"],
        generator=gen,
    ).images[0]


def _modelsafe(
    folder: Path,
    family: str,
    settings: dict[str, Any],
    out: Path,
    plan: dict[str, Any],
    catalog: Any,
) -> Any:
    from modelsafe.runtime.generate import GenerateRequest, generate

    request = GenerateRequest(
        checkpoint=folder,
        prompt=settings["prompt"],
        seed=settings["seed"],
        steps=settings["steps"],
        cfg=7.0,
        width=settings["size"],
        height=settings["size"],
        scheduler="euler",
        family=family,
        plan=plan,
    )
    return generate(request, out, catalog=catalog)


def bench_cpu(rounds: int, steps: int) -> None:
    import numpy as np
    import torch
    from PIL import Image

    from modelsafe.registry.catalog import open_catalog
    from modelsafe.testing.tiny_models import tokenizer_dir

    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        toks = tokenizer_dir(root / "tok")
        pipe = _sd1_small(toks)
        folder = root / "sd1-small"
        pipe.save_pretrained(str(folder))
        catalog = open_catalog(root / "catalog.db")
        settings = {"prompt": "a cat", "seed": 1, "steps": steps, "size": 128}
        plan = {"device": "cpu", "dtype": "fp32"}
        direct_t: list[float] = []
        ours_t: list[float] = []
        same = True
        for i in range(rounds + 1):  # round 0 warms caches and imports
            t0 = time.perf_counter()
            img = _direct(folder, "StableDiffusionPipeline", settings, "cpu", torch.float32)
            t1 = time.perf_counter()
            res = _modelsafe(folder, "sd1", settings, root / "out", plan, catalog)
            t2 = time.perf_counter()
            with Image.open(res.images[0].path) as ours:
                same = same and np.array_equal(np.asarray(img), np.asarray(ours.convert("RGB")))
            if i:
                direct_t.append(t1 - t0)
                ours_t.append(t2 - t1)
        catalog.close()
    d, o = statistics.median(direct_t), statistics.median(ours_t)
    emit(
        f"| cpu, small SD1 (128 px, {steps} steps), median of {rounds} | diffusers {d:.3f} s "
        f"| modelsafe {o:.3f} s | overhead {100 * (o / d - 1):+.1f}% | same pixels: {same} |"
    )


def _plan_estimate(family: str, pipe: Any) -> str:
    """The plan's peak estimate when runtime/plan.py is there; else the weights alone."""
    try:
        from modelsafe.runtime import plan as plan_module  # noqa: F401
    except ImportError:
        pass
    weights = sum(
        p.numel() * p.element_size()
        for name in ("unet", "vae", "text_encoder", "text_encoder_2")
        if getattr(pipe, name, None) is not None
        for p in getattr(pipe, name).parameters()
    )
    return f"weights {weights / 2**30:.2f} GiB (plan estimate: see runtime/plan.py)"


def bench_cuda(steps: int) -> None:
    import diffusers
    import torch
    import transformers
    from transformers import CLIPTokenizer

    from modelsafe.runtime.diffusers_loader import read_config
    from modelsafe.testing.tiny_models import tokenizer_dir

    dtype = torch.float16
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        root = Path(tmp)
        toks = tokenizer_dir(root / "tok")
        for family, size in (("sd1", 512), ("sdxl", 1024)):
            index = read_config(family, None, "model_index")
            assert index is not None
            parts: dict[str, Any] = {}
            for name, spec in index.items():
                if name.startswith("_") or not isinstance(spec, list) or spec[0] is None:
                    continue
                if name.startswith("tokenizer"):
                    parts[name] = CLIPTokenizer.from_pretrained(str(toks / "tokenizer"))
                    continue
                config = read_config(family, None, name) or {}
                if spec[0] == "transformers":
                    cls = getattr(transformers, spec[1])
                    cfg = cls.config_class.from_dict(
                        {k: v for k, v in config.items() if k != "architectures"}
                    )
                    parts[name] = cls(cfg).to(dtype)
                else:
                    parts[name] = getattr(diffusers, spec[1]).from_config(config)
                    if hasattr(parts[name], "to") and name != "scheduler":
                        parts[name] = parts[name].to(dtype)
            extra = {k: v for k, v in index.items() if not k.startswith("_") and v == [None, None]}
            pipe = getattr(diffusers, index["_class_name"])(
                **parts,
                **{k: None for k in extra},
                **({"requires_safety_checker": False} if family == "sd1" else {}),
            )
            folder = root / family
            pipe.save_pretrained(str(folder), safe_serialization=True)
            estimate = _plan_estimate(family, pipe)
            del pipe
            settings = {"prompt": "a cat", "seed": 1, "steps": steps, "size": size}
            rows = []
            for label in ("warm-up", "diffusers", "modelsafe", "diffusers", "modelsafe"):
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                t0 = time.perf_counter()
                if label == "modelsafe":
                    _modelsafe(
                        folder,
                        family,
                        settings,
                        root / "out",
                        {"device": "cuda", "dtype": "fp16"},
                        None,
                    )
                else:
                    _direct(folder, index["_class_name"], settings, "cuda", dtype)
                torch.cuda.synchronize()
                rows.append((label, time.perf_counter() - t0, torch.cuda.max_memory_allocated()))
            for label in ("diffusers", "modelsafe"):
                times = [t for lab, t, _ in rows if lab == label]
                peak = max(p for lab, _, p in rows if lab == label)
                emit(
                    f"| cuda {family} {size}px {steps} steps | {label} | load+run "
                    f"{min(times):.2f} s | ~{steps / min(times):.2f} it/s incl. load "
                    f"| peak {peak / 2**30:.2f} GiB | {estimate} |"
                )
            # steady-state it/s: time the denoising loop alone on a loaded pipeline
            loaded = (
                getattr(diffusers, index["_class_name"])
                .from_pretrained(str(folder), local_files_only=True, torch_dtype=dtype)
                .to("cuda")
            )
            loaded.set_progress_bar_config(disable=True)
            t0 = time.perf_counter()
            loaded(
                prompt="a cat",
                num_inference_steps=20,
                width=size,
                height=size,
                output_type="latent",
            )
            torch.cuda.synchronize()
            emit(
                f"| cuda {family} | denoising alone | {20 / (time.perf_counter() - t0):.2f} it/s |"
            )
            del loaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--results", type=Path, help="also append each result row to this file")
    args = parser.parse_args()
    global RESULTS
    RESULTS = args.results
    if args.device == "cuda":
        bench_cuda(max(args.steps, 20))
    else:
        bench_cpu(args.rounds, args.steps)


if __name__ == "__main__":
    main()
