"""Model merging and saving nodes: ModelMergeSimple, ModelMergeBlocks, ModelMergeAdd, ModelMergeSubtract,
CLIPMergeSimple, CLIPMergeAdd, CLIPMergeSubtract, ModelMergeSD1/SD2 (`nodes_model_merging_model_specific.py`),
CheckpointSave and VAESave.

Names, inputs, defaults, ranges and categories are ComfyUI's (`comfy_extras/nodes_model_merging.py`). Merges are
weight patches on a clone of the first model (`diffusion/files/merge.py`), applied when the model is loaded. The save
nodes write the patched weights (LoRA and merges baked in) as `.safetensors` files in the output folder, in the
single-file layout the loaders read, with the workflow as metadata (`prompt`, and each `extra_pnginfo` entry as
JSON) as ComfyUI writes it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from safetensors.torch import save_file
from torch import Tensor, nn

from diffusion.files.merge import CLIP_SKIP_SUFFIXES, UNET_PREFIX, block_ratio, checkpoint_layout, merge_into
from diffusion.patcher import ModelHandle, apply_patches
from diffusion.text.text_encoders import CLIP
from diffusion.networks.vae import VAE
from nodes.context import current_or_none
from nodes.image_file_helpers import save_image_path
from nodes.loaders import node_context
from nodes.spec import Float, Hidden, Input, Node, Output, String

CATEGORY = "advanced/model_merging"
_RATIO = dict(min=0.0, max=1.0, step=0.01)
_MULTIPLIER = dict(min=-10.0, max=10.0, step=0.01)


def base_reader() -> Callable[[nn.Module, str], Tensor] | None:
    """The memory manager's reader of unpatched weights (`base_weight(module, key)`), if it has one."""
    ctx = current_or_none()
    return ctx.models.base_weight if ctx is not None and ctx.models is not None else None


def _merge(model1: ModelHandle, model2: ModelHandle, weights: Callable[[str], tuple[float, float] | None]
           ) -> ModelHandle:
    return merge_into(model1, model2, weights, UNET_PREFIX, base_reader())


def _clip_merge(clip1: CLIP, clip2: CLIP, strength: float, strength_model: float) -> CLIP:
    """clip1's clone with every text-tower weight w1 → w1·strength_model + strength·w2 (ids and scale kept)."""
    def weights(key: str) -> tuple[float, float] | None:
        return None if key.endswith(CLIP_SKIP_SUFFIXES) else (strength, strength_model)

    twin = clip1.clone()
    twin.handle = merge_into(clip1.handle, clip2.handle, weights, reader=base_reader())
    return twin


class ModelMergeSimple(Node):
    """Merges two diffusion models: ratio·model1 + (1 − ratio)·model2."""

    CATEGORY = CATEGORY
    INPUTS = (Input("model1", "MODEL"), Input("model2", "MODEL"), Float("ratio", 1.0, **_RATIO))
    OUTPUTS = (Output("MODEL"),)

    def execute(self, model1: ModelHandle, model2: ModelHandle, ratio: float = 1.0) -> tuple[ModelHandle]:
        return (_merge(model1, model2, lambda key: (1.0 - ratio, ratio)),)


class ModelMergeBlocks(Node):
    """Merges two diffusion models with one ratio for the input blocks, one for the middle and one for the output."""

    CATEGORY = CATEGORY
    INPUTS = (Input("model1", "MODEL"), Input("model2", "MODEL"), Float("input", 1.0, **_RATIO),
              Float("middle", 1.0, **_RATIO), Float("out", 1.0, **_RATIO))
    OUTPUTS = (Output("MODEL"),)

    def execute(self, model1: ModelHandle, model2: ModelHandle, input: float = 1.0, middle: float = 1.0,
                out: float = 1.0) -> tuple[ModelHandle]:
        ratios = {"input": input, "middle": middle, "out": out}

        def weights(key: str) -> tuple[float, float]:
            ratio = block_ratio(key, ratios)
            return (1.0 - ratio, ratio)

        return (_merge(model1, model2, weights),)


