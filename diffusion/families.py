"""Which model a file holds: family, variant, prediction type, and the network configs derived from shapes.

Owns `detect_checkpoint` (a single-file SD checkpoint → `ModelInfo`), `detect_file_kind` (checkpoint, UNet-,
VAE- or text-encoder-only file), `unet_config_from_state_dict` and `vae_config_from_state_dict` (every size read
off the tensors' shapes, so full-size and tiny files go through the same code), `text_encoder_family`, and
`detect_prediction` (v-prediction from metadata or ComfyUI's heuristic for SD2).

Families: "sd1" — SD1.x, CLIP ViT-L/14 in the HF layout (`transformer.text_model.*`), 768-dim context, 8 heads;
"sd2" — SD2.x, OpenCLIP ViT-H/14 (`model.transformer.resblocks.*`), 1024-dim context, 64-channel heads, linear
projections in the transformers. Inpainting UNets take 9 input channels (latent, mask, masked-image latent).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from diffusion.checkpoint import (
    TEXT_ENCODER_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    CheckpointError,
    split_components,
    strip_prefix,
)
from diffusion.unet import UNetConfig
from diffusion.vae import VAEConfig

FAMILIES = ("sd1", "sd2")
# ComfyUI's rule (comfy/model_detection.py): SD2 768-v checkpoints have a wider spread of this LayerNorm's bias.
V_PREDICTION_STD_THRESHOLD = 0.09
_V_VALUES = ("v", "v_prediction", "v-prediction", "vpred", "v-pred")


@dataclass(frozen=True)
class ModelInfo:
    """What a checkpoint is: `family` "sd1"/"sd2", `inpaint`, `prediction` "eps"/"v", and the network configs
    (None for a component the file lacks); `text_encoder` names the text tower's layout family or is None."""

    family: str
    inpaint: bool
    prediction: str
    unet: UNetConfig | None
    vae: VAEConfig | None
    text_encoder: str | None

    @property
    def name(self) -> str:
        """A short label such as "sd1", "sd1-inpaint", "sd2-v"."""
        return self.family + ("-inpaint" if self.inpaint else "") + ("-v" if self.prediction == "v" else "")


def _prefixes(keys: list[str], limit: int = 8) -> list[str]:
    seen: dict[str, int] = {}
    for key in keys:
        head = ".".join(key.split(".")[:2])
        seen[head] = seen.get(head, 0) + 1
    return [f"{k}.* ({n})" for k, n in sorted(seen.items(), key=lambda kv: -kv[1])[:limit]]


def text_encoder_family(te_state_dict: dict[str, torch.Tensor]) -> str | None:
    """"sd1" for an HF CLIPTextModel layout, "sd2" for OpenCLIP's, None when neither (keys without prefix)."""
    keys = te_state_dict.keys()
    if any(k.startswith(("transformer.text_model.", "text_model.")) for k in keys):
        return "sd1"
    if any(k.startswith(("model.transformer.resblocks.", "transformer.resblocks.")) for k in keys):
        return "sd2"
    return None


def _indices(state_dict: dict[str, torch.Tensor], pattern: str) -> list[int]:
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for k in state_dict if (m := regex.match(k))})


