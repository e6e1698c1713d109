"""Self-attention patches that regroup the tokens of the UNet's transformer blocks, as `attn1_patch` /
`attn1_output_patch` pairs (`diffusion/networks/unet_blocks.py`):

- HyperTile (github.com/tfernd/HyperTile): at the widths chosen by max_depth, self-attention runs within tiles of
  about tile_size pixels instead of over the whole image — the tokens are regrouped into (batch·tiles) sequences
  before attention and put back after. Tile counts are picked among the divisors of the feature map's sides, by a
  counter-seeded choice among the `swap_size` largest, so the tiling changes from call to call.
- ToMe for SD (Bolya & Hoffman 2023, "Token Merging for Fast Stable Diffusion", arXiv:2303.17604): before
  self-attention on the full-resolution blocks, a ratio of the tokens (sources, outside a random one-per-stride
  grid of destinations) is merged into its most similar destination by averaging; after attention, each source
  token takes its destination's output again.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch


def random_divisor(value: int, min_value: int, max_options: int = 1, counter: int = 0) -> int:
    """value // d for d among the `max_options` smallest divisors of value that are ≥ min_value (at most value),
    chosen by a generator seeded with counter."""
    min_value = min(min_value, value)
    divisors = [i for i in range(min_value, value + 1) if value % i == 0]
    options = [value // i for i in divisors[:max_options]]
    return options[random.Random(counter).randint(0, len(options) - 1)]


@lru_cache(maxsize=256)
def feature_map_size(hw: int, aspect_ratio: float) -> tuple[int, int]:
    """(h, w) with h·w = hw near h = sqrt(hw·aspect_ratio), aspect_ratio being the latent's width/height.

    This is ComfyUI's HyperTile convention (a wide map is split as if it were tall); Loom keeps it so the same
    workflow gives the same image."""
    h, w = round(math.sqrt(hw * aspect_ratio)), round(math.sqrt(hw / aspect_ratio))
    if h * w == hw:
        return h, w
    if (hw / h).is_integer():
        return h, hw // h
    if (hw / w).is_integer():
        return hw // w, w
    pairs = [(i, hw // i) for i in range(2, hw + 1) if hw % i == 0]
    return min(pairs, key=lambda p: abs(p[1] / p[0] - aspect_ratio))


@dataclass(eq=False)
class HyperTilePatch:
    """The attn1_patch (`__call__`) and attn1_output_patch (`restore`) of HyperTile."""

    model_channels: int
    widths: frozenset[int]
    latent_tile: int
    swap_size: int
    scale_depth: bool
    counter: int = 1
    _pending: tuple[int, int, int, int] | None = field(default=None, repr=False)

    def __call__(self, x: torch.Tensor, context: Any, value: Any, options: dict[str, Any]) -> tuple:
        shape = options.get("original_shape")
        if x.shape[-1] not in self.widths or shape is None:  # no latent shape: a network that is not the UNet
            return x, context, value
        h, w = feature_map_size(x.shape[1], shape[-1] / shape[-2])
        factor = 2 ** ((x.shape[-1] // self.model_channels) - 1) if self.scale_depth else 1
        nh = random_divisor(h, self.latent_tile * factor, self.swap_size, self.counter)
        nw = random_divisor(w, self.latent_tile * factor, self.swap_size, self.counter + 1)
        self.counter += 2
        if nh * nw > 1:
            b, _, c = x.shape
            tiles = x.reshape(b, nh, h // nh, nw, w // nw, c).permute(0, 1, 3, 2, 4, 5)
            x = tiles.reshape(b * nh * nw, (h // nh) * (w // nw), c)
            self._pending = (nh, nw, h, w)
        return x, context, value

    def restore(self, out: torch.Tensor, options: dict[str, Any]) -> torch.Tensor:
        if self._pending is None:
            return out
        nh, nw, h, w = self._pending
        self._pending = None
        c = out.shape[-1]
        tiles = out.reshape(-1, nh, nw, h // nh, w // nw, c).permute(0, 1, 3, 2, 4, 5)
        return tiles.reshape(-1, h * w, c)


def hypertile_widths(model_channels: int, max_depth: int) -> frozenset[int]:
    """The token widths HyperTile tiles: model_channels·2^d for d = 0..max_depth."""
    return frozenset(model_channels * 2 ** d for d in range(max_depth + 1))


@dataclass(frozen=True)
class TokenMerge:
    """One bipartite soft matching: which source tokens merge into which destination, per batch element."""

    src_idx: torch.Tensor  # (S,) source token positions
    dst_idx: torch.Tensor  # (D,) destination token positions
    unmerged: torch.Tensor  # (B, S − r) indices into the sources that stay
    merged: torch.Tensor  # (B, r) indices into the sources that merge
    target: torch.Tensor  # (B, r) the destination (index into dst) each merged source joins
    tokens: int

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) → (B, N − r, C): the unmerged sources, then the destinations averaged with their sources."""
        b, _, c = x.shape
        src, dst = x[:, self.src_idx], x[:, self.dst_idx]
        keep = torch.gather(src, 1, self.unmerged[..., None].expand(b, -1, c))
        moving = torch.gather(src, 1, self.merged[..., None].expand(b, -1, c))
        dst = dst.scatter_reduce(1, self.target[..., None].expand(b, -1, c), moving, reduce="mean")
        return torch.cat([keep, dst], dim=1)

    def unmerge(self, y: torch.Tensor) -> torch.Tensor:
        """(B, N − r, C) → (B, N, C): every merged source gets its destination's value back."""
        b, _, c = y.shape
        n_keep = self.unmerged.shape[1]
        keep, dst = y[:, :n_keep], y[:, n_keep:]
        out = y.new_zeros(b, self.tokens, c)
        out[:, self.dst_idx] = dst
        src_positions = self.src_idx.to(y.device)
        keep_at = src_positions[self.unmerged]
        merged_at = src_positions[self.merged]
        out.scatter_(1, keep_at[..., None].expand(b, -1, c), keep)
        out.scatter_(1, merged_at[..., None].expand(b, -1, c), torch.gather(dst, 1, self.target[..., None].expand(
            b, -1, c)))
        return out


