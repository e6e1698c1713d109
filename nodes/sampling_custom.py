"""Custom-sampling nodes: SamplerCustom, SamplerCustomAdvanced and the parts they take — KSamplerSelect (SAMPLER),
the schedulers (SIGMAS: BasicScheduler, KarrasScheduler, ExponentialScheduler, PolyexponentialScheduler,
SDTurboScheduler, AlignYourStepsScheduler) and sigma tools (SplitSigmas, SplitSigmasDenoise, FlipSigmas), noise
sources (NOISE: RandomNoise, DisableNoise) and guiders (GUIDER: CFGGuider, BasicGuider, DualCFGGuider).

Names, inputs, ranges and categories are ComfyUI's (`comfy_extras/nodes_custom_sampler.py`,
`nodes_align_your_steps.py`). SIGMAS are 1-D float tensors ending in 0; a NOISE is an object with `seed` and
`generate_noise(latent)`; a GUIDER is a `diffusion.sampling.guidance` guider holding the MODEL handle it needs placed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from diffusion.files.assemble import model_sampling_of
from diffusion.networks.diffusion_model import DiffusionModel
from diffusion.sampling.guidance import BasicGuider as BasicGuidance
from diffusion.sampling.guidance import CFGGuider as CFGGuidance
from diffusion.sampling.guidance import DualCFGGuider as DualCFGGuidance
from diffusion.sampling.noise import prepare_noise
from diffusion.patcher import ModelHandle
from diffusion.sampling.sample import Sampler, sample_custom, sampler_object
from diffusion.sampling.samplers import SAMPLER_NAMES
from diffusion.sampling.schedules import (AYS_NOISE_LEVELS, SCHEDULER_NAMES, align_your_steps, get_sigmas_exponential,
                                 get_sigmas_karras, get_sigmas_polyexponential, scheduler_sigmas, sdturbo_schedule)
from nodes.context import current_or_none
from nodes.sampling import (SEED_MAX, Latent, cfg_input, cond_models, fix_empty_latent_channels, initial_noise,
                            progress_callback, run_with_model)
from nodes.spec import Boolean, Combo, Float, Input, Int, Node, Output

SD_SIGMA_MAX, SD_SIGMA_MIN = 14.614642, 0.0291675  # the SD discrete schedule's ends (ComfyUI's defaults)
_SCHEDULERS = "sampling/custom_sampling/schedulers"
_SIGMAS = "sampling/custom_sampling/sigmas"


@dataclass(frozen=True)
class RandomNoiseSource:
    """NOISE from a seed: `torch.randn` on the CPU per DESIGN.md's seeding contract."""

    seed: int

    def generate_noise(self, latent: Latent) -> torch.Tensor:
        return initial_noise(latent, self.seed)


@dataclass(frozen=True)
class EmptyNoiseSource:
    """NOISE that is all zeros (sampling a latent that already holds its noise)."""

    seed: int = 0

    def generate_noise(self, latent: Latent) -> torch.Tensor:
        return initial_noise(latent, self.seed, enabled=False)


def _sampling_run(handle: Any, model: DiffusionModel, guider: Any, sampler: Sampler, sigmas: torch.Tensor,
                  latent: Latent, noise: torch.Tensor, seed: int | None) -> tuple[Latent, Latent]:
    """Run a custom sampler with the model placed; returns (output, denoised_output) LATENTs."""
    ctx = current_or_none()
    latent_image = fix_empty_latent_channels(model, latent["samples"])
    latent = {**latent, "samples": latent_image}
    sink: dict[str, torch.Tensor] = {}

    def run(dm: DiffusionModel, device: torch.device) -> torch.Tensor:
        return sample_custom(dm, noise, guider, sampler, sigmas, latent_image, denoise_mask=latent.get("noise_mask"),
                             callback=progress_callback(ctx, dm, sink), seed=seed, device=device,
                             interrupt_check=ctx.check_interrupted if ctx is not None else None)

    conds = getattr(guider, "original_conds", None) or {}
    extra = cond_models(*[[[None, c] for c in cond_list] for cond_list in conds.values()])
    with torch.no_grad():
        samples = run_with_model(handle, tuple(latent_image.shape), run, extra=extra)
    out = {**latent, "samples": samples}
    denoised = out
    if "x0" in sink:
        denoised = {**latent, "samples": model.process_latent_out(sink["x0"].float().cpu())}
    return out, denoised


