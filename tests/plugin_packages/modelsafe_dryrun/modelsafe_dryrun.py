"""Example third-party plugin: a ``dryrun`` generation backend.

``modelsafe generate --backend dryrun ...`` goes through every step a real run does (audit of
every input, identification, defaults, recipe, post-processors, catalog) but loads no weights:
each "image" is a flat grey picture of the requested size whose PNG carries, besides the usual
recipe, a ``modelsafe-dryrun`` JSON chunk with what a real backend would have been asked to do
(the settings and the run plan). Useful to check a set and its settings on a machine without a
GPU, in a second.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from modelsafe.plugins.hookspecs import hookimpl

MODELSAFE_HOOKSPEC = ">=1,<2"

CHUNK = "modelsafe-dryrun"


class DryRunBackend:
    name = "dryrun"

    def generate(
        self, request: Any, progress: Callable[[int, int], None] | None = None
    ) -> list[Any]:
        from PIL import Image

        steps = int(request.steps or 1)
        for step in range(1, steps + 1):
            if progress is not None:
                progress(step, steps)
        images = []
        for seed in request.image_seeds():
            image = Image.new("RGB", (int(request.width), int(request.height)), (128, 128, 128))
            image.info[CHUNK] = json.dumps(
                {
                    "backend": self.name,
                    "seed": seed,
                    "checkpoint": str(request.checkpoint),
                    "family": request.family,
                    "variant": request.variant,
                    "steps": steps,
                    "size": [request.width, request.height],
                    "loras": [[str(lo.path), lo.weight] for lo in request.loras],
                    "plan": dict(request.plan),
                },
                sort_keys=True,
            )
            images.append(image)
        return images


@hookimpl
def modelsafe_backends() -> list[Any]:
    return [DryRunBackend()]


__all__ = ["DryRunBackend", "modelsafe_backends"]
