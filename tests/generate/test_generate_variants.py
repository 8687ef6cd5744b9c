"""SDXL variants that sample otherwise than their family: the marker tensors ComfyUI saves
(``edm_mean``/``edm_std`` Playground v2.5, ``edm_vpred.sigma_*`` CosXL, ``v_pred`` + ``ztsnr``)
choose the scheduler, its sigmas and prediction type, and the latent format; the recipe records
what ran. Denoisers that take more than the latent (inpainting 9 channels, image editing 8) are
refused before anything loads. Tiny real SDXL-shaped files, on CPU."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from test_generate_families import pixels, request_for

from modelsafe.errors import BackendError
from modelsafe.runtime.diffusers_loader import denoiser_channels, model_sampling
from modelsafe.runtime.generate import GenerateRequest, generate, with_defaults
from modelsafe.runtime.recipe import recipe_from_png
from modelsafe.testing.ldm_layout import unet_to_ldm
from modelsafe.testing.tiny_models import Tiny, save_tensors

EMPTY = torch.tensor([])  # how ComfyUI saves its v_pred / ztsnr markers
PLAYGROUND = {"edm_mean": torch.zeros(1, 4, 1, 1), "edm_std": torch.ones(1, 4, 1, 1)}


def edm_vpred(high: float, low: float) -> dict[str, torch.Tensor]:
    return {"edm_vpred.sigma_max": torch.tensor(high), "edm_vpred.sigma_min": torch.tensor(low)}


@pytest.fixture(scope="module")
def sdxl(tiny: Callable[[str], Tiny]) -> Tiny:
    return tiny("sdxl")


@pytest.fixture(scope="module")
def ldm_unet(sdxl: Tiny) -> dict[str, torch.Tensor]:
    """The tiny SDXL UNet in the original (SGM) layout ComfyUI saves, ``model.diffusion_model.``
    keys and ``label_emb`` for diffusers' ``add_embedding``."""
    state = sdxl.pipe.unet.state_dict()
    plain = {k: v for k, v in state.items() if not k.startswith("add_embedding.")}
    ldm = unet_to_ldm(SimpleNamespace(config=sdxl.pipe.unet.config, state_dict=lambda: plain))
    for number, index in ((1, 0), (2, 2)):
        for kind in ("weight", "bias"):
            ldm[f"model.diffusion_model.label_emb.0.{index}.{kind}"] = state[
                f"add_embedding.linear_{number}.{kind}"
            ]
    return ldm


@pytest.fixture(scope="module")
def write(
    ldm_unet: dict[str, torch.Tensor], tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., Path]:
    """``write("name", markers, in_channels=4)``: the tiny UNet with ``markers`` beside it."""
    root = tmp_path_factory.mktemp("sdxl-variants")

    def make(name: str, markers: dict[str, torch.Tensor], in_channels: int = 4) -> Path:
        state = dict(ldm_unet)
        if in_channels != 4:
            key = "model.diffusion_model.input_blocks.0.0.weight"
            out, _, kh, kw = state[key].shape
            state[key] = torch.randn(out, in_channels, kh, kw, generator=torch.manual_seed(0))
        return save_tensors(root / f"{name}.safetensors", {**state, **markers})

    return make


def scheduler_of(req: GenerateRequest) -> tuple[Any, Any]:
    """(scheduler, VAE) of the pipeline the backend builds for ``req``."""
    from modelsafe.plugins.builtin.backend_diffusers import build_pipelines

    pipe, _refiner = build_pipelines(with_defaults(req))
    return pipe.scheduler, pipe.vae


def twice(req: GenerateRequest, out: Path) -> tuple[Any, np.ndarray]:
    """Generate ``req`` twice: the same pixels both times (the first result is returned)."""
    first = generate(req, out / "a")
    second = generate(req, out / "b")
    a = pixels(first.images[0].path)
    assert a.shape == (32, 32, 3) and np.array_equal(a, pixels(second.images[0].path))
    return first, a


