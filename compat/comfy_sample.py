"""ComfyUI's `comfy.sample` for custom node packs: `prepare_noise`, `fix_empty_latent_channels`, `sample` and
`sample_custom`, with ComfyUI's signatures, over Loom's sampling (`diffusion.sampling.sample`) and memory manager.

`model` is a MODEL value (Loom's model handle, with its patches and options); latents are raw VAE latents, as in
ComfyUI. Sampling places the model (and the ControlNets the conditioning carries) through the running node's model
manager, exactly as Loom's KSampler does, so a pack's sampling and Loom's give the same latents.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from diffusion.sampling.guidance import CFGGuider
from diffusion.sampling.noise import prepare_noise as _prepare_noise
from diffusion.sampling.sample import ksampler_sigmas_from
from diffusion.sampling.sample import sample as _sample
from diffusion.sampling.sample import sample_custom as _sample_custom
from nodes.context import current_or_none
from nodes.sampling import cond_models, run_with_model
from nodes.sampling import fix_empty_latent_channels as _fix_channels

BINDING: Any  # set by compat.install_compat before this module runs
Callback = Callable[[int, torch.Tensor, torch.Tensor, int], None] | None


def prepare_noise(latent_image: torch.Tensor, seed: int, noise_inds: list[int] | None = None) -> torch.Tensor:
    """Unit-variance noise of the latent's shape from `seed` (one draw per batch index), on the CPU."""
    return _prepare_noise(latent_image, seed, noise_inds)


def fix_empty_latent_channels(model: Any, latent_image: torch.Tensor) -> torch.Tensor:
    """An all-zero latent with another channel count becomes zeros of the model's latent channels."""
    return _fix_channels(model.model, latent_image)


def _interrupt_check() -> Callable[[], None] | None:
    ctx = current_or_none()
    return ctx.check_interrupted if ctx is not None else None


def sample(model: Any, noise: torch.Tensor, steps: int, cfg: float, sampler_name: str, scheduler: str,
           positive: list, negative: list, latent_image: torch.Tensor, denoise: float = 1.0,
           disable_noise: bool = False, start_step: int | None = None, last_step: int | None = None,
           force_full_denoise: bool = False, noise_mask: torch.Tensor | None = None,
           sigmas: torch.Tensor | None = None, callback: Callback = None, disable_pbar: bool = False,
           seed: int | None = None) -> torch.Tensor:
    """KSampler's sampling from the given `noise` (zeros with `disable_noise`); returns the raw latent."""
    def run(dm: Any, device: torch.device) -> torch.Tensor:
        return _sample(dm, noise=noise, positive=positive, negative=negative, cfg=cfg, sampler_name=sampler_name,
                       scheduler=scheduler, steps=steps, latent_image=latent_image, denoise=denoise,
                       start_step=start_step, last_step=last_step, force_full_denoise=force_full_denoise,
                       add_noise=not disable_noise, noise_mask=noise_mask, seed=0 if seed is None else seed,
                       device=device, model_options=model.options, callback=callback,
                       interrupt_check=_interrupt_check(), sigmas=sigmas)

    with torch.no_grad():
        return run_with_model(model, tuple(latent_image.shape), run, extra=cond_models(positive, negative))


def sample_custom(model: Any, noise: torch.Tensor, cfg: float, sampler: Any, sigmas: torch.Tensor, positive: list,
                  negative: list, latent_image: torch.Tensor, noise_mask: torch.Tensor | None = None,
                  callback: Callback = None, disable_pbar: bool = False, seed: int | None = None) -> torch.Tensor:
    """SamplerCustom's sampling: a SAMPLER object over explicit `sigmas`, CFG-guided; returns the raw latent."""
    guider = CFGGuider(model.model, model.options)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)

    def run(dm: Any, device: torch.device) -> torch.Tensor:
        return _sample_custom(dm, noise, guider, sampler, ksampler_sigmas_from(sigmas, None, None, False),
                              latent_image, denoise_mask=noise_mask, callback=callback, seed=seed, device=device,
                              interrupt_check=_interrupt_check())

    with torch.no_grad():
        return run_with_model(model, tuple(latent_image.shape), run, extra=cond_models(positive, negative))