def destination_mask(h: int, w: int, sx: int, sy: int, generator: torch.Generator | None,
                     device: torch.device) -> torch.Tensor:
    """(h·w,) booleans: one destination token at a random place in each full sy×sx cell; the rest are sources."""
    hsy, wsx = h // sy, w // sx
    pick = torch.randint(sy * sx, (hsy, wsx), generator=generator, device=generator.device if generator else "cpu")
    pick = pick.to(device)
    rows = torch.arange(hsy, device=device)[:, None] * sy + pick // sx
    cols = torch.arange(wsx, device=device)[None, :] * sx + pick % sx
    mask = torch.zeros(h, w, dtype=torch.bool, device=device)
    mask[rows, cols] = True
    return mask.flatten()


def plan_token_merge(metric: torch.Tensor, w: int, h: int, sx: int, sy: int, r: int,
                     generator: torch.Generator | None = None) -> TokenMerge | None:
    """Merge the r sources most similar (cosine) to some destination into it (ToMe's bipartite soft matching with
    random 2-D destinations); None when nothing merges."""
    b, n, _ = metric.shape
    if r <= 0 or w == 1 or h == 1 or h * w != n:
        return None
    is_dst = destination_mask(h, w, sx, sy, generator, metric.device)
    dst_idx, src_idx = is_dst.nonzero().flatten(), (~is_dst).nonzero().flatten()
    r = min(r, src_idx.numel())
    unit = metric / metric.norm(dim=-1, keepdim=True)
    scores = unit[:, src_idx] @ unit[:, dst_idx].transpose(-1, -2)
    best, best_dst = scores.max(dim=-1)
    order = best.argsort(dim=-1, descending=True)
    merged, unmerged = order[:, :r], order[:, r:]
    return TokenMerge(src_idx, dst_idx, unmerged, merged, torch.gather(best_dst, 1, merged), n)


@dataclass(eq=False)
class TomePatch:
    """ToMe as attn1_patch (`__call__`: the queries merged, keys and values kept whole) and attn1_output_patch
    (`restore`). Only blocks at the latent's full resolution are merged; destinations are drawn from a generator
    seeded per call from the sigma and block, so a rerun gives the same image."""

    ratio: float
    _plan: TokenMerge | None = field(default=None, repr=False)

    def _generator(self, options: dict[str, Any]) -> torch.Generator:
        sigma = float(options["sigmas"][0]) if "sigmas" in options else 0.0
        block = options.get("block", ("", 0))
        part = {"input": 1, "middle": 2, "output": 3}.get(block[0], 0)
        seed = (int(sigma * 10000) * 1009 + part * 101 + int(block[1])) % (2 ** 63)
        return torch.Generator(device="cpu").manual_seed(seed)

    def __call__(self, x: torch.Tensor, context: Any, value: Any, options: dict[str, Any]) -> tuple:
        self._plan = None
        if options.get("original_shape") is None:  # no latent shape: a network that is not the UNet
            return x, context, value
        _, _, height, width = options["original_shape"]
        if math.ceil(math.sqrt((height * width) // x.shape[1])) > 1:  # not a full-resolution block
            return x, context, value
        plan = plan_token_merge(x, width, height, 2, 2, int(x.shape[1] * self.ratio), self._generator(options))
        if plan is None:
            return x, context, value
        self._plan = plan
        whole = x if context is None else context
        return plan.merge(x), whole, whole if value is None else value

    def restore(self, out: torch.Tensor, options: dict[str, Any]) -> torch.Tensor:
        plan, self._plan = self._plan, None
        return out if plan is None else plan.unmerge(out)


@dataclass(frozen=True)
class RestoreTokens:
    """The attn1_output_patch half of a token-regrouping patch (HyperTile, ToMe)."""

    patch: Any

    def __call__(self, out: torch.Tensor, options: dict[str, Any]) -> torch.Tensor:
        return self.patch.restore(out, options)
