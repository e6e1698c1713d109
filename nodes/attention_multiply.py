"""Attention-multiply experiments: UNetSelfAttentionMultiply, UNetCrossAttentionMultiply and
CLIPAttentionMultiply scale the query, key, value and output projections of the UNet's self- or cross-attention,
or of the text encoder's self-attention, by constant factors (weight patches on clones; all 1.0 changes nothing).

Names, inputs, ranges and the category are ComfyUI's (`comfy_extras/nodes_attention_multiply.py`).
"""
from __future__ import annotations

from diffusion.adapters.attention_scaling import clip_attention_patches, unet_attention_patches
from diffusion.patcher import ModelHandle
from diffusion.text.text_encoders import CLIP
from nodes.spec import Float, Input, Node, Output

_CATEGORY = "_for_testing/attention_experiments"


def _factors() -> tuple:
    return tuple(Float(name, 1.0, min=0.0, max=10.0, step=0.01) for name in ("q", "k", "v", "out"))


def _scaled_unet(model: ModelHandle, attn: str, q: float, k: float, v: float, out: float) -> ModelHandle:
    clone = model.clone()
    clone.add_patches(unet_attention_patches(model.state_keys(), attn, q, k, v, out))
    return clone


class UNetSelfAttentionMultiply(Node):
    """Scales the UNet self-attention's q, k, v and output projections."""

    CATEGORY = _CATEGORY
    EXPERIMENTAL = True
    INPUTS = (Input("model", "MODEL"),) + _factors()
    OUTPUTS = (Output("MODEL"),)

    def execute(self, model: ModelHandle, q: float, k: float, v: float, out: float) -> tuple[ModelHandle]:
        return (_scaled_unet(model, "attn1", q, k, v, out),)


class UNetCrossAttentionMultiply(Node):
    """Scales the UNet cross-attention's q, k, v and output projections."""

    CATEGORY = _CATEGORY
    EXPERIMENTAL = True
    INPUTS = (Input("model", "MODEL"),) + _factors()
    OUTPUTS = (Output("MODEL"),)

    def execute(self, model: ModelHandle, q: float, k: float, v: float, out: float) -> tuple[ModelHandle]:
        return (_scaled_unet(model, "attn2", q, k, v, out),)


class CLIPAttentionMultiply(Node):
    """Scales the text encoder self-attention's q, k, v and output projections."""

    CATEGORY = _CATEGORY
    EXPERIMENTAL = True
    INPUTS = (Input("clip", "CLIP"),) + _factors()
    OUTPUTS = (Output("CLIP"),)

    def execute(self, clip: CLIP, q: float, k: float, v: float, out: float) -> tuple[CLIP]:
        twin = clip.clone()
        handle = twin.handle
        if not isinstance(handle, ModelHandle):
            raise ValueError("CLIPAttentionMultiply: this CLIP has no weights handle to patch")
        handle.add_patches(clip_attention_patches(handle.state_keys(), q, k, v, out))
        return (twin,)


NODES: list[type] = [UNetSelfAttentionMultiply, UNetCrossAttentionMultiply, CLIPAttentionMultiply]
