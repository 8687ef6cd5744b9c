"""``modelsafe show``: everything the catalog knows about one model."""

from __future__ import annotations

from typing import Any

import click

from modelsafe.commands.catalog_option import catalog_option
from modelsafe.output import emit_json, printable


@click.command()
@click.argument("model")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@catalog_option
@click.pass_context
def show(ctx: click.Context, model: str, as_json: bool) -> int:
    """Show MODEL (a path, a hash prefix of 6+ hex digits, or a name) from the catalog:
    identity (with overrides marked), hashes, every location with its own audit, audit
    findings and evidence. A model is as unsafe as the worst of its copies on disk.

    Exit codes: 0 shown, 2 no model (or more than one) matches, or the catalog cannot be read.
    """
    from modelsafe.commands.catalog_option import open_cli_catalog
    from modelsafe.registry.catalog import queries

    catalog = open_cli_catalog(ctx)
    try:
        with catalog.session() as session:
            value = queries.model_json(queries.find_model(session, model), full=True)
    finally:
        catalog.close()
    if as_json:
        emit_json(value)
    else:
        _print(value)
    return 0


def _print(m: dict[str, Any]) -> None:
    from modelsafe.units import format_count, format_size

    def line(label: str, text: object) -> None:
        click.echo(printable(f"  {label:16}{text}"))

    click.echo(printable(f"{m['name']}  [{m['status']}]"))
    detected = m.get("detected") or {}
    for name in ("family", "kind", "variant", "prediction_type"):
        label = name.replace("_", " ")
        if name in m["overrides"]:
            line(label, f"{m[name]}  (override; detected {detected.get(name)})")
        elif m[name]:
            line(label, m[name])
    line("format", m["format"])
    if m["parameter_count"]:
        line(
            "weights",
            f"{format_count(m['parameter_count'])} parameters, "
            f"{format_size(m['weight_bytes'] or 0)}, {m['tensor_count']} tensors, "
            f"precision {m['precision']}",
        )
    if m["confidence"] is not None:
        line("confidence", f"{m['confidence']:.2f}")
    if m["note"]:
        line("note", m["note"])
    audit = m.get("audit_verdict") or {}
    unsafe_paths = m.get("unsafe_paths") or []
    on_disk = [loc for loc in m["locations"] if loc["status"] != "missing"]
    mixed = bool(unsafe_paths) and len(on_disk) > len(unsafe_paths)
    if mixed:
        # One content, several files: say which of them would run code (findings: per location).
        line("audit", f"{m['audit']}: {', '.join(unsafe_paths)} (see each location)")
    else:
        line("audit", m["audit"] or "-")
        for f in audit.get("findings") or []:
            where = f" at {f['location']}" if f.get("location") else ""
            line("", f"{f['severity']}: {f['message']}{where}")
    if m.get("error"):
        line("error", m["error"])
    for name, value in (m.get("hashes") or {}).items():
        if value:
            line(name, value)
    inspect = m.get("inspect") or {}
    for ev in inspect.get("evidence") or []:
        line("evidence", ev)
    civitai = (inspect.get("facts") or {}).get("civitai")
    if civitai:
        from modelsafe.registry.sidecars import civitai_line

        line("civitai", civitai_line(civitai))
    for cand in (inspect.get("candidates") or [])[:3]:
        line("not", f"{cand['family']}/{cand['kind']} ({cand['score']:.2f})")
    vram = inspect.get("vram") or {}
    sizes = ", ".join(f"{k} {format_size(v)}" for k, v in vram.items() if isinstance(v, int))
    if sizes:
        line("vram", sizes)
    for loc in m["locations"]:
        audited = f", audit {loc['audit']}" if loc.get("audit") else ""
        line(
            "location",
            f"{loc['path']}  [{loc['status']}, {format_size(loc['size'])}{audited}]",
        )
        said = set()
        if mixed and loc.get("audit") not in (None, "safe"):
            for f in loc.get("findings") or []:
                said.add(f"{f['severity']}: {f['message']}")
                where = f" at {f['location']}" if f.get("location") else ""
                line("", f"{f['severity']}: {f['message']}{where}")
        if loc.get("error"):
            line("", f"error: {loc['error']}")
        for w in loc.get("warnings") or []:
            if w not in said:  # (a reader repeats audit findings as warnings)
                line("", f"warning: {w}")
        if loc.get("hf_repo"):
            line("", f"hf: {loc['hf_repo']}@{loc['hf_revision'][:12]} {loc['hf_refs']}")
