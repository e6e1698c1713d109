"""Self-attention patches: HyperTile (self-attention within tiles), TomePatchModel (token merging) and
SelfAttentionGuidance (guidance from the middle block's self-attention map).

HyperTile and ToMe return a clone of the MODEL with an `attn1_patch` and the matching `attn1_output_patch` from
`diffusion/adapters/token_patches.py`; SAG replaces the middle block's first self-attention and adds a post-CFG function
(`diffusion/sampling/sag.py`). Names, inputs, defaults, ranges, categories and display names are ComfyUI's
(`comfy_extras/nodes_hypertile.py`, `nodes_tomesd.py`, `nodes_sag.py`).
"""
from __future__ import annotations

from diffusion.patcher import ModelHandle
from diffusion.sampling.sag import SelfAttentionGuidancePatch
from diffusion.adapters.token_patches import HyperTilePatch, RestoreTokens, TomePatch, hypertile_widths
from nodes.model_patches import model_channels, with_unet_patch
from nodes.spec import Boolean, Float, Input, Int, Node, Output


def _with_token_patch(model: ModelHandle, patch: object) -> ModelHandle:
    return with_unet_patch(with_unet_patch(model, "attn1_patch", patch), "attn1_output_patch", RestoreTokens(patch))


class HyperTile(Node):
    """Runs the UNet's self-attention within tiles of about tile_size pixels (faster at large sizes); max_depth
    chooses how many resolution levels are tiled, scale_depth grows the tiles with depth."""

    CATEGORY = "_for_testing"
    INPUTS = (Input("model", "MODEL"), Int("tile_size", 256, min=1, max=2048), Int("swap_size", 2, min=1, max=128),
              Int("max_depth", 0, min=0, max=10), Boolean("scale_depth", False))
    OUTPUTS = (Output("MODEL"),)

    def execute(self, model: ModelHandle, tile_size: int, swap_size: int, max_depth: int,
                scale_depth: bool) -> tuple[ModelHandle]:
        channels = model_channels(model)
        patch = HyperTilePatch(channels, hypertile_widths(channels, max_depth), max(32, tile_size) // 8, swap_size,
                               scale_depth)
        return (_with_token_patch(model, patch),)


class TomePatchModel(Node):
    """Token merging: before self-attention at full resolution, `ratio` of the tokens are merged into similar ones
    and restored afterwards (faster, slightly different images)."""

    CATEGORY = "_for_testing"
    INPUTS = (Input("model", "MODEL"), Float("ratio", 0.3, min=0.0, max=1.0, step=0.01))
    OUTPUTS = (Output("MODEL"),)

    def execute(self, model: ModelHandle, ratio: float) -> tuple[ModelHandle]:
        return (_with_token_patch(model, TomePatch(ratio)),)




class SelfAttentionGuidance(Node):
    """Self-attention guidance: steers away from a prediction blurred where the model's self-attention is
    strongest, sharpening detail (costs one more UNet pass per step)."""

    DISPLAY_NAME = "Self-Attention Guidance"
    CATEGORY = "_for_testing"
    INPUTS = (Input("model", "MODEL"), Float("scale", 0.5, min=-2.0, max=5.0, step=0.01),
              Float("blur_sigma", 2.0, min=0.0, max=10.0, step=0.1))
    OUTPUTS = (Output("MODEL"),)

    def execute(self, model: ModelHandle, scale: float, blur_sigma: float) -> tuple[ModelHandle]:
        patch = SelfAttentionGuidancePatch(scale, blur_sigma)
        clone = model.clone()
        clone.add_wrapper("sampler_post_cfg_function", patch)
        clone.set_option("disable_cfg1_optimization", True)
        replace = clone.options.setdefault("transformer_options", {}).setdefault("patches_replace", {})
        replace["attn1"] = {**replace.get("attn1", {}), ("middle", 0, 0): patch.record}
        return (clone,)


NODES: list[type] = [HyperTile, TomePatchModel, SelfAttentionGuidance]
