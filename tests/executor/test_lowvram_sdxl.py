"""`--lowvram` on SDXL: the tiny SDXL checkpoint (real layout: both text towers, per-block depths, ADM) sampled
and decoded through the real executor under a small fake device, with the UNet and text encoders partially
placed and streamed, gives the image of the fully placed run bit for bit; tiled VAE decoding of an SDXL-sized
latent (1024² pixels) runs under the same budget and matches the whole decode away from nothing but seams."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from executor.devices import FakeDevice
from executor.memory import MemoryPolicy, ModelManager
from executor.run import Executor
from tests.fixtures.tiny_sdxl import tiny_sdxl_state_dict, write
from tests.nodes.sd_env import SDEnv, txt2img

XL = "tiny-xl.safetensors"


def _env(base: Path, policy: MemoryPolicy, device: FakeDevice) -> SDEnv:
    env = SDEnv(base)
    write(tiny_sdxl_state_dict(), base / "models" / "checkpoints" / XL)
    env.models = ModelManager(policy, device=device)
    env.executor = Executor(env.registry, folders=env.folders, models=env.models)
    return env


def _budget(env: SDEnv) -> int:
    """Less than the tiny SDXL UNet's weights, so --lowvram must stream part of it."""
    unet = env.value({"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": XL}}}, "1", 0)
    return sum(p.numel() * p.element_size() for p in unet.model.parameters()) * 3 // 4


def _image(env: SDEnv, prompt: dict[str, Any]) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    image = env.value(prompt, "8", 0)
    return image, env.models.loaded_models()


def test_lowvram_sdxl_sampling_equals_the_normal_path(tmp_path: Path) -> None:
    normal = _env(tmp_path / "normal", MemoryPolicy(reserve_vram=0.0), FakeDevice(10 ** 11))
    budget = _budget(normal)
    prompt = txt2img(XL, size=64, steps=3)
    expected, placed = _image(normal, prompt)
    assert not any(m["partial"] for m in placed)

    device = FakeDevice(budget)
    low = _env(tmp_path / "low", MemoryPolicy(reserve_vram=0.0, lowvram=True), device)
    got, placed = _image(low, prompt)
    assert torch.equal(got, expected)
    assert device.peak <= device.budget
    assert any(m["partial"] and m["streamed_units"] for m in placed), placed


@pytest.mark.slow  # three 1024² decodes with the tiny VAE: minutes on a shared CPU
def test_tiled_vae_decode_at_sdxl_size_under_a_small_budget(tmp_path: Path) -> None:
    flags = {"lowvram": True}
    gen = torch.Generator().manual_seed(2)
    latent = torch.randn(1, 4, 128, 128, generator=gen)  # an SDXL 1024×1024 latent
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": XL}},
        "2": {"class_type": "VAEDecodeTiled", "inputs": {"samples": ["L", 0], "vae": ["1", 2], "tile_size": 512,
                                                          "overlap": 64, "temporal_size": 64,
                                                          "temporal_overlap": 8}},
    }
    normal = _env(tmp_path / "normal", MemoryPolicy(reserve_vram=0.0), FakeDevice(10 ** 11))
    _latent_node(normal, latent)
    prompt = _with_latent(prompt)
    vae = normal.value(prompt, "1", 2)
    vae_bytes = sum(p.numel() * p.element_size() for p in vae.model.parameters())
    expected = normal.value(prompt, "2", 0)
    assert expected.shape == (1, 1024, 1024, 3)
    whole = normal.value({**prompt, "3": {"class_type": "VAEDecode", "inputs": {"samples": ["L", 0],
                                                                                "vae": ["1", 2]}}}, "3", 0)
    assert (expected - whole).abs().mean().item() < 0.02

    device = FakeDevice(vae_bytes // 2)
    low = _env(tmp_path / "low", MemoryPolicy(reserve_vram=0.0, **flags), device)
    _latent_node(low, latent)
    got = low.value(prompt, "2", 0)
    assert torch.equal(got, expected)
    assert device.peak <= device.budget
    assert any(m["kind"] == "vae" and m["partial"] for m in low.models.loaded_models())


def _latent_node(env: SDEnv, latent: torch.Tensor) -> None:
    """A node "L" giving a fixed LATENT (the registry is the test's own)."""
    from nodes.spec import Node, Output

    class FixedLatent(Node):
        OUTPUTS = (Output("LATENT"),)

        def execute(self) -> tuple[dict[str, torch.Tensor]]:
            return ({"samples": latent.clone()},)

    env.registry.register(FixedLatent)


def _with_latent(prompt: dict[str, Any]) -> dict[str, Any]:
    return {**prompt, "L": {"class_type": "FixedLatent", "inputs": {}}}
