"""Stable unCLIP (SD 2.1 unCLIP, Ramesh et al. 2022 "Hierarchical Text-Conditional Image Generation with CLIP
Latents" applied to SD): a UNet with a class-embedding input (`label_emb`, "adm") fed by noise-augmented CLIP image
embeddings.

Owns `NoiseAugmentor` (the `noise_augmentor` of unCLIP checkpoints: embeddings normalised by the CLIP statistics,
noised on the cosine schedule of Nichol & Dhariwal 2021 to a level set by `noise_augmentation`, and the level's
sinusoidal embedding appended), `unclip_adm` (several image conditionings weighted by strength, summed and re-noised
at the merge level, as ComfyUI's `unclip_adm`), `UnCLIPModel` (a `DiffusionModel` whose `extra_conds` supply `y`)
and `split_unclip_checkpoint` (the image tower under `embedder.model.visual.` and the augmentor's buffers).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from diffusion.clip_vision import CLIPVisionConfig, ClipVisionModel
from diffusion.diffusion_model import DiffusionModel
from diffusion.unet_blocks import timestep_embedding

EMBEDDER_PREFIX = "embedder.model.visual."
AUGMENTOR_PREFIX = "noise_augmentor."
MERGE_NOISE_AUGMENT = 0.05  # ComfyUI's default unclip_noise_augment_merge


def cosine_alphas_cumprod(steps: int = 1000, s: float = 0.008) -> torch.Tensor:
    """ᾱ_t of the "squaredcos_cap_v2" schedule (Nichol & Dhariwal 2021, eq. 17, betas capped at 0.999)."""
    def alpha_bar(t: float) -> float:
        return math.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    betas = torch.tensor([min(1 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), 0.999) for i in range(steps)],
                         dtype=torch.float64)
    return torch.cumprod(1.0 - betas, 0)


class NoiseAugmentor(nn.Module):
    """Noise-augments CLIP image embeddings: z = unscale(√ᾱ_t·scale(x) + √(1−ᾱ_t)·ε), and embeds the level t."""

    def __init__(self, dim: int, alphas_cumprod: torch.Tensor | None = None, data_mean: torch.Tensor | None = None,
                 data_std: torch.Tensor | None = None) -> None:
        super().__init__()
        ac = cosine_alphas_cumprod() if alphas_cumprod is None else alphas_cumprod.double()
        self.dim = dim
        self.max_noise_level = ac.shape[0]
        self.register_buffer("sqrt_ac", ac.sqrt().float())
        self.register_buffer("sqrt_one_minus_ac", (1.0 - ac).sqrt().float())
        self.register_buffer("data_mean", (data_mean if data_mean is not None else torch.zeros(dim)).reshape(1, -1))
        self.register_buffer("data_std", (data_std if data_std is not None else torch.ones(dim)).reshape(1, -1))

    def forward(self, x: torch.Tensor, noise_level: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.float()
        scaled = (x - self.data_mean) / self.data_std
        noise = torch.randn(scaled.shape, generator=generator)
        z = self.sqrt_ac[noise_level] * scaled + self.sqrt_one_minus_ac[noise_level] * noise
        level = torch.full((x.shape[0],), float(noise_level))
        return z * self.data_std + self.data_mean, timestep_embedding(level, self.dim)


def unclip_adm(entries: list[dict[str, Any]], augmentor: NoiseAugmentor, seed: int = -10,
               merge: float = MERGE_NOISE_AUGMENT) -> torch.Tensor:
    """The class input for unCLIP conditioning entries ({clip_vision_output, strength, noise_augmentation}): one
    row per image embedding, [noised embedding, level embedding]·strength; several are summed and re-noised."""
    generator = torch.Generator().manual_seed(seed % (2 ** 63))
    rows, count = [], 0
    for entry in entries:
        for embed in entry["clip_vision_output"].image_embeds:
            level = round((augmentor.max_noise_level - 1) * entry["noise_augmentation"])
            z, level_emb = augmentor(embed.reshape(1, -1).cpu(), level, generator)
            rows.append(torch.cat([z, level_emb], dim=1) * entry["strength"])
            count += 1
    out = rows[0]
    if count > 1:
        summed = torch.stack(rows).sum(0)
        level = round((augmentor.max_noise_level - 1) * merge)
        z, level_emb = augmentor(summed[:, :augmentor.dim], level, generator)
        out = torch.cat([z, level_emb], dim=1)
    return out


class UnCLIPModel(DiffusionModel):
    """A `DiffusionModel` (sharing the base's UNet and schedule) that turns `unclip_conditioning` into `y`;
    conds without it get zeros, as in ComfyUI."""

    def __init__(self, base: DiffusionModel, augmentor: NoiseAugmentor) -> None:
        super().__init__(base.diffusion_model, base.model_sampling, base.latent_format)
        self.noise_augmentor = augmentor

    def extra_conds(self, cond: dict, *, noise: torch.Tensor, latent_image: torch.Tensor | None = None,
                    denoise_mask: torch.Tensor | None = None, seed: int | None = None) -> dict[str, torch.Tensor]:
        """`y` from the cond's unCLIP entries, noise-augmented with the sampling seed − 10 (ComfyUI's
        SD21UNCLIP.encode_adm; a missing seed counts as 0)."""
        out = super().extra_conds(cond, noise=noise, latent_image=latent_image, denoise_mask=denoise_mask)
        adm_channels = self.diffusion_model.config.adm_in_channels
        entries = cond.get("unclip_conditioning")
        augment_seed = (0 if seed is None else seed) - 10
        y = unclip_adm(entries, self.noise_augmentor, augment_seed) if entries else torch.zeros(1, adm_channels)
        out["y"] = y.to(noise.device)
        return out


def split_unclip_checkpoint(sd: dict[str, torch.Tensor], dtype: torch.dtype) -> tuple[ClipVisionModel, NoiseAugmentor]:
    """The CLIP vision tower (open_clip layout under `embedder.model.visual.`) and the noise augmentor of an unCLIP
    checkpoint's tensors."""
    from diffusion.checkpoint import CheckpointError

    visual = {k[len(EMBEDDER_PREFIX):]: v for k, v in sd.items() if k.startswith(EMBEDDER_PREFIX)}
    if not visual:
        raise CheckpointError("not an unCLIP checkpoint: no image embedder (embedder.model.visual.*)")
    layers = 0
    while f"transformer.resblocks.{layers}.ln_1.weight" in visual:
        layers += 1
    width, patch = visual["conv1.weight"].shape[0], visual["conv1.weight"].shape[-1]
    grid = round((visual["positional_embedding"].shape[0] - 1) ** 0.5)
    config = CLIPVisionConfig(width=width, layers=layers, heads=16 if layers >= 24 else max(1, width // 64),
                              patch_size=patch, image_size=grid * patch,
                              mlp_width=visual["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
                              output_dim=visual["proj"].shape[1], quick_gelu=layers < 32)
    with torch.device("meta"):
        tower = ClipVisionModel(config)
    tower.visual.load_state_dict({k: v.to(dtype) for k, v in visual.items()}, strict=True, assign=True)
    aug = {k[len(AUGMENTOR_PREFIX):]: v for k, v in sd.items() if k.startswith(AUGMENTOR_PREFIX)}
    augmentor = NoiseAugmentor(config.output_dim, aug.get("alphas_cumprod"), aug.get("data_mean"),
                               aug.get("data_std"))
    return tower.eval().requires_grad_(False), augmentor
