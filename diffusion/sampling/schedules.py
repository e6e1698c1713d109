"""Noise schedules: pure functions from a step count to a descending sigma sequence ending in 0.

Owns: ComfyUI's scheduler names (`SCHEDULES`: simple, sgm_uniform, karras, exponential, ddim_uniform,
beta, normal, linear_quadratic, kl_optimal), Align Your Steps (Sabour et al. 2024), polyexponential,
SD-Turbo's fixed timesteps, and `calculate_sigmas`, which applies KSampler's rules (denoise < 1,
samplers that discard the penultimate sigma). Every function in `SCHEDULES` is called as
`fn(model_sampling, steps) -> Tensor` (float32, CPU); the k-diffusion-style ones also exist with the
`(n, sigma_min, sigma_max)` signature.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from diffusion.sampling.model_sampling import ModelSampling


def _append_zero(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, x.new_zeros([1])])


def get_sigmas_karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022), eq. 5: sigmas evenly spaced in sigma^(1/rho)."""
    ramp = torch.linspace(0, 1, n)
    min_inv_rho, max_inv_rho = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _append_zero((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho)


def get_sigmas_exponential(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """Sigmas evenly spaced in log sigma."""
    return _append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n).exp())


def get_sigmas_polyexponential(n: int, sigma_min: float, sigma_max: float, rho: float = 1.0) -> torch.Tensor:
    """A polynomial in log sigma (k-diffusion): rho=1 is the exponential schedule."""
    ramp = torch.linspace(1, 0, n) ** rho
    return _append_zero(torch.exp(ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min)))


