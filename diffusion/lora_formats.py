"""Where the names LoRA files use point in Loom's modules: the key maps of LoRA loading.

Owns the tables from every naming people's files use to the state-dict keys of Loom's modules:

- UNet (`DiffusionModel`, keys `diffusion_model.<LDM key>`): kohya/A1111 names in the LDM layout
  (`lora_unet_input_blocks_1_1_proj_in`), kohya names in the diffusers layout
  (`lora_unet_down_blocks_0_attentions_0_proj_in`), diffusers/PEFT module paths with or without `unet.`
  (`unet.down_blocks.0.attentions.0.proj_in`), and the LDM paths themselves (`diffusion_model.input_blocks.1.1.proj_in`,
  `model.diffusion_model.…`), which full-diff files use;
- CLIP text tower (`TextEncoder`, open_clip layout): kohya `lora_te_text_model_encoder_layers_0_self_attn_q_proj`,
  diffusers/PEFT `text_encoder.text_model.encoder.layers.0.self_attn.q_proj`, and the checkpoint paths. Files name
  the tower in the HF `CLIPTextModel` layout for SD1 and SD2 alike; q/k/v live stacked in open_clip's `in_proj_*`,
  so those targets carry a slice (`Target.offset`).

The diffusers ↔ LDM correspondence of the UNet (blocks counted from the config: `num_res_blocks`, levels,
attention levels) follows the layout of diffusers' `UNet2DConditionModel` and CompVis' `openaimodel.py`; it is
the same correspondence ComfyUI's `unet_to_diffusers` tabulates, written here from the two layouts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from diffusion.text_encoders import module_key_for_hf
from diffusion.unet import UNetConfig

UNET_KEY_PREFIX = "diffusion_model."

# diffusers ResnetBlock2D attribute -> LDM ResBlock attribute.
_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
           "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_TOP_LEVEL = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
              "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
              "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}


@dataclass(frozen=True)
class Target:
    """A weight a LoRA module changes: the module's state-dict key, and for a stacked tensor the slice
    (dim, start, length) the module covers."""

    key: str
    offset: tuple[int, int, int] | None = None

    def bias(self) -> "Target":
        """The bias beside this weight (same slice)."""
        return Target(self.key[: -len("weight")] + "bias", self.offset) if self.key.endswith("weight") else self


def _resnet(ldm: str, diffusers: str) -> dict[str, str]:
    return {f"{diffusers}.{d}": f"{ldm}.{l}" for d, l in _RESNET.items()}


def diffusers_to_ldm_prefixes(config: UNetConfig) -> dict[str, str]:
    """diffusers module path -> LDM module path, for every block of a UNet of `config` (attention blocks map
    as a whole: their insides have the same names in both layouts)."""
    out = dict(_TOP_LEVEL)
    nrb, levels = config.num_res_blocks, len(config.channel_mult)
    for i in range(levels):
        attention = 2 ** i in config.attention_resolutions
        for j in range(nrb):
            n = 1 + i * (nrb + 1) + j
            out.update(_resnet(f"input_blocks.{n}.0", f"down_blocks.{i}.resnets.{j}"))
            if attention:
                out[f"down_blocks.{i}.attentions.{j}"] = f"input_blocks.{n}.1"
        if i < levels - 1:
            out[f"down_blocks.{i}.downsamplers.0.conv"] = f"input_blocks.{1 + i * (nrb + 1) + nrb}.0.op"
    out.update(_resnet("middle_block.0", "mid_block.resnets.0"))
    out["mid_block.attentions.0"] = "middle_block.1"
    out.update(_resnet("middle_block.2", "mid_block.resnets.1"))
    for u in range(levels):
        level = levels - 1 - u
        attention = 2 ** level in config.attention_resolutions
        for j in range(nrb + 1):
            n = u * (nrb + 1) + j
            out.update(_resnet(f"output_blocks.{n}.0", f"up_blocks.{u}.resnets.{j}"))
            if attention:
                out[f"up_blocks.{u}.attentions.{j}"] = f"output_blocks.{n}.1"
            if level and j == nrb:
                out[f"up_blocks.{u}.upsamplers.0.conv"] = f"output_blocks.{n}.{2 if attention else 1}.conv"
    return out


def _ldm_to_diffusers(ldm_module: str, inverse: dict[str, str]) -> str | None:
    """The diffusers path of an LDM module path (longest known block prefix, rest unchanged)."""
    parts = ldm_module.split(".")
    for cut in range(len(parts), 0, -1):
        head = ".".join(parts[:cut])
        if head in inverse:
            return ".".join([inverse[head]] + parts[cut:])
    return None


def unet_key_map(model_keys: Iterable[str], config: UNetConfig | None) -> dict[str, Target]:
    """LoRA module name (every naming) -> Target, for a `DiffusionModel` with state-dict keys `model_keys`."""
    inverse = {v: k for k, v in diffusers_to_ldm_prefixes(config).items()} if config is not None else {}
    out: dict[str, Target] = {}
    for key in model_keys:
        if not key.startswith(UNET_KEY_PREFIX) or not key.endswith(".weight"):
            continue
        module = key[len(UNET_KEY_PREFIX): -len(".weight")]
        target = Target(key)
        for name in (f"lora_unet_{module.replace('.', '_')}", f"diffusion_model.{module}",
                     f"model.diffusion_model.{module}", module):
            out[name] = target
        diffusers = _ldm_to_diffusers(module, inverse)
        if diffusers is None:
            continue
        for name in (f"lora_unet_{diffusers.replace('.', '_')}", f"unet.{diffusers}", diffusers,
                     f"lycoris_{diffusers.replace('.', '_')}"):
            out.setdefault(name, target)
    return out


def _hf_text_modules(layers: int) -> list[str]:
    """HF `CLIPTextModel` module paths (below `text_model.`) of a tower with `layers` blocks."""
    names = ["embeddings.token_embedding", "embeddings.position_embedding", "final_layer_norm"]
    for i in range(layers):
        for sub in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
                    "mlp.fc1", "mlp.fc2", "layer_norm1", "layer_norm2"):
            names.append(f"encoder.layers.{i}.{sub}")
    return names


def clip_key_map(model_keys: Iterable[str], width: int, layers: int) -> dict[str, Target]:
    """LoRA module name (every naming) -> Target, for a `TextEncoder` (open_clip layout) of `width`/`layers`."""
    keys = set(model_keys)
    out: dict[str, Target] = {}
    for hf in _hf_text_modules(layers):
        located = module_key_for_hf(f"text_model.{hf}.weight", width)
        if located is None:
            continue
        key, offset = located
        if key not in keys:
            continue
        target = Target(key, offset)
        path = f"text_model.{hf}"
        for name in (f"lora_te_{path.replace('.', '_')}", f"text_encoder.{path}", path,
                     f"cond_stage_model.transformer.{path}", f"text_encoders.clip_l.transformer.{path}",
                     f"clip_l.transformer.{path}", f"lora_te1_{path.replace('.', '_')}"):
            out[name] = target
    for key in keys:  # the tower's own keys (SD2 checkpoints store the open_clip layout)
        if key.endswith(".weight"):
            module = key[: -len(".weight")]
            out.setdefault(module, Target(key))
            out.setdefault(f"cond_stage_model.{module}", Target(key))
    return out
