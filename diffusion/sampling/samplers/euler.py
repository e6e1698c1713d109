"""First- and second-order single-step samplers: Euler, Heun, DPM-2 and their ancestral and CFG++ forms,
plus the one-step-per-sigma DDPM and LCM samplers."""
from __future__ import annotations

import torch

from diffusion.sampling.noise import NoiseSampler
from diffusion.sampling.samplers.common import (Callback, Denoiser, UncondCapture, ancestral_noise, get_ancestral_step,
                                       model_sampling_of, report, setup, to_d)


def _churn(x, sigmas, i, s_churn, s_tmin, s_tmax, s_noise, noise):
    """Karras et al. (2022) Algorithm 2 lines 4-6: raise the noise level by gamma before the step."""
    gamma = min(s_churn / (len(sigmas) - 1), 2 ** 0.5 - 1) if s_churn > 0 and s_tmin <= sigmas[i] <= s_tmax else 0.0
    sigma_hat = sigmas[i] * (gamma + 1)
    if gamma > 0:
        x = x + noise(sigmas[i], sigma_hat) * s_noise * (sigma_hat ** 2 - sigmas[i] ** 2) ** 0.5
    return x, sigma_hat


@torch.no_grad()
def sample_euler(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, extra_args=None, callback: Callback = None,
                 disable=None, s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0,
                 noise_sampler: NoiseSampler | None = None) -> torch.Tensor:
    """Euler steps on the probability-flow ODE (Karras et al. 2022, Algorithm 2 without the Heun correction)."""
    extra_args, s_in = setup(x, extra_args)
    noise = ancestral_noise(x, extra_args, noise_sampler) if s_churn > 0 else None
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas, i, s_churn, s_tmin, s_tmax, s_noise, noise)
        denoised = model(x, sigma_hat * s_in, **extra_args)
        report(callback, x, i, sigmas[i], denoised, sigma_hat)
        x = x + to_d(x, sigma_hat, denoised) * (sigmas[i + 1] - sigma_hat)
    return x


@torch.no_grad()
def sample_euler_ancestral(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, extra_args=None,
                           callback: Callback = None, disable=None, eta=1.0, s_noise=1.0,
                           noise_sampler: NoiseSampler | None = None) -> torch.Tensor:
    """Ancestral sampling with Euler steps (k-diffusion): step to sigma_down, add noise of size sigma_up."""
    extra_args, s_in = setup(x, extra_args)
    noise = ancestral_noise(x, extra_args, noise_sampler)
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        report(callback, x, i, sigmas[i], denoised)
        if sigma_down == 0:
            x = denoised
        else:
            x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
            x = x + noise(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_heun(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, extra_args=None, callback: Callback = None,
                disable=None, s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0,
                noise_sampler: NoiseSampler | None = None) -> torch.Tensor:
    """Heun's second-order method (Karras et al. 2022, Algorithm 2); Euler on the final step to sigma 0."""
    extra_args, s_in = setup(x, extra_args)
    noise = ancestral_noise(x, extra_args, noise_sampler) if s_churn > 0 else None
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas, i, s_churn, s_tmin, s_tmax, s_noise, noise)
        denoised = model(x, sigma_hat * s_in, **extra_args)
        d = to_d(x, sigma_hat, denoised)
        report(callback, x, i, sigmas[i], denoised, sigma_hat)
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = to_d(x_2, sigmas[i + 1], model(x_2, sigmas[i + 1] * s_in, **extra_args))
            x = x + (d + d_2) / 2 * dt
    return x


@torch.no_grad()
def sample_heunpp2(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, extra_args=None, callback: Callback = None,
                   disable=None, s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0,
                   noise_sampler: NoiseSampler | None = None) -> torch.Tensor:
    """Heun++ (Carzit, sd-webui-samplers-scheduler, MIT): a three-evaluation step whose derivative weights
    depend on sigma/sigma_0, falling back to a weighted Heun step and then Euler near the end."""
    extra_args, s_in = setup(x, extra_args)
    noise = ancestral_noise(x, extra_args, noise_sampler) if s_churn > 0 else None
    s_end = sigmas[-1]
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas, i, s_churn, s_tmin, s_tmax, s_noise, noise)
        denoised = model(x, sigma_hat * s_in, **extra_args)
        d = to_d(x, sigma_hat, denoised)
        report(callback, x, i, sigmas[i], denoised, sigma_hat)
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == s_end:
            x = x + d * dt
            continue
        x_2 = x + d * dt
        d_2 = to_d(x_2, sigmas[i + 1], model(x_2, sigmas[i + 1] * s_in, **extra_args))
        if sigmas[i + 2] == s_end:
            w2 = sigmas[i + 1] / (2 * sigmas[0])
            x = x + (d * (1 - w2) + d_2 * w2) * dt
        else:
            x_3 = x_2 + d_2 * (sigmas[i + 2] - sigmas[i + 1])
            d_3 = to_d(x_3, sigmas[i + 2], model(x_3, sigmas[i + 2] * s_in, **extra_args))
            w2, w3 = sigmas[i + 1] / (3 * sigmas[0]), sigmas[i + 2] / (3 * sigmas[0])
            x = x + ((1 - w2 - w3) * d + w2 * d_2 + w3 * d_3) * dt
    return x


