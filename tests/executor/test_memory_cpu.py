"""The memory policy on the real CPU path: precision choice, patches on CPU compute, the file cache, stats."""
from __future__ import annotations

import gc
import os
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from diffusion.patcher import ModelHandle, WeightPatch
from executor.devices import (CpuDevice, FakeDevice, cpu_flags, cpu_has_bf16_units, cpu_supports_bf16, detect_device,
                              release_host_memory)
from executor.memory import MemoryPolicy, ModelManager
from executor.memory_files import ModelFileCache


class Cfg:
    """A stand-in for config.Config: only attributes, as the real frozen dataclass has."""

    cpu = True
    lowvram = True
    reserve_vram = 1.5
    precision = "bf16"
    vae_precision = "fp32"
    listen = "127.0.0.1"


def tiny_net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 12), nn.GELU(), nn.LayerNorm(12), nn.Linear(12, 3))


def test_policy_from_config_and_states() -> None:
    policy = MemoryPolicy.from_config(Cfg())
    assert policy.cpu and policy.lowvram and policy.reserve_vram == 1.5 and policy.precision == "bf16"
    assert policy.vram_state("cuda") == "cpu"
    assert MemoryPolicy(lowvram=True).vram_state("cuda") == "low"
    assert MemoryPolicy(novram=True, lowvram=True).vram_state("cuda") == "none"
    assert MemoryPolicy(gpu_only=True).vram_state("cuda") == "gpu_only"
    assert MemoryPolicy(highvram=True).vram_state("cuda") == "high"
    assert MemoryPolicy(normalvram=True).vram_state("cuda") == "normal"
    assert MemoryPolicy().vram_state("cpu") == "cpu"


def test_dtype_choice_on_cpu() -> None:
    mm = ModelManager(MemoryPolicy(cpu=True))
    assert mm.device.type == "cpu" and mm.compute_device == torch.device("cpu")
    assert {mm.dtype_for(k) for k in ("unet", "vae", "text_encoder")} == {torch.float32}
    mm = ModelManager(MemoryPolicy.from_config(Cfg()))
    mm.cpu_flags = frozenset({"avx512_bf16"})  # a CPU that computes bf16 natively
    assert mm.dtype_for("unet") == torch.bfloat16 and mm.dtype_for("text_encoder") == torch.bfloat16
    assert mm.dtype_for("vae") == torch.float32
    auto = ModelManager(MemoryPolicy(cpu=True, precision="auto"))
    expected = torch.bfloat16 if cpu_supports_bf16() else torch.float32
    assert auto.dtype_for("unet") == expected and auto.dtype_for("vae") == expected
    mixed = ModelManager(MemoryPolicy(cpu=True, precision="fp16", unet_precision="fp32"))
    assert mixed.dtype_for("unet") == torch.float32 and mixed.dtype_for("vae") == torch.float16
    with pytest.raises(ValueError):
        ModelManager(MemoryPolicy(cpu=True, precision="fp8")).dtype_for("unet")


def test_cpu_flags_and_detection() -> None:
    flags = cpu_flags()
    assert cpu_has_bf16_units(frozenset({"amx_bf16"})) and not cpu_has_bf16_units(frozenset({"avx512_bf16"}))
    assert cpu_supports_bf16(frozenset({"avx512_bf16"})) and not cpu_supports_bf16(frozenset())
    if Path("/proc/cpuinfo").exists():
        assert flags, "expected CPU flags from /proc/cpuinfo"
    assert isinstance(detect_device(force_cpu=True), CpuDevice)
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        assert isinstance(detect_device(), CpuDevice)


def test_cpu_compute_applies_and_removes_patches() -> None:
    mm = ModelManager(MemoryPolicy(cpu=True))
    net = tiny_net()
    base = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(4, 6)
    with torch.no_grad():
        ref = net(x)
    h = ModelHandle(net, name="tiny").clone()
    delta = torch.randn(12, 6)
    h.add_patches({"0.weight": WeightPatch(compute_delta=lambda w: delta, strength=0.5)})
    with mm.use([h]) as device, torch.no_grad():
        assert device == torch.device("cpu")
        assert torch.equal(net[0].weight, (base["0.weight"].float() + 0.5 * delta).to(torch.float32))
        patched_out = net(x)
    assert not torch.equal(patched_out, ref)
    assert mm.loaded_models()[0]["patched_keys"] == 1
    assert mm.unload_all() == 1
    for k, v in net.state_dict().items():
        assert torch.equal(v, base[k]), k
    with mm.use([ModelHandle(net)]), torch.no_grad():
        assert torch.equal(net(x), ref)


