"""The memory manager places a model's weight-holding patches (hypernetworks) with the model: nodes never do."""
from __future__ import annotations

import torch
from torch import nn

from diffusion.adapters.model_patches import HypernetworkPatch
from diffusion.patcher import ModelHandle
from executor.devices import FakeDevice
from executor.memory import MemoryPolicy, ModelManager
from executor.memory_load import patch_modules


def hypernetwork(width: int = 8) -> HypernetworkPatch:
    mlp = nn.Sequential(nn.Linear(width, width * 2), nn.Linear(width * 2, width))
    return HypernetworkPatch({width: nn.ModuleList([mlp, nn.Sequential(nn.Linear(width, width))])}, strength=0.5)


def devices(patch: HypernetworkPatch) -> set[str]:
    return {p.device.type for mlps in patch.layers.values() for p in mlps.parameters()}


def test_patch_modules_are_found_once_in_patches_and_replacements() -> None:
    a, b = hypernetwork(), hypernetwork()
    options = {"transformer_options": {"patches": {"attn1_patch": [a, print], "attn2_patch": [a]},
                                       "patches_replace": {"attn1": {("input", 1, 0): b}}}}
    assert patch_modules(options) == [a, b]
    assert patch_modules({}) == []


class RecordingPatch:
    """A pack-style patch object holding weights: it follows the protocol (`to(device)`) and notes each move."""

    def __init__(self) -> None:
        self.moves: list[str] = []

    def to(self, device: torch.device) -> "RecordingPatch":
        self.moves.append(torch.device(device).type)
        return self

    def __call__(self, x: torch.Tensor, context: object, value: object, options: dict) -> tuple:
        return x, context, value


def test_manager_moves_patch_modules_with_the_model_and_back_on_unload() -> None:
    device = FakeDevice(1 << 30)
    device.device = torch.device("meta")  # a compute device distinct from the CPU offload device
    mm = ModelManager(MemoryPolicy(reserve_vram=0.0), device=device)
    patch = RecordingPatch()
    handle = ModelHandle(nn.Linear(4, 4, device="meta"), name="unet", kind="unet").clone()
    handle.options["transformer_options"] = {"patches": {"attn1_patch": [patch], "attn2_patch": [patch]}}
    with mm.use([handle]) as where:
        assert where.type == "meta" and patch.moves == ["meta"]
    assert mm.unload_all() == 1
    assert patch.moves == ["meta", "cpu"]


def test_hypernetwork_patch_moves_its_layers() -> None:
    patch = hypernetwork()
    assert devices(patch) == {"cpu"}
    assert patch.to("meta") is patch and devices(patch) == {"meta"}


def test_hypernetwork_computes_in_its_layers_dtype_and_returns_the_activation_dtype() -> None:
    patch = hypernetwork()
    k = torch.randn(1, 3, 8, dtype=torch.float16)
    x, k_in, v_in = patch(k, None, None, {})
    assert x is k and k_in.dtype == torch.float16 and v_in.dtype == torch.float16
    expected = k.float() + patch.layers[8][0](k.float()) * 0.5
    assert torch.allclose(k_in.float(), expected, atol=2e-2)
    other = torch.randn(1, 3, 5)
    assert patch(other, None, None, {})[1] is None  # no layers for that width: untouched