def _dpm2_step(model, x, d, sigma, sigma_to, s_in, extra_args):
    """DPM-Solver-2 style midpoint step in log sigma from sigma to sigma_to, given d at sigma."""
    sigma_mid = sigma.log().lerp(sigma_to.log(), 0.5).exp()
    x_2 = x + d * (sigma_mid - sigma)
    d_2 = to_d(x_2, sigma_mid, model(x_2, sigma_mid * s_in, **extra_args))
    return x + d_2 * (sigma_to - sigma)


@torch.no_grad()
def sample_dpm_2(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, extra_args=None, callback: Callback = None,
                 disable=None, s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0,
                 noise_sampler: NoiseSampler | None = None) -> torch.Tensor:
    """A sampler inspired by DPM-Solver-2 (Lu et al. 2022) and Karras et al. (2022) Algorithm 2."""
    extra_args, s_in = setup(x, extra_args)
    noise = ancestral_noise(x, extra_args, noise_sampler) if s_churn > 0 else None
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas, i, s_churn, s_tmin, s_tmax, s_noise, noise)
        denoised = model(x, sigma_hat * s_in, **extra_args)
        d = to_d(x, sigma_hat, denoised)
        report(callback, x, i, sigmas[i], denoised, sigma_hat)
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigma_hat)
        else:
            x = _dpm2_step(model, x, d, sigma_hat, sigmas[i + 1], s_in, extra_args)
    return x


@torch.no_grad()
def sample_dpm_2_ancestral(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, extra_args=None,
                           callback: Callback = None, disable=None, eta=1.0, s_noise=1.0,
                           noise_sampler: NoiseSampler | None = None) -> torch.Tensor:
    """Ancestral sampling with DPM-Solver-2 steps (k-diffusion)."""
    extra_args, s_in = setup(x, extra_args)
    noise = ancestral_noise(x, extra_args, noise_sampler)
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        report(callback, x, i, sigmas[i], denoised)
        d = to_d(x, sigmas[i], denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigmas[i])
        else:
            x = _dpm2_step(model, x, d, sigmas[i], sigma_down, s_in, extra_args)
            x = x + noise(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_euler_ancestral_cfg_pp(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, extra_args=None,
                                  callback: Callback = None, disable=None, eta=1.0, s_noise=1.0,
                                  noise_sampler: NoiseSampler | None = None) -> torch.Tensor:
    """Euler ancestral with CFG++ (Chung et al. 2024): the step re-noises along the unconditional
    prediction's direction instead of the guided one."""
    extra_args, s_in = setup(x, extra_args)
    noise = ancestral_noise(x, extra_args, noise_sampler)
    capture = UncondCapture()
    extra_args = capture.install(extra_args)
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        report(callback, x, i, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        # alpha_s = alpha_t = 1 in the variance-exploding parameterisation.
        d = to_d(x, sigmas[i], capture.uncond)
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        x = denoised + sigma_down * d
        if eta > 0 and s_noise > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_euler_cfg_pp(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, extra_args=None,
                        callback: Callback = None, disable=None) -> torch.Tensor:
    """Euler with CFG++ (Chung et al. 2024): the deterministic (eta 0) case of euler_ancestral_cfg_pp."""
    return sample_euler_ancestral_cfg_pp(model, x, sigmas, extra_args=extra_args, callback=callback,
                                         disable=disable, eta=0.0, s_noise=0.0)


@torch.no_grad()
def sample_ddpm(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, extra_args=None, callback: Callback = None,
                disable=None, noise_sampler: NoiseSampler | None = None) -> torch.Tensor:
    """DDPM ancestral sampling (Ho et al. 2020, Algorithm 2) between arbitrary sigmas: the posterior mean
    from the eps prediction plus posterior-variance noise, done in the VP space and mapped back."""
    extra_args, s_in = setup(x, extra_args)
    noise = ancestral_noise(x, extra_args, noise_sampler)
    for i in range(len(sigmas) - 1):
        sigma, sigma_prev = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * s_in, **extra_args)
        report(callback, x, i, sigma, denoised)
        eps = (x - denoised) / sigma
        x_vp = x / torch.sqrt(1.0 + sigma ** 2.0)
        a_cum, a_cum_prev = 1 / (sigma * sigma + 1), 1 / (sigma_prev * sigma_prev + 1)
        alpha = a_cum / a_cum_prev
        x = (1.0 / alpha).sqrt() * (x_vp - (1 - alpha) * eps / (1 - a_cum).sqrt())
        if sigma_prev > 0:
            x = x + ((1 - alpha) * (1.0 - a_cum_prev) / (1.0 - a_cum)).sqrt() * noise(sigma, sigma_prev)
            x = x * torch.sqrt(1.0 + sigma_prev ** 2.0)
    return x


@torch.no_grad()
def sample_lcm(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, extra_args=None, callback: Callback = None,
               disable=None, noise_sampler: NoiseSampler | None = None) -> torch.Tensor:
    """Latent Consistency Model multistep sampling (Luo et al. 2023, Algorithm 1): jump to the denoised
    prediction, then re-noise it to the next sigma with fresh noise."""
    extra_args, s_in = setup(x, extra_args)
    noise = ancestral_noise(x, extra_args, noise_sampler)
    ms = model_sampling_of(model)
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        report(callback, x, i, sigmas[i], denoised)
        x = denoised
        if sigmas[i + 1] > 0:
            x = ms.noise_scaling(sigmas[i + 1], noise(sigmas[i], sigmas[i + 1]), x)
    return x
