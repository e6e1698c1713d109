"""More SIGMAS nodes and AddNoise: the schedulers BetaSamplingScheduler, LaplaceScheduler, VPScheduler,
GITSScheduler and OptimalStepsScheduler; the sigma tools SetFirstSigma, ExtendIntermediateSigmas and
SamplingPercentToSigma; AddNoise (noise a latent to the level of a sigma list without sampling).

Names, inputs, defaults, ranges and categories are ComfyUI's (`comfy_extras/nodes_custom_sampler.py`,
`nodes_gits.py`, `nodes_optimalsteps.py`). Schedules are computed in `diffusion/sampling/schedules.py`,
`diffusion/sampling/sigma_tools.py` and `diffusion/sampling/gits_table.py`.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from diffusion.files.assemble import model_sampling_of
from diffusion.sampling.gits_table import gits_schedule
from diffusion.patcher import ModelHandle
from diffusion.sampling.schedules import beta_schedule
from diffusion.sampling.sigma_tools import (OPTIMAL_STEPS_NOISE_LEVELS, SPACINGS, extend_intermediate_sigmas,
                                   get_sigmas_laplace, get_sigmas_vp, optimal_steps)
from nodes.sampling import Latent
from nodes.sampling_custom import SD_SIGMA_MAX, SD_SIGMA_MIN
from nodes.spec import Boolean, Combo, Float, Input, Int, Node, Output

_SCHEDULERS = "sampling/custom_sampling/schedulers"
_SIGMAS = "sampling/custom_sampling/sigmas"


def _shape(name: str, default: float, low: float = 0.0, high: float = 5000.0, step: float = 0.01) -> object:
    return Float(name, default, min=low, max=high, step=step, round=False)


class BetaSamplingScheduler(Node):
    """Timesteps at the quantiles of a Beta(alpha, beta) distribution (Lee et al. 2024), from the model's schedule."""

    CATEGORY = _SCHEDULERS
    INPUTS = (Input("model", "MODEL"), Int("steps", 20, min=1, max=10000), _shape("alpha", 0.6, high=50.0),
              _shape("beta", 0.6, high=50.0))
    OUTPUTS = (Output("SIGMAS"),)

    def execute(self, model: ModelHandle, steps: int, alpha: float, beta: float) -> tuple[torch.Tensor]:
        return (beta_schedule(model_sampling_of(model), steps, alpha=alpha, beta=beta),)


class LaplaceScheduler(Node):
    """Log sigma at the quantiles of a Laplace(mu, beta) distribution."""

    CATEGORY = _SCHEDULERS
    INPUTS = (Int("steps", 20, min=1, max=10000), _shape("sigma_max", SD_SIGMA_MAX),
              _shape("sigma_min", SD_SIGMA_MIN), _shape("mu", 0.0, low=-10.0, high=10.0, step=0.1),
              _shape("beta", 0.5, high=10.0, step=0.1))
    OUTPUTS = (Output("SIGMAS"),)

    def execute(self, steps: int, sigma_max: float, sigma_min: float, mu: float, beta: float) -> tuple[torch.Tensor]:
        return (get_sigmas_laplace(steps, sigma_min, sigma_max, mu=mu, beta=beta),)


class VPScheduler(Node):
    """The continuous variance-preserving SDE schedule."""

    CATEGORY = _SCHEDULERS
    INPUTS = (Int("steps", 20, min=1, max=10000), _shape("beta_d", 19.9), _shape("beta_min", 0.1),
              _shape("eps_s", 0.001, high=1.0, step=0.0001))
    OUTPUTS = (Output("SIGMAS"),)

    def execute(self, steps: int, beta_d: float, beta_min: float, eps_s: float) -> tuple[torch.Tensor]:
        return (get_sigmas_vp(steps, beta_d=beta_d, beta_min=beta_min, eps_s=eps_s),)


class GITSScheduler(Node):
    """GITS (Chen et al. 2024): the searched SD1.5 noise levels for a guidance coefficient and step count."""

    CATEGORY = _SCHEDULERS
    INPUTS = (Float("coeff", 1.20, min=0.80, max=1.50, step=0.05), Int("steps", 10, min=2, max=1000),
              Float("denoise", 1.0, min=0.0, max=1.0, step=0.01))
    OUTPUTS = (Output("SIGMAS"),)

    def execute(self, coeff: float, steps: int, denoise: float) -> tuple[torch.Tensor]:
        return (gits_schedule(coeff, steps, denoise),)


class OptimalStepsScheduler(Node):
    """The OptimalSteps noise levels for a flow model family, resampled to `steps`."""

    CATEGORY = _SCHEDULERS
    INPUTS = (Combo("model_type", tuple(OPTIMAL_STEPS_NOISE_LEVELS)), Int("steps", 20, min=3, max=1000),
              Float("denoise", 1.0, min=0.0, max=1.0, step=0.01))
    OUTPUTS = (Output("SIGMAS"),)

    def execute(self, model_type: str, steps: int, denoise: float) -> tuple[torch.Tensor]:
        return (optimal_steps(model_type, steps, denoise),)


