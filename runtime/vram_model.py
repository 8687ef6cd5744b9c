"""Activation and working-set formulas for the three phases of generation (docs/vram.md).

Weights come from ``modelsafe.registry.vram``; this module adds what a forward pass keeps alive
at a resolution and batch. Every figure is elements x bytes of the compute dtype, an upper
estimate of live tensors (PyTorch's caching allocator peak, ``torch.cuda.max_memory_allocated``):

- denoising, UNet: skip connections of the down path (3 per level: 2 resnets + downsampler) plus
  the largest transient of one block (14 x channels x pixels for a transformer block with GEGLU
  feed-forward, 6x for a resnet), for a batch doubled by classifier-free guidance;
- denoising, DiT (SD3/Flux/...): 16 x hidden x tokens (qkv, attention output, 4x MLP with its
  activation, modulated copies), tokens = latent patches + text tokens;
- attention: with PyTorch SDPA (the default in diffusers) no N x N score matrix is kept; with
  naive attention it is heads x N^2 per sample, and attention slicing computes one slice
  (one head of one sample) at a time;
- decode (VAE): 5 x the widest full-resolution feature map of the decoder (256 channels at full
  size for SD/Flux VAEs: upsampled input, conv output, normalised copy, residual, and the
  allocator's slack), per image decoded at once (all, or one with VAE slicing), at a 512 px tile
  with VAE tiling. The factor 5 is fitted to a measured SDXL decode (1024 px, fp32: 4.9 GiB of
  activations on an H100, docs/benchmarks.md); the architecture count alone gives 4;
- text encoding: 12 x width x tokens per prompt (negligible next to the weights).
"""

from __future__ import annotations

from dataclasses import dataclass

DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "fp8": 2}  # fp8 storage computes in 16 bits
CUDA_CONTEXT_BYTES = 400 * 1024**2  # CUDA context + cuBLAS workspace, outside the allocator
VAE_TILE_PX = 512
# Full-resolution feature maps alive at the decoder's peak (fitted: see the module docstring).
DECODE_MAPS = 5


@dataclass(frozen=True)
class Arch:
    """What activations depend on, per family (defaults from the diffusers model configs)."""

    kind: str  # unet | dit
    channels: tuple[int, ...] = ()
    attention_levels: tuple[bool, ...] = ()
    head_dim: int = 64
    hidden: int = 0
    text_tokens: int = 77
    patch: int = 2
    cfg: bool = True  # classifier-free guidance runs the denoiser on two batches
    latent_channels: int = 4
    vae_channels: tuple[int, ...] = (128, 256, 512, 512)
    text_width: int = 768
    default_resolution: int = 512


ARCHS: dict[str, Arch] = {
    "sd1": Arch("unet", (320, 640, 1280, 1280), (True, True, True, False), head_dim=40),
    "sd2": Arch(
        "unet",
        (320, 640, 1280, 1280),
        (True, True, True, False),
        text_width=1024,
        default_resolution=768,
    ),
    "sdxl": Arch(
        "unet", (320, 640, 1280), (False, True, True), text_width=1280, default_resolution=1024
    ),
    "sdxl_refiner": Arch(
        "unet",
        (384, 768, 1536, 1536),
        (False, True, True, False),
        text_width=1280,
        default_resolution=1024,
    ),
    "sd3": Arch(
        "dit",
        hidden=1536,
        text_tokens=333,
        latent_channels=16,
        text_width=4096,
        default_resolution=1024,
    ),
    "sd3.5": Arch(
        "dit",
        hidden=2432,
        text_tokens=333,
        latent_channels=16,
        text_width=4096,
        default_resolution=1024,
    ),
    "flux1": Arch(
        "dit",
        hidden=3072,
        text_tokens=512,
        cfg=False,
        latent_channels=16,
        text_width=4096,
        default_resolution=1024,
    ),
    "chroma": Arch(
        "dit",
        hidden=3072,
        text_tokens=512,
        latent_channels=16,
        text_width=4096,
        default_resolution=1024,
    ),
    "z-image": Arch(
        "dit",
        hidden=3840,
        text_tokens=512,
        latent_channels=16,
        text_width=2560,
        default_resolution=1024,
    ),
    "qwen-image": Arch(
        "dit",
        hidden=3072,
        text_tokens=512,
        latent_channels=16,
        text_width=3584,
        default_resolution=1024,
    ),
    "hidream": Arch(
        "dit",
        hidden=2560,
        text_tokens=512,
        latent_channels=16,
        text_width=4096,
        default_resolution=1024,
    ),
}
FALLBACK_ARCH = ARCHS["sdxl"]


def arch_for(family: str, hidden: int | None = None) -> Arch:
    from dataclasses import replace

    arch = ARCHS.get(family, FALLBACK_ARCH)
    if hidden and arch.kind == "dit":
        arch = replace(arch, hidden=hidden)
    return arch


def denoise_activation_bytes(
    arch: Arch,
    width: int,
    height: int,
    batch: int,
    dtype: str,
    *,
    attention: str = "sdpa",
    attention_slicing: bool = False,
) -> int:
    """Live activation bytes of one denoiser forward pass (the peak of the denoising phase)."""
    b = DTYPE_BYTES[dtype]
    eff = batch * (2 if arch.cfg else 1)
    lat = (width // 8) * (height // 8)
    scores = 0
    if arch.kind == "unet":
        pixels = [lat // 4**i for i in range(len(arch.channels))]
        skips = sum(3 * c * n for c, n in zip(arch.channels, pixels, strict=True))
        transient = max(
            c * n * (14 if att else 6)
            for c, n, att in zip(arch.channels, pixels, arch.attention_levels, strict=True)
        )
        elems = skips + transient
        if attention == "naive":
            for c, n, att in zip(arch.channels, pixels, arch.attention_levels, strict=True):
                if att:
                    heads = max(1, c // arch.head_dim)
                    per = n * n * (1 if attention_slicing else heads * eff)
                    scores = max(scores, per)
    else:
        tokens = lat // (arch.patch * arch.patch) + arch.text_tokens
        elems = 16 * arch.hidden * tokens
        if attention == "naive":
            heads = max(1, arch.hidden // 128)
            scores = tokens * tokens * (1 if attention_slicing else heads * eff)
    return int((elems * eff + scores) * b)


def decode_activation_bytes(
    arch: Arch, width: int, height: int, batch: int, dtype: str, *, tiling: bool, slicing: bool
) -> int:
    """Live activation bytes of the VAE decoder (the peak of the decode phase)."""
    b = DTYPE_BYTES[dtype]
    images = 1 if slicing else batch
    w, h = (min(width, VAE_TILE_PX), min(height, VAE_TILE_PX)) if tiling else (width, height)
    # The widest full-resolution map: the decoder's second-to-last width, upsampled to full size.
    widest = arch.vae_channels[1] if len(arch.vae_channels) > 1 else arch.vae_channels[0]
    elems = DECODE_MAPS * widest * w * h
    output = batch * 3 * width * height * 4  # the decoded images, kept in fp32
    return int(elems * images * b + output)


def text_activation_bytes(arch: Arch, batch: int, dtype: str) -> int:
    """Live activation bytes of the text encoders for ``batch`` prompts (+ negatives)."""
    eff = batch * (2 if arch.cfg else 1)
    return int(12 * arch.text_width * max(arch.text_tokens, 77) * eff * DTYPE_BYTES[dtype])
