"""Winograd F(2×2, 3×3) convolutions (diffusion/networks/winograd.py): in bands of bounded workspace, the weight
transform, and the shapes `use_winograd` allows (agreement with F.conv2d on every shape: test_conv3x3.py)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from diffusion.networks import winograd


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


def test_used_only_where_it_pays() -> None:
    big = torch.randn(2, 128, 32, 32)
    assert winograd.use_winograd(big, torch.randn(128, 128, 3, 3))
    assert not winograd.use_winograd(torch.randn(1, 128, 8, 8), torch.randn(128, 128, 3, 3))  # 16 tiles: too few
    assert not winograd.use_winograd(torch.randn(2, 64, 32, 32), torch.randn(128, 64, 3, 3))  # too few channels
