"""SD3 ControlNet networks against diffusers' SD3ControlNetModel: Stability's SD3.5 format
(diffusion/adapters/controlnet_mmdit.py) against its SD3.5 form (single x-only blocks, no context, no own positional table),
the weights converted from Stability's layout with the key correspondence of diffusers' own conversion script, same
residuals for the same embedded tokens; the diffusers layout (diffusion/adapters/controlnet_sd3_diffusers.py) against the
model whose state dict it is."""
from __future__ import annotations

import pytest
import torch

from diffusion.adapters.controlnet_mmdit import build_sd35_controlnet, sincos_grid
from diffusion.adapters.controlnet_sd3_diffusers import build_diffusers_sd3_controlnet
from tests.fixtures.tiny_sd3_controlnet import tiny_sd35_controlnet_state_dict

pytest.importorskip("diffusers")
from diffusers import SD3ControlNetModel  # noqa: E402

POOLED = 96


def to_diffusers(sd: dict[str, torch.Tensor], blocks: int) -> dict[str, torch.Tensor]:
    """Stability's SD3.5 ControlNet keys → diffusers' (q/k/v split, SD3 block names renamed)."""
    out = {k: v for k, v in sd.items() if k.startswith(("controlnet_blocks.", "pos_embed_input.", "time_text_embed."))}
    for i in range(blocks):
        b = f"transformer_blocks.{i}."
        for part in ("weight", "bias"):
            q, k, v = sd[f"{b}attn.qkv.{part}"].chunk(3, dim=0)
            out.update({f"{b}attn.to_q.{part}": q, f"{b}attn.to_k.{part}": k, f"{b}attn.to_v.{part}": v,
                        f"{b}attn.to_out.0.{part}": sd[f"{b}attn.proj.{part}"],
                        f"{b}ff.net.0.proj.{part}": sd[f"{b}mlp.fc1.{part}"],
                        f"{b}ff.net.2.{part}": sd[f"{b}mlp.fc2.{part}"],
                        f"{b}norm1.linear.{part}": sd[f"{b}adaLN_modulation.1.{part}"]})
    return {k: v.float() for k, v in out.items()}


def test_matches_diffusers_sd35_controlnet() -> None:
    sd = tiny_sd35_controlnet_state_dict(blocks=2, pooled=POOLED)
    net, kind = build_sd35_controlnet(dict(sd), torch.float32)
    assert kind == "depth"
    ref = SD3ControlNetModel(patch_size=2, in_channels=16, num_layers=2, attention_head_dim=64, num_attention_heads=1,
                             joint_attention_dim=None, caption_projection_dim=64, pooled_projection_dim=POOLED,
                             out_channels=16, pos_embed_max_size=None, pos_embed_type=None, use_pos_embed=False,
                             force_zeros_for_pooled_projection=False).eval()
    ref.load_state_dict(to_diffusers(sd, 2), strict=True)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        net.x_embedder.proj.weight.copy_(torch.randn(net.x_embedder.proj.weight.shape, generator=gen) * 0.2)
        net.x_embedder.proj.bias.copy_(torch.randn(64, generator=gen) * 0.1)
    x, hint = torch.randn(2, 16, 8, 12, generator=gen), torch.randn(2, 16, 8, 12, generator=gen)
    t, y = torch.tensor([900.0, 250.0]), torch.randn(2, POOLED, generator=gen)
    with torch.no_grad():
        ours = net(x, hint, t, y=y)["output"]
        tokens = net.x_embedder(x) + sincos_grid(64, 6, 4)  # what ComfyUI feeds its blocks
        theirs = ref(hidden_states=tokens, controlnet_cond=hint, pooled_projections=y, timestep=t,
                     return_dict=False)[0]
    assert len(ours) == 2 and len(theirs) == 2  # ⌈depth 1 / 2 blocks⌉ = one residual per block
    for a, b in zip(ours, theirs):
        assert (a - b).abs().max() <= 1e-4 * max(1.0, b.abs().max().item())
    assert theirs[1].abs().max() > 1e-2


def test_diffusers_layout_matches_diffusers_sd3_controlnet() -> None:
    """An InstantX-style file is a diffusers SD3ControlNetModel's state dict: Loom's network of it gives diffusers'
    residuals (ComfyUI zeroes the pooled vector and repeats residual i width/64/blocks times, the last once less)."""
    torch.manual_seed(0)
    ref = SD3ControlNetModel(sample_size=32, patch_size=2, in_channels=16, num_layers=2, attention_head_dim=64,
                             num_attention_heads=4, joint_attention_dim=24, caption_projection_dim=256,
                             pooled_projection_dim=32, out_channels=16, pos_embed_max_size=16,
                             qk_norm="rms_norm").eval()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            norm = 1.0 if "norm" in name and p.ndim == 1 else 0.0
            p.copy_(torch.randn_like(p) * (0.05 if p.ndim > 1 else 0.02) + norm)
    sd = {k: v.clone() for k, v in ref.state_dict().items()}
    net = build_diffusers_sd3_controlnet(sd, torch.float32)
    gen = torch.Generator().manual_seed(1)
    x, hint = torch.randn(1, 16, 8, 12, generator=gen), torch.randn(1, 16, 8, 12, generator=gen)
    t, ctx = torch.tensor([700.0]), torch.randn(1, 5, 24, generator=gen)
    with torch.no_grad():
        ours = net(x, hint, t, ctx)["output"]
        theirs = ref(hidden_states=x, controlnet_cond=hint, encoder_hidden_states=ctx, timestep=t,
                     pooled_projections=torch.zeros(1, 32), return_dict=False)[0]
    assert len(ours) == 3 and ours[0] is ours[1]  # width 256 → depth 4; 2 blocks: residual 0 twice, 1 once
    for a, b in ((ours[0], theirs[0]), (ours[2], theirs[1])):
        assert (a - b).abs().max() <= 1e-4 * max(1.0, b.abs().max().item())
    assert theirs[1].abs().max() > 1e-3
