"""Built-in post-processor: upscale each image with the ESRGAN-family model the request names
(``modelsafe generate --upscale MODEL``).

Runs before the metadata writer (``tryfirst``) so the PNG chunks land on the upscaled image; the
recipe already names the upscaler, its hashes and scale. A failure is a BackendError, never a
silently skipped step: an image whose recipe says "upscaled" is upscaled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelsafe.plugins.hookspecs import hookimpl


@hookimpl(tryfirst=True)
def modelsafe_postprocess(image: Any, recipe: Any, request: Any) -> Any | None:
    upscale = getattr(request, "upscale", None)
    if upscale is None:
        return None
    from modelsafe.errors import BackendError, ModelsafeError
    from modelsafe.runtime.upscalers.select import upscale_image

    try:
        return upscale_image(image, Path(upscale), request.device, request.dtype)
    except ModelsafeError:
        raise
    except Exception as exc:  # noqa: BLE001 - reported as the upscaler's failure
        raise BackendError(
            f"upscaling with {Path(upscale).name} failed: {type(exc).__name__}: {exc}",
            hint="check the upscaler with `modelsafe inspect`",
        ) from exc
