"""The LDM UNet and attention (diffusion/networks/unet.py, unet_blocks.py, attention.py): parameter counts, parity with
diffusers' UNet2DConditionModel on the same weights (converted by diffusers' own single-file functions), ControlNet
residuals, patches, and the two attention kernels."""
from __future__ import annotations

import pytest
import torch

from diffusion.networks.attention import attention
from diffusion.files.checkpoint import split_components
from diffusion.networks.unet import UNetConfig, UNetModel, build_unet, count_parameters
from diffusion.networks.unet_blocks import timestep_embedding
from diffusion.networks.vae import AutoencoderKL, VAEConfig
from tests.fixtures.diffusers_oracle import diffusers_unet
from tests.fixtures.tiny_checkpoints import tiny_checkpoint_state_dict, tiny_unet_config

pytest.importorskip("diffusers")


def test_full_size_parameter_counts() -> None:
    with torch.device("meta"):
        assert count_parameters(UNetModel(UNetConfig.sd1())) == 859_520_964
        assert count_parameters(UNetModel(UNetConfig.sd2())) == 865_910_724
        assert count_parameters(AutoencoderKL(VAEConfig.sd())) == 83_653_863
        assert count_parameters(UNetModel(UNetConfig.sd1(in_channels=9))) == 859_520_964 + 5 * 320 * 9


def test_heads_rules() -> None:
    assert UNetConfig.sd1().heads(640) == (8, 80)
    assert UNetConfig.sd2().heads(640) == (10, 64)


def test_timestep_embedding_matches_diffusers() -> None:
    from diffusers.models.embeddings import get_timestep_embedding

    t = torch.tensor([0.0, 1.0, 250.5, 999.0])
    ours = timestep_embedding(t, 320)
    ref = get_timestep_embedding(t, 320, flip_sin_to_cos=True, downscale_freq_shift=0)
    assert torch.allclose(ours, ref, atol=1e-6)


@pytest.fixture(scope="module", params=["sd15", "sd21", "sd15_inpaint"])
def pair(request: pytest.FixtureRequest) -> tuple[UNetModel, torch.nn.Module, UNetConfig]:
    """Loom's UNet and diffusers' oracle holding the same tiny fp32 weights."""
    family = request.param
    sd = tiny_checkpoint_state_dict(family, torch.float32, seed=3)
    config = tiny_unet_config(family)
    ours = build_unet(config, split_components(sd).unet)
    return ours, diffusers_unet(sd, config, VAEConfig.tiny()), config


def _inputs(config: UNetConfig, size: int = 16, batch: int = 2) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, config.in_channels, size, size, generator=g)
    t = torch.tensor([999.0, 17.0])[:batch]
    context = torch.randn(batch, 77, config.context_dim, generator=g)
    return x, t, context


def test_parity_with_diffusers(pair: tuple) -> None:
    ours, ref, config = pair
    x, t, context = _inputs(config)
    with torch.no_grad():
        a = ours(x, t, context)
        b = ref(x, t, encoder_hidden_states=context).sample
    assert a.shape == (2, 4, 16, 16)
    assert (a - b).abs().max().item() <= 1e-4
    assert b.abs().mean() > 0.1  # the comparison is not between two near-zero outputs


def test_odd_latent_size_matches_diffusers(pair: tuple) -> None:
    ours, ref, config = pair
    x, t, context = _inputs(config, size=12, batch=1)
    x = x[..., :10]  # 12×10: the up-sampling must follow the skip tensors' sizes
    with torch.no_grad():
        a = ours(x, t, context)
        b = ref(x, t, encoder_hidden_states=context).sample
    assert a.shape == x[:, :4].shape and (a - b).abs().max().item() <= 1e-4


def test_controlnet_residuals_match_diffusers(pair: tuple) -> None:
    ours, ref, config = pair
    x, t, context = _inputs(config)
    with torch.no_grad():
        skips = []
        h = x
        for block in ours.input_blocks:  # shapes of the skip tensors, in input-block order
            h = block(h, ours.time_embed(timestep_embedding(t, config.model_channels)), context, {})
            skips.append(h)
        g = torch.Generator().manual_seed(5)
        residuals = [0.1 * torch.randn(s.shape, generator=g) for s in skips]
        middle = 0.1 * torch.randn(skips[-1].shape, generator=g)
        a = ours(x, t, context, control={"output": list(residuals), "middle": [middle]})
        b = ref(
            x, t, encoder_hidden_states=context,
            down_block_additional_residuals=tuple(residuals), mid_block_additional_residual=middle,
        ).sample
        plain = ours(x, t, context)
    assert (a - b).abs().max().item() <= 1e-4
    assert (a - plain).abs().max().item() > 1e-3


