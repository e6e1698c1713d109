"""DPM-Solver (Lu et al. 2022, arXiv:2206.00927) in noise-prediction form on t = -log(sigma):
fixed-step "DPM-Solver-fast" (orders 3,3,...,2,1) and the adaptive DPM-Solver-12/23 with a PID step-size
controller (as k-diffusion). ComfyUI's dpm_fast/dpm_adaptive run between the last positive sigma and
sigmas[0]; the `sample_*` functions here take the usual sigmas and do the same."""
from __future__ import annotations

import math

import torch

from diffusion.sampling.noise import NoiseSampler
from diffusion.sampling.samplers.common import Callback, Denoiser, ancestral_noise, get_ancestral_step, setup


def _sigma(t: torch.Tensor) -> torch.Tensor:
    return t.neg().exp()


def _t(sigma: torch.Tensor) -> torch.Tensor:
    return -sigma.log()


class _EpsCache:
    """Noise predictions eps(x, t) of one step, evaluated at most once per key."""

    def __init__(self, model: Denoiser, extra_args: dict, on_eval=None):
        self.model, self.extra_args, self.on_eval, self.cache = model, extra_args, on_eval, {}

    def __call__(self, key: str, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if key not in self.cache:
            sigma = _sigma(t) * x.new_ones([x.shape[0]])
            self.cache[key] = (x - self.model(x, sigma, **self.extra_args)) / _sigma(t)
            if self.on_eval is not None:
                self.on_eval()
        return self.cache[key]


def _step1(eps: _EpsCache, x, t, t_next):
    """DPM-Solver-1 (= DDIM) from t to t_next."""
    h = t_next - t
    return x - _sigma(t_next) * h.expm1() * eps("eps", x, t)


def _step2(eps: _EpsCache, x, t, t_next, r1=1 / 2):
    """DPM-Solver-2 (Lu et al. 2022, Algorithm 4)."""
    h = t_next - t
    e = eps("eps", x, t)
    s1 = t + r1 * h
    u1 = x - _sigma(s1) * (r1 * h).expm1() * e
    e_r1 = eps("eps_r1", u1, s1)
    return x - _sigma(t_next) * h.expm1() * e - _sigma(t_next) / (2 * r1) * h.expm1() * (e_r1 - e)


def _step3(eps: _EpsCache, x, t, t_next, r1=1 / 3, r2=2 / 3):
    """DPM-Solver-3 (Lu et al. 2022, Algorithm 5)."""
    h = t_next - t
    e = eps("eps", x, t)
    s1, s2 = t + r1 * h, t + r2 * h
    u1 = x - _sigma(s1) * (r1 * h).expm1() * e
    e_r1 = eps("eps_r1", u1, s1)
    u2 = x - _sigma(s2) * (r2 * h).expm1() * e - _sigma(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1) * (e_r1 - e)
    e_r2 = eps("eps_r2", u2, s2)
    return x - _sigma(t_next) * h.expm1() * e - _sigma(t_next) / r2 * (h.expm1() / h - 1) * (e_r2 - e)


def _ancestral_target(t, t_next, t_end, eta):
    """Where an eta > 0 step really goes (t_next_) and how much noise it adds back (su)."""
    if not eta:
        return t_next, 0.0
    sd, _ = get_ancestral_step(_sigma(t), _sigma(t_next), eta)
    t_next_ = torch.minimum(t_end, _t(sd))
    return t_next_, (_sigma(t_next) ** 2 - _sigma(t_next_) ** 2) ** 0.5


@torch.no_grad()
def dpm_solver_fast(model: Denoiser, x: torch.Tensor, sigma_min, sigma_max, n: int, *, extra_args=None,
                    callback: Callback = None, eta=0.0, s_noise=1.0, noise_sampler: NoiseSampler | None = None):
    """DPM-Solver-fast with n model evaluations from sigma_max to sigma_min (k-diffusion sample_dpm_fast)."""
    if sigma_min <= 0 or sigma_max <= 0:
        raise ValueError("sigma_min and sigma_max must not be 0")
    extra_args, _ = setup(x, extra_args)
    noise = ancestral_noise(x, extra_args, noise_sampler)
    t_start, t_end = _t(torch.as_tensor(sigma_max)), _t(torch.as_tensor(sigma_min))
    m = math.floor(n / 3) + 1
    ts = torch.linspace(t_start, t_end, m + 1, device=x.device)
    orders = [3] * (m - 2) + [2, 1] if n % 3 == 0 else [3] * (m - 1) + [n % 3]
    for i, order in enumerate(orders):
        eps = _EpsCache(model, extra_args)
        t, t_next = ts[i], ts[i + 1]
        t_next_, su = _ancestral_target(t, t_next, t_end, eta)
        denoised = x - _sigma(t) * eps("eps", x, t)
        if callback is not None:
            callback({"x": x, "i": i, "t": t, "sigma": _sigma(t), "sigma_hat": _sigma(t), "denoised": denoised})
        x = (_step1, _step2, _step3)[order - 1](eps, x, t, t_next_)
        x = x + su * s_noise * noise(_sigma(t), _sigma(t_next))
    return x


class _PID:
    """PID step-size controller for adaptive ODE solvers (Söderlind 2003; k-diffusion PIDStepSizeController)."""

    def __init__(self, h, pcoeff, icoeff, dcoeff, order=1, accept_safety=0.81, eps=1e-8):
        self.h, self.accept_safety, self.eps, self.errs = h, accept_safety, eps, []
        self.b1 = (pcoeff + icoeff + dcoeff) / order
        self.b2 = -(pcoeff + 2 * dcoeff) / order
        self.b3 = dcoeff / order

    def propose_step(self, error) -> bool:
        inv_error = 1 / (float(error) + self.eps)
        if not self.errs:
            self.errs = [inv_error, inv_error, inv_error]
        self.errs[0] = inv_error
        factor = self.errs[0] ** self.b1 * self.errs[1] ** self.b2 * self.errs[2] ** self.b3
        factor = 1 + math.atan(factor - 1)
        accept = factor >= self.accept_safety
        if accept:
            self.errs[2], self.errs[1] = self.errs[1], self.errs[0]
        self.h *= factor
        return accept


@torch.no_grad()
def dpm_solver_adaptive(model: Denoiser, x: torch.Tensor, sigma_min, sigma_max, *, extra_args=None,
                        callback: Callback = None, order=3, rtol=0.05, atol=0.0078, h_init=0.05, pcoeff=0.0,
                        icoeff=1.0, dcoeff=0.0, accept_safety=0.81, eta=0.0, s_noise=1.0,
                        noise_sampler: NoiseSampler | None = None):
    """DPM-Solver-12/23 with adaptive steps (Lu et al. 2022, §4.2; k-diffusion sample_dpm_adaptive)."""
    if sigma_min <= 0 or sigma_max <= 0:
        raise ValueError("sigma_min and sigma_max must not be 0")
    if order not in {2, 3}:
        raise ValueError("order should be 2 or 3")
    extra_args, _ = setup(x, extra_args)
    noise = ancestral_noise(x, extra_args, noise_sampler)
    t_start, t_end = _t(torch.as_tensor(sigma_max)), _t(torch.as_tensor(sigma_min))
    atol_t, rtol_t = torch.tensor(atol), torch.tensor(rtol)
    s, x_prev = t_start, x
    pid = _PID(abs(h_init), pcoeff, icoeff, dcoeff, 1.5 if eta else order, accept_safety)
    steps = 0
    while s < t_end - 1e-5:
        eps = _EpsCache(model, extra_args)
        t = torch.minimum(t_end, s + pid.h)
        t_, su = _ancestral_target(s, t, t_end, eta)
        denoised = x - _sigma(s) * eps("eps", x, s)
        if order == 2:
            x_low, x_high = _step1(eps, x, s, t_), _step2(eps, x, s, t_)
        else:
            x_low, x_high = _step2(eps, x, s, t_, r1=1 / 3), _step3(eps, x, s, t_)
        delta = torch.maximum(atol_t, rtol_t * torch.maximum(x_low.abs(), x_prev.abs()))
        error = torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5
        if pid.propose_step(error):
            x_prev = x_low
            x = x_high + su * s_noise * noise(_sigma(s), _sigma(t))
            s = t
        steps += 1
        if callback is not None:
            callback({"x": x, "i": steps - 1, "t": s, "sigma": _sigma(s), "sigma_hat": _sigma(s), "denoised": denoised})
    return x


def _range(sigmas: torch.Tensor):
    sigma_min = sigmas[-1] if sigmas[-1] != 0 else sigmas[-2]
    return sigma_min, sigmas[0]


@torch.no_grad()
def sample_dpm_fast(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, extra_args=None,
                    callback: Callback = None, disable=None, eta=0.0, s_noise=1.0,
                    noise_sampler: NoiseSampler | None = None) -> torch.Tensor:
    """DPM-Solver-fast (Lu et al. 2022) with len(sigmas)-1 evaluations between the last positive sigma and sigmas[0]."""
    if len(sigmas) <= 1:
        return x
    sigma_min, sigma_max = _range(sigmas)
    return dpm_solver_fast(model, x, sigma_min, sigma_max, len(sigmas) - 1, extra_args=extra_args,
                           callback=callback, eta=eta, s_noise=s_noise, noise_sampler=noise_sampler)


@torch.no_grad()
def sample_dpm_adaptive(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, extra_args=None,
                        callback: Callback = None, disable=None, **knobs) -> torch.Tensor:
    """Adaptive DPM-Solver-12/23 (Lu et al. 2022) between the last positive sigma and sigmas[0]; the step
    count is chosen by the error controller, not by sigmas."""
    if len(sigmas) <= 1:
        return x
    sigma_min, sigma_max = _range(sigmas)
    return dpm_solver_adaptive(model, x, sigma_min, sigma_max, extra_args=extra_args, callback=callback, **knobs)
