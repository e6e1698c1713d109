"""Dequantisation of GGML block formats in torch, on whatever device the packed blocks live.

Owns `dequantize(raw, qtype, shape, dtype)` and `QUANT_SIZES` for the formats GGUF diffusion files use: Q4_0, Q4_1,
Q5_0, Q5_1, Q8_0 (32 values a block: an fp16 scale `d`, for the _1 types an fp16 minimum `m`, 4/5/8-bit codes) and
the K-quants Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (256-value super-blocks of 16 or 32-value sub-blocks with their own
6/4-bit scales), as ggml defines them (ggml-quants.c; the layouts are also in gguf-py's `quants.py`, which the
tests use as the reference). Codes are unpacked with integer ops and scaled in float32, then cast to `dtype`.
The type numbers are GGML's (`gguf.GGMLQuantizationType`), so this module needs no import of `gguf`.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

QK_K = 256
# GGML type number -> (name, values per block, bytes per block)
QUANT_SIZES: dict[int, tuple[str, int, int]] = {
    2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34),
    10: ("Q2_K", QK_K, 84), 11: ("Q3_K", QK_K, 110), 12: ("Q4_K", QK_K, 144), 13: ("Q5_K", QK_K, 176),
    14: ("Q6_K", QK_K, 210),
}


def _f16(b: Tensor) -> Tensor:
    """Two bytes per row (little-endian fp16) → float32, one column."""
    return b.contiguous().view(torch.float16).float()


def _bits(b: Tensor, shifts: list[int], mask: int) -> Tensor:
    """Each byte of `b` (…, n) shifted by every entry of `shifts` and masked: (…, len(shifts), n)."""
    s = torch.tensor(shifts, dtype=torch.uint8, device=b.device).view(len(shifts), 1)
    return (b.unsqueeze(-2) >> s) & mask


def _nibbles(qs: Tensor) -> Tensor:
    """16 bytes → 32 codes: the low nibbles first, then the high ones."""
    return _bits(qs, [0, 4], 0x0F).reshape(qs.shape[0], -1)


def _high_bits(qh: Tensor) -> Tensor:
    """4 bytes (a little-endian uint32) → 32 single bits, bit j for value j."""
    return _bits(qh, list(range(8)), 1).transpose(-1, -2).reshape(qh.shape[0], -1)


def _q4_0(b: Tensor) -> Tensor:
    return _f16(b[:, :2]) * (_nibbles(b[:, 2:]).float() - 8)


def _q4_1(b: Tensor) -> Tensor:
    return _f16(b[:, :2]) * _nibbles(b[:, 4:]).float() + _f16(b[:, 2:4])


def _q5_0(b: Tensor) -> Tensor:
    q = _nibbles(b[:, 6:]) | (_high_bits(b[:, 2:6]) << 4)
    return _f16(b[:, :2]) * (q.float() - 16)


def _q5_1(b: Tensor) -> Tensor:
    q = _nibbles(b[:, 8:]) | (_high_bits(b[:, 4:8]) << 4)
    return _f16(b[:, :2]) * q.float() + _f16(b[:, 2:4])


def _q8_0(b: Tensor) -> Tensor:
    return _f16(b[:, :2]) * b[:, 2:].contiguous().view(torch.int8).float()


def _q2_k(b: Tensor) -> Tensor:
    n = b.shape[0]
    scales, qs, d, dmin = b[:, :16], b[:, 16:80], _f16(b[:, 80:82]), _f16(b[:, 82:84])
    dl = (d * (scales & 0x0F).float()).view(n, 16, 1)
    ml = (dmin * (scales >> 4).float()).view(n, 16, 1)
    q = _bits(qs.reshape(n, 2, 32), [0, 2, 4, 6], 3).reshape(n, 16, 16).float()
    return (dl * q - ml).reshape(n, QK_K)


def _q3_k(b: Tensor) -> Tensor:
    n = b.shape[0]
    hmask, qs, scales, d = b[:, :32], b[:, 32:96], b[:, 96:108], _f16(b[:, 108:110])
    low = _bits(scales[:, :8], [0, 4], 0x0F).reshape(n, 16)
    high = _bits(scales[:, 8:12], [0, 2, 4, 6], 3).reshape(n, 16)
    sc = (low | (high << 4)).to(torch.int16) - 32
    dl = (d * sc.float()).view(n, 16, 1)
    ql = _bits(qs.reshape(n, 2, 32), [0, 2, 4, 6], 3).reshape(n, 16, 16).to(torch.int16)
    qh = _bits(hmask.reshape(n, 1, 32), list(range(8)), 1).reshape(n, 16, 16).to(torch.int16)
    q = ql - ((qh ^ 1) << 2)  # a set mask bit means no offset
    return (dl * q.float()).reshape(n, QK_K)


def _k_scale_min(scales: Tensor) -> tuple[Tensor, Tensor]:
    """The 8 six-bit scales and mins packed in 12 bytes (Q4_K, Q5_K)."""
    n = scales.shape[0]
    s = scales.reshape(n, 3, 4)
    d, m, md = s[:, 0], s[:, 1], s[:, 2]
    sc = torch.cat([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], dim=-1)
    mn = torch.cat([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], dim=-1)
    return sc.float(), mn.float()


def _q4_k(b: Tensor) -> Tensor:
    n = b.shape[0]
    d, dmin = _f16(b[:, :2]), _f16(b[:, 2:4])
    sc, mn = _k_scale_min(b[:, 4:16])
    q = _bits(b[:, 16:].reshape(n, 4, 32), [0, 4], 0x0F).reshape(n, 8, 32).float()
    return ((d * sc).view(n, 8, 1) * q - (dmin * mn).view(n, 8, 1)).reshape(n, QK_K)


def _q5_k(b: Tensor) -> Tensor:
    n = b.shape[0]
    d, dmin = _f16(b[:, :2]), _f16(b[:, 2:4])
    sc, mn = _k_scale_min(b[:, 4:16])
    ql = _bits(b[:, 48:].reshape(n, 4, 32), [0, 4], 0x0F).reshape(n, 8, 32)
    qh = _bits(b[:, 16:48].reshape(n, 1, 32), list(range(8)), 1).reshape(n, 8, 32)
    q = (ql | (qh << 4)).float()
    return ((d * sc).view(n, 8, 1) * q - (dmin * mn).view(n, 8, 1)).reshape(n, QK_K)


def _q6_k(b: Tensor) -> Tensor:
    n = b.shape[0]
    ql, qh, scales, d = b[:, :128], b[:, 128:192], b[:, 192:208], _f16(b[:, 208:210])
    dl = (d * scales.contiguous().view(torch.int8).float()).view(n, 16, 1)
    low = _bits(ql.reshape(n, 2, 64), [0, 4], 0x0F).reshape(n, 8, 32)
    high = _bits(qh.reshape(n, 2, 32), [0, 2, 4, 6], 3).reshape(n, 8, 32)
    q = (low | (high << 4)).to(torch.int16) - 32
    return (dl * q.reshape(n, 16, 16).float()).reshape(n, QK_K)


_DEQUANT: dict[int, Callable[[Tensor], Tensor]] = {2: _q4_0, 3: _q4_1, 6: _q5_0, 7: _q5_1, 8: _q8_0, 10: _q2_k,
                                                   11: _q3_k, 12: _q4_k, 13: _q5_k, 14: _q6_k}


def is_supported(qtype: int) -> bool:
    """Whether `dequantize` reads GGML type `qtype`."""
    return qtype in _DEQUANT


def dequantize(raw: Tensor, qtype: int, shape: tuple[int, ...] | torch.Size, dtype: torch.dtype) -> Tensor:
    """The values of packed GGML blocks `raw` (uint8, any shape, `prod(shape)` values in row-major order) as a
    tensor of `shape` and `dtype` on `raw`'s device."""
    fn = _DEQUANT.get(int(qtype))
    if fn is None:
        raise ValueError(f"GGML quantisation type {qtype} is not one Loom reads (supported: "
                         f"{', '.join(name for name, _, _ in QUANT_SIZES.values())})")
    _, _, size = QUANT_SIZES[int(qtype)]
    values = fn(raw.reshape(-1, size))
    return values.reshape(shape).to(dtype)
