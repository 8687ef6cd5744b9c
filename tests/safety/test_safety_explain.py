"""A finding says what the global it names is known to do; the verdict stays `unsafe` for every
global outside the allow-list, attack primitive or harmless-looking training record alike."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


def _pickle_calling(module: str, name: str) -> bytes:
    # protocol 2: GLOBAL module name, an empty tuple, NEWOBJ, an empty dict state, BUILD, STOP
    return b"\x80\x02c" + f"{module}\n{name}\n".encode() + b")\x81}b."


@pytest.mark.parametrize(
    ("module", "name", "words"),
    [
        ("posix", "system", "runs shell commands"),
        ("builtins", "getattr", "a way to hide the real call"),
        ("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint", "training-callback"),
        ("mytrainer.state", "Thing", "loading the file would import it and may call it"),
    ],
)
def test_findings_say_what_a_global_does(
    module: str, name: str, words: str, tmp_path: Path, run_cli: Any
) -> None:
    path = tmp_path / "model.ckpt"
    path.write_bytes(_pickle_calling(module, name))
    code, out, _err = run_cli("audit", str(path), "--json")
    (verdict,) = json.loads(out)
    assert code == 1 and verdict["status"] == "unsafe"
    globals_found = [f for f in verdict["findings"] if f["code"] == "global"]
    assert globals_found and globals_found[0]["message"].startswith(f"{module}.{name} ")
    assert words in globals_found[0]["message"]
