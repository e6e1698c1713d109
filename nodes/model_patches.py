"""Model patch nodes: FreeU, FreeU_V2, PatchModelAddDownscale (Kohya deep shrink) and HypernetworkLoader.

Names, inputs, defaults, ranges, categories and display names are ComfyUI's (`comfy_extras/nodes_freelunch.py`,
`nodes_model_downscale.py`, `nodes_hypernetwork.py`). Each node returns a clone of the MODEL handle with a patch
added to its `transformer_options["patches"]` (`diffusion/adapters/model_patches.py`); the weights are untouched.
"""
from __future__ import annotations

from typing import Any

from diffusion.files.assemble import model_sampling_of
from diffusion.adapters.model_patches import (DeepShrinkInput, DeepShrinkOutput, FreeUPatch, HypernetworkPatch,
                                     read_hypernetwork)
from diffusion.patcher import ModelHandle
from nodes.loaders import node_context
from nodes.spec import Boolean, Combo, FileList, Float, Input, Int, Node, Output
from nodes.upscaling_math import common_upscale

DEEP_SHRINK_METHODS = ("bicubic", "nearest-exact", "bilinear", "area", "bislerp")


def with_unet_patch(model: ModelHandle, name: str, patch: Any) -> ModelHandle:
    """A clone of `model` with `patch` appended to `transformer_options["patches"][name]`."""
    clone = model.clone()
    patches = clone.options.setdefault("transformer_options", {}).setdefault("patches", {})
    patches[name] = list(patches.get(name, [])) + [patch]
    return clone


def model_channels(model: ModelHandle) -> int:
    """The UNet's base channel count (320 for SD1/SD2)."""
    return int(model.model.diffusion_model.config.model_channels)


def _freeu_inputs(b1: float, b2: float) -> tuple:
    scale = dict(min=0.0, max=10.0, step=0.01, advanced=True)
    return (Input("model", "MODEL"), Float("b1", b1, **scale), Float("b2", b2, **scale), Float("s1", 0.9, **scale),
            Float("s2", 0.2, **scale))


class FreeU(Node):
    """FreeU: scales the decoder's backbone features by b and damps the skip features' low frequencies by s."""

    CATEGORY = "model_patches/unet"
    INPUTS = _freeu_inputs(1.1, 1.2)
    OUTPUTS = (Output("MODEL"),)
    VERSION = 1

    def execute(self, model: ModelHandle, b1: float = 1.1, b2: float = 1.2, s1: float = 0.9,
                s2: float = 0.2) -> tuple[ModelHandle]:
        patch = FreeUPatch(model_channels(model), b1, b2, s1, s2, version=self.VERSION)
        return (with_unet_patch(model, "output_block_patch", patch),)


class FreeU_V2(FreeU):
    """FreeU v2: the backbone scale follows each sample's normalised channel-mean map."""

    INPUTS = _freeu_inputs(1.3, 1.4)
    VERSION = 2

    def execute(self, model: ModelHandle, b1: float = 1.3, b2: float = 1.4, s1: float = 0.9,
                s2: float = 0.2) -> tuple[ModelHandle]:
        return super().execute(model, b1, b2, s1, s2)


class PatchModelAddDownscale(Node):
    """Kohya deep shrink: while sampling is between start_percent and end_percent, the features after input block
    `block_number` are shrunk by `downscale_factor` and grown back in the decoder."""

    DISPLAY_NAME = "PatchModelAddDownscale (Kohya Deep Shrink)"
    CATEGORY = "model_patches/unet"
    INPUTS = (
        Input("model", "MODEL"),
        Int("block_number", 3, min=1, max=32, step=1),
        Float("downscale_factor", 2.0, min=0.1, max=9.0, step=0.001),
        Float("start_percent", 0.0, min=0.0, max=1.0, step=0.001),
        Float("end_percent", 0.35, min=0.0, max=1.0, step=0.001),
        Boolean("downscale_after_skip", True),
        Combo("downscale_method", DEEP_SHRINK_METHODS),
        Combo("upscale_method", DEEP_SHRINK_METHODS),
    )
    OUTPUTS = (Output("MODEL"),)

    def execute(self, model: ModelHandle, block_number: int = 3, downscale_factor: float = 2.0,
                start_percent: float = 0.0, end_percent: float = 0.35, downscale_after_skip: bool = True,
                downscale_method: str = "bicubic", upscale_method: str = "bicubic") -> tuple[ModelHandle]:
        sampling = model_sampling_of(model)
        down = DeepShrinkInput(block_number, downscale_factor, float(sampling.percent_to_sigma(start_percent)),
                               float(sampling.percent_to_sigma(end_percent)), downscale_method, common_upscale)
        # ComfyUI's two hook points: after the skip is stored (the decoder sees full-size skips) or before.
        name = "input_block_patch_after_skip" if downscale_after_skip else "input_block_patch"
        patched = with_unet_patch(model, name, down)
        return (with_unet_patch(patched, "output_block_patch", DeepShrinkOutput(upscale_method, common_upscale)),)


class HypernetworkLoader(Node):
    """Adds a hypernetwork (small networks on the attention keys and values) to the model."""

    CATEGORY = "loaders"
    INPUTS = (
        Input("model", "MODEL"),
        Combo("hypernetwork_name", FileList("hypernetworks")),
        Float("strength", 1.0, min=-10.0, max=10.0, step=0.01),
    )
    OUTPUTS = (Output("MODEL"),)

    def execute(self, model: ModelHandle, hypernetwork_name: str, strength: float = 1.0) -> tuple[ModelHandle]:
        ctx = node_context()
        if ctx.folders is None:
            raise RuntimeError("HypernetworkLoader needs the folders of a Loom instance; the executor was given none")
        patch = HypernetworkPatch(read_hypernetwork(ctx.folders.full_path("hypernetworks", hypernetwork_name)),
                                  strength)
        patched = with_unet_patch(model, "attn1_patch", patch)
        return (with_unet_patch(patched, "attn2_patch", patch),)


NODES: list[type] = [FreeU, FreeU_V2, PatchModelAddDownscale, HypernetworkLoader]
