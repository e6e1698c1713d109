"""Schedules and model sampling: ComfyUI's reference sigmas, k-diffusion's schedule functions as oracle,
the denoise rule, and the parameterisation wrappers."""
from __future__ import annotations

import math

import pytest
import torch

from diffusion.sampling.model_sampling import ModelSampling, rescale_zero_terminal_snr_sigmas
from diffusion.sampling.schedules import (DISCARD_PENULTIMATE_SIGMA_SAMPLERS, SCHEDULES, align_your_steps, calculate_sigmas,
                                 flip_sigmas, get_sigmas_exponential, get_sigmas_karras, get_sigmas_polyexponential,
                                 loglinear_interp, sdturbo_schedule, split_sigmas, split_sigmas_denoise)
from tests.diffusion.test_sampling_support import load_k_diffusion_sampling

MS = ModelSampling()


def test_discrete_schedule_matches_sd_constants():
    # sigma_min/max of SD's scaled-linear schedule (the values every SD UI shows).
    assert float(MS.sigma_min) == pytest.approx(0.029167, abs=1e-5)
    assert float(MS.sigma_max) == pytest.approx(14.614642, abs=1e-4)
    assert MS.sigmas.shape == (1000,)
    assert torch.all(MS.sigmas[1:] > MS.sigmas[:-1])


def test_reference_normal_four_steps(shared_dir):
    """../shared/reference: ComfyUI's 4-step "normal" schedule."""
    from safetensors.torch import load_file
    ref = load_file(str(shared_dir / "reference" / "p00_intermediates.safetensors"))["sigmas"]
    ours = calculate_sigmas(MS, "normal", 4)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)


def test_normal_four_steps_values():
    expected = torch.tensor([14.6146, 2.9183, 0.9324, 0.0292, 0.0])
    torch.testing.assert_close(calculate_sigmas(MS, "normal", 4), expected, rtol=0, atol=1e-4)


def test_timestep_round_trip_and_interpolation():
    t = torch.arange(0, 1000)
    assert torch.equal(MS.timestep(MS.sigma(t)), t)
    mid = MS.sigma(torch.tensor(10.5))
    assert float(mid) == pytest.approx(math.exp((math.log(MS.sigmas[10]) + math.log(MS.sigmas[11])) / 2), rel=1e-5)
    # k-diffusion-style fractional inverse
    assert float(MS.sigma_to_t_interp(mid)) == pytest.approx(10.5, abs=1e-3)


def test_percent_to_sigma():
    assert MS.percent_to_sigma(0.0) > 1e8
    assert MS.percent_to_sigma(1.0) == 0.0
    assert MS.percent_to_sigma(0.5) == pytest.approx(float(MS.sigma(torch.tensor(499.5))), rel=1e-6)


@pytest.mark.parametrize("name", list(SCHEDULES))
@pytest.mark.parametrize("steps", [1, 4, 13])
def test_every_schedule_descends_to_zero(name, steps):
    sigmas = calculate_sigmas(MS, name, steps)
    assert sigmas[-1] == 0
    assert torch.all(sigmas[:-1] > 0)
    assert torch.all(sigmas[:-1] - sigmas[1:] >= 0)
    # ddim_uniform strides by 1000 // steps, which can give one step more (as ComfyUI).
    assert len(sigmas) <= steps + (2 if name == "ddim_uniform" else 1)


@pytest.mark.parametrize("n", [1, 5, 20])
def test_karras_exponential_polyexponential_match_k_diffusion(n):
    kd = load_k_diffusion_sampling()
    lo, hi = float(MS.sigma_min), float(MS.sigma_max)
    torch.testing.assert_close(get_sigmas_karras(n, lo, hi), kd.get_sigmas_karras(n, lo, hi), rtol=0, atol=1e-5)
    torch.testing.assert_close(get_sigmas_exponential(n, lo, hi), kd.get_sigmas_exponential(n, lo, hi), rtol=0, atol=1e-5)
    torch.testing.assert_close(get_sigmas_polyexponential(n, lo, hi, 2.0), kd.get_sigmas_polyexponential(n, lo, hi, 2.0),
                               rtol=0, atol=1e-5)
    assert torch.equal(calculate_sigmas(MS, "karras", n), get_sigmas_karras(n, lo, hi))


def test_denoise_rule_keeps_tail_of_longer_schedule():
    # d < 1: int(steps/d) sigmas are scheduled and the last steps+1 kept (DESIGN.md).
    full = calculate_sigmas(MS, "karras", int(10 / 0.6))
    part = calculate_sigmas(MS, "karras", 10, denoise=0.6)
    assert len(part) == 11
    assert torch.equal(part, full[-11:])
    assert calculate_sigmas(MS, "normal", 10, denoise=0.0).numel() == 0
    assert torch.equal(calculate_sigmas(MS, "normal", 10, denoise=1.0), calculate_sigmas(MS, "normal", 10))


@pytest.mark.parametrize("sampler", sorted(DISCARD_PENULTIMATE_SIGMA_SAMPLERS))
def test_discard_penultimate_sigma(sampler):
    longer = calculate_sigmas(MS, "normal", 5)
    sig = calculate_sigmas(MS, "normal", 4, sampler_name=sampler)
    assert len(sig) == 5
    assert torch.equal(sig, torch.cat([longer[:-2], longer[-1:]]))