def _comfy_guider_run(guider: Any, sampler: Sampler, sigmas: torch.Tensor, latent: Latent, noise: torch.Tensor,
                      seed: int | None) -> tuple[Latent, Latent]:
    """SamplerCustomAdvanced with a guider written for ComfyUI: its own `sample(...)` runs (so a pack's overrides
    of sample/outer_sample/inner_sample and its OUTER_SAMPLE wrappers apply) and places the model itself."""
    ctx = current_or_none()
    latent_image = fix_empty_latent_channels(guider.model, latent["samples"])
    sink: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        samples = guider.sample(noise, latent_image, sampler, sigmas, denoise_mask=latent.get("noise_mask"),
                                callback=progress_callback(ctx, guider.model, sink), disable_pbar=False, seed=seed)
    out = {**latent, "samples": samples.to(torch.float32).cpu()}
    if "x0" not in sink:
        return out, out
    return out, {**latent, "samples": guider.model.process_latent_out(sink["x0"].float().cpu())}


_CUSTOM_OUTPUTS = (Output("LATENT", "output"), Output("LATENT", "denoised_output"))


class SamplerCustom(Node):
    """Samples with a chosen SAMPLER over explicit SIGMAS, with CFG on positive/negative conditioning."""

    CATEGORY = "sampling/custom_sampling"
    INPUTS = (
        Input("model", "MODEL"),
        Boolean("add_noise", True),
        Int("noise_seed", 0, min=0, max=SEED_MAX, control_after_generate=True),
        cfg_input(),
        Input("positive", "CONDITIONING"),
        Input("negative", "CONDITIONING"),
        Input("sampler", "SAMPLER"),
        Input("sigmas", "SIGMAS"),
        Input("latent_image", "LATENT"),
    )
    OUTPUTS = _CUSTOM_OUTPUTS

    def execute(self, model: ModelHandle, add_noise: bool, noise_seed: int, cfg: float, positive: list,
                negative: list, sampler: Sampler, sigmas: torch.Tensor, latent_image: Latent) -> tuple[Latent, Latent]:
        guider = CFGGuidance(model.model, model.options)
        guider.set_conds(positive, negative)
        guider.set_cfg(cfg)
        noise = initial_noise(latent_image, noise_seed, add_noise)
        return _sampling_run(model, model.model, guider, sampler, sigmas, latent_image, noise, noise_seed)


class SamplerCustomAdvanced(Node):
    """Samples with separate NOISE, GUIDER, SAMPLER and SIGMAS parts."""

    CATEGORY = "sampling/custom_sampling"
    INPUTS = (
        Input("noise", "NOISE"),
        Input("guider", "GUIDER"),
        Input("sampler", "SAMPLER"),
        Input("sigmas", "SIGMAS"),
        Input("latent_image", "LATENT"),
    )
    OUTPUTS = _CUSTOM_OUTPUTS

    def execute(self, noise: Any, guider: Any, sampler: Sampler, sigmas: torch.Tensor,
                latent_image: Latent) -> tuple[Latent, Latent]:
        initial = noise.generate_noise(latent_image)
        if callable(getattr(guider, "outer_sample", None)):  # a ComfyUI-style guider (comfy.samplers.CFGGuider)
            return _comfy_guider_run(guider, sampler, sigmas, latent_image, initial, getattr(noise, "seed", None))
        handle = getattr(guider, "handle", None) or guider.model
        return _sampling_run(handle, guider.model, guider, sampler, sigmas, latent_image, initial,
                             getattr(noise, "seed", None))


class KSamplerSelect(Node):
    """A SAMPLER by its KSampler name."""

    CATEGORY = "sampling/custom_sampling/samplers"
    INPUTS = (Combo("sampler_name", tuple(SAMPLER_NAMES)),)
    OUTPUTS = (Output("SAMPLER"),)

    def execute(self, sampler_name: str) -> tuple[Sampler]:
        return (sampler_object(sampler_name),)


class BasicScheduler(Node):
    """The model's sigmas for a named schedule; with denoise d < 1 the last `steps` of int(steps/d) steps."""

    CATEGORY = _SCHEDULERS
    INPUTS = (
        Input("model", "MODEL"),
        Combo("scheduler", tuple(SCHEDULER_NAMES)),
        Int("steps", 20, min=1, max=10000),
        Float("denoise", 1.0, min=0.0, max=1.0, step=0.01),
    )
    OUTPUTS = (Output("SIGMAS"),)

    def execute(self, model: ModelHandle, scheduler: str, steps: int, denoise: float = 1.0) -> tuple[torch.Tensor]:
        total = steps
        if denoise < 1.0:
            if denoise <= 0.0:
                return (torch.FloatTensor([]),)
            total = int(steps / denoise)
        sigmas = scheduler_sigmas(model_sampling_of(model), scheduler, total).cpu()
        return (sigmas[-(steps + 1):],)


