"""HyperTile and ToMe: the token regrouping against hand computations, and both nodes through the real executor on
the tiny SD1.5 checkpoint (neutral settings give the plain image, others change it, reruns repeat it)."""
from __future__ import annotations

from typing import Any

import pytest
import torch

from diffusion.adapters.token_patches import (HyperTilePatch, TomePatch, feature_map_size, hypertile_widths,
                                     plan_token_merge, random_divisor)
from tests.nodes.sd_env import SDEnv, txt2img


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> SDEnv:
    return SDEnv(tmp_path_factory.mktemp("tokens"))


def test_feature_map_size_and_divisors() -> None:
    assert feature_map_size(64, 1.0) == (8, 8)
    # ComfyUI's convention, kept for identical images: h = round(sqrt(hw·aspect)) with aspect = width/height, so a
    # wide map is split as if it were tall
    assert feature_map_size(8 * 12, 12 / 8) == (12, 8)
    assert random_divisor(8, 4, 1, 0) == 2  # the smallest divisor ≥ 4 is 4 → 2 tiles
    assert random_divisor(8, 100, 1, 0) == 1
    assert {random_divisor(12, 2, 3, c) for c in range(20)} <= {6, 4, 3}


def test_hypertile_tiles_are_spatial_blocks_and_restore_exactly() -> None:
    patch = HyperTilePatch(4, hypertile_widths(4, 0), latent_tile=4, swap_size=1, scale_depth=False)
    h, w = 8, 8
    grid = torch.arange(h * w, dtype=torch.float32).reshape(1, h * w, 1).repeat(2, 1, 4)
    tiled, context, value = patch(grid, None, None, {"original_shape": [2, 4, h, w]})
    assert context is None and value is None
    assert tiled.shape == (2 * 2 * 2, 16, 4)  # 8×8 in 4×4 tiles
    expected_first = torch.arange(h * w).reshape(h, w)[0:4, 4:8].flatten().float()  # row 0, column 1
    assert torch.equal(tiled[1, :, 0], expected_first)
    assert torch.equal(patch.restore(tiled, {}), grid)
    wide = torch.randn(1, 96, 8)  # a width HyperTile does not touch
    assert patch(wide, None, None, {"original_shape": [1, 4, h, w]})[0] is wide


def test_token_merge_by_hand() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 3, generator=gen)
    plan = plan_token_merge(x, 4, 4, 2, 2, 5, torch.Generator().manual_seed(1))
    assert plan is not None and plan.dst_idx.numel() == 4 and plan.src_idx.numel() == 12
    merged = plan.merge(x)
    assert merged.shape == (2, 11, 3)
    restored = plan.unmerge(merged)
    for b in range(2):
        sums = {int(d): [x[b, d]] for d in plan.dst_idx}
        for s, t in zip(plan.merged[b], plan.target[b]):
            sums[int(plan.dst_idx[t])].append(x[b, plan.src_idx[s]])
        means = {d: torch.stack(v).mean(0) for d, v in sums.items()}
        for d, mean in means.items():
            torch.testing.assert_close(restored[b, d], mean)
        for s, t in zip(plan.merged[b], plan.target[b]):
            torch.testing.assert_close(restored[b, plan.src_idx[s]], means[int(plan.dst_idx[t])])
        for s in plan.unmerged[b]:
            assert torch.equal(restored[b, plan.src_idx[s]], x[b, plan.src_idx[s]])
    # merged sources are the ones most similar to some destination
    unit = x / x.norm(dim=-1, keepdim=True)
    best = (unit[:, plan.src_idx] @ unit[:, plan.dst_idx].transpose(1, 2)).max(-1).values
    for b in range(2):
        assert best[b, plan.merged[b]].min() >= best[b, plan.unmerged[b]].max()
    assert plan_token_merge(x, 4, 4, 2, 2, 0) is None


def test_tome_patch_merges_queries_only_at_full_resolution() -> None:
    patch = TomePatch(0.5)
    x = torch.randn(1, 64, 8)
    q, k, v = patch(x, None, None, {"original_shape": [1, 4, 8, 8], "sigmas": torch.tensor([3.0]),
                                    "block": ("input", 1)})
    assert q.shape == (1, 32, 8) and k is x and v is x
    assert patch.restore(torch.zeros(1, 32, 8), {}).shape == (1, 64, 8)
    low = torch.randn(1, 16, 8)  # a 4×4 level of an 8×8 latent
    assert patch(low, None, None, {"original_shape": [1, 4, 8, 8], "sigmas": torch.tensor([3.0])})[0] is low


def sample(env: SDEnv, node: dict[str, Any] | None) -> torch.Tensor:
    prompt = txt2img(steps=2, size=64)
    del prompt["8"], prompt["9"]
    if node is not None:
        prompt["p"] = node
        prompt["3"]["inputs"]["model"] = ["p", 0]
    return env.value(prompt, "3")["samples"]


def test_hypertile_node(env: SDEnv) -> None:
    base = sample(env, None)
    big = {"class_type": "HyperTile", "inputs": {"model": ["4", 0], "tile_size": 2048, "swap_size": 1,
                                                 "max_depth": 3, "scale_depth": False}}
    torch.testing.assert_close(sample(env, big), base)  # tiles larger than the image: one tile, no change
    small = {"class_type": "HyperTile", "inputs": {"model": ["4", 0], "tile_size": 32, "swap_size": 1,
                                                   "max_depth": 0, "scale_depth": False}}
    tiled = sample(env, small)
    assert torch.isfinite(tiled).all() and (tiled - base).abs().max() > 1e-4
    info = env.registry.object_info(env.folders)["HyperTile"]
    assert info["input_order"]["required"] == ["model", "tile_size", "swap_size", "max_depth", "scale_depth"]


def test_tome_node(env: SDEnv) -> None:
    base = sample(env, None)
    zero = {"class_type": "TomePatchModel", "inputs": {"model": ["4", 0], "ratio": 0.0}}
    torch.testing.assert_close(sample(env, zero), base)
    half = {"class_type": "TomePatchModel", "inputs": {"model": ["4", 0], "ratio": 0.5}}
    merged = sample(env, half)
    assert torch.isfinite(merged).all() and (merged - base).abs().max() > 1e-4
    again = TomePatch(0.5)  # a fresh patch object: the merge choices come from the step, not from state
    assert again.ratio == 0.5
    assert env.registry.object_info(env.folders)["TomePatchModel"]["input"]["required"]["ratio"][1] == {
        "default": 0.3, "min": 0.0, "max": 1.0, "step": 0.01}
