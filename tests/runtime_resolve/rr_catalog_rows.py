"""Catalog rows for the resolve tests: models known by their stored facts, no file behind them."""

from __future__ import annotations

from typing import Any

from modelsafe.registry.catalog.models import Location, Model


def add_model(
    session: Any,
    name: str,
    family: str,
    kind: str,
    facts: dict[str, Any],
    *,
    variant: str | None = None,
    path: str = "",
    comps: dict[str, Any] | None = None,
    status: str = "present",
) -> Model:
    """A catalog row for a model of ``family``/``kind`` with these inspect ``facts``, and one
    location (``status`` present or missing), without any file."""
    sha = f"{abs(hash(name)):064x}"[:64]
    m = Model(
        content_key=sha,
        name=name,
        sha256=sha,
        autov2=sha[:10],
        format="safetensors",
        family=family,
        kind=kind,
        variant=variant,
        overrides={},
        details={
            "inspect": {
                "family": family,
                "kind": kind,
                "facts": facts,
                "vram": {"components": comps or {}},
            }
        },
    )
    session.add(m)
    session.add(
        Location(
            path=path or f"/nowhere/{name}.safetensors",
            size=1,
            mtime_ns=0,
            status=status,
            model=m,
        )
    )
    return m
