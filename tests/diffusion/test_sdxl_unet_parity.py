"""The SDXL UNet against diffusers' UNet2DConditionModel (SDXL layout: text-time addition embedding, per-level
transformer depths, linear projections) on a tiny config holding the same weights, moved across with Loom's
diffusers ↔ LDM key correspondence (diffusion/adapters/lora_formats.py) — so the network and the LoRA key map are checked
together. The ADM vector Loom builds (pooled ‖ size embeddings) must equal what diffusers computes from
`text_embeds` and `time_ids`."""
from __future__ import annotations

import pytest
import torch

from diffusion.families.sdxl import size_embeddings
from diffusion.adapters.lora_formats import _ldm_to_diffusers, diffusers_to_ldm_prefixes
from diffusion.networks.unet import build_unet
from tests.fixtures.tiny_sdxl import G_WIDTH, XL_ADM, XL_CONTEXT, tiny_sdxl_state_dict, tiny_sdxl_unet_config

diffusers = pytest.importorskip("diffusers")


def _diffusers_unet() -> torch.nn.Module:
    return diffusers.UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 1, 2), attention_head_dim=(1, 1, 1), cross_attention_dim=XL_CONTEXT,
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=XL_ADM, norm_num_groups=32,
    ).eval()


def test_tiny_sdxl_unet_matches_diffusers() -> None:
    config = tiny_sdxl_unet_config()
    ldm = {k.removeprefix("model.diffusion_model."): v.float() for k, v in tiny_sdxl_state_dict().items()
           if k.startswith("model.diffusion_model.")}
    ours = build_unet(config, ldm)
    inverse = {v: k for k, v in diffusers_to_ldm_prefixes(config).items()}
    theirs = _diffusers_unet()
    moved = {}
    for key, value in ldm.items():
        module, leaf = key.rsplit(".", 1)
        name = _ldm_to_diffusers(module, inverse)
        assert name is not None, key
        moved[f"{name}.{leaf}"] = value
    missing, unexpected = theirs.load_state_dict(moved, strict=False)
    assert not missing and not unexpected, (missing[:5], unexpected[:5])

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 16, 16, generator=gen)
    context = torch.randn(2, 77, XL_CONTEXT, generator=gen)
    pooled = torch.randn(2, G_WIDTH, generator=gen)
    time_ids = torch.tensor([[1024.0, 768.0, 0.0, 16.0, 1024.0, 768.0], [512.0, 512.0, 8.0, 0.0, 512.0, 512.0]])
    y = torch.cat([pooled, torch.cat([size_embeddings(row.tolist()) for row in time_ids])], dim=1)
    t = torch.tensor([999.0, 421.0])
    with torch.no_grad():
        expected = theirs(x, t, encoder_hidden_states=context,
                          added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample
        got = ours(x, t, context, y=y)
    assert (got - expected).abs().max().item() < 1e-4
