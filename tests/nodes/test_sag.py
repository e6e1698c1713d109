"""Self-attention guidance: the blur lands only where the recorded attention is high, the recorded attention is the
real one, and the node through the real executor (scale 0 gives the plain image; the middle block's attention is
captured for the unconditional pass; other scales change the image)."""
from __future__ import annotations

import pytest
import torch

from diffusion.networks.attention import attention
from diffusion.sampling.sag import SelfAttentionGuidancePatch, attention_mask, attention_with_probabilities, blur_where_attended
from tests.nodes.sd_env import SDEnv, txt2img


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> SDEnv:
    return SDEnv(tmp_path_factory.mktemp("sag"))


def test_blur_only_where_attention_is_high() -> None:
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(1, 4, 8, 8, generator=gen)
    tokens = 16  # a 4×4 attention level of the 8×8 latent
    probabilities = torch.full((2, tokens, tokens), 1.0 / tokens)  # 2 heads, uniform: every key receives exactly 1
    probabilities[:, :, 5] += 0.5  # key token 5 (row 1, column 1) draws extra attention ...
    probabilities[:, :, 6] -= 0.5  # ... from token 6, so rows still sum to 1
    mask = attention_mask(x0, probabilities)
    expected = torch.zeros(8, 8)
    expected[2:4, 2:4] = 1.0  # token (1, 1) upsampled ×2
    assert torch.equal(mask[0, 0], expected)
    out = blur_where_attended(x0, probabilities, sigma=2.0)
    assert torch.equal(out[..., expected == 0], x0[..., expected == 0])
    assert (out[..., expected == 1] - x0[..., expected == 1]).abs().min() > 0


def test_recorded_attention_is_the_real_attention() -> None:
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(4, 6, 8, generator=gen) for _ in range(3))
    out, probabilities = attention_with_probabilities(q, k, v, heads=2)
    torch.testing.assert_close(out, attention(q, k, v, 2), rtol=1e-4, atol=1e-5)
    assert probabilities.shape == (8, 6, 6)
    torch.testing.assert_close(probabilities.sum(-1), torch.ones(8, 6))
    patch = SelfAttentionGuidancePatch(0.5, 2.0)
    patch.record(q, k, v, {"n_heads": 2, "cond_or_uncond": [0, 1]})  # batch halves: cond then uncond
    torch.testing.assert_close(patch.uncond_probabilities, probabilities[4:])
    patch.uncond_probabilities = None
    patch.record(q, k, v, {"n_heads": 2, "cond_or_uncond": [0]})
    assert patch.uncond_probabilities is None


def sample(env: SDEnv, node: dict | None, cfg: float = 5.0) -> torch.Tensor:
    prompt = txt2img(steps=2, size=64, cfg=cfg)
    del prompt["8"], prompt["9"]
    if node is not None:
        prompt["p"] = node
        prompt["3"]["inputs"]["model"] = ["p", 0]
    return env.value(prompt, "3")["samples"]


def test_sag_node(env: SDEnv) -> None:
    base = sample(env, None)
    node = {"class_type": "SelfAttentionGuidance", "inputs": {"model": ["4", 0], "scale": 0.0, "blur_sigma": 2.0}}
    # Scale 0 is plain sampling up to kernel rounding: the recorded middle-block attention is an explicit softmax
    # instead of SDPA. The random-weight model's latents reach the hundreds, so the bound is relative to their size.
    size = base.abs().max()
    plain = sample(env, node)
    print(f"SAG: latents up to {size:.1f}; scale 0 differs by {(plain - base).abs().max():.2e}")
    assert (plain - base).abs().max() <= 1e-5 * size
    node["inputs"]["scale"] = 0.8
    guided = sample(env, node)
    assert torch.isfinite(guided).all() and (guided - base).abs().max() > 1e-2 * size
    patched = env.value({"4": txt2img()["4"], "p": node}, "p")
    record = patched.options["transformer_options"]["patches_replace"]["attn1"][("middle", 0, 0)]
    assert record.__self__.uncond_probabilities is not None  # the sampling run recorded the uncond attention
    # at cfg 1 the unconditional pass still runs, so SAG still acts
    assert (sample(env, node, cfg=1.0) - sample(env, None, cfg=1.0)).abs().max() > 1e-4
    info = env.registry.object_info(env.folders)["SelfAttentionGuidance"]
    assert info["display_name"] == "Self-Attention Guidance"
    assert info["input"]["required"]["scale"][1] == {"default": 0.5, "min": -2.0, "max": 5.0, "step": 0.01}
