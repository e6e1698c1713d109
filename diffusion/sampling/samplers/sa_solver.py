"""SA-Solver, the Stochastic Adams predictor-corrector solver in data prediction (Xue et al. 2023, NeurIPS,
arXiv:2309.05019; github.com/scxue/SA-Solver), with ComfyUI's defaults: predictor order 3, corrector
order 4, stochasticity tau = 1 between 20% and 80% of the schedule (by sigma), lower orders at the end."""
from __future__ import annotations

import math
from typing import Callable

import torch

from diffusion.sampling.noise import NoiseSampler
from diffusion.sampling.samplers.common import Callback, Denoiser, ancestral_noise, half_log_snr, model_sampling_of, report, setup


def _exponential_coeffs(s: torch.Tensor, t: torch.Tensor, order: int, tau: float) -> torch.Tensor:
    """(1+tau²)·∫_s^t exp((1+tau²)(x-t))·x^p dx for p < order, by repeated integration by parts
    (the lower-triangular recursion of the paper's eqs. 15/18), with exp((1+tau²)t) factored out."""
    tau_mul = 1 + tau ** 2
    h = t - s
    p = torch.arange(order, dtype=s.dtype, device=s.device)
    product_terms = t ** p - s ** p * (-tau_mul * h).exp()
    depth = p.unsqueeze(1) - p.unsqueeze(0)
    log_fact = (p + 1).lgamma()
    coeff = log_fact.unsqueeze(1) - log_fact.unsqueeze(0)
    if tau > 0:
        coeff = coeff - depth * math.log(tau_mul)
    signs = torch.where(depth % 2 == 0, 1.0, -1.0)
    return (coeff.exp() * signs).tril() @ product_terms


def _simple_order2_coeffs(sigma_next, lambdas, lambda_s, lambda_t, tau, corrector: bool) -> torch.Tensor:
    """The simplified order-2 coefficients of the paper's Appendix D."""
    tau_mul = 1 + tau ** 2
    h = lambda_t - lambda_s
    alpha_t = sigma_next * lambda_t.exp()
    if corrector:
        b_1 = alpha_t * (0.5 * tau_mul * h)
        b_2 = alpha_t * (-h * tau_mul).expm1().neg() - b_1
    else:
        b_2 = alpha_t * (0.5 * tau_mul * h ** 2) / (lambdas[-2] - lambda_s)
        b_1 = alpha_t * (-h * tau_mul).expm1().neg() - b_2
    return torch.stack([b_2, b_1])


def stochastic_adams_coeffs(sigma_next, lambdas, lambda_s, lambda_t, tau: float, simple_order_2: bool = False,
                            corrector: bool = False) -> torch.Tensor:
    """b_i of SA-Solver for the Lagrange basis through `lambdas` (one weight per stored prediction)."""
    n = lambdas.shape[0]
    if simple_order_2 and n == 2:
        return _simple_order2_coeffs(sigma_next, lambdas, lambda_s, lambda_t, tau, corrector)
    integrals = _exponential_coeffs(lambda_s, lambda_t, n, tau)
    vandermonde_t = torch.vander(lambdas, n, increasing=True).T
    return sigma_next * lambda_t.exp() * torch.linalg.solve(vandermonde_t, integrals)


def tau_interval(start_sigma: float, end_sigma: float, eta: float = 1.0) -> Callable[[torch.Tensor], float]:
    """tau = eta inside [end_sigma, start_sigma], 0 (ODE) outside."""
    def tau(sigma) -> float:
        if eta <= 0:
            return 0.0
        s = float(sigma)
        return eta if start_sigma >= s >= end_sigma else 0.0
    return tau


def _combine(preds: list[torch.Tensor], coeffs: torch.Tensor) -> torch.Tensor:
    return torch.tensordot(torch.stack(preds, dim=1), coeffs, dims=([1], [0]))


@torch.no_grad()
def sample_sa_solver(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, extra_args=None,
                     callback: Callback = None, disable=None, tau_func=None, s_noise=1.0,
                     noise_sampler: NoiseSampler | None = None, predictor_order=3, corrector_order=4,
                     use_pece=False, simple_order_2=False) -> torch.Tensor:
    """SA-Solver predictor-corrector (Xue et al. 2023, Algorithm 1)."""
    if len(sigmas) <= 1:
        return x
    extra_args, s_in = setup(x, extra_args)
    noise = ancestral_noise(x, extra_args, noise_sampler)
    lambdas = half_log_snr(sigmas)
    if tau_func is None:
        ms = model_sampling_of(model)
        tau_func = tau_interval(ms.percent_to_sigma(0.2), ms.percent_to_sigma(0.8), eta=1.0)
    max_order = max(predictor_order, corrector_order)
    x_pred, h, tau_t, added_noise = x, 0.0, 0.0, 0.0
    preds: list[torch.Tensor] = []
    to_end = sigmas[-1].item() == 0
    for i in range(len(sigmas) - 1):
        denoised = model(x_pred, sigmas[i] * s_in, **extra_args)
        report(callback, x_pred, i, sigmas[i], denoised)
        preds = (preds + [denoised])[-max_order:]
        p_order = min(predictor_order, len(preds))
        c_order = 0 if i == 0 or (sigmas[i + 1] == 0 and not use_pece) else min(corrector_order, len(preds))
        if to_end:
            p_order = min(p_order, len(sigmas) - 2 - i)
            c_order = min(c_order, len(sigmas) - 1 - i)
        if c_order == 0:
            x = x_pred
        else:
            b = stochastic_adams_coeffs(sigmas[i], lambdas[i - c_order + 1:i + 1], lambdas[i - 1], lambdas[i],
                                        tau_t, simple_order_2, corrector=True)
            x = sigmas[i] / sigmas[i - 1] * (-(tau_t ** 2) * h).exp() * x + _combine(preds[-c_order:], b)
            if tau_t > 0 and s_noise > 0:
                x = x + added_noise
            if use_pece:
                preds[-1] = denoised = model(x, sigmas[i] * s_in, **extra_args)
        if sigmas[i + 1] == 0:
            x_pred = denoised
            continue
        tau_t = tau_func(sigmas[i + 1])
        b = stochastic_adams_coeffs(sigmas[i + 1], lambdas[i - p_order + 1:i + 1], lambdas[i], lambdas[i + 1],
                                    tau_t, simple_order_2, corrector=False)
        h = lambdas[i + 1] - lambdas[i]
        x_pred = sigmas[i + 1] / sigmas[i] * (-(tau_t ** 2) * h).exp() * x + _combine(preds[-p_order:], b)
        if tau_t > 0 and s_noise > 0:
            amplitude = sigmas[i + 1] * (-2 * tau_t ** 2 * h).expm1().neg().sqrt() * s_noise
            added_noise = noise(sigmas[i], sigmas[i + 1]) * amplitude
            x_pred = x_pred + added_noise
    return x_pred


@torch.no_grad()
def sample_sa_solver_pece(model, x, sigmas, *, extra_args=None, callback=None, disable=None, tau_func=None,
                          s_noise=1.0, noise_sampler=None, predictor_order=3, corrector_order=4,
                          simple_order_2=False) -> torch.Tensor:
    """SA-Solver in PECE mode (predict, evaluate, correct, evaluate)."""
    return sample_sa_solver(model, x, sigmas, extra_args=extra_args, callback=callback, tau_func=tau_func,
                            s_noise=s_noise, noise_sampler=noise_sampler, predictor_order=predictor_order,
                            corrector_order=corrector_order, use_pece=True, simple_order_2=simple_order_2)
