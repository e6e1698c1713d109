"""ControlNet nodes: ControlNetLoader, DiffControlNetLoader, ControlNetApply, ControlNetApplyAdvanced and
SetUnionControlNetType.

Class names, inputs, defaults, ranges, outputs and categories are ComfyUI's (`nodes.py`). Loaders read a file from
models/controlnet (or models/t2i_adapter) in the manager's UNet precision; the network is placed for sampling by the
memory manager (the sampler collects every control's `handle`, see `nodes/sampling.cond_models`). The apply nodes
put a fresh control object (hint, strength, start/end percent) into each conditioning entry, chained to the control
the entry already had.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from diffusion.files.checkpoint import read_state_dict
from diffusion.adapters.control_lora import load_control_file
from diffusion.adapters.controlnet import ControlBase
from diffusion.adapters.controlnet_mmdit import load_sd3_controlnet
from diffusion.adapters.controlnet_sd3_diffusers import is_diffusers_sd3_controlnet, load_diffusers_sd3_controlnet
from diffusion.adapters.controlnet_union import UNION_CONTROLNET_TYPES
from diffusion.patcher import ModelHandle
from nodes.loaders import cached_one, dtype_for, node_context
from nodes.spec import Combo, FileList, Float, Input, Node, Output

CONTROL_NET = "CONTROL_NET"


def load_control(name: str, model: ModelHandle | None = None) -> ControlBase:
    """The control object of `name` in models/controlnet (with `model` for difference ControlNets)."""
    ctx = node_context()
    if ctx.folders is None:
        raise RuntimeError("ControlNet loaders need the folders of a Loom instance")
    path: Path = ctx.folders.full_path("controlnet", name)
    dtype = dtype_for(ctx, "unet")

    def load() -> ControlBase:
        sd = read_state_dict(path)
        if is_diffusers_sd3_controlnet(sd):  # InstantX-style SD3 ControlNets
            return load_diffusers_sd3_controlnet(sd, dtype, name)
        sd3 = load_sd3_controlnet(sd, dtype, name)  # SD3.5 ControlNets in Stability's format
        return sd3 if sd3 is not None else load_control_file(sd, dtype, name, base_model=model)

    if model is not None:
        return load()  # the weights depend on the model: not shared through the file cache
    # The loaded control is never configured itself (the apply nodes copy it), so it can be shared.
    return cached_one(ctx, path, load, f"controlnet:{dtype}", "controlnet")


class ControlNetLoader(Node):
    """Loads a ControlNet, Control-LoRA or T2I-Adapter model (SD1.x/SD2.x/SDXL, original or diffusers layout)."""

    DISPLAY_NAME = "Load ControlNet Model"
    CATEGORY = "loaders"
    INPUTS = (Combo("control_net_name", FileList("controlnet")),)
    OUTPUTS = (Output(CONTROL_NET),)

    def execute(self, control_net_name: str) -> tuple[ControlBase]:
        return (load_control(control_net_name),)


class DiffControlNetLoader(Node):
    """Loads a difference ControlNet: its weights are added to the model's UNet weights."""

    DISPLAY_NAME = "Load ControlNet Model (diff)"
    CATEGORY = "loaders"
    INPUTS = (Input("model", "MODEL"), Combo("control_net_name", FileList("controlnet")))
    OUTPUTS = (Output(CONTROL_NET),)

    def execute(self, model: ModelHandle, control_net_name: str) -> tuple[ControlBase]:
        return (load_control(control_net_name, model),)


def hint_of(image: torch.Tensor) -> torch.Tensor:
    """An IMAGE (B×H×W×C) as the B×C×H×W hint the controls take."""
    return image.movedim(-1, 1)


def apply_control(conditioning: list, control_net: ControlBase, hint: torch.Tensor, strength: float,
                  percent_range: tuple[float, float], vae: Any, shared: dict[int, ControlBase],
                  to_uncond: bool | None) -> list:
    """Conditioning with `control_net` applied to every entry; entries whose previous control is the same share
    one control object (so a batched cond/uncond call evaluates it once)."""
    out = []
    for tensor, options in conditioning:
        previous = options.get("control")
        key = id(previous)
        if key not in shared:
            shared[key] = control_net.copy().set_cond_hint(hint, strength, percent_range, vae=vae)
            shared[key].set_previous_controlnet(previous)
        entry = dict(options)
        entry["control"] = shared[key]
        if to_uncond is not None:
            entry["control_apply_to_uncond"] = to_uncond
        out.append([tensor, entry])
    return out


