"""The sampling pipeline behind KSampler, KSamplerAdvanced, SamplerCustom and SamplerCustomAdvanced.

`sample(...)` is KSampler(Advanced): schedule -> sigmas (denoise, start/last step, force_full_denoise),
then `sample_custom` with a CFGGuider. `sample_custom(...)` is SamplerCustomAdvanced: raw VAE latent in,
process_in, conds prepared, the start point noise_scaling(sigma_0, noise, latent) (sqrt(1+sigma²) scaling
when starting from sigma_max), the sampler run on the guider wrapped for inpainting (`InpaintDenoiser`,
ComfyUI KSamplerX0Inpaint: outside the noise mask the latent is put back at the current noise level before
each evaluation and the prediction replaced by the original), process_out, raw VAE latent out on the CPU.

Progress: `callback(step, x0, x, total_steps)` after each step (x0 and x in sampler space; feed x0 to
`latent_formats.latent_to_rgb_preview` for previews). Interrupt: `interrupt_check()` is called before
every model evaluation and is expected to raise.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F

from diffusion.sampling.guidance import CFGGuider
from diffusion.sampling.noise import prepare_noise
from diffusion.sampling.samplers import RANDOM_INPAINT_NOISE_SAMPLERS, get_sampler
from diffusion.sampling.schedules import calculate_sigmas

ProgressCallback = Callable[[int, torch.Tensor, torch.Tensor, int], None] | None


@dataclass
class Sampler:
    """A SAMPLER socket value: the sampler function, its knobs, and the inpainting noise policy."""

    function: Callable[..., torch.Tensor]
    options: dict[str, Any] = field(default_factory=dict)
    random_inpaint_noise: bool = False


def sampler_object(name: str, **options: Any) -> Sampler:
    """KSamplerSelect: the named sampler ("ddim" re-noises the kept region with fresh noise, as ComfyUI)."""
    return Sampler(get_sampler(name), dict(options), random_inpaint_noise=name in RANDOM_INPAINT_NOISE_SAMPLERS)


def prepare_mask(mask: torch.Tensor, shape: torch.Size, device: torch.device) -> torch.Tensor:
    """A noise mask (H×W, B×H×W or B×1×H×W, pixel or latent size) as a B×C×h×w float latent mask
    (bilinear resize, tiled over channels and batch; ComfyUI reshape_mask)."""
    mask = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])).float()
    mask = F.interpolate(mask, size=tuple(shape[2:]), mode="bilinear")
    if mask.shape[1] < shape[1]:
        mask = mask.repeat((1, shape[1], 1, 1))[:, :shape[1]]
    if mask.shape[0] < shape[0]:
        mask = mask.repeat((-(-shape[0] // mask.shape[0]), 1, 1, 1))
    return mask[:shape[0]].to(device)


class InpaintDenoiser:
    """The denoiser the samplers see: the guider, with the noise-mask blend around it (ComfyUI
    KSamplerX0Inpaint) and the interrupt check before every evaluation."""

    def __init__(self, guider: CFGGuider, noise: torch.Tensor, latent_image: torch.Tensor,
                 interrupt_check: Callable[[], None] | None = None, sigmas: torch.Tensor | None = None):
        self.guider, self.noise, self.latent_image = guider, noise, latent_image
        self.interrupt_check = interrupt_check
        self.model_sampling = guider.model.model_sampling
        self.inner_model = guider.model  # ComfyUI's name, for denoise_mask_function hooks
        self.sigmas = sigmas

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, denoise_mask: torch.Tensor | None = None,
                 model_options: dict | None = None, seed: int | None = None) -> torch.Tensor:
        if self.interrupt_check is not None:
            self.interrupt_check()
        if denoise_mask is not None:
            mask_function = (model_options or {}).get("denoise_mask_function")
            if mask_function is not None:  # e.g. Differential Diffusion's per-step threshold
                denoise_mask = mask_function(sigma, denoise_mask, extra_options={"model": self, "sigmas": self.sigmas})
            keep = 1.0 - denoise_mask
            s = sigma.reshape([sigma.shape[0]] + [1] * (self.noise.ndim - 1))
            x = x * denoise_mask + self.model_sampling.noise_scaling(s, self.noise, self.latent_image) * keep
        out = self.guider(x, sigma, model_options=model_options, seed=seed)
        if denoise_mask is not None:
            out = out * denoise_mask + self.latent_image * keep
        return out


def _inpaint_noise(sampler: Sampler, noise: torch.Tensor, seed: int | None) -> torch.Tensor:
    if not sampler.random_inpaint_noise:
        return noise
    generator = torch.Generator(device="cpu").manual_seed((41 if seed is None else seed) + 1)
    return torch.randn(noise.shape, generator=generator, device="cpu").to(noise.dtype).to(noise.device)


def sample_custom(model: Any, noise: torch.Tensor, guider: CFGGuider, sampler: Sampler, sigmas: torch.Tensor,
                  latent_image: torch.Tensor, *, denoise_mask: torch.Tensor | None = None,
                  callback: ProgressCallback = None, seed: int | None = None, device: torch.device | str = "cpu",
                  interrupt_check: Callable[[], None] | None = None) -> torch.Tensor:
    """SamplerCustomAdvanced: run `sampler` over `sigmas` from noise + latent_image (raw VAE latents, B×4×h×w),
    guided by `guider` (CFGGuider, BasicGuider or DualCFGGuider built on `model`). Returns the raw latent."""
    if sigmas.shape[-1] == 0:
        return latent_image
    device = torch.device(device)
    noise = noise.to(device=device, dtype=torch.float32)
    latent_image = latent_image.to(device=device, dtype=torch.float32)
    sigmas = sigmas.to(device)
    if denoise_mask is not None:
        denoise_mask = prepare_mask(denoise_mask, noise.shape, device)
    if torch.count_nonzero(latent_image) > 0:  # an empty latent is not shifted (ComfyUI)
        latent_image = model.process_latent_in(latent_image)
    guider.prepare(noise, latent_image, denoise_mask, seed=seed)
    model_options = dict(guider.model_options)
    model_options["transformer_options"] = {**model_options.get("transformer_options", {}), "sample_sigmas": sigmas,
                                            "hook_keyframes": {}}  # per-run keyframe cursors (diffusion/adapters/hooks.py)
    extra_args = {"model_options": model_options, "seed": seed, "denoise_mask": denoise_mask}
    denoiser = InpaintDenoiser(guider, _inpaint_noise(sampler, noise, seed), latent_image, interrupt_check, sigmas)
    ms = model.model_sampling
    x = ms.noise_scaling(sigmas[0], noise, latent_image, ms.is_max_denoise(sigmas))
    total = len(sigmas) - 1
    step_callback = None
    if callback is not None:
        def step_callback(info: dict) -> None:
            callback(int(info["i"]), info["denoised"], info["x"], total)
    samples = sampler.function(denoiser, x, sigmas, extra_args=extra_args, callback=step_callback, **sampler.options)
    samples = ms.inverse_noise_scaling(sigmas[-1], samples)
    return model.process_latent_out(samples.to(torch.float32)).cpu()


def ksampler_sigmas(model: Any, scheduler: str, steps: int, sampler_name: str, denoise: float = 1.0,
                    start_step: int | None = None, last_step: int | None = None,
                    force_full_denoise: bool = False) -> torch.Tensor:
    """The sigmas KSampler(Advanced) runs: the schedule for `steps` at `denoise`, cut to
    [start_step, last_step] (with the last sigma set to 0 when force_full_denoise)."""
    sigmas = calculate_sigmas(model.model_sampling, scheduler, steps, denoise, sampler_name=sampler_name)
    return ksampler_sigmas_from(sigmas, start_step, last_step, force_full_denoise)


def sample(model: Any, *, noise: torch.Tensor | None, positive: list, negative: list, cfg: float, sampler_name: str,
           scheduler: str, steps: int, latent_image: torch.Tensor, denoise: float = 1.0,
           start_step: int | None = None, last_step: int | None = None, force_full_denoise: bool = False,
           add_noise: bool = True, noise_mask: torch.Tensor | None = None, seed: int,
           device: torch.device | str = "cpu", model_options: dict | None = None, callback: ProgressCallback = None,
           interrupt_check: Callable[[], None] | None = None, sigmas: torch.Tensor | None = None) -> torch.Tensor:
    """KSampler / KSamplerAdvanced on a DiffusionModel. `latent_image` and the result are raw VAE latents.

    KSampler: start_step=None, last_step=None, force_full_denoise=False (its common_ksampler default).
    KSamplerAdvanced: add_noise=(add_noise == "enable"), start_step=start_at_step, last_step=end_at_step,
    force_full_denoise=(return_with_leftover_noise != "enable"), denoise 1.0.
    `noise` defaults to `noise.prepare_noise(latent_image, seed)`; with add_noise False zeros are used.
    `sigmas`, when given, replaces the schedule (before the start/last step cut)."""
    if not add_noise:
        noise = torch.zeros(latent_image.size(), dtype=latent_image.dtype, device="cpu")
    elif noise is None:
        noise = prepare_noise(latent_image, seed)
    if sigmas is None:
        run_sigmas = ksampler_sigmas(model, scheduler, steps, sampler_name, denoise, start_step, last_step,
                                     force_full_denoise)
    else:
        run_sigmas = ksampler_sigmas_from(sigmas, start_step, last_step, force_full_denoise)
    if start_step is not None and run_sigmas.shape[-1] == 0:
        return latent_image.clone()
    guider = CFGGuider(model, model_options)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    return sample_custom(model, noise, guider, sampler_object(sampler_name), run_sigmas, latent_image,
                         denoise_mask=noise_mask, callback=callback, seed=seed, device=device,
                         interrupt_check=interrupt_check)


def ksampler_sigmas_from(sigmas: torch.Tensor, start_step: int | None, last_step: int | None,
                         force_full_denoise: bool) -> torch.Tensor:
    """Apply KSampler's start/last step cut to explicit sigmas."""
    if last_step is not None and last_step < len(sigmas) - 1:
        sigmas = sigmas[:last_step + 1].clone()
        if force_full_denoise:
            sigmas[-1] = 0
    if start_step is not None:
        sigmas = sigmas[start_step:] if start_step < len(sigmas) - 1 else sigmas[:0]
    return sigmas