def test_playground_markers_sample_edm_with_its_latent_format(
    sdxl: Tiny, write: Callable[..., Path], tmp_path: Path
) -> None:
    path = write("playground", PLAYGROUND)
    scheduler, vae = scheduler_of(request_for(sdxl, path))
    assert type(scheduler).__name__ == "EDMDPMSolverMultistepScheduler"  # Playground's own
    config = scheduler.config
    assert (config.sigma_min, config.sigma_max, config.sigma_data) == (0.002, 80.0, 0.5)
    assert (config.prediction_type, config.sigma_schedule) == ("epsilon", "karras")
    assert vae.config.scaling_factor == 0.5
    assert vae.config.latents_mean == [-1.6574, 1.886, -1.383, 2.5155]
    assert vae.config.latents_std == [8.4927, 5.9022, 6.5498, 5.2299]

    result, image = twice(request_for(sdxl, path), tmp_path)
    recipe = result.images[0].recipe
    assert (recipe.variant, recipe.scheduler, recipe.cfg) == (
        "playground-v2.5",
        "dpmpp_2m_karras",
        3,
    )
    sampling = recipe.extra["sampling"]
    assert sampling["scheduler_class"] == "EDMDPMSolverMultistepScheduler"
    assert sampling["noise_schedule"] == "edm" and sampling["sigma_max"] == 80.0
    assert sampling["latent_format"]["scaling_factor"] == 0.5
    assert sampling["source"] == "edm_mean and edm_std tensors"
    assert result.to_json()["sampling"] == sampling
    assert recipe_from_png(result.images[0].path).extra["sampling"] == sampling  # in the PNG
    plain = generate(request_for(sdxl, write("plain", {})), tmp_path / "plain").images[0]
    assert plain.recipe.extra["sampling"]["scheduler_class"] == "EulerDiscreteScheduler"
    assert not np.array_equal(image, pixels(plain.path))


def test_cosxl_markers_sample_edm_v_prediction_with_the_files_sigmas(
    sdxl: Tiny, write: Callable[..., Path], tmp_path: Path
) -> None:
    path = write("cosxl", edm_vpred(160.0, 0.004))  # not ComfyUI's defaults: read from the file
    scheduler, vae = scheduler_of(request_for(sdxl, path))
    assert type(scheduler).__name__ == "EDMEulerScheduler"  # the default euler, as EDM
    config = scheduler.config
    assert (config.sigma_min, config.sigma_max, config.sigma_data) == (0.004, 160.0, 1.0)
    assert (config.prediction_type, config.sigma_schedule) == ("v_prediction", "exponential")
    assert vae.config.get("latents_mean") is None and vae.config.scaling_factor != 0.5
    karras, _ = scheduler_of(request_for(sdxl, path, scheduler="dpmpp_2m_karras"))
    assert type(karras).__name__ == "EDMDPMSolverMultistepScheduler"
    assert (karras.config.sigma_max, karras.config.sigma_schedule) == (160.0, "karras")

    result, _ = twice(request_for(sdxl, path), tmp_path)
    recipe = result.images[0].recipe
    assert (recipe.variant, recipe.prediction_type, recipe.scheduler) == (
        "cosxl",
        "v_prediction",
        "euler",
    )
    sampling = recipe.extra["sampling"]
    assert sampling["scheduler_class"] == "EDMEulerScheduler"
    assert (sampling["sigma_min"], sampling["sigma_max"]) == (0.004, 160.0)
    assert "latent_format" not in sampling and not result.warnings


