"""Model merging as weight patches, and saving patched models back in the single-file checkpoint layout.

Owns:
- `merge_into(target, other, weights_for)`: a clone of `target` whose every weight `w1` becomes
  `w1·strength_model + strength·w2`, `w2` being `other`'s (patched) weight of the same key — ComfyUI's merging
  (`model1.clone()` + `add_patches(model2.get_key_patches(), strength, strength_model)`), from which ModelMergeSimple
  (`ratio·w1 + (1−ratio)·w2`), ModelMergeBlocks, Add (`w1 + w2`) and Subtract (`w1·m − m·w2`) follow;
- `checkpoint_layout(...)`: the state dicts of Loom's modules renamed to the LDM single-file layout
  (`model.diffusion_model.`, `first_stage_model.`, `cond_stage_model.` with SD1's text tower in the HF
  `CLIPTextModel` layout and SD2's in open_clip's), so a saved file loads back through `diffusion.files.loading`.

`other`'s weight is read from its module when the memory manager patches `target`, not copied now: a merge costs
no memory until it is loaded. The base weight is read through the manager's `base_weight(module, key)` when it has
one (ComfyUI reads its patcher's backups), since `other`'s module may be loaded with another clone's patches.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

from diffusion.patcher import ModelHandle, WeightPatch, apply_patches
from diffusion.text.text_encoders import TextEncoder, module_key_for_hf

UNET_PREFIX = "diffusion_model."
CLIP_SKIP_SUFFIXES = (".position_ids", ".logit_scale")  # ComfyUI's CLIP merges leave these alone


def tensor_at(module: nn.Module, key: str) -> Tensor:
    """The parameter or buffer named `key` (a state-dict key) of `module`, as it is now."""
    owner_path, _, name = key.rpartition(".")
    owner = module.get_submodule(owner_path) if owner_path else module
    if name in owner._parameters:
        return owner._parameters[name]
    return owner._buffers[name]


@dataclass(frozen=True)
class OtherWeight:
    """The delta "`other`'s weight at `key`, with `other`'s own patches applied" (a merge source)."""

    module: nn.Module
    key: str
    patches: tuple[WeightPatch, ...]
    reader: Callable[[nn.Module, str], Tensor] | None = None

    def __call__(self, weight: Tensor) -> Tensor:
        read = self.reader if self.reader is not None else tensor_at
        value = read(self.module, self.key).detach().to(device=weight.device)
        return apply_patches(value, list(self.patches)).to(torch.float32)


def merge_into(target: ModelHandle, other: ModelHandle, weights_for: Callable[[str], tuple[float, float] | None],
               prefix: str = "", reader: Callable[[nn.Module, str], Tensor] | None = None) -> ModelHandle:
    """A clone of `target` with, for each key of `other` under `prefix` that `target` has too, the patch
    `w·strength_model + strength·w_other`; `weights_for(key)` gives (strength, strength_model), or None to skip.

    `reader(module, key)` returns a module's base (unpatched) weight — the memory manager's, which knows whether
    `other`'s module is loaded with some clone's patches; without it the module's live tensor is read."""
    merged = target.clone()
    tag = ("merge", id(other.model), other.weights_key())
    for key in sorted(other.state_keys()):
        if not key.startswith(prefix):
            continue
        weights = weights_for(key)
        if weights is None:
            continue
        delta = OtherWeight(other.model, key, tuple(other.patches.get(key, ())), reader)
        merged.add_patches({key: WeightPatch(delta, weights[0], weights[1], key_hint=key, ident=(tag, key))})
    return merged


def block_ratio(key: str, ratios: dict[str, float]) -> float:
    """ModelMergeBlocks' ratio of a UNet key: the first ratio by default, the last whose name the LDM key starts
    with otherwise (so "out" also covers `output_blocks`)."""
    local = key[len(UNET_PREFIX):] if key.startswith(UNET_PREFIX) else key
    ratio = next(iter(ratios.values()))
    for name, value in ratios.items():
        if local.startswith(name):
            ratio = value
    return ratio


# --- saving ---------------------------------------------------------------------------------------------------


def _hf_text_keys(layers: int) -> list[str]:
    keys = ["embeddings.token_embedding.weight", "embeddings.position_embedding.weight",
            "final_layer_norm.weight", "final_layer_norm.bias"]
    for i in range(layers):
        for sub in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
                    "layer_norm1", "layer_norm2", "mlp.fc1", "mlp.fc2"):
            keys += [f"encoder.layers.{i}.{sub}.weight", f"encoder.layers.{i}.{sub}.bias"]
    return keys


def hf_text_layout(config: Any, state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """A tower's tensors (open_clip layout, TextEncoder keys) in the HF CLIPTextModel layout under `prefix`."""
    out = {}
    for hf in _hf_text_keys(config.layers):
        located = module_key_for_hf(f"text_model.{hf}", config.width)
        if located is None or located[0] not in state:
            continue
        key, offset = located
        value = state[key] if offset is None else state[key].narrow(*offset)
        out[f"{prefix}text_model.{hf}"] = value.contiguous()
    return out


def sub_state(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def text_encoder_checkpoint_keys(encoder: Any, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A text model's tensors keyed as inside a checkpoint: SD1 in the HF layout under
    `cond_stage_model.transformer.text_model.`, SD2 in open_clip's under `cond_stage_model.model.`; SDXL's CLIP-L
    in the HF layout under `conditioner.embedders.0.transformer.` and bigG in open_clip's under
    `conditioner.embedders.1.model.` (the refiner's bigG under `conditioner.embedders.0.model.`)."""
    if hasattr(encoder, "towers"):  # SDXL's MultiTextEncoder: keys clip_l.model.* / clip_g.model.*
        towers = encoder.towers()
        out: dict[str, Tensor] = {}
        if "l" in towers:
            out.update(hf_text_layout(towers["l"].config, sub_state(state, "clip_l."),
                                      "conditioner.embedders.0.transformer."))
        if "g" in towers:
            slot = "conditioner.embedders.1." if "l" in towers else "conditioner.embedders.0."
            out.update({slot + k: v for k, v in sub_state(state, "clip_g.").items()})
        return out
    config = encoder.config
    if config.family != "sd1":
        return {f"cond_stage_model.{k}": v for k, v in state.items()}
    return hf_text_layout(config, state, "cond_stage_model.transformer.")


def checkpoint_layout(unet: dict[str, Tensor], text: dict[str, Tensor] | None, vae: dict[str, Tensor] | None,
                      encoder: TextEncoder | None = None) -> dict[str, Tensor]:
    """One single-file checkpoint's tensors from the (patched) state dicts of a `DiffusionModel`, a `TextEncoder`
    and an `AutoencoderKL`."""
    out = {f"model.{k}": v for k, v in unet.items() if k.startswith(UNET_PREFIX)}
    if vae is not None:
        out.update({f"first_stage_model.{k}": v for k, v in vae.items()})
    if text is not None and encoder is not None:
        out.update(text_encoder_checkpoint_keys(encoder, text))
    return {k: v.contiguous() for k, v in out.items()}
