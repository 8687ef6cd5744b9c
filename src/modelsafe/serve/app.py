"""The ASGI app: state (catalog, job queue, token), error mapping, and the two routers."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from modelsafe.errors import ModelNotFoundError, ModelsafeError, UnsafeFileError, UsageError

if TYPE_CHECKING:
    from modelsafe.registry.catalog import Catalog
    from modelsafe.runtime.jobs import JobQueue

log = logging.getLogger("modelsafe.serve")
HERE = Path(__file__).parent
# Swagger UI for /docs, served from static/swagger-ui/ (swagger-ui-dist, see its README.txt) rather
# than FastAPI's default CDN, so the docs page works on a machine without internet access.
SWAGGER_UI_VERSION = "5.36.0"
SWAGGER_UI_STATIC = "/static/swagger-ui"


class NotFoundError(ModelNotFoundError):
    """An id the API does not know (HTTP 404)."""


class InvalidSpecError(UsageError):
    """A job spec the job module refuses (HTTP 422, like any invalid field)."""

    http_status = 422


def status_of(exc: ModelsafeError) -> int:
    """The HTTP status a modelsafe error becomes: 404 unknown, 401 auth, 503 queue, else 4xx."""
    from modelsafe.runtime.jobs import JobNotFoundError, QueueError
    from modelsafe.serve.security import AuthError

    if isinstance(exc, ModelNotFoundError | JobNotFoundError):
        return 404
    if isinstance(exc, AuthError):
        return 401
    if isinstance(exc, QueueError):
        return 503
    if isinstance(exc, UnsafeFileError):
        return 409
    return int(getattr(exc, "http_status", 400))


def error_body(reason: str, hint: str = "", **extra: Any) -> dict[str, Any]:
    return {"error": reason, "hint": hint, **extra}


class AppState:
    """What the endpoints share: the catalog, the job queue (opened on first use), settings."""

    def __init__(
        self, catalog_url: str, queue: JobQueue | None, outputs: Path, vram: int | None
    ) -> None:
        from modelsafe.registry.catalog import open_catalog

        self.catalog_url = catalog_url
        self.catalog: Catalog = open_catalog(catalog_url)
        self.outputs = outputs
        self.vram = vram
        self._queue = queue
        self._own_queue = queue is None
        self._lock = threading.Lock()

    def queue(self) -> JobQueue:
        with self._lock:
            if self._queue is None:
                from modelsafe.runtime.jobs import open_queue

                self._queue = open_queue(
                    None, self.catalog_url, outputs=self.outputs, vram=self.vram
                )
            return self._queue

    def close(self) -> None:
        if self._own_queue and self._queue is not None:
            self._queue.close()
        self.catalog.close()


def create_app(
    catalog_url: str,
    *,
    queue: JobQueue | None = None,
    token: str | None = None,
    outputs: Path | str = Path("outputs"),
    vram: int | None = None,
    allowed_hosts: Sequence[str] | None = None,
) -> FastAPI:
    """The modelsafe HTTP app over ``catalog_url`` (opened and migrated now).

    ``queue``: where jobs go (None: an in-process queue started on the first job, images under
    ``outputs``); ``token``: the bearer token writes need (None: writes are open, for loopback);
    ``allowed_hosts``: Host header values accepted (set by ``modelsafe serve`` on loopback, so a
    web page elsewhere cannot reach the API through DNS rebinding).
    """
    from modelsafe.serve.api import router as api_router
    from modelsafe.serve.pages import router as page_router

    state = AppState(catalog_url, queue, Path(outputs), vram)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            state.close()

    app = FastAPI(
        title="modelsafe",
        summary="The model catalog, compatibility, VRAM plans and generation jobs over HTTP.",
        version=_version(),
        lifespan=lifespan,
        # /docs is our own route (local assets); ReDoc (CDN and Google Fonts only) is off.
        docs_url=None,
        redoc_url=None,
    )
    app.state.ms = state
    app.state.token = token or None
    from modelsafe.serve.security import BodyGuardMiddleware

    app.add_middleware(BodyGuardMiddleware, token=token or None)
    if allowed_hosts:  # (added last: it runs first)
        from modelsafe.serve.security import HostCheckMiddleware

        app.add_middleware(HostCheckMiddleware, allowed=list(allowed_hosts))
    _install_error_handlers(app)
    app.include_router(api_router)
    app.include_router(page_router)
    _install_docs(app)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    return app


def _install_docs(app: FastAPI) -> None:
    """/docs: FastAPI's Swagger UI page with its script, style and icon from /static/swagger-ui."""

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = str(request.scope.get("root_path", "")).rstrip("/")
        assets = root + SWAGGER_UI_STATIC
        return get_swagger_ui_html(
            openapi_url=root + str(app.openapi_url),
            title=f"{app.title} · API",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon-32x32.png",
            # No badge from the online validator (validator.swagger.io).
            swagger_ui_parameters={"validatorUrl": None},
        )


def _version() -> str:
    from modelsafe import __version__

    return str(__version__)


def _error_response(
    request: Request, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> Response:
    """JSON for the API (and any client that does not ask for HTML); a page for the web page."""
    wants_page = not request.url.path.startswith("/api") and "text/html" in request.headers.get(
        "accept", ""
    )
    if wants_page:
        from modelsafe.serve.pages import templates

        return templates.TemplateResponse(
            request,
            "error.html",
            {"status": status, "error": body["error"], "hint": body.get("hint", "")},
            status_code=status,
            headers=headers,
        )
    return JSONResponse(body, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ModelsafeError)
    async def modelsafe_error(request: Request, exc: ModelsafeError) -> Response:
        status = status_of(exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return _error_response(request, status, error_body(exc.reason, exc.hint), headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        errors = list(exc.errors())
        first = errors[0] if errors else {}
        field = ".".join(str(p) for p in first.get("loc", ()))
        message = str(first.get("msg", "invalid request"))
        body = error_body(
            f"{field}: {message}" if field else message,
            "see /docs for the request schema",
            field=field,
            detail=[
                {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))}
                for e in errors
            ],
        )
        return _error_response(request, 422, body)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        reason = exc.detail if isinstance(exc.detail, str) else "request failed"
        return _error_response(
            request, exc.status_code, error_body(reason), getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(
            error_body(
                "internal error: the server could not answer this request",
                "the server log has the details; please report it",
            ),
            status_code=500,
        )