def test_simple_and_sgm_uniform_and_ddim_uniform_shapes():
    simple = calculate_sigmas(MS, "simple", 10)
    assert float(simple[0]) == pytest.approx(float(MS.sigma_max))
    assert float(simple[1]) == pytest.approx(float(MS.sigmas[-101]))
    sgm = calculate_sigmas(MS, "sgm_uniform", 10)
    assert float(sgm[0]) == pytest.approx(float(MS.sigma_max)) and float(sgm[-2]) > float(MS.sigma_min)
    ddim = calculate_sigmas(MS, "ddim_uniform", 10)
    # DDIM "uniform": table entries 1, 101, ..., 901 reversed, then 0.
    torch.testing.assert_close(ddim[:-1], MS.sigmas[1::100].flip(0))


def test_align_your_steps_tables_and_interpolation():
    ten = align_your_steps("SD1", 10)
    assert len(ten) == 11 and ten[-1] == 0
    assert float(ten[0]) == pytest.approx(14.6146412293, rel=1e-6) and float(ten[5]) == pytest.approx(1.3943805092, rel=1e-6)
    five = align_your_steps("SDXL", 5)
    assert len(five) == 6 and five[-1] == 0
    # Log-linear interpolation keeps the ends and is linear in log sigma between table points.
    interp = loglinear_interp([10.0, 1.0, 0.1], 5)
    assert interp == pytest.approx([10.0, 10 ** 0.5, 1.0, 0.1 ** 0.5, 0.1])
    assert len(align_your_steps("SD1", 10, denoise=0.5)) == 6


def test_sdturbo_timesteps():
    sig = sdturbo_schedule(MS, 3)
    torch.testing.assert_close(sig[:-1], MS.sigmas[[999, 899, 799]])
    half = sdturbo_schedule(MS, 1, denoise=0.5)
    torch.testing.assert_close(half[:1], MS.sigmas[[499]])


def test_eps_and_v_parameterisations_invert_their_definitions():
    x0 = torch.randn(2, 4, 8, 8)
    eps = torch.randn(2, 4, 8, 8)
    sigma = torch.tensor([0.5, 3.0])
    s = sigma.view(-1, 1, 1, 1)
    x = x0 + eps * s
    torch.testing.assert_close(ModelSampling("eps").calculate_denoised(sigma, eps, x), x0, rtol=1e-5, atol=1e-5)
    # v = alpha·eps - sigma_vp·x0 with alpha = 1/sqrt(1+σ²), sigma_vp = σ/sqrt(1+σ²) (Salimans & Ho 2022).
    v = (eps - s * x0) / (1 + s ** 2) ** 0.5
    torch.testing.assert_close(ModelSampling("v_prediction").calculate_denoised(sigma, v, x), x0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ModelSampling("x0").calculate_denoised(sigma, x0, x), x0)
    torch.testing.assert_close(MS.calculate_input(sigma, x), x / (s ** 2 + 1) ** 0.5)


def test_noise_scaling_full_denoise_uses_vp_prior():
    noise = torch.randn(1, 4, 4, 4)
    latent = torch.randn(1, 4, 4, 4)
    sigma = MS.sigma_max
    full = MS.noise_scaling(sigma, noise, torch.zeros_like(latent), max_denoise=True)
    torch.testing.assert_close(full, noise * torch.sqrt(1 + sigma ** 2))
    torch.testing.assert_close(MS.noise_scaling(torch.tensor(2.0), noise, latent), noise * 2.0 + latent)
    assert MS.is_max_denoise(calculate_sigmas(MS, "karras", 5))
    assert not MS.is_max_denoise(calculate_sigmas(MS, "karras", 5, denoise=0.5))


def test_zero_terminal_snr_rescale():
    zs = ModelSampling(zsnr=True)
    assert float(zs.sigma_min) == pytest.approx(float(MS.sigma_min), rel=1e-4)
    assert float(zs.sigma_max) == pytest.approx(((1 - 4.8973451890853435e-08) / 4.8973451890853435e-08) ** 0.5, rel=1e-3)
    alphas_sqrt = (1 / (rescale_zero_terminal_snr_sigmas(MS.sigmas.double()) ** 2 + 1)).sqrt()
    assert float(alphas_sqrt[-1]) == pytest.approx(4.8973451890853435e-08 ** 0.5, rel=1e-3)


def test_lcm_distilled_schedule_and_boundary_conditions():
    lcm = ModelSampling("lcm")
    assert lcm.sigmas.shape == (50,)
    torch.testing.assert_close(lcm.sigmas, MS.sigmas[19::20])
    assert int(lcm.timestep(lcm.sigma_max)) == 999
    # At tiny timesteps c_skip -> 1: the output is the input; at large ones it is the eps-x0.
    x, eps = torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2)
    sigma = lcm.sigma_max.reshape(1)
    out = lcm.calculate_denoised(sigma, eps, x)
    x0 = x - eps * sigma
    t = 9990.0
    c_skip, c_out = 0.25 / (t ** 2 + 0.25), t / (t ** 2 + 0.25) ** 0.5
    torch.testing.assert_close(out, c_out * x0 + c_skip * x)


def test_split_and_flip_sigmas():
    s = torch.tensor([5.0, 3.0, 2.0, 1.0, 0.0])
    high, low = split_sigmas(s, 2)
    assert high.tolist() == [5.0, 3.0, 2.0] and low.tolist() == [2.0, 1.0, 0.0]
    high, low = split_sigmas_denoise(s, 0.25)
    assert high.tolist() == [5.0, 3.0, 2.0, 1.0] and low.tolist() == [1.0, 0.0]
    assert split_sigmas_denoise(s, 0.0)[0].numel() == 0
    assert flip_sigmas(s).tolist() == pytest.approx([0.0001, 1.0, 2.0, 3.0, 5.0])
