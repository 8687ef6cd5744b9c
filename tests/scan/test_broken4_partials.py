"""Unfinished downloads and side files named for what they are.

uTorrent's ``.!ut``, BitComet's ``.bc!``, WinSCP's ``.filepart``, DownThemAll's ``.dtapart`` and
Opera's ``.opdownload`` were scanned silently and called "truncated ... download it again" when
given directly (throwing a running torrent away); a GGUF cut inside its header was "damaged", not
truncated; Windows' ``:Zone.Identifier`` notes, macOS ``._`` files, Hugging Face's "restricted"
answer and Civitai's "log in" JSON saved as a model got generic words.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelsafe.errors import MalformedFileError
from modelsafe.registry.audit import audit_path
from modelsafe.registry.formats.gguf_reader import read_gguf_index
from modelsafe.registry.sniff import describe_unknown, not_a_model, sniff
from modelsafe.testing import write_safetensors

Cli = Callable[..., tuple[int, str, str]]
Scan = Callable[..., dict[str, Any]]
DOWNLOADERS = {
    ".!ut": "an unfinished uTorrent/BitTorrent download",
    ".bc!": "an unfinished BitComet download",
    ".filepart": "an unfinished WinSCP transfer",
    ".dtapart": "an unfinished DownThemAll download",
    ".opdownload": "an unfinished Opera download",
    ".part": "an unfinished Firefox, wget/curl or Transmission download",
}


def _cut_model(path: Path) -> Path:
    specs = [(f"lora_unet_{i}.lora_up.weight", "F16", (64, 64)) for i in range(4)]
    write_safetensors(path, specs, data="random", seed=7)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize(("suffix", "what"), DOWNLOADERS.items())
def test_downloaders_partial_files_are_skipped_and_named(
    tmp_path: Path, run_cli: Cli, scan_json: Scan, suffix: str, what: str
) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    partial = _cut_model(lib / f"lora.safetensors{suffix}")
    summary = scan_json(str(lib))
    assert summary["skipped"] == [
        {"path": str(partial), "reason": f"{what}: let it finish, then scan again"}
    ]
    code, _out, err = run_cli("inspect", str(partial))
    assert code == 2 and what in err and "truncated" not in err
    [finding] = audit_path(partial).findings
    assert finding.code == "unfinished-download" and what in finding.message


def _gguf(n_tensors: int = 3) -> bytes:
    """A GGUF v3 file: one key, ``n_tensors`` F32 tensors of 8 values, their data."""
    key = struct.pack("<Q", 20) + b"general.architecture" + struct.pack("<IQ", 8, 4) + b"flux"
    table = b"".join(
        struct.pack("<Q", 3) + f"t{i:02d}".encode()[:3] + struct.pack("<IQIQ", 1, 8, 0, 32 * i)
        for i in range(n_tensors)
    )
    head = b"GGUF" + struct.pack("<IQQ", 3, n_tensors, 1) + key + table
    head += bytes(-len(head) % 32)
    return head + bytes(32 * n_tensors)


@pytest.mark.parametrize("where", ["kv", "table"])
def test_a_gguf_cut_inside_its_header_is_truncated(
    tmp_path: Path, run_cli: Cli, where: str
) -> None:
    data = _gguf()
    cut = 24 + 20 if where == "kv" else 24 + 44 + 30
    path = tmp_path / "flux.gguf"
    path.write_bytes(data[:cut])
    with pytest.raises(MalformedFileError, match="truncated") as info:
        read_gguf_index(path)
    assert info.value.hint == "the download was cut short; download it again"
    code, _out, err = run_cli("inspect", str(path))
    assert code == 2 and "Hint: the download was cut short; download it again" in err


def test_a_gguf_count_no_file_could_hold_stays_damaged(tmp_path: Path) -> None:
    data = bytearray(_gguf())
    data[24 : 24 + 8] = struct.pack("<Q", 1 << 40)  # the key's length: a bit flip, not a cut
    path = tmp_path / "flux.gguf"
    path.write_bytes(bytes(data))
    with pytest.raises(MalformedFileError, match="cannot fit") as info:
        read_gguf_index(path)
    assert "damaged" in info.value.hint


def test_the_whole_gguf_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "flux.gguf"
    path.write_bytes(_gguf())
    assert len(read_gguf_index(path).tensors) == 3


@pytest.mark.parametrize(
    ("name", "content", "words", "hint"),
    [
        (
            "good_lora.safetensors:Zone.Identifier",
            b"[ZoneTransfer]\r\nZoneId=3\r\nHostUrl=https://civitai.com/api/download/models/1\r\n",
            "Windows' download-origin note",
            "the model is good_lora.safetensors",
        ),
        (
            "._good_lora.safetensors",
            b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ".ljust(4096, b"\0"),
            "macOS metadata (an AppleDouble",
            "the model is good_lora.safetensors",
        ),
        (
            "flux.safetensors",
            b"Access to model black-forest-labs/FLUX.1-dev is restricted. You must have access "
            b"to it and be authenticated to access it. Please log in.",
            "a gated model",
            "huggingface-cli login",
        ),
        (
            "lora.safetensors",
            b'{"error":"Unauthorized","message":"The creator of this asset requires you to be '
            b'logged in to download it"}',
            "Civitai's",
            "?token=",
        ),
    ],
    ids=["zone-identifier", "appledouble", "hf-gated", "civitai-login"],
)
def test_side_files_and_saved_answers_are_named(
    tmp_path: Path, name: str, content: bytes, words: str, hint: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    verdict = audit_path(path)
    assert verdict.status == "error"
    message = " ".join(f.message for f in verdict.findings)
    assert words in message and hint in message, message
    assert "JSON (a config" not in message and "plain text" not in message


def test_a_zone_identifier_is_no_json(tmp_path: Path, run_cli: Cli) -> None:
    path = tmp_path / "good_lora.safetensors:Zone.Identifier"
    path.write_bytes(b"[ZoneTransfer]\r\nZoneId=3\r\n")
    code, out, _err = run_cli("inspect", str(path), "--json")
    assert code == 2
    error = json.loads(out)["error"]
    assert "download-origin note" in error["reason"]
    assert "good_lora.safetensors" in error["reason"] + error["hint"]


def test_side_files_name_their_model_when_the_name_is_known() -> None:
    note = b"[ZoneTransfer]\r\nZoneId=3\r\n"
    what = not_a_model(sniff(note).value, len(note), note, "good_lora.safetensors:Zone.Identifier")
    assert what is not None and what.hint == "the model is good_lora.safetensors"
    apple = b"\x00\x05\x16\x07\x00\x02\x00\x00".ljust(64, b"\0")
    assert describe_unknown(apple, "._good_lora.safetensors").endswith(
        "the model is good_lora.safetensors"
    )


def test_audit_warns_of_an_aria2_control_file_beside_a_file_that_reads(
    tmp_path: Path, run_cli: Cli
) -> None:
    # generate refuses such a file and inspect warns of it; audit said SAFE and nothing else
    model = write_safetensors(
        tmp_path / "sd15.safetensors", [("w", "F16", (64, 64))], data="random"
    )
    (tmp_path / "sd15.safetensors.aria2").write_bytes(b"\0\1\0\0")
    code, out, _err = run_cli("audit", str(model), "--json")
    [verdict] = json.loads(out)
    assert code == 0 and verdict["status"] == "safe"
    [finding] = [f for f in verdict["findings"] if f["code"] == "unfinished-download"]
    assert finding["severity"] == "warning" and "aria2" in finding["message"]
