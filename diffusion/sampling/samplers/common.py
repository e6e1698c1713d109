"""Helpers shared by the samplers: the Karras ODE derivative, ancestral step sizes, noise-sampler defaults,
the CFG++ hook that exposes the unconditional prediction, and the progress callback.

The sampler contract (STYLE.md §1): `sample_<name>(model, x, sigmas, *, extra_args=None, callback=None,
disable=None, **knobs) -> Tensor`. `model(x, sigma_batch, **extra_args)` returns the denoised latent.
`extra_args` may hold `seed` (for the default noise samplers) and `model_options` (ComfyUI's dict; the
CFG++ samplers add a `sampler_post_cfg_function` to a copy of it). `callback`, when given, receives a
dict with keys x, i, sigma, sigma_hat, denoised after each model evaluation of a step.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable

import torch

from diffusion.sampling.model_sampling import ModelSampling
from diffusion.sampling.noise import NoiseSampler, brownian_noise_sampler, default_noise_sampler

Denoiser = Callable[..., torch.Tensor]
Callback = Callable[[dict[str, Any]], None] | None


def append_dims(x: torch.Tensor, ndim: int) -> torch.Tensor:
    """Append trailing singleton dimensions to x until it has ndim dimensions."""
    return x[(...,) + (None,) * (ndim - x.ndim)]


def to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """The probability-flow ODE derivative dx/dsigma = (x - D(x))/sigma (Karras et al. 2022, eq. 4)."""
    return (x - denoised) / append_dims(sigma, x.ndim)


def get_ancestral_step(sigma_from: torch.Tensor, sigma_to: torch.Tensor, eta: float = 1.0):
    """Split a step into a deterministic part down to sigma_down and fresh noise of size sigma_up, so that
    sigma_down² + sigma_up² = sigma_to² (k-diffusion; DDPM ancestral sampling when eta = 1)."""
    if not eta:
        return sigma_to, 0.0
    sigma_up = min(sigma_to, eta * (sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) / sigma_from ** 2) ** 0.5)
    sigma_down = (sigma_to ** 2 - sigma_up ** 2) ** 0.5
    return sigma_down, sigma_up


def ei_h_phi_1(h: torch.Tensor) -> torch.Tensor:
    """h·phi_1(h) = e^h - 1, the first exponential-integrator coefficient."""
    return torch.expm1(h)


def ei_h_phi_2(h: torch.Tensor) -> torch.Tensor:
    """h·phi_2(h) = (e^h - 1 - h)/h."""
    return (torch.expm1(h) - h) / h


def half_log_snr(sigma: torch.Tensor) -> torch.Tensor:
    """lambda = log(alpha/sigma_vp) = -log(sigma) for the variance-exploding parameterisation."""
    return sigma.log().neg()


def lambda_to_sigma(lam: torch.Tensor) -> torch.Tensor:
    return lam.neg().exp()


def setup(x: torch.Tensor, extra_args: dict | None) -> tuple[dict, torch.Tensor]:
    """A private copy of extra_args and the ones vector that turns a scalar sigma into a batch."""
    return dict(extra_args or {}), x.new_ones([x.shape[0]])


def ancestral_noise(x: torch.Tensor, extra_args: dict, noise_sampler: NoiseSampler | None) -> NoiseSampler:
    """The given noise sampler, or the seeded default one on x's device."""
    return default_noise_sampler(x, seed=extra_args.get("seed")) if noise_sampler is None else noise_sampler


def sde_noise(x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict, noise_sampler: NoiseSampler | None,
              cpu: bool = True) -> NoiseSampler:
    """The given noise sampler, or a seeded Brownian tree over the schedule (on the CPU unless cpu=False)."""
    if noise_sampler is not None:
        return noise_sampler
    return brownian_noise_sampler(x, sigmas, extra_args.get("seed"), cpu=cpu)


@lru_cache(maxsize=1)
def _default_model_sampling() -> ModelSampling:
    return ModelSampling()


def model_sampling_of(model: Denoiser) -> ModelSampling:
    """The model's schedule if the denoiser exposes one (`model.model_sampling`), else SD's eps schedule."""
    ms = getattr(model, "model_sampling", None)
    return ms if ms is not None else _default_model_sampling()


def report(callback: Callback, x: torch.Tensor, i: int, sigma: torch.Tensor, denoised: torch.Tensor,
           sigma_hat: torch.Tensor | None = None) -> None:
    """Send the per-step progress dict to callback, if any."""
    if callback is not None:
        callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma if sigma_hat is None else sigma_hat,
                  "denoised": denoised})


class UncondCapture:
    """CFG++ (Chung et al. 2024, arXiv:2406.08070) needs the unconditional prediction next to the guided one.

    `install(extra_args)` returns extra_args whose model_options carry a post-CFG hook that records
    `uncond_denoised` and forces the uncond pass even at cfg 1 (disable_cfg1_optimization); after each
    model call `self.uncond` holds it."""

    def __init__(self) -> None:
        self.uncond: torch.Tensor | None = None

    def __call__(self, args: dict[str, Any]) -> torch.Tensor:
        self.uncond = args["uncond_denoised"]
        return args["denoised"]

    def install(self, extra_args: dict) -> dict:
        options = dict(extra_args.get("model_options") or {})
        options["sampler_post_cfg_function"] = list(options.get("sampler_post_cfg_function", [])) + [self]
        options["disable_cfg1_optimization"] = True
        return {**extra_args, "model_options": options}
