"""Winograd F(2×2, 3×3) convolutions (diffusion/networks/winograd.py): the same numbers as F.conv2d to fp32
rounding on every shape, used only where `use_winograd` allows, and kept through the cast layers."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diffusion.networks import winograd
from diffusion.networks.weight_cast import CastConv2d, make_casting


@pytest.fixture
def enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(winograd, "ENABLED", True)


@pytest.mark.parametrize("shape", [(2, 8, 16, 16), (1, 5, 7, 9), (3, 4, 1, 1), (1, 16, 2, 3), (2, 3, 5, 4)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_matches_direct_convolution(shape: tuple[int, int, int, int], with_bias: bool) -> None:
    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(shape, generator=gen)
    w = torch.randn(6, shape[1], 3, 3, generator=gen)
    b = torch.randn(6, generator=gen) if with_bias else None
    want = F.conv2d(x, w, b, padding=1)
    got = winograd.winograd_conv3x3(x, w, b)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))


@pytest.mark.parametrize("shape", [(2, 8, 17, 9), (1, 4, 12, 12), (3, 2, 5, 30)])
def test_bands_give_the_same_result_and_bound_the_workspace(shape: tuple[int, int, int, int]) -> None:
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(shape, generator=gen)
    w = torch.randn(5, shape[1], 3, 3, generator=gen)
    b = torch.randn(5, generator=gen)
    n, c, h, wd = shape
    th, tw = (h + 1) // 2, (wd + 1) // 2
    small = 4 * n * tw * 24 * (c + 5)  # room for exactly one tile row per band
    assert winograd.band_rows(n, c, 5, th, tw, small) == 1
    assert winograd.band_rows(n, c, 5, th, tw, 1 << 40) == th
    want = winograd.winograd_conv3x3(x, w, b, workspace_bytes=1 << 40)
    got = winograd.winograd_conv3x3(x, w, b, workspace_bytes=small)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6 * float(want.abs().max()))
    torch.testing.assert_close(got, F.conv2d(x, w, b, padding=1), rtol=1e-5, atol=1e-5 * float(got.abs().max()))


def test_weight_transform_is_g_w_gt() -> None:
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    g = winograd._G.double()
    want = torch.einsum("ai,ocij,bj->aboc", g, w, g).reshape(16, 3, 2)
    torch.testing.assert_close(winograd.transform_weight(w), want)


def test_used_only_where_it_pays(enabled: None) -> None:
    conv = nn.Conv2d(128, 128, 3, padding=1)
    big = torch.randn(2, 128, 32, 32)
    assert winograd.use_winograd(conv, big, conv.weight.detach())
    assert not winograd.use_winograd(conv, torch.randn(1, 128, 8, 8), conv.weight)  # 16 tiles: too few
    assert not winograd.use_winograd(conv, big.half(), conv.weight.half())
    assert not winograd.use_winograd(nn.Conv2d(64, 128, 3, padding=1), torch.randn(2, 64, 32, 32),
                                     torch.randn(128, 64, 3, 3))  # too few channels
    for other in (nn.Conv2d(128, 128, 3, stride=2, padding=1), nn.Conv2d(128, 128, 1),
                  nn.Conv2d(128, 128, 3, padding=1, groups=2), nn.Conv2d(128, 128, 3, padding=2, dilation=2),
                  nn.Conv2d(128, 128, 3, padding=1, padding_mode="reflect")):
        assert not winograd.use_winograd(other, big, other.weight)
    winograd.ENABLED = False
    assert not winograd.use_winograd(conv, big, conv.weight)


def test_modules_keep_their_state_and_agree(enabled: None) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(128, 128, 3, padding=1), nn.SiLU(), nn.Conv2d(128, 128, 3, padding=1))
    x = torch.randn(1, 128, 24, 24)
    with torch.no_grad():
        want = net(x)
        keys = list(net.state_dict())
        winograd.use_winograd_convs(net)
        assert all(type(m) is winograd.WinogradConv2d for m in net if isinstance(m, nn.Conv2d))
        assert list(net.state_dict()) == keys
        torch.testing.assert_close(net(x), want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
        # the cast layers (weights stored in bf16, computed in fp32) keep the Winograd path
        make_casting(net)
        assert all(type(m) is CastConv2d for m in net if isinstance(m, nn.Conv2d))
        for m in net:
            if isinstance(m, nn.Conv2d):
                m.weight.data = m.weight.data.to(torch.bfloat16)
        calls = []
        original = winograd.winograd_conv3x3
        winograd.winograd_conv3x3 = lambda *a: calls.append(1) or original(*a)
        try:
            cast_out = net(x)
        finally:
            winograd.winograd_conv3x3 = original
        assert len(calls) == 2
        assert float((cast_out - want).abs().max()) < 0.02 * float(want.abs().max())  # bf16 weights' rounding


def test_unet_convolutions_use_it(enabled: None) -> None:
    from diffusion.networks.unet import UNetConfig, UNetModel

    torch.manual_seed(0)
    config = UNetConfig(model_channels=128, channel_mult=(1,), num_res_blocks=1, attention_resolutions=(),
                        context_dim=32, num_heads=4)
    net = UNetModel(config)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(type(m) is winograd.WinogradConv2d for m in convs)
    x, t, ctx = torch.randn(2, 4, 32, 32), torch.tensor([10.0, 500.0]), torch.randn(2, 7, 32)
    with torch.no_grad():
        fast = net(x, t, ctx)
        winograd.ENABLED = False
        direct = net(x, t, ctx)
    assert not torch.equal(fast, direct)  # the other kernel really ran
    torch.testing.assert_close(fast, direct, rtol=1e-4, atol=1e-4 * float(direct.abs().max()))
