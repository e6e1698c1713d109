"""Stochastic exponential-integrator samplers in data prediction: ER-SDE-Solver-3 and SEEDS-2/3."""
from __future__ import annotations

import torch

from diffusion.sampling.noise import NoiseSampler
from diffusion.sampling.samplers.common import (Callback, Denoiser, ancestral_noise, ei_h_phi_1, ei_h_phi_2, half_log_snr,
                                       lambda_to_sigma, report, setup)


def _er_sde_noise_scaler(x: torch.Tensor) -> torch.Tensor:
    """The default noise-scale function of ER-SDE-Solver (Cui et al. 2023, eq. 22)."""
    return x * ((x ** 0.3).exp() + 10.0)


@torch.no_grad()
def sample_er_sde(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, extra_args=None,
                  callback: Callback = None, disable=None, s_noise=1.0, noise_sampler: NoiseSampler | None = None,
                  noise_scaler=None, max_stage=3) -> torch.Tensor:
    """Extended Reverse-Time SDE solver, VP ER-SDE-Solver-3 (Cui et al. 2023, arXiv:2309.06169;
    QinpengCui/ER-SDE-Solver): stages 2 and 3 use finite differences of past predictions and the integrals
    of 1/noise_scaler by a 200-point Riemann sum."""
    extra_args, s_in = setup(x, extra_args)
    noise = ancestral_noise(x, extra_args, noise_sampler)
    scaler = _er_sde_noise_scaler if noise_scaler is None else noise_scaler
    n_points = 200.0
    point_index = torch.arange(0, n_points, dtype=torch.float32, device=x.device)
    er_lambdas = half_log_snr(sigmas).neg().exp()  # sigma_t / alpha_t
    old_denoised, old_denoised_d = None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        report(callback, x, i, sigmas[i], denoised)
        stage = min(max_stage, i + 1)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            lam_s, lam_t = er_lambdas[i], er_lambdas[i + 1]
            alpha_s, alpha_t = sigmas[i] / lam_s, sigmas[i + 1] / lam_t
            r = scaler(lam_t) / scaler(lam_s)
            x = (alpha_t / alpha_s) * r * x + alpha_t * (1 - r) * denoised
            if stage >= 2:
                dt = lam_t - lam_s
                step = -dt / n_points
                pos = lam_t + point_index * step
                scaled = scaler(pos)
                s = torch.sum(1 / scaled) * step
                denoised_d = (denoised - old_denoised) / (lam_s - er_lambdas[i - 1])
                x = x + alpha_t * (dt + s * scaler(lam_t)) * denoised_d
                if stage >= 3:
                    s_u = torch.sum((pos - lam_s) / scaled) * step
                    denoised_u = (denoised_d - old_denoised_d) / ((lam_s - er_lambdas[i - 2]) / 2)
                    x = x + alpha_t * ((dt ** 2) / 2 + s_u * scaler(lam_t)) * denoised_u
                old_denoised_d = denoised_d
            if s_noise > 0:
                amp = (lam_t ** 2 - lam_s ** 2 * r ** 2).sqrt().nan_to_num(nan=0.0)
                x = x + alpha_t * noise(sigmas[i], sigmas[i + 1]) * s_noise * amp
        old_denoised = denoised
    return x


def _renoise(sde_noise, factor, noise, sigma_a, sigma_b):
    """Carry the previous sub-step's noise over a segment (decay by e^factor) and add fresh noise."""
    sde_noise = sde_noise * factor.exp()
    return sde_noise + factor.mul(2).expm1().neg().sqrt() * noise(sigma_a, sigma_b)


