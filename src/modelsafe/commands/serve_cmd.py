"""``modelsafe serve``: the HTTP API and the catalog web page (FastAPI on uvicorn)."""

from __future__ import annotations

from pathlib import Path

import click

from modelsafe.commands.catalog_option import catalog_option
from modelsafe.errors import ModelsafeError


class ServeBindError(ModelsafeError):
    """The server cannot listen where it was asked to (exit code 1, as ``serve --help`` says)."""

    exit_code = 1


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True)
@click.option(
    "--broker",
    envvar="MODELSAFE_BROKER",
    default=None,
    metavar="URL",
    help="Redis URL: send jobs to `modelsafe worker`s [default: run them in this process].",
)
@click.option(
    "--outputs",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("outputs"),
    show_default=True,
    help="Folder in-process jobs write images to.",
)
@click.option(
    "--vram",
    default=None,
    metavar="SIZE",
    help="VRAM budget of in-process jobs, e.g. 8GiB (a bigger job is refused).",
)
@click.option(
    "--token",
    envvar="MODELSAFE_API_TOKEN",
    default=None,
    metavar="T",
    help="Bearer token writes and jobs need; required beyond loopback [env MODELSAFE_API_TOKEN].",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
@catalog_option
@click.pass_context
def serve(
    ctx: click.Context,
    host: str,
    port: int,
    broker: str | None,
    outputs: Path,
    vram: str | None,
    token: str | None,
    log_level: str,
) -> int:
    """Serve the HTTP API (/api, OpenAPI at /openapi.json, docs at /docs) and the web page (/).

    Reads are open to anyone who can connect; submitting jobs needs `Authorization: Bearer T`
    when a token is set. It listens on loopback by default and refuses another address without
    a token. See docs/deploy.md#http-api.

    Exit codes: 0 stopped, 1 the port cannot be bound, 2 bad options or catalog trouble.
    """
    from modelsafe.config import load_config
    from modelsafe.errors import UsageError
    from modelsafe.registry.catalog.db import catalog_url
    from modelsafe.serve.security import LOOPBACK_NAMES, check_bind, is_loopback

    check_bind(host, token)
    check_port(host, port)
    try:
        import uvicorn

        from modelsafe.serve import create_app
    except ImportError as exc:
        raise UsageError(
            f"modelsafe serve needs {exc.name}", hint="pip install 'modelsafe[serve]'"
        ) from None
    from modelsafe.units import parse_size

    root = ctx.find_root().obj or {}
    url = catalog_url(load_config({"catalog": root.get("catalog")}).catalog)
    queue = None
    if broker:
        from modelsafe.runtime.jobs import open_queue

        queue = open_queue(broker, url, outputs=outputs)
    allowed = None
    if is_loopback(host):  # a page elsewhere must not reach it by a rebound DNS name
        allowed = [*LOOPBACK_NAMES, host]  # (the address it is bound to: 127.0.0.2 ...)
    app = create_app(
        url,
        queue=queue,
        token=token,
        outputs=outputs,
        vram=parse_size(vram) if vram else None,
        allowed_hosts=allowed,
    )
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"modelsafe serve: http://{shown}:{port}/ (API docs at /docs)", err=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level)
    except SystemExit as exc:  # (uvicorn exits 1 or 3 when it cannot start: its log says why)
        if exc.code in (0, None):
            raise
        raise ServeBindError(
            f"the server could not start on {shown} port {port} (uvicorn's log above says why)",
            hint="fix what it names, or pass --port with another port",
        ) from None
    finally:
        if queue is not None:
            queue.close()
    return 0


def check_port(host: str, port: int) -> None:
    """Refuse, before anything starts, an address and port the server could not listen on:
    bound as uvicorn binds it (``SO_REUSEADDR``: a port left in TIME_WAIT is free)."""
    import errno
    import socket

    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    shown = f"[{host}]" if ":" in host else host
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except (socket.gaierror, UnicodeError) as exc:
            raise ServeBindError(
                f"cannot listen on {shown}: {getattr(exc, 'strerror', None) or exc}",
                hint="pass --host with an address or a name this machine resolves",
            ) from None
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ServeBindError(
                    f"port {port} on {shown} is in use",
                    hint="stop what listens there (ss -ltnp shows it; another modelsafe serve?), "
                    "or pass --port with another port",
                ) from None
            if exc.errno == errno.EACCES:
                raise ServeBindError(
                    f"port {port} on {shown} may not be used by this user ({exc.strerror})",
                    hint="ports below 1024 need privileges: pass --port 8765 or another above 1023",
                ) from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise ServeBindError(
                    f"{shown} is not an address of this machine ({exc.strerror})",
                    hint="pass --host with one of its addresses (127.0.0.1, 0.0.0.0 for all)",
                ) from None
            raise ServeBindError(
                f"cannot listen on {shown} port {port}: {exc.strerror or exc}",
                hint="pass --host/--port with another address or port",
            ) from None
