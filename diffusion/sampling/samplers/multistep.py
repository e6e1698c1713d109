"""Linear multistep samplers that reuse earlier derivatives: LMS, PLMS, iPNDM (and its variable-step form),
DEIS, RES multistep (with ancestral and CFG++ forms) and gradient estimation."""
from __future__ import annotations

import torch

from diffusion.sampling.noise import NoiseSampler
from diffusion.sampling.samplers.common import (Callback, Denoiser, UncondCapture, ancestral_noise, get_ancestral_step,
                                       half_log_snr, lambda_to_sigma, report, setup, to_d)
from diffusion.sampling.samplers.deis_coeffs import deis_coefficients


def linear_multistep_coeff(order: int, t, i: int, j: int) -> float:
    """Integral over [t_i, t_{i+1}] of the j-th Lagrange basis polynomial through t_i, ..., t_{i-order+1}."""
    if order - 1 > i:
        raise ValueError(f"Order {order} too high for step {i}")

    def basis(tau):
        prod = 1.0
        for k in range(order):
            if j != k:
                prod *= (tau - t[i - k]) / (t[i - j] - t[i - k])
        return prod
    from scipy import integrate  # here, not at module level: scipy costs start-up time

    return integrate.quad(basis, t[i], t[i + 1], epsrel=1e-4)[0]


@torch.no_grad()
def sample_lms(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, extra_args=None, callback: Callback = None,
               disable=None, order=4) -> torch.Tensor:
    """Linear multistep (Adams–Bashforth in sigma with exact Lagrange weights; k-diffusion sample_lms)."""
    extra_args, s_in = setup(x, extra_args)
    sigmas_cpu = sigmas.detach().cpu().numpy()
    ds: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        ds = (ds + [to_d(x, sigmas[i], denoised)])[-order:]
        report(callback, x, i, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            cur_order = min(i + 1, order)
            coeffs = [linear_multistep_coeff(cur_order, sigmas_cpu, i, j) for j in range(cur_order)]
            x = x + sum(c * d for c, d in zip(coeffs, reversed(ds)))
    return x


# Adams–Bashforth weights for equal steps, newest derivative first (orders 1-4).
_AB_WEIGHTS = {1: (1.0,), 2: (3 / 2, -1 / 2), 3: (23 / 12, -16 / 12, 5 / 12), 4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


def _ab_combination(d_cur: torch.Tensor, history: list[torch.Tensor]) -> torch.Tensor:
    """Fixed-step Adams–Bashforth combination of d_cur and the previous derivatives (newest last)."""
    weights = _AB_WEIGHTS[len(history) + 1]
    out = weights[0] * d_cur
    for w, d in zip(weights[1:], reversed(history)):
        out = out + w * d
    return out


@torch.no_grad()
def sample_ipndm(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, extra_args=None,
                 callback: Callback = None, disable=None, max_order=4) -> torch.Tensor:
    """Improved PNDM (Zhang & Chen 2023, "Fast Sampling of Diffusion Models with Exponential Integrator",
    iPNDM; zju-pi/diff-sampler): Adams–Bashforth on d = (x - D)/sigma with warm-up by lower orders."""
    extra_args, s_in = setup(x, extra_args)
    history: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        t_cur, t_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, t_cur * s_in, **extra_args)
        report(callback, x, i, t_cur, denoised)
        d_cur = (x - denoised) / t_cur
        if t_next == 0:
            x_next = denoised
        else:
            x_next = x + (t_next - t_cur) * _ab_combination(d_cur, history)
        history = (history + [d_cur])[-(max_order - 1):] if max_order > 1 else []
        x = x_next
    return x


def _ipndm_v_coeffs(order: int, t_steps: torch.Tensor, i: int):
    """Variable-step Adams–Bashforth coefficients of iPNDM-v (diff-sampler solvers.py), newest first."""
    h_n = t_steps[i + 1] - t_steps[i]
    h_1 = t_steps[i] - t_steps[i - 1]
    if order == 2:
        return ((2 + h_n / h_1) / 2, -(h_n / h_1) / 2)
    h_2 = t_steps[i - 1] - t_steps[i - 2]
    temp1 = (1 - h_n / (3 * (h_n + h_1)) * (h_n * (h_n + h_1)) / (h_1 * (h_1 + h_2))) / 2
    if order == 3:
        return ((2 + h_n / h_1) / 2 + temp1, -(h_n / h_1) / 2 - (1 + h_1 / h_2) * temp1, temp1 * h_1 / h_2)
    h_3 = t_steps[i - 2] - t_steps[i - 3]
    temp2 = ((1 - h_n / (3 * (h_n + h_1))) / 2 + (1 - h_n / (2 * (h_n + h_1))) * h_n / (6 * (h_n + h_1 + h_2))) \
        * (h_n * (h_n + h_1) * (h_n + h_1 + h_2)) / (h_1 * (h_1 + h_2) * (h_1 + h_2 + h_3))
    ratio = h_1 * (h_1 + h_2) / (h_2 * (h_2 + h_3))
    return ((2 + h_n / h_1) / 2 + temp1 + temp2,
            -(h_n / h_1) / 2 - (1 + h_1 / h_2) * temp1 - (1 + h_1 / h_2 + ratio) * temp2,
            temp1 * h_1 / h_2 + (h_1 / h_2 + ratio * (1 + h_2 / h_3)) * temp2,
            -temp2 * ratio * h_1 / h_2)


@torch.no_grad()
def sample_ipndm_v(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, extra_args=None,
                   callback: Callback = None, disable=None, max_order=4) -> torch.Tensor:
    """iPNDM with variable-step-size Adams–Bashforth coefficients (Zhang & Chen 2023; diff-sampler iPNDM_v)."""
    extra_args, s_in = setup(x, extra_args)
    history: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        t_cur, t_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, t_cur * s_in, **extra_args)
        report(callback, x, i, t_cur, denoised)
        d_cur = (x - denoised) / t_cur
        order = min(max_order, i + 1)
        if t_next == 0:
            x_next = denoised
        elif order == 1:
            x_next = x + (t_next - t_cur) * d_cur
        else:
            coeffs = _ipndm_v_coeffs(order, sigmas, i)
            comb = coeffs[0] * d_cur
            for c, d in zip(coeffs[1:], reversed(history)):
                comb = comb + c * d
            x_next = x + (t_next - t_cur) * comb
        history = (history + [d_cur])[-(max_order - 1):]
        x = x_next
    return x


