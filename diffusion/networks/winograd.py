"""3×3 convolutions by Winograd's minimal filtering F(2×2, 3×3) (Lavin & Gray 2016, "Fast Algorithms for
Convolutional Neural Networks") for fp32 on the CPU, where oneDNN's direct kernel leaves the GEMM units idle.

A 3×3, stride-1, padding-1 convolution over 2×2 output tiles needs 16 multiplies per tile and channel pair instead
of 36: the input is cut into overlapping 4×4 tiles (stride 2) and transformed (Bᵀ d B, additions only), the
weights are transformed once per call (G g Gᵀ, a 16×9 matrix product), the 16 transformed planes are multiplied as
16 batched GEMMs (Cout×Cin by Cin×tiles), and each tile's 4×4 result is folded back to 2×2 outputs (Aᵀ m A). The
arithmetic is 2.25× smaller; the rounding differs from the direct kernel's by a few fp32 ulps (relative 1e-6 to
1e-5 after a whole UNet), far inside any image tolerance but not bit-identical to `F.conv2d`.

`use_winograd` says on which shapes it pays: at least `MIN_CHANNELS` channels each way and enough tiles for the
GEMMs to be efficient once the weight transform is paid (measured on a 2-core AMD EPYC without AVX-512; see
bench/RESULTS.md, "Winograd 3×3 convolutions"); diffusion/networks/conv3x3.py decides which convolutions are
plain 3×3 fp32 ones it may take.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

MIN_CHANNELS = 128
MIN_TILES = 128  # batch · ⌈H/2⌉ · ⌈W/2⌉; below this the per-call weight transform costs more than it saves
WORKSPACE_BYTES = 32 << 20  # transient tiles + products per band (see winograd_conv3x3)
_G = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
_KRON = torch.kron(_G, _G)  # 16×9: U[a·4+b] = Σ G[a,i] G[b,j] g[i,j]


def transform_weight(weight: torch.Tensor) -> torch.Tensor:
    """Cout×Cin×3×3 → 16×Cout×Cin (G g Gᵀ for every filter)."""
    out_ch, in_ch = weight.shape[:2]
    flat = weight.reshape(out_ch * in_ch, 9)
    return torch.mm(_KRON.to(weight.dtype), flat.t()).view(16, out_ch, in_ch)


def use_winograd(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether a plain 3×3 fp32 convolution of `x` with `weight` is faster by F(2×2, 3×3)."""
    n, _, h, w = x.shape
    if min(weight.shape[0], weight.shape[1]) < MIN_CHANNELS:
        return False
    return n * ((h + 1) // 2) * ((w + 1) // 2) >= MIN_TILES


def _input_tiles(xp: torch.Tensor, th: int, tw: int) -> torch.Tensor:
    """Bᵀ d B of every 4×4 tile (stride 2) of an already zero-padded input band, as 4×4×N×C×th×tw."""
    n, c = xp.shape[:2]
    d = [xp[:, :, k:k + 2 * th:2] for k in range(4)]
    rows = xp.new_empty((4, n, c, th, xp.shape[3]))
    torch.sub(d[0], d[2], out=rows[0])
    torch.add(d[1], d[2], out=rows[1])
    torch.sub(d[2], d[1], out=rows[2])
    torch.sub(d[1], d[3], out=rows[3])
    tiles = xp.new_empty((4, 4, n, c, th, tw))
    for i in range(4):
        e = [rows[i][..., k:k + 2 * tw:2] for k in range(4)]
        torch.sub(e[0], e[2], out=tiles[i, 0])
        torch.add(e[1], e[2], out=tiles[i, 1])
        torch.sub(e[2], e[1], out=tiles[i, 2])
        torch.sub(e[1], e[3], out=tiles[i, 3])
    return tiles


def band_rows(n: int, in_ch: int, out_ch: int, th: int, tw: int, workspace_bytes: int = WORKSPACE_BYTES,
              itemsize: int = 4) -> int:
    """Tile rows per band so that one band's transformed input and products stay within `workspace_bytes`."""
    per_row = itemsize * n * tw * 24 * (in_ch + out_ch)  # tiles 16·C + row transform 8·C, products 16·Cout + 8·Cout
    return max(1, min(th, workspace_bytes // per_row))


def winograd_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     workspace_bytes: int = WORKSPACE_BYTES) -> torch.Tensor:
    """`F.conv2d(x, weight, bias, padding=1)` for a 3×3 kernel, by F(2×2, 3×3).

    The output is computed in horizontal bands of tile rows (each band reads its rows of the padded input plus a
    two-row halo), so the transient workspace is bounded by `workspace_bytes` whatever the image size: the
    transformed tiles are 4× the input and the products 4× the output, which at a 1024² VAE decode would be
    gigabytes if made at once.
    """
    n, c, h, w = x.shape
    out_ch = weight.shape[0]
    th, tw = (h + 1) // 2, (w + 1) // 2
    u = transform_weight(weight)
    xp = F.pad(x, (1, 2 * tw + 1 - w, 1, 2 * th + 1 - h))
    y = x.new_empty((n, out_ch, 2 * th, 2 * tw))
    step = band_rows(n, c, out_ch, th, tw, workspace_bytes, x.element_size())
    for t0 in range(0, th, step):
        bt = min(step, th - t0)
        tiles = _input_tiles(xp[:, :, 2 * t0:2 * (t0 + bt) + 2], bt, tw)
        m = x.new_empty((n, 16, out_ch, bt * tw))
        for b in range(n):
            torch.bmm(u, tiles[:, :, b].reshape(16, c, bt * tw), out=m[b])
        del tiles
        m = m.view(n, 4, 4, out_ch, bt, tw)
        r0 = m[:, 0] + m[:, 1] + m[:, 2]
        r1 = m[:, 1] - m[:, 2] - m[:, 3]
        del m
        band = y[:, :, 2 * t0:2 * (t0 + bt)]
        for a, r in enumerate((r0, r1)):
            band[:, :, a::2, 0::2] = r[:, 0] + r[:, 1] + r[:, 2]
            band[:, :, a::2, 1::2] = r[:, 1] - r[:, 2] - r[:, 3]
    if bias is not None:
        y += bias.view(1, -1, 1, 1)
    return y if (2 * th, 2 * tw) == (h, w) else y[:, :, :h, :w].contiguous()
