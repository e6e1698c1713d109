"""MMDiT / MMDiT-X parity with diffusers' SD3Transformer2DModel on tiny random configs, the weights converted from
the checkpoint layout by diffusers' own single-file conversion; config read off shapes; the sin-cos table."""
from __future__ import annotations

import pytest
import torch

from diffusion.networks.mmdit import MMDiT, MMDiTConfig, mmdit_config_from_state_dict, sincos_pos_embed_2d

diffusers = pytest.importorskip("diffusers")
from diffusers import SD3Transformer2DModel  # noqa: E402
from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers  # noqa: E402
from diffusers.models.embeddings import get_2d_sincos_pos_embed  # noqa: E402


def random_mmdit(config: MMDiTConfig, seed: int = 0) -> MMDiT:
    torch.manual_seed(seed)
    net = MMDiT(config)
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(torch.randn_like(p) * (0.3 if p.ndim > 1 else 0.1) + (1.0 if "ln_" in name else 0.0))
    return net.eval()


def diffusers_twin(net: MMDiT) -> SD3Transformer2DModel:
    c = net.config
    ref = SD3Transformer2DModel(
        sample_size=128, patch_size=c.patch_size, in_channels=c.in_channels, num_layers=c.depth,
        attention_head_dim=c.hidden_size // c.heads, num_attention_heads=c.heads, joint_attention_dim=c.context_dim,
        caption_projection_dim=c.hidden_size, pooled_projection_dim=c.adm_in_channels, out_channels=c.out_channels,
        pos_embed_max_size=c.pos_embed_max_size, dual_attention_layers=c.dual_attention_layers,
        qk_norm="rms_norm" if c.qk_norm else None,
    )
    sd = {f"model.diffusion_model.{k}": v.clone() for k, v in net.state_dict().items()}
    ref.load_state_dict(convert_sd3_transformer_checkpoint_to_diffusers(sd), strict=True)
    return ref.eval()


CONFIGS = {
    "sd35_medium_like": MMDiTConfig(depth=3, hidden_size=64, heads=2, pos_embed_max_size=16, adm_in_channels=48,
                                    context_dim=40, qk_norm=True, dual_attention_layers=(0, 1)),
    "sd35_large_like": MMDiTConfig(depth=2, hidden_size=64, heads=4, pos_embed_max_size=12, adm_in_channels=32,
                                   context_dim=24, qk_norm=True),
    "sd3_medium_like": MMDiTConfig(depth=2, hidden_size=64, heads=2, pos_embed_max_size=12, adm_in_channels=32,
                                   context_dim=24, qk_norm=False),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_matches_diffusers(name: str) -> None:
    net = random_mmdit(CONFIGS[name])
    ref = diffusers_twin(net)
    torch.manual_seed(1)
    x = torch.randn(2, 16, 12, 10)
    t = torch.tensor([1000.0, 437.5])
    ctx = torch.randn(2, 7, net.config.context_dim)
    y = torch.randn(2, net.config.adm_in_channels)
    with torch.no_grad():
        ours = net(x, t, context=ctx, y=y)
        theirs = ref(hidden_states=x, encoder_hidden_states=ctx, pooled_projections=y, timestep=t).sample
    assert ours.shape == x.shape
    assert (ours - theirs).abs().max().item() <= 1e-4 * max(1.0, theirs.abs().max().item())


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_read_off_shapes(name: str) -> None:
    config = CONFIGS[name]
    assert mmdit_config_from_state_dict(MMDiT(config).state_dict()) == config


def test_pos_embed_table_is_diffusers_sincos() -> None:
    ours = sincos_pos_embed_2d(64, 16, 8)
    theirs = get_2d_sincos_pos_embed(64, 16, base_size=8, interpolation_scale=1.0, output_type="pt")
    assert torch.allclose(ours[0], theirs.float(), atol=1e-6)


def test_skip_layers_changes_output_and_oversize_latent_is_refused() -> None:
    net = random_mmdit(CONFIGS["sd35_large_like"])
    x, t = torch.randn(1, 16, 8, 8), torch.tensor([500.0])
    ctx, y = torch.randn(1, 3, 24), torch.randn(1, 32)
    with torch.no_grad():
        full = net(x, t, context=ctx, y=y)
        skipped = net(x, t, context=ctx, y=y, transformer_options={"skip_layers": [0]})
    assert (full - skipped).abs().max() > 1e-3
    with pytest.raises(ValueError, match="positional table"):
        net(torch.randn(1, 16, 26, 26), t, context=ctx, y=y)
