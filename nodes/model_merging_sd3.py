"""ModelMergeSD3_2B and ModelMergeSD35_Large: two SD3 models merged with one ratio per MMDiT part (ComfyUI
`comfy_extras/nodes_model_merging_model_specific.py`: the same input names — `pos_embed.`, `x_embedder.`,
`context_embedder.`, `y_embedder.`, `t_embedder.`, `joint_blocks.0.` … (24 for SD3 Medium, 38 for SD3.5 Large),
`final_layer.` —, defaults and semantics: ratio·model1 + (1 − ratio)·model2 by the longest matching name).
"""
from __future__ import annotations

from diffusion.files.merge import UNET_PREFIX, merge_into
from diffusion.patcher import ModelHandle
from nodes.model_merging import base_reader
from nodes.model_merging_sdxl import longest_prefix_ratio
from nodes.spec import Float, Input, Node, Output

EMBEDDERS = ("pos_embed.", "x_embedder.", "context_embedder.", "y_embedder.", "t_embedder.")


def mmdit_blocks(depth: int) -> tuple[str, ...]:
    return (*EMBEDDERS, *(f"joint_blocks.{i}." for i in range(depth)), "final_layer.")


def _merge(node: str, blocks: tuple[str, ...], model1: ModelHandle, model2: ModelHandle,
           ratios: dict[str, float]) -> ModelHandle:
    unknown = sorted(set(ratios) - set(blocks))
    if unknown:
        raise ValueError(f"{node}: unknown inputs {unknown}")
    ordered = {name: float(ratios.get(name, 1.0)) for name in blocks}

    def weights(key: str) -> tuple[float, float]:
        ratio = longest_prefix_ratio(key, ordered)
        return (1.0 - ratio, ratio)

    return merge_into(model1, model2, weights, UNET_PREFIX, base_reader())


class ModelMergeSD3_2B(Node):  # noqa: N801 (ComfyUI's name)
    """Merges two SD3 Medium (2B, 24 joint blocks) models part by part."""

    CATEGORY = "advanced/model_merging/model_specific"
    BLOCKS = mmdit_blocks(24)
    INPUTS = (Input("model1", "MODEL"), Input("model2", "MODEL"),
              *(Float(name, 1.0, min=0.0, max=1.0, step=0.01) for name in BLOCKS))
    OUTPUTS = (Output("MODEL"),)

    def execute(self, model1: ModelHandle, model2: ModelHandle, **ratios: float) -> tuple[ModelHandle]:
        return (_merge("ModelMergeSD3_2B", self.BLOCKS, model1, model2, ratios),)


class ModelMergeSD35_Large(Node):  # noqa: N801 (ComfyUI's name)
    """Merges two SD3.5 Large (38 joint blocks) models part by part."""

    CATEGORY = "advanced/model_merging/model_specific"
    BLOCKS = mmdit_blocks(38)
    INPUTS = (Input("model1", "MODEL"), Input("model2", "MODEL"),
              *(Float(name, 1.0, min=0.0, max=1.0, step=0.01) for name in BLOCKS))
    OUTPUTS = (Output("MODEL"),)

    def execute(self, model1: ModelHandle, model2: ModelHandle, **ratios: float) -> tuple[ModelHandle]:
        return (_merge("ModelMergeSD35_Large", self.BLOCKS, model1, model2, ratios),)


NODES: list[type] = [ModelMergeSD3_2B, ModelMergeSD35_Large]