class ModelMergeSubtract(Node):
    """model1·multiplier − model2·multiplier: the difference of two models (e.g. to extract what a fine-tune added)."""

    CATEGORY = CATEGORY
    INPUTS = (Input("model1", "MODEL"), Input("model2", "MODEL"), Float("multiplier", 1.0, **_MULTIPLIER))
    OUTPUTS = (Output("MODEL"),)

    def execute(self, model1: ModelHandle, model2: ModelHandle, multiplier: float = 1.0) -> tuple[ModelHandle]:
        return (_merge(model1, model2, lambda key: (-multiplier, multiplier)),)


class ModelMergeAdd(Node):
    """model1 + model2 (e.g. to add back a difference made by ModelMergeSubtract)."""

    CATEGORY = CATEGORY
    INPUTS = (Input("model1", "MODEL"), Input("model2", "MODEL"))
    OUTPUTS = (Output("MODEL"),)

    def execute(self, model1: ModelHandle, model2: ModelHandle) -> tuple[ModelHandle]:
        return (_merge(model1, model2, lambda key: (1.0, 1.0)),)


class CLIPMergeSimple(Node):
    """Merges two text encoders: ratio·clip1 + (1 − ratio)·clip2."""

    CATEGORY = CATEGORY
    INPUTS = (Input("clip1", "CLIP"), Input("clip2", "CLIP"), Float("ratio", 1.0, **_RATIO))
    OUTPUTS = (Output("CLIP"),)

    def execute(self, clip1: CLIP, clip2: CLIP, ratio: float = 1.0) -> tuple[CLIP]:
        return (_clip_merge(clip1, clip2, 1.0 - ratio, ratio),)


class CLIPMergeSubtract(Node):
    """clip1·multiplier − clip2·multiplier."""

    CATEGORY = CATEGORY
    INPUTS = (Input("clip1", "CLIP"), Input("clip2", "CLIP"), Float("multiplier", 1.0, **_MULTIPLIER))
    OUTPUTS = (Output("CLIP"),)

    def execute(self, clip1: CLIP, clip2: CLIP, multiplier: float = 1.0) -> tuple[CLIP]:
        return (_clip_merge(clip1, clip2, -multiplier, multiplier),)


class CLIPMergeAdd(Node):
    """clip1 + clip2."""

    CATEGORY = CATEGORY
    INPUTS = (Input("clip1", "CLIP"), Input("clip2", "CLIP"))
    OUTPUTS = (Output("CLIP"),)

    def execute(self, clip1: CLIP, clip2: CLIP) -> tuple[CLIP]:
        return (_clip_merge(clip1, clip2, 1.0, 1.0),)


def _sd1_block_inputs() -> tuple:
    """ComfyUI's per-block ratio inputs of ModelMergeSD1/SD2: LDM key prefixes of the SD1/SD2 UNet, in order."""
    names = ["time_embed.", "label_emb."] + [f"input_blocks.{i}." for i in range(12)]
    names += [f"middle_block.{i}." for i in range(3)] + [f"output_blocks.{i}." for i in range(12)] + ["out."]
    return tuple(Float(name, 1.0, **_RATIO) for name in names)


class ModelMergeSD1(Node):
    """Merges two SD1.x/SD2.x diffusion models with one ratio per UNet block: ratio·model1 + (1 − ratio)·model2,
    the ratio of a key being that of the input whose name the key starts with (time_embed's for the rest)."""

    CATEGORY = "advanced/model_merging/model_specific"
    INPUTS = (Input("model1", "MODEL"), Input("model2", "MODEL"), *_sd1_block_inputs())
    OUTPUTS = (Output("MODEL"),)

    def execute(self, model1: ModelHandle, model2: ModelHandle, **ratios: float) -> tuple[ModelHandle]:
        def weights(key: str) -> tuple[float, float]:
            ratio = block_ratio(key, ratios)
            return (1.0 - ratio, ratio)

        return (_merge(model1, model2, weights),)


class ModelMergeSD2(ModelMergeSD1):
    __doc__ = ModelMergeSD1.__doc__  # SD1 and SD2 UNets have the same blocks (ComfyUI registers one class twice)


