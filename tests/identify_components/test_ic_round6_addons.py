"""Add-ons that were misnamed or unknown: IP-Adapter full-face and InstantID, ControlNet-LLLite,
A1111's VAE approximation and hypernetworks, PhotoMaker, the Flux ControlNet Union and XLabs'
Flux ControlNet. Each file is written in the layout its project ships (``.pt``/``.bin`` pickles
through ``torch.save`` as their trainers save them, else safetensors)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from modelsafe.registry.folders import folder_report
from modelsafe.registry.inspect import inspect_path
from modelsafe.testing import write_safetensors
from modelsafe.testing.layouts import adapters as ad
from modelsafe.testing.layouts import base_models as bm
from modelsafe.testing.layouts import components as co
from modelsafe.testing.layouts.base_models import Specs, _lin

torch = pytest.importorskip("torch")


def _tensor(shape: tuple[int, ...]) -> Any:
    """A zero tensor of ``shape`` stored in one element (a stride-0 view), as torch.save keeps."""
    return torch.zeros(1, dtype=torch.float16).expand(*shape) if shape else torch.zeros(())


def _nested(specs: Specs) -> dict[str, dict[str, Any]]:
    """tencent-ailab's ``ip-adapter*.bin``: ``{"image_proj": {...}, "ip_adapter": {...}}``."""
    out: dict[str, dict[str, Any]] = {}
    for name, _, shape in specs:
        top, rest = name.split(".", 1)
        out.setdefault(top, {})[rest] = _tensor(shape)
    return out


def _ip_layers(family: str, ctx: int) -> Specs:
    unet = bm.diffusers_denoiser(family)
    widths = [s[0] for n, _, s in unet if n.endswith(".attn2.to_k.weight")]
    specs: Specs = []
    for i, hidden in enumerate(widths):
        specs += _lin(f"ip_adapter.{2 * i + 1}.to_k_ip", hidden, ctx, "F16", bias=False)
        specs += _lin(f"ip_adapter.{2 * i + 1}.to_v_ip", hidden, ctx, "F16", bias=False)
    return specs


def test_ip_adapter_full_face_reads_vit_h_hidden_states(tmp_path: Path) -> None:
    # IPAdapterFull's MLPProjModel: Linear(1280, 1280), GELU, Linear(1280, 768), LayerNorm(768)
    specs = _lin("image_proj.proj.0", 1280, 1280, "F16") + _lin(
        "image_proj.proj.2", 768, 1280, "F16"
    )
    specs += [
        ("image_proj.proj.3.weight", "F16", (768,)),
        ("image_proj.proj.3.bias", "F16", (768,)),
    ]
    path = write_safetensors(
        tmp_path / "ip-adapter-full-face_sd15.safetensors", specs + _ip_layers("sd1", 768)
    )
    report = inspect_path(path)
    assert (report.family, report.kind, report.variant) == ("sd1", "ip_adapter", "full")
    assert report.facts["image_encoder"] == "clip_vit_h", report.facts
    assert report.facts["num_tokens"] == 257, report.facts


def _instantid() -> Specs:
    """InstantID's Resampler(dim=1280, depth=4, heads=20, num_queries=16, embedding_dim=512,
    output_dim=2048) and the SDXL to_k_ip/to_v_ip layers."""
    dim, ctx = 1280, 2048
    specs: Specs = [("image_proj.latents", "F16", (1, 16, dim))]
    specs += _lin("image_proj.proj_in", dim, 512, "F16") + _lin(
        "image_proj.proj_out", ctx, dim, "F16"
    )
    specs += [
        ("image_proj.norm_out.weight", "F16", (ctx,)),
        ("image_proj.norm_out.bias", "F16", (ctx,)),
    ]
    for layer in range(4):
        p = f"image_proj.layers.{layer}"
        for norm in ("0.norm1", "0.norm2", "1.0"):
            specs += [(f"{p}.{norm}.weight", "F16", (dim,)), (f"{p}.{norm}.bias", "F16", (dim,))]
        specs += _lin(f"{p}.0.to_q", dim, dim, "F16", bias=False)
        specs += _lin(f"{p}.0.to_kv", 2 * dim, dim, "F16", bias=False)
        specs += _lin(f"{p}.0.to_out", dim, dim, "F16", bias=False)
        specs += _lin(f"{p}.1.1", 4 * dim, dim, "F16", bias=False)
        specs += _lin(f"{p}.1.3", dim, 4 * dim, "F16", bias=False)
    return specs + _ip_layers("sdxl", ctx)


