"""SD3 / SD3.5 nodes: EmptySD3LatentImage, ModelSamplingSD3, ModelSamplingAuraFlow and SkipLayerGuidanceSD3.

SkipLayerGuidanceSD3 (ComfyUI `comfy_extras/nodes_slg.py` as the spec): while σ lies between the σ of
`start_percent` and that of `end_percent`, one extra model call on the positive conds with the listed joint blocks
skipped, and after CFG denoised += scale·(cond − cond_skipped).

Names, inputs, ranges, categories and defaults are ComfyUI's (`comfy_extras/nodes_sd3.py`,
`comfy_extras/nodes_model_advanced.py`). The flow schedule itself lives in `diffusion.sampling.model_sampling_flow`.
"""
from __future__ import annotations

from typing import Any

import torch

from diffusion.files.assemble import model_sampling_of
from diffusion.sampling.conditioning import calc_cond_batch
from diffusion.sampling.model_sampling_flow import AURAFLOW_SHIFT, SD3_SHIFT, FlowSampling
from diffusion.patcher import ModelHandle
from nodes.latent_create import DOWNSCALE, MAX_RESOLUTION, Latent, intermediate_device
from nodes.spec import Float, Input, Int, Node, Output, String

SD3_LATENT_CHANNELS = 16


class EmptySD3LatentImage(Node):
    """A batch of empty 16-channel SD3 latents (zeros in the VAE's space)."""

    CATEGORY = "latent/sd3"
    INPUTS = (
        Int("width", 1024, min=16, max=MAX_RESOLUTION, step=16),
        Int("height", 1024, min=16, max=MAX_RESOLUTION, step=16),
        Int("batch_size", 1, min=1, max=4096),
    )
    OUTPUTS = (Output("LATENT"),)

    def execute(self, width: int, height: int, batch_size: int = 1) -> tuple[Latent]:
        samples = torch.zeros([batch_size, SD3_LATENT_CHANNELS, height // DOWNSCALE, width // DOWNSCALE],
                              device=intermediate_device())
        return ({"samples": samples},)


def _flow_patched(model: ModelHandle, shift: float, multiplier: float) -> ModelHandle:
    patched = model.clone()
    patched.add_object_patch("model_sampling", FlowSampling(shift=shift, multiplier=multiplier))
    return patched


class ModelSamplingSD3(Node):
    """Rectified-flow sampling with a time shift (higher shift: more steps spent at high noise)."""

    CATEGORY = "advanced/model"
    INPUTS = (Input("model", "MODEL"), Float("shift", SD3_SHIFT, min=0.0, max=100.0, step=0.01))
    OUTPUTS = (Output("MODEL"),)

    def execute(self, model: ModelHandle, shift: float = SD3_SHIFT) -> tuple[ModelHandle]:
        return (_flow_patched(model, shift, 1000.0),)


class ModelSamplingAuraFlow(Node):
    """Rectified-flow sampling with AuraFlow's timestep convention (t = σ) and its default shift 1.73."""

    CATEGORY = "advanced/model"
    INPUTS = (Input("model", "MODEL"), Float("shift", AURAFLOW_SHIFT, min=0.0, max=100.0, step=0.01))
    OUTPUTS = (Output("MODEL"),)

    def execute(self, model: ModelHandle, shift: float = AURAFLOW_SHIFT) -> tuple[ModelHandle]:
        return (_flow_patched(model, shift, 1.0),)


def parse_layers(text: str, depth: int | None = None) -> list[int]:
    """"7, 8, 9" -> [7, 8, 9]; ValueError naming the input for anything else."""
    try:
        layers = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise ValueError(f"layers must be comma-separated block numbers such as '7, 8, 9', got {text!r}") from None
    bad = [n for n in layers if n < 0 or (depth is not None and n >= depth)]
    if bad:
        raise ValueError(f"layers {bad} do not exist: this model has joint blocks 0 to {depth - 1}")
    return layers


def skip_layer_post_cfg(layers: list[int], scale: float, sigma_start: float, sigma_end: float):
    """The post-CFG function: guidance away from the prediction with `layers` skipped, inside the σ window."""

    def post_cfg(args: dict[str, Any]) -> torch.Tensor:
        result = args["denoised"]
        sigma = float(args["sigma"].reshape(-1)[0])
        if scale <= 0 or not layers or not sigma_end <= sigma <= sigma_start:
            return result
        options = dict(args["model_options"])
        transformer = dict(options.get("transformer_options", {}))
        transformer["skip_layers"] = list(transformer.get("skip_layers", [])) + layers
        options["transformer_options"] = transformer
        (skipped,) = calc_cond_batch(args["model"].apply_model, [args["cond"]], args["input"], args["sigma"], options)
        return result + (args["cond_denoised"] - skipped) * scale

    return post_cfg


class SkipLayerGuidanceSD3(Node):
    """Skip-layer guidance for SD3 models: pushes the result away from a prediction made without some joint blocks
    (sharper structure, fewer anatomy errors); the default layers are for SD3.5 Medium."""

    CATEGORY = "advanced/guidance"
    INPUTS = (
        Input("model", "MODEL"),
        String("layers", "7, 8, 9"),
        Float("scale", 3.0, min=0.0, max=10.0, step=0.1),
        Float("start_percent", 0.01, min=0.0, max=1.0, step=0.001),
        Float("end_percent", 0.15, min=0.0, max=1.0, step=0.001),
    )
    OUTPUTS = (Output("MODEL"),)

    def execute(self, model: ModelHandle, layers: str = "7, 8, 9", scale: float = 3.0, start_percent: float = 0.01,
                end_percent: float = 0.15) -> tuple[ModelHandle]:
        config = getattr(model.model.diffusion_model, "config", None)
        numbers = parse_layers(layers, getattr(config, "depth", None))
        ms = model_sampling_of(model)
        patched = model.clone()
        patched.add_wrapper("sampler_post_cfg_function", skip_layer_post_cfg(
            numbers, scale, ms.percent_to_sigma(start_percent), ms.percent_to_sigma(end_percent)))
        return (patched,)


NODES: list[type] = [EmptySD3LatentImage, ModelSamplingSD3, ModelSamplingAuraFlow, SkipLayerGuidanceSD3]
