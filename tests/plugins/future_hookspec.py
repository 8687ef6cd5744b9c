"""An example plugin written for a future hookspec major version."""

from modelsafe.plugins.hookspecs import hookimpl

MODELSAFE_HOOKSPEC = ">=2,<3"


@hookimpl
def modelsafe_identify(index):  # type: ignore[no-untyped-def]
    raise AssertionError("must never be called: the hookspec range does not match")