def test_file_cache_shares_one_copy(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_file(tiny_net().state_dict(), str(path))
    mm = ModelManager(MemoryPolicy(cpu=True), device=FakeDevice(10 ** 6))
    loads = []

    def load() -> nn.Module:
        net = tiny_net(1)
        net.load_state_dict(load_file(str(path)))
        loads.append(net)
        return net

    first = mm.files.get_or_load(path, load, dtype=torch.float32)
    again = mm.files.get_or_load(str(path), load, dtype=torch.float32)
    assert first is again and len(loads) == 1
    other_dtype = mm.files.get_or_load(path, load, dtype=torch.float16)
    assert other_dtype is not first and len(loads) == 2
    loads.clear()
    del first, again, other_dtype
    gc.collect()
    assert mm.files.get(path, torch.float32) is None and len(mm.files) == 0
    fresh = mm.files.get_or_load(path, load, dtype=torch.float32)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))
    changed = mm.files.get_or_load(path, load, dtype=torch.float32)
    assert changed is not fresh and len(loads) == 2


def test_file_cache_parts(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.safetensors"
    save_file({"x": torch.zeros(1)}, str(path))
    mm = ModelManager(MemoryPolicy(cpu=True))
    calls = []

    def load() -> dict[str, nn.Module]:
        calls.append(1)
        return {"unet": tiny_net(), "vae": tiny_net(2)}

    a = mm.files.get_or_load_parts(path, ("unet", "vae"), load)
    b = mm.files.get_or_load_parts(path, ("unet", "vae"), load)
    assert a["unet"] is b["unet"] and a["vae"] is b["vae"] and len(calls) == 1


def test_file_cache_says_once_after_each_fresh_load(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.safetensors"
    save_file({"x": torch.zeros(1)}, str(path))
    told: list[int] = []
    files = ModelFileCache(after_load=lambda: told.append(1))
    net = files.get_or_load(path, tiny_net)
    assert files.get_or_load(path, tiny_net) is net and len(told) == 1  # a hit says nothing
    parts = files.get_or_load_parts(path, ("unet", "vae"), lambda: {"unet": tiny_net(), "vae": tiny_net(2)})
    files.get_or_load_parts(path, ("unet", "vae"), lambda: {"unet": tiny_net(), "vae": tiny_net(2)})
    assert len(told) == 2 and set(parts) == {"unet", "vae"}
    assert ModelManager(MemoryPolicy(cpu=True)).files.after_load is release_host_memory


def _resident_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_release_host_memory_gives_freed_heap_pages_back() -> None:
    """Buffers below glibc's mmap threshold stay in its heap when freed (a checkpoint load frees thousands);
    `release_host_memory` returns their pages, and the CPU device's `empty_cache` (POST /free) does the same."""
    if not Path("/proc/self/statm").exists() or not release_host_memory():
        pytest.skip("needs Linux with glibc")
    buffers = [torch.ones(16 * 1024) for _ in range(2048)]  # 64 KiB each, 128 MiB: heap, not mmap
    keep = buffers[-1]  # the heap's top stays in use, so free() alone cannot shrink it
    del buffers
    before = _resident_bytes()
    CpuDevice().empty_cache()
    after = _resident_bytes()
    assert before - after > 64 * 2 ** 20, (before, after)
    assert keep.sum().item() == 16 * 1024


def test_stats_on_cpu() -> None:
    mm = ModelManager(MemoryPolicy(cpu=True))
    s = mm.stats()
    assert s["type"] == "cpu" and s["ram_total"] > s["ram_free"] > 0 and s["vram_total"] == s["ram_total"]
    assert mm.free(unload_models=True, free_memory=True) == {"unloaded": 0, "pending": False}
    assert mm.intermediate_device == mm.offload_device == torch.device("cpu")


def test_cpu_use_is_cheap() -> None:
    """On the CPU a repeated `use` of a loaded, patched model does no work."""
    mm = ModelManager(MemoryPolicy(cpu=True))
    net = tiny_net()
    h = ModelHandle(net).clone()
    calls = []
    h.add_patches({"3.weight": WeightPatch(compute_delta=lambda w: calls.append(1) or torch.ones_like(w),
                                           strength=1.0)})
    start = time.perf_counter()
    for _ in range(100):
        with mm.use([h]):
            pass
    assert len(calls) == 1 and time.perf_counter() - start < 2.0


def test_policy_from_the_real_config() -> None:
    config = pytest.importorskip("config")
    cfg = config.parse_args(["--lowvram", "--reserve-vram", "1.5", "--precision", "bf16", "--vae-precision", "fp32"],
                            {})
    policy = MemoryPolicy.from_config(cfg)
    assert policy.lowvram and policy.reserve_vram == 1.5 and policy.vae_precision == "fp32"
    mm = ModelManager(policy, device=FakeDevice(10 ** 9))
    assert mm.state == "low" and mm.reserve_bytes() == int(1.5 * 1024 ** 3)
    assert mm.dtype_for("unet") == torch.bfloat16 and mm.dtype_for("vae") == torch.float32
