"""``modelsafe generate``: make images with a checked set, record each with its full recipe."""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import click

from modelsafe.commands.catalog_option import catalog_option
from modelsafe.errors import UsageError
from modelsafe.output import printable

SCHEDULER_CHOICES = (
    "euler",
    "euler_a",
    "heun",
    "lms",
    "ddim",
    "pndm",
    "unipc",
    "dpmpp_2m",
    "dpmpp_2m_karras",
    "flow_euler",
)


def parse_lora(text: str) -> tuple[Path, float]:
    """``PATH[:WEIGHT]`` (weight 1.0 when left out): the rules of ``resolve --lora``."""
    from modelsafe.runtime.resolve import parse_weighted

    path, weight = parse_weighted(text)
    return Path(path), weight


def parse_embedding(text: str) -> tuple[Path, str]:
    """``PATH[:TOKEN]`` (the token is the file's stem when left out)."""
    path, sep, token = text.rpartition(":")
    if sep and token and "/" not in token and "\\" not in token:
        return Path(path), token
    return Path(text), Path(text).stem


def parse_text_encoder(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name.startswith("text_encoder"):
        raise UsageError(
            f"--text-encoder {text!r} is not NAME=PATH",
            hint="e.g. --text-encoder text_encoder_2=t5xxl_fp16.safetensors",
        )
    return name, Path(path)


@click.command()
@click.option(
    "--checkpoint", type=click.Path(path_type=Path), help="Model file or diffusers folder."
)
@click.option("--prompt", default=None, help="What to draw.")
@click.option("--negative", "negative_prompt", default=None, help="Negative prompt.")
@click.option(
    "--seed", type=int, default=None, help="Seed of the first image [random; -1: random]."
)
@click.option("--seeds", default=None, metavar="S1,S2,..", help="One seed per image (-1: random).")
@click.option("--batch", "batch_size", type=int, default=None, help="Images (seed, seed+1, ...).")
@click.option("--steps", type=int, default=None, help="Denoising steps [family default].")
@click.option("--cfg", type=float, default=None, help="Guidance scale [family default].")
@click.option("--width", type=int, default=None, help="Width in pixels [family default].")
@click.option("--height", type=int, default=None, help="Height in pixels [family default].")
@click.option("--scheduler", type=click.Choice(SCHEDULER_CHOICES), default=None)
@click.option("--lora", "loras", multiple=True, metavar="PATH[:WEIGHT]", help="Repeatable.")
@click.option("--vae", type=click.Path(path_type=Path), default=None, help="VAE override.")
@click.option(
    "--text-encoder", "text_encoders", multiple=True, metavar="NAME=PATH", help="Repeatable."
)
@click.option("--embedding", "embeddings", multiple=True, metavar="PATH[:TOKEN]")
@click.option("--controlnet", type=click.Path(path_type=Path), default=None)
@click.option("--control-image", type=click.Path(path_type=Path), default=None)
@click.option("--control-scale", type=float, default=None)
@click.option("--refiner", type=click.Path(path_type=Path), default=None, help="SDXL refiner.")
@click.option("--refiner-switch", type=float, default=None, help="Fraction of steps [0.8].")
@click.option(
    "--true-cfg",
    type=float,
    default=None,
    help="Flux.1's real CFG over the --negative prompt (Forge's CFG scale for Flux); above 1 "
    "each step runs the model twice [1: off].",
)
@click.option(
    "--clip-skip",
    type=int,
    default=None,
    help="A1111's Clip skip: 2 reads the prompt from the text encoder's layer before last "
    "(SD1 models) [1].",
)
@click.option("--family", default=None, help="Override the detected family.")
@click.option("--variant", default=None, help="e.g. dev/schnell (flux1), 512-base (sd2).")
@click.option("--prediction-type", type=click.Choice(("epsilon", "v_prediction")), default=None)
@click.option(
    "--tokenizers",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder with tokenizer/, tokenizer_2/... [env MODELSAFE_TOKENIZERS].",
)
@click.option(
    "--config-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Family configs (<family>.<component>.json) to use instead of the shipped ones.",
)
@click.option(
    "--vram",
    default=None,
    metavar="SIZE",
    help="VRAM budget, e.g. 8GiB: the planner chooses dtype, offload, VAE tiling/slicing and "
    "attention slicing (the flags below override it); refused before loading if nothing fits.",
)
@click.option(
    "--device", default=None, help="cpu, cuda, cuda:1, mps [cpu; with --vram: cuda if present]."
)
@click.option(
    "--dtype",
    type=click.Choice(("fp32", "fp16", "bf16")),
    default=None,
    help="[fp32; with --vram: the plan's, fp32 on cpu].",
)
@click.option("--offload", type=click.Choice(("none", "model", "sequential")), default=None)
@click.option("--vae-tiling/--no-vae-tiling", default=None)
@click.option("--vae-slicing/--no-vae-slicing", default=None)
@click.option("--attention-slicing/--no-attention-slicing", default=None)
@click.option(
    "--upscale",
    default=None,
    metavar="MODEL",
    help="Upscale each image with this ESRGAN-family model (path, catalog name or hash prefix).",
)
@click.option("--backend", default=None, help="Backend plugin [diffusers].")
@click.option(
    "--out", "out_dir", type=click.Path(path_type=Path), default=Path("outputs"), show_default=True
)
@click.option(
    "--from-image",
    type=click.Path(path_type=Path),
    default=None,
    help="Make OLD.png again from its recipe (flags given override it).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@catalog_option
@click.pass_context
def generate(ctx: click.Context, **opts: Any) -> int:
    """Generate images with a checkpoint (and LoRAs, VAE, embeddings, ControlNet, refiner).

    Every input is audited first and refused unless safe. Each PNG carries its recipe (A1111
    "parameters" text + "modelsafe" JSON) and is recorded in the catalog.

    \b
    Example:
      modelsafe generate --checkpoint sd15.safetensors --lora style.safetensors:0.8 \\
          --prompt "a lighthouse" --seed 42 --steps 25 --out out/

    Exit codes: 0 images written, 1 an input is unsafe, 2 bad input or the backend failed.
    """
    from dataclasses import replace

    from modelsafe.commands.catalog_option import open_cli_catalog
    from modelsafe.runtime.generate import collect_warnings
    from modelsafe.runtime.generate import generate as run_generate

    catalog = open_cli_catalog(ctx)
    try:
        shown = _progress(not opts["as_json"])
        with collect_warnings(shown.warn) as early:  # (what reading --from-image warned of)
            request, old_image = _request(ctx, opts, catalog)
        with shown as progress:
            result = run_generate(
                request, opts["out_dir"], progress=progress, catalog=catalog, warn=shown.warn
            )
        result = replace(result, warnings=(*early, *result.warnings))
    finally:
        catalog.close()
    same = _compare_pixels(old_image, result.images[0].path) if old_image else None
    if opts["as_json"]:
        from modelsafe.output import emit_json

        value = result.to_json()
        if old_image is not None and same is not None:
            value["reproduces"] = same.to_json(old_image)
        emit_json(value, plugin_failures=True)
    else:
        _echo_plan(result.images[0].recipe.plan)
        for image in result.images:
            click.echo(printable(f"{image.path}  seed {image.seed}  sha256 {image.sha256[:12]}"))
        if old_image is not None and same is not None:
            click.echo(printable(same.line(old_image)))
    return 0


def _request(ctx: click.Context, opts: dict[str, Any], catalog: Any) -> tuple[Any, Path | None]:
    from modelsafe.runtime.generate import (
        ControlNetSpec,
        EmbeddingSpec,
        GenerateRequest,
        LoraSpec,
        refuse_network_tags,
        request_from_recipe,
    )

    def given(name: str) -> bool:
        source = ctx.get_parameter_source(name)
        return source is not None and source.name == "COMMANDLINE"

    old = opts["from_image"]
    if old is not None:
        from modelsafe.runtime.recipe import recipe_from_png

        # Models given as flags replace the recipe's: those are not looked up.
        overridden = {
            name
            for name, flag in (
                ("checkpoint", "checkpoint"),
                ("vae", "vae"),
                ("refiner", "refiner"),
                ("upscale", "upscale"),
                ("loras", "loras"),
                ("embeddings", "embeddings"),
                ("text_encoders", "text_encoders"),
                ("controlnet", "controlnet"),
            )
            if opts[flag]
        }
        # Settings the image leaves open (no seed, a sampler modelsafe has not) that a flag fills.
        overridden |= {"seed"} if given("seed") or given("seeds") else set()
        overridden |= {"scheduler"} if given("scheduler") else set()
        base = request_from_recipe(recipe_from_png(old), catalog, overridden=overridden)
    else:
        if opts["checkpoint"] is None or opts["prompt"] is None:
            raise UsageError(
                "--checkpoint and --prompt are needed (or --from-image OLD.png)",
                hint="modelsafe generate --checkpoint MODEL --prompt 'a cat' --seed 42",
            )
        base = GenerateRequest(checkpoint=opts["checkpoint"], prompt=opts["prompt"])
    changes: dict[str, Any] = {}
    for name in (
        "checkpoint",
        "prompt",
        "negative_prompt",
        "seed",
        "batch_size",
        "steps",
        "cfg",
        "width",
        "height",
        "scheduler",
        "vae",
        "refiner",
        "refiner_switch",
        "clip_skip",
        "true_cfg",
        "family",
        "variant",
        "prediction_type",
        "tokenizers",
        "config_dir",
        "backend",
        "vram",
        "upscale",
    ):
        if opts[name] is not None and (old is None or given(name)):
            changes[name] = opts[name]
    for name, flag in (("prompt", "--prompt"), ("negative_prompt", "--negative")):
        if name in changes:
            refuse_network_tags(changes[name], flag)
    if opts["seeds"]:
        try:
            changes["seeds"] = tuple(int(s) for s in opts["seeds"].split(",") if s.strip())
        except ValueError as exc:
            raise UsageError(
                f"--seeds {opts['seeds']!r} is not a list of numbers",
                hint="e.g. --seeds 1,2,3 (-1: a random seed)",
            ) from exc
        _refuse_seed_conflicts(opts, len(changes["seeds"]), seed_given=given("seed"))
    if opts["loras"]:
        changes["loras"] = tuple(LoraSpec(*parse_lora(text)) for text in opts["loras"])
    if opts["embeddings"]:
        changes["embeddings"] = tuple(
            EmbeddingSpec(*parse_embedding(text)) for text in opts["embeddings"]
        )
    if opts["text_encoders"]:
        changes["text_encoders"] = dict(parse_text_encoder(t) for t in opts["text_encoders"])
    if opts["controlnet"] is not None or opts["control_image"] is not None:
        if opts["controlnet"] is None or opts["control_image"] is None:
            raise UsageError("--controlnet and --control-image go together")
        scale = 1.0 if opts["control_scale"] is None else opts["control_scale"]
        changes["controlnet"] = ControlNetSpec(opts["controlnet"], opts["control_image"], scale)
    # A new --vram re-plans: the old image's settings give way to the plan (flags still win).
    plan = {} if opts["vram"] is not None else dict(base.plan)
    for name in ("device", "dtype", "offload", "vae_tiling", "vae_slicing", "attention_slicing"):
        if opts[name] is not None:
            plan[name] = opts[name]
    changes["plan"] = plan
    return replace(base, **changes), old


def _refuse_seed_conflicts(opts: dict[str, Any], seeds: int, *, seed_given: bool) -> None:
    """--seeds gives one image per seed: a --seed, or a --batch of another count, beside it
    would be ignored, so it is refused."""
    if seed_given:
        raise UsageError(
            "--seed and --seeds both given: --seeds sets the seed of every image",
            hint="give --seed S (with --batch N: seeds S, S+1, ...) or --seeds S1,S2,..",
        )
    batch = opts["batch_size"]
    if batch is not None and batch != seeds:
        raise UsageError(
            f"--batch {batch} does not match --seeds, which gives {seeds} "
            f"seed{'s' if seeds != 1 else ''} (one image per seed)",
            hint="leave --batch out with --seeds, or give as many seeds as images",
        )


def _echo_plan(record: Any) -> None:
    """The settings a planned run used and why (only when a VRAM plan was made)."""
    if not record or "budget" not in record:
        return
    from modelsafe.units import format_size

    click.echo(
        f"plan: peak {format_size(record['peak'])} within {format_size(record['budget'])}",
        err=True,
    )
    for key, value in record["settings"].items():
        why = record["why"].get(key, "")
        shown = ("on" if value else "off") if isinstance(value, bool) else str(value)
        click.echo(printable(f"  {key:18} {shown:9} [{record['source'][key]}] {why}"), err=True)


class _progress:
    """A step progress bar on stderr (hidden when stderr is not a terminal or for --json)."""

    def __init__(self, wanted: bool) -> None:
        self.enabled = wanted and sys.stderr.isatty()
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Any:
        if not self.enabled:
            return lambda step, total: None  # (backends may always call it)
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        self._bar = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._bar.start()
        self._task = self._bar.add_task("denoising", total=None)

        def update(step: int, total: int) -> None:
            self._bar.update(self._task, completed=step, total=total or None)

        return update

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def warn(self, message: str) -> None:
        """``warning: MESSAGE`` on stderr, as the run finds it (above the bar while it shows)."""
        line = printable(f"warning: {message}")  # (a warning may quote a file name)
        if self._bar is not None:
            self._bar.console.print(line, style="yellow", markup=False, highlight=False)
        else:
            click.secho(line, fg="yellow", err=True)


@dataclass(frozen=True)
class PixelComparison:
    """How the new image's pixels compare with the old one's (``--from-image``)."""

    identical: bool | None  # None: they could not be compared (``cannot`` says why)
    difference: str = ""  # what differs, when they are not identical
    cannot: str = ""  # why they could not be compared
    lossy: str = ""  # the old image's lossy format (JPEG, lossy WebP): no exact match

    def line(self, old: Path) -> str:
        if self.identical is None:
            return f"cannot compare pixels: {self.cannot}"
        word = "identical pixels" if self.identical else f"pixels differ ({self.difference})"
        return f"reproduces {old}: {word}"

    def to_json(self, old: Path) -> dict[str, Any]:
        return {
            "image": str(old),
            "identical_pixels": self.identical,
            "difference": self.difference or None,
            "cannot_compare": self.cannot or None,
            "lossy": self.lossy or None,
        }


def _compare_pixels(old: Path, new: Path) -> PixelComparison:
    """Compare the old image's pixels with the new one's. Sizes come from the headers first: a
    huge or hostile old image is never decoded, and a size change is named as such. A damaged
    old image is said, never a crash (the new image is written already); a lossy one (JPEG,
    lossy WebP) cannot match exactly, so how far it is off is said instead."""
    from PIL import Image, ImageChops, ImageStat

    from modelsafe.runtime.image_text import image_size

    sizes = image_size(old), image_size(new)
    if sizes[0] is None or sizes[0] != sizes[1]:
        was = "x".join(map(str, sizes[0])) if sizes[0] else "unreadable"
        now = "x".join(map(str, sizes[1])) if sizes[1] else "unreadable"
        return PixelComparison(False, f"{old.name} is {was}, the new image is {now}")
    try:
        with Image.open(old) as a, Image.open(new) as b:
            before, after = a.convert("RGB"), b.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return PixelComparison(None, cannot=f"{old} is damaged ({str(exc)[:200]})")
    if before.tobytes() == after.tobytes():
        return PixelComparison(True)
    from modelsafe.runtime.image_text import lossy_format

    lossy = lossy_format(old)
    if not lossy:
        return PixelComparison(False, "other device or versions?")
    diff = ImageChops.difference(before, after)
    mean = sum(ImageStat.Stat(diff).mean) / 3
    bands: Any = diff.getextrema()  # ((low, high), ...): one pair per band of RGB
    most = max(high for _, high in bands)
    return PixelComparison(
        False,
        f"the old image is lossy {lossy}, so no exact match can be told: mean difference "
        f"{mean:.2f}, max {most} of 255",
        lossy=lossy,
    )
