"""Effective settings: CLI flags > environment > config file > defaults, each with its source."""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelsafe.errors import ConfigError, ModelsafeError
from modelsafe.paths import user_path
from modelsafe.units import SIZE_RULE, parse_size

DEFAULT_CATALOG = "catalog.db"

# setting name -> environment variable
ENV_VARS = {
    "catalog": "MODELSAFE_CATALOG",
    "model_roots": "MODELSAFE_MODEL_ROOTS",
    "vram": "MODELSAFE_VRAM",
}
DEFAULTS: dict[str, Any] = {"catalog": DEFAULT_CATALOG, "model_roots": [], "vram": None}


def user_dir() -> Path:
    """modelsafe's per-user folder (``MODELSAFE_HOME`` overrides the platform default)."""
    home = os.environ.get("MODELSAFE_HOME")
    if home:
        return Path(home)
    import click

    return Path(click.get_app_dir("modelsafe"))


def config_path() -> Path:
    """The TOML config file (``MODELSAFE_CONFIG`` overrides ``<user dir>/config.toml``)."""
    explicit = os.environ.get("MODELSAFE_CONFIG")
    return Path(explicit) if explicit else user_dir() / "config.toml"


@dataclass(frozen=True)
class Setting:
    name: str
    value: Any
    source: str  # "flag", "env MODELSAFE_X", "file /path", "default"


@dataclass(frozen=True)
class Config:
    settings: dict[str, Setting] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        return self.settings[name].value

    @property
    def catalog(self) -> str:
        return str(self["catalog"])

    @property
    def model_roots(self) -> list[str]:
        return list(self["model_roots"])

    @property
    def vram(self) -> int | None:
        value = self["vram"]
        return None if value is None else parse_size(value)


def _read_file(path: Path) -> dict[str, Any]:
    try:
        if not path.is_file():
            return {}
    except OSError as exc:  # e.g. HOME points at a folder this user may not enter
        raise ConfigError(
            f"cannot look for the config file {path}: {exc.strerror or exc}",
            hint="fix its folder's permissions, or point MODELSAFE_CONFIG at a readable file",
        ) from exc
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(
            f"cannot read config file {path}: {exc}",
            hint="fix the TOML syntax, or point MODELSAFE_CONFIG at another file",
        ) from exc
    unknown = sorted(set(data) - set(DEFAULTS))
    if unknown:
        raise ConfigError(
            f"unknown setting(s) in {path}: {', '.join(unknown)}",
            hint=f"known settings: {', '.join(sorted(DEFAULTS))}",
        )
    return data


def _validate(name: str, value: Any, source: str) -> Any:
    if name == "model_roots":
        if isinstance(value, str):
            value = [v for v in value.split(os.pathsep) if v]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(
                f"model_roots from {source} must be a list of folders",
                hint='write model_roots = ["/models", "~/ComfyUI/models"]',
            )
        return [str(user_path(v)) for v in value]
    if name == "vram" and value is not None:
        if not isinstance(value, str):
            # (a TOML number: `vram = 8` would be 8 bytes, `vram = true` no size at all)
            shown = json.dumps(value, default=str)
            raise ConfigError(
                f"vram from {source} must be a size with its unit, in quotes: {shown} is not one",
                hint=f'write vram = "8GiB" ({SIZE_RULE})',
            )
        try:
            parse_size(value)
        except ModelsafeError as exc:
            raise ConfigError(f"vram from {source}: {exc}", hint=exc.hint) from exc
        return value
    if name == "catalog" and not isinstance(value, str):
        raise ConfigError(f"catalog from {source} must be a string", hint="a path or a URL")
    return value


def load_config(flags: dict[str, Any] | None = None) -> Config:
    """Resolve every setting; ``flags`` holds values given on the command line (None = unset)."""
    flags = flags or {}
    path = config_path()
    from_file = _read_file(path)
    settings: dict[str, Setting] = {}
    for name, default in DEFAULTS.items():
        env = ENV_VARS[name]
        if flags.get(name) not in (None, (), []):
            setting = Setting(name, flags[name], "flag")
        elif os.environ.get(env):
            setting = Setting(name, os.environ[env], f"env {env}")
        elif name in from_file:
            setting = Setting(name, from_file[name], f"file {path}")
        else:
            setting = Setting(name, default, "default")
        settings[name] = Setting(
            name, _validate(name, setting.value, setting.source), setting.source
        )
    return Config(settings)
