"""SDXL schedule variants: the marker keys ComfyUI reads (v_pred/ztsnr, CosXL's edm_vpred.*, Playground v2.5's
edm_mean/edm_std) through real tiny checkpoint files, the continuous EDM / V schedules
(diffusion/sampling/model_sampling_continuous.py) against their formulas, and the Playground v2.5 latent format."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from diffusion.files.assemble import Precision, load_checkpoint_modules
from diffusion.files.latent_formats import PLAYGROUND_V25, SDXL
from diffusion.sampling.model_sampling import ModelSampling
from diffusion.sampling.model_sampling_continuous import ContinuousSampling
from tests.fixtures.tiny_sdxl import tiny_sdxl_state_dict, write


def _load(tmp_path: Path, markers: dict[str, torch.Tensor]) -> torch.nn.Module:
    sd = tiny_sdxl_state_dict()
    sd.update(markers)
    path = write(sd, tmp_path / "m.safetensors")
    return load_checkpoint_modules(path, Precision())["unet"]


def test_plain_sdxl_is_discrete_eps(tmp_path: Path) -> None:
    model = _load(tmp_path, {})
    assert isinstance(model.model_sampling, ModelSampling) and model.model_sampling.prediction == "eps"
    assert model.latent_format is SDXL


def test_v_pred_and_ztsnr_markers(tmp_path: Path) -> None:
    model = _load(tmp_path, {"v_pred": torch.tensor([]), "ztsnr": torch.tensor([])})
    ms = model.model_sampling
    assert isinstance(ms, ModelSampling) and ms.prediction == "v_prediction" and ms.zsnr
    torch.testing.assert_close(ms.sigmas, ModelSampling(zsnr=True).sigmas)
    assert float(ms.sigma_max) > 4000  # zero terminal SNR: the last sigma is ~4519
    v_only = _load(tmp_path, {"v_pred": torch.tensor([])}).model_sampling
    assert v_only.prediction == "v_prediction" and not v_only.zsnr


def test_cosxl_markers_give_edm_v_schedule(tmp_path: Path) -> None:
    model = _load(tmp_path, {"edm_vpred.sigma_max": torch.tensor(200.0), "edm_vpred.sigma_min": torch.tensor(0.01)})
    ms = model.model_sampling
    assert isinstance(ms, ContinuousSampling) and ms.prediction == "v_prediction" and ms.sigma_data == 1.0
    assert float(ms.sigma_max) == pytest.approx(200.0, rel=1e-5) and float(ms.sigma_min) == pytest.approx(0.01)


def test_playground_markers_give_edm_and_its_latent_format(tmp_path: Path) -> None:
    model = _load(tmp_path, {"edm_mean": torch.zeros(1, 4, 1, 1), "edm_std": torch.ones(1, 4, 1, 1)})
    ms = model.model_sampling
    assert isinstance(ms, ContinuousSampling) and ms.prediction == "edm" and ms.sigma_data == 0.5
    assert float(ms.sigma_max) == pytest.approx(80.0, rel=1e-5)
    assert model.latent_format is PLAYGROUND_V25


def test_edm_schedule_formulas() -> None:
    ms = ContinuousSampling("edm", "edm", sigma_min=0.002, sigma_max=80.0, sigma_data=0.5)
    sigma = torch.tensor([0.5, 3.0])
    torch.testing.assert_close(ms.timestep(sigma), 0.25 * sigma.log())
    torch.testing.assert_close(ms.sigma(ms.timestep(sigma)), sigma)
    x, out = torch.randn(2, 4, 2, 2), torch.randn(2, 4, 2, 2)
    s = sigma.view(-1, 1, 1, 1)
    expected = x * 0.25 / (s ** 2 + 0.25) + out * s * 0.5 / (s ** 2 + 0.25) ** 0.5
    torch.testing.assert_close(ms.calculate_denoised(sigma, out, x), expected)
    torch.testing.assert_close(ms.calculate_input(sigma, x), x / (s ** 2 + 0.25) ** 0.5)
    assert ms.percent_to_sigma(0.5) == pytest.approx(math.sqrt(0.002 * 80.0), rel=1e-4)
    assert ms.percent_to_sigma(0.0) > 1e8 and ms.percent_to_sigma(1.0) == 0.0
    v = ContinuousSampling("v", "v_prediction", sigma_min=0.03, sigma_max=500.0)
    torch.testing.assert_close(v.timestep(sigma), sigma.atan() / math.pi * 2)
    torch.testing.assert_close(v.sigma(v.timestep(sigma)), sigma)
    with pytest.raises(ValueError, match="sigma_min"):
        ContinuousSampling("edm", "edm", sigma_min=5.0, sigma_max=1.0)


def test_playground_latent_format_round_trip() -> None:
    raw = torch.randn(2, 4, 3, 3) * 5
    inside = PLAYGROUND_V25.process_in(raw)
    mean = torch.tensor(PLAYGROUND_V25.latents_mean).view(1, 4, 1, 1)
    std = torch.tensor(PLAYGROUND_V25.latents_std).view(1, 4, 1, 1)
    torch.testing.assert_close(inside, (raw - mean) * 0.5 / std)
    torch.testing.assert_close(PLAYGROUND_V25.process_out(inside), raw, rtol=1e-5, atol=1e-5)
