"""Samplers that only the custom-sampling nodes offer (not in the KSampler list): LCM with progressive upscaling
(SamplerLCMUpscale) and the "alternative" CFG++ Euler step (SamplerEulerCFGpp, version "alternative").

Same contract as every sampler (STYLE.md §1); resizing enters as an argument, because image resampling is not
the samplers' concern.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from diffusion.sampling.noise import CPU_ANCESTRAL_SEED_OFFSET
from diffusion.sampling.samplers.common import Callback, Denoiser, UncondCapture, report, setup, to_d

Resize = Callable[[torch.Tensor, int, int, str, str], torch.Tensor]


def _seeded_generator(x: torch.Tensor, seed: int | None) -> torch.Generator | None:
    """A generator on x's device seeded as the default ancestral noise sampler is (None: global RNG)."""
    if seed is None:
        return None
    offset = CPU_ANCESTRAL_SEED_OFFSET if x.device == torch.device("cpu") else 0
    return torch.Generator(device=x.device).manual_seed(int(seed) + offset)


def upscale_factors(n_sigmas: int, total_upscale: float, upscale_steps: int | None) -> np.ndarray:
    """The cumulative size factor after each of the first steps: linear from 1 to total_upscale over
    `upscale_steps` steps (default: half of the schedule, at least one)."""
    if upscale_steps is None:
        count = max(n_sigmas // 2 + 1, 2)
    else:
        count = min(upscale_steps + 1, n_sigmas + 1)
    return np.linspace(1.0, total_upscale, count)[1:]


@torch.no_grad()
def sample_lcm_upscale(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, extra_args=None,
                       callback: Callback = None, disable=None, total_upscale: float = 2.0,
                       upscale_method: str = "bislerp", upscale_steps: int | None = None,
                       resize: Resize | None = None) -> torch.Tensor:
    """LCM sampling (Luo et al. 2023: each step jumps to the model's x0, then re-noises to the next sigma) whose
    x0 is resized a little after each of the first steps, growing the latent to total_upscale× its size.
    Fresh noise is drawn at the new size from a generator seeded with the run's seed."""
    extra_args, s_in = setup(x, extra_args)
    factors = upscale_factors(len(sigmas), total_upscale, upscale_steps)
    if len(factors) and resize is None:
        raise ValueError("sample_lcm_upscale needs a resize function to grow the latent")
    height, width = x.shape[-2], x.shape[-1]
    generator = _seeded_generator(x, extra_args.get("seed"))
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        report(callback, x, i, sigmas[i], denoised)
        x = denoised
        if i < len(factors):
            x = resize(x, round(width * factors[i]), round(height * factors[i]), upscale_method, "disabled")
            s_in = x.new_ones([x.shape[0]])
        if sigmas[i + 1] > 0:
            x = x + sigmas[i + 1] * torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)
    return x


@torch.no_grad()
def sample_euler_cfg_pp_alternative(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, extra_args=None,
                                    callback: Callback = None, disable=None) -> torch.Tensor:
    """The earlier CFG++ Euler formulation (ComfyUI's sample_euler_pp): the derivative is taken from
    x − denoised + uncond_denoised, i.e. d = (x − 2·denoised + uncond)/sigma."""
    extra_args, s_in = setup(x, extra_args)
    capture = UncondCapture()
    extra_args = capture.install(extra_args)
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        d = to_d(x - denoised + capture.uncond, sigmas[i], denoised)
        report(callback, x, i, sigmas[i], denoised)
        x = x + d * (sigmas[i + 1] - sigmas[i])
    return x
