"""RAM soak: 50 alternating loads of two models with a fresh LoRA-like clone each time; resident memory must stop
growing after the first cycle (a leak of backups, device copies or hooks would grow it by megabytes per cycle)."""
from __future__ import annotations

import gc
from pathlib import Path

import pytest
import torch
from torch import nn

from diffusion.patcher import ModelHandle, WeightPatch
from executor.devices import FakeDevice, release_host_memory
from executor.memory import MemoryPolicy, ModelManager

MIB = 1024 ** 2


def rss() -> int:
    """Resident set size of this process in bytes (VmRSS from /proc/self/status), after returning the C
    allocator's free pages to the system where glibc allows it (so retained free memory does not read as a leak)."""
    gc.collect()
    release_host_memory()
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def model(seed: int) -> nn.Module:
    """About 16 MiB of fp32 weights in streamable layers."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(1024, 1024), nn.SiLU(), nn.Linear(1024, 1024), nn.LayerNorm(1024),
                         nn.Linear(1024, 1024), nn.Linear(1024, 1024))


def lora(rank: int, seed: int) -> WeightPatch:
    g = torch.Generator().manual_seed(seed)
    up, down = torch.randn(1024, rank, generator=g), torch.randn(rank, 1024, generator=g)
    return WeightPatch(compute_delta=lambda w: up @ down, strength=0.1, ident=("lora", seed))


def one_cycle(mm: ModelManager, a: ModelHandle, b: ModelHandle, i: int, x: torch.Tensor) -> None:
    """One 'prompt': a fresh LoRA clone of A, then B, each run once."""
    patched = a.clone()
    patched.add_patches({"0.weight": lora(8, i % 3), "4.weight": lora(4, 100 + i % 2)})
    for handle in (patched, b):
        with mm.use([handle]), torch.no_grad():
            handle.model(x)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc/self/status")
@pytest.mark.parametrize("where", ["cpu", "fake-device-one-model-fits", "fake-device-partial"])
def test_rss_stops_growing(where: str) -> None:
    a, b = ModelHandle(model(0), name="a"), ModelHandle(model(1), name="b")
    size = a.nbytes()
    if where == "cpu":
        mm = ModelManager(MemoryPolicy(cpu=True))
    else:
        budget = int(size * 1.2) if where == "fake-device-one-model-fits" else int(size * 0.6)
        mm = ModelManager(MemoryPolicy(reserve_vram=0.0), device=FakeDevice(budget))
    base = {k: v.clone() for k, v in a.model.state_dict().items()}
    x = torch.randn(8, 1024)
    samples = []
    for i in range(50):
        one_cycle(mm, a, b, i, x)
        samples.append(rss())
    trace = [s // MIB for s in samples]
    # A leak of one 4 MiB weight, backup or device copy per cycle would add ~200 MiB over 49 cycles; allocator
    # noise is a few weights' worth and does not trend.
    assert max(samples[-10:]) - samples[0] < size, f"RSS grew after the first cycle (MiB): {trace}"
    assert max(samples[-10:]) <= max(samples[:10]) + 4 * MIB, f"RSS still growing (MiB): {trace}"
    mm.unload_all()
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, base[k]), k
    if isinstance(mm.device, FakeDevice):
        assert mm.device.used == 0 and mm.device.peak <= mm.device.budget
