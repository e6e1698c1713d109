"""ComfyUI's `comfy.samplers` for custom node packs: `KSampler` (its `SAMPLERS` / `SCHEDULERS` combos, from Loom's
`diffusion.sampling.samplers.SAMPLERS` and `diffusion.sampling.schedules.SCHEDULES`, and `KSampler(model, steps, device, ...)
.sample(...)`), SAMPLER values (`KSAMPLER`, `sampler_object`, `ksampler`), `calculate_sigmas`, `sample`, and
`CFGGuider` with the guidance functions its subclasses call (`sampling_function`, `calc_cond_batch`,
`cfg_function`; `compat/cfg_guider.py`).
"""
from __future__ import annotations

from typing import Any

import torch

from compat.cfg_guider import CFGGuider, calc_cond_batch, cfg_function, sampling_function
from compat.comfy_sampler import Sampler, run_sampler
from diffusion.sampling.sample import Sampler as _Sampler
from diffusion.sampling.sample import sampler_object as _sampler_object
from diffusion.sampling.samplers import SAMPLERS as _SAMPLERS
from diffusion.sampling.schedules import DISCARD_PENULTIMATE_SIGMA_SAMPLERS as _DISCARD
from diffusion.sampling.schedules import SCHEDULES as _SCHEDULES
from diffusion.sampling.schedules import calculate_sigmas as _calculate_sigmas

BINDING: Any  # set by compat.install_compat before this module runs

# ComfyUI splits its names into k-diffusion samplers and the few it implements itself.
_OWN = ("ddim", "uni_pc", "uni_pc_bh2")
SAMPLER_NAMES: list[str] = list(_SAMPLERS)
KSAMPLER_NAMES: list[str] = [name for name in SAMPLER_NAMES if name not in _OWN]
SCHEDULER_NAMES: list[str] = list(_SCHEDULES)


__all__ = ["CFGGuider", "KSAMPLER", "KSAMPLER_NAMES", "KSampler", "SAMPLER_NAMES", "SCHEDULER_NAMES", "Sampler",
           "calc_cond_batch", "calculate_sigmas", "cfg_function", "ksampler", "sample", "sampler_object",
           "sampling_function"]


class KSampler:
    """ComfyUI's KSampler object: `KSampler(model, steps, device, sampler, scheduler, denoise, model_options)` holds
    the sigmas of `steps` at `denoise` (unknown sampler/scheduler names fall back to the first of each list, as in
    ComfyUI); `sample(noise, positive, negative, cfg, latent_image, ...)` runs them with a CFGGuider."""

    SAMPLERS = SAMPLER_NAMES
    SCHEDULERS = SCHEDULER_NAMES
    DISCARD_PENULTIMATE_SIGMA_SAMPLERS = set(_DISCARD)

    def __init__(self, model: Any, steps: int, device: Any, sampler: str | None = None, scheduler: str | None = None,
                 denoise: float | None = None, model_options: dict | None = None) -> None:
        self.model = model
        self.device = device
        self.scheduler = scheduler if scheduler in self.SCHEDULERS else self.SCHEDULERS[0]
        self.sampler = sampler if sampler in self.SAMPLERS else self.SAMPLERS[0]
        self.denoise = denoise
        self.model_options = model_options or {}
        self.set_steps(steps, denoise)

    def _model_sampling(self) -> Any:
        getter = getattr(self.model, "get_model_object", None)
        return getter("model_sampling") if callable(getter) else self.model.model.model_sampling

    def calculate_sigmas(self, steps: int) -> torch.Tensor:
        """The full schedule of `steps` (the penultimate sigma dropped for the samplers that do so)."""
        return _calculate_sigmas(self._model_sampling(), self.scheduler, steps, sampler_name=self.sampler)

    def set_steps(self, steps: int, denoise: float | None = None) -> None:
        self.steps = steps
        sigmas = _calculate_sigmas(self._model_sampling(), self.scheduler, steps, 1.0 if denoise is None else denoise,
                                   sampler_name=self.sampler)
        self.sigmas = sigmas.to(self.device) if self.device is not None else sigmas

    def sample(self, noise: torch.Tensor, positive: list, negative: list, cfg: float,
               latent_image: torch.Tensor | None = None, start_step: int | None = None, last_step: int | None = None,
               force_full_denoise: bool = False, denoise_mask: torch.Tensor | None = None,
               sigmas: torch.Tensor | None = None, callback: Any = None, disable_pbar: bool = False,
               seed: int | None = None) -> torch.Tensor:
        """Sample `latent_image` (raw VAE latent) from `noise`; returns the raw latent."""
        sigmas = self.sigmas if sigmas is None else sigmas
        if last_step is not None and last_step < len(sigmas) - 1:
            sigmas = sigmas[:last_step + 1].clone()
            if force_full_denoise:
                sigmas[-1] = 0
        if start_step is not None:
            if start_step >= len(sigmas) - 1:
                return latent_image if latent_image is not None else torch.zeros_like(noise)
            sigmas = sigmas[start_step:]
        return sample(self.model, noise, positive, negative, cfg, self.device, sampler_object(self.sampler), sigmas,
                      self.model_options, latent_image=latent_image, denoise_mask=denoise_mask, callback=callback,
                      disable_pbar=disable_pbar, seed=seed)


def sample(model: Any, noise: torch.Tensor, positive: list, negative: list, cfg: float, device: Any, sampler: Any,
           sigmas: torch.Tensor, model_options: dict | None = None, latent_image: torch.Tensor | None = None,
           denoise_mask: torch.Tensor | None = None, callback: Any = None, disable_pbar: bool = False,
           seed: int | None = None) -> torch.Tensor:
    """A CFGGuider run on `model` with a SAMPLER value over `sigmas` (as ComfyUI, `model_options` is not used: the
    MODEL's own options are)."""
    guider = CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    return guider.sample(noise, latent_image, sampler, sigmas, denoise_mask=denoise_mask, callback=callback,
                         disable_pbar=disable_pbar, seed=seed)


class KSAMPLER(Sampler, _Sampler):
    """ComfyUI's `KSAMPLER(sampler_function, extra_options={}, inpaint_options={})`: a SAMPLER value around a
    k-diffusion-style function `(model, x, sigmas, extra_args, callback, disable, **options)`; its `sample(...)`
    follows ComfyUI's Sampler protocol (`compat/comfy_sampler.py`)."""

    def __init__(self, sampler_function: Any, extra_options: dict | None = None,
                 inpaint_options: dict | None = None) -> None:
        _Sampler.__init__(self, sampler_function, dict(extra_options or {}),
                          random_inpaint_noise=bool((inpaint_options or {}).get("random")))
        self.sampler_function = sampler_function
        self.extra_options = self.options
        self.inpaint_options = dict(inpaint_options or {})

    def sample(self, model_wrap: Any, sigmas: torch.Tensor, extra_args: dict, callback: Any, noise: torch.Tensor,
               latent_image: torch.Tensor | None = None, denoise_mask: torch.Tensor | None = None,
               disable_pbar: bool = False) -> torch.Tensor:
        return run_sampler(self, model_wrap, sigmas, extra_args, callback, noise, latent_image, denoise_mask,
                           disable_pbar)

    sample.loom_builtin = True  # type: ignore[attr-defined]  # Loom's own: the guider may run the function itself


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
    if scheduler_name not in _SCHEDULES:
        raise ValueError(f"invalid scheduler {scheduler_name!r}: one of {', '.join(SCHEDULER_NAMES)}")
    return _calculate_sigmas(model_sampling, scheduler_name, steps)
