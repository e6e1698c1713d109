"""LoRA nodes: LoraLoader and LoraLoaderModelOnly.

Names, inputs, ranges, tooltips and outputs are ComfyUI's (`nodes.py`). A LoRA file (any of the layouts
`diffusion/adapters/lora.py` reads) becomes weight patches on clones of the MODEL and CLIP handles; the memory manager
applies them when the model is loaded and restores the base weights when it is offloaded or another clone is
used, so the cached base weights never change. File keys that name nothing in either model are logged as ComfyUI
does ("lora key not loaded").
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Hashable

import torch

from diffusion.files.checkpoint import read_state_dict
from diffusion.adapters.lora import LoraResult, apply_lora
from diffusion.patcher import ModelHandle
from diffusion.text.text_encoders import CLIP
from nodes.loaders import node_context
from nodes.spec import Combo, FileList, Float, Input, Node, Output

log = logging.getLogger(__name__)


def lora_source(path: Path) -> Hashable:
    """What identifies a LoRA file's patches: its path and modification stamp."""
    stat = os.stat(path)
    return ("lora", os.fspath(path), stat.st_mtime_ns, stat.st_size)


class LoraFileCache:
    """The last LoRA file a node read, kept on the node object (which the executor keeps between prompts) so that
    changing only a strength does not read the file again — ComfyUI's `self.loaded_lora`."""

    def __init__(self) -> None:
        self.source: Hashable | None = None
        self.tensors: dict[str, torch.Tensor] = {}

    def read(self, path: Path) -> tuple[Hashable, dict[str, torch.Tensor]]:
        source = lora_source(path)
        if source != self.source:
            self.tensors, self.source = read_state_dict(path), source
        return source, self.tensors


def load_lora_file(lora_name: str, model: ModelHandle | None, clip: CLIP | None, strength_model: float,
                   strength_clip: float, cache: LoraFileCache | None = None) -> LoraResult:
    """Read models/loras/`lora_name` (through `cache` when given) and patch clones of `model` and of `clip`'s
    handle; logs unknown keys."""
    ctx = node_context()
    if ctx.folders is None:
        raise RuntimeError("LoRA loading needs the folders of a Loom instance; the executor was given none")
    path = ctx.folders.full_path("loras", lora_name)
    source, sd = (cache or LoraFileCache()).read(path)
    clip_handle = getattr(clip, "handle", None) if clip is not None else None
    result = apply_lora(sd, model, clip_handle, strength_model, strength_clip, source)
    for key in result.unknown:
        log.warning("lora key not loaded: %s", key)
    return result


def _clip_with(clip: CLIP, handle: ModelHandle | None) -> CLIP:
    twin = clip.clone()
    if handle is not None:
        twin.handle = handle
    return twin


_STRENGTH = dict(min=-100.0, max=100.0, step=0.01)


class LoraLoader(Node):
    __doc__ = ("LoRAs are used to modify diffusion and CLIP models, altering the way in which latents are denoised "
               "such as applying styles. Multiple LoRA nodes can be linked together.")

    DISPLAY_NAME = "Load LoRA"
    CATEGORY = "loaders"
    INPUTS = (
        Input("model", "MODEL", tooltip="The diffusion model the LoRA will be applied to."),
        Input("clip", "CLIP", tooltip="The CLIP model the LoRA will be applied to."),
        Combo("lora_name", FileList("loras"), tooltip="The name of the LoRA."),
        Float("strength_model", 1.0, **_STRENGTH,
              tooltip="How strongly to modify the diffusion model. This value can be negative."),
        Float("strength_clip", 1.0, **_STRENGTH, tooltip="How strongly to modify the CLIP model. This value can be "
                                                         "negative."),
    )
    OUTPUTS = (Output("MODEL", tooltip="The modified diffusion model."),
               Output("CLIP", tooltip="The modified CLIP model."))

    def execute(self, model: ModelHandle, clip: CLIP | None, lora_name: str, strength_model: float = 1.0,
                strength_clip: float = 1.0) -> tuple[ModelHandle, CLIP | None]:
        if strength_model == 0 and strength_clip == 0:
            return (model, clip)
        self.files = getattr(self, "files", None) or LoraFileCache()
        result = load_lora_file(lora_name, model, clip, strength_model, strength_clip, self.files)
        new_clip = _clip_with(clip, result.clip_handle) if clip is not None else None
        return (result.model or model, new_clip)


class LoraLoaderModelOnly(Node):
    """LoRAs are used to modify the diffusion model only (no CLIP), altering the way in which latents are denoised."""

    CATEGORY = "loaders"
    INPUTS = (
        Input("model", "MODEL"),
        Combo("lora_name", FileList("loras")),
        Float("strength_model", 1.0, **_STRENGTH),
    )
    OUTPUTS = (Output("MODEL"),)

    def execute(self, model: ModelHandle, lora_name: str, strength_model: float = 1.0) -> tuple[ModelHandle]:
        if strength_model == 0:
            return (model,)
        self.files = getattr(self, "files", None) or LoraFileCache()
        result = load_lora_file(lora_name, model, None, strength_model, 0.0, self.files)
        return (result.model or model,)


NODES: list[type] = [LoraLoader, LoraLoaderModelOnly]
