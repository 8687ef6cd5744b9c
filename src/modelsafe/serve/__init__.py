"""``modelsafe serve``: the HTTP API (OpenAPI at ``/openapi.json``) and the catalog web page.

FastAPI, uvicorn and Jinja2 are imported only here (the ``serve`` extra), never by the CLI's
start-up. :func:`create_app` builds the ASGI app; docs/deploy.md#http-api describes it.
"""

from modelsafe.serve.app import create_app

__all__ = ["create_app"]
