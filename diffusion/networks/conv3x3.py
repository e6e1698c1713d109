"""Which algorithm computes a network's 3×3 convolutions on the CPU: oneDNN's direct kernel, Winograd F(2×2, 3×3)
on big maps (diffusion/networks/winograd.py) or one GEMM on small maps (diffusion/networks/im2col.py).

`algorithm` is the one place deciding it, by fixed rules on the shapes and the CPU's vector width (never by timing
at run time, so the same prompt takes the same path and gives the same bits in every process on a machine): CPU
tensors, a plain 3×3 convolution (stride 1, padding 1 with zeros, no groups or dilation), outside `torch.compile`
(inductor picks its own kernels) and without autograd on the weights. Winograd is fp32 only, and only where torch's
CPU kernels are below AVX-512 (`WINOGRAD`): it was 1.2–1.4× oneDNN's direct kernel on an AVX2-only Zen 1, within 4 %
of it on a Zen 4, and 1.2–1.5× slower than it on a Zen 5 (bench/RESULTS.md). The small-map GEMM is also used in
bf16. The networks' convolutions get this forward through `use_fast_convs` (UNet, VAE) and the cast layers of
diffusion/networks/weight_cast.py. `preferred_layout` is the memory layout a convolution stack's input should be in.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from diffusion.networks.im2col import im2col_conv3x3, use_im2col
from diffusion.networks.winograd import use_winograd, winograd_conv3x3

ENABLED = True  # module-wide switch (bench/ compares against the direct kernel alone)
# Winograd on big fp32 maps: only where torch's CPU kernels (and oneDNN's) lack AVX-512 (`ATEN_CPU_CAPABILITY`
# lowers what torch reports, e.g. to compare on one machine).
WINOGRAD = torch.backends.cpu.get_cpu_capability() != "AVX512"

Algorithm = Literal["direct", "winograd", "im2col"]


def _plain_3x3(conv: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor) -> bool:
    if x.device.type != "cpu" or x.dim() != 4 or x.dtype != weight.dtype:
        return False
    if conv.kernel_size != (3, 3) or conv.stride != (1, 1) or conv.dilation != (1, 1) or conv.groups != 1:
        return False
    if conv.padding != (1, 1) or conv.padding_mode != "zeros":
        return False
    return not (torch.compiler.is_compiling() or torch.is_grad_enabled() and weight.requires_grad)


def algorithm(conv: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor) -> Algorithm:
    """The algorithm `conv` applied to `x` with `weight` (already in the compute dtype) goes through."""
    if not ENABLED or x.dtype not in (torch.float32, torch.bfloat16) or not _plain_3x3(conv, x, weight):
        return "direct"
    if use_im2col(x, weight):
        return "im2col"
    if WINOGRAD and x.dtype == torch.float32 and use_winograd(x, weight):
        return "winograd"
    return "direct"


def conv2d(conv: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`conv`'s convolution of `x` with the given (compute-dtype) weight and bias, by the algorithm that pays."""
    chosen = algorithm(conv, x, weight)
    if chosen == "im2col":
        return im2col_conv3x3(x, weight, bias)
    if chosen == "winograd":
        return winograd_conv3x3(x, weight, bias)
    return conv._conv_forward(x, weight, bias)


class FastConv2d(nn.Conv2d):
    """nn.Conv2d whose CPU 3×3 convolutions go through the algorithm `algorithm` picks."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv2d(self, x, self.weight, self.bias)


def preferred_layout(x: torch.Tensor) -> torch.Tensor:
    """`x` in the memory layout the CPU convolutions are fastest in: channels-last for bf16 (oneDNN's bf16 kernels
    work in NHWC; on an NCHW input a 1024² VAE decode took 1.3× the time and 1.5× the activation memory in
    reorders, bench/RESULTS.md) and for fp32 where Winograd is off (AVX-512: oneDNN's direct fp32 kernel is 1.1–1.5×
    faster on NHWC at the VAE's big maps, an SD1.5 512² decode 8.40 → 6.72 s on a Zen 5), unchanged otherwise
    (Winograd and the GEMM work on NCHW; on the AVX2 Zen 1 channels-last measured level). The layout follows the
    input through the convolutions, so converting the input is enough."""
    if x.device.type != "cpu" or x.dim() != 4:
        return x
    if x.dtype == torch.bfloat16 or x.dtype == torch.float32 and not WINOGRAD:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def use_fast_convs(net: nn.Module) -> nn.Module:
    """Give every plain nn.Conv2d of `net` the fast forward (in place; state dict and parameters unchanged)."""
    for module in net.modules():
        if type(module) is nn.Conv2d:
            module.__class__ = FastConv2d
    return net
