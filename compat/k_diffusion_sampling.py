"""ComfyUI's `comfy.k_diffusion.sampling` for custom node packs: every Loom sampler as `sample_<name>` with
k-diffusion's signature `(model, x, sigmas, extra_args=None, callback=None, disable=None, **knobs)`, and the
helpers packs use (`get_sigmas_*`, `to_d`, `default_noise_sampler`, `BrownianTreeNoiseSampler`).
"""
from __future__ import annotations

from typing import Any

from diffusion.sampling.noise import BrownianTreeNoiseSampler, default_noise_sampler
from diffusion.sampling.samplers import SAMPLERS
from diffusion.sampling.samplers.common import to_d
from diffusion.sampling.schedules import (get_sigmas_exponential, get_sigmas_karras, get_sigmas_kl_optimal,
                                 get_sigmas_polyexponential)

BINDING: Any  # set by compat.install_compat before this module runs

__all__ = ["BrownianTreeNoiseSampler", "default_noise_sampler", "to_d", "get_sigmas_karras",
           "get_sigmas_exponential", "get_sigmas_polyexponential", "get_sigmas_kl_optimal"]

for _function in SAMPLERS.values():
    globals()[_function.__name__] = _function
    __all__.append(_function.__name__)
