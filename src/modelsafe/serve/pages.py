"""The catalog web page: server-rendered HTML (Jinja2, autoescaped), no JavaScript build."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import jinja2
from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from modelsafe.errors import ModelsafeError
from modelsafe.serve import catalog_views as views
from modelsafe.serve.app import AppState

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"), autoescape=True
    )
)
RowId = Annotated[int, PathParam(ge=1, le=2**31 - 1)]


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.ms
    return state


def _size(value: Any) -> str:
    from modelsafe.units import format_size

    return format_size(int(value)) if isinstance(value, int) else "-"


templates.env.filters["size"] = _size


@router.get("/", response_class=HTMLResponse)
def index(
    request: Request,
    family: Annotated[str | None, Query(max_length=40)] = None,
    kind: Annotated[str | None, Query(max_length=40)] = None,
    audit: Annotated[str | None, Query(max_length=20)] = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
) -> HTMLResponse:
    catalog = _state(request).catalog
    every = views.search_models(catalog)
    rows = views.search_models(
        catalog, family=family or None, kind=kind or None, audit=audit or None, q=q or None
    )
    return templates.TemplateResponse(
        request,
        "index.html",
        {
            "models": rows,
            "families": sorted({m["family"] for m in every}),
            "kinds": sorted({m["kind"] for m in every}),
            "audits": sorted({m["audit"] for m in every if m["audit"]}),
            "selected": {"family": family, "kind": kind, "audit": audit, "q": q or ""},
            "total": len(every),
        },
    )


@router.get("/models/{model_id}", response_class=HTMLResponse)
def model_page(request: Request, model_id: RowId) -> HTMLResponse:
    catalog = _state(request).catalog
    model = views.model_detail(catalog, model_id)
    addons: list[dict[str, Any]] = []
    addon_note = ""
    try:
        addons = views.compatible_addons(catalog, model_id, None, include_rejected=True)
    except ModelsafeError as exc:
        addon_note = exc.reason
    inspect = model.get("inspect") or {}
    return templates.TemplateResponse(
        request,
        "model.html",
        {
            "m": model,
            "evidence": inspect.get("evidence") or [],
            "candidates": inspect.get("candidates") or [],
            "facts": inspect.get("facts") or {},
            "verdict": model.get("audit_verdict") or {},
            "addons": addons,
            "addon_note": addon_note,
        },
    )


@router.get("/gallery", response_class=HTMLResponse)
def gallery(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=500)] = 60,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> HTMLResponse:
    total, items = views.list_outputs(_state(request).catalog, limit=limit, offset=offset)
    return templates.TemplateResponse(request, "gallery.html", {"outputs": items, "total": total})


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(
    request: Request,
    status: Annotated[str | None, Query(max_length=20)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> HTMLResponse:
    from modelsafe.runtime.jobs import list_jobs
    from modelsafe.runtime.jobs.store import STATUSES

    found = list_jobs(_state(request).catalog, status=status or None, limit=limit)
    return templates.TemplateResponse(
        request,
        "jobs.html",
        {
            "jobs": [views.job_row(job) for job in found],
            "statuses": STATUSES,
            "selected": status or "",
            "limit": limit,
            "token_required": bool(request.app.state.token),
        },
    )
