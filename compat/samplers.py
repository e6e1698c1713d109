"""ComfyUI's `comfy.samplers` names for custom node packs: `KSampler.SAMPLERS` and
`KSampler.SCHEDULERS` (the combos of sampler nodes), from Loom's `diffusion.samplers.SAMPLERS`
and `diffusion.schedules.SCHEDULES`; SAMPLER values (`KSAMPLER`, `sampler_object`, `ksampler`) and
`calculate_sigmas`. Running a sampler is `comfy.sample`'s.
"""
from __future__ import annotations

from typing import Any

from diffusion.sample import Sampler as _Sampler
from diffusion.sample import sampler_object as _sampler_object
from diffusion.samplers import SAMPLERS as _SAMPLERS
from diffusion.schedules import SCHEDULES as _SCHEDULES
from diffusion.schedules import calculate_sigmas as _calculate_sigmas

BINDING: Any  # set by compat.install_compat before this module runs

# ComfyUI splits its names into k-diffusion samplers and the few it implements itself.
_OWN = ("ddim", "uni_pc", "uni_pc_bh2")
SAMPLER_NAMES: list[str] = list(_SAMPLERS)
KSAMPLER_NAMES: list[str] = [name for name in SAMPLER_NAMES if name not in _OWN]
SCHEDULER_NAMES: list[str] = list(_SCHEDULES)


class KSampler:
    """Only the name lists of ComfyUI's class (what packs read for their combos)."""

    SAMPLERS = SAMPLER_NAMES
    SCHEDULERS = SCHEDULER_NAMES


class KSAMPLER(_Sampler):
    """ComfyUI's `KSAMPLER(sampler_function, extra_options={}, inpaint_options={})`: a SAMPLER value around a
    k-diffusion-style function `(model, x, sigmas, extra_args, callback, disable, **options)`."""

    def __init__(self, sampler_function: Any, extra_options: dict | None = None,
                 inpaint_options: dict | None = None) -> None:
        super().__init__(sampler_function, dict(extra_options or {}),
                         random_inpaint_noise=bool((inpaint_options or {}).get("random")))


def sampler_object(name: str) -> _Sampler:
    """The SAMPLER value of a named sampler (KSamplerSelect)."""
    return _sampler_object(name)


def ksampler(sampler_name: str, extra_options: dict | None = None, inpaint_options: dict | None = None) -> _Sampler:
    """A named sampler with knobs, as a SAMPLER value."""
    base = _sampler_object(sampler_name)
    return _Sampler(base.function, {**base.options, **(extra_options or {})},
                    random_inpaint_noise=base.random_inpaint_noise or bool((inpaint_options or {}).get("random")))


def calculate_sigmas(model_sampling: Any, scheduler_name: str, steps: int) -> Any:
    """The sigmas of `scheduler_name` for `steps` on a model's sampling object (ending in 0)."""
    return _calculate_sigmas(model_sampling, scheduler_name, steps)
