"""The CPU 3×3 convolution algorithms (diffusion/networks/conv3x3.py, im2col.py, winograd.py): each gives
F.conv2d's numbers, each algorithm is chosen only on the shapes and dtypes where it pays, the networks' and the
cast layers' convolutions go through the choice, and the switch turns it off."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diffusion.networks import conv3x3, im2col, winograd
from diffusion.networks.weight_cast import CastConv2d, make_casting


@pytest.fixture
def enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rules as on a CPU where Winograd pays (below AVX-512), whatever this machine is."""
    monkeypatch.setattr(conv3x3, "ENABLED", True)
    monkeypatch.setattr(conv3x3, "WINOGRAD", True)


@pytest.fixture
def chosen(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Counts which algorithm each convolution really ran (the algorithm functions wrapped, not replaced)."""
    seen: Counter[str] = Counter()
    for name, fn in (("im2col", conv3x3.im2col_conv3x3), ("winograd", conv3x3.winograd_conv3x3)):
        monkeypatch.setattr(conv3x3, f"{name}_conv3x3",
                            lambda *a, _fn=fn, _name=name: seen.update([_name]) or _fn(*a))
    yield seen


SHAPES = [(2, 8, 16, 16), (2, 8, 4, 4), (1, 5, 7, 9), (3, 4, 1, 1), (1, 16, 2, 3), (2, 3, 5, 4), (2, 3, 8, 5)]


def _case(shape: tuple[int, int, int, int], with_bias: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(shape, generator=gen)
    w = torch.randn(6, shape[1], 3, 3, generator=gen)
    return x, w, torch.randn(6, generator=gen) if with_bias else None


@pytest.mark.parametrize("algorithm", [winograd.winograd_conv3x3, im2col.im2col_conv3x3], ids=["winograd", "im2col"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_algorithms_match_direct_convolution(algorithm: Callable[..., torch.Tensor],
                                             shape: tuple[int, int, int, int], with_bias: bool) -> None:
    x, w, b = _case(shape, with_bias)
    want = F.conv2d(x, w, b, padding=1)
    got = algorithm(x, w, b)
    assert got.shape == want.shape and got.is_contiguous()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_im2col_in_bf16(shape: tuple[int, int, int, int], with_bias: bool) -> None:
    x, w, b = _case(shape, with_bias)
    want = F.conv2d(x, w, b, padding=1)
    got16 = im2col.im2col_conv3x3(x.bfloat16(), w.bfloat16(), None if b is None else b.bfloat16())
    assert got16.dtype == torch.bfloat16
    torch.testing.assert_close(got16.float(), want, rtol=0.05, atol=0.05 * float(want.abs().max()))


def test_each_algorithm_only_where_it_pays(enabled: None) -> None:
    deep = nn.Conv2d(1280, 1280, 3, padding=1)
    w = deep.weight.detach()
    assert conv3x3.algorithm(deep, torch.randn(2, 1280, 8, 8), w) == "im2col"  # 128 columns
    assert conv3x3.algorithm(deep, torch.randn(2, 1280, 4, 4).bfloat16(), w.bfloat16()) == "im2col"
    assert conv3x3.algorithm(deep, torch.randn(2, 1280, 16, 16), w) == "winograd"  # 512 columns, 128 tiles
    assert conv3x3.algorithm(deep, torch.randn(2, 1280, 16, 16).bfloat16(), w.bfloat16()) == "direct"
    assert conv3x3.algorithm(deep, torch.randn(2, 1280, 8, 8).half(), w.half()) == "direct"
    mid = nn.Conv2d(640, 640, 3, padding=1)
    assert conv3x3.algorithm(mid, torch.randn(2, 640, 8, 8), mid.weight.detach()) == "direct"  # too few channels
    conv = nn.Conv2d(128, 128, 3, padding=1)
    big = torch.randn(2, 128, 32, 32)
    assert conv3x3.algorithm(conv, big, conv.weight.detach()) == "winograd"
    assert conv3x3.algorithm(conv, torch.randn(1, 128, 8, 8), conv.weight.detach()) == "direct"  # 16 tiles
    for other in (nn.Conv2d(128, 128, 3, stride=2, padding=1), nn.Conv2d(128, 128, 1),
                  nn.Conv2d(128, 128, 3, padding=1, groups=2), nn.Conv2d(128, 128, 3, padding=2, dilation=2),
                  nn.Conv2d(128, 128, 3, padding=1, padding_mode="reflect")):
        assert conv3x3.algorithm(other, big, other.weight.detach()) == "direct"
    assert conv3x3.algorithm(conv, big, conv.weight) == "direct"  # autograd on the weights: leave it to aten
    conv3x3.ENABLED = False
    assert conv3x3.algorithm(conv, big, conv.weight.detach()) == "direct"
    assert conv3x3.algorithm(deep, torch.randn(2, 1280, 8, 8), w) == "direct"


def test_winograd_only_below_avx512(enabled: None, monkeypatch: pytest.MonkeyPatch) -> None:
    conv = nn.Conv2d(128, 128, 3, padding=1)
    big = torch.randn(2, 128, 32, 32)
    assert conv3x3.algorithm(conv, big, conv.weight.detach()) == "winograd"
    monkeypatch.setattr(conv3x3, "WINOGRAD", False)  # an AVX-512 CPU: oneDNN's direct kernel is as fast or faster
    assert conv3x3.algorithm(conv, big, conv.weight.detach()) == "direct"
    deep = nn.Conv2d(1280, 1280, 3, padding=1)
    assert conv3x3.algorithm(deep, torch.randn(2, 1280, 8, 8), deep.weight.detach()) == "im2col"  # still pays


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 capability names")
def test_the_cpu_decides_winograd() -> None:
    """Read from torch's CPU capability at import: forced down to AVX2 (ATEN_CPU_CAPABILITY), Winograd is on."""
    code = ("import torch; from diffusion.networks import conv3x3; "
            "print(torch.backends.cpu.get_cpu_capability(), conv3x3.WINOGRAD)")
    root = Path(__file__).resolve().parents[2]
    for forced, want in (("avx2", "AVX2 True"), ("default", "DEFAULT True")):
        out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True,
                             env={**os.environ, "ATEN_CPU_CAPABILITY": forced}).stdout.split()
        assert " ".join(out) == want
    native = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                            check=True).stdout.split()
    assert native[1] == str(native[0] != "AVX512")