def _levels(unet: dict[str, torch.Tensor], mc: int) -> tuple[list[int], list[int], list[bool]]:
    """Per resolution level: channel multiplier, number of res blocks, whether it has attention."""
    mults: list[int] = []
    counts: list[int] = []
    attention: list[bool] = []
    level_blocks: list[int] = []
    for i in _indices(unet, r"input_blocks\.(\d+)\.")[1:]:
        if f"input_blocks.{i}.0.op.weight" in unet:
            counts.append(len(level_blocks))
            level_blocks = []
            continue
        if not level_blocks:
            mults.append(unet[f"input_blocks.{i}.0.out_layers.3.weight"].shape[0] // mc)
            attention.append(f"input_blocks.{i}.1.norm.weight" in unet)
        level_blocks.append(i)
    counts.append(len(level_blocks))
    return mults, counts, attention


def unet_family(context_dim: int, linear: bool, hint: str | None = None) -> str:
    """The heads rule a UNet follows: its context width decides for real models (768 → SD1's CLIP-L, 1024 → SD2's
    OpenCLIP-H, whatever layout the text tower is stored in); other widths (tiny test models) follow `hint`, the
    text tower's family, or else the projection type."""
    if context_dim == 768:
        return "sd1"
    if context_dim == 1024:
        return "sd2"
    return hint or ("sd2" if linear else "sd1")


def unet_config_from_state_dict(unet: dict[str, torch.Tensor], family: str | None = None) -> UNetConfig:
    """The `UNetConfig` of UNet weights (keys without `model.diffusion_model.`), read off their shapes.

    The heads rule ("sd1": 8 heads, "sd2": 64-channel heads) follows `unet_family`, with `family` as the hint.
    """
    try:
        conv_in = unet["input_blocks.0.0.weight"]
        mc, in_channels = conv_in.shape[0], conv_in.shape[1]
        out_channels = unet["out.2.weight"].shape[0]
        mults, counts, attention = _levels(unet, mc)
        to_k = next(v for k, v in unet.items() if k.endswith("attn2.to_k.weight"))
        proj_in = next(v for k, v in unet.items() if k.endswith(".1.proj_in.weight"))
    except (KeyError, StopIteration) as err:
        raise CheckpointError(
            f"UNet weights lack a tensor every SD1/SD2 UNet has ({err}); found {_prefixes(sorted(unet))}"
        ) from err
    if len(set(counts)) != 1:
        raise CheckpointError(f"UNet has uneven residual blocks per level {counts}; not an SD1/SD2 UNet")
    first = next(k for k in sorted(unet) if k.endswith(".1.proj_in.weight")).rsplit(".proj_in.", 1)[0]
    depth = len(_indices(unet, re.escape(first) + r"\.transformer_blocks\.(\d+)\."))
    context_dim = to_k.shape[1]
    linear = proj_in.ndim == 2
    family = unet_family(context_dim, linear, family)
    base = UNetConfig.sd2(in_channels) if family == "sd2" else UNetConfig.sd1(in_channels)
    adm = unet["label_emb.0.0.weight"].shape[1] if "label_emb.0.0.weight" in unet else None
    return UNetConfig(
        in_channels=in_channels, out_channels=out_channels, model_channels=mc, channel_mult=tuple(mults),
        num_res_blocks=counts[0], attention_resolutions=tuple(2 ** i for i, a in enumerate(attention) if a),
        transformer_depth=max(1, depth), context_dim=context_dim, num_heads=base.num_heads,
        num_head_channels=base.num_head_channels, use_linear_in_transformer=linear, adm_in_channels=adm,
    )


def vae_config_from_state_dict(vae: dict[str, torch.Tensor]) -> VAEConfig:
    """The `VAEConfig` of VAE weights (keys without `first_stage_model.`), read off their shapes."""
    if "decoder.up_blocks.0.resnets.0.norm1.weight" in vae or "decoder.conv_in.weight" not in vae:
        raise CheckpointError(
            "VAE weights are not in the LDM layout (encoder.down.*, decoder.up.*); diffusers-layout VAEs are not "
            f"supported. Found {_prefixes(sorted(vae))}"
        )
    if any(".attn." in k for k in vae if k.startswith(("encoder.down.", "decoder.up."))):
        raise CheckpointError("VAE has attention inside its resolution levels; only SD1/SD2's KL-f8 layout is known")
    ch = vae["encoder.conv_in.weight"].shape[0]
    levels = _indices(vae, r"encoder\.down\.(\d+)\.")
    mults = tuple(vae[f"encoder.down.{i}.block.0.conv2.weight"].shape[0] // ch for i in levels)
    z_channels = vae["decoder.conv_in.weight"].shape[1]
    return VAEConfig(
        ch=ch, ch_mult=mults, num_res_blocks=len(_indices(vae, r"encoder\.down\.0\.block\.(\d+)\.")),
        in_channels=vae["encoder.conv_in.weight"].shape[1], out_ch=vae["decoder.conv_out.weight"].shape[0],
        z_channels=z_channels, embed_dim=vae["post_quant_conv.weight"].shape[1],
        double_z=vae["encoder.conv_out.weight"].shape[0] == 2 * z_channels,
    )


def detect_prediction(unet: dict[str, torch.Tensor], family: str, metadata: dict[str, str] | None = None) -> str:
    """"v" or "eps": the file's metadata when it says; else, for SD2, ComfyUI's LayerNorm-bias heuristic."""
    meta = metadata or {}
    for key in ("modelspec.prediction_type", "prediction_type"):
        if meta.get(key):
            return "v" if meta[key].strip().lower() in _V_VALUES else "eps"
    conv_in = unet.get("input_blocks.0.0.weight")
    if family != "sd2" or (conv_in is not None and conv_in.shape[1] != 4):
        return "eps"  # ComfyUI applies the heuristic to SD2 only, and SD2 inpainting models are ε-prediction
    last = max(_indices(unet, r"output_blocks\.(\d+)\.1\.transformer_blocks\.0\.norm1\.bias"), default=None)
    if last is None:
        return "eps"
    bias = unet[f"output_blocks.{last}.1.transformer_blocks.0.norm1.bias"]
    return "v" if bias.float().std(correction=0).item() > V_PREDICTION_STD_THRESHOLD else "eps"


def detect_checkpoint(state_dict: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> ModelInfo:
    """Describe a single-file SD checkpoint (prefixed keys); `CheckpointError` for an unknown layout."""
    parts = split_components(state_dict)
    if not parts.unet:
        raise CheckpointError(
            f"no UNet weights under {UNET_PREFIX!r}: this is not an SD1/SD2 single-file checkpoint "
            f"(found {_prefixes(sorted(state_dict))}); load component files with their own loaders"
        )
    te_family = text_encoder_family(parts.text_encoder)
    unet = unet_config_from_state_dict(parts.unet, te_family)
    family = "sd2" if unet.num_head_channels > 0 else "sd1"
    return ModelInfo(
        family=family,
        inpaint=unet.in_channels == 9,
        prediction=detect_prediction(parts.unet, family, metadata),
        unet=unet,
        vae=vae_config_from_state_dict(parts.vae) if parts.vae else None,
        text_encoder=te_family,
    )


def detect_file_kind(state_dict: dict[str, torch.Tensor]) -> str:
    """"checkpoint", "unet", "vae" or "text_encoder" for a file's keys; `CheckpointError` when none fits."""
    keys = list(state_dict)
    if any(k.startswith(UNET_PREFIX) for k in keys):
        return "checkpoint"
    if "input_blocks.0.0.weight" in state_dict:
        return "unet"
    vae = strip_prefix(state_dict, VAE_PREFIX)
    if "decoder.conv_in.weight" in vae or "encoder.conv_in.weight" in vae:
        return "vae"
    if text_encoder_family(strip_prefix(state_dict, TEXT_ENCODER_PREFIX)) is not None:
        return "text_encoder"
    raise CheckpointError(
        f"unknown model layout: none of an SD checkpoint, UNet, VAE or CLIP text encoder; found {_prefixes(keys)}"
    )