@torch.no_grad()
def sample_deis(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, extra_args=None, callback: Callback = None,
                disable=None, max_order=3, deis_mode="tab") -> torch.Tensor:
    """DEIS (Zhang & Chen 2023, arXiv:2204.13902), the "tAB" multistep exponential integrator with
    coefficients integrated numerically on the EDM/VP time axis (diff-sampler's port)."""
    extra_args, s_in = setup(x, extra_args)
    coeff_list = deis_coefficients(sigmas, max_order, deis_mode=deis_mode)
    history: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        t_cur, t_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, t_cur * s_in, **extra_args)
        report(callback, x, i, t_cur, denoised)
        d_cur = (x - denoised) / t_cur
        order = 1 if t_next <= 0 else min(max_order, i + 1)
        if order == 1:
            x_next = x + (t_next - t_cur) * d_cur
        else:
            coeffs = coeff_list[i]
            x_next = x + coeffs[0] * d_cur
            for c, d in zip(coeffs[1:], reversed(history)):
                x_next = x_next + c * d
        history = (history + [d_cur])[-(max_order - 1):]
        x = x_next
    return x


@torch.no_grad()
def sample_plms(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, extra_args=None, callback: Callback = None,
                disable=None) -> torch.Tensor:
    """PLMS, the pseudo linear multistep sampler of PNDM (Liu et al. 2022, arXiv:2202.09778) as in the
    original Stable Diffusion scripts (ldm/models/diffusion/plms.py): a pseudo-improved-Euler first step,
    then 4th-order Adams–Bashforth on the eps prediction, each a DDIM (eta 0) step. In sigma space a DDIM
    step is x + (sigma_next - sigma)·eps."""
    extra_args, s_in = setup(x, extra_args)
    old_eps: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * s_in, **extra_args)
        report(callback, x, i, sigma, denoised)
        eps = (x - denoised) / sigma
        if not old_eps and sigma_next > 0:
            x_pred = x + (sigma_next - sigma) * eps
            eps_next = (x_pred - model(x_pred, sigma_next * s_in, **extra_args)) / sigma_next
            eps_prime = (eps + eps_next) / 2
        else:
            eps_prime = _ab_combination(eps, old_eps[-3:])
        x = x + (sigma_next - sigma) * eps_prime
        old_eps = (old_eps + [eps])[-3:]
    return x


