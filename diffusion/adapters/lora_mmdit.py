"""Where SD3/SD3.5 LoRA files point in Loom's MMDiT: the key map of LoRA loading for the `sd3` family.

Owns `mmdit_key_map`: LoRA module name → `Target` (state-dict key `diffusion_model.…`, and for the fused q/k/v
projections the row slice a separate diffusers projection covers) for

- kohya / sd-scripts and ComfyUI's own names on the MMDiT's checkpoint paths (`lora_unet_joint_blocks_0_x_block_attn
  _qkv`, `diffusion_model.joint_blocks.0.x_block.attn.qkv`, the bare path), as for every model
  (`diffusion.adapters.lora_formats.unet_key_map`);
- diffusers' `SD3Transformer2DModel` paths under `transformer.` (diffusers/PEFT training scripts),
  `base_model.model.` (PEFT exports) and `lora_transformer_` with underscores (OneTrainer), the names ComfyUI
  accepts for SD3 (`comfy/lora.py`).

The diffusers ↔ SD3 correspondence (written from the two layouts): `transformer_blocks.N` is `joint_blocks.N`;
`attn.to_q/to_k/to_v` are the thirds of `x_block.attn.qkv`, `attn.add_{q,k,v}_proj` those of
`context_block.attn.qkv`, `attn2.*` the MMDiT-X block's `x_block.attn2`; `to_out.0`/`to_add_out` the output
projections; `ff`/`ff_context` the MLPs; `norm1(_context).linear` the adaLN modulations; the embedders and
`proj_out` the top level. The pre-only last context block's and the final layer's modulations store (scale,
shift) in diffusers but (shift, scale) in SD3 files, so a LoRA on them cannot be a plain delta and is left unmatched
(reported as unused keys).
"""
from __future__ import annotations

from collections.abc import Iterable

from diffusion.adapters.lora_formats import UNET_KEY_PREFIX, Target, unet_key_map

_TOP = {"pos_embed.proj": "x_embedder.proj", "context_embedder": "context_embedder", "proj_out": "final_layer.linear",
        "time_text_embed.timestep_embedder.linear_1": "t_embedder.mlp.0",
        "time_text_embed.timestep_embedder.linear_2": "t_embedder.mlp.2",
        "time_text_embed.text_embedder.linear_1": "y_embedder.mlp.0",
        "time_text_embed.text_embedder.linear_2": "y_embedder.mlp.2"}
_BLOCK = {"attn.to_out.0": "x_block.attn.proj", "attn.to_add_out": "context_block.attn.proj",
          "attn2.to_out.0": "x_block.attn2.proj", "ff.net.0.proj": "x_block.mlp.fc1", "ff.net.2": "x_block.mlp.fc2",
          "ff_context.net.0.proj": "context_block.mlp.fc1", "ff_context.net.2": "context_block.mlp.fc2",
          "norm1.linear": "x_block.adaLN_modulation.1"}
# diffusers projection -> (fused SD3 q/k/v module, which third)
_QKV = {"attn.to_q": ("x_block.attn.qkv", 0), "attn.to_k": ("x_block.attn.qkv", 1),
        "attn.to_v": ("x_block.attn.qkv", 2), "attn.add_q_proj": ("context_block.attn.qkv", 0),
        "attn.add_k_proj": ("context_block.attn.qkv", 1), "attn.add_v_proj": ("context_block.attn.qkv", 2),
        "attn2.to_q": ("x_block.attn2.qkv", 0), "attn2.to_k": ("x_block.attn2.qkv", 1),
        "attn2.to_v": ("x_block.attn2.qkv", 2)}
DIFFUSERS_NAMES = ("transformer.{p}", "base_model.model.{p}", "lora_transformer_{k}")


def diffusers_targets(model_keys: Iterable[str], depth: int, hidden_size: int) -> dict[str, Target]:
    """diffusers module path → Target, for the modules the model has (a pre-only context block has no
    output projection or MLP; only MMDiT-X blocks have `attn2`)."""
    keys = set(model_keys)
    out: dict[str, Target] = {}

    def add(diffusers: str, module: str, offset: tuple[int, int, int] | None = None) -> None:
        key = f"{UNET_KEY_PREFIX}{module}.weight"
        if key in keys:
            out[diffusers] = Target(key, offset)

    for diffusers, module in _TOP.items():
        add(diffusers, module)
    for i in range(depth):
        for name, module in _BLOCK.items():
            add(f"transformer_blocks.{i}.{name}", f"joint_blocks.{i}.{module}")
        context_pre_only = f"{UNET_KEY_PREFIX}joint_blocks.{i}.context_block.attn.proj.weight" not in keys
        if not context_pre_only:
            add(f"transformer_blocks.{i}.norm1_context.linear", f"joint_blocks.{i}.context_block.adaLN_modulation.1")
        for name, (module, third) in _QKV.items():
            add(f"transformer_blocks.{i}.{name}", f"joint_blocks.{i}.{module}", (0, third * hidden_size, hidden_size))
    return out


def mmdit_key_map(model_keys: Iterable[str], depth: int, hidden_size: int) -> dict[str, Target]:
    """LoRA module name (every naming) → Target for an MMDiT `DiffusionModel` with state-dict keys `model_keys`."""
    keys = list(model_keys)
    out = unet_key_map(keys, None)
    for path, target in diffusers_targets(keys, depth, hidden_size).items():
        for template in DIFFUSERS_NAMES:
            out.setdefault(template.format(p=path, k=path.replace(".", "_")), target)
    return out
