"""LoRA extraction: low-rank factors of weight differences (what ComfyUI's LoraSave writes).

Owns `extract_lora(diff, rank)` — the best rank-r approximation of a weight difference from its SVD,
ΔW ≈ (U·diag(S))[:, :r] · Vh[:r] (Eckart–Young), with both factors clamped to the 0.99 quantile of their
entries (as kohya's and ComfyUI's extractors do, so one outlier does not dominate fp16 storage); a 1×1 or k×k
convolution is flattened to (out, in·k·k) and the factors reshaped to (out, r, 1, 1) and (r, in, k, k) — and
`lora_state_dict(...)`, the file's tensors for a set of differences in ComfyUI's layout: `<module>.lora_up.weight`
/ `.lora_down.weight` (standard), `<module>.diff` (full_diff, and 1-D weights with bias_diff), `<module>.diff_b`
(biases with bias_diff), all fp16.
"""
from __future__ import annotations

import logging

import torch
from torch import Tensor

log = logging.getLogger(__name__)

CLAMP_QUANTILE = 0.99
LORA_TYPES = ("standard", "full_diff")


def extract_lora(diff: Tensor, rank: int, clamp_quantile: float | None = CLAMP_QUANTILE) -> tuple[Tensor, Tensor]:
    """(up, down) with up @ down ≈ diff (2-D, or a 4-D conv weight), of rank min(rank, out, in); both factors
    clamped to ±(the `clamp_quantile` quantile of their entries) unless it is None."""
    conv = diff.ndim == 4
    kernel = tuple(diff.shape[2:4]) if conv else None
    out_dim, in_dim = int(diff.shape[0]), int(diff.shape[1])
    rank = min(rank, in_dim, out_dim)
    matrix = diff.float().flatten(start_dim=1) if conv else diff.float()
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    up = u[:, :rank] @ torch.diag(s[:rank])
    down = vh[:rank, :]
    if clamp_quantile is not None:
        high = torch.quantile(torch.cat([up.flatten(), down.flatten()]), clamp_quantile)
        up, down = up.clamp(-high, high), down.clamp(-high, high)
    if conv:
        up = up.reshape(out_dim, rank, 1, 1)
        down = down.reshape(rank, in_dim, kernel[0], kernel[1])
    return up, down


def _half(t: Tensor) -> Tensor:
    return t.detach().contiguous().to("cpu", torch.float16)


def lora_state_dict(diffs: dict[str, Tensor], rank: int, lora_type: str = "standard", bias_diff: bool = True,
                    prefix: str = "") -> dict[str, Tensor]:
    """The LoRA file tensors of `diffs` (state-dict key → weight difference; keys ending `.weight`/`.bias`),
    their module paths under `prefix`."""
    if lora_type not in LORA_TYPES:
        raise ValueError(f"lora_type {lora_type!r} is not one of {', '.join(LORA_TYPES)}")
    out: dict[str, Tensor] = {}
    for key, diff in diffs.items():
        if key.endswith(".weight"):
            module = prefix + key[: -len(".weight")]
            if lora_type == "full_diff":
                out[f"{module}.diff"] = _half(diff)
            elif diff.ndim < 2:
                if bias_diff:
                    out[f"{module}.diff"] = _half(diff)
            else:
                try:
                    up, down = extract_lora(diff, rank)
                except RuntimeError as err:  # e.g. too many entries for torch.quantile; ComfyUI skips the key
                    log.warning("LoraSave: no LoRA weights for %s (%s)", key, err)
                    continue
                out[f"{module}.lora_up.weight"] = _half(up)
                out[f"{module}.lora_down.weight"] = _half(down)
        elif bias_diff and key.endswith(".bias"):
            out[f"{prefix}{key[: -len('.bias')]}.diff_b"] = _half(diff)
    return out