def test_v_pred_and_ztsnr_markers_set_the_prediction_and_zero_terminal_snr(
    sdxl: Tiny, write: Callable[..., Path], tmp_path: Path
) -> None:
    both = write("vpred-ztsnr", {"v_pred": EMPTY, "ztsnr": EMPTY})
    for name, cls in (("euler", "EulerDiscreteScheduler"), ("ddim", "DDIMScheduler")):
        scheduler, _ = scheduler_of(request_for(sdxl, both, scheduler=name))
        assert type(scheduler).__name__ == cls
        config = scheduler.config
        assert config.prediction_type == "v_prediction" and config.rescale_betas_zero_snr
        assert config.timestep_spacing == "trailing"
    only_v, _ = scheduler_of(request_for(sdxl, write("vpred", {"v_pred": EMPTY})))
    assert only_v.config.prediction_type == "v_prediction"
    assert not only_v.config.rescale_betas_zero_snr and only_v.config.timestep_spacing == "leading"

    result, _ = twice(request_for(sdxl, both), tmp_path)
    recipe = result.images[0].recipe
    assert recipe.prediction_type == "v_prediction" and recipe.variant is None
    assert recipe.extra["sampling"] == {
        "scheduler": "euler",
        "scheduler_class": "EulerDiscreteScheduler",
        "noise_schedule": "discrete",
        "prediction_type": "v_prediction",
        "zero_terminal_snr": True,
        "timestep_spacing": "trailing",
        "source": "v_pred and ztsnr tensors",
    }


def test_a_diffusers_folder_with_an_edm_scheduler_is_playground(sdxl: Tiny, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(sdxl.folder, tmp_path / "playground-diffusers"))
    (folder / "scheduler" / "scheduler_config.json").write_text(
        json.dumps(
            {
                "_class_name": "EDMDPMSolverMultistepScheduler",
                "sigma_min": 0.002,
                "sigma_max": 80.0,
                "sigma_data": 0.5,
                "prediction_type": "epsilon",
            }
        )
    )
    vae_file = folder / "vae" / "config.json"
    vae_config = json.loads(vae_file.read_text())
    latents = {"latents_mean": [0.1, 0.2, 0.3, 0.4], "latents_std": [1.0, 2.0, 3.0, 4.0]}
    vae_file.write_text(json.dumps({**vae_config, **latents, "scaling_factor": 0.5}))
    req = replace(request_for(sdxl, folder), vae=None, text_encoders={}, config_dir=None)
    image = generate(req, tmp_path / "out").images[0]
    assert (image.recipe.variant, image.recipe.scheduler) == ("playground-v2.5", "dpmpp_2m_karras")
    sampling = image.recipe.extra["sampling"]
    assert sampling["scheduler_class"] == "EDMDPMSolverMultistepScheduler"
    assert sampling["source"] == "scheduler/scheduler_config.json"
    assert sampling["latent_format"] == {"scaling_factor": 0.5, **latents}


