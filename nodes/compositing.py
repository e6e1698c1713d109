"""Alpha compositing nodes: PorterDuffImageComposite (the 18 Porter–Duff operators), SplitImageWithAlpha and
JoinImageWithAlpha.

Names, inputs, categories and semantics are ComfyUI's (`comfy_extras/nodes_compositing.py`). As everywhere in
ComfyUI, the alpha inputs and outputs are MASKs, i.e. 1 − alpha (1 = transparent). The operators follow Porter &
Duff, "Compositing Digital Images" (SIGGRAPH 1984), on premultiplied colours, with the darken/lighten/multiply/
overlay/screen/add extensions of the SVG compositing spec in the variants ComfyUI uses.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from nodes.spec import Combo, Input, Node, Output
from nodes.upscaling_math import common_upscale, repeat_to_batch_size

Tensor = torch.Tensor
# (colour, alpha) of the result from premultiplied source/destination colours and alphas.
Operator = Callable[[Tensor, Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]


def _union(sa: Tensor, da: Tensor) -> Tensor:
    return sa + da - sa * da


def _overlay(s: Tensor, sa: Tensor, d: Tensor, da: Tensor) -> tuple[Tensor, Tensor]:
    colour = torch.where(2 * d < da, 2 * s * d, sa * da - 2 * (da - s) * (sa - d))
    return colour, _union(sa, da)


OPERATORS: dict[str, Operator] = {
    "ADD": lambda s, sa, d, da: (torch.clamp(s + d, 0, 1), torch.clamp(sa + da, 0, 1)),
    "CLEAR": lambda s, sa, d, da: (torch.zeros_like(d), torch.zeros_like(da)),
    "DARKEN": lambda s, sa, d, da: ((1 - da) * s + (1 - sa) * d + torch.min(s, d), _union(sa, da)),
    "DST": lambda s, sa, d, da: (d, da),
    "DST_ATOP": lambda s, sa, d, da: (sa * d + (1 - da) * s, sa),
    "DST_IN": lambda s, sa, d, da: (d * sa, sa * da),
    "DST_OUT": lambda s, sa, d, da: ((1 - sa) * d, (1 - sa) * da),
    "DST_OVER": lambda s, sa, d, da: (d + (1 - da) * s, da + (1 - da) * sa),
    "LIGHTEN": lambda s, sa, d, da: ((1 - da) * s + (1 - sa) * d + torch.max(s, d), _union(sa, da)),
    "MULTIPLY": lambda s, sa, d, da: (s * d, sa * da),
    "OVERLAY": _overlay,
    "SCREEN": lambda s, sa, d, da: (s + d - s * d, _union(sa, da)),
    "SRC": lambda s, sa, d, da: (s, sa),
    "SRC_ATOP": lambda s, sa, d, da: (da * s + (1 - sa) * d, da),
    "SRC_IN": lambda s, sa, d, da: (s * da, sa * da),
    "SRC_OUT": lambda s, sa, d, da: ((1 - da) * s, (1 - da) * sa),
    "SRC_OVER": lambda s, sa, d, da: (s + (1 - sa) * d, sa + (1 - sa) * da),
    "XOR": lambda s, sa, d, da: ((1 - da) * s + (1 - sa) * d, (1 - da) * sa + (1 - sa) * da),
}
MODES = tuple(OPERATORS)


def porter_duff(source: Tensor, source_mask: Tensor, destination: Tensor, destination_mask: Tensor,
                mode: str) -> tuple[Tensor, Tensor]:
    """Composite H×W×C `source` over/with `destination` (masks H×W×1, 1 = transparent) by operator `mode`;
    returns the straight (un-premultiplied) colour clipped to 0..1 and the result's mask."""
    source_alpha, destination_alpha = 1 - source_mask, 1 - destination_mask
    colour, alpha = OPERATORS[mode](source * source_alpha, source_alpha, destination * destination_alpha,
                                    destination_alpha)
    colour = torch.where(alpha > 1e-5, colour / alpha, torch.zeros_like(colour))
    return torch.clamp(colour, 0, 1), 1 - alpha