@pytest.mark.parametrize("suffix", [".bin", ".safetensors"])
def test_instantid_is_named_with_its_face_encoder(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"ip-adapter{suffix}"
    if suffix == ".bin":
        torch.save(_nested(_instantid()), path)
    else:
        write_safetensors(path, _instantid())
    report = inspect_path(path)
    assert (report.family, report.kind, report.variant) == ("sdxl", "ip_adapter", "instantid")
    assert report.facts["face_encoder"] == "insightface"
    assert report.facts["face_embed_dim"] == 512
    assert "image_encoder" not in report.facts  # no CLIP vision model to pick
    assert any("IdentityNet" in line for line in report.evidence), report.evidence


def test_controlnet_lllite_sdxl(tmp_path: Path) -> None:
    # sd-scripts control_net_lllite.py: attn1 to_q/k/v and attn2 to_q of every SDXL block
    attn = [
        m
        for m in ad.sdxl_unet_modules("sgm")
        if re.search(r"attn1\.(to_q|to_k|to_v)$|attn2\.to_q$", m[0])
    ]
    specs: Specs = []
    for module, (_, width) in attn:
        n = "lllite_unet_" + module.replace(".", "_")
        specs += [(f"{n}.conditioning1.0.weight", "F16", (16, 3, 4, 4))]
        specs += [(f"{n}.conditioning1.2.weight", "F16", (32, 16, 4, 4))]
        specs += _lin(f"{n}.down.0", 64, width, "F16") + _lin(f"{n}.mid.0", 64, 96, "F16")
        specs += _lin(f"{n}.up.0", width, 64, "F16")
    report = inspect_path(write_safetensors(tmp_path / "controllllite_sdxl.safetensors", specs))
    assert (report.family, report.kind, report.variant) == ("sdxl", "controlnet", "lllite")
    assert report.facts["mlp_dim"] == 64


def _vae_approx() -> dict[str, Any]:
    """A1111's modules/sd_vae_approx.py VAEApprox state dict."""
    chans = [(4, 8, 7), (8, 16, 5), (16, 32, 3), (32, 64, 3), (64, 32, 3), (32, 16, 3)]
    chans += [(16, 8, 3), (8, 3, 3)]
    out: dict[str, Any] = {}
    for i, (cin, cout, k) in enumerate(chans, 1):
        out[f"conv{i}.weight"] = torch.zeros(cout, cin, k, k)
        out[f"conv{i}.bias"] = torch.zeros(cout)
    return out


def test_a1111_vae_approx_is_a_preview_vae(tmp_path: Path) -> None:
    folder = tmp_path / "models" / "VAE-approx"
    folder.mkdir(parents=True)
    torch.save(_vae_approx(), folder / "vaeapprox-sdxl.pt")
    report = inspect_path(folder / "vaeapprox-sdxl.pt")
    assert (report.kind, report.variant) == ("vae", "approx"), report.evidence
    assert report.family in ("sd1", "sdxl")
    others = {c["family"] for c in report.candidates if c["kind"] == "vae"}
    assert {"sd1", "sdxl"} - {report.family} <= others  # the tie is said, not guessed
    assert any("ambiguous" in line for line in report.evidence), report.evidence
    assert report.facts["latent_channels"] == 4
    assert report.facts["preview_only"] is True
    assert folder_report(folder / "vaeapprox-sdxl.pt", report.family, report.kind) == []


def _hypernetwork(sizes: tuple[int, ...]) -> dict[Any, Any]:
    """A1111 Hypernetwork.save(): width -> [k, v] MLP state dicts, plus its settings."""
    hn: dict[Any, Any] = {}
    for size in sizes:
        hn[size] = [
            {
                "linear.0.weight": torch.zeros(8, size),
                "linear.0.bias": torch.zeros(8),
                "linear.1.weight": torch.zeros(size, 8),
                "linear.1.bias": torch.zeros(size),
            }
            for _ in range(2)
        ]
    hn.update(
        step=5000,
        name="myhn",
        layer_structure=[1, 2, 1],
        activation_func="linear",
        is_layer_norm=False,
        sd_checkpoint_name="v1-5-pruned-emaonly",
    )
    return hn


@pytest.mark.parametrize(
    ("sizes", "family"), [((768, 320, 640, 1280), "sd1"), ((1024, 320, 640, 1280), "sd2")]
)
def test_a1111_hypernetwork(tmp_path: Path, sizes: tuple[int, ...], family: str) -> None:
    path = tmp_path / "myhn.pt"
    torch.save(_hypernetwork(sizes), path)
    report = inspect_path(path)
    assert (report.family, report.kind) == (family, "hypernetwork"), report.evidence
    assert report.facts["sizes"] == sorted(sizes)
    wrong = folder_report(tmp_path / "models" / "Lora" / "myhn.pt", family, "hypernetwork")
    assert wrong and "hypernetworks/" in wrong[0]


def test_photomaker_v1(tmp_path: Path) -> None:
    encoder = {name: _tensor(shape) for name, _, shape in co.clip_vision("clip_vit_l")}
    encoder["visual_projection_2.weight"] = _tensor((1280, 1024))
    for mlp in ("mlp1", "mlp2"):
        encoder[f"fuse_module.{mlp}.fc1.weight"] = _tensor((2048, 4096 if mlp == "mlp1" else 2048))
        encoder[f"fuse_module.{mlp}.fc2.weight"] = _tensor((2048, 2048))
        encoder[f"fuse_module.{mlp}.layernorm.weight"] = _tensor((2048,))
    encoder["fuse_module.layer_norm.weight"] = _tensor((2048,))
    lora = {
        name.replace(".lora_A.", ".lora.down.").replace(".lora_B.", ".lora.up."): _tensor(shape)
        for name, _, shape in ad.peft_lora([("unet.", ad.sdxl_unet_modules("diffusers"))], rank=8)
    }
    path = tmp_path / "photomaker-v1.bin"
    torch.save({"id_encoder": encoder, "lora_weights": lora}, path)
    report = inspect_path(path)
    assert (report.family, report.kind, report.variant) == ("sdxl", "photomaker", "v1")
    assert report.facts["context_dim"] == 2048


def test_flux_controlnet_union_and_xlabs_naming(tmp_path: Path) -> None:
    config = dict(num_layers=2, num_single_layers=1, num_mode=10, guidance_embeds=True)
    union = co.meta_state_dict("FluxControlNetModel", config, "BF16")
    report = inspect_path(write_safetensors(tmp_path / "union.safetensors", union))
    assert (report.family, report.variant) == ("flux1", "union"), report.evidence
    assert report.facts["control_modes"] == 10

    keep = re.compile(r"single_blocks|double_blocks\.(?:[2-9]|1\d)\.|final_layer")
    xlabs = [s for s in bm.bfl_flux() if not keep.match(s[0])]
    for i in range(2):
        xlabs += _lin(f"controlnet_blocks.{i}", 3072, 3072, "BF16")
    xlabs += _lin("pos_embed_input", 3072, 64, "BF16")
    xlabs += [("input_hint_block.0.weight", "BF16", (16, 3, 3, 3))]
    report = inspect_path(write_safetensors(tmp_path / "xlabs.safetensors", xlabs))
    assert (report.family, report.kind, report.variant) == ("flux1", "controlnet", None)
    assert report.facts["naming"] == "bfl"


def test_resolve_refuses_parts_no_pipeline_loads(tmp_path: Path, run_cli: Any) -> None:
    checkpoint = write_safetensors(tmp_path / "sd15.safetensors", bm.unet_checkpoint("sd1"))
    torch.save(_vae_approx(), tmp_path / "model.pt")
    torch.save(_hypernetwork((768, 320, 640, 1280)), tmp_path / "myhn.pt")
    code, out, _ = run_cli("resolve", str(checkpoint), "--vae", str(tmp_path / "model.pt"))
    assert code == 1 and "VAE approximation" in out, out
    code, out, _ = run_cli("resolve", str(checkpoint), "--lora", str(tmp_path / "myhn.pt"))
    assert code == 1 and "it is a hypernetwork (sd1)" in out, out