class ControlNetApply(Node):
    """Applies a ControlNet to the conditioning (and, as ComfyUI's deprecated node does, to the negative too)."""

    DISPLAY_NAME = "Apply ControlNet (OLD)"
    CATEGORY = "conditioning/controlnet"
    DEPRECATED = True
    INPUTS = (
        Input("conditioning", "CONDITIONING"),
        Input("control_net", CONTROL_NET),
        Input("image", "IMAGE"),
        Float("strength", 1.0, min=0.0, max=10.0, step=0.01),
    )
    OUTPUTS = (Output("CONDITIONING"),)

    def execute(self, conditioning: list, control_net: ControlBase, image: torch.Tensor,
                strength: float = 1.0) -> tuple[list]:
        if strength == 0:
            return (conditioning,)
        return (apply_control(conditioning, control_net, hint_of(image), strength, (0.0, 1.0), None, {}, True),)


class ControlNetApplyAdvanced(Node):
    """Applies a ControlNet to positive and negative conditioning between start_percent and end_percent."""

    DISPLAY_NAME = "Apply ControlNet"
    CATEGORY = "conditioning/controlnet"
    INPUTS = (
        Input("positive", "CONDITIONING"),
        Input("negative", "CONDITIONING"),
        Input("control_net", CONTROL_NET),
        Input("image", "IMAGE"),
        Float("strength", 1.0, min=0.0, max=10.0, step=0.01),
        Float("start_percent", 0.0, min=0.0, max=1.0, step=0.001),
        Float("end_percent", 1.0, min=0.0, max=1.0, step=0.001),
        Input("vae", "VAE", optional=True),
    )
    OUTPUTS = (Output("CONDITIONING", "positive"), Output("CONDITIONING", "negative"))

    def execute(self, positive: list, negative: list, control_net: ControlBase, image: torch.Tensor,
                strength: float = 1.0, start_percent: float = 0.0, end_percent: float = 1.0,
                vae: Any = None) -> tuple[list, list]:
        if strength == 0:
            return positive, negative
        hint, shared = hint_of(image), {}
        span = (start_percent, end_percent)
        return (apply_control(positive, control_net, hint, strength, span, vae, shared, False),
                apply_control(negative, control_net, hint, strength, span, vae, shared, False))


class SetUnionControlNetType(Node):
    """Tells a union ControlNet (controlnet-union-sdxl) which kind of hint it is given; "auto" lets it guess."""

    CATEGORY = "conditioning/controlnet"
    INPUTS = (Input("control_net", CONTROL_NET), Combo("type", ("auto",) + tuple(UNION_CONTROLNET_TYPES)))
    OUTPUTS = (Output(CONTROL_NET),)

    def execute(self, control_net: ControlBase, type: str) -> tuple[ControlBase]:  # noqa: A002 (ComfyUI's name)
        control = control_net.copy()
        number = UNION_CONTROLNET_TYPES.get(type, -1)
        control.set_extra_arg("control_type", [number] if number >= 0 else [])
        return (control,)


class ControlNetApplySD3(ControlNetApplyAdvanced):
    """ControlNetApplyAdvanced with the VAE required and before the image (ComfyUI's node for SD3 ControlNets,
    kept for older workflows)."""

    DISPLAY_NAME = "Apply Controlnet with VAE"
    DEPRECATED = True
    INPUTS = (
        Input("positive", "CONDITIONING"),
        Input("negative", "CONDITIONING"),
        Input("control_net", CONTROL_NET),
        Input("vae", "VAE"),
        Input("image", "IMAGE"),
        Float("strength", 1.0, min=0.0, max=10.0, step=0.01),
        Float("start_percent", 0.0, min=0.0, max=1.0, step=0.001),
        Float("end_percent", 1.0, min=0.0, max=1.0, step=0.001),
    )


NODES: list[type] = [ControlNetLoader, DiffControlNetLoader, ControlNetApply, ControlNetApplyAdvanced,
                     SetUnionControlNetType, ControlNetApplySD3]