def _fit(image: Tensor, height: int, width: int) -> Tensor:
    """H×W×C `image` resized bicubically to height×width, centre-cropped to that aspect first (ComfyUI's fit)."""
    return common_upscale(image.unsqueeze(0).movedim(-1, 1), width, height, "bicubic", "center").movedim(1, -1)[0]


class PorterDuffImageComposite(Node):
    """Composites the source image onto the destination with one of the Porter–Duff operators."""

    DISPLAY_NAME = "Porter-Duff Image Composite"
    CATEGORY = "mask/compositing"
    SEARCH_ALIASES = ("alpha composite", "blend modes", "layer blend", "transparency blend")
    INPUTS = (Input("source", "IMAGE"), Input("source_alpha", "MASK"), Input("destination", "IMAGE"),
              Input("destination_alpha", "MASK"), Combo("mode", MODES, "DST"))
    OUTPUTS = (Output("IMAGE"), Output("MASK"))

    def execute(self, source: Tensor, source_alpha: Tensor, destination: Tensor, destination_alpha: Tensor,
                mode: str) -> tuple[Tensor, Tensor]:
        if source.shape[-1] != destination.shape[-1]:
            raise ValueError(f"PorterDuffImageComposite: inputs 'source' and 'destination' must have the same number "
                             f"of channels, got {source.shape[-1]} and {destination.shape[-1]}")
        source_alpha, destination_alpha = source_alpha.reshape((-1, *source_alpha.shape[-2:])), \
            destination_alpha.reshape((-1, *destination_alpha.shape[-2:]))
        count = min(len(source), len(source_alpha), len(destination), len(destination_alpha))
        images, masks = [], []
        for i in range(count):
            dst, src = destination[i], source[i]
            dst_mask, src_mask = destination_alpha[i].unsqueeze(2), source_alpha[i].unsqueeze(2)
            height, width = dst.shape[0], dst.shape[1]
            if dst_mask.shape[:2] != dst.shape[:2]:
                dst_mask = _fit(dst_mask, height, width)
            if src.shape != dst.shape:
                src = _fit(src, height, width)
            if src_mask.shape != dst_mask.shape:
                src_mask = _fit(src_mask, dst_mask.shape[0], dst_mask.shape[1])
            image, mask = porter_duff(src, src_mask, dst, dst_mask, mode)
            images.append(image)
            masks.append(mask.squeeze(2))
        return (torch.stack(images), torch.stack(masks))


class SplitImageWithAlpha(Node):
    """The colour channels of an image, and its alpha channel as a mask (1 − alpha; 0 when there is none)."""

    DISPLAY_NAME = "Split Image with Alpha"
    CATEGORY = "mask/compositing"
    SEARCH_ALIASES = ("extract alpha", "separate transparency", "remove alpha")
    INPUTS = (Input("image", "IMAGE"),)
    OUTPUTS = (Output("IMAGE"), Output("MASK"))

    def execute(self, image: Tensor) -> tuple[Tensor, Tensor]:
        alpha = image[..., 3] if image.shape[-1] > 3 else torch.ones_like(image[..., 0])
        return (image[..., :3], 1.0 - alpha)


class JoinImageWithAlpha(Node):
    """An RGBA image from an image's colours and a mask (alpha = 1 − mask, resized bilinearly to the image)."""

    DISPLAY_NAME = "Join Image with Alpha"
    CATEGORY = "mask/compositing"
    SEARCH_ALIASES = ("add transparency", "apply alpha", "composite alpha", "RGBA")
    INPUTS = (Input("image", "IMAGE"), Input("alpha", "MASK"))
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, image: Tensor, alpha: Tensor) -> tuple[Tensor]:
        alpha = alpha.reshape((-1, *alpha.shape[-2:]))
        batch = max(len(image), len(alpha))
        image, alpha = repeat_to_batch_size(image, batch), repeat_to_batch_size(alpha, batch)
        resized = F.interpolate(alpha.unsqueeze(1), size=tuple(image.shape[1:3]), mode="bilinear").squeeze(1)
        return (torch.cat((image[..., :3], (1.0 - resized).unsqueeze(-1)), dim=-1),)


NODES: list[type] = [PorterDuffImageComposite, SplitImageWithAlpha, JoinImageWithAlpha]
