"""Every sampler of ComfyUI's KSampler list (plus PLMS), as pure functions with one signature.

`SAMPLERS` maps the UI names to `sample_<name>(model, x, sigmas, *, extra_args=None, callback=None,
disable=None, **knobs)`. `SAMPLER_NAMES` is the KSampler combo in ComfyUI's order. Two names need more
than the function, and the pipeline (diffusion/sampling/sample.py) reads these sets:
- `RANDOM_INPAINT_NOISE_SAMPLERS`: "ddim" is Euler whose inpainting re-noise uses fresh noise drawn
  from seed+1 instead of the initial noise (ComfyUI `sampler_object("ddim")`).
- `schedules.DISCARD_PENULTIMATE_SIGMA_SAMPLERS`: dpm_2, dpm_2_ancestral, uni_pc, uni_pc_bh2 get one
  extra scheduled step whose penultimate sigma is removed.
"""
from __future__ import annotations

from typing import Callable

from diffusion.sampling.samplers.dpm import sample_dpm_adaptive, sample_dpm_fast
from diffusion.sampling.samplers.dpmpp import (sample_dpmpp_2m, sample_dpmpp_2m_cfg_pp, sample_dpmpp_2m_sde,
                                      sample_dpmpp_2m_sde_gpu, sample_dpmpp_2m_sde_heun,
                                      sample_dpmpp_2m_sde_heun_gpu, sample_dpmpp_2s_ancestral,
                                      sample_dpmpp_2s_ancestral_cfg_pp, sample_dpmpp_3m_sde,
                                      sample_dpmpp_3m_sde_gpu, sample_dpmpp_sde, sample_dpmpp_sde_gpu)
from diffusion.sampling.samplers.euler import (sample_ddpm, sample_dpm_2, sample_dpm_2_ancestral, sample_euler,
                                      sample_euler_ancestral, sample_euler_ancestral_cfg_pp, sample_euler_cfg_pp,
                                      sample_heun, sample_heunpp2, sample_lcm)
from diffusion.sampling.samplers.multistep import (sample_deis, sample_gradient_estimation,
                                          sample_gradient_estimation_cfg_pp, sample_ipndm, sample_ipndm_v,
                                          sample_lms, sample_plms, sample_res_multistep,
                                          sample_res_multistep_ancestral, sample_res_multistep_ancestral_cfg_pp,
                                          sample_res_multistep_cfg_pp)
from diffusion.sampling.samplers.sa_solver import sample_sa_solver, sample_sa_solver_pece
from diffusion.sampling.samplers.sde import sample_er_sde, sample_seeds_2, sample_seeds_3
from diffusion.sampling.samplers.unipc import sample_uni_pc, sample_uni_pc_bh2

SamplerFn = Callable[..., object]

SAMPLERS: dict[str, SamplerFn] = {
    "euler": sample_euler,
    "euler_cfg_pp": sample_euler_cfg_pp,
    "euler_ancestral": sample_euler_ancestral,
    "euler_ancestral_cfg_pp": sample_euler_ancestral_cfg_pp,
    "heun": sample_heun,
    "heunpp2": sample_heunpp2,
    "dpm_2": sample_dpm_2,
    "dpm_2_ancestral": sample_dpm_2_ancestral,
    "lms": sample_lms,
    "dpm_fast": sample_dpm_fast,
    "dpm_adaptive": sample_dpm_adaptive,
    "dpmpp_2s_ancestral": sample_dpmpp_2s_ancestral,
    "dpmpp_2s_ancestral_cfg_pp": sample_dpmpp_2s_ancestral_cfg_pp,
    "dpmpp_sde": sample_dpmpp_sde,
    "dpmpp_sde_gpu": sample_dpmpp_sde_gpu,
    "dpmpp_2m": sample_dpmpp_2m,
    "dpmpp_2m_cfg_pp": sample_dpmpp_2m_cfg_pp,
    "dpmpp_2m_sde": sample_dpmpp_2m_sde,
    "dpmpp_2m_sde_gpu": sample_dpmpp_2m_sde_gpu,
    "dpmpp_2m_sde_heun": sample_dpmpp_2m_sde_heun,
    "dpmpp_2m_sde_heun_gpu": sample_dpmpp_2m_sde_heun_gpu,
    "dpmpp_3m_sde": sample_dpmpp_3m_sde,
    "dpmpp_3m_sde_gpu": sample_dpmpp_3m_sde_gpu,
    "ddpm": sample_ddpm,
    "lcm": sample_lcm,
    "ipndm": sample_ipndm,
    "ipndm_v": sample_ipndm_v,
    "deis": sample_deis,
    "res_multistep": sample_res_multistep,
    "res_multistep_cfg_pp": sample_res_multistep_cfg_pp,
    "res_multistep_ancestral": sample_res_multistep_ancestral,
    "res_multistep_ancestral_cfg_pp": sample_res_multistep_ancestral_cfg_pp,
    "gradient_estimation": sample_gradient_estimation,
    "gradient_estimation_cfg_pp": sample_gradient_estimation_cfg_pp,
    "er_sde": sample_er_sde,
    "seeds_2": sample_seeds_2,
    "seeds_3": sample_seeds_3,
    "sa_solver": sample_sa_solver,
    "sa_solver_pece": sample_sa_solver_pece,
    "ddim": sample_euler,
    "uni_pc": sample_uni_pc,
    "uni_pc_bh2": sample_uni_pc_bh2,
    "plms": sample_plms,
}

SAMPLER_NAMES: list[str] = list(SAMPLERS)

RANDOM_INPAINT_NOISE_SAMPLERS = frozenset({"ddim"})

# Samplers that consume the unconditional prediction (CFG++), so cfg 1 still runs the uncond pass.
CFG_PP_SAMPLERS = frozenset(name for name in SAMPLERS if name.endswith("_cfg_pp"))


def get_sampler(name: str) -> SamplerFn:
    """The sampler function for a UI name, with a clear error for unknown names."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {SAMPLER_NAMES}")
    return SAMPLERS[name]