@torch.no_grad()
def sample_seeds_2(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, extra_args=None,
                   callback: Callback = None, disable=None, eta=1.0, s_noise=1.0,
                   noise_sampler: NoiseSampler | None = None, r=0.5, solver_type="phi_1") -> torch.Tensor:
    """SEEDS-2, Stochastic Explicit Exponential Derivative-free Solver of stage 2 in data prediction
    (Gonzalez et al. 2023, NeurIPS, arXiv:2305.14267)."""
    if solver_type not in {"phi_1", "phi_2"}:
        raise ValueError("solver_type must be 'phi_1' or 'phi_2'")
    extra_args, s_in = setup(x, extra_args)
    noise = ancestral_noise(x, extra_args, noise_sampler)
    inject = eta > 0 and s_noise > 0
    fac = 1 / (2 * r)
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        report(callback, x, i, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lambda_s, lambda_t = half_log_snr(sigmas[i]), half_log_snr(sigmas[i + 1])
        h = lambda_t - lambda_s
        h_eta = h * (eta + 1)
        lambda_s_1 = torch.lerp(lambda_s, lambda_t, r)
        sigma_s_1 = lambda_to_sigma(lambda_s_1)
        alpha_s_1 = sigma_s_1 * lambda_s_1.exp()
        alpha_t = sigmas[i + 1] * lambda_t.exp()
        x_2 = sigma_s_1 / sigmas[i] * (-r * h * eta).exp() * x - alpha_s_1 * ei_h_phi_1(-r * h_eta) * denoised
        if inject:
            sde = (-2 * r * h * eta).expm1().neg().sqrt() * noise(sigmas[i], sigma_s_1)
            x_2 = x_2 + sde * sigma_s_1 * s_noise
        denoised_2 = model(x_2, sigma_s_1 * s_in, **extra_args)
        decay = sigmas[i + 1] / sigmas[i] * (-h * eta).exp()
        if solver_type == "phi_1":
            x = decay * x - alpha_t * ei_h_phi_1(-h_eta) * torch.lerp(denoised, denoised_2, fac)
        else:
            b2 = ei_h_phi_2(-h_eta) / r
            b1 = ei_h_phi_1(-h_eta) - b2
            x = decay * x - alpha_t * (b1 * denoised + b2 * denoised_2)
        if inject:
            sde = _renoise(sde, (r - 1) * h * eta, noise, sigma_s_1, sigmas[i + 1])
            x = x + sde * sigmas[i + 1] * s_noise
    return x


@torch.no_grad()
def sample_seeds_3(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, extra_args=None,
                   callback: Callback = None, disable=None, eta=1.0, s_noise=1.0,
                   noise_sampler: NoiseSampler | None = None, r_1=1.0 / 3, r_2=2.0 / 3) -> torch.Tensor:
    """SEEDS-3, the three-stage SEEDS solver in data prediction (Gonzalez et al. 2023, arXiv:2305.14267)."""
    extra_args, s_in = setup(x, extra_args)
    noise = ancestral_noise(x, extra_args, noise_sampler)
    inject = eta > 0 and s_noise > 0
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        report(callback, x, i, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lambda_s, lambda_t = half_log_snr(sigmas[i]), half_log_snr(sigmas[i + 1])
        h = lambda_t - lambda_s
        h_eta = h * (eta + 1)
        lambda_s_1, lambda_s_2 = torch.lerp(lambda_s, lambda_t, r_1), torch.lerp(lambda_s, lambda_t, r_2)
        sigma_s_1, sigma_s_2 = lambda_to_sigma(lambda_s_1), lambda_to_sigma(lambda_s_2)
        alpha_s_1, alpha_s_2 = sigma_s_1 * lambda_s_1.exp(), sigma_s_2 * lambda_s_2.exp()
        alpha_t = sigmas[i + 1] * lambda_t.exp()
        x_2 = sigma_s_1 / sigmas[i] * (-r_1 * h * eta).exp() * x - alpha_s_1 * ei_h_phi_1(-r_1 * h_eta) * denoised
        if inject:
            sde = (-2 * r_1 * h * eta).expm1().neg().sqrt() * noise(sigmas[i], sigma_s_1)
            x_2 = x_2 + sde * sigma_s_1 * s_noise
        denoised_2 = model(x_2, sigma_s_1 * s_in, **extra_args)
        a3_2 = r_2 / r_1 * ei_h_phi_2(-r_2 * h_eta)
        a3_1 = ei_h_phi_1(-r_2 * h_eta) - a3_2
        x_3 = sigma_s_2 / sigmas[i] * (-r_2 * h * eta).exp() * x - alpha_s_2 * (a3_1 * denoised + a3_2 * denoised_2)
        if inject:
            sde = _renoise(sde, (r_1 - r_2) * h * eta, noise, sigma_s_1, sigma_s_2)
            x_3 = x_3 + sde * sigma_s_2 * s_noise
        denoised_3 = model(x_3, sigma_s_2 * s_in, **extra_args)
        b3 = ei_h_phi_2(-h_eta) / r_2
        b1 = ei_h_phi_1(-h_eta) - b3
        x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x - alpha_t * (b1 * denoised + b3 * denoised_3)
        if inject:
            sde = _renoise(sde, (r_2 - 1) * h * eta, noise, sigma_s_2, sigmas[i + 1])
            x = x + sde * sigmas[i + 1] * s_noise
    return x
