"""Tiny real diffusers pipelines (random weights, a few MB each), written to disk as
diffusers folders and as single files, with tiny local tokenizers and tiny family configs.

A plugin author's (and modelsafe's own) tests use :func:`tiny_model`::

    from modelsafe.testing.tiny_models import tiny_model
    t = tiny_model("sd1", tmp_path)   # t.folder, t.single, t.configs, t.tokenizers, t.parts

Families: sd1, sd2, sdxl, sdxl_refiner, sd3, sd3.5-large, sd3.5-medium, flux1, flux1-schnell.
Needs the ``runtime`` extra (torch, diffusers, transformers).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

CHARS = "abcdefghijklmnopqrstuvwxyz"


FAMILIES = (
    "sd1",
    "sd2",
    "sdxl",
    "sdxl_refiner",
    "sd3",
    "sd3.5-large",
    "sd3.5-medium",
    "flux1",
    "flux1-schnell",
)


@dataclass
class Tiny:
    family: str  # the factory's name: sd1, ..., sd3.5-large, flux1-schnell
    folder: Path  # diffusers pipeline folder
    single: Path  # single file (full ldm checkpoint for sd1, else the bare denoiser)
    configs: Path  # <family>.<component>.json files
    tokenizers: Path  # <tokenizer component>/ folders
    parts: dict[str, Path] = field(default_factory=dict)  # vae / text encoder single files
    pipe: Any = None

    @property
    def base_family(self) -> str:
        """The modelsafe family (``sd3.5`` for ``sd3.5-large``, ``flux1`` for ``flux1-schnell``)."""
        return self.family.split("-")[0]

    @property
    def variant(self) -> str | None:
        head, _, tail = self.family.partition("-")
        return tail or None


def write_clip_tokenizer(folder: Path) -> None:
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in CHARS:
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    tok = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    tok.model_max_length = 77
    tok.save_pretrained(str(folder))


def write_t5_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast  # type: ignore[attr-defined]

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(ch, -1.0) for ch in "\u2581" + CHARS]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    fast = T5TokenizerFast(
        tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>", extra_ids=0
    )
    fast.model_max_length = 64
    fast.save_pretrained(str(folder))


def _clip(projection: bool = False, hidden: int = 32) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        hidden_size=hidden,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        vocab_size=1000,
        max_position_embeddings=77,
        projection_dim=32,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        hidden_act="gelu",
    )
    torch.manual_seed(0)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()


def _t5() -> Any:
    from transformers import T5Config, T5EncoderModel

    config = T5Config(  # type: ignore[call-arg]
        vocab_size=64,
        d_model=32,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        feed_forward_proj="gated-gelu",
        is_encoder_decoder=False,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    torch.manual_seed(0)
    return T5EncoderModel(config).eval()


def _vae(latent_channels: int = 4, flow: bool = False) -> Any:
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    if flow:
        return AutoencoderKL(
            sample_size=32,
            in_channels=3,
            out_channels=3,
            block_out_channels=(4,),
            layers_per_block=1,
            latent_channels=latent_channels,
            norm_num_groups=1,
            use_quant_conv=False,
            use_post_quant_conv=False,
            shift_factor=0.0609,
            scaling_factor=1.5035,
        )
    return AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=latent_channels,
        layers_per_block=1,
        sample_size=32,
    )


def _sd_unet(cross: int, **extra: Any) -> Any:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross,
        attention_head_dim=(2, 4),
        norm_num_groups=32,
        **extra,
    )


def _euler(prediction: str = "epsilon") -> Any:
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
        prediction_type=prediction,
    )


def build_pipeline(family: str, tokenizers: Path) -> Any:
    import diffusers
    from transformers import CLIPTokenizer, T5TokenizerFast  # type: ignore[attr-defined]

    clip_tok = CLIPTokenizer.from_pretrained(str(tokenizers / "tokenizer"))
    t5_tok = T5TokenizerFast.from_pretrained(str(tokenizers / "t5"))
    if family in ("sd1", "sd2"):
        extra = {"use_linear_projection": True} if family == "sd2" else {}
        return diffusers.StableDiffusionPipeline(
            vae=_vae(),
            text_encoder=_clip(),
            tokenizer=clip_tok,
            unet=_sd_unet(32, **extra),
            scheduler=_euler("v_prediction" if family == "sd2" else "epsilon"),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    if family == "sdxl":
        return diffusers.StableDiffusionXLPipeline(
            vae=_vae(),
            text_encoder=_clip(),
            text_encoder_2=_clip(projection=True),
            tokenizer=clip_tok,
            tokenizer_2=clip_tok,
            unet=_sd_unet(
                64,
                addition_embed_type="text_time",
                addition_time_embed_dim=8,
                projection_class_embeddings_input_dim=80,
                transformer_layers_per_block=(1, 2),
                use_linear_projection=True,
            ),
            scheduler=_euler(),
        )
    if family == "sdxl_refiner":
        return diffusers.StableDiffusionXLImg2ImgPipeline(
            vae=_vae(),
            text_encoder=None,
            text_encoder_2=_clip(projection=True),
            tokenizer=None,
            tokenizer_2=clip_tok,
            unet=_sd_unet(
                32,
                addition_embed_type="text_time",
                addition_time_embed_dim=8,
                projection_class_embeddings_input_dim=72,
                use_linear_projection=True,
            ),
            scheduler=_euler(),
            requires_aesthetics_score=True,
        )
    if family in ("sd3", "sd3.5-large", "sd3.5-medium"):
        # SD3.5 adds q/k RMS norms; Medium (MMDiT-X) also a second attention in early blocks.
        sd35: dict[str, Any] = {} if family == "sd3" else {"qk_norm": "rms_norm"}
        if family == "sd3.5-medium":
            sd35["dual_attention_layers"] = (0,)
        torch.manual_seed(0)
        transformer: Any = diffusers.SD3Transformer2DModel(
            sample_size=32,
            patch_size=1,
            in_channels=4,
            num_layers=1,
            attention_head_dim=8,
            num_attention_heads=4,
            caption_projection_dim=32,
            joint_attention_dim=32,
            pooled_projection_dim=64,
            out_channels=4,
            **sd35,
        )
        return diffusers.StableDiffusion3Pipeline(
            transformer=transformer,
            vae=_vae(flow=True),
            text_encoder=_clip(projection=True),
            text_encoder_2=_clip(projection=True),
            text_encoder_3=_t5(),
            tokenizer=clip_tok,
            tokenizer_2=clip_tok,
            tokenizer_3=t5_tok,
            scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0),
        )
    if family in ("flux1", "flux1-schnell"):
        torch.manual_seed(0)
        transformer = diffusers.FluxTransformer2DModel(
            patch_size=1,
            in_channels=4,
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=32,
            pooled_projection_dim=32,
            axes_dims_rope=[4, 4, 8],
            guidance_embeds=family == "flux1",
        )
        return diffusers.FluxPipeline(
            transformer=transformer,
            vae=_vae(latent_channels=1, flow=True),
            text_encoder=_clip(),
            text_encoder_2=_t5(),
            tokenizer=clip_tok,
            tokenizer_2=t5_tok,
            scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=1.0),
        )
    raise ValueError(family)


def write_configs(folder: Path, family: str, out: Path) -> None:
    """``<family>.<component>.json`` files from a saved diffusers folder (as modelsafe ships)."""
    out.mkdir(parents=True, exist_ok=True)
    index = json.loads((folder / "model_index.json").read_text())
    (out / f"{family}.model_index.json").write_text(json.dumps(index))
    for component in index:
        for name in ("config.json", "scheduler_config.json"):
            src = folder / component / name
            if src.is_file() and not component.startswith("tokenizer"):
                (out / f"{family}.{component}.json").write_text(src.read_text())


def save_tensors(path: Path, state: dict[str, torch.Tensor]) -> Path:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, str(path))
    return path


def build(family: str, root: Path, tokenizers: Path) -> Tiny:
    """Write the tiny ``family`` model under ``root`` in every form the tests load."""
    pipe = build_pipeline(family, tokenizers)
    name = family.replace("-schnell", "")  # configs are looked up as <family>[-<variant>]
    folder = root / f"{family}-diffusers"
    pipe.save_pretrained(str(folder))
    configs = root / f"{family}-configs"
    write_configs(folder, name, configs)
    parts: dict[str, Path] = {}
    if family in ("sd1", "sd2"):
        from modelsafe.testing.ldm_layout import to_ldm_checkpoint

        single = save_tensors(root / f"{family}.safetensors", to_ldm_checkpoint(pipe))
    else:
        denoiser = pipe.transformer if hasattr(pipe, "transformer") else pipe.unet
        single = save_tensors(root / f"{family}-denoiser.safetensors", denoiser.state_dict())
        parts["vae"] = save_tensors(root / f"{family}-vae.safetensors", pipe.vae.state_dict())
        for te in ("text_encoder", "text_encoder_2", "text_encoder_3"):
            model = getattr(pipe, te, None)
            if model is not None:
                parts[te] = save_tensors(root / f"{family}-{te}.safetensors", model.state_dict())
    return Tiny(family, folder, single, configs, tokenizers, parts, pipe)


def tokenizer_dir(root: Path, flux: bool = False) -> Path:
    """A --tokenizers DIR: CLIP tokenizer/ (+ tokenizer_2/), T5 tokenizer_3/ (Flux: T5
    tokenizer_2/), and t5/ for building the pipelines."""
    write_clip_tokenizer(root / "tokenizer")
    if flux:
        write_t5_tokenizer(root / "tokenizer_2")
    else:
        write_clip_tokenizer(root / "tokenizer_2")
        write_t5_tokenizer(root / "tokenizer_3")
    write_t5_tokenizer(root / "t5")
    return root


def tiny_lora_kohya(unet: Any, path: Path, rank: int = 2, scale: float = 0.5) -> Path:
    """A kohya-format LoRA (``lora_unet_*.lora_down/lora_up/alpha``) for every attention
    projection of ``unet``, with non-zero random weights."""
    gen = torch.Generator().manual_seed(1)
    state: dict[str, torch.Tensor] = {}
    for name, module in unet.named_modules():
        if (
            isinstance(module, torch.nn.Linear)
            and name.endswith(("to_q", "to_k", "to_v", "to_out.0"))
            and "attentions" in name
        ):
            key = "lora_unet_" + name.replace(".", "_")
            state[key + ".lora_down.weight"] = torch.randn(rank, module.in_features, generator=gen)
            state[key + ".lora_up.weight"] = (
                torch.randn(module.out_features, rank, generator=gen) * scale
            )
            state[key + ".alpha"] = torch.tensor(float(rank))
    return save_tensors(path, state)


def tiny_model(family: str, root: Path) -> Tiny:
    """Build the tiny ``family`` model (see :data:`FAMILIES`) with its own tokenizers under
    ``root``: a diffusers folder, a single file, the family configs and part files."""
    if family not in FAMILIES:
        raise ValueError(f"no tiny model for {family!r}; choose one of {', '.join(FAMILIES)}")
    root.mkdir(parents=True, exist_ok=True)
    flux = family.startswith("flux1")
    tokenizers = tokenizer_dir(root / ("tokenizers-flux" if flux else "tokenizers"), flux=flux)
    return build(family, root, tokenizers)
