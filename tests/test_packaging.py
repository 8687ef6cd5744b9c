"""The explicit package list in pyproject.toml must name every folder with an __init__.py."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    mapping: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    found = set()
    for package, folder in mapping.items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            found.add(".".join([package, *rel.parts]) if rel.parts else package)
    # Subpackages of modelsafe.* mapped elsewhere are found through their own mapping entry.
    missing = sorted(found - listed)
    assert not missing, f"add these to [tool.setuptools] packages: {missing}"
    assert listed <= found, f"listed but missing on disk: {sorted(listed - found)}"


def test_builtin_plugins_are_entry_points() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    eps = config["project"]["entry-points"]["modelsafe"]
    modules = {p.stem for p in (ROOT / "plugins" / "builtin").glob("*.py")} - {"__init__"}
    declared = {value.rsplit(".", 1)[1] for value in eps.values()}
    assert modules <= declared, f"built-in modules without an entry point: {modules - declared}"