def _sigma_range() -> tuple:
    return (Float("sigma_max", SD_SIGMA_MAX, min=0.0, max=5000.0, step=0.01, round=False),
            Float("sigma_min", SD_SIGMA_MIN, min=0.0, max=5000.0, step=0.01, round=False))


class KarrasScheduler(Node):
    """Karras et al. (2022) sigmas: evenly spaced in sigma^(1/rho)."""

    CATEGORY = _SCHEDULERS
    INPUTS = (Int("steps", 20, min=1, max=10000),) + _sigma_range() + (
        Float("rho", 7.0, min=0.0, max=100.0, step=0.01, round=False),)
    OUTPUTS = (Output("SIGMAS"),)

    def execute(self, steps: int, sigma_max: float, sigma_min: float, rho: float = 7.0) -> tuple[torch.Tensor]:
        return (get_sigmas_karras(n=steps, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho),)


class ExponentialScheduler(Node):
    """Sigmas evenly spaced in log sigma."""

    CATEGORY = _SCHEDULERS
    INPUTS = (Int("steps", 20, min=1, max=10000),) + _sigma_range()
    OUTPUTS = (Output("SIGMAS"),)

    def execute(self, steps: int, sigma_max: float, sigma_min: float) -> tuple[torch.Tensor]:
        return (get_sigmas_exponential(n=steps, sigma_min=sigma_min, sigma_max=sigma_max),)


class PolyexponentialScheduler(Node):
    """Sigmas evenly spaced in log sigma after a polynomial warp of power rho."""

    CATEGORY = _SCHEDULERS
    INPUTS = (Int("steps", 20, min=1, max=10000),) + _sigma_range() + (
        Float("rho", 1.0, min=0.0, max=100.0, step=0.01, round=False),)
    OUTPUTS = (Output("SIGMAS"),)

    def execute(self, steps: int, sigma_max: float, sigma_min: float, rho: float = 1.0) -> tuple[torch.Tensor]:
        return (get_sigmas_polyexponential(n=steps, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho),)


class SDTurboScheduler(Node):
    """SD-Turbo's timesteps 999, 899, ... (Sauer et al. 2023), from the model's schedule."""

    CATEGORY = _SCHEDULERS
    INPUTS = (Input("model", "MODEL"), Int("steps", 1, min=1, max=10),
              Float("denoise", 1.0, min=0.0, max=1.0, step=0.01))
    OUTPUTS = (Output("SIGMAS"),)

    def execute(self, model: ModelHandle, steps: int, denoise: float = 1.0) -> tuple[torch.Tensor]:
        return (sdturbo_schedule(model_sampling_of(model), steps, denoise),)


class AlignYourStepsScheduler(Node):
    """Align Your Steps (Sabour, Fidler & Kreis 2024): the published noise levels, log-interpolated."""

    CATEGORY = _SCHEDULERS
    INPUTS = (Combo("model_type", tuple(AYS_NOISE_LEVELS)), Int("steps", 10, min=1, max=10000),
              Float("denoise", 1.0, min=0.0, max=1.0, step=0.01))
    OUTPUTS = (Output("SIGMAS"),)

    def execute(self, model_type: str, steps: int, denoise: float = 1.0) -> tuple[torch.Tensor]:
        return (align_your_steps(model_type, steps, denoise),)


