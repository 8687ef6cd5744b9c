"""`text_encoder_slot` on encoders that could not be named: a width alone never accepts one.

T5-base is as wide as CLIP-L and Llama-2-7B as T5-XXL; a file of no known name fills a slot by
its width only when its architecture (from its key naming) is the slot's, and then as a warning
to check it; two files for one slot are said, not silently both accepted. The encoders are the
transformers classes on the meta device, identified by the real detectors.
"""

from __future__ import annotations

from typing import Any

import pytest
import rr_layouts as L

from modelsafe.runtime.resolve import load_part, resolve_parts
from modelsafe.testing.layouts import components as co


def _hf(write: Any, name: str, cls_name: str, config_name: str, **config: Any) -> Any:
    """A transformers model's state dict, header-only, as a --text-encoder part."""
    pytest.importorskip("transformers")
    pytest.importorskip("torch")
    specs = co.transformers_state_dict(cls_name, config_name, **config)
    if specs is None:
        pytest.skip(f"transformers has no {cls_name}")
    return load_part(str(write(name, specs)), "text_encoder")


def _t5_base(write: Any) -> Any:
    # t5-base: 768 wide (CLIP-L's width), ReLU feed-forward; two blocks are enough to read it
    dims = dict(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=2, num_heads=12)
    return _hf(write, "t5_base.safetensors", "T5EncoderModel", "T5Config", **dims)


def _sd1(part_of: Any, write: Any) -> Any:
    return part_of(write("sd1.safetensors", L.sd1_checkpoint()), "checkpoint", "sd1", "checkpoint")


def _reasons(result: Any, i: int) -> str:
    return " | ".join(f"{r.status} {r.reason}" for r in result.parts[i].reasons)


def test_t5_as_wide_as_clip_l_is_rejected_for_the_clip_l_slot(part_of: Any, write: Any) -> None:
    te = _t5_base(write)
    assert (te.kind, te.variant, te.facts["hidden_size"]) == ("text_encoder", None, 768)
    result = resolve_parts(_sd1(part_of, write), [te])
    assert result.parts[0].status == "rejected", _reasons(result, 0)
    assert "this is a T5 encoder (768 wide, of no known name), not clip_l" in _reasons(result, 0)
    assert "takes a CLIP text model" in _reasons(result, 0)


def test_llm_as_wide_as_t5xxl_neither_fills_flux_t5_slot(part_of: Any, write: Any) -> None:
    # Llama-2-7B: 4096 wide, vocabulary 32000 (no image model's text encoder)
    llama = _hf(
        write,
        "llama2_7b.safetensors",
        "LlamaForCausalLM",
        "LlamaConfig",
        vocab_size=32000,
        hidden_size=4096,
        num_hidden_layers=2,
        intermediate_size=11008,
        num_attention_heads=32,
    )
    assert (llama.kind, llama.variant) == ("text_encoder", None)
    flux = part_of(
        write("flux.safetensors", L.flux_bfl(double=1, single=1)),
        "checkpoint",
        "flux1",
        "transformer",
    )
    result = resolve_parts(flux, [llama])
    assert result.parts[0].status == "rejected", _reasons(result, 0)
    assert "decoder-only language model (LLM) (4096 wide" in _reasons(result, 0)
    assert "t5xxl" in [m.slot for m in result.missing]  # still missing: the Llama fills nothing


def test_unnamed_clip_of_the_slots_width_is_only_a_warning(part_of: Any, write: Any) -> None:
    # a CLIP text model 768 wide but 6 layers deep: no released encoder, so it cannot be told
    te = load_part(str(write("clip_6.safetensors", L.clip_text(768, 6, ""))), "text_encoder")
    assert (te.kind, te.variant) == ("text_encoder", None)
    result = resolve_parts(_sd1(part_of, write), [te])
    assert result.parts[0].status == "unchecked", _reasons(result, 0)
    assert "could not be told; by its width (768) it would be clip_l" in _reasons(result, 0)
    assert "check it is" in _reasons(result, 0)


def test_two_files_for_one_slot_are_said(part_of: Any, write: Any) -> None:
    one = load_part(str(write("clip_l.safetensors", co.clip_l())), "text_encoder")
    two = load_part(str(write("clip_l_copy.safetensors", co.clip_l())), "text_encoder")
    result = resolve_parts(_sd1(part_of, write), [one, two])
    for i, other in ((0, "clip_l_copy.safetensors"), (1, "clip_l.safetensors")):
        assert f"warn {other} also fills the clip_l slot" in _reasons(result, i)
        assert "give one file per slot" in _reasons(result, i)
    # one file alone: accepted with no such warning
    alone = resolve_parts(_sd1(part_of, write), [one])
    assert alone.parts[0].status == "accepted"
    assert "also fills" not in _reasons(alone, 0)


def test_families_beyond_needs_reject_an_encoder_they_do_not_use(part_of: Any, write: Any) -> None:
    dit = write("dit.safetensors", L.flux_bfl(double=1, single=1))  # (identity given below)
    wan = part_of(dit, "checkpoint", "wan", "transformer")
    klein = part_of(dit, "checkpoint", "flux2", "transformer", "klein-4b")
    umt5 = load_part(str(write("umt5.safetensors", co.umt5xxl())), "text_encoder")
    t5 = load_part(str(write("t5.safetensors", co.t5xxl())), "text_encoder")
    qwen3_4b = load_part(
        str(write("q4.safetensors", co.llm_text_encoder("qwen3_4b"))), "text_encoder"
    )
    qwen3_8b = load_part(
        str(write("q8.safetensors", co.llm_text_encoder("qwen3_8b"))), "text_encoder"
    )
    for base, te, status, said in (
        (wan, umt5, "accepted", "umt5xxl (4096 wide) is one of Wan's text encoders (umt5xxl)"),
        (wan, t5, "rejected", "t5xxl is not used by Wan (needs umt5xxl)"),
        (klein, qwen3_4b, "accepted", "qwen3_4b (2560 wide) is one of FLUX.2's text encoders"),
        (klein, qwen3_8b, "rejected", "qwen3_8b is not used by FLUX.2 (needs qwen3_4b)"),
    ):
        result = resolve_parts(base, [te])
        assert result.parts[0].status == status, _reasons(result, 0)
        assert said in _reasons(result, 0)
