"""Conditioning operations: combine, average, concat, areas, masks, zero-out and timestep ranges.

Names, inputs, ranges, categories and display names are ComfyUI's (`nodes.py`). CONDITIONING is a
list of `[tensor B×T×C, dict]`; every node returns new entries with copied dicts, never
modifying its input (cached values are shared). The samplers read the keys set here: `area`
(`(h, w, y, x)` in latent pixels, or `("percentage", h, w, y, x)`), `strength`, `mask`,
`mask_strength`, `set_area_to_bounds`, `start_percent`, `end_percent`.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

import torch

from nodes.spec import Combo, Float, Input, Int, Node, Output

log = logging.getLogger(__name__)

MAX_RESOLUTION = 16384
Conditioning = list[list[Any]]


def set_values(conditioning: Conditioning, values: Mapping[str, Any]) -> Conditioning:
    """A copy of `conditioning` with `values` set in every entry's dict (ComfyUI's
    `node_helpers.conditioning_set_values`)."""
    out = []
    for tensor, options in conditioning:
        entry = dict(options)
        entry.update(values)
        out.append([tensor, entry])
    return out


class ConditioningCombine(Node):
    """Both conditionings side by side: the sampler denoises with each and mixes the results."""

    DISPLAY_NAME = "Conditioning (Combine)"
    CATEGORY = "conditioning"
    INPUTS = (Input("conditioning_1", "CONDITIONING"), Input("conditioning_2", "CONDITIONING"))
    OUTPUTS = (Output("CONDITIONING"),)

    def execute(self, conditioning_1: Conditioning, conditioning_2: Conditioning) -> tuple[Conditioning]:
        return (list(conditioning_1) + list(conditioning_2),)


class ConditioningAverage(Node):
    """Weighted average of each `conditioning_to` entry with the first `conditioning_from` entry
    (tokens cut or zero-padded to the `to` length); pooled outputs are averaged too."""

    DISPLAY_NAME = "Conditioning (Average)"
    CATEGORY = "conditioning"
    INPUTS = (
        Input("conditioning_to", "CONDITIONING"),
        Input("conditioning_from", "CONDITIONING"),
        Float("conditioning_to_strength", 1.0, min=0.0, max=1.0, step=0.01),
    )
    OUTPUTS = (Output("CONDITIONING"),)

    def execute(self, conditioning_to: Conditioning, conditioning_from: Conditioning,
                conditioning_to_strength: float) -> tuple[Conditioning]:
        if len(conditioning_from) > 1:
            log.warning("ConditioningAverage: conditioning_from has %d entries; only the first is used",
                        len(conditioning_from))
        cond_from = conditioning_from[0][0]
        pooled_from = conditioning_from[0][1].get("pooled_output")
        weight = conditioning_to_strength
        out = []
        for tensor_to, options in conditioning_to:
            pooled_to = options.get("pooled_output", pooled_from)
            t0 = cond_from[:, :tensor_to.shape[1]]
            if t0.shape[1] < tensor_to.shape[1]:
                pad = torch.zeros((1, tensor_to.shape[1] - t0.shape[1], tensor_to.shape[2]),
                                  dtype=t0.dtype, device=t0.device)
                t0 = torch.cat([t0, pad.expand(t0.shape[0], -1, -1)], dim=1)
            mixed = tensor_to * weight + t0 * (1.0 - weight)
            entry = dict(options)
            if pooled_from is not None and pooled_to is not None:
                entry["pooled_output"] = pooled_to * weight + pooled_from * (1.0 - weight)
            elif pooled_from is not None:
                entry["pooled_output"] = pooled_from
            out.append([mixed, entry])
        return (out,)


class ConditioningConcat(Node):
    """Appends the first `conditioning_from` tokens after each `conditioning_to` entry's tokens."""

    DISPLAY_NAME = "Conditioning (Concat)"
    CATEGORY = "conditioning"
    INPUTS = (Input("conditioning_to", "CONDITIONING"), Input("conditioning_from", "CONDITIONING"))
    OUTPUTS = (Output("CONDITIONING"),)

    def execute(self, conditioning_to: Conditioning, conditioning_from: Conditioning) -> tuple[Conditioning]:
        if len(conditioning_from) > 1:
            log.warning("ConditioningConcat: conditioning_from has %d entries; only the first is used",
                        len(conditioning_from))
        cond_from = conditioning_from[0][0]
        out = [[torch.cat((tensor, cond_from), 1), dict(options)] for tensor, options in conditioning_to]
        return (out,)


