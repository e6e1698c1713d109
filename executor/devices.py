"""Compute devices as the model manager sees them: how much memory, how much free, how to move a tensor.

This module owns device detection (CUDA, MPS, CPU — done once, in `detect_device`), the `DeviceModel` protocol
the memory policy runs against, the real devices behind it, a `FakeDevice` with a byte budget (for tests and dry
runs of the policy without a GPU), the host facts the policy needs (RAM from /proc/meminfo, CPU flags from
/proc/cpuinfo) and `release_host_memory` (the C heap's free pages back to the system). Only `executor/memory.py`
uses it.
"""
from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path
from typing import Callable, Protocol, runtime_checkable

import torch
from torch import Tensor

OFFLOAD = torch.device("cpu")


def tensor_bytes(t: Tensor) -> int:
    """Bytes a tensor's elements take (meta tensors included)."""
    return t.numel() * t.element_size()


@runtime_checkable
class DeviceModel(Protocol):
    """A compute device as the memory policy needs it.

    `to_compute` and `to_offload` move one tensor (they may allocate and free device memory); `release` tells the
    device that tensors of `nbytes` on it were dropped without being moved back (real devices learn this from the
    allocator; the fake device counts it).
    """

    device: torch.device
    type: str
    name: str

    def total_memory(self) -> int: ...

    def free_memory(self) -> int: ...

    def to_compute(self, t: Tensor) -> Tensor: ...

    def to_offload(self, t: Tensor) -> Tensor: ...

    def release(self, nbytes: int) -> None: ...

    def empty_cache(self) -> None: ...

    def torch_memory(self) -> tuple[int, int]: ...


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim` (looked up among the symbols the process already has), or None where the C library
    is not glibc (musl, macOS, Windows)."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None


def release_host_memory() -> bool:
    """Give the pages of freed C-heap memory back to the system (glibc `malloc_trim(0)`); False where unavailable.

    Loading a checkpoint frees thousands of tensor buffers below glibc's mmap threshold (read, converted, dropped);
    glibc keeps them in its heap, where they count in the resident set: 1.3 GiB after an SDXL load, bench/RESULTS.md.
    Trimming costs milliseconds and changes no tensor; the pages are faulted in again only if reused."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def ram_info() -> tuple[int, int]:
    """(total, available) host RAM in bytes, from /proc/meminfo; (0, 0) where it cannot be read."""
    fields: dict[str, int] = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            name, _, rest = line.partition(":")
            parts = rest.split()
            if parts:
                fields[name] = int(parts[0]) * 1024
    except OSError:
        return 0, 0
    return fields.get("MemTotal", 0), fields.get("MemAvailable", fields.get("MemFree", 0))


def cpu_flags() -> frozenset[str]:
    """The CPU feature flags from /proc/cpuinfo (empty where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags") or line.startswith("Features"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def cpu_has_bf16_units(flags: frozenset[str] | None = None) -> bool:
    """True where the CPU has bf16 matrix tiles (Intel AMX-BF16)."""
    return "amx_bf16" in (cpu_flags() if flags is None else flags)


def cpu_supports_bf16(flags: frozenset[str] | None = None) -> bool:
    """True where the CPU computes bf16 natively (AMX-BF16 or AVX512-BF16): where `--precision auto` picks bf16."""
    f = cpu_flags() if flags is None else flags
    return "amx_bf16" in f or "avx512_bf16" in f


class CpuDevice:
    """Compute on the CPU: moving is a no-op, free memory is the host's available RAM."""

    type = "cpu"

    def __init__(self) -> None:
        self.device = torch.device("cpu")
        self.name = "cpu"

    def total_memory(self) -> int:
        return ram_info()[0]

    def free_memory(self) -> int:
        return ram_info()[1]

    def to_compute(self, t: Tensor) -> Tensor:
        return t

    def to_offload(self, t: Tensor) -> Tensor:
        return t

    def release(self, nbytes: int) -> None:
        return None

    def empty_cache(self) -> None:
        release_host_memory()  # a CPU's "cache" is the C heap's free pages

    def torch_memory(self) -> tuple[int, int]:
        return 0, 0


class CudaDevice:
    """One CUDA device. Free memory counts what torch holds reserved but unused as free, and respects a cap set
    with `torch.cuda.set_per_process_memory_fraction` (how `bench/gpu.py` simulates a 4 GB card)."""

    type = "cuda"

    def __init__(self, index: int | None = None) -> None:
        idx = torch.cuda.current_device() if index is None else index
        self.device = torch.device("cuda", idx)
        self.name = f"{self.device} : {torch.cuda.get_device_name(self.device)}"

    def _cap(self) -> int | None:
        getter = getattr(torch.cuda, "get_per_process_memory_fraction", None)
        fraction = getter(self.device) if getter is not None else 1.0
        return None if fraction >= 1.0 else int(fraction * torch.cuda.mem_get_info(self.device)[1])

    def total_memory(self) -> int:
        cap = self._cap()
        return cap if cap is not None else torch.cuda.mem_get_info(self.device)[1]

    def free_memory(self) -> int:
        free, _ = torch.cuda.mem_get_info(self.device)
        stats = torch.cuda.memory_stats(self.device)
        reserved = stats.get("reserved_bytes.all.current", 0)
        active = stats.get("active_bytes.all.current", 0)
        free += max(0, reserved - active)
        cap = self._cap()
        return free if cap is None else max(0, min(free, cap - active))

    def to_compute(self, t: Tensor) -> Tensor:
        return t.to(self.device, non_blocking=True)

    def to_offload(self, t: Tensor) -> Tensor:
        return t.to(OFFLOAD)

    def release(self, nbytes: int) -> None:
        return None

    def empty_cache(self) -> None:
        torch.cuda.empty_cache()

    def torch_memory(self) -> tuple[int, int]:
        """(reserved, reserved-but-free) bytes in torch's caching allocator."""
        stats = torch.cuda.memory_stats(self.device)
        reserved = stats.get("reserved_bytes.all.current", 0)
        return reserved, max(0, reserved - stats.get("active_bytes.all.current", 0))


class MpsDevice:
    """Apple's Metal device; memory shares the host RAM."""

    type = "mps"

    def __init__(self) -> None:
        self.device = torch.device("mps")
        self.name = "mps"

    def total_memory(self) -> int:
        return ram_info()[0]

    def free_memory(self) -> int:
        return ram_info()[1]

    def to_compute(self, t: Tensor) -> Tensor:
        return t.to(self.device)

    def to_offload(self, t: Tensor) -> Tensor:
        return t.to(OFFLOAD)

    def release(self, nbytes: int) -> None:
        return None

    def empty_cache(self) -> None:
        torch.mps.empty_cache()

    def torch_memory(self) -> tuple[int, int]:
        return torch.mps.current_allocated_memory(), 0


class FakeDevice:
    """A device with a byte budget that computes on the CPU: the memory policy's test bench.

    Every `to_compute` counts the tensor's bytes (and copies it, so a bug that writes to a stale copy shows up),
    every `to_offload`/`release` uncounts them; a move past the budget raises `torch.OutOfMemoryError` as a real
    device would, and `peak` records the most ever used. Meta tensors count their nominal size, so tests can have
    "2 GB models" that take no memory.
    """

    type = "fake"

    def __init__(self, budget: int, name: str = "fake") -> None:
        self.device = torch.device("cpu")
        self.name = name
        self.budget = int(budget)
        self.used = 0
        self.peak = 0
        self.moves = 0

    def total_memory(self) -> int:
        return self.budget

    def free_memory(self) -> int:
        return self.budget - self.used

    def to_compute(self, t: Tensor) -> Tensor:
        n = tensor_bytes(t)
        if self.used + n > self.budget:
            raise torch.OutOfMemoryError(f"FakeDevice: {n} bytes asked, {self.budget - self.used} free")
        self.used += n
        self.peak = max(self.peak, self.used)
        self.moves += 1
        return t.clone()

    def to_offload(self, t: Tensor) -> Tensor:
        self.release(tensor_bytes(t))
        return t.clone()

    def release(self, nbytes: int) -> None:
        self.used -= nbytes
        if self.used < 0:
            raise AssertionError(f"FakeDevice accounting went negative ({self.used})")

    def empty_cache(self) -> None:
        return None

    def torch_memory(self) -> tuple[int, int]:
        return self.used, 0


def detect_device(force_cpu: bool = False, cuda_index: int | None = None) -> DeviceModel:
    """The compute device: CUDA if present, else MPS, else the CPU; `force_cpu` (--cpu) picks the CPU."""
    if not force_cpu and torch.cuda.is_available():
        return CudaDevice(cuda_index)
    if not force_cpu and torch.backends.mps.is_available():
        return MpsDevice()
    return CpuDevice()


def cpu_threads() -> int:
    """The cores this process may use (its affinity mask), for torch.set_num_threads."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
