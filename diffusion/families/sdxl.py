"""SDXL base and the models built on it (fine-tunes, Turbo/Lightning, SSD-1B/Vega distillations, inpainting).

Text: CLIP ViT-L (`conditioner.embedders.0.transformer.text_model.*`) and OpenCLIP ViT-bigG
(`conditioner.embedders.1.model.*`), penultimate layers concatenated to a 2048-dim context; the pooled bigG output
through its projection feeds the 2816-wide ADM vector with the size embeddings. Three levels, no attention on the
first, 64-channel heads, linear projections. Latent scale 0.13025. ComfyUI recognises it by context 2048 + ADM
2816; distillations differ only in their per-block transformer depths, inpainting UNets in their 9 input channels.
Tiny test models (other widths) are recognised by the text towers beside them, or, UNet-only, by the SDXL layout
(ADM embedding, no attention at the first level).
"""
from __future__ import annotations

import torch

from diffusion.families.base import Evidence, ModelFamily, SamplingSpec
from diffusion.families.registry import register
from diffusion.families.shapes import UNetShapes, config_from_shapes
from diffusion.files.latent_formats import SDXL as SDXL_LATENT
from diffusion.adapters.noise_augment import NoiseAugmentor, unclip_adm
from diffusion.networks.unet import UNetConfig
from diffusion.networks.unet_blocks import timestep_embedding

ADM_CHANNELS = 2816  # pooled bigG (1280) + 6 size embeddings of 256
SIZE_EMBEDDING = 256


def size_embeddings(values: list[float]) -> torch.Tensor:
    """1×(256·n): each value's sinusoidal embedding [cos(v·f_i) ..., sin(v·f_i) ...], f_i = 10000^(−i/128)."""
    emb = timestep_embedding(torch.tensor(values, dtype=torch.float32), SIZE_EMBEDDING)
    return emb.reshape(1, -1)


def pooled_of(cond: dict, width: int, seed: int | None = None) -> torch.Tensor:
    """The cond's pooled vector: with unCLIPConditioning entries (Revision: CLIP-vision image embeddings of the
    pooled width, e.g. ViT-bigG's 1280) their noise-augmented, strength-weighted embedding — the first `width`
    values of the unCLIP class input, augmented with the sampling seed − 10 as ComfyUI's `sdxl_pooled` does —
    else the pooled text vector (zeros when the cond has none, as after ConditioningZeroOut without pooled)."""
    entries = cond.get("unclip_conditioning")
    if entries:
        for entry in entries:
            dim = entry["clip_vision_output"].image_embeds.shape[-1]
            if dim != width:
                raise ValueError(f"unCLIPConditioning: the CLIP vision embedding is {dim} wide but this model's "
                                 f"pooled input is {width} wide: use the CLIP vision model that matches it "
                                 f"(ViT-bigG, 1280, for SDXL Revision)")
        return unclip_adm(entries, NoiseAugmentor(width), (0 if seed is None else seed) - 10)[:, :width]
    pooled = cond.get("pooled_output")
    return torch.zeros(1, width) if pooled is None else pooled.float().cpu()


def encode_adm(cond: dict, height: int, width: int, prompt_type: str, adm_channels: int,
               seed: int | None = None) -> torch.Tensor:
    """SDXL's `y`: pooled ‖ embeddings of height, width, crop_h, crop_w, target_height, target_width. Sizes the
    cond does not carry (plain CLIPTextEncode) are the latent's size in pixels, crops 0, target = size —
    ComfyUI's defaults."""
    h, w = cond.get("height", height), cond.get("width", width)
    values = [h, w, cond.get("crop_h", 0), cond.get("crop_w", 0), cond.get("target_height", h),
              cond.get("target_width", w)]
    pooled = pooled_of(cond, adm_channels - 6 * SIZE_EMBEDDING, seed)
    return torch.cat([pooled, size_embeddings(values).repeat(pooled.shape[0], 1)], dim=1)


def is_sdxl_layout(shapes: UNetShapes) -> bool:
    """An ADM embedding and no transformer at the first level (SD2 unCLIP has attention everywhere)."""
    return shapes.adm_in_channels is not None and not shapes.attention_levels[0]


def matches(evidence: Evidence) -> bool:
    s = evidence.shapes
    if s.context_dim == 2048 and s.adm_in_channels == ADM_CHANNELS:
        return True
    if evidence.text_encoder is not None:
        return evidence.text_encoder == "sdxl"
    return is_sdxl_layout(s) and s.context_dim not in (768, 1024, 1280, 2048)


def sampling_from_keys(markers: dict[str, torch.Tensor]) -> SamplingSpec | None:
    """ComfyUI's markers in SDXL files: `edm_mean`+`edm_std` (Playground v2.5: EDM, σ_data 0.5, σ 0.002…80, its
    latent format), `edm_vpred.sigma_max`/`sigma_min` (CosXL: EDM-scheduled v-prediction), `v_pred` (+ `ztsnr`:
    zero terminal SNR) for v-prediction fine-tunes."""
    if "edm_mean" in markers and "edm_std" in markers:
        return SamplingSpec("edm", "edm", sigma_min=0.002, sigma_max=80.0, sigma_data=0.5, latent="playground_v2.5")
    if "edm_vpred.sigma_max" in markers:
        low = markers.get("edm_vpred.sigma_min")
        return SamplingSpec("edm", "v_prediction", sigma_max=float(markers["edm_vpred.sigma_max"].item()),
                            sigma_min=float(low.item()) if low is not None else 0.002)
    if "v_pred" in markers:
        return SamplingSpec("discrete", "v_prediction", zsnr="ztsnr" in markers)
    return None


def unet_config(shapes: UNetShapes) -> UNetConfig:
    """SDXL's heads rule: 64 channels per head (narrower tiny models get one head)."""
    return config_from_shapes(shapes, num_heads=-1, num_head_channels=64)


SDXL = register(ModelFamily(
    name="sdxl", description="SDXL", priority=30, matches=matches, unet_config=unet_config,
    text_encoders=("clip_l", "clip_g"), latent_format=SDXL_LATENT, clip_type="sdxl", memory_usage_factor=0.8,
    adm_channels=ADM_CHANNELS, encode_adm=encode_adm, sampling_from_keys=sampling_from_keys,
))
