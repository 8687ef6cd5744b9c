"""A model stored as a good copy and a damaged one (a download saved twice, the second with bytes
after its data) is named after, and shows the size of, the good copy whatever the paths' order;
the damaged copy's file name still finds it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelsafe.testing import write_safetensors

Scan = Callable[..., dict[str, Any]]
Cli = Callable[..., Any]


def test_a_damaged_copy_first_in_path_order_neither_names_nor_sizes_the_model(
    tmp_path: Path, scan_json: Scan, cli_json: Cli
) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    good = write_safetensors(
        lib / "zz-detail.safetensors", [("w", "F16", (64, 64))], {}, data="random", seed=3
    )
    damaged = lib / "aa-detail (1).safetensors"  # (sorts first)
    damaged.write_bytes(good.read_bytes() + b"\0" * 50_000)

    summary = scan_json(str(lib))
    assert summary["new"] == 2 and summary["warnings"], summary  # (one model, two copies)
    (model,) = cli_json("ls")
    assert model["name"] == "zz-detail"
    assert model["size"] == good.stat().st_size
    assert sorted(model["paths"]) == sorted([str(damaged), str(good)])
    assert model["audit"] == "error"  # (the worst of its copies, as before)

    # The damaged copy's file name, with or without its extension, finds the model.
    for ref in ("aa-detail (1)", "AA-DETAIL (1).safetensors"):
        assert cli_json("show", ref)["name"] == "zz-detail", ref

    # A rescan after the good copy is gone names it after what is left.
    good.unlink()
    scan_json(str(lib))
    (model,) = cli_json("ls")
    assert model["name"] == "aa-detail (1)"
    assert model["size"] == damaged.stat().st_size
