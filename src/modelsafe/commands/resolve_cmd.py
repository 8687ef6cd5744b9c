"""``modelsafe resolve``: does this set work together? Every part accepted or rejected, with why."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from modelsafe.commands.catalog_option import catalog_option
from modelsafe.output import emit_json, printable


def set_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The parts of a set, shared by ``resolve`` and ``plan``."""
    options = [
        click.argument("checkpoint"),
        click.option(
            "--lora",
            "loras",
            multiple=True,
            metavar="PATH[:WEIGHT]",
            help="A LoRA/LyCORIS (path, catalog name or hash prefix), optional strength.",
        ),
        click.option(
            "--vae", default=None, metavar="PATH", help="A VAE to use instead of the built-in one."
        ),
        click.option(
            "--embedding",
            "embeddings",
            multiple=True,
            metavar="PATH",
            help="A textual-inversion embedding.",
        ),
        click.option(
            "--controlnet",
            "controlnets",
            multiple=True,
            metavar="PATH",
            help="A ControlNet / T2I-Adapter.",
        ),
        click.option(
            "--text-encoder",
            "text_encoders",
            multiple=True,
            metavar="PATH",
            help="A text encoder (clip_l, clip_g, t5xxl).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.command("resolve")
@set_options
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON object on stdout (see docs/resolve.md)."
)
@catalog_option
@click.pass_context
def resolve_command(
    ctx: click.Context,
    checkpoint: str,
    loras: tuple[str, ...],
    vae: str | None,
    embeddings: tuple[str, ...],
    controlnets: tuple[str, ...],
    text_encoders: tuple[str, ...],
    as_json: bool,
) -> int:
    """Check LoRAs, VAE, embeddings, ControlNets and text encoders against CHECKPOINT.

    Each argument is a path, or a catalog name or hash prefix (after `modelsafe scan`). LoRA keys
    are mapped onto the checkpoint's layers and their coverage reported; parts the family needs
    but the set lacks (Flux: t5xxl + clip_l + ae) are named, with catalog candidates.

    Exit codes: 0 every part fits and nothing is missing, 1 something is rejected or missing,
    2 a file cannot be read or found.
    """
    from modelsafe.runtime.resolve import open_catalog_if_present, resolve

    catalog = open_catalog_if_present((ctx.find_root().obj or {}).get("catalog"))
    try:
        result = resolve(
            checkpoint,
            loras=loras,
            vae=vae,
            embeddings=embeddings,
            controlnets=controlnets,
            text_encoders=text_encoders,
            catalog=catalog,
        )
    finally:
        if catalog is not None:
            catalog.close()
    if as_json:
        emit_json(result.as_json())
    else:
        print_result(result)
    return result.exit_code


_MARK = {"accept": "ok  ", "warn": "warn", "reject": "NO  "}
_COLOUR = {"accepted": "green", "rejected": "red", "unchecked": "yellow"}


def print_result(result: Any) -> None:
    """The verdict as text; refs, names and reasons (which quote file names) are shown with
    their control characters escaped, so no name can split a line or colour the terminal."""
    for part in (result.checkpoint, *result.parts):
        label = "/".join(x for x in (part.family, part.kind, part.variant) if x)
        weight = f" x{part.weight:g}" if part.weight is not None else ""
        click.secho(
            printable(f"{part.status:9} {part.role:12} {part.ref}{weight}  [{label}]"),
            fg=_COLOUR.get(part.status),
        )
        for r in part.reasons:
            click.echo(printable(f"            {_MARK.get(r.status, r.status)} {r.reason}"))
    for m in result.missing:
        click.secho(printable(f"missing   {m.kind:12} {m.slot}: {m.why}"), fg="red")
        for c in m.candidates:
            click.echo(printable(f"            candidate {c.name} ({c.ref}): {c.reason}"))
        if not m.candidates:
            click.echo("            no candidate in the catalog (scan a folder that has one)")
    verdict = "compatible" if result.compatible else "not compatible"
    click.secho(verdict, fg="green" if result.compatible else "red", bold=True)
