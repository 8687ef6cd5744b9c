"""Find generation backends through the ``modelsafe_backends`` plugin hook."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from modelsafe.errors import BackendError

if TYPE_CHECKING:
    from modelsafe.plugin_manager import ModelsafePluginManager
    from modelsafe.runtime.generate import GenerateRequest

DEFAULT_BACKEND = "diffusers"

Progress = Callable[[int, int], None]


@runtime_checkable
class Backend(Protocol):
    """What a backend plugin returns from ``modelsafe_backends``.

    Optional: ``check(request) -> None``, called before the plan and any load; it raises a
    ModelsafeError for inputs the backend cannot use (a VAE of another latent width, a LoRA kind
    it cannot apply), so a user mistake is named before minutes of loading. Not part of the
    protocol, so backends without it still qualify. Any other exception from ``check`` or
    ``generate`` becomes a BackendError naming the backend (exit 2).

    While ``generate`` runs, a backend may call ``modelsafe.runtime.generate.warn(message)``
    (a warning shown as it happens and kept in the result) and
    ``modelsafe.runtime.generate.record_sampling(info)`` (how it sampled: scheduler, noise
    schedule, prediction type, sigmas; kept in each image's recipe as ``extra["sampling"]``).
    ``progress(step, total)`` is always a callable.
    """

    name: str

    def generate(self, request: GenerateRequest, progress: Progress | None = None) -> list[Any]:
        """One PIL image per seed of ``request.image_seeds()``, in order."""


def available_backends(pm: ModelsafePluginManager | None = None) -> dict[str, tuple[str, Backend]]:
    """Backend name -> (plugin name, backend), first registered wins on a name clash."""
    from modelsafe.plugin_manager import get_plugin_manager

    pm = pm or get_plugin_manager()
    found: dict[str, tuple[str, Backend]] = {}
    for plugin, result in pm.call_each("modelsafe_backends"):
        for backend in result if isinstance(result, (list, tuple)) else [result]:
            if not isinstance(backend, Backend) or not isinstance(backend.name, str):
                pm.record_failure(
                    plugin,
                    "modelsafe_backends",
                    f"returned {type(backend).__name__}, not a backend (a `name` and a "
                    "`generate(request, progress)`): ignored",
                )
            elif backend.name not in found:
                found[backend.name] = (plugin, backend)
    return found


def get_backend(name: str = DEFAULT_BACKEND, pm: ModelsafePluginManager | None = None) -> Backend:
    """The backend called ``name``; a clear error lists the ones there are."""
    from modelsafe.plugin_manager import get_plugin_manager

    found = available_backends(pm)
    if name in found:
        return found[name][1]
    names = ", ".join(sorted(found)) or "none"
    pm = pm or get_plugin_manager()
    why = "".join(f"; {f.message()}" for f in pm.failures_in("modelsafe_backends")[:3])
    raise BackendError(
        f"no generation backend called {name!r} (available: {names}){why}",
        hint="install the plugin that provides it, or check `modelsafe plugins` for broken ones",
    )
