"""Rectified-flow model sampling (SD3 shift 3, AuraFlow), the SD3 latent format and the schedules on the flow table,
against the values ComfyUI recorded for x06 (shared/reference/README.md) and the formulas."""
from __future__ import annotations

import pytest
import torch

from diffusion.families import latent_format_for
from diffusion.files.latent_formats import SD3
from diffusion.sampling.model_sampling_flow import FlowSampling, time_snr_shift
from diffusion.sampling.schedules import calculate_sigmas


def test_schedules_on_the_shifted_flow_table() -> None:
    ms = FlowSampling(3.0)
    torch.testing.assert_close(calculate_sigmas(ms, "simple", 4), torch.tensor([1.0, 0.9, 0.75, 0.5, 0.0]))
    torch.testing.assert_close(calculate_sigmas(ms, "sgm_uniform", 5),
                               torch.tensor([1.0, 0.9233, 0.8189, 0.6683, 0.4322, 0.0]), atol=1e-4, rtol=0)
    beta = calculate_sigmas(ms, "beta", 6)
    assert beta[0] == 1.0 and beta[-1] == 0.0 and bool((beta[1:] < beta[:-1]).all())
    assert float(ms.sigma_min) == pytest.approx(3 * 0.001 / (1 + 2 * 0.001))


def test_timestep_noise_scaling_and_denoised() -> None:
    ms = FlowSampling(3.0)
    sigma = torch.tensor([0.75])
    assert float(ms.timestep(sigma)) == 750.0
    assert float(ms.sigma(ms.timestep(sigma))) == pytest.approx(float(time_snr_shift(3.0, 0.75)))
    noise, latent = torch.randn(1, 16, 4, 4), torch.randn(1, 16, 4, 4)
    torch.testing.assert_close(ms.noise_scaling(sigma, noise, latent, True), 0.75 * noise + 0.25 * latent)
    v = torch.randn(1, 16, 4, 4)
    torch.testing.assert_close(ms.calculate_denoised(sigma, v, noise), noise - 0.75 * v)
    assert ms.calculate_input(sigma, noise) is noise
    assert ms.percent_to_sigma(0.0) == 1.0 and ms.percent_to_sigma(1.0) == 0.0
    assert ms.percent_to_sigma(0.5) == pytest.approx(0.75)
    aura = FlowSampling(1.73, multiplier=1.0)
    assert float(aura.timestep(torch.tensor(0.5))) == 0.5
    with pytest.raises(ValueError, match="shift"):
        FlowSampling(0.0)


def test_sd3_latent_format() -> None:
    zeros = torch.zeros(1, 16, 2, 2)
    assert float(SD3.process_in(zeros)[0, 0, 0, 0]) == pytest.approx(-0.0932, abs=1e-4)
    x = torch.randn(1, 16, 2, 2)
    torch.testing.assert_close(SD3.process_out(SD3.process_in(x)), x)
    assert SD3.channels == 16 and len(SD3.rgb_factors) == 16 and SD3.taesd_decoder_name == "taesd3_decoder"


def test_sd3_previews_latent2rgb_and_taesd3(tmp_path) -> None:
    from safetensors.torch import save_file

    from diffusion.files.latent_formats import latent_to_rgb_preview
    from diffusion.networks.taesd import decoder, load_taesd_decoder

    latent = torch.randn(1, 16, 8, 8)
    assert latent_to_rgb_preview(latent, SD3).shape == (8, 8, 3)
    assert latent_to_rgb_preview(latent, latent_format_for("sd3")).shape == (8, 8, 3)
    path = tmp_path / "taesd3_decoder.safetensors"
    save_file({k: v.contiguous() for k, v in decoder(16).state_dict().items()}, str(path))
    taesd3 = load_taesd_decoder(path, latent_channels=16)
    assert latent_to_rgb_preview(latent, SD3, taesd3).shape == (64, 64, 3)
