"""``modelsafe plan``: how to run a set within a VRAM budget, and the expected peak per phase."""

from __future__ import annotations

from typing import Any

import click

from modelsafe.commands.catalog_option import catalog_option
from modelsafe.commands.resolve_cmd import set_options
from modelsafe.output import emit_json, printable


@click.command("plan")
@set_options
@click.option(
    "--vram",
    default=None,
    metavar="SIZE",
    help="VRAM budget, e.g. 8GiB [config `vram`, env MODELSAFE_VRAM].",
)
@click.option(
    "--resolution",
    default=None,
    metavar="WxH",
    help="Image size [family default: 512, 768 or 1024 square].",
)
@click.option(
    "--batch", default=1, show_default=True, type=click.IntRange(min=1), help="Images per run."
)
@click.option(
    "--no-bf16", "no_bf16", is_flag=True, help="The GPU has no bf16 (pre-Ampere): plan fp16/fp32."
)
@click.option(
    "--attention",
    type=click.Choice(["sdpa", "naive"]),
    default="sdpa",
    show_default=True,
    help="Attention kernel: PyTorch SDPA, or naive (materialises the score matrix).",
)
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON object on stdout (see docs/vram.md)."
)
@catalog_option
@click.pass_context
def plan_command(
    ctx: click.Context,
    checkpoint: str,
    loras: tuple[str, ...],
    vae: str | None,
    embeddings: tuple[str, ...],
    controlnets: tuple[str, ...],
    text_encoders: tuple[str, ...],
    vram: str | None,
    resolution: str | None,
    batch: int,
    no_bf16: bool,
    attention: str,
    as_json: bool,
) -> int:
    """Choose dtype, offload, VAE tiling/slicing and attention slicing so the set fits --vram.

    Prints the expected peak VRAM of text encoding, denoising and decode, and why each choice
    was made; or says it cannot fit and what would. Formula and sources: docs/vram.md.

    Exit codes: 0 a plan fits, 1 nothing fits the budget, 2 bad input or unreadable file.
    """
    from modelsafe.runtime.plan import plan
    from modelsafe.runtime.resolve import open_catalog_if_present

    catalog = open_catalog_if_present((ctx.find_root().obj or {}).get("catalog"))
    try:
        result = plan(
            checkpoint,
            vram=vram,
            resolution=resolution,
            batch=batch,
            loras=loras,
            vae=vae,
            embeddings=embeddings,
            controlnets=controlnets,
            text_encoders=text_encoders,
            catalog=catalog,
            bf16=not no_bf16,
            attention=attention,
        )
    finally:
        if catalog is not None:
            catalog.close()
    if as_json:
        emit_json(result.as_json())
    else:
        _print(result)
    return 0 if result.fits else 1


def _print(p: Any) -> None:
    from modelsafe.units import format_size

    head = "fits" if p.fits else "does NOT fit"
    click.secho(
        f"{p.width}x{p.height}, batch {p.batch}: peak {format_size(p.peak)} {head} "
        f"{format_size(p.budget)}",
        fg="green" if p.fits else "red",
        bold=True,
    )
    for ph in p.phases:
        click.echo(
            f"  {ph.name:14} peak {format_size(ph.peak):>10}  = weights {format_size(ph.weights)}"
            f" + activations {format_size(ph.activations)} + context {format_size(ph.overhead)}"
        )
    click.echo("choices:")
    for c in p.choices:
        click.echo(printable(f"  {c.name:18} {c.value:10} {c.why}"))
    for s in p.suggestions:
        click.echo(printable(f"  would fit: {s}"))
    for n in p.notes:
        click.echo(printable(f"  note: {n}"))
    rejected = [x for x in (p.resolve or {}).get("parts", []) if x["status"] == "rejected"]
    for x in rejected:
        click.secho(printable(f"  left out (rejected by resolve): {x['ref']}"), fg="yellow")
