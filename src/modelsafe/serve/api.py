"""The JSON endpoints under ``/api``: catalog reads, resolve, plan, jobs and outputs.

Reads are open; ``POST /api/jobs`` and ``POST /api/jobs/{id}/cancel`` need the bearer token when
the server has one. Refs given to
resolve/plan must name catalog models, so the API never opens a file the catalog does not list.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse

from modelsafe.errors import UsageError
from modelsafe.serve import catalog_views as views
from modelsafe.serve.app import AppState, InvalidSpecError, NotFoundError
from modelsafe.serve.schemas import (
    CompatibleItem,
    ErrorBody,
    Job,
    JobSpec,
    JobStatus,
    ModelPage,
    OutputItem,
    OutputPage,
    PlanRequest,
    SetRequest,
)
from modelsafe.serve.security import require_token

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": what}
    for code, what in (
        (400, "Bad request: the reason and a hint"),
        (404, "Unknown id or ref"),
        (422, "Invalid field (named in `field`)"),
        (500, "Unexpected server error (logged; no traceback is sent)"),
    )
}
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    401: {"model": ErrorBody, "description": "Missing or wrong bearer token"},
    403: {"model": ErrorBody, "description": "A browser request from another site (Origin)"},
    503: {"model": ErrorBody, "description": "The job queue cannot be reached"},
}
SUBMIT_ERRORS: dict[int | str, dict[str, Any]] = {
    **WRITE_ERRORS,
    422: {
        "model": ErrorBody,
        "description": "Invalid field (named in `field`), a job too big for the memory that "
        "would run it, or one generate would refuse before loading (an inpainting/edit "
        "checkpoint, a scheduler the model cannot use, a LoRA that does not fit): reason and hint",
    },
}
CANCEL_ERRORS: dict[int | str, dict[str, Any]] = {
    **WRITE_ERRORS,
    409: {"model": ErrorBody, "description": "The job is already done or failed"},
}

router = APIRouter(prefix="/api", responses=ERRORS)

Status = Literal["present", "missing", "error"]
Audit = Literal["safe", "unsafe", "error"]
# Catalog ids are 32-bit integers (PostgreSQL INTEGER): larger ones are simply unknown.
RowId = Annotated[int, PathParam(ge=1, le=2**31 - 1)]


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.ms
    return state


@router.get("/models", response_model=ModelPage, tags=["catalog"])
def list_models(
    request: Request,
    family: Annotated[str | None, Query(max_length=40, description="sd1, sdxl, flux1, ...")] = None,
    kind: Annotated[
        str | None, Query(max_length=40, description="checkpoint, lora, vae, ...")
    ] = None,
    status: Annotated[
        Status | None, Query(description="present (default: present + error)")
    ] = None,
    audit: Annotated[Audit | None, Query(description="safe, unsafe or error")] = None,
    q: Annotated[
        str | None, Query(max_length=200, description="Text in the name or a path")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> dict[str, Any]:
    """Models in the catalog, filtered; ``total`` counts all matches."""
    rows = views.search_models(
        _state(request).catalog, family=family, kind=kind, status=status, audit=audit, q=q
    )
    return {"total": len(rows), "limit": limit, "offset": offset, "items": rows[offset:][:limit]}


@router.get("/models/{model_id}", tags=["catalog"])
def show_model(request: Request, model_id: RowId) -> dict[str, Any]:
    """One model: facts, all hashes, locations, identification evidence, audit verdict."""
    return views.model_detail(_state(request).catalog, model_id)


@router.get("/models/{model_id}/compatible", response_model=list[CompatibleItem], tags=["catalog"])
def compatible(
    request: Request,
    model_id: RowId,
    kind: Annotated[str | None, Query(max_length=40, description="Only this add-on kind")] = None,
    include_rejected: bool = False,
) -> list[dict[str, Any]]:
    """Catalog add-ons that fit this checkpoint, with the rules' reasons (no file is read)."""
    return views.compatible_addons(
        _state(request).catalog, model_id, kind, include_rejected=include_rejected
    )


@router.post("/resolve", tags=["runtime"])
def resolve_set(request: Request, body: SetRequest) -> dict[str, Any]:
    """Check every part of a set against the checkpoint: accepted/rejected with reasons."""
    from modelsafe.runtime.resolve import resolve

    catalog = _state(request).catalog
    refs = views.catalog_refs(catalog, body)
    result = resolve(
        refs["checkpoint"],
        loras=refs["loras"],
        vae=refs["vae"],
        embeddings=refs["embeddings"],
        controlnets=refs["controlnets"],
        text_encoders=refs["text_encoders"],
        catalog=catalog,
    )
    value: dict[str, Any] = views.restore_refs(result.as_json(), body, refs)
    return value


