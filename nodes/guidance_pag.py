"""PerturbedAttentionGuidance: guidance away from a prediction made with the middle block's self-attention
replaced by the identity (Ahn et al. 2024, "Self-Rectifying Diffusion Sampling with Perturbed-Attention
Guidance"), ComfyUI `comfy_extras/nodes_pag.py`: the same input, category and rule — after CFG,
denoised += scale·(cond − cond_perturbed), the perturbed prediction from one extra model call on the positive
conds with `patches_replace["attn1"][("middle", 0)]` returning the values unchanged.
"""
from __future__ import annotations

from typing import Any

import torch

from diffusion.sampling.conditioning import calc_cond_batch
from diffusion.patcher import ModelHandle
from nodes.spec import Float, Input, Node, Output

BLOCK = ("middle", 0)


def identity_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, options: dict[str, Any]) -> torch.Tensor:
    """Self-attention whose attention map is the identity: every token keeps its own value."""
    return v


def with_replaced_attention(model_options: dict[str, Any]) -> dict[str, Any]:
    """A copy of `model_options` whose transformer options replace the middle block's self-attention."""
    options = dict(model_options)
    transformer = dict(options.get("transformer_options", {}))
    replace = {name: dict(table) for name, table in transformer.get("patches_replace", {}).items()}
    replace.setdefault("attn1", {})[BLOCK] = identity_attention
    transformer["patches_replace"] = replace
    options["transformer_options"] = transformer
    return options


def pag_post_cfg(scale: float):
    """The post-CFG function of PerturbedAttentionGuidance at `scale`."""

    def post_cfg(args: dict[str, Any]) -> torch.Tensor:
        result = args["denoised"]
        if scale == 0:
            return result
        model, x, sigma = args["model"], args["input"], args["sigma"]
        options = with_replaced_attention(args["model_options"])
        (perturbed,) = calc_cond_batch(model.apply_model, [args["cond"]], x, sigma, options)
        return result + (args["cond_denoised"] - perturbed) * scale

    return post_cfg


class PerturbedAttentionGuidance(Node):
    """Adds Perturbed-Attention Guidance to the model's sampling."""

    CATEGORY = "model_patches/unet"
    INPUTS = (Input("model", "MODEL"), Float("scale", 3.0, min=0.0, max=100.0, step=0.01, round=0.01))
    OUTPUTS = (Output("MODEL"),)

    def execute(self, model: ModelHandle, scale: float = 3.0) -> tuple[ModelHandle]:
        patched = model.clone()
        patched.add_wrapper("sampler_post_cfg_function", pag_post_cfg(scale))
        return (patched,)


NODES: list[type] = [PerturbedAttentionGuidance]
