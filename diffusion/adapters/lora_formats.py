"""Where the names LoRA files use point in Loom's modules: the key maps of LoRA loading.

Owns the tables from every naming people's files use to the state-dict keys of Loom's modules:

- UNet (`DiffusionModel`, keys `diffusion_model.<LDM key>`): kohya/A1111 names in the LDM layout
  (`lora_unet_input_blocks_1_1_proj_in`), kohya names in the diffusers layout
  (`lora_unet_down_blocks_0_attentions_0_proj_in`), diffusers/PEFT module paths with or without `unet.`
  (`unet.down_blocks.0.attentions.0.proj_in`), and the LDM paths themselves (`diffusion_model.input_blocks.1.1.proj_in`,
  `model.diffusion_model.…`), which full-diff files use;
- SDXL's two towers (`MultiTextEncoder`): kohya `lora_te1_*` (CLIP-L) / `lora_te2_*` (bigG), diffusers/PEFT
  `text_encoder.*` / `text_encoder_2.*`, ComfyUI's `clip_l.*` / `clip_g.*`, bigG's open_clip checkpoint paths;
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

from diffusion.text.text_encoders import module_key_for_hf
from diffusion.networks.unet import UNetConfig

UNET_KEY_PREFIX = "diffusion_model."

# diffusers ResnetBlock2D attribute -> LDM ResBlock attribute.
_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
           "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_TOP_LEVEL = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
              "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
              "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}
# Public names for the other diffusers → LDM converters (ControlNet files in the diffusers layout).
RESNET_DIFFUSERS_TO_LDM = _RESNET
TOP_LEVEL_DIFFUSERS_TO_LDM = _TOP_LEVEL


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
    as a whole: their insides have the same names in both layouts). Per-block transformer depths (SDXL,
    SSD-1B) decide which blocks have an attention module."""
    out = dict(_TOP_LEVEL)
    nrb, levels = config.num_res_blocks, len(config.channel_mult)
    for i in range(levels):
        for j in range(nrb):
            n = 1 + i * (nrb + 1) + j
            out.update(_resnet(f"input_blocks.{n}.0", f"down_blocks.{i}.resnets.{j}"))
            if config.input_depth(i, j) > 0:
                out[f"down_blocks.{i}.attentions.{j}"] = f"input_blocks.{n}.1"
        if i < levels - 1:
            out[f"down_blocks.{i}.downsamplers.0.conv"] = f"input_blocks.{1 + i * (nrb + 1) + nrb}.0.op"
    out.update(_resnet("middle_block.0", "mid_block.resnets.0"))
    if config.middle_depth() >= 0:
        out["mid_block.attentions.0"] = "middle_block.1"
        out.update(_resnet("middle_block.2", "mid_block.resnets.1"))
    for u in range(levels):
        level = levels - 1 - u
        for j in range(nrb + 1):
            n = u * (nrb + 1) + j
            attention = config.output_depth(level, j) > 0
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


# The names LoRA files give each tower (templates over the HF path `text_model.…`; `{k}` = kohya's underscores).
SD_TEXT_NAMES = ("lora_te_{k}", "text_encoder.{p}", "{p}", "cond_stage_model.transformer.{p}",
                 "text_encoders.clip_l.transformer.{p}", "clip_l.transformer.{p}", "lora_te1_{k}",
                 "text_encoders.clip_h.transformer.{p}", "clip_h.transformer.{p}")
SDXL_L_NAMES = ("lora_te1_{k}", "text_encoder.{p}", "clip_l.transformer.{p}", "text_encoders.clip_l.transformer.{p}",
                "conditioner.embedders.0.transformer.{p}", "lora_te_{k}")
SDXL_G_NAMES = ("lora_te2_{k}", "text_encoder_2.{p}", "clip_g.transformer.{p}", "text_encoders.clip_g.transformer.{p}")


def tower_key_map(model_keys: Iterable[str], width: int, layers: int, prefix: str = "",
                  names: tuple[str, ...] = SD_TEXT_NAMES, native: tuple[str, ...] = ("", "cond_stage_model.")
                  ) -> dict[str, Target]:
    """LoRA module name -> Target for one `TextEncoder` whose keys start with `prefix` (`clip_g.` inside an SDXL
    text model): every HF module path under each naming in `names`, and the tower's own open_clip paths under
    each of `native` (SD2 / SDXL checkpoints store that layout)."""
    keys = set(model_keys)
    out: dict[str, Target] = {}
    for hf in _hf_text_modules(layers):
        located = module_key_for_hf(f"text_model.{hf}.weight", width)
        if located is None or prefix + located[0] not in keys:
            continue
        target = Target(prefix + located[0], located[1])
        path = f"text_model.{hf}"
        for template in names:
            out.setdefault(template.format(k=path.replace(".", "_"), p=path), target)
    for key in keys:
        if key.startswith(prefix) and key.endswith(".weight"):
            module = key[len(prefix): -len(".weight")]
            for head in native:
                out.setdefault(head + module, Target(key))
    return out


def clip_key_map(model_keys: Iterable[str], width: int, layers: int) -> dict[str, Target]:
    """LoRA module name (every naming) -> Target, for a `TextEncoder` (open_clip layout) of `width`/`layers`."""
    return tower_key_map(model_keys, width, layers)


def sdxl_clip_key_map(model_keys: Iterable[str], towers: dict[str, tuple[int, int]]) -> dict[str, Target]:
    """The key map of an SDXL two-tower text model (keys `clip_l.model.…`, `clip_g.model.…`): kohya `lora_te1_`
    / `lora_te2_`, diffusers/PEFT `text_encoder.` / `text_encoder_2.`, ComfyUI's `clip_l.` / `clip_g.`, and bigG's
    open_clip paths as in the checkpoint. `towers` gives (width, layers) per token key "l"/"g"."""
    keys = list(model_keys)
    out: dict[str, Target] = {}
    if "l" in towers:
        out.update(tower_key_map(keys, *towers["l"], prefix="clip_l.", names=SDXL_L_NAMES, native=()))
    if "g" in towers:
        native = ("conditioner.embedders.1.", "conditioner.embedders.0.") if "l" in towers else \
            ("conditioner.embedders.0.",)
        out.update(tower_key_map(keys, *towers["g"], prefix="clip_g.", names=SDXL_G_NAMES, native=native))
    return out