class SetFirstSigma(Node):
    """The sigmas with the first one replaced."""

    CATEGORY = _SIGMAS
    INPUTS = (Input("sigmas", "SIGMAS"), Float("sigma", 136.0, min=0.0, max=20000.0, step=0.001, round=False))
    OUTPUTS = (Output("SIGMAS"),)

    def execute(self, sigmas: torch.Tensor, sigma: float) -> tuple[torch.Tensor]:
        if len(sigmas) == 0:
            raise ValueError("SetFirstSigma: sigmas is empty, there is no first sigma to set")
        out = sigmas.clone()
        out[0] = sigma
        return (out,)


class ExtendIntermediateSigmas(Node):
    """Adds steps−1 sigmas between neighbours whose first sigma lies in [end_at_sigma, start_at_sigma]
    (start_at_sigma −1: no upper bound), spaced linearly, or denser near the start (cosine) or end (sine)."""

    CATEGORY = _SIGMAS
    INPUTS = (Input("sigmas", "SIGMAS"), Int("steps", 2, min=1, max=100),
              Float("start_at_sigma", -1.0, min=-1.0, max=20000.0, step=0.01, round=False),
              Float("end_at_sigma", 12.0, min=0.0, max=20000.0, step=0.01, round=False),
              Combo("spacing", tuple(SPACINGS)))
    OUTPUTS = (Output("SIGMAS"),)

    def execute(self, sigmas: torch.Tensor, steps: int, start_at_sigma: float, end_at_sigma: float,
                spacing: str) -> tuple[torch.Tensor]:
        return (extend_intermediate_sigmas(sigmas, steps, start_at_sigma, end_at_sigma, spacing),)


class SamplingPercentToSigma(Node):
    """The model's sigma at a fraction of sampling (what start/end percent inputs compare against)."""

    CATEGORY = _SIGMAS
    INPUTS = (Input("model", "MODEL"), Float("sampling_percent", 0.0, min=0.0, max=1.0, step=0.0001),
              Boolean("return_actual_sigma", False,
                      tooltip="Give the schedule's real sigma instead of the value used for interval checks; "
                              "this differs only at 0.0 and 1.0."))
    OUTPUTS = (Output("FLOAT", "sigma_value"),)

    def execute(self, model: ModelHandle, sampling_percent: float, return_actual_sigma: bool) -> tuple[float]:
        sampling = model_sampling_of(model)
        sigma = float(sampling.percent_to_sigma(sampling_percent))
        if return_actual_sigma:
            if sampling_percent == 0.0:
                sigma = float(sampling.sigma_max)
            elif sampling_percent == 1.0:
                sigma = float(sampling.sigma_min)
        return (sigma,)


def add_noise(sampling: Any, process_in: Callable, process_out: Callable, noise: torch.Tensor,
              sigmas: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
    """The raw latent noised to the span of `sigmas` (|first − last|, or the only sigma): process_in,
    noise·sigma + latent, process_out; NaN/inf become 0."""
    scale = torch.abs(sigmas[0] - sigmas[-1]) if len(sigmas) > 1 else sigmas[0]
    if torch.count_nonzero(latent) > 0:  # an empty latent is not shifted
        latent = process_in(latent)
    noisy = sampling.noise_scaling(scale, noise.to(latent.dtype), latent)
    return torch.nan_to_num(process_out(noisy), nan=0.0, posinf=0.0, neginf=0.0)


class AddNoise(Node):
    """Adds NOISE to a latent at the noise level the SIGMAS span, without sampling."""

    CATEGORY = "_for_testing/custom_sampling/noise"
    EXPERIMENTAL = True
    INPUTS = (Input("model", "MODEL"), Input("noise", "NOISE"), Input("sigmas", "SIGMAS"),
              Input("latent_image", "LATENT"))
    OUTPUTS = (Output("LATENT"),)

    def execute(self, model: ModelHandle, noise: Any, sigmas: torch.Tensor, latent_image: Latent) -> tuple[Latent]:
        if len(sigmas) == 0:
            return (latent_image,)
        drawn = noise.generate_noise(latent_image)
        noisy = add_noise(model_sampling_of(model), model.model.process_latent_in, model.model.process_latent_out,
                          drawn, sigmas.cpu().float(), latent_image["samples"].float())
        return ({**latent_image, "samples": noisy},)


NODES: list[type] = [BetaSamplingScheduler, LaplaceScheduler, VPScheduler, GITSScheduler, OptimalStepsScheduler,
                     SetFirstSigma, ExtendIntermediateSigmas, SamplingPercentToSigma, AddNoise]