def get_sigmas_kl_optimal(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """KL-optimal schedule (Sabour et al. 2024, "Align Your Steps", eq. 11): evenly spaced in arctan(sigma)."""
    adj = torch.arange(n, dtype=torch.float).div_(n - 1) if n > 1 else torch.zeros(1)
    sigmas = adj.new_zeros(n + 1)
    sigmas[:-1] = (adj * math.atan(sigma_min) + (1 - adj) * math.atan(sigma_max)).tan_()
    return sigmas


def simple_schedule(ms: ModelSampling, steps: int) -> torch.Tensor:
    """Every len(table)/steps-th entry of the sigma table, from the top."""
    stride = len(ms.sigmas) / steps
    sigs = [float(ms.sigmas[-(1 + int(i * stride))]) for i in range(steps)]
    return torch.FloatTensor(sigs + [0.0])


def ddim_uniform_schedule(ms: ModelSampling, steps: int) -> torch.Tensor:
    """DDIM's "uniform" timestep discretisation (Song et al. 2021): table entries 1, 1+k, 1+2k, ... reversed."""
    x = 1
    if math.isclose(float(ms.sigmas[x]), 0, abs_tol=0.00001):
        steps += 1
        sigs: list[float] = []
    else:
        sigs = [0.0]
    stride = max(len(ms.sigmas) // steps, 1)
    while x < len(ms.sigmas):
        sigs.append(float(ms.sigmas[x]))
        x += stride
    return torch.FloatTensor(sigs[::-1])


def normal_schedule(ms: ModelSampling, steps: int, sgm: bool = False) -> torch.Tensor:
    """Timesteps linearly spaced from timestep(sigma_max) to timestep(sigma_min), mapped back to sigmas.

    With sgm=True (SGM's uniform discretisation) the end point is excluded: steps+1 points, last dropped."""
    start, end = ms.timestep(ms.sigma_max), ms.timestep(ms.sigma_min)
    append_zero = True
    if sgm:
        timesteps = torch.linspace(start, end, steps + 1)[:-1]
    else:
        if math.isclose(float(ms.sigma(end)), 0, abs_tol=0.00001):
            steps += 1
            append_zero = False
        timesteps = torch.linspace(start, end, steps)
    sigs = [float(ms.sigma(ts)) for ts in timesteps]
    return torch.FloatTensor(sigs + [0.0] if append_zero else sigs)


def sgm_uniform_schedule(ms: ModelSampling, steps: int) -> torch.Tensor:
    return normal_schedule(ms, steps, sgm=True)


def beta_schedule(ms: ModelSampling, steps: int, alpha: float = 0.6, beta: float = 0.6) -> torch.Tensor:
    """Beta-distribution timestep spacing (Lee et al. 2024, arXiv:2407.12173): timesteps at the Beta(α,β)
    quantiles of an even grid, rounded to table entries, duplicates dropped."""
    from scipy import stats  # here, not at module level: scipy.stats costs start-up time

    total = len(ms.sigmas) - 1
    ts = 1 - np.linspace(0, 1, steps, endpoint=False)
    ts = np.rint(stats.beta.ppf(ts, alpha, beta) * total)
    sigs: list[float] = []
    last_t = -1.0
    for t in ts:
        if t != last_t:
            sigs.append(float(ms.sigmas[int(t)]))
        last_t = t
    return torch.FloatTensor(sigs + [0.0])


def linear_quadratic_schedule(ms: ModelSampling, steps: int, threshold_noise: float = 0.025,
                              linear_steps: int | None = None) -> torch.Tensor:
    """Linear then quadratic in noise level (Genmo Mochi 1, `infer.py` linear_quadratic_schedule), times sigma_max."""
    if steps == 1:
        schedule = [1.0, 0.0]
    else:
        linear_steps = steps // 2 if linear_steps is None else linear_steps
        linear = [i * threshold_noise / linear_steps for i in range(linear_steps)]
        diff = linear_steps - threshold_noise * steps
        quadratic_steps = steps - linear_steps
        quad_coef = diff / (linear_steps * quadratic_steps ** 2)
        lin_coef = threshold_noise / linear_steps - 2 * diff / (quadratic_steps ** 2)
        const = quad_coef * (linear_steps ** 2)
        quadratic = [quad_coef * (i ** 2) + lin_coef * i + const for i in range(linear_steps, steps)]
        schedule = [1.0 - x for x in linear + quadratic + [1.0]]
    return torch.FloatTensor(schedule) * float(ms.sigma_max)


def _minmax(fn: Callable[..., torch.Tensor]) -> Callable[[ModelSampling, int], torch.Tensor]:
    """Adapt an (n, sigma_min, sigma_max) schedule to the (model_sampling, steps) signature."""
    def scheduled(ms: ModelSampling, steps: int) -> torch.Tensor:
        return fn(steps, float(ms.sigma_min), float(ms.sigma_max))
    scheduled.__name__ = fn.__name__
    scheduled.__doc__ = fn.__doc__
    return scheduled


SCHEDULES: dict[str, Callable[[ModelSampling, int], torch.Tensor]] = {
    "simple": simple_schedule,
    "sgm_uniform": sgm_uniform_schedule,
    "karras": _minmax(get_sigmas_karras),
    "exponential": _minmax(get_sigmas_exponential),
    "ddim_uniform": ddim_uniform_schedule,
    "beta": beta_schedule,
    "normal": normal_schedule,
    "linear_quadratic": linear_quadratic_schedule,
    "kl_optimal": _minmax(get_sigmas_kl_optimal),
}
SCHEDULER_NAMES = list(SCHEDULES)

# Samplers whose KSampler schedule is computed for steps+1 and the penultimate sigma dropped (ComfyUI).
DISCARD_PENULTIMATE_SIGMA_SAMPLERS = frozenset({"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"})


def scheduler_sigmas(ms: ModelSampling, scheduler: str, steps: int) -> torch.Tensor:
    """The named schedule for `steps` steps."""
    if scheduler not in SCHEDULES:
        raise ValueError(f"unknown scheduler {scheduler!r}; choose one of {SCHEDULER_NAMES}")
    return SCHEDULES[scheduler](ms, steps)


def calculate_sigmas(ms: ModelSampling, scheduler: str, steps: int, denoise: float = 1.0,
                     sampler_name: str | None = None) -> torch.Tensor:
    """KSampler's sigmas: for denoise d < 1, schedule int(steps/d) steps and keep the last steps+1 sigmas;
    d <= 0 gives an empty tensor. Samplers in DISCARD_PENULTIMATE_SIGMA_SAMPLERS get one extra step whose
    penultimate sigma is removed."""
    def full(n: int) -> torch.Tensor:
        if sampler_name in DISCARD_PENULTIMATE_SIGMA_SAMPLERS:
            s = scheduler_sigmas(ms, scheduler, n + 1)
            return torch.cat([s[:-2], s[-1:]])
        return scheduler_sigmas(ms, scheduler, n)

    if denoise is None or denoise > 0.9999:
        return full(steps)
    if denoise <= 0.0:
        return torch.FloatTensor([])
    return full(int(steps / denoise))[-(steps + 1):]


# Align Your Steps (Sabour, Fidler & Kreis 2024), the published 10-step noise levels
# (https://research.nvidia.com/labs/toronto-ai/AlignYourSteps/howto.html).
AYS_NOISE_LEVELS: dict[str, list[float]] = {
    "SD1": [14.6146412293, 6.4745760956, 3.8636745985, 2.6946151520, 1.8841921177, 1.3943805092,
            0.9642583904, 0.6523686016, 0.3977456272, 0.1515232662, 0.0291671582],
    "SDXL": [14.6146412293, 6.3184485287, 3.7681790315, 2.1811480769, 1.3405244945, 0.8620721141,
             0.5550693289, 0.3798540708, 0.2332364134, 0.1114188177, 0.0291671582],
    "SVD": [700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002],
}


def loglinear_interp(t_steps: list[float], num_steps: int) -> np.ndarray:
    """Resample a decreasing sequence to num_steps points, linearly in log space (the AYS how-to)."""
    xs = np.linspace(0, 1, len(t_steps))
    ys = np.log(np.asarray(t_steps)[::-1])
    new_ys = np.interp(np.linspace(0, 1, num_steps), xs, ys)
    return np.exp(new_ys)[::-1].copy()


def align_your_steps(model_type: str, steps: int, denoise: float = 1.0) -> torch.Tensor:
    """AlignYourStepsScheduler: the published table for model_type (SD1, SDXL, SVD), log-linearly
    interpolated when steps != 10; with denoise < 1, round(steps·denoise) final steps are kept."""
    if model_type not in AYS_NOISE_LEVELS:
        raise ValueError(f"unknown Align Your Steps model type {model_type!r}; choose one of {list(AYS_NOISE_LEVELS)}")
    total = steps
    if denoise < 1.0:
        if denoise <= 0.0:
            return torch.FloatTensor([])
        total = round(steps * denoise)
    sigmas = AYS_NOISE_LEVELS[model_type][:]
    if steps + 1 != len(sigmas):
        sigmas = list(loglinear_interp(sigmas, steps + 1))
    sigmas = sigmas[-(total + 1):]
    sigmas[-1] = 0
    return torch.FloatTensor(sigmas)


def sdturbo_schedule(ms: ModelSampling, steps: int, denoise: float = 1.0) -> torch.Tensor:
    """SDTurboScheduler: SD-Turbo's timesteps 999, 899, ..., 99 (Sauer et al. 2023, ADD), starting
    10 - int(10·denoise) entries in, `steps` of them, then 0."""
    start = 10 - int(10 * denoise)
    timesteps = torch.flip(torch.arange(1, 11) * 100 - 1, (0,))[start:start + steps]
    return _append_zero(ms.sigma(timesteps))


def split_sigmas(sigmas: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """SplitSigmas: (sigmas[:step+1], sigmas[step:]) — the two halves share the sigma at `step`."""
    return sigmas[:step + 1], sigmas[step:]


def split_sigmas_denoise(sigmas: torch.Tensor, denoise: float) -> tuple[torch.Tensor, torch.Tensor]:
    """SplitSigmasDenoise: the last round(steps·denoise) steps as the low part, the sigmas before them as the
    high part (empty when that rounds to 0 steps, as ComfyUI's `sigmas[:-0]`)."""
    steps = max(sigmas.shape[-1] - 1, 0)
    total = round(steps * denoise)
    return sigmas[:-total] if total else sigmas[:0], sigmas[-(total + 1):]


def flip_sigmas(sigmas: torch.Tensor) -> torch.Tensor:
    """FlipSigmas: reverse the order (for unsampling); a leading 0 becomes 0.0001 so the first step is defined."""
    if len(sigmas) == 0:
        return sigmas
    sigmas = sigmas.flip(0).clone()
    if sigmas[0] == 0:
        sigmas[0] = 0.0001
    return sigmas
