"""SD3 / SD3.5 nodes: EmptySD3LatentImage, ModelSamplingSD3 and ModelSamplingAuraFlow.

Names, inputs, ranges, categories and defaults are ComfyUI's (`comfy_extras/nodes_sd3.py`,
`comfy_extras/nodes_model_advanced.py`). The flow schedule itself lives in `diffusion.model_sampling_flow`.
"""
from __future__ import annotations

import torch

from diffusion.model_sampling_flow import AURAFLOW_SHIFT, SD3_SHIFT, FlowSampling
from diffusion.patcher import ModelHandle
from nodes.latent import DOWNSCALE, MAX_RESOLUTION, Latent, intermediate_device
from nodes.spec import Float, Input, Int, Node, Output

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


NODES: list[type] = [EmptySD3LatentImage, ModelSamplingSD3, ModelSamplingAuraFlow]
