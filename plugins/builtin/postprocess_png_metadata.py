"""Built-in post-processor: put the recipe into the image's PNG text chunks.

``parameters`` holds the A1111/Civitai text block, ``modelsafe`` the recipe as JSON; the saver
writes every text entry of ``image.info`` as a PNG chunk. Marked ``trylast`` so it runs after
every other post-processor: one that returns a new image (framed, upscaled) still gets the
recipe.
"""

from __future__ import annotations

from typing import Any

from modelsafe.plugins.hookspecs import hookimpl


@hookimpl(trylast=True)
def modelsafe_postprocess(image: Any, recipe: Any, request: Any) -> Any | None:
    from modelsafe.runtime.recipe import png_text_chunks

    image.info.update(png_text_chunks(recipe))
    return image
