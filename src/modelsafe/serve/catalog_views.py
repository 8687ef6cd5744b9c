"""Catalog questions the API and the web page share (each opens one session, returns JSON)."""

from __future__ import annotations

from datetime import UTC
from typing import TYPE_CHECKING, Any

from modelsafe.errors import UsageError
from modelsafe.types import to_jsonable

if TYPE_CHECKING:
    from modelsafe.registry.catalog import Catalog
    from modelsafe.registry.catalog.models import Output
    from modelsafe.runtime.jobs.store import JobInfo
    from modelsafe.serve.schemas import SetRequest


def jsonable(value: Any) -> Any:
    return to_jsonable(value)


def search_models(
    catalog: Catalog,
    *,
    family: str | None = None,
    kind: str | None = None,
    status: str | None = None,
    audit: str | None = None,
    q: str | None = None,
) -> list[dict[str, Any]]:
    """``model_json`` of every model matching all filters (``q``: text in its name or a path)."""
    from modelsafe.registry.catalog.queries import list_models, model_json

    with catalog.session() as session:
        rows = [
            model_json(m)
            for m in list_models(session, family=family, kind=kind, missing=status == "missing")
        ]
    if status in ("present", "error"):
        rows = [r for r in rows if r["status"] == status]
    if audit:
        rows = [r for r in rows if r["audit"] == audit]
    if q:
        needle = q.lower()
        rows = [
            r
            for r in rows
            if needle in r["name"].lower() or any(needle in p.lower() for p in r["paths"])
        ]
    return rows


def _not_found(what: str, ident: object) -> Exception:
    from modelsafe.serve.app import NotFoundError

    return NotFoundError(f"no {what} has the id {ident}", hint=f"list them at /api/{what}s")


def model_detail(catalog: Catalog, model_id: int) -> dict[str, Any]:
    """``model_json(full=True)``: facts, hashes, locations, evidence, audit verdict/findings."""
    from modelsafe.registry.catalog.models import Model
    from modelsafe.registry.catalog.queries import model_json

    with catalog.session() as session:
        model = session.get(Model, model_id)
        if model is None:
            raise _not_found("model", model_id)
        value: dict[str, Any] = jsonable(model_json(model, full=True))
        return value


def compatible_addons(
    catalog: Catalog, model_id: int, kind: str | None, *, include_rejected: bool = False
) -> list[dict[str, Any]]:
    """What ``modelsafe ls --compatible-with`` lists, for the model with ``model_id``."""
    from modelsafe.registry.catalog.models import Model
    from modelsafe.runtime.resolve import BASE_KINDS, compatible_models

    with catalog.session() as session:  # closed before compatible_models opens its own
        model = session.get(Model, model_id)
        if model is None:
            raise _not_found("model", model_id)
        if model.kind not in BASE_KINDS:
            raise UsageError(
                f"{model.name} is a {model.kind}; add-ons are checked against a checkpoint",
                hint=f"use a model of kind {', '.join(BASE_KINDS)}",
            )
        key = model.sha256 or model.content_id
    if not key:
        return []
    fits = compatible_models(catalog, key, kind, include_rejected=include_rejected)
    return [
        {"model": f.model, "status": f.status, "reasons": jsonable(list(f.reasons))} for f in fits
    ]


def _canonical(catalog: Catalog, ref: str) -> str:
    """The catalog model ``ref`` names, as a hash the runtime finds it by (never a new path)."""
    from modelsafe.registry.catalog.queries import find_model

    with catalog.session() as session:
        model = find_model(session, ref)
        key = model.sha256 or model.content_id
        if not key:
            raise UsageError(
                f"{model.name} has no hash in the catalog (it could not be read)",
                hint="fix or re-scan the file",
            )
        return key


def catalog_refs(catalog: Catalog, body: SetRequest) -> dict[str, Any]:
    """Every ref of a set request mapped to its catalog model (404 for one the catalog lacks)."""

    def one(ref: str | None) -> str | None:
        return None if ref is None else _canonical(catalog, ref)

    return {
        "checkpoint": _canonical(catalog, body.checkpoint),
        "loras": [(_canonical(catalog, lo.ref), lo.weight) for lo in body.loras],
        "vae": one(body.vae),
        "embeddings": [_canonical(catalog, r) for r in body.embeddings],
        "controlnets": [_canonical(catalog, r) for r in body.controlnets],
        "text_encoders": [_canonical(catalog, r) for r in body.text_encoders],
    }


def restore_refs(value: Any, body: SetRequest, refs: dict[str, Any]) -> Any:
    """Show the refs the client sent (not the hashes they were looked up by) in an answer."""
    names: dict[str, str] = {refs["checkpoint"]: body.checkpoint}
    names.update({c: lo.ref for (c, _w), lo in zip(refs["loras"], body.loras, strict=True)})
    if body.vae is not None:
        names[refs["vae"]] = body.vae
    for key in ("embeddings", "controlnets", "text_encoders"):
        names.update(zip(refs[key], getattr(body, key), strict=True))

    def walk(item: Any) -> Any:
        if isinstance(item, dict):
            return {
                k: names.get(v, v) if k == "ref" and isinstance(v, str) else walk(v)
                for k, v in item.items()
            }
        if isinstance(item, list):
            return [walk(x) for x in item]
        return item

    return walk(value)


def output_json(row: Output) -> dict[str, Any]:
    from pathlib import Path

    return {
        "id": row.id,
        "sha256": row.sha256,
        "checkpoint_id": row.checkpoint_id,
        "created_at": row.created_at.isoformat() if row.created_at else None,
        "image_url": f"/api/outputs/{row.id}/image",
        "exists": Path(row.path).is_file(),
        "recipe": dict(row.recipe or {}),
    }


def list_outputs(catalog: Catalog, *, limit: int, offset: int) -> tuple[int, list[dict[str, Any]]]:
    from sqlalchemy import func, select

    from modelsafe.registry.catalog.models import Output

    with catalog.session() as session:
        total = int(session.scalar(select(func.count()).select_from(Output)) or 0)
        rows = session.scalars(
            select(Output).order_by(Output.id.desc()).limit(limit).offset(offset)
        )
        return total, [output_json(r) for r in rows]


def get_output(catalog: Catalog, output_id: int) -> Output:
    from modelsafe.registry.catalog.models import Output

    with catalog.session() as session:
        row = session.get(Output, output_id)
        if row is None:
            raise _not_found("output", output_id)
        session.expunge(row)
        return row


def job_row(job: JobInfo) -> dict[str, Any]:
    """One job as the jobs page shows it: its JSON plus the checkpoint's file name, the prompt
    cut to a line, the creation time in UTC to the second and how long it ran."""
    from pathlib import PurePath

    row = job.to_json()
    checkpoint = str(job.spec.get("checkpoint") or "-")
    prompt = " ".join(str(job.spec.get("prompt") or "").split())
    row["checkpoint"] = checkpoint
    row["checkpoint_name"] = PurePath(checkpoint).name or checkpoint
    row["prompt"] = prompt if len(prompt) <= 120 else prompt[:119] + "…"
    row["created"] = job.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    took = None
    if job.started_at is not None and job.finished_at is not None:
        took = f"{(job.finished_at - job.started_at).total_seconds():.1f} s"
    row["took"] = took
    return row
