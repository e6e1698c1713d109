"""The SD3.5 ControlNet network (diffusion/controlnet_mmdit.py) against diffusers' SD3ControlNetModel in its SD3.5
form (single x-only blocks, no context, no own positional table), the weights converted from Stability's layout
with the key correspondence of diffusers' own conversion script: same residuals for the same embedded tokens."""
from __future__ import annotations

import pytest
import torch

from diffusion.controlnet_mmdit import build_sd35_controlnet, sincos_grid
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
