"""Self-attention guidance (Hong et al. 2023, "Improving Sample Quality of Diffusion Models Using Self-Attention
Guidance", arXiv:2210.00939), as ComfyUI's SelfAttentionGuidance applies it.

The middle block's first self-attention is replaced by one that also keeps its attention probabilities for the
unconditional pass. After CFG, the unconditional prediction is blurred where that map says the model attends most
(key tokens whose total received attention, head-averaged, exceeds 1), re-noised to the current level and denoised
again without the blur's detail; the guided result moves away from that degraded prediction by `scale`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from diffusion.networks.attention import attention
from diffusion.sampling.conditioning import calc_cond_batch

UNCOND = 1  # the index of the unconditional list in calc_cond_batch's `cond_or_uncond`


def attention_with_probabilities(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax attention (B×N×C inputs) returning the output and the (B·heads)×N×M probabilities."""
    b, _, dim = q.shape
    dim_head = dim // heads

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(b, -1, heads, dim_head).permute(0, 2, 1, 3).reshape(b * heads, -1, dim_head)

    qh, kh, vh = split(q), split(k), split(v)
    probabilities = (torch.einsum("bid,bjd->bij", qh.float(), kh.float()) * dim_head ** -0.5).softmax(dim=-1)
    out = torch.einsum("bij,bjd->bid", probabilities.to(vh.dtype), vh)
    return out.reshape(b, heads, -1, dim_head).permute(0, 2, 1, 3).reshape(b, -1, heads * dim_head), probabilities


def gaussian_blur_2d(img: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
    """A separable Gaussian blur (pixel-unit sigma) with reflected borders."""
    half = (kernel_size - 1) * 0.5
    x = torch.linspace(-half, half, steps=kernel_size)
    pdf = torch.exp(-0.5 * (x / sigma).pow(2))
    k1 = (pdf / pdf.sum()).to(device=img.device, dtype=img.dtype)
    kernel = torch.outer(k1, k1).expand(img.shape[-3], 1, kernel_size, kernel_size)
    pad = kernel_size // 2
    return F.conv2d(F.pad(img, [pad, pad, pad, pad], mode="reflect"), kernel, groups=img.shape[-3])


def attention_mask(x0: torch.Tensor, probabilities: torch.Tensor, threshold: float = 1.0) -> torch.Tensor:
    """B×1×h×w: 1 where the (upsampled) tokens' head-averaged received attention exceeds threshold."""
    _, hw1, _ = probabilities.shape
    b, _, lh, lw = x0.shape
    attn = probabilities.reshape(b, -1, hw1, probabilities.shape[-1])
    mask = attn.mean(1).sum(1) > threshold
    ratio = 2 ** (math.ceil(math.sqrt(lh * lw / hw1)) - 1).bit_length()
    mid = [math.ceil(lh / ratio), math.ceil(lw / ratio)]
    mask = mask.reshape(b, *mid).unsqueeze(1).to(x0.dtype)
    return F.interpolate(mask, (lh, lw))


def blur_where_attended(x0: torch.Tensor, probabilities: torch.Tensor, sigma: float,
                        threshold: float = 1.0) -> torch.Tensor:
    """x0 blurred (9×9 Gaussian) only where the attention mask is set."""
    mask = attention_mask(x0, probabilities, threshold)
    return gaussian_blur_2d(x0, 9, sigma) * mask + x0 * (1 - mask)


@dataclass(eq=False)
class SelfAttentionGuidancePatch:
    """`record` is the middle block's attn1 replacement; `__call__` the post-CFG function."""

    scale: float
    blur_sigma: float
    threshold: float = 1.0
    uncond_probabilities: torch.Tensor | None = field(default=None, repr=False)

    def record(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, options: dict[str, Any]) -> torch.Tensor:
        heads = options["n_heads"]
        which = list(options.get("cond_or_uncond", []))
        if UNCOND not in which:
            return attention(q, k, v, heads)
        per_chunk = q.shape[0] // len(which)
        out, probabilities = attention_with_probabilities(q, k, v, heads)
        slices = heads * per_chunk
        start = slices * which.index(UNCOND)
        self.uncond_probabilities = probabilities[start:start + slices]
        return out

    def __call__(self, args: dict[str, Any]) -> torch.Tensor:
        result, uncond_pred, x = args["denoised"], args["uncond_denoised"], args["input"]
        if min(result.shape[2:]) <= 4 or self.uncond_probabilities is None or args.get("uncond") is None:
            return result  # too small to pad for the blur, or no unconditional pass to learn from
        degraded = blur_where_attended(uncond_pred, self.uncond_probabilities, self.blur_sigma, self.threshold)
        model = args["model"]
        (sag,) = calc_cond_batch(model.apply_model, [args["uncond"]], degraded + x - uncond_pred, args["sigma"],
                                 args["model_options"])
        return result + (degraded - sag) * self.scale
