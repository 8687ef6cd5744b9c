"""Red-team of the GGUF reader and GGUF identification, on real files written by ``GGUFWriter``.

One test per defect found: a header that fits in its file but would have cost gigabytes or
minutes (a 3 GB string, millions of keys, tensors or tokens), a big-endian file reported as an
unknown version, and a llama.cpp language model identified as a text encoder (which resolve then
took for Flux's T5 by its width).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from modelsafe.errors import MalformedFileError  # noqa: E402
from modelsafe.registry.formats import gguf_reader  # noqa: E402
from modelsafe.registry.identify import identify  # noqa: E402
from modelsafe.registry.read import read_index  # noqa: E402

Q = gguf.GGMLQuantizationType


def _finish(writer: gguf.GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _header(n_tensors: int, n_kv: int) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv)


def _sparse(path: Path, head: bytes, size: int) -> Path:
    """``head`` then zeros up to ``size`` bytes, without writing them (a sparse file)."""
    path.write_bytes(head)
    os.truncate(path, size)
    return path


def test_long_string_value_is_skipped_not_read(tmp_path: Path) -> None:
    # A 3 GB general.name (sparse) was read and decoded: 6 GB of memory for one header.
    path = tmp_path / "long-name.gguf"
    n = 3 << 30
    head = _header(0, 1) + struct.pack("<Q", 12) + b"general.name" + struct.pack("<IQ", 8, n)
    _sparse(path, head, len(head) + n)
    index = read_index(path)
    assert index.extra["kv"]["general.name"] == {"string_of_length": n}
    assert index.metadata["general.name"] == f"({n:,}-byte string, not read)"


def test_short_strings_and_template_kept(tmp_path: Path) -> None:
    writer = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "llama")
    template = "{% for m in messages %}{{ m['content'] }}{% endfor %}" * 500  # ~27 KB: kept
    writer.add_string("tokenizer.chat_template", template)
    writer.add_tensor("token_embd.weight", np.zeros((4, 32), np.float16))
    _finish(writer)
    index = read_index(tmp_path / "m.gguf")
    assert index.metadata["tokenizer.chat_template"] == template


@pytest.mark.parametrize(
    ("head", "size", "words"),
    [
        # 300k tensors' worth of (sparse) bytes: each table entry was a Python object (1.2 GB
        # and 40 s for 2M tensors)
        (_header(300_000, 0), 300_000 * 24 + 64, "tensor count 300,000 is more than"),
        (_header(0, 300_000), 300_000 * 13 + 64, "key/value count 300,000 is more than"),
        # 5M strings of a token array were skipped one by one (50M: 24 s)
        (
            _header(0, 1) + struct.pack("<Q", 3) + b"tok" + struct.pack("<IIQ", 9, 8, 5_000_000),
            5_000_000 * 8 + 64,
            "5,000,000 strings, more than",
        ),
        (_header(0, 1) + struct.pack("<Q", 1 << 20), (1 << 20) + 64, "key length 1,048,576"),
    ],
    ids=["tensors", "keys", "token-strings", "key-length"],
)
def test_counts_that_fit_the_file_but_no_model_are_refused(
    tmp_path: Path, head: bytes, size: int, words: str
) -> None:
    path = _sparse(tmp_path / "big.gguf", head, size)
    with pytest.raises(MalformedFileError, match=words):
        read_index(path)


def test_kept_text_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gguf_reader, "MAX_HEADER_TEXT", 100_000)
    writer = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "flux")
    for i in range(4):
        writer.add_string(f"general.note{i}", "x" * 30_000)
    writer.add_tensor("img_in.weight", np.zeros((4, 64), np.float16))
    _finish(writer)
    with pytest.raises(MalformedFileError, match="more than 100,000 bytes of names and strings"):
        read_index(tmp_path / "m.gguf")


def test_big_endian_gguf_is_named(tmp_path: Path) -> None:
    path = tmp_path / "be.gguf"
    writer = gguf.GGUFWriter(str(path), "flux", endianess=gguf.GGUFEndian.BIG)
    writer.add_tensor("img_in.weight", np.zeros((4, 64), np.float16))
    _finish(writer)
    with pytest.raises(MalformedFileError, match="big-endian GGUF") as info:
        read_index(path)
    assert "version" not in info.value.reason


def _llama(path: Path, vocab: int, width: int, layers: int) -> Path:
    """A llama.cpp LLM GGUF's header at real dimensions (Q8_0 weights, sparse data)."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_uint32("llama.embedding_length", width)
    writer.add_uint32("llama.block_count", layers)
    writer.add_string("tokenizer.ggml.model", "gpt2")
    tensors = [("token_embd.weight", (vocab, width), Q.Q8_0)]
    for b in range(layers):
        tensors += [
            (f"blk.{b}.attn_norm.weight", (width,), Q.F32),
            (f"blk.{b}.attn_q.weight", (width, width), Q.Q8_0),
        ]
    tensors.append(("output.weight", (vocab, width), Q.Q8_0))
    return _sparse_gguf(writer, path, tensors)