def test_control_dict_is_not_consumed_and_none_entries_skip(pair: tuple) -> None:
    ours, _, config = pair
    x, t, context = _inputs(config)
    control = {"output": [None] * len(ours.input_blocks), "middle": [None], "input": []}
    with torch.no_grad():
        assert torch.equal(ours(x, t, context, control=control), ours(x, t, context))
    assert len(control["output"]) == len(ours.input_blocks)


def test_sliced_attention_mode_and_patches(pair: tuple) -> None:
    ours, _, config = pair
    x, t, context = _inputs(config)
    seen: list[tuple] = []

    def attn2_patch(n: torch.Tensor, ctx: torch.Tensor, value: torch.Tensor, options: dict) -> tuple:
        seen.append(options["block"])
        return n, ctx, value

    def output_block_patch(h: torch.Tensor, skip: torch.Tensor, options: dict) -> tuple:
        return h, skip * 0.5  # FreeU-style skip scaling

    with torch.no_grad():
        base = ours(x, t, context)
        sliced = ours(x, t, context, transformer_options={"attention_mode": "sliced"})
        patched = ours(x, t, context, transformer_options={"patches": {"attn2_patch": [attn2_patch]}})
        scaled = ours(x, t, context, transformer_options={"patches": {"output_block_patch": [output_block_patch]}})
    assert (base - sliced).abs().max().item() <= 1e-5
    assert torch.equal(base, patched)
    assert ("input", 1) in seen and ("middle", 0) in seen and any(b[0] == "output" for b in seen)
    assert (base - scaled).abs().max().item() > 1e-3


def test_bf16_forward_is_close_to_fp32() -> None:
    sd = split_components(tiny_checkpoint_state_dict("sd15", torch.float32)).unet
    config = tiny_unet_config("sd15")
    x, t, context = _inputs(config, batch=1)
    with torch.no_grad():
        ref = build_unet(config, sd)(x, t, context)
        out = build_unet(config, sd, dtype=torch.bfloat16)(x, t, context)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert (out - ref).abs().max().item() < 0.1 * ref.abs().max().item()


def test_first_level_wider_than_model_channels() -> None:
    # LDM allows channel_mult[0] != 1: conv_in gives model_channels, the first level widens, and the output
    # blocks end (and `out` normalises) at the first level's width
    config = UNetConfig(model_channels=32, channel_mult=(2, 4), num_res_blocks=1, attention_resolutions=(2,),
                        context_dim=16, num_heads=2)
    net = UNetModel(config)
    assert net.out[0].num_channels == 64 and net.out[2].in_channels == 64
    with torch.no_grad():
        out = net(torch.randn(2, 4, 16, 16), torch.tensor([1.0, 900.0]), torch.randn(2, 5, 16))
    assert out.shape == (2, 4, 16, 16) and torch.isfinite(out).all()


@pytest.mark.parametrize("shape_kv", [(2, 50, 64), (1, 7, 64)])
@pytest.mark.parametrize("heads", [1, 4])
def test_attention_kernels_agree(shape_kv: tuple[int, int, int], heads: int) -> None:
    g = torch.Generator().manual_seed(0)
    b, m, c = shape_kv
    q = torch.randn(b, 33, c, generator=g)
    k, v = torch.randn(b, m, c, generator=g), torch.randn(b, m, c, generator=g)
    full = attention(q, k, v, heads, mode="sdpa")
    sliced = attention(q, k, v, heads, mode="sliced", slice_size=5)
    assert full.shape == (b, 33, c) and (full - sliced).abs().max().item() < 1e-5
    # the reference formula, softmax(QKᵀ/√d)·V per head
    d = c // heads
    qh, kh, vh = (z.view(b, -1, heads, d).transpose(1, 2) for z in (q, k, v))
    naive = ((qh @ kh.transpose(-1, -2)) / d ** 0.5).softmax(-1) @ vh
    assert (full - naive.transpose(1, 2).reshape(b, 33, c)).abs().max().item() < 1e-5


def test_attention_masks() -> None:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 9, 16, generator=g) for _ in range(3))
    allowed = torch.rand(9, 9, generator=g) > 0.3
    allowed[:, 0] = True
    outs = [attention(q, k, v, 2, mask=allowed, mode=mode, slice_size=4) for mode in ("sdpa", "sliced")]
    assert (outs[0] - outs[1]).abs().max().item() < 1e-5
    # masking out the last key equals dropping it
    keep = torch.ones(9, dtype=torch.bool)
    keep[-1] = False
    dropped = attention(q, k[:, :-1], v[:, :-1], 2)
    for mode in ("sdpa", "sliced"):
        assert (attention(q, k, v, 2, mask=keep, mode=mode) - dropped).abs().max().item() < 1e-5
    with pytest.raises(ValueError, match="mode"):
        attention(q, k, v, 2, mode="flash9")
