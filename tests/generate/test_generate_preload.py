"""LoRAs and embeddings that cannot fit the checkpoint are refused before anything loads, by the
compatibility rules `modelsafe resolve` uses (so the two commands give one verdict); a LoRA of
unknown family is still tried, with a warning; what diffusers, transformers and peft log while
LoRAs load comes out as modelsafe's own warning lines, not library noise."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_generate_families import pixels, request_for

from modelsafe.errors import UsageError
from modelsafe.runtime.diffusers_loader import LibraryMessage
from modelsafe.runtime.generate import EmbeddingSpec, LoraSpec, generate
from modelsafe.testing.layouts.adapters import (
    embedding,
    flux_modules,
    kohya_lora,
    peft_lora,
    sdxl_unet_modules,
)
from modelsafe.testing.layouts.base_models import unet_checkpoint
from modelsafe.testing.safetensors_writer import write_safetensors
from modelsafe.testing.tiny_models import Tiny, save_tensors, tiny_lora_kohya


def _args(t: Tiny, path: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--catalog", str(out.parent / "catalog.db"), "generate",
        "--checkpoint", str(path), "--family", t.base_family,
        "--config-dir", str(t.configs), "--tokenizers", str(t.tokenizers),
        "--prompt", "a zq", "--seed", "42", "--steps", "2",
        "--width", "32", "--height", "32", "--out", str(out), *extra,
    ]  # fmt: skip


@pytest.fixture
def no_load(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Building or loading a pipeline fails the test (the input must be refused before it);
    the returned list names every attempt."""
    from modelsafe.plugins.builtin import backend_diffusers
    from modelsafe.runtime import diffusers_loader

    attempts: list[str] = []

    def never(*_a: Any, **_k: Any) -> Any:
        attempts.append("load")
        raise AssertionError("the pipeline was loaded before the input was refused")

    monkeypatch.setattr(diffusers_loader, "load_pipeline", never)
    monkeypatch.setattr(backend_diffusers, "build_pipelines", never)
    return attempts


def _refused(run_cli: Any, args: list[str], *words: str) -> str:
    code, _out, err = run_cli(*args)
    assert code == 2, err
    assert "this is a bug" not in err and "Traceback" not in err
    for word in words:
        assert word in err, err
    return str(err)


def _flux_lora(path: Path, naming: str = "kohya") -> Path:
    """A Flux.1 LoRA's real tensor layout (header-only: the data is sparse zeros)."""
    if naming == "kohya":
        specs = kohya_lora([("lora_unet_", flux_modules("bfl"))], rank=1)
    else:
        specs = peft_lora([("transformer.", flux_modules("diffusers"))], rank=1)
    return write_safetensors(path, specs, data="sparse")


# -- LoRAs ----------------------------------------------------------------------------------------


def test_lora_of_another_family_is_refused_before_loading(
    tiny: Callable[[str], Tiny], run_cli: Any, tmp_path: Path, no_load: list[str]
) -> None:
    sd1, sdxl = tiny("sd1"), tiny("sdxl")
    flux = _flux_lora(tmp_path / "flux.safetensors")
    flux_peft = _flux_lora(tmp_path / "flux-peft.safetensors", naming="peft")
    sdxl_lora = write_safetensors(
        tmp_path / "xl.safetensors",
        kohya_lora([("lora_unet_", sdxl_unet_modules())], rank=1),
        data="sparse",
    )
    out = tmp_path / "o"
    err = _refused(
        run_cli,
        _args(sd1, sd1.single, out, "--lora", str(flux)),
        "LoRA flux.safetensors does not fit this SD1 model: LoRA is for Flux.1, checkpoint is SD1",
        "modelsafe resolve",
    )
    assert len(err) < 800, err
    _refused(
        run_cli,
        _args(sd1, sd1.folder, out, "--lora", f"{sdxl_lora}:0.7"),
        "LoRA xl.safetensors does not fit this SD1 model: LoRA targets SDXL: "
        "cross-attention context 2048",
    )
    _refused(
        run_cli,
        _args(sdxl, sdxl.folder, out, "--lora", str(flux_peft)),
        "LoRA flux-peft.safetensors does not fit this SDXL model: LoRA is for Flux.1",
    )
    assert no_load == [] and not out.exists()