@router.post("/plan", tags=["runtime"])
def plan_set(request: Request, body: PlanRequest) -> dict[str, Any]:
    """Plan the set for a VRAM budget: dtype, offload, tiling, slicing, expected peak."""
    from modelsafe.runtime.plan import plan

    catalog = _state(request).catalog
    refs = views.catalog_refs(catalog, body)
    width = body.width or body.height
    height = body.height or body.width
    result = plan(
        refs["checkpoint"],
        vram=body.vram,
        resolution=(width, height) if width and height else None,
        batch=body.batch,
        loras=refs["loras"],
        vae=refs["vae"],
        embeddings=refs["embeddings"],
        controlnets=refs["controlnets"],
        text_encoders=refs["text_encoders"],
        catalog=catalog,
        bf16=body.bf16,
        attention=body.attention,
    )
    value: dict[str, Any] = views.restore_refs(views.jsonable(result.as_json()), body, refs)
    return value


@router.post(
    "/jobs",
    response_model=Job,
    status_code=201,
    tags=["jobs"],
    dependencies=[Depends(require_token)],
    responses=SUBMIT_ERRORS,
)
def submit(request: Request, spec: JobSpec) -> dict[str, Any]:
    """Queue a generation job; poll ``GET /api/jobs/{id}`` until ``done`` or ``failed``.

    ``422`` (nothing queued) for a job too big for what would run it: the server's ``--vram``
    budget, every worker tier, or, on a server without ``--vram`` running jobs itself, the
    memory of this machine for the job's unplanned fp32 run."""
    from modelsafe.runtime.jobs import submit_job, validate_spec

    state = _state(request)
    raw = spec.model_dump(exclude_none=True)
    try:
        checked = validate_spec(raw)
    except UsageError as exc:
        raise InvalidSpecError(exc.reason, exc.hint) from None
    job = submit_job(state.catalog, checked, state.queue())
    return job.to_json()


@router.get("/jobs", response_model=list[Job], tags=["jobs"])
def jobs(
    request: Request,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    """The newest jobs, optionally only those with ``status``."""
    from modelsafe.runtime.jobs import list_jobs

    return [j.to_json() for j in list_jobs(_state(request).catalog, status=status, limit=limit)]


@router.get("/jobs/{job_id}", response_model=Job, tags=["jobs"])
def job(request: Request, job_id: Annotated[str, PathParam(max_length=64)]) -> dict[str, Any]:
    """One job: status, spec, error (reason + hint) and the ids of its outputs."""
    from modelsafe.runtime.jobs import get_job

    return get_job(_state(request).catalog, job_id).to_json()


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=Job,
    tags=["jobs"],
    dependencies=[Depends(require_token)],
    responses=CANCEL_ERRORS,
)
def cancel(request: Request, job_id: Annotated[str, PathParam(max_length=64)]) -> dict[str, Any]:
    """Cancel a job. A queued job becomes ``cancelled`` and never starts. A running one becomes
    ``cancelling``: its worker stops at its next diffusion step, deletes the images of that
    attempt and marks it ``cancelled``. A second cancel answers the job as it is; a done or
    failed job is ``409``. The job keeps who cancelled it and when (``cancelled_by``,
    ``cancelled_at``)."""
    from modelsafe.runtime.jobs import cancel_job

    client = request.client.host if request.client is not None else "unknown"
    return cancel_job(_state(request).catalog, job_id, by=f"API client {client}").to_json()


@router.get("/outputs", response_model=OutputPage, tags=["outputs"])
def outputs(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> dict[str, Any]:
    """Generated images, newest first, each with its full recipe."""
    total, items = views.list_outputs(_state(request).catalog, limit=limit, offset=offset)
    return {"total": total, "limit": limit, "offset": offset, "items": items}


@router.get("/outputs/{output_id}", response_model=OutputItem, tags=["outputs"])
def output(request: Request, output_id: RowId) -> dict[str, Any]:
    """One generated image's record and recipe."""
    return views.output_json(views.get_output(_state(request).catalog, output_id))


@router.get(
    "/outputs/{output_id}/image",
    tags=["outputs"],
    response_class=FileResponse,
    responses={200: {"content": {"image/png": {}}, "description": "The PNG"}},
)
def output_image(request: Request, output_id: RowId) -> FileResponse:
    """The image file, read only from the path the catalog recorded for this output."""
    row = views.get_output(_state(request).catalog, output_id)
    path = Path(row.path)
    if not path.is_file():
        raise NotFoundError(
            f"output {output_id}'s image is no longer at {path}",
            hint="it was moved or deleted after generation",
        )
    # Only what modelsafe writes is served: a PNG file, not a link. A row or a file in the
    # outputs folder changed by someone else must not turn this route into a file reader.
    if path.suffix.lower() != ".png" or path.is_symlink() or not _is_png(path):
        raise NotFoundError(
            f"output {output_id}'s file is not a PNG image modelsafe wrote; it is not served",
            hint="the catalog row or the file was changed after generation",
        )
    return FileResponse(path, media_type="image/png")


def _is_png(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(8) == b"\x89PNG\r\n\x1a\n"
    except OSError:
        return False
