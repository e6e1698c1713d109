"""Noise augmentation of CLIP image embeddings, as unCLIP models and SDXL Revision take them.

Owns `NoiseAugmentor` (the `noise_augmentor` of unCLIP checkpoints: embeddings normalised by the CLIP statistics,
noised on the cosine schedule of Nichol & Dhariwal 2021 to a level set by `noise_augmentation`, and the level's
sinusoidal embedding appended) and `unclip_adm` (several image conditionings weighted by strength, summed and
re-noised at the merge level, as ComfyUI's `unclip_adm`). Imports no model classes, so the family modules can use it.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from diffusion.networks.unet_blocks import timestep_embedding

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
