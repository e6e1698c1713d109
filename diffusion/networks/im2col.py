"""3×3 convolutions on small maps as one matrix product (im2col + GEMM), where oneDNN's direct kernel is slowest.

At the UNet's deepest levels (1280–2560 channels on 8² and 4² maps, e.g. SD1.5 at 256²) a convolution has only
n·h·w = 32–128 output columns, and oneDNN's direct 3×3 kernel runs there at a fraction of the CPU's GEMM rate
(18–36 GFLOP/s on an AMD EPYC that reaches 200+ on big maps). Unfolding the input into a (Cin·9)×(n·h·w) matrix
and multiplying it by the Cout×(Cin·9) filter matrix reads the weights once for the whole batch and runs at the
GEMM rate: 1.9× (1280 ch, 8²) to 3.3× (2560→1280 ch, 4²) faster in fp32, 1.0–4.5× in bf16 (bench/RESULTS.md,
"Small-map convolutions"). The unfolded matrix is 9× the input, which on these maps is a few MB. The rounding is a
GEMM's, a few fp32 ulps from the direct kernel's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

MIN_IN_CHANNELS = 1280  # below this the direct kernel is level or faster on every small map measured
MAX_COLUMNS = 128  # n·h·w; from 16² at batch 2 (512 columns) the direct kernel is as fast or faster


def use_im2col(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether a plain 3×3 convolution (stride 1, padding 1) of `x` with `weight` is faster as one GEMM."""
    n, c, h, w = x.shape
    return c >= MIN_IN_CHANNELS and n * h * w <= MAX_COLUMNS and weight.shape[1] == c


def im2col_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`F.conv2d(x, weight, bias, padding=1)` for a 3×3 kernel, as Cout×(Cin·9) @ (Cin·9)×(n·h·w)."""
    n, c, h, w = x.shape
    out_ch = weight.shape[0]
    cols = F.unfold(x, 3, padding=1).transpose(0, 1).reshape(c * 9, n * h * w)
    filters = weight.reshape(out_ch, c * 9)
    y = torch.addmm(bias.unsqueeze(1), filters, cols) if bias is not None else torch.mm(filters, cols)
    return y.view(out_ch, n, h, w).transpose(0, 1).contiguous()