class ConditioningSetArea(Node):
    """Restricts the conditioning to a rectangle given in pixels (stored in latent units, /8)."""

    DISPLAY_NAME = "Conditioning (Set Area)"
    CATEGORY = "conditioning"
    INPUTS = (
        Input("conditioning", "CONDITIONING"),
        Int("width", 64, min=64, max=MAX_RESOLUTION, step=8),
        Int("height", 64, min=64, max=MAX_RESOLUTION, step=8),
        Int("x", 0, min=0, max=MAX_RESOLUTION, step=8),
        Int("y", 0, min=0, max=MAX_RESOLUTION, step=8),
        Float("strength", 1.0, min=0.0, max=10.0, step=0.01),
    )
    OUTPUTS = (Output("CONDITIONING"),)

    def execute(self, conditioning: Conditioning, width: int, height: int, x: int, y: int,
                strength: float) -> tuple[Conditioning]:
        area = (height // 8, width // 8, y // 8, x // 8)
        return (set_values(conditioning, {"area": area, "strength": strength, "set_area_to_bounds": False}),)


class ConditioningSetAreaPercentage(Node):
    """Restricts the conditioning to a rectangle given as fractions of the image size."""

    DISPLAY_NAME = "Conditioning (Set Area with Percentage)"
    CATEGORY = "conditioning"
    INPUTS = (
        Input("conditioning", "CONDITIONING"),
        Float("width", 1.0, min=0, max=1.0, step=0.01),
        Float("height", 1.0, min=0, max=1.0, step=0.01),
        Float("x", 0, min=0, max=1.0, step=0.01),
        Float("y", 0, min=0, max=1.0, step=0.01),
        Float("strength", 1.0, min=0.0, max=10.0, step=0.01),
    )
    OUTPUTS = (Output("CONDITIONING"),)

    def execute(self, conditioning: Conditioning, width: float, height: float, x: float, y: float,
                strength: float) -> tuple[Conditioning]:
        area = ("percentage", height, width, y, x)
        return (set_values(conditioning, {"area": area, "strength": strength, "set_area_to_bounds": False}),)


class ConditioningSetAreaStrength(Node):
    """Sets the weight of the conditioning's area."""

    CATEGORY = "conditioning"
    INPUTS = (Input("conditioning", "CONDITIONING"), Float("strength", 1.0, min=0.0, max=10.0, step=0.01))
    OUTPUTS = (Output("CONDITIONING"),)

    def execute(self, conditioning: Conditioning, strength: float) -> tuple[Conditioning]:
        return (set_values(conditioning, {"strength": strength}),)


class ConditioningSetMask(Node):
    """Restricts the conditioning to a mask; "mask bounds" also crops the area to the mask's box."""

    DISPLAY_NAME = "Conditioning (Set Mask)"
    CATEGORY = "conditioning"
    INPUTS = (
        Input("conditioning", "CONDITIONING"),
        Input("mask", "MASK"),
        Float("strength", 1.0, min=0.0, max=10.0, step=0.01),
        Combo("set_cond_area", ("default", "mask bounds")),
    )
    OUTPUTS = (Output("CONDITIONING"),)

    def execute(self, conditioning: Conditioning, mask: torch.Tensor, strength: float,
                set_cond_area: str) -> tuple[Conditioning]:
        if mask.ndim < 3:
            mask = mask.unsqueeze(0)
        values = {"mask": mask, "set_area_to_bounds": set_cond_area != "default", "mask_strength": strength}
        return (set_values(conditioning, values),)


class ConditioningZeroOut(Node):
    """Zeros the token embeddings and the pooled output (keeping every other key)."""

    CATEGORY = "advanced/conditioning"
    INPUTS = (Input("conditioning", "CONDITIONING"),)
    OUTPUTS = (Output("CONDITIONING"),)

    def execute(self, conditioning: Conditioning) -> tuple[Conditioning]:
        out = []
        for tensor, options in conditioning:
            entry = dict(options)
            for key in ("pooled_output", "conditioning_lyrics"):
                if entry.get(key) is not None:
                    entry[key] = torch.zeros_like(entry[key])
            out.append([torch.zeros_like(tensor), entry])
        return (out,)


class ConditioningSetTimestepRange(Node):
    """Applies the conditioning only between two fractions of the sampling schedule."""

    CATEGORY = "advanced/conditioning"
    INPUTS = (
        Input("conditioning", "CONDITIONING"),
        Float("start", 0.0, min=0.0, max=1.0, step=0.001),
        Float("end", 1.0, min=0.0, max=1.0, step=0.001),
    )
    OUTPUTS = (Output("CONDITIONING"),)

    def execute(self, conditioning: Conditioning, start: float, end: float) -> tuple[Conditioning]:
        return (set_values(conditioning, {"start_percent": start, "end_percent": end}),)


NODES: list[type] = [ConditioningCombine, ConditioningAverage, ConditioningConcat, ConditioningSetArea,
                     ConditioningSetAreaPercentage, ConditioningSetAreaStrength, ConditioningSetMask,
                     ConditioningZeroOut, ConditioningSetTimestepRange]
