"""The VAE (diffusion/networks/vae.py, tiling.py): parity with diffusers' AutoencoderKL on the same weights, the two
attention weight layouts, the VAE socket semantics (IMAGE ⇄ LATENT), tiled decode/encode and memory estimates."""
from __future__ import annotations

import pytest
import torch

from diffusion.files.checkpoint import split_components
from diffusion.networks.tiling import tiled_apply, tiled_average
from diffusion.networks.vae import VAE, AutoencoderKL, VAEConfig, build_vae
from tests.fixtures.diffusers_oracle import diffusers_vae
from tests.fixtures.tiny_checkpoints import tiny_checkpoint_state_dict, tiny_vae_state_dict

pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def pair() -> tuple[AutoencoderKL, torch.nn.Module]:
    sd = tiny_checkpoint_state_dict("sd15", torch.float32, seed=2)
    return build_vae(VAEConfig.tiny(), split_components(sd).vae), diffusers_vae(sd, VAEConfig.tiny())


def test_parity_with_diffusers(pair: tuple) -> None:
    ours, ref = pair
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 4, 8, 6, generator=g)
    image = torch.rand(2, 3, 48, 40, generator=g) * 2 - 1
    with torch.no_grad():
        decoded, ref_decoded = ours.decode(z), ref.decode(z).sample
        mean, ref_mean = ours.encode(image), ref.encode(image).latent_dist.mean
    assert decoded.shape == (2, 3, 64, 48) and mean.shape == (2, 4, 6, 5)
    assert (decoded - ref_decoded).abs().max().item() <= 1e-4
    assert (mean - ref_mean).abs().max().item() <= 1e-4


def test_in_place_activations_keep_inputs_and_gradients() -> None:
    """The blocks' SiLU and residual add work in place on tensors they made: the caller's tensors are untouched and
    gradients still flow (a pack may optimise through the VAE)."""
    vae = build_vae(VAEConfig.tiny(), tiny_vae_state_dict(dtype=torch.float32))
    z = torch.randn(1, 4, 4, 4, requires_grad=True)
    kept = z.detach().clone()
    vae.decode(z).square().mean().backward()
    assert torch.equal(z.detach(), kept) and z.grad is not None and z.grad.abs().sum() > 0
    with torch.no_grad():
        again = vae.decode(kept)
    assert torch.equal(again, vae.decode(z).detach())


def test_linear_attention_weights_load_like_conv_ones() -> None:
    conv = build_vae(VAEConfig.tiny(), tiny_vae_state_dict(dtype=torch.float32))
    linear = build_vae(VAEConfig.tiny(), tiny_vae_state_dict(dtype=torch.float32, linear_attention=True))
    z = torch.randn(1, 4, 4, 4)
    with torch.no_grad():
        assert torch.equal(conv.decode(z), linear.decode(z))


def test_vae_socket_semantics(pair: tuple) -> None:
    ours, _ = pair
    vae = VAE(ours)
    assert vae.downscale_ratio == 8 and vae.latent_channels == 4 and vae.scale_factor == 0.18215
    z = torch.randn(1, 4, 6, 5)
    image = vae.decode(z)
    assert image.shape == (1, 48, 40, 3) and image.dtype == torch.float32 and image.device.type == "cpu"
    assert image.min() >= 0 and image.max() <= 1
    with torch.no_grad():
        raw = ours.decode(z)
    assert torch.allclose(image, ((raw + 1) / 2).clamp(0, 1).movedim(1, -1))
    # encode: alpha dropped, centre-cropped to multiples of 8, posterior mean of 2x−1
    rgba = torch.rand(1, 53, 43, 4)
    latent = vae.encode(rgba)
    assert latent.shape == (1, 4, 6, 5)
    with torch.no_grad():
        expected = ours.encode(rgba[:, 2:50, 1:41, :3].movedim(-1, 1) * 2 - 1)
    assert torch.allclose(latent, expected, atol=1e-6)


def test_bf16_vae_returns_float32_on_cpu() -> None:
    vae = VAE(build_vae(VAEConfig.tiny(), tiny_vae_state_dict(), dtype=torch.bfloat16))
    image = vae.decode(torch.randn(1, 4, 4, 4))
    assert image.dtype == torch.float32 and torch.isfinite(image).all()
    assert vae.encode(image).dtype == torch.float32


def test_tiled_decode_with_whole_tiles_equals_decode(pair: tuple) -> None:
    vae = VAE(pair[0])
    z = torch.randn(1, 4, 10, 7)
    whole = vae.decode(z)
    assert torch.allclose(vae.decode_tiled(z, tile_x=32, tile_y=32, overlap=4), whole, atol=1e-6)
    tiled = vae.decode_tiled(z, tile_x=4, tile_y=4, overlap=2)
    assert tiled.shape == whole.shape and tiled.min() >= 0 and tiled.max() <= 1
    assert (tiled - whole).abs().mean() < 0.2


def test_tiled_encode_shapes(pair: tuple) -> None:
    vae = VAE(pair[0])
    image = torch.rand(1, 64, 48, 3)
    whole = vae.encode(image)
    assert torch.allclose(vae.encode_tiled(image, tile_x=256, tile_y=256, overlap=16), whole, atol=1e-5)
    assert vae.encode_tiled(image, tile_x=32, tile_y=32, overlap=8).shape == whole.shape


def test_tiling_blends_to_the_exact_result_for_pointwise_functions() -> None:
    x = torch.randn(2, 3, 37, 29)

    def up(t: torch.Tensor) -> torch.Tensor:  # a position-independent ×4 upscale: tiling must not show
        return torch.nn.functional.interpolate(t * 2 + 1, scale_factor=4, mode="nearest")[:, :2]

    expected = up(x)
    for tile, overlap in [((8, 8), 2), ((16, 5), 3), ((64, 64), 8), ((5, 7), 0)]:
        assert torch.allclose(tiled_apply(x, up, tile, overlap, 4, 2), expected, atol=1e-5)
    assert torch.allclose(tiled_average(x, up, (8, 8), 2, 4, 2), expected, atol=1e-5)
    down = tiled_apply(torch.ones(1, 1, 32, 32), lambda t: t[:, :, ::8, ::8], (16, 16), 8, 1 / 8, 1)
    assert down.shape == (1, 1, 4, 4) and torch.allclose(down, torch.ones_like(down))


def test_memory_estimates_grow_with_size_and_precision(pair: tuple) -> None:
    vae = VAE(pair[0])
    small = vae.memory_required_decode((1, 4, 32, 32), torch.float32)
    assert small > 0
    assert vae.memory_required_decode((1, 4, 64, 64), torch.float32) > 3 * small
    assert vae.memory_required_decode((2, 4, 32, 32), torch.float32) == 2 * small
    assert vae.memory_required_decode((1, 4, 32, 32), torch.bfloat16) < small
    assert vae.memory_required_encode((1, 512, 512, 3), torch.float32) > vae.memory_required_encode(
        (1, 256, 256, 3), torch.float32
    )
    # the full-size SD VAE decoding 512×512 in fp32 needs more than a gigabyte
    full = VAE(build_vae(VAEConfig.sd(), None, device="meta"))
    assert full.memory_required_decode((1, 4, 64, 64), torch.float32) > 1e9