class SplitSigmas(Node):
    """Splits sigmas at a step: high = sigmas[:step+1], low = sigmas[step:] (they share that sigma)."""

    CATEGORY = _SIGMAS
    INPUTS = (Input("sigmas", "SIGMAS"), Int("step", 0, min=0, max=10000))
    OUTPUTS = (Output("SIGMAS", "high_sigmas"), Output("SIGMAS", "low_sigmas"))

    def execute(self, sigmas: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        return sigmas[:step + 1], sigmas[step:]


class SplitSigmasDenoise(Node):
    """Splits sigmas so the low part holds the last round(steps·denoise) steps."""

    CATEGORY = _SIGMAS
    INPUTS = (Input("sigmas", "SIGMAS"), Float("denoise", 1.0, min=0.0, max=1.0, step=0.01))
    OUTPUTS = (Output("SIGMAS", "high_sigmas"), Output("SIGMAS", "low_sigmas"))

    def execute(self, sigmas: torch.Tensor, denoise: float) -> tuple[torch.Tensor, torch.Tensor]:
        steps = max(sigmas.shape[-1] - 1, 0)
        total = round(steps * denoise)
        return sigmas[:-total], sigmas[-(total + 1):]


class FlipSigmas(Node):
    """Reverses sigmas (for unsampling); a leading 0 becomes 0.0001."""

    CATEGORY = _SIGMAS
    INPUTS = (Input("sigmas", "SIGMAS"),)
    OUTPUTS = (Output("SIGMAS"),)

    def execute(self, sigmas: torch.Tensor) -> tuple[torch.Tensor]:
        if len(sigmas) == 0:
            return (sigmas,)
        flipped = sigmas.flip(0)
        if flipped[0] == 0:
            flipped[0] = 0.0001
        return (flipped,)


class RandomNoise(Node):
    """NOISE drawn from a seed."""

    CATEGORY = "sampling/custom_sampling/noise"
    INPUTS = (Int("noise_seed", 0, min=0, max=SEED_MAX, control_after_generate=True),)
    OUTPUTS = (Output("NOISE"),)

    def execute(self, noise_seed: int) -> tuple[RandomNoiseSource]:
        return (RandomNoiseSource(noise_seed),)


class DisableNoise(Node):
    """NOISE that adds nothing."""

    CATEGORY = "sampling/custom_sampling/noise"
    INPUTS = ()
    OUTPUTS = (Output("NOISE"),)

    def execute(self) -> tuple[EmptyNoiseSource]:
        return (EmptyNoiseSource(),)


def _guider(cls: type, model: ModelHandle) -> Any:
    guider = cls(model.model, model.options)
    guider.handle = model  # what SamplerCustomAdvanced has the memory manager place
    return guider


class CFGGuider(Node):
    """Classifier-free guidance between positive and negative conditioning."""

    CATEGORY = "sampling/custom_sampling/guiders"
    INPUTS = (Input("model", "MODEL"), Input("positive", "CONDITIONING"), Input("negative", "CONDITIONING"),
              cfg_input())
    OUTPUTS = (Output("GUIDER"),)

    def execute(self, model: ModelHandle, positive: list, negative: list, cfg: float) -> tuple[Any]:
        guider = _guider(CFGGuidance, model)
        guider.set_conds(positive, negative)
        guider.set_cfg(cfg)
        return (guider,)


class BasicGuider(Node):
    """Conditioning without CFG (guidance-distilled models)."""

    CATEGORY = "sampling/custom_sampling/guiders"
    INPUTS = (Input("model", "MODEL"), Input("conditioning", "CONDITIONING"))
    OUTPUTS = (Output("GUIDER"),)

    def execute(self, model: ModelHandle, conditioning: list) -> tuple[Any]:
        guider = _guider(BasicGuidance, model)
        guider.set_conds(conditioning)
        return (guider,)


class DualCFGGuider(Node):
    """Two-level CFG: cond2 against negative (cfg_cond2_negative) plus cond1 against cond2 (cfg_conds); "nested"
    applies the first level inside the second."""

    CATEGORY = "sampling/custom_sampling/guiders"
    INPUTS = (
        Input("model", "MODEL"), Input("cond1", "CONDITIONING"), Input("cond2", "CONDITIONING"),
        Input("negative", "CONDITIONING"), cfg_input(name="cfg_conds"), cfg_input(name="cfg_cond2_negative"),
        Combo("style", ("regular", "nested")),
    )
    OUTPUTS = (Output("GUIDER"),)

    def execute(self, model: ModelHandle, cond1: list, cond2: list, negative: list, cfg_conds: float,
                cfg_cond2_negative: float, style: str = "regular") -> tuple[Any]:
        guider = _guider(DualCFGGuidance, model)
        guider.set_conds(cond1, cond2, negative)
        guider.set_cfg(cfg_conds, cfg_cond2_negative, nested=style == "nested")
        return (guider,)



NODES: list[type] = [SamplerCustom, SamplerCustomAdvanced, KSamplerSelect, BasicScheduler, KarrasScheduler,
                     ExponentialScheduler, PolyexponentialScheduler, SDTurboScheduler, AlignYourStepsScheduler,
                     SplitSigmas, SplitSigmasDenoise, FlipSigmas, RandomNoise, DisableNoise, CFGGuider, BasicGuider,
                     DualCFGGuider]
