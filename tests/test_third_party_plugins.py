"""Real example plugin packages, pip-installed for the test run, take part like built-ins."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from modelsafe.testing import write_safetensors

PACKAGES = Path(__file__).parent / "plugin_packages"


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example packages, installed with pip into a folder of their own."""
    target = tmp_path_factory.mktemp("plugin-site")
    sources = tmp_path_factory.mktemp("plugin-src")
    for original in sorted(p for p in PACKAGES.iterdir() if (p / "pyproject.toml").is_file()):
        package = shutil.copytree(original, sources / original.name)  # builds leave files behind
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--no-build-isolation",
                "--target",
                str(target),
                str(package),
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
    return target


def modelsafe(args: list[str], site: Path | None, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELSAFE_")}
    env["MODELSAFE_HOME"] = str(cwd)
    if site is not None:
        env["PYTHONPATH"] = str(site)
    return subprocess.run(
        [sys.executable, "-c", "from modelsafe.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


def _pixart_layout(blocks: int = 2) -> list[tuple[str, str, tuple[int, ...]]]:
    specs: list[tuple[str, str, tuple[int, ...]]] = [
        ("pos_embed.proj.weight", "F16", (1152, 4, 2, 2)),
        ("adaln_single.linear.weight", "F16", (6912, 1152)),
        ("caption_projection.linear_1.weight", "F16", (1152, 4096)),
    ]
    for i in range(blocks):
        specs.append((f"transformer_blocks.{i}.scale_shift_table", "F16", (6, 1152)))
        specs.append((f"transformer_blocks.{i}.attn1.to_q.weight", "F16", (1152, 1152)))
    return specs


def test_installed_plugin_is_listed_and_removed_is_gone(plugin_site: Path, tmp_path: Path) -> None:
    listed = modelsafe(["plugins", "--json"], plugin_site, tmp_path)
    assert listed.returncode == 0, listed.stderr
    plugins = {p["name"]: p for p in json.loads(listed.stdout)["plugins"]}
    assert plugins["pixart"]["package"] == "modelsafe-pixart"
    assert plugins["pixart"]["version"] == "0.2.0"
    assert plugins["pixart"]["status"] == "ok"
    assert "modelsafe_identify" in plugins["pixart"]["hooks"]
    without = modelsafe(["plugins", "--json"], None, tmp_path)
    assert "pixart" not in {p["name"] for p in json.loads(without.stdout)["plugins"]}


def test_installed_detector_identifies_its_family(plugin_site: Path, tmp_path: Path) -> None:
    model = write_safetensors(tmp_path / "pixart.safetensors", _pixart_layout(), data="sparse")
    found = modelsafe(["inspect", str(model), "--json"], plugin_site, tmp_path)
    assert found.returncode == 0, found.stderr
    report = json.loads(found.stdout)
    assert (report["family"], report["kind"]) == ("pixart_sigma", "transformer")
    assert any("adaln_single" in line for line in report["evidence"])
    gone = modelsafe(["inspect", str(model), "--json"], None, tmp_path)
    assert gone.returncode == 0, gone.stderr
    assert json.loads(gone.stdout)["family"] != "pixart_sigma"
    disabled = modelsafe(
        ["--disable-plugin", "pixart", "inspect", str(model), "--json"], plugin_site, tmp_path
    )
    assert json.loads(disabled.stdout)["family"] != "pixart_sigma"