@pytest.fixture
def no_load(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Loading a pipeline or a state dict fails the test (the input must be refused first)."""
    from modelsafe.plugins.builtin import backend_diffusers
    from modelsafe.runtime import diffusers_loader

    attempts: list[str] = []

    def never(*_a: Any, **_k: Any) -> Any:
        attempts.append("load")
        raise AssertionError("a model was loaded before the input was refused")

    for name in ("load_pipeline", "load_state_dict", "load_vae", "load_transformers_model"):
        monkeypatch.setattr(diffusers_loader, name, never)
    monkeypatch.setattr(backend_diffusers, "build_pipelines", never)
    return attempts


@pytest.mark.parametrize(
    ("markers", "scheduler", "refiner", "said"),
    [
        (PLAYGROUND, "ddim", False, "scheduler 'ddim' cannot sample this Playground v2.5 model"),
        (edm_vpred(120.0, 0.002), "unipc", False, "diffusers has EDM versions of Euler and"),
        (PLAYGROUND, "euler", True, "the SDXL refiner cannot take over from this Playground"),
        ({"v_pred": EMPTY, "ztsnr": EMPTY}, "heun", False, "with zero terminal SNR"),
    ],
)
def test_schedulers_the_sampling_cannot_use_are_refused_before_loading(
    sdxl: Tiny,
    write: Callable[..., Path],
    no_load: list[str],
    tmp_path: Path,
    markers: dict[str, torch.Tensor],
    scheduler: str,
    refiner: bool,
    said: str,
) -> None:
    path = write(f"refused-{scheduler}-{refiner}", markers)
    req = request_for(sdxl, path, scheduler=scheduler, refiner=path if refiner else None)
    with pytest.raises(BackendError) as caught:
        generate(req, tmp_path)
    assert said in caught.value.reason and caught.value.hint and not no_load


@pytest.mark.parametrize(
    ("in_channels", "markers", "what"),
    [
        (9, {}, "is an inpainting model"),
        (8, edm_vpred(120.0, 0.002), "is an image-editing model (instruct-pix2pix, CosXL-Edit"),
    ],
)
def test_denoisers_that_take_more_than_the_latent_are_refused_before_loading(
    sdxl: Tiny,
    write: Callable[..., Path],
    no_load: list[str],
    run_cli: Any,
    tmp_path: Path,
    in_channels: int,
    markers: dict[str, torch.Tensor],
    what: str,
) -> None:
    path = write(f"in{in_channels}", markers, in_channels=in_channels)
    code, out, err = run_cli(
        "--catalog", str(tmp_path / "catalog.db"), "generate",
        "--checkpoint", str(path), "--family", "sdxl", "--prompt", "a cat",
        "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 2 and not out and not no_load
    assert f"{path.name} {what}" in err
    assert f"takes {in_channels} input channels" in err and "gives out 4" in err
    assert "Hint:" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_denoiser_channels_of_folders_and_files(
    sdxl: Tiny, write: Callable[..., Path], tmp_path: Path
) -> None:
    assert denoiser_channels(sdxl.folder) == (4, 4)
    assert denoiser_channels(sdxl.single) == (4, 4)  # diffusers naming
    assert denoiser_channels(write("in9", {}, in_channels=9)) == (9, 4)  # SGM naming
    folder = tmp_path / "inpaint-diffusers"
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "config.json").write_text(json.dumps({"in_channels": 9, "out_channels": 4}))
    assert denoiser_channels(folder) == (9, 4)
    assert denoiser_channels(sdxl.parts["vae"]) is None  # no denoiser: nothing to tell


@pytest.mark.parametrize(
    ("high", "low"),
    [(math.nan, 0.002), (1.0, 5.0), (-3.0, 0.002), (0.001, None), (math.inf, 0.002)],
)
def test_unusable_edm_vpred_values_fall_back_to_comfyuis_defaults(
    write: Callable[..., Path], high: float, low: float | None
) -> None:
    markers = {"edm_vpred.sigma_max": torch.tensor(high)}
    if low is not None:
        markers["edm_vpred.sigma_min"] = torch.tensor(low)
    found = model_sampling(write(f"bad-{high}-{low}", markers), "sdxl")
    assert found.variant == "cosxl" and found.settings["prediction_type"] == "v_prediction"
    assert (found.settings["sigma_min"], found.settings["sigma_max"]) == (0.002, 120.0)
    assert len(found.notes) == 1 and "no usable sigma range" in found.notes[0]


def test_a_bad_edm_vpred_range_is_a_warning_of_the_run(
    sdxl: Tiny, write: Callable[..., Path], tmp_path: Path
) -> None:
    path = write("min-above-max", edm_vpred(1.0, 5.0))
    result = generate(request_for(sdxl, path), tmp_path)
    assert any("no usable sigma range" in w and "sigma_max 120" in w for w in result.warnings)
    sampling = result.images[0].recipe.extra["sampling"]
    assert (sampling["sigma_min"], sampling["sigma_max"]) == (0.002, 120.0)


def test_a_prediction_type_flag_against_the_markers_wins_with_a_warning(
    sdxl: Tiny, write: Callable[..., Path]
) -> None:
    path = write("vpred-flag", {"v_pred": EMPTY})
    with pytest.warns(UserWarning, match="--prediction-type epsilon overrides v_prediction"):
        filled = with_defaults(request_for(sdxl, path, prediction_type="epsilon"))
    assert filled.prediction_type == "epsilon"
    assert with_defaults(request_for(sdxl, path)).prediction_type == "v_prediction"
