"""ComfyUI's SAMPLER object protocol for custom node packs: `comfy.samplers.Sampler` (a base class packs subclass,
with `sample(model_wrap, sigmas, extra_args, callback, noise, latent_image, denoise_mask, disable_pbar)` and
`max_denoise`), and `run_sampler`, which runs one of Loom's SAMPLER values under that protocol.

Under the protocol the sampler gets the guider (`model_wrap`, with `inner_model`) and the raw noise, and does the
rest itself, as ComfyUI's KSAMPLER does: the inpainting denoiser around the guider (Loom's `InpaintDenoiser`), the
start point `noise_scaling(sigma_0, noise, latent)`, the sampler function over the sigmas with the step callback
`callback(step, x0, x, total_steps)`, and `inverse_noise_scaling` at the end. `compat/cfg_guider.py` takes this path
when a pack's own Sampler or a SAMPLER_SAMPLE wrapper is involved; otherwise Loom's `sample_custom` runs.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from diffusion.sampling.sample import InpaintDenoiser
from diffusion.sampling.sample import Sampler as LoomSampler
from nodes.context import current_or_none


class Sampler:
    """ComfyUI's `comfy.samplers.Sampler`: subclasses implement `sample`."""

    def sample(self, model_wrap: Any, sigmas: torch.Tensor, extra_args: dict, callback: Any, noise: torch.Tensor,
               latent_image: torch.Tensor | None = None, denoise_mask: torch.Tensor | None = None,
               disable_pbar: bool = False) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__}.sample is not implemented")

    def max_denoise(self, model_wrap: Any, sigmas: torch.Tensor) -> bool:
        """Whether the run starts at (or above) the model's largest sigma (the noise is then scaled up)."""
        return bool(model_wrap.inner_model.model_sampling.is_max_denoise(sigmas))


def _inpaint_noise(sampler: LoomSampler, noise: torch.Tensor, seed: int | None) -> torch.Tensor:
    """The noise the kept region is re-noised with: fresh noise for the samplers that want it (ddim)."""
    if not sampler.random_inpaint_noise:
        return noise
    generator = torch.Generator(device="cpu").manual_seed((41 if seed is None else seed) + 1)
    return torch.randn(noise.shape, generator=generator, device="cpu").to(noise.dtype).to(noise.device)


def run_sampler(sampler: LoomSampler, model_wrap: Any, sigmas: torch.Tensor, extra_args: dict,
                callback: Callable[[int, torch.Tensor, torch.Tensor, int], None] | None, noise: torch.Tensor,
                latent_image: torch.Tensor | None = None, denoise_mask: torch.Tensor | None = None,
                disable_pbar: bool = False) -> torch.Tensor:
    """Run Loom's SAMPLER value `sampler` under ComfyUI's `Sampler.sample` protocol (see the module docstring)."""
    latent_image = torch.zeros_like(noise) if latent_image is None else latent_image
    ctx = current_or_none()
    extra_args = {**extra_args, "denoise_mask": denoise_mask}
    denoiser = InpaintDenoiser(model_wrap, _inpaint_noise(sampler, noise, extra_args.get("seed")), latent_image,
                               ctx.check_interrupted if ctx is not None else None, sigmas)
    ms = model_wrap.inner_model.model_sampling
    x = ms.noise_scaling(sigmas[0], noise, latent_image, ms.is_max_denoise(sigmas))
    total = len(sigmas) - 1
    step_callback = None
    if callback is not None:
        def step_callback(info: dict) -> None:
            callback(int(info["i"]), info["denoised"], info["x"], total)
    samples = sampler.function(denoiser, x, sigmas, extra_args=extra_args, callback=step_callback,
                               disable=disable_pbar, **sampler.options)
    return ms.inverse_noise_scaling(sigmas[-1], samples)