def test_lora_of_unknown_family_is_tried_with_one_clear_warning(
    tiny: Callable[[str], Tiny], run_cli: Any, tmp_path: Path
) -> None:
    t = tiny("sd1")
    lora = tiny_lora_kohya(t.pipe.unet, tmp_path / "style.safetensors")  # no family: tiny
    code, out, err = run_cli(*_args(t, t.single, tmp_path / "o", "--lora", f"{lora}:0.8", "--json"))
    assert code == 0, err
    said = json.loads(out)["warnings"]
    assert any("LoRA style.safetensors: cannot tell which base the LoRA is for" in w for w in said)
    for line in said:
        assert f"warning: {line}" in err
    # a UNet-only LoRA: diffusers' "No LoRA keys associated to CLIPTextModel" is no news
    assert "No LoRA keys associated" not in err + out
    assert "[transformers]" not in err  # nor the torchvision notice of the first pipeline import


def test_lora_whose_text_encoder_keys_match_nothing_says_which(
    tiny: Callable[[str], Tiny], run_cli: Any, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    t = tiny("sd1")
    state = load_file(str(tiny_lora_kohya(t.pipe.unet, tmp_path / "unet.safetensors")))
    key = "lora_te_text_model_encoder_layers_99_mlp_fc1"
    state[f"{key}.lora_down.weight"] = torch.randn(2, 32)
    state[f"{key}.lora_up.weight"] = torch.randn(37, 2)
    state[f"{key}.alpha"] = torch.tensor(2.0)
    mixed = save_tensors(tmp_path / "mixed.safetensors", state)
    _refused(
        run_cli,
        _args(t, t.single, tmp_path / "o", "--lora", str(mixed)),
        "LoRA mixed.safetensors: its text_encoder keys match no layer of this sd1 model "
        "(its unet keys do)",
    )


def test_library_log_lines_become_modelsafe_warnings(
    tiny: Callable[[str], Tiny], tmp_path: Path
) -> None:
    """Nothing diffusers/transformers/peft say while LoRAs load reaches their own handlers or
    Python's warnings: the meaningful part comes back as the run's warnings."""
    from safetensors.torch import load_file

    t = tiny("sd1")
    plain = tiny_lora_kohya(t.pipe.unet, tmp_path / "plain.safetensors")
    state = load_file(str(plain))
    first = next(k for k in state if k.endswith("lora_down.weight"))
    state[first.replace("lora_down.weight", "dora_scale")] = torch.ones(1, 32)
    dora = save_tensors(tmp_path / "dora.safetensors", state)

    class Record(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.DEBUG)
            self.lines: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.lines.append(record.getMessage())

    record = Record()
    loggers = [logging.getLogger(n) for n in ("diffusers", "transformers", "peft")]
    for logger in loggers:
        logger.addHandler(record)
    seen: list[str] = []
    try:
        with warnings.catch_warnings(record=True) as raised:
            warnings.simplefilter("always")
            result = generate(
                request_for(t, t.single, loras=(LoraSpec(plain, 0.5), LoraSpec(dora, 0.5))),
                tmp_path / "out",
                warn=seen.append,
            )
    finally:
        for logger in loggers:
            logger.removeHandler(record)
    lora_noise = ("No LoRA keys", "DoRA", "peft_config", "adapter")
    leaked = [line for line in record.lines if any(w in line for w in lora_noise)]
    leaked += [str(w.message) for w in raised if any(n in str(w.message) for n in lora_noise)]
    assert leaked == []
    assert list(result.warnings) == seen  # the callback saw each, as it came, once
    assert (
        "LoRA dora.safetensors: diffusers drops its DoRA magnitude vectors (dora_scale) and "
        "applies it as a plain LoRA"
    ) in result.warnings
    assert not any("No LoRA keys" in w or "peft_config" in w for w in result.warnings)


def test_lora_notes_keep_what_matters(tmp_path: Path) -> None:
    from modelsafe.plugins.builtin.backend_diffusers import lora_notes
    from modelsafe.runtime.generate import GenerateRequest

    unet_only = save_tensors(
        tmp_path / "u.safetensors",
        {"lora_unet_mid_block_attentions_0_proj_in.lora_down.weight": torch.zeros(2, 4)},
    )
    with_te = save_tensors(
        tmp_path / "t.safetensors",
        {"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(2, 4)},
    )
    request = GenerateRequest(checkpoint=tmp_path, prompt="", family="sd1")
    no_te = LibraryMessage(
        "diffusers",
        "WARNING",
        "No LoRA keys associated to CLIPTextModel found with the prefix='text_encoder'. This is "
        "safe to ignore if ...",
    )
    keys = LibraryMessage(
        "diffusers",
        "WARNING",
        "Loading adapter weights from state_dict led to unexpected keys found in the model: "
        "a.lora_A.lora0.weight, b.lora_B.lora0.weight. ",
    )
    failed = LibraryMessage("diffusers", "ERROR", "Loading lora0 was unsuccessful with ...")
    other = LibraryMessage("peft", "UserWarning", "something new\nsecond line")
    deprecated = LibraryMessage("diffusers", "FutureWarning", "will be removed")
    assert lora_notes([no_te, deprecated], request, unet_only, "lora0", failed=False) == []
    assert lora_notes([no_te, keys, other], request, with_te, "lora0", failed=False) == [
        "LoRA t.safetensors: none of its text_encoder keys match this sd1 model's text_encoder "
        "(CLIPTextModel); they are ignored",
        "LoRA t.safetensors: 2 of its weights match no layer of this sd1 model; ignored "
        "(e.g. a.lora_A.weight)",
        "LoRA t.safetensors: peft says: something new",
    ]
    assert lora_notes([failed], request, with_te, "lora0", failed=True) == []
    assert lora_notes([failed], request, with_te, "lora0", failed=False) == [
        "LoRA t.safetensors: diffusers says: Loading lora0 was unsuccessful with ..."
    ]


# -- embeddings ---------------------------------------------------------------------------------


def test_embeddings_that_cannot_fit_are_refused_before_loading(
    tiny: Callable[[str], Tiny], run_cli: Any, tmp_path: Path, no_load: list[str]
) -> None:
    sd1, sdxl = tiny("sd1"), tiny("sdxl")  # both text encoders 32 wide
    out = tmp_path / "o"
    wide = save_tensors(tmp_path / "wide.safetensors", {"emb_params": torch.randn(2, 768)})
    _refused(
        run_cli,
        _args(sd1, sd1.single, out, "--embedding", f"{wide}:zq"),
        "embedding wide.safetensors does not fit this SD1 model: embedding width 768 fits none "
        "of SD1's text encoders (clip_l 32)",
    )
    xl = save_tensors(
        tmp_path / "xl.safetensors", {"clip_l": torch.randn(2, 32), "clip_g": torch.randn(2, 32)}
    )
    _refused(
        run_cli,
        _args(sd1, sd1.folder, out, "--embedding", f"{xl}:zq"),
        "embedding xl.safetensors does not fit this SD1 model",
        "(it holds clip_l and clip_g vectors: an SDXL embedding)",
    )
    one = save_tensors(tmp_path / "one.safetensors", {"emb_params": torch.randn(2, 32)})
    _refused(
        run_cli,
        _args(sdxl, sdxl.folder, out, "--embedding", f"{one}:zq"),
        "embedding one.safetensors does not fit this SDXL model: embedding width 32 fits "
        "clip_l, but SDXL also needs a vector for clip_g",
    )
    # a token-named diffusers file the registry cannot place: its tensors are read (audited
    # pickle, weights_only) to learn the width
    token_named = tmp_path / "learned_embeds.bin"
    torch.save({"<zq>": torch.randn(48)}, str(token_named))
    _refused(
        run_cli,
        _args(sd1, sd1.single, out, "--embedding", f"{token_named}:zq"),
        "embedding learned_embeds.bin does not fit this SD1 model: embedding width 48",
    )
    with pytest.raises(UsageError, match="also needs a vector for clip_g"):
        generate(
            request_for(sdxl, sdxl.folder, embeddings=(EmbeddingSpec(one, "zq"),)),
            tmp_path / "lib",
        )
    assert no_load == [] and not out.exists()


def test_embeddings_that_fit_still_work(tiny: Callable[[str], Tiny], tmp_path: Path) -> None:
    sdxl, sd1 = tiny("sdxl"), tiny("sd1")
    gen = torch.Generator().manual_seed(3)
    xl = save_tensors(
        tmp_path / "xl.safetensors",
        {"clip_l": torch.randn(2, 32, generator=gen), "clip_g": torch.randn(2, 32, generator=gen)},
    )
    base = generate(request_for(sdxl, sdxl.folder, prompt="a zq"), tmp_path / "a").images[0]
    with_xl = generate(
        request_for(sdxl, sdxl.folder, prompt="a zq", embeddings=(EmbeddingSpec(xl, "zq"),)),
        tmp_path / "b",
    )
    assert not np.array_equal(pixels(base.path), pixels(with_xl.images[0].path))
    assert with_xl.warnings == ()
    token_named = tmp_path / "learned_embeds.bin"
    torch.save({"<zq>": torch.randn(32, generator=gen)}, str(token_named))
    made = generate(
        request_for(sd1, sd1.single, prompt="a zq", embeddings=(EmbeddingSpec(token_named, "zq"),)),
        tmp_path / "c",
    )
    assert made.images and made.images[0].recipe.embeddings[0].token == "zq"


# -- one verdict with `modelsafe resolve` ------------------------------------------------------


def test_generate_refuses_what_resolve_rejects_with_the_same_reason(
    run_cli: Any, tmp_path: Path, no_load: list[str]
) -> None:
    """Real tensor layouts (header-only, sparse): an SD1 checkpoint the registry identifies,
    with a Flux LoRA, an SD2 embedding and an SDXL embedding."""
    checkpoint = write_safetensors(
        tmp_path / "sd15.safetensors", unet_checkpoint("sd1"), data="sparse"
    )
    flux = _flux_lora(tmp_path / "flux.safetensors")
    sd2 = write_safetensors(tmp_path / "sd2emb.safetensors", embedding("sd2"), data="zeros")
    xl = write_safetensors(tmp_path / "xlemb.safetensors", embedding("sdxl"), data="zeros")
    for flag, part in (("--lora", flux), ("--embedding", sd2), ("--embedding", xl)):
        code, out, err = run_cli(
            "--catalog", str(tmp_path / "c.db"), "resolve", str(checkpoint), flag, str(part),
            "--json",
        )  # fmt: skip
        assert code == 1, err
        verdict = json.loads(out)["parts"][0]
        assert verdict["status"] == "rejected"
        rejects = [r["reason"] for r in verdict["reasons"] if r["status"] == "reject"]
        code, _out, err = run_cli(
            "--catalog", str(tmp_path / "c.db"), "generate", "--checkpoint", str(checkpoint),
            "--prompt", "a cat", "--out", str(tmp_path / "o"), flag, str(part),
        )  # fmt: skip
        assert code == 2, err
        assert rejects[0] in err, (rejects, err)
    assert no_load == []
