"""Settings come from flags > environment > config file > defaults, each shown with its source."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelsafe.config import load_config
from modelsafe.errors import ConfigError


def _write_config(home: Path, text: str) -> Path:
    path = home / "config.toml"
    path.write_text(text)
    return path


def test_defaults(modelsafe_home: Path) -> None:
    cfg = load_config()
    assert cfg.catalog == "catalog.db"
    assert cfg.settings["catalog"].source == "default"
    assert cfg.vram is None


def test_precedence_flag_env_file(modelsafe_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write_config(
        modelsafe_home, 'catalog = "file.db"\nvram = "6GiB"\nmodel_roots = ["/m1", "/m2"]\n'
    )
    cfg = load_config()
    assert cfg.catalog == "file.db" and cfg.settings["catalog"].source == f"file {path}"
    assert cfg.vram == 6 * 1024**3
    assert cfg.model_roots == ["/m1", "/m2"]
    monkeypatch.setenv("MODELSAFE_CATALOG", "env.db")
    cfg = load_config()
    assert cfg.catalog == "env.db" and cfg.settings["catalog"].source == "env MODELSAFE_CATALOG"
    cfg = load_config({"catalog": "flag.db"})
    assert cfg.catalog == "flag.db" and cfg.settings["catalog"].source == "flag"


def test_bad_config_file_is_a_clear_error(modelsafe_home: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    _write_config(modelsafe_home, "catalog = [unclosed\n")
    with pytest.raises(ConfigError):
        load_config()
    code, out, err = run_cli("config", "show")
    assert code == 2
    assert "cannot read config file" in err and "Hint:" in err and "Traceback" not in err


def test_unknown_key_and_bad_vram(modelsafe_home: Path) -> None:
    _write_config(modelsafe_home, 'catalogue = "x"\n')
    with pytest.raises(ConfigError, match="unknown setting"):
        load_config()
    _write_config(modelsafe_home, 'vram = "lots"\n')
    with pytest.raises(ConfigError, match="vram"):
        load_config()


def test_config_show_json_reports_sources(modelsafe_home: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    _write_config(modelsafe_home, 'vram = "8GiB"\n')
    code, out, _ = run_cli("--catalog", "x.db", "config", "show", "--json")
    assert code == 0
    settings = {s["name"]: s for s in json.loads(out)["settings"]}
    assert settings["catalog"] == {"name": "catalog", "value": "x.db", "source": "flag"}
    assert settings["vram"]["value"] == "8GiB" and settings["vram"]["source"].startswith("file ")
    assert settings["model_roots"]["source"] == "default"
