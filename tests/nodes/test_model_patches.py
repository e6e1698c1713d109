"""FreeU, FreeU_V2, PatchModelAddDownscale and HypernetworkLoader: the patches against independent computations,
and each node through the real executor on the tiny SD1.5 checkpoint (the image changes; neutral settings give
the unpatched image)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from diffusion.adapters.model_patches import DeepShrinkInput, FreeUPatch, HypernetworkPatch, read_hypernetwork
from nodes.upscaling_math import common_upscale
from tests.nodes.sd_env import SDEnv, txt2img


def write_tiny_hypernetwork(path: Path, dims: tuple[int, ...] = (32, 64, 128), seed: int = 0) -> dict[int, list]:
    """A hypernetwork in A1111's `.pt` layout: {width: [key MLP state, value MLP state], options}; each MLP is
    `linear.0` (d→2d), ReLU, `linear.2` (2d→d)."""
    gen = torch.Generator().manual_seed(seed)
    sd: dict[Any, Any] = {"activation_func": "relu", "is_layer_norm": False, "use_dropout": False,
                          "activate_output": False, "last_layer_dropout": False, "layer_structure": [1, 2, 1]}
    for d in dims:
        sd[d] = [{"linear.0.weight": 0.2 * torch.randn(2 * d, d, generator=gen),
                  "linear.0.bias": 0.1 * torch.randn(2 * d, generator=gen),
                  "linear.2.weight": 0.2 * torch.randn(d, 2 * d, generator=gen),
                  "linear.2.bias": 0.1 * torch.randn(d, generator=gen)} for _ in range(2)]
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, path)
    return sd


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> SDEnv:
    env = SDEnv(tmp_path_factory.mktemp("patches"))
    write_tiny_hypernetwork(env.base / "models" / "hypernetworks" / "tiny.pt")
    return env


def test_freeu_scales_backbone_and_filters_skip_low_frequencies() -> None:
    gen = torch.Generator().manual_seed(0)
    h, skip = torch.randn(2, 128, 6, 8, generator=gen), torch.randn(2, 128, 6, 8, generator=gen)
    out_h, out_skip = FreeUPatch(32, b1=1.5, b2=1.2, s1=0.3, s2=0.2)(h, skip, {})
    torch.testing.assert_close(out_h[:, :64], h[:, :64] * 1.5)
    assert torch.equal(out_h[:, 64:], h[:, 64:])
    # the filter scales the spectrum by s1 at the frequencies {0, -1} of each axis; the real part it keeps makes
    # the effective factor (m(f) + m(-f)) / 2
    mask = torch.ones(6, 8)
    for i in (0, -1):
        for j in (0, -1):
            mask[i, j] = 0.3
    mirrored = mask[(-torch.arange(6)) % 6][:, (-torch.arange(8)) % 8]
    ratio = torch.fft.fft2(out_skip) / torch.fft.fft2(skip)
    torch.testing.assert_close(ratio.real, ((mask + mirrored) / 2).expand_as(ratio.real), rtol=1e-4, atol=1e-4)
    untouched = torch.randn(2, 96, 6, 8, generator=gen)  # a width FreeU does not touch
    assert FreeUPatch(32, 1.5, 1.2, 0.3, 0.2)(untouched, skip, {})[0] is untouched


def test_freeu_v2_scales_by_the_normalised_mean_map() -> None:
    gen = torch.Generator().manual_seed(1)
    h, skip = torch.randn(1, 64, 4, 4, generator=gen), torch.randn(1, 64, 4, 4, generator=gen)
    out_h, _ = FreeUPatch(32, b1=1.1, b2=1.4, s1=0.9, s2=0.2, version=2)(h, skip, {})
    mean = h.mean(1)
    norm = (mean - mean.min()) / (mean.max() - mean.min())
    torch.testing.assert_close(out_h[:, :32], h[:, :32] * ((1.4 - 1) * norm + 1)[:, None])


def test_deep_shrink_acts_at_its_block_inside_its_sigma_range() -> None:
    patch = DeepShrinkInput(3, 2.0, sigma_start=10.0, sigma_end=1.0, method="bilinear", resize=common_upscale)
    h = torch.randn(1, 4, 8, 8)
    assert patch(h, {"block": ("input", 3), "sigmas": torch.tensor([5.0])}).shape[-2:] == (4, 4)
    assert patch(h, {"block": ("input", 2), "sigmas": torch.tensor([5.0])}) is h
    assert patch(h, {"block": ("input", 3), "sigmas": torch.tensor([0.5])}) is h


def test_hypernetwork_adds_mlp_outputs_to_keys_and_values(tmp_path: Path) -> None:
    sd = write_tiny_hypernetwork(tmp_path / "h.pt", dims=(16,))
    patch = HypernetworkPatch(read_hypernetwork(tmp_path / "h.pt"), strength=0.7)
    x, ctx = torch.randn(2, 5, 16), torch.randn(2, 7, 16)

    def mlp(weights: dict, t: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(t @ weights["linear.0.weight"].T + weights["linear.0.bias"])
        return hidden @ weights["linear.2.weight"].T + weights["linear.2.bias"]

    q, k, v = patch(x, ctx, ctx, {})
    assert q is x
    torch.testing.assert_close(k, ctx + 0.7 * mlp(sd[16][0], ctx))
    torch.testing.assert_close(v, ctx + 0.7 * mlp(sd[16][1], ctx))
    _, k_self, v_self = patch(x, None, None, {})  # self-attention: keys and values come from x
    torch.testing.assert_close(k_self, x + 0.7 * mlp(sd[16][0], x))
    assert patch(torch.randn(1, 3, 8), None, None, {})[1] is None  # no layers for width 8


def _sample(env: SDEnv, node: dict[str, Any] | None, size: int = 32) -> torch.Tensor:
    prompt = txt2img(steps=2, size=size)
    if node is not None:
        prompt["p"] = node
        prompt["3"]["inputs"]["model"] = ["p", 0]
    return env.value(prompt, "8")


@pytest.mark.parametrize("class_type", ["FreeU", "FreeU_V2"])
def test_freeu_nodes(env: SDEnv, class_type: str) -> None:
    base = _sample(env, None)
    node = {"class_type": class_type, "inputs": {"model": ["4", 0], "b1": 1.3, "b2": 1.4, "s1": 0.9, "s2": 0.2}}
    assert (_sample(env, node) - base).abs().max() > 1e-3
    neutral = {"class_type": class_type, "inputs": {"model": ["4", 0], "b1": 1.0, "b2": 1.0, "s1": 1.0, "s2": 1.0}}
    torch.testing.assert_close(_sample(env, neutral), base, rtol=0, atol=1e-4)
    info = env.registry.object_info(env.folders)[class_type]
    assert info["category"] == "model_patches/unet"
    assert info["input"]["required"]["b1"][1]["default"] == (1.1 if class_type == "FreeU" else 1.3)


def test_deep_shrink_node(env: SDEnv) -> None:
    base = _sample(env, None, size=64)
    inputs = {"model": ["4", 0], "block_number": 3, "downscale_factor": 2.0, "start_percent": 0.0,
              "end_percent": 0.35, "downscale_after_skip": False, "downscale_method": "bicubic",
              "upscale_method": "bicubic"}
    shrunk = _sample(env, {"class_type": "PatchModelAddDownscale", "inputs": inputs}, size=64)
    assert shrunk.shape == base.shape and torch.isfinite(shrunk).all()
    assert (shrunk - base).abs().max() > 1e-3
    after = env.value({"4": txt2img()["4"], "p": {"class_type": "PatchModelAddDownscale",
                                                 "inputs": {**inputs, "downscale_after_skip": True}}}, "p")
    patches = after.options["transformer_options"]["patches"]
    assert set(patches) == {"input_block_patch_after_skip", "output_block_patch"}
    shrunk_after = _sample(env, {"class_type": "PatchModelAddDownscale",
                                 "inputs": {**inputs, "downscale_after_skip": True}}, size=64)
    assert shrunk_after.shape == base.shape and torch.isfinite(shrunk_after).all()
    assert (shrunk_after - base).abs().max() > 1e-3 and (shrunk_after - shrunk).abs().max() > 1e-3
    info = env.registry.object_info(env.folders)["PatchModelAddDownscale"]
    assert info["display_name"] == "PatchModelAddDownscale (Kohya Deep Shrink)"
    assert info["input"]["required"]["downscale_method"][0] == ["bicubic", "nearest-exact", "bilinear", "area",
                                                                "bislerp"]


def test_hypernetwork_loader_node(env: SDEnv) -> None:
    base = _sample(env, None)
    node = {"class_type": "HypernetworkLoader", "inputs": {"model": ["4", 0], "hypernetwork_name": "tiny.pt",
                                                           "strength": 1.0}}
    assert (_sample(env, node) - base).abs().max() > 1e-3
    node["inputs"]["strength"] = 0.0
    assert torch.equal(_sample(env, node), base)