# --- saving ---------------------------------------------------------------------------------------------------


def patched_state_dict(handle: ModelHandle) -> dict[str, Tensor]:
    """The handle's module state dict with its patches applied, on the CPU (placed by the memory manager, which
    applies the patches, when there is one)."""
    ctx = current_or_none()
    if ctx is not None and ctx.models is not None:
        with ctx.models.use([handle]):
            return {k: v.detach().to("cpu", copy=True) for k, v in handle.model.state_dict().items()}
    return {k: apply_patches(v.detach(), handle.patches.get(k, [])).cpu()
            for k, v in handle.model.state_dict().items()}


def save_metadata(prompt: Any = None, extra_pnginfo: dict[str, Any] | None = None) -> dict[str, str]:
    """ComfyUI's model-file metadata: `prompt` (API JSON, "" without one) and each extra_pnginfo entry as JSON."""
    metadata = {"prompt": json.dumps(prompt) if prompt is not None else ""}
    for name, value in (extra_pnginfo or {}).items():
        metadata[name] = json.dumps(value)
    return metadata


def save_tensors(tensors: dict[str, Tensor], filename_prefix: str, metadata: dict[str, str]) -> Path:
    """Write `tensors` as `<prefix>_<counter:05>_.safetensors` in the output folder (ComfyUI's naming)."""
    ctx = node_context()
    if ctx.folders is None:
        raise RuntimeError("saving needs the folders of a Loom instance; the executor was given none")
    where = save_image_path(filename_prefix, ctx.folders.output_directory)
    path = where.folder / f"{where.filename}_{where.counter:05}_.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    return path


_SAVE_HIDDEN = (Hidden("prompt", "PROMPT"), Hidden("extra_pnginfo", "EXTRA_PNGINFO"))


class CheckpointSave(Node):
    """Saves the model, CLIP and VAE (with their LoRAs and merges applied) as one checkpoint in the output folder."""

    DISPLAY_NAME = "Save Checkpoint"
    CATEGORY = CATEGORY
    OUTPUT_NODE = True
    INPUTS = (Input("model", "MODEL"), Input("clip", "CLIP"), Input("vae", "VAE"),
              String("filename_prefix", "checkpoints/ComfyUI"), *_SAVE_HIDDEN)
    OUTPUTS = ()

    def execute(self, model: ModelHandle, clip: CLIP, vae: VAE, filename_prefix: str = "checkpoints/ComfyUI",
                prompt: Any = None, extra_pnginfo: dict[str, Any] | None = None) -> dict[str, Any]:
        text = patched_state_dict(clip.handle) if clip is not None else None
        tensors = checkpoint_layout(patched_state_dict(model), text,
                                    patched_state_dict(vae.handle) if vae is not None else None,
                                    clip.model if clip is not None else None)
        save_tensors(tensors, filename_prefix, save_metadata(prompt, extra_pnginfo))
        return {}


class VAESave(Node):
    """Saves the VAE's weights as a VAE file in the output folder."""

    CATEGORY = CATEGORY
    OUTPUT_NODE = True
    INPUTS = (Input("vae", "VAE"), String("filename_prefix", "vae/ComfyUI_vae"), *_SAVE_HIDDEN)
    OUTPUTS = ()

    def execute(self, vae: VAE, filename_prefix: str = "vae/ComfyUI_vae", prompt: Any = None,
                extra_pnginfo: dict[str, Any] | None = None) -> dict[str, Any]:
        tensors = {k: v.contiguous() for k, v in patched_state_dict(vae.handle).items()}
        save_tensors(tensors, filename_prefix, save_metadata(prompt, extra_pnginfo))
        return {}


NODES: list[type] = [ModelMergeSimple, ModelMergeBlocks, ModelMergeSubtract, ModelMergeAdd, CLIPMergeSimple,
                     CLIPMergeSubtract, CLIPMergeAdd, CheckpointSave, VAESave, ModelMergeSD1, ModelMergeSD2]
