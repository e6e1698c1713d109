"""LatentConcat, LatentCut, LatentBatchSeedBehavior and the LATENT_OPERATION nodes through the real executor, with
exact numbers computed here independently (numpy loops for the sharpen filter and the Reinhard curve)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.nodes.ops_env import OpsEnv


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> OpsEnv:
    return OpsEnv(Path(tmp_path_factory.mktemp("latent_operations")))


def lat(*shape: int, seed: int = 0) -> dict:
    return {"samples": torch.randn(*shape, generator=torch.Generator().manual_seed(seed))}


def test_latent_concat(env: OpsEnv) -> None:
    a, b = lat(2, 4, 3, 5), lat(1, 4, 3, 2, seed=1)
    out = env.value("LatentConcat", {"samples1": a, "samples2": b, "dim": "x"})["samples"]
    assert out.shape == (2, 4, 3, 7)
    assert torch.equal(out[..., :5], a["samples"]) and torch.equal(out[1, ..., 5:], b["samples"][0])
    before = env.value("LatentConcat", {"samples1": a, "samples2": lat(2, 4, 2, 5, seed=2), "dim": "-y"})["samples"]
    assert before.shape == (2, 4, 5, 5) and torch.equal(before[:, :, 2:], a["samples"])
    prompt = env.prompt("LatentConcat", {"samples1": a, "samples2": lat(2, 4, 2, 2), "dim": "x"})
    prompt["grab"] = {"class_type": "Grab", "inputs": {"value": ["n", 0]}}
    bad = env.run(prompt)
    assert bad.status == "error" and "differ in a dimension" in bad.error["exception_message"]


def test_latent_cut(env: OpsEnv) -> None:
    a = lat(1, 4, 6, 8)
    s = a["samples"]
    cut = env.value("LatentCut", {"samples": a, "dim": "x", "index": 2, "amount": 3})["samples"]
    assert torch.equal(cut, s[..., 2:5])
    clamped = env.value("LatentCut", {"samples": a, "dim": "y", "index": 4, "amount": 10})["samples"]
    assert torch.equal(clamped, s[:, :, 4:6])
    tail = env.value("LatentCut", {"samples": a, "dim": "x", "index": -3, "amount": 2})["samples"]
    assert torch.equal(tail, s[..., 5:7])
    far = env.value("LatentCut", {"samples": a, "dim": "x", "index": 100, "amount": 4})["samples"]
    assert torch.equal(far, s[..., 7:8])
    video = lat(1, 4, 5, 2, 2)  # B×C×T×H×W
    frames = env.value("LatentCut", {"samples": video, "dim": "t", "index": 1, "amount": 2})["samples"]
    assert torch.equal(frames, video["samples"][:, :, 1:3])


def test_latent_batch_seed_behavior(env: OpsEnv) -> None:
    a = {**lat(3, 4, 2, 2), "batch_index": [4, 5, 6]}
    fixed = env.value("LatentBatchSeedBehavior", {"samples": a, "seed_behavior": "fixed"})
    assert fixed["batch_index"] == [4, 4, 4] and torch.equal(fixed["samples"], a["samples"])
    assert a["batch_index"] == [4, 5, 6]
    plain = env.value("LatentBatchSeedBehavior", {"samples": lat(2, 4, 2, 2), "seed_behavior": "fixed"})
    assert plain["batch_index"] == [0, 0]
    random = env.value("LatentBatchSeedBehavior", {"samples": a, "seed_behavior": "random"})
    assert "batch_index" not in random
    assert env.info("LatentBatchSeedBehavior")["input"]["required"]["seed_behavior"] == [
        ["random", "fixed"], {"default": "fixed"}]


def reinhard_by_hand(x: np.ndarray, multiplier: float) -> np.ndarray:
    b, c, h, w = x.shape
    out = np.zeros_like(x)
    for i in range(b):
        norms = np.sqrt((x[i] ** 2).sum(axis=0)) + 1e-10
        top = (norms.std(ddof=1) * 5 + norms.mean()) * multiplier
        mapped = (norms / top) / (norms / top + 1.0) * top
        out[i] = x[i] / norms * mapped
    return out


def test_tonemap_reinhard_operation(env: OpsEnv) -> None:
    a = lat(2, 4, 5, 6, seed=3)
    prompt = env.prompt("LatentApplyOperation", {"samples": a})
    prompt["op"] = {"class_type": "LatentOperationTonemapReinhard", "inputs": {"multiplier": 0.8}}
    prompt["n"]["inputs"]["operation"] = ["op", 0]
    prompt["grab"] = {"class_type": "Grab", "inputs": {"value": ["n", 0]}}
    env.ok(prompt)
    out = env.grabbed[-1]["samples"]
    expected = reinhard_by_hand(a["samples"].double().numpy(), 0.8)
    np.testing.assert_allclose(out.double().numpy(), expected, rtol=1e-4, atol=1e-5)


def sharpen_by_hand(x: np.ndarray, radius: int, sigma: float, alpha: float) -> np.ndarray:
    size = 2 * radius + 1
    axis = np.linspace(-1, 1, size)
    g = np.exp(-(axis[:, None] ** 2 + axis[None, :] ** 2) / (2 * sigma * sigma))
    kernel = g / g.sum() * (alpha * -10)
    kernel[radius, radius] += 1.0 - kernel.sum()
    norms = np.sqrt((x ** 2).sum(axis=1, keepdims=True)) + 1e-6
    unit = np.pad(x / norms, ((0, 0), (0, 0), (radius, radius), (radius, radius)), mode="reflect")
    out = np.zeros_like(x)
    for yy in range(x.shape[2]):
        for xx in range(x.shape[3]):
            window = unit[:, :, yy:yy + size, xx:xx + size]
            out[:, :, yy, xx] = (window * kernel).sum(axis=(2, 3))
    return out * norms


def run_sharpen(env: OpsEnv, a: dict, radius: int, sigma: float, alpha: float) -> torch.Tensor:
    prompt = env.prompt("LatentApplyOperation", {"samples": a})
    prompt["op"] = {"class_type": "LatentOperationSharpen",
                    "inputs": {"sharpen_radius": radius, "sigma": sigma, "alpha": alpha}}
    prompt["n"]["inputs"]["operation"] = ["op", 0]
    prompt["grab"] = {"class_type": "Grab", "inputs": {"value": ["n", 0]}}
    env.ok(prompt)
    return env.grabbed[-1]["samples"]


def test_sharpen_operation(env: OpsEnv) -> None:
    a = lat(1, 3, 6, 7, seed=4)
    out = run_sharpen(env, a, 2, 1.0, 0.3)
    expected = sharpen_by_hand(a["samples"].double().numpy(), 2, 1.0, 0.3)
    np.testing.assert_allclose(out.double().numpy(), expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(run_sharpen(env, a, 2, 1.0, 0.0), a["samples"], rtol=1e-5, atol=1e-5)


def test_operation_object_info(env: OpsEnv) -> None:
    info = env.info("LatentOperationSharpen")
    assert info["output"] == ["LATENT_OPERATION"] and info["category"] == "latent/advanced/operations"
    assert info["input"]["required"]["sharpen_radius"][1] == {"default": 9, "min": 1, "max": 31, "step": 1}
    assert env.info("LatentApplyOperationCFG")["output"] == ["MODEL"]
    assert env.info("LatentCut")["input"]["required"]["dim"][0] == ["x", "y", "t"]
    assert env.info("LatentConcat")["input"]["required"]["dim"][0] == ["x", "-x", "y", "-y", "t", "-t"]
    assert math.isclose(env.info("LatentOperationTonemapReinhard")["input"]["required"]["multiplier"][1]["max"], 100)