def _sparse_gguf(
    writer: gguf.GGUFWriter, path: Path, tensors: list[tuple[str, tuple[int, ...], Any]]
) -> Path:
    """Write ``writer``'s header with ``tensors`` (name, shape, quantization type) and leave
    their data as a sparse hole of the right, aligned size."""
    nbytes = []
    for name, shape, qtype in tensors:
        block, type_size = gguf.GGML_QUANT_SIZES[qtype]
        nbytes.append(int(np.prod(shape)) // block * type_size)
        writer.add_tensor_info(name, shape, np.dtype(np.float32), nbytes[-1], raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    size = -(-path.stat().st_size // 32) * 32 + sum(-(-n // 32) * 32 for n in nbytes)
    os.truncate(path, size)
    return path


def test_llm_gguf_is_not_an_image_model(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    # Llama-2-7B (vocab 32000) was "any/text_encoder" and resolve took it for Flux's T5 (4096).
    path = _llama(tmp_path / "llama-2-7b.Q8_0.gguf", 32000, 4096, 2)
    ident = identify(read_index(path))
    assert (ident.family, ident.kind) == ("unknown", "unknown")
    assert ident.facts["not_image_model"] is True
    assert any("not an image model" in e for e in ident.evidence)
    code, out, err = run_cli("inspect", str(path), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["kind"] == "unknown" and report["precision"] == "Q8_0"


def test_llm_gguf_used_as_text_encoder_stays_one(tmp_path: Path) -> None:
    # Llama-3.1-8B's dimensions (HiDream's fourth text encoder) are still a text encoder.
    path = _llama(tmp_path / "Meta-Llama-3.1-8B-Instruct-Q8_0.gguf", 128256, 4096, 32)
    ident = identify(read_index(path))
    assert (ident.kind, ident.variant) == ("text_encoder", "llama3.1_8b")


def test_a_mixed_gguf_is_named_by_its_quantization(tmp_path: Path) -> None:
    """city96's SD1.5 Q8_0 keeps most elements (3x3 convolutions) in F16: it is a Q8_0 file."""
    from modelsafe.registry.inspect import inspect_path, precision_of

    assert precision_of({"F16": 900, "Q8_0": 100, "F32": 5}) == "Q8_0"
    assert precision_of({"BF16": 900, "F32": 5}) == "bf16"
    path = tmp_path / "mixed-Q8_0.gguf"
    tensors = [("conv.weight", (320, 320, 3, 3), Q.F16), ("proj.weight", (320, 320), Q.Q8_0)]
    _sparse_gguf(gguf.GGUFWriter(str(path), "sd1"), path, tensors)
    assert inspect_path(path).precision == "Q8_0"


def test_an_llm_given_as_a_text_encoder_is_refused_by_resolve(tmp_path: Path) -> None:
    """Llama-2-7B is as wide as T5-XXL (4096): resolve says it is a language model, and never
    "ok t5xxl (4096 wide)"."""
    from modelsafe.runtime.resolve import resolve
    from modelsafe.testing import write_safetensors
    from modelsafe.testing.layouts import base_models

    flux = write_safetensors(tmp_path / "flux.safetensors", base_models.bfl_flux(), data="sparse")
    llm = _llama(tmp_path / "llama-2-7b.Q8_0.gguf", 32000, 4096, 2)
    result = resolve(str(flux), text_encoders=[str(llm)]).as_json()
    part = next(p for p in result["parts"] if p["role"] == "text_encoder")
    slot = next(r for r in part["reasons"] if r["rule"] == "text_encoder_slot")
    assert slot["status"] == "reject" and "language model" in slot["reason"]
    assert not result["compatible"]
