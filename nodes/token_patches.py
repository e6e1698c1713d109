"""Self-attention token patches: HyperTile (self-attention within tiles) and TomePatchModel (token merging).

Each returns a clone of the MODEL with an `attn1_patch` and the matching `attn1_output_patch` from
`diffusion/token_patches.py`. Names, inputs, defaults, ranges and categories are ComfyUI's
(`comfy_extras/nodes_hypertile.py`, `nodes_tomesd.py`).
"""
from __future__ import annotations

from diffusion.patcher import ModelHandle
from diffusion.token_patches import HyperTilePatch, RestoreTokens, TomePatch, hypertile_widths
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


NODES: list[type] = [HyperTile, TomePatchModel]
