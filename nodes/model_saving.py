"""Saving a model or text encoder alone, and extracting a LoRA: ModelSave, CLIPSave (ComfyUI's
`comfy_extras/nodes_model_merging.py`) and LoraSave (`comfy_extras/nodes_lora_extract.py`).

Written with CheckpointSave's machinery (`nodes/model_merging.py`): the patched weights (LoRAs and merges
applied), ComfyUI's file naming and metadata.
- ModelSave: the diffusion model under `model.diffusion_model.` (what UNETLoader reads).
- CLIPSave: one file per text tower, `<prefix>_clip_l` / `_clip_h` / `_clip_g`, in the HF `CLIPTextModel` layout
  without ComfyUI's tower prefix (`text_model.…`, `text_projection.weight`), metadata with `format: pt`.
- LoraSave: the low-rank factors of a model difference (e.g. ModelMergeSubtract of a fine-tune and its base),
  `diffusion_model.<LDM module>.lora_up/lora_down.weight`, and of a text-encoder difference,
  `text_encoders.clip_<l|h|g>.transformer.text_model.<HF module>.…` — names LoraLoader reads back.
"""
from __future__ import annotations

from typing import Any

from torch import Tensor

from diffusion.adapters.lora_extract import LORA_TYPES, lora_state_dict
from diffusion.files.merge import UNET_PREFIX, checkpoint_layout, hf_text_layout, sub_state
from diffusion.patcher import ModelHandle
from diffusion.text.text_encoders import CLIP, TextEncoder, towers_of
from nodes.model_merging import _SAVE_HIDDEN, CATEGORY, patched_state_dict, save_metadata, save_tensors
from nodes.spec import Boolean, Combo, Input, Int, Node, String


def clip_tower_states(clip: CLIP) -> dict[str, dict[str, Tensor]]:
    """Each tower's patched tensors in the HF CLIPTextModel layout, by ComfyUI's tower name ("clip_l", ...)."""
    state = patched_state_dict(clip.handle) if clip.handle is not None else clip.model.state_dict()
    towers = towers_of(clip.model)
    out = {}
    for key, tower in towers.items():
        local = state if isinstance(clip.model, TextEncoder) else sub_state(state, f"clip_{key}.")
        hf = hf_text_layout(tower.config, local, "")
        projection = local.get("model.text_projection")
        if projection is not None:
            hf["text_projection.weight"] = projection.t().contiguous()
        out[f"clip_{key}"] = hf
    return out


class ModelSave(Node):
    """Saves the diffusion model (with its LoRAs and merges applied) as a file in the output folder."""

    CATEGORY = CATEGORY
    OUTPUT_NODE = True
    INPUTS = (Input("model", "MODEL"), String("filename_prefix", "diffusion_models/ComfyUI"), *_SAVE_HIDDEN)
    OUTPUTS = ()

    def execute(self, model: ModelHandle, filename_prefix: str = "diffusion_models/ComfyUI", prompt: Any = None,
                extra_pnginfo: dict[str, Any] | None = None) -> dict[str, Any]:
        tensors = checkpoint_layout(patched_state_dict(model), None, None)
        save_tensors(tensors, filename_prefix, save_metadata(prompt, extra_pnginfo))
        return {}


class CLIPSave(Node):
    """Saves each text encoder tower of the CLIP (with its LoRAs and merges applied) as a file in the output
    folder."""

    CATEGORY = CATEGORY
    OUTPUT_NODE = True
    INPUTS = (Input("clip", "CLIP"), String("filename_prefix", "clip/ComfyUI"), *_SAVE_HIDDEN)
    OUTPUTS = ()

    def execute(self, clip: CLIP, filename_prefix: str = "clip/ComfyUI", prompt: Any = None,
                extra_pnginfo: dict[str, Any] | None = None) -> dict[str, Any]:
        metadata = {"format": "pt", **save_metadata(prompt, extra_pnginfo)}
        for name, tensors in clip_tower_states(clip).items():
            save_tensors(tensors, f"{filename_prefix}_{name}", metadata)
        return {}


class LoraSave(Node):
    """Extracts a LoRA from a model difference (and/or a text-encoder difference) and saves it in the output
    folder."""

    CATEGORY = "_for_testing"
    OUTPUT_NODE = True
    INPUTS = (String("filename_prefix", "loras/ComfyUI_extracted_lora"), Int("rank", 8, min=1, max=4096, step=1),
              Combo("lora_type", LORA_TYPES), Boolean("bias_diff", True),
              Input("model_diff", "MODEL", optional=True), Input("text_encoder_diff", "CLIP", optional=True))
    OUTPUTS = ()

    def execute(self, filename_prefix: str = "loras/ComfyUI_extracted_lora", rank: int = 8,
                lora_type: str = "standard", bias_diff: bool = True, model_diff: ModelHandle | None = None,
                text_encoder_diff: CLIP | None = None) -> dict[str, Any]:
        if model_diff is None and text_encoder_diff is None:
            return {}
        tensors: dict[str, Tensor] = {}
        if model_diff is not None:
            diffs = {k: v for k, v in patched_state_dict(model_diff).items() if k.startswith(UNET_PREFIX)}
            tensors.update(lora_state_dict(diffs, rank, lora_type, bias_diff))
        if text_encoder_diff is not None:
            for name, diffs in clip_tower_states(text_encoder_diff).items():
                tensors.update(lora_state_dict(diffs, rank, lora_type, bias_diff,
                                               prefix=f"text_encoders.{name}.transformer."))
        save_tensors(tensors, filename_prefix, {})
        return {}


NODES: list[type] = [ModelSave, CLIPSave, LoraSave]
