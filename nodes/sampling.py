"""Sampling nodes: KSampler and KSamplerAdvanced, and the model patches ModelSamplingDiscrete and RescaleCFG.

Names, inputs, ranges, categories and display names are ComfyUI's (`nodes.py`, `comfy_extras/
nodes_model_advanced.py`). The maths lives in `diffusion/sampling/sample.py`; this module adds what a node needs around it:
the initial noise from the seed (DESIGN.md's seeding contract, `batch_index` honoured), the model placed by the
memory manager for the run (`run_with_model`), per-step progress with a latent→RGB preview every few steps
(`progress_callback`; TAESD when a decoder file is in models/vae_approx), and the interrupt checked before every
model evaluation. MODEL values are `ModelHandle`s of a `DiffusionModel`; patches go on clones (`handle.clone()`).
The helpers are shared with `nodes/sampling_custom.py`.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, TypeVar

import torch
from PIL import Image

from diffusion.networks.diffusion_model import DiffusionModel
from diffusion.sampling.guidance import rescale_cfg_patch
from diffusion.files.latent_formats import latent_to_rgb_preview
from diffusion.sampling.model_sampling import ModelSampling
from diffusion.sampling.noise import prepare_noise
from diffusion.patcher import ModelHandle
from diffusion.sampling.sample import sample
from diffusion.sampling.samplers import SAMPLER_NAMES
from diffusion.sampling.schedules import SCHEDULER_NAMES
from nodes.context import NodeContext, current_or_none
from nodes.previews import preview_decoder
from nodes.spec import Boolean, Combo, Float, Input, Int, Node, Output

log = logging.getLogger(__name__)
T = TypeVar("T")

SEED_MAX = 0xFFFFFFFFFFFFFFFF
PREVIEWS_PER_RUN = 10  # at most about this many preview images per sampling run (plus the last step's)
Latent = dict[str, Any]


def cond_models(*conditionings: list | None) -> list[ModelHandle]:
    """The extra models conditioning needs on the device while sampling (ControlNets and the like).

    The contract for such objects, stored under a cond dict's "control" key: they expose the `ModelHandle` to place
    as `.handle` and chain to the next one through `.previous_controlnet` (ComfyUI's attribute name). A GLIGEN
    model is the handle in a "gligen" entry `(kind, handle, boxes)`."""
    found: list[ModelHandle] = []
    for conditioning in conditionings:
        for entry in conditioning or []:
            options = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
            gligen = options.get("gligen")
            if gligen is not None and isinstance(gligen[1], ModelHandle) and all(gligen[1] is not h for h in found):
                found.append(gligen[1])
            control = options.get("control")
            while control is not None:
                handle = getattr(control, "handle", None)
                if isinstance(handle, ModelHandle) and all(handle is not h for h in found):
                    found.append(handle)
                control = getattr(control, "previous_controlnet", None)
    return found


def run_with_model(handle: Any, latent_shape: tuple[int, ...], fn: Callable[[DiffusionModel, torch.device], T],
                   cond_batch: int = 2, extra: list[ModelHandle] | None = None) -> T:
    """Call `fn(diffusion_model, device)` with the model (and the `extra` models conditioning needs) placed and
    patched by the memory manager."""
    ctx = current_or_none()
    module = handle.model if isinstance(handle, ModelHandle) else getattr(handle, "model", handle)
    if ctx is None or ctx.models is None:
        return fn(module, torch.device("cpu"))
    net = getattr(module, "diffusion_model", None)
    # in the compute dtype (weights may be stored in fp8 or GGUF blocks: diffusion/networks/weight_cast.py)
    working = module.working_memory(latent_shape, cond_batch, dtype=getattr(net, "compute_dtype", None))
    with ctx.models.use([handle, *(extra or [])], working_memory=working) as device:
        return fn(module, torch.device(device) if device is not None else torch.device("cpu"))


def progress_callback(ctx: NodeContext | None, model: DiffusionModel,
                      sink: dict[str, torch.Tensor] | None = None) -> Callable[[int, torch.Tensor, torch.Tensor, int],
                                                                               None]:
    """The sampler's step callback: progress (value = steps done) and, every few steps and at the last one, a
    preview of the step's denoised prediction. `sink["x0"]` keeps the last prediction (SamplerCustom's
    denoised_output). Reporting progress also raises `Interrupted` when the user interrupted."""
    method = preview_method(ctx)
    decoder = preview_decoder(ctx, model) if ctx is not None and method in ("auto", "taesd") else None

    def callback(step: int, x0: torch.Tensor, x: torch.Tensor, total: int) -> None:
        if sink is not None:
            sink["x0"] = x0
        if ctx is None:
            return
        interval = max(1, total // PREVIEWS_PER_RUN)
        preview = None
        if ctx.on_progress is not None and method != "none" and (step % interval == 0 or step + 1 == total):
            preview = _preview_image(x0, model, decoder)
        ctx.progress(step + 1, total, preview)

    return callback


def preview_method(ctx: NodeContext | None) -> str:
    """ComfyUI's preview methods: "none", "latent2rgb", "taesd" (when a decoder file exists, else latent2rgb) or
    "auto" (the same as taesd). Read from the prompt's `extra_data["preview_method"]`, else the executor's
    `ctx.extra["preview_method"]` (the --preview-method flag), else "auto"."""
    if ctx is None:
        return "none"
    extra_data = ctx.extra.get("extra_data") or {}
    method = extra_data.get("preview_method") or ctx.extra.get("preview_method") or "auto"
    return method if method in ("none", "latent2rgb", "taesd", "auto") else "auto"


def _preview_image(x0: torch.Tensor, model: DiffusionModel, decoder: torch.nn.Module | None) -> Image.Image | None:
    try:
        if decoder is not None:
            x0 = x0.to(next(decoder.parameters()).device)
        return Image.fromarray(latent_to_rgb_preview(x0, model.latent_format, decoder))
    except (RuntimeError, ValueError) as err:  # a preview must never stop sampling
        log.warning("preview failed: %s", err)
        return None


def fix_empty_latent_channels(model: DiffusionModel, latent: torch.Tensor) -> torch.Tensor:
    """An all-zero latent with the wrong channel count becomes zeros of the model's latent channels (ComfyUI); any
    other latent of the wrong channel count is refused with the reason (e.g. an SD1.5 latent fed to SD3)."""
    channels = model.latent_format.channels
    if latent.shape[1] != channels and torch.count_nonzero(latent) == 0:
        return torch.zeros((latent.shape[0], channels) + tuple(latent.shape[2:]), dtype=latent.dtype,
                           device=latent.device)
    if latent.ndim == 4 and latent.shape[1] != channels:
        raise ValueError(
            f"latent_image has {latent.shape[1]} channels but this {getattr(model, 'family', '')} model works on "
            f"{channels}-channel latents: make the latent for this model (e.g. EmptySD3LatentImage for SD3) or "
            f"encode the image with this model's VAE")
    return latent


def initial_noise(latent: Latent, seed: int, enabled: bool = True) -> torch.Tensor:
    """The unit-variance starting noise for a LATENT: drawn from `seed` (per `batch_index`), or zeros."""
    samples = latent["samples"]
    if not enabled:
        return torch.zeros(samples.size(), dtype=samples.dtype, layout=samples.layout, device="cpu")
    return prepare_noise(samples, seed, latent.get("batch_index"))


def common_ksampler(model: ModelHandle, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str,
                    positive: list, negative: list, latent: Latent, denoise: float = 1.0,
                    disable_noise: bool = False, start_step: int | None = None, last_step: int | None = None,
                    force_full_denoise: bool = False) -> tuple[Latent]:
    """What KSampler and KSamplerAdvanced share (ComfyUI's `common_ksampler` semantics)."""
    ctx = current_or_none()
    latent_image = fix_empty_latent_channels(model.model, latent["samples"])
    latent = {**latent, "samples": latent_image}
    noise = initial_noise(latent, seed, not disable_noise)

    def run(dm: DiffusionModel, device: torch.device) -> torch.Tensor:
        return sample(dm, noise=noise, positive=positive, negative=negative, cfg=cfg, sampler_name=sampler_name,
                      scheduler=scheduler, steps=steps, latent_image=latent_image, denoise=denoise,
                      start_step=start_step, last_step=last_step, force_full_denoise=force_full_denoise,
                      add_noise=not disable_noise, noise_mask=latent.get("noise_mask"), seed=seed, device=device,
                      model_options=model.options, callback=progress_callback(ctx, dm),
                      interrupt_check=ctx.check_interrupted if ctx is not None else None)

    with torch.no_grad():
        samples = run_with_model(model, tuple(latent_image.shape), run, extra=cond_models(positive, negative))
    return ({**latent, "samples": samples},)


_CFG_TOOLTIP = ("The Classifier-Free Guidance scale balances creativity and adherence to the prompt. Higher values "
                "result in images more closely matching the prompt however too high values will negatively impact "
                "quality.")


def cfg_input(tooltip: str | None = None, name: str = "cfg") -> Any:
    """The CFG widget of ComfyUI's samplers and guiders."""
    return Float(name, 8.0, min=0.0, max=100.0, step=0.1, round=0.01, **({"tooltip": tooltip} if tooltip else {}))


class KSampler(Node):
    """Uses the provided model, positive and negative conditioning to denoise the latent image."""

    DISPLAY_NAME = "KSampler"
    CATEGORY = "sampling"
    INPUTS = (
        Input("model", "MODEL", tooltip="The model used for denoising the input latent."),
        Int("seed", 0, min=0, max=SEED_MAX, control_after_generate=True,
            tooltip="The random seed used for creating the noise."),
        Int("steps", 20, min=1, max=10000, tooltip="The number of steps used in the denoising process."),
        cfg_input(_CFG_TOOLTIP),
        Combo("sampler_name", tuple(SAMPLER_NAMES), tooltip="The algorithm used when sampling, this can affect the "
              "quality, speed, and style of the generated output."),
        Combo("scheduler", tuple(SCHEDULER_NAMES),
              tooltip="The scheduler controls how noise is gradually removed to form the image."),
        Input("positive", "CONDITIONING",
              tooltip="The conditioning describing the attributes you want to include in the image."),
        Input("negative", "CONDITIONING",
              tooltip="The conditioning describing the attributes you want to exclude from the image."),
        Input("latent_image", "LATENT", tooltip="The latent image to denoise."),
        Float("denoise", 1.0, min=0.0, max=1.0, step=0.01, tooltip="The amount of denoising applied, lower values "
              "will maintain the structure of the initial image allowing for image to image sampling."),
    )
    OUTPUTS = (Output("LATENT", tooltip="The denoised latent."),)

    def execute(self, model: ModelHandle, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str,
                positive: list, negative: list, latent_image: Latent, denoise: float = 1.0) -> tuple[Latent]:
        return common_ksampler(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image,
                               denoise=denoise)


class KSamplerAdvanced(Node):
    """KSampler over a part of the schedule: steps start_at_step..end_at_step, optionally without adding noise
    and optionally returning the latent with its leftover noise (for chaining samplers)."""

    DISPLAY_NAME = "KSampler (Advanced)"
    CATEGORY = "sampling"
    INPUTS = (
        Input("model", "MODEL"),
        Combo("add_noise", ("enable", "disable")),
        Int("noise_seed", 0, min=0, max=SEED_MAX, control_after_generate=True),
        Int("steps", 20, min=1, max=10000),
        cfg_input(),
        Combo("sampler_name", tuple(SAMPLER_NAMES)),
        Combo("scheduler", tuple(SCHEDULER_NAMES)),
        Input("positive", "CONDITIONING"),
        Input("negative", "CONDITIONING"),
        Input("latent_image", "LATENT"),
        Int("start_at_step", 0, min=0, max=10000),
        Int("end_at_step", 10000, min=0, max=10000),
        Combo("return_with_leftover_noise", ("disable", "enable")),
    )
    OUTPUTS = (Output("LATENT"),)

    def execute(self, model: ModelHandle, add_noise: str, noise_seed: int, steps: int, cfg: float,
                sampler_name: str, scheduler: str, positive: list, negative: list, latent_image: Latent,
                start_at_step: int, end_at_step: int, return_with_leftover_noise: str) -> tuple[Latent]:
        return common_ksampler(model, noise_seed, steps, cfg, sampler_name, scheduler, positive, negative,
                               latent_image, denoise=1.0, disable_noise=add_noise == "disable",
                               start_step=start_at_step, last_step=end_at_step,
                               force_full_denoise=return_with_leftover_noise != "enable")


class ModelSamplingDiscrete(Node):
    """Overrides the model's parameterisation (eps, v-prediction, LCM, x0) and optionally rescales its schedule
    to zero terminal SNR (Lin et al. 2023)."""

    CATEGORY = "advanced/model"
    INPUTS = (
        Input("model", "MODEL"),
        Combo("sampling", ("eps", "v_prediction", "lcm", "x0")),
        Boolean("zsnr", False),
    )
    OUTPUTS = (Output("MODEL"),)

    def execute(self, model: ModelHandle, sampling: str, zsnr: bool = False) -> tuple[ModelHandle]:
        patched = model.clone()
        patched.add_object_patch("model_sampling", ModelSampling(prediction=sampling, zsnr=zsnr))
        return (patched,)


class RescaleCFG(Node):
    """Guidance rescale (Lin et al. 2023, §3.4): rescales the CFG result toward the conditional prediction's
    standard deviation to avoid over-exposure at high CFG (0.7 recommended with cfg 7.5)."""

    CATEGORY = "advanced/model"
    INPUTS = (Input("model", "MODEL"), Float("multiplier", 0.7, min=0.0, max=1.0, step=0.01))
    OUTPUTS = (Output("MODEL"),)

    def execute(self, model: ModelHandle, multiplier: float = 0.7) -> tuple[ModelHandle]:
        patched = model.clone()
        patched.set_option("sampler_cfg_function", rescale_cfg_patch(multiplier))
        return (patched,)


NODES: list[type] = [KSampler, KSamplerAdvanced, ModelSamplingDiscrete, RescaleCFG]
