"""ModelMergeSDXL: two SDXL models merged with one ratio per UNet block (ComfyUI
`comfy_extras/nodes_model_merging_model_specific.py`: the same input names — `time_embed.`, `label_emb.`,
`input_blocks.0` … `input_blocks.8`, `middle_block.0` … `middle_block.2`, `output_blocks.0` … `output_blocks.8`,
`out.` —, defaults and semantics). A weight takes the ratio of the longest input name its LDM key starts with
(the first input's where none does); the merge is ratio·model1 + (1 − ratio)·model2, as weight patches on a clone
of model1 (`diffusion/files/merge.py`).
"""
from __future__ import annotations

from diffusion.files.merge import UNET_PREFIX, merge_into
from diffusion.patcher import ModelHandle
from nodes.model_merging import base_reader
from nodes.spec import Float, Input, Node, Output

BLOCKS = ("time_embed.", "label_emb.", *(f"input_blocks.{i}" for i in range(9)),
          *(f"middle_block.{i}" for i in range(3)), *(f"output_blocks.{i}" for i in range(9)), "out.")


def longest_prefix_ratio(key: str, ratios: dict[str, float]) -> float:
    """The ratio of the longest block name `key` (with or without `diffusion_model.`) starts with."""
    local = key[len(UNET_PREFIX):] if key.startswith(UNET_PREFIX) else key
    ratio, best = next(iter(ratios.values())), 0
    for name, value in ratios.items():
        if local.startswith(name) and len(name) > best:
            ratio, best = value, len(name)
    return ratio


class ModelMergeSDXL(Node):
    """Merges two SDXL models block by block."""

    CATEGORY = "advanced/model_merging/model_specific"
    INPUTS = (Input("model1", "MODEL"), Input("model2", "MODEL"),
              *(Float(name, 1.0, min=0.0, max=1.0, step=0.01) for name in BLOCKS))
    OUTPUTS = (Output("MODEL"),)

    def execute(self, model1: ModelHandle, model2: ModelHandle, **ratios: float) -> tuple[ModelHandle]:
        unknown = sorted(set(ratios) - set(BLOCKS))
        if unknown:
            raise ValueError(f"ModelMergeSDXL: unknown inputs {unknown}")
        ordered = {name: float(ratios.get(name, 1.0)) for name in BLOCKS}

        def weights(key: str) -> tuple[float, float]:
            ratio = longest_prefix_ratio(key, ordered)
            return (1.0 - ratio, ratio)

        return (merge_into(model1, model2, weights, UNET_PREFIX, base_reader()),)


NODES: list[type] = [ModelMergeSDXL]
