"""CLIP vision towers (Radford et al. 2021) built with open_clip_torch from CLIP-vision files in the HF
`CLIPVisionModelWithProjection` layout (`vision_model.*`, `visual_projection.weight`), as ComfyUI's clip_vision
files (ViT-L/14, ViT-H/14, ViT-bigG/14) store them, plus CLIP's image preprocessing.

Owns: `clip_preprocess` (shorter side resized to 224 with antialiased bicubic, centre crop or squash, rounding to
8-bit levels, CLIP mean/std — ComfyUI `comfy/clip_vision.py` clip_preprocess), `CLIPVisionConfig` read off the
weights, the HF → open_clip key mapping, `ClipVisionModel` (encode → `ClipVisionOutput` with `image_embeds`,
`last_hidden_state` (before the final LayerNorm), `penultimate_hidden_states`) and `load_clip_vision`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from diffusion.files.checkpoint import CheckpointError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PREFIX = "vision_model."


def clip_preprocess(image: torch.Tensor, size: int = 224, crop: bool = True,
                    mean: tuple[float, ...] = CLIP_MEAN, std: tuple[float, ...] = CLIP_STD) -> torch.Tensor:
    """IMAGE (B×H×W×C, 0..1) → normalised B×3×size×size pixels for a CLIP vision tower."""
    image = image[..., :3].movedim(-1, 1).float()
    if image.shape[2] != size or image.shape[3] != size:
        if crop:
            scale = size / min(image.shape[2], image.shape[3])
            target = (round(scale * image.shape[2]), round(scale * image.shape[3]))
        else:
            target = (size, size)
        image = F.interpolate(image, size=target, mode="bicubic", antialias=True)
        top, left = (image.shape[2] - size) // 2, (image.shape[3] - size) // 2
        image = image[:, :, top:top + size, left:left + size]
    image = torch.clip(255.0 * image, 0, 255).round() / 255.0
    m = torch.tensor(mean, device=image.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=image.device).view(1, 3, 1, 1)
    return (image - m) / s


@dataclass(frozen=True)
class CLIPVisionConfig:
    """Shapes of a ViT vision tower."""

    width: int
    layers: int
    heads: int
    patch_size: int
    image_size: int
    mlp_width: int
    output_dim: int
    quick_gelu: bool

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor]) -> CLIPVisionConfig:
        try:
            patch = sd[f"{PREFIX}embeddings.patch_embedding.weight"]
            positions = sd[f"{PREFIX}embeddings.position_embedding.weight"].shape[0]
            mlp = sd[f"{PREFIX}encoder.layers.0.mlp.fc1.weight"].shape[0]
            output_dim = sd["visual_projection.weight"].shape[0]
        except KeyError as err:
            raise CheckpointError(f"not a CLIP vision file in the HF layout: missing {err}") from err
        layers = 0
        while f"{PREFIX}encoder.layers.{layers}.layer_norm1.weight" in sd:
            layers += 1
        width, patch_size = patch.shape[0], patch.shape[-1]
        grid = round((positions - 1) ** 0.5)
        # OpenAI's ViT-L/14 (24 layers) uses quick-GELU, LAION's ViT-H (32) and ViT-bigG (48) GELU; all three
        # have 16 heads (the HF configs of the files ComfyUI lists). Smaller towers use 64-channel heads.
        big = layers >= 32
        heads = 16 if layers >= 24 else max(1, width // 64)
        return cls(width=width, layers=layers, heads=heads, patch_size=patch_size, image_size=grid * patch_size,
                   mlp_width=mlp, output_dim=output_dim, quick_gelu=not big)


_LAYER_MAP = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
              "self_attn.out_proj": "attn.out_proj"}


def hf_to_open_clip(sd: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """HF `CLIPVisionModelWithProjection` tensors → open_clip `VisionTransformer` keys (q/k/v fused)."""
    p = PREFIX
    out = {
        "class_embedding": sd[f"{p}embeddings.class_embedding"],
        "positional_embedding": sd[f"{p}embeddings.position_embedding.weight"],
        "conv1.weight": sd[f"{p}embeddings.patch_embedding.weight"],
        "ln_pre.weight": sd[f"{p}pre_layrnorm.weight"], "ln_pre.bias": sd[f"{p}pre_layrnorm.bias"],
        "ln_post.weight": sd[f"{p}post_layernorm.weight"], "ln_post.bias": sd[f"{p}post_layernorm.bias"],
        "proj": sd["visual_projection.weight"].t().contiguous(),
    }
    for i in range(layers):
        src, dst = f"{p}encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[f"{dst}attn.in_proj_{kind}"] = torch.cat(
                [sd[f"{src}self_attn.{q}_proj.{kind}"] for q in ("q", "k", "v")])
            for hf, oc in _LAYER_MAP.items():
                out[f"{dst}{oc}.{kind}"] = sd[f"{src}{hf}.{kind}"]
    return out


@dataclass
class ClipVisionOutput:
    """CLIP_VISION_OUTPUT: what CLIPVisionEncode gives (ComfyUI's attribute names, indexable by name)."""

    last_hidden_state: torch.Tensor
    image_embeds: torch.Tensor
    penultimate_hidden_states: torch.Tensor
    image_sizes: list | None = None

    def __getitem__(self, key: str) -> torch.Tensor:
        return getattr(self, key)

    def get(self, key: str, default: object = None) -> object:
        return getattr(self, key, default)


class ClipVisionModel(nn.Module):
    """An open_clip `VisionTransformer` (as `visual`) with CLIP's preprocessing settings."""

    def __init__(self, config: CLIPVisionConfig) -> None:
        super().__init__()
        from open_clip.transformer import QuickGELU, VisionTransformer

        self.config = config
        self.visual = VisionTransformer(
            image_size=config.image_size, patch_size=config.patch_size, width=config.width, layers=config.layers,
            heads=config.heads, mlp_ratio=config.mlp_width / config.width, output_dim=config.output_dim,
            act_layer=QuickGELU if config.quick_gelu else nn.GELU)

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype

    def forward(self, pixels: torch.Tensor) -> ClipVisionOutput:
        """Normalised B×3×S×S pixels → hidden states and projected image embeddings."""
        v = self.visual
        x = v.conv1(pixels.to(self.dtype)).flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        x = v.ln_pre(x)
        batch_first = getattr(v.transformer, "batch_first", True)
        x = x if batch_first else x.transpose(0, 1)
        penultimate = x
        for i, block in enumerate(v.transformer.resblocks):
            x = block(x)
            if i == len(v.transformer.resblocks) - 2:
                penultimate = x
        if not batch_first:
            x, penultimate = x.transpose(0, 1), penultimate.transpose(0, 1)
        pooled = v.ln_post(x[:, 0])
        return ClipVisionOutput(last_hidden_state=x, image_embeds=pooled @ v.proj,
                                penultimate_hidden_states=penultimate)

    def encode_image(self, image: torch.Tensor, crop: bool = True) -> ClipVisionOutput:
        """IMAGE (B×H×W×C) → outputs, preprocessed at the tower's size on the weights' device."""
        pixels = clip_preprocess(image.to(self.visual.conv1.weight.device), self.config.image_size, crop)
        with torch.no_grad():
            out = self(pixels)
        return ClipVisionOutput(*(t.float() for t in (out.last_hidden_state, out.image_embeds,
                                                       out.penultimate_hidden_states)))


def load_clip_vision(sd: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32) -> ClipVisionModel:
    """A `ClipVisionModel` from HF-layout tensors (a leading `clip_vision_model.`/`model.` is stripped)."""
    for prefix in ("clip_vision_model.", "model."):
        if any(k.startswith(prefix + PREFIX) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    config = CLIPVisionConfig.from_state_dict(sd)
    weights = hf_to_open_clip(sd, config.layers)
    with torch.device("meta"):
        model = ClipVisionModel(config)
    visual = model.visual
    expected = set(visual.state_dict())
    missing = sorted(expected - set(weights))
    if missing:
        raise CheckpointError(f"CLIP vision weights lack {len(missing)} tensors, e.g. {missing[:4]}")
    visual.load_state_dict({k: v.to(dtype) for k, v in weights.items() if k in expected}, strict=True, assign=True)
    return model.eval().requires_grad_(False)