@torch.no_grad()
def res_multistep(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, extra_args=None,
                  callback: Callback = None, s_noise=1.0, noise_sampler: NoiseSampler | None = None, eta=1.0,
                  cfg_pp=False) -> torch.Tensor:
    """Second-order RES multistep (Zhang et al. 2023, "Improved order analysis ... exponential integrators",
    arXiv:2308.02157), optionally ancestral (eta) and CFG++."""
    extra_args, s_in = setup(x, extra_args)
    noise = ancestral_noise(x, extra_args, noise_sampler)
    capture = UncondCapture()
    if cfg_pp:
        extra_args = capture.install(extra_args)
    old_sigma_down, old_denoised = None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        report(callback, x, i, sigmas[i], denoised)
        if sigma_down == 0 or old_denoised is None:
            if cfg_pp:
                x = denoised + to_d(x, sigmas[i], capture.uncond) * sigma_down
            else:
                x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            t, t_old = half_log_snr(sigmas[i]), half_log_snr(old_sigma_down)
            t_next, t_prev = half_log_snr(sigma_down), half_log_snr(sigmas[i - 1])
            h = t_next - t
            c2 = (t_prev - t_old) / h
            phi1 = torch.expm1(-h) / -h
            phi2 = (phi1 - 1.0) / -h
            b1 = torch.nan_to_num(phi1 - phi2 / c2, nan=0.0)
            b2 = torch.nan_to_num(phi2 / c2, nan=0.0)
            current = denoised
            if cfg_pp:
                x = x + (denoised - capture.uncond)
                current = capture.uncond
            x = lambda_to_sigma(h) * x + h * (b1 * current + b2 * old_denoised)
        if sigmas[i + 1] > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
        old_denoised = capture.uncond if cfg_pp else denoised
        old_sigma_down = sigma_down
    return x


@torch.no_grad()
def sample_res_multistep(model, x, sigmas, *, extra_args=None, callback=None, disable=None, s_noise=1.0,
                         noise_sampler=None) -> torch.Tensor:
    """RES multistep, deterministic (eta 0)."""
    return res_multistep(model, x, sigmas, extra_args=extra_args, callback=callback, s_noise=s_noise,
                         noise_sampler=noise_sampler, eta=0.0, cfg_pp=False)


@torch.no_grad()
def sample_res_multistep_cfg_pp(model, x, sigmas, *, extra_args=None, callback=None, disable=None, s_noise=1.0,
                                noise_sampler=None) -> torch.Tensor:
    """RES multistep with CFG++, deterministic."""
    return res_multistep(model, x, sigmas, extra_args=extra_args, callback=callback, s_noise=s_noise,
                         noise_sampler=noise_sampler, eta=0.0, cfg_pp=True)


@torch.no_grad()
def sample_res_multistep_ancestral(model, x, sigmas, *, extra_args=None, callback=None, disable=None, eta=1.0,
                                   s_noise=1.0, noise_sampler=None) -> torch.Tensor:
    """RES multistep with ancestral noise."""
    return res_multistep(model, x, sigmas, extra_args=extra_args, callback=callback, s_noise=s_noise,
                         noise_sampler=noise_sampler, eta=eta, cfg_pp=False)


@torch.no_grad()
def sample_res_multistep_ancestral_cfg_pp(model, x, sigmas, *, extra_args=None, callback=None, disable=None,
                                          eta=1.0, s_noise=1.0, noise_sampler=None) -> torch.Tensor:
    """RES multistep with ancestral noise and CFG++."""
    return res_multistep(model, x, sigmas, extra_args=extra_args, callback=callback, s_noise=s_noise,
                         noise_sampler=noise_sampler, eta=eta, cfg_pp=True)


@torch.no_grad()
def sample_gradient_estimation(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, extra_args=None,
                               callback: Callback = None, disable=None, ge_gamma=2.0, cfg_pp=False) -> torch.Tensor:
    """Gradient-estimation sampler (Permenter & Yuan 2024, "Interpreting and Improving Diffusion Models from
    an Optimization Perspective", https://openreview.net/pdf?id=o2ND9v0CeK): Euler plus a momentum term."""
    extra_args, s_in = setup(x, extra_args)
    capture = UncondCapture()
    if cfg_pp:
        extra_args = capture.install(extra_args)
    old_d = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        d = to_d(x, sigmas[i], capture.uncond if cfg_pp else denoised)
        report(callback, x, i, sigmas[i], denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            x = denoised + d * sigmas[i + 1] if cfg_pp else x + d * dt
            if i >= 1:
                x = x + (ge_gamma - 1) * (d - old_d) * dt
        old_d = d
    return x


@torch.no_grad()
def sample_gradient_estimation_cfg_pp(model, x, sigmas, *, extra_args=None, callback=None, disable=None,
                                      ge_gamma=2.0) -> torch.Tensor:
    """Gradient estimation with CFG++."""
    return sample_gradient_estimation(model, x, sigmas, extra_args=extra_args, callback=callback, ge_gamma=ge_gamma,
                                      cfg_pp=True)
