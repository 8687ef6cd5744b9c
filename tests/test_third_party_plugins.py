"""Real example plugin packages, pip-installed for the test run, take part like built-ins."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from modelsafe.testing import write_safetensors
from modelsafe.testing.layouts import base_models

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


def _pixart_lora(blocks: int = 2, attn: tuple[str, ...] = ("attn1", "attn2")) -> list[Any]:
    specs: list[tuple[str, str, tuple[int, ...]]] = []
    for i in range(blocks):
        for a in attn:
            for proj in ("to_q", "to_k", "to_v"):
                key = f"transformer.transformer_blocks.{i}.{a}.{proj}"
                specs.append((f"{key}.lora_A.weight", "F16", (4, 1152)))
                specs.append((f"{key}.lora_B.weight", "F16", (1152, 4)))
    return specs


def _pixart_with_attention(blocks: int = 2) -> list[tuple[str, str, tuple[int, ...]]]:
    specs = _pixart_layout(blocks)
    for i in range(blocks):
        for a in ("attn1", "attn2"):
            for proj in ("to_q", "to_k", "to_v"):
                name = f"transformer_blocks.{i}.{a}.{proj}.weight"
                if (name, "F16", (1152, 1152)) not in specs:
                    specs.append((name, "F16", (1152, 1152)))
    return specs


def test_installed_plugins_are_listed_and_removed_are_gone(
    plugin_site: Path, tmp_path: Path
) -> None:
    listed = modelsafe(["plugins", "--json"], plugin_site, tmp_path)
    assert listed.returncode == 0, listed.stderr
    plugins = {p["name"]: p for p in json.loads(listed.stdout)["plugins"]}
    assert plugins["pixart"]["package"] == "modelsafe-pixart"
    assert plugins["pixart"]["version"] == "0.3.0"
    assert plugins["pixart"]["status"] == "ok"
    assert {"modelsafe_identify", "modelsafe_check_compatibility"} <= set(
        plugins["pixart"]["hooks"]
    )
    assert plugins["dryrun"]["package"] == "modelsafe-dryrun"
    assert plugins["dryrun"]["status"] == "ok"
    assert plugins["dryrun"]["hooks"] == ["modelsafe_backends"]
    without = modelsafe(["plugins", "--json"], None, tmp_path)
    names = {p["name"] for p in json.loads(without.stdout)["plugins"]}
    assert not names & {"pixart", "dryrun"}


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


def test_third_party_detector_outranks_the_builtin_guess(plugin_site: Path, tmp_path: Path) -> None:
    lora = write_safetensors(tmp_path / "pixart-lora.safetensors", _pixart_lora(), data="zeros")
    builtin = json.loads(modelsafe(["inspect", str(lora), "--json"], None, tmp_path).stdout)
    assert (builtin["family"], builtin["kind"]) == ("unknown", "lora")
    found = modelsafe(["inspect", str(lora), "--json"], plugin_site, tmp_path)
    report = json.loads(found.stdout)
    assert (report["family"], report["kind"]) == ("pixart_sigma", "lora")
    assert any("1152" in line for line in report["evidence"])
    # the built-in's weaker answer is kept, with its score, as a rejected candidate
    beaten = [c for c in report["candidates"] if (c["family"], c["kind"]) == ("unknown", "lora")]
    assert beaten and beaten[0]["score"] < report["confidence"]
    assert beaten[0]["detector"] != "pixart"


def test_installed_rule_takes_part_in_resolve(plugin_site: Path, tmp_path: Path) -> None:
    base = write_safetensors(
        tmp_path / "pixart.safetensors", _pixart_with_attention(), data="sparse"
    )
    fits = write_safetensors(tmp_path / "fits.safetensors", _pixart_lora(), data="zeros")
    wider = write_safetensors(tmp_path / "wider.safetensors", _pixart_lora(blocks=4), data="zeros")
    ok = modelsafe(["resolve", str(base), "--lora", str(fits), "--json"], plugin_site, tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    part = json.loads(ok.stdout)["parts"][0]
    assert part["status"] == "accepted"
    rules = {r["rule"]: r for r in part["reasons"]}
    assert rules["pixart_lora_modules"]["status"] == "accept"
    assert "12 of 12 LoRA modules" in rules["pixart_lora_modules"]["reason"]
    assert rules["family"]["status"] == "accept"  # the built-in family rule agrees
    bad = modelsafe(["resolve", str(base), "--lora", str(wider), "--json"], plugin_site, tmp_path)
    assert bad.returncode == 1
    rule = {r["rule"]: r for r in json.loads(bad.stdout)["parts"][0]["reasons"]}
    assert rule["pixart_lora_modules"]["status"] == "reject"
    assert "12 of 24" in rule["pixart_lora_modules"]["reason"]
    assert "no module for transformer_blocks.2." in " ".join(
        rule["pixart_lora_modules"]["evidence"]
    )
    gone = modelsafe(["resolve", str(base), "--lora", str(fits), "--json"], None, tmp_path)
    assert gone.returncode == 1  # without the plugin the base is an unknown file
    assert "pixart_lora_modules" not in gone.stdout


def test_installed_backend_takes_part_in_generate(plugin_site: Path, tmp_path: Path) -> None:
    from PIL import Image

    checkpoint = write_safetensors(
        tmp_path / "sd15.safetensors", base_models.unet_checkpoint("sd1"), data="sparse"
    )
    args = ["generate", "--backend", "dryrun", "--checkpoint", str(checkpoint)]
    args += ["--prompt", "a lighthouse", "--seed", "42", "--steps", "3", "--out", "out", "--json"]
    ran = modelsafe(args, plugin_site, tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    image_path = Path(json.loads(ran.stdout)["images"][0]["path"])
    with Image.open(tmp_path / image_path if not image_path.is_absolute() else image_path) as png:
        assert png.size == (512, 512)  # SD1's default size: the real defaults were applied
        dry = json.loads(png.text["modelsafe-dryrun"])
        assert (dry["backend"], dry["seed"], dry["family"], dry["steps"]) == (
            "dryrun",
            42,
            "sd1",
            3,
        )
        assert "a lighthouse" in png.text["parameters"]  # the built-in metadata writer ran too
    missing = modelsafe(args, None, tmp_path)
    assert missing.returncode == 2
    assert "no generation backend called 'dryrun'" in missing.stderr
    assert "Traceback" not in missing.stderr
    disabled = modelsafe(["--disable-plugin", "dryrun", *args], plugin_site, tmp_path)
    assert disabled.returncode == 2 and "dryrun" in disabled.stderr


def test_a_plugins_family_can_be_set_as_a_correction(plugin_site: Path, tmp_path: Path) -> None:
    # `set --family` took built-in families only: a file a plugin's detector missed could not be
    # corrected to that plugin's family ("unknown family 'pixart_sigma'").
    models = tmp_path / "models"
    models.mkdir()
    write_safetensors(models / "pixart.safetensors", _pixart_layout(), data="sparse")
    write_safetensors(models / "odd.safetensors", [("foo.weight", "F16", (4, 4))], data="zeros")
    scanned = modelsafe(["scan", str(models)], plugin_site, tmp_path)
    assert scanned.returncode == 0, scanned.stderr
    ok = modelsafe(["set", "odd", "--family", "pixart_sigma", "--json"], plugin_site, tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["family"] == "pixart_sigma"
    typo = modelsafe(["set", "odd", "--family", "pixart_sigmaa"], plugin_site, tmp_path)
    assert typo.returncode == 2
    assert "unknown family 'pixart_sigmaa'" in typo.stderr
    assert "pixart_sigma: from plugins, seen in the catalog" in typo.stderr
    assert "Traceback" not in typo.stderr
