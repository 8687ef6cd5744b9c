"""An example plugin whose detector raises: it is recorded and skipped."""

from modelsafe.plugins.hookspecs import hookimpl


@hookimpl
def modelsafe_identify(index):  # type: ignore[no-untyped-def]
    raise ZeroDivisionError("bug in a third-party detector")