def test_modules_keep_their_state_and_agree(enabled: None, chosen: Counter[str]) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(128, 128, 3, padding=1), nn.SiLU(), nn.Conv2d(128, 128, 3, padding=1))
    x = torch.randn(1, 128, 24, 24)
    with torch.no_grad():
        want = net(x)
        keys = list(net.state_dict())
        conv3x3.use_fast_convs(net)
        assert all(type(m) is conv3x3.FastConv2d for m in net if isinstance(m, nn.Conv2d))
        assert list(net.state_dict()) == keys
        torch.testing.assert_close(net(x), want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
        assert chosen == {"winograd": 2}
        # the cast layers (weights stored in bf16, computed in fp32) keep the fast path
        make_casting(net)
        assert all(type(m) is CastConv2d for m in net if isinstance(m, nn.Conv2d))
        for m in net:
            if isinstance(m, nn.Conv2d):
                m.weight.data = m.weight.data.to(torch.bfloat16)
        cast_out = net(x)
        assert chosen == {"winograd": 4}
        assert float((cast_out - want).abs().max()) < 0.02 * float(want.abs().max())  # bf16 weights' rounding


def test_unet_convolutions_use_them(enabled: None, chosen: Counter[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusion.networks.unet import UNetConfig, UNetModel

    monkeypatch.setattr(im2col, "MIN_IN_CHANNELS", 256)  # a small network with the deep levels' shapes
    torch.manual_seed(0)
    # level 0: 128 channels on 16² (Winograd: 128 tiles); level 1: 256 channels on 8² (im2col: 128 columns)
    config = UNetConfig(model_channels=128, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(),
                        context_dim=32, num_heads=4)
    net = UNetModel(config)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(type(m) is conv3x3.FastConv2d for m in convs)
    x, t, ctx = torch.randn(2, 4, 16, 16), torch.tensor([10.0, 500.0]), torch.randn(2, 7, 32)
    with torch.no_grad():
        fast = net(x, t, ctx)
        assert chosen["im2col"] > 0 and chosen["winograd"] > 0
        conv3x3.ENABLED = False
        direct = net(x, t, ctx)
    assert not torch.equal(fast, direct)  # the other kernels really ran
    torch.testing.assert_close(fast, direct, rtol=1e-4, atol=1e-4 * float(direct.abs().max()))


def test_bf16_vae_runs_channels_last() -> None:
    from diffusion.networks.vae import AutoencoderKL, VAEConfig

    torch.manual_seed(0)
    vae = AutoencoderKL(VAEConfig.tiny()).eval()
    z, image = torch.randn(1, 4, 8, 8), torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        want_image, want_latent = vae.decode(z), vae.encode(image)
        vae.to(torch.bfloat16)
        seen: list[bool] = []
        hook = vae.decoder.conv_out.register_forward_pre_hook(
            lambda _m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
        got_image = vae.decode(z.bfloat16())
        hook.remove()
        got_latent = vae.encode(image.bfloat16())
    assert seen == [True]  # the layout followed the input through the decoder
    assert got_image.is_contiguous() and got_latent.is_contiguous()  # callers get the usual layout back
    for got, want in ((got_image, want_image), (got_latent, want_latent)):
        assert got.dtype == torch.bfloat16 and got.shape == want.shape
        torch.testing.assert_close(got.float(), want, rtol=0.05, atol=0.05 * float(want.abs().max()))


def test_fp32_channels_last_only_without_winograd(monkeypatch: pytest.MonkeyPatch) -> None:
    fp32 = torch.randn(1, 4, 8, 8)
    monkeypatch.setattr(conv3x3, "WINOGRAD", True)
    assert conv3x3.preferred_layout(fp32) is fp32  # fp32 stays NCHW where Winograd and the GEMM work on it
    monkeypatch.setattr(conv3x3, "WINOGRAD", False)  # AVX-512: oneDNN's direct kernel is fastest on NHWC
    last = conv3x3.preferred_layout(fp32)
    assert last.is_contiguous(memory_format=torch.channels_last) and torch.equal(last, fp32)
    assert conv3x3.preferred_layout(fp32.half()).is_contiguous()  # fp16 on a CPU: left alone
