"""ComfyUI's `comfy.samplers` names for custom node packs: `KSampler.SAMPLERS` and
`KSampler.SCHEDULERS` (the combos of sampler nodes), from Loom's `diffusion.samplers.SAMPLERS`
and `diffusion.schedules.SCHEDULES`. Sampling itself is not exposed here.
"""
from __future__ import annotations

from typing import Any

from diffusion.samplers import SAMPLERS as _SAMPLERS
from diffusion.schedules import SCHEDULES as _SCHEDULES

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
