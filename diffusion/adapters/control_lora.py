"""Stability's Control-LoRA files (control-lora-{canny,depth,recolor,sketch}-rank128/256 for SDXL): a ControlNet
stored as low-rank deltas on the base UNet's encoder.

Owns `ControlLora`, the control object, `load_control_lora`, and `load_control_file`, the entry the ControlNet
loaders use (Control-LoRA files here, every other kind through `diffusion.adapters.controlnet.load_controlnet_state_dict`).
A file is marked by a `lora_controlnet` key; it holds full tensors for what the UNet does not have (the hint encoder, the zero convs, `middle_block_out`) and for
the small tensors it retrained (biases, norms), and `<module>.up` / `<module>.down` pairs for the Linear and
Conv weights of the encoder. As in ComfyUI's `ControlLora`, the network is assembled when sampling starts
(`pre_run`) from the model being sampled: a ControlNet of that UNet's config whose weights are the UNet's own
(`time_embed`, `label_emb`, `input_blocks`, `middle_block`, with any LoRA the model carries), each LoRA'd weight
plus up·down (flattened to matrices, reshaped to the weight), then the file's full tensors. It is built on the
device and in the dtype of the UNet's weights, which the memory manager has placed for the run; the file's
tensors are the handle the manager places.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from diffusion.files.checkpoint import CheckpointError
from diffusion.adapters.controlnet import ControlBase, ControlNet, ControlNetNet, load_controlnet_state_dict
from diffusion.patcher import ModelHandle
from diffusion.networks.unet import load_assigned

MARKER = "lora_controlnet"


class ControlLoraWeights(nn.Module):
    """The file's tensors as buffers (so the memory manager can place them), by their file key."""

    def __init__(self, sd: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.keys = sorted(k for k in sd if k != MARKER)
        for i, key in enumerate(self.keys):
            self.register_buffer(f"t{i}", sd[key])

    def tensors(self) -> dict[str, torch.Tensor]:
        return {key: getattr(self, f"t{i}") for i, key in enumerate(self.keys)}


def control_lora_state_dict(weights: dict[str, torch.Tensor], base: dict[str, torch.Tensor],
                            expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ControlNet weights (`expected`'s keys) from the base UNet's and the file's: full file tensors win,
    LoRA'd weights are base + up·down (in float32, cast back to the base weight's dtype)."""
    out: dict[str, torch.Tensor] = {}
    missing = []
    for key in expected:
        module = key[: -len(".weight")] if key.endswith(".weight") else None
        if key in weights:
            out[key] = weights[key]
        elif key in base and module is not None and f"{module}.up" in weights:
            w = base[key]
            up, down = weights[f"{module}.up"], weights[f"{module}.down"]
            if up.shape[0] * down.flatten(1).shape[1] != w.numel():
                raise CheckpointError(
                    f"Control-LoRA: {module}.up/.down make a {up.shape[0]}×{down.flatten(1).shape[1]} delta but "
                    f"the model's {key} is {tuple(w.shape)}: the file is for another model family")
            delta = torch.mm(up.flatten(1).float().to(w.device), down.flatten(1).float().to(w.device))
            out[key] = (w.float() + delta.reshape(w.shape)).to(w.dtype)
        elif key in base:
            out[key] = base[key]
        else:
            missing.append(key)
    if missing:
        raise CheckpointError(f"Control-LoRA: the file and the model together lack {len(missing)} ControlNet "
                              f"weights (e.g. {missing[:5]}): is it meant for this model's family?")
    return out


class ControlLora(ControlNet):
    """A Control-LoRA control: a ControlNet assembled from the sampled model's UNet at each sampling run."""

    def __init__(self, handle: ModelHandle) -> None:
        super().__init__(handle)
        self._net: ControlNetNet | None = None

    def pre_run(self, model: Any, percent_to_sigma: Callable[[float], float]) -> None:
        super().pre_run(model, percent_to_sigma)
        unet = model.diffusion_model
        weights = self.handle.model.tensors()
        hint_channels = int(weights["input_hint_block.0.weight"].shape[1])
        with torch.device("meta"):
            net = ControlNetNet(unet.config, hint_channels)
        first = next(unet.parameters())
        try:
            sd = control_lora_state_dict(weights, unet.state_dict(), net.state_dict())
            load_assigned(net, sd, first.dtype, first.device, "Control-LoRA")
        except CheckpointError as err:
            raise CheckpointError(f"{self.handle.name}: {err}") from err
        self._net = net.eval().requires_grad_(False)

    def network(self) -> ControlNetNet:
        if self._net is None:
            raise RuntimeError("Control-LoRA network used before sampling started (pre_run)")
        return self._net


def load_control_lora(sd: dict[str, torch.Tensor], dtype: torch.dtype, name: str = "") -> ControlLora:
    """The control object of a Control-LoRA file's weights (read in `dtype`)."""
    if "input_hint_block.0.weight" not in sd:
        raise CheckpointError(f"{name or 'this Control-LoRA'} has no hint encoder (input_hint_block.0.weight)")
    weights = ControlLoraWeights({k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()})
    return ControlLora(ModelHandle(weights, name=name or "control_lora", kind="other"))


def load_control_file(sd: dict[str, torch.Tensor], dtype: torch.dtype, name: str = "",
                      base_model: ModelHandle | None = None) -> ControlBase:
    """The control object of any ControlNet-folder file: Control-LoRA (a `lora_controlnet` key), else a ControlNet
    (original or diffusers layout, union, difference) or T2I-Adapter."""
    if MARKER in sd:
        return load_control_lora(sd, dtype, name)
    return load_controlnet_state_dict(sd, dtype, name, base_model=base_model)
