"""Stable unCLIP (SD 2.1 unCLIP, Ramesh et al. 2022 "Hierarchical Text-Conditional Image Generation with CLIP
Latents" applied to SD): a UNet with a class-embedding input (`label_emb`, "adm") fed by noise-augmented CLIP image
embeddings.

Owns `UnCLIPModel` (a `DiffusionModel` whose `extra_conds` supply `y`) and `split_unclip_checkpoint` (the image
tower under `embedder.model.visual.` and the augmentor's buffers). The noise augmentation itself (`NoiseAugmentor`,
`unclip_adm`, shared with SDXL Revision) lives in `diffusion/adapters/noise_augment.py` and is re-exported here.
"""
from __future__ import annotations


import torch

from diffusion.networks.clip_vision import CLIPVisionConfig, ClipVisionModel
from diffusion.networks.diffusion_model import DiffusionModel
from diffusion.adapters.noise_augment import (MERGE_NOISE_AUGMENT, NoiseAugmentor, cosine_alphas_cumprod,  # noqa: F401
                                     unclip_adm)

EMBEDDER_PREFIX = "embedder.model.visual."
AUGMENTOR_PREFIX = "noise_augmentor."


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
    from diffusion.files.checkpoint import CheckpointError

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
