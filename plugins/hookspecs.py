"""Every hook a modelsafe plugin can implement.

A plugin is a module (or object) with functions named like the specs below, decorated with
``modelsafe.hookimpl``. Built-in plugins live in ``modelsafe.plugins.builtin`` and register through
the ``modelsafe`` entry-point group exactly like third-party packages.

``HOOKSPEC_VERSION`` changes its major number when a spec changes incompatibly; a plugin may declare
``MODELSAFE_HOOKSPEC = ">=1,<2"`` (a version range) and is skipped, with a reason, outside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import pluggy

from modelsafe.types import Candidate, Compatibility, Finding, Part, TensorIndex

HOOKSPEC_VERSION = "1.1"

hookspec = pluggy.HookspecMarker("modelsafe")
hookimpl = pluggy.HookimplMarker("modelsafe")


class Hasher(Protocol):
    """One hash algorithm fed by the single streaming pass over a file.

    An optional ``cost`` attribute (CPU per byte relative to SHA-256 = 1.0) lets the pass put
    expensive hashers on different cores; without it a default is assumed. An optional
    ``extra_hexdigests()`` returns further named values the same object computed (the built-in
    sha256 hasher of a safetensors file also gives ``autov3``); a name another hasher already
    gave keeps that value.
    """

    name: str

    def update(self, offset: int, data: bytes | memoryview) -> None:
        """Feed the chunk that starts at byte ``offset`` of the file (chunks arrive in order).

        ``data`` may be a view of a buffer the pass reuses: copy whatever must outlive the call.
        """

    def hexdigest(self) -> str | None:
        """The result, or None when it does not apply to this file (e.g. AutoV3 of a pickle)."""


@hookspec(firstresult=True)
def modelsafe_read_index(path: Path, head: bytes, fmt: str) -> TensorIndex | None:
    """Called to read a file's (or folder's) tensor table from headers only.

    ``head`` is the file's first 4 KiB (empty for a folder) and ``fmt`` the format sniffed from it.
    Return a TensorIndex when the file is this reader's format, None to let another reader try;
    raise a ``MalformedFileError`` when it is this format but broken.
    """


@hookspec
def modelsafe_model_extensions() -> list[str] | None:
    """Called when a scan starts; return the file name extensions (``[".onnx"]``: lower case,
    with the dot) of model files in this plugin's format, so that ``scan`` finds them beside the
    built-in ones (``.safetensors``, ``.ckpt``, ...). ``inspect``, ``audit`` and ``resolve`` take
    any path and do not need this.
    """


@hookspec
def modelsafe_identify(index: TensorIndex) -> list[Candidate] | Candidate | None:
    """Called for every index read; return what this detector thinks the model is.

    Each Candidate carries a score (0..1) and the evidence (tensor names, shapes, metadata) that
    decided it. The highest score wins; near ties are reported as ambiguous.
    """


@hookspec
def modelsafe_hashers(index: TensorIndex | None) -> list[Hasher] | None:
    """Called before hashing a file; return fresh Hasher objects to feed in the one read pass.

    ``index`` is the file's tensor table when it could be read (hashers such as AutoV3 and
    content_id need it), else None.
    """


@hookspec
def modelsafe_audit(path: Path, head: bytes, fmt: str) -> list[Finding] | None:
    """Called to audit a file without executing anything in it.

    Return a (possibly empty) list of findings when this scanner handles ``fmt``, None when it
    does not. A finding of severity ``unsafe`` makes the verdict unsafe; ``error`` makes it error.
    """


@hookspec
def modelsafe_backends() -> list[Any] | None:
    """Called to list generation backends: objects with ``name`` and ``generate(request, ...)``."""


@hookspec
def modelsafe_postprocess(image: Any, recipe: Any, request: Any) -> Any | None:
    """Called on each generated image in turn; return a replacement image, or None to keep it."""


@hookspec(firstresult=True)
def modelsafe_estimate_vram(
    index: TensorIndex, family: str, kind: str, facts: dict[str, Any]
) -> dict[str, Any] | None:
    """Called to size a model's weights in VRAM per component and precision; first answer wins."""


@hookspec
def modelsafe_check_compatibility(base: Part, part: Part) -> list[Compatibility] | None:
    """Called for each part of a set against its base; return accept/reject/warn results."""


def hook_names() -> list[str]:
    """Names of every hook specified in this module."""
    return sorted(name for name in globals() if name.startswith("modelsafe_"))
