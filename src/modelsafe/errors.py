"""The error hierarchy: every failure modelsafe expects carries a reason and a hint.

The CLI maps these at one edge (``modelsafe.cli``) to a message, a hint and an exit code.
"""

from __future__ import annotations


class ModelsafeError(Exception):
    """Base of every error modelsafe raises on purpose.

    ``reason`` says what went wrong, ``hint`` what the user can do about it.
    ``exit_code`` is what the CLI exits with when this error ends a command.
    """

    exit_code = 2

    def __init__(self, reason: str, hint: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.hint = hint

    def __str__(self) -> str:
        return self.reason


class UsageError(ModelsafeError):
    """The command was called with arguments that cannot work."""

    exit_code = 2


class ConfigError(ModelsafeError):
    """The configuration file or an environment value is invalid."""

    exit_code = 2


class FileReadError(ModelsafeError):
    """A model file could not be read: missing, unreadable, truncated or malformed."""

    exit_code = 2


class UnsupportedFormatError(FileReadError):
    """No format reader recognises the file."""


class MalformedFileError(FileReadError):
    """The file claims a format but breaks its rules (bad header, offsets, lengths)."""


class UnsafeFileError(ModelsafeError):
    """The file would run code when loaded; modelsafe refuses to use it."""

    exit_code = 1


class CatalogError(ModelsafeError):
    """The catalog database cannot be opened, migrated or queried."""

    exit_code = 2


class ModelNotFoundError(CatalogError):
    """No catalog entry matches the given path, name or hash prefix."""


class PluginError(ModelsafeError):
    """A plugin is broken or returned something modelsafe cannot use."""

    exit_code = 2


class ConversionError(ModelsafeError):
    """A conversion failed; nothing was left at the destination."""

    exit_code = 2


class IncompatibleError(ModelsafeError):
    """Components cannot be used together."""

    exit_code = 1


class BackendError(ModelsafeError):
    """A generation backend could not run the request."""

    exit_code = 2
