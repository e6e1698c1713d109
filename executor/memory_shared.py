"""One resident copy of weights that several loaded models hold bit for bit (SDXL base and refiner both carry the
same OpenCLIP bigG text tower; fine-tunes often keep the stock text encoders).

Owns `SharedWeights`, the model manager's content-addressed pool of tensors. When the manager's file cache loads
a text encoder, `adopt` looks each of its tensors up by (dtype, shape, a fingerprint of sampled elements); a
candidate is confirmed with a full `torch.equal` before the module's parameter is re-pointed at the pooled tensor,
so the duplicate is freed with the file's mapping. Each module keeps its own `nn.Parameter` objects (only the
storage is shared), so placing one model on a device never moves the other. The pool holds tensors weakly: once
no module uses a tensor it is gone. `is_shared` tells the loading code (`executor/memory_load.py`) which tensors
must be patched copy-on-write, so a LoRA on one model never reaches the other.
"""
from __future__ import annotations

import threading
import weakref
from typing import Hashable

import torch
from torch import Tensor, nn

_SAMPLES = 257  # elements read for a fingerprint: enough to tell different weights apart, cheap for any size


def _fingerprint(t: Tensor) -> Hashable:
    flat = t.detach().reshape(-1)
    if flat.numel() == 0:
        return (t.dtype, tuple(t.shape))
    step = max(1, flat.numel() // _SAMPLES)
    sample = flat[::step][:_SAMPLES]
    if sample.dtype.is_floating_point and sample.dtype.itemsize < 2:
        sample = sample.view(torch.uint8)  # fp8 has no arithmetic on the CPU
    return (t.dtype, tuple(t.shape), t.device.type, tuple(sample.float().tolist()))


class SharedWeights:
    """A weak, content-addressed pool of weight tensors; `adopt` makes a module use the pooled copies."""

    def __init__(self) -> None:
        self._pool: dict[Hashable, list[weakref.ref]] = {}
        # memory address -> every tensor object adopted there (the first owner's and each sharer's): the memory
        # counts as shared while any of them is alive, whatever one of them is re-pointed at meanwhile.
        self._storages: dict[int, list[weakref.ref]] = {}
        self._lock = threading.Lock()
        self.shared_bytes = 0  # bytes not held twice thanks to the pool, over this manager's life

    def adopt(self, module: nn.Module) -> int:
        """Point every parameter and buffer of `module` that equals a pooled tensor at that tensor; pool the
        others. Returns the bytes this saved."""
        saved = 0
        with self._lock, torch.no_grad():
            self._prune()
            for sub in module.modules():
                for container in (sub._parameters, sub._buffers):
                    for name, value in list(container.items()):
                        if value is not None and value.device.type != "meta":
                            saved += self._adopt_one(container, name, value)
            self.shared_bytes += saved
        return saved

    def _prune(self) -> None:
        """Forget the entries of tensors no module holds any more."""
        for table in (self._pool, self._storages):
            for key in [k for k, refs in table.items() if all(r() is None for r in refs)]:
                del table[key]

    def _adopt_one(self, container: dict, name: str, value: Tensor) -> int:
        key = _fingerprint(value)
        refs = self._pool.setdefault(key, [])
        refs[:] = [r for r in refs if r() is not None]
        for ref in refs:
            pooled = ref()
            if pooled is None or pooled.device != value.device:
                continue
            if pooled.data_ptr() == value.data_ptr():
                return 0
            if torch.equal(pooled, value):
                if isinstance(value, nn.Parameter):
                    replacement = nn.Parameter(pooled.data, requires_grad=value.requires_grad)
                else:
                    replacement = pooled.data
                container[name] = replacement
                self._storages.setdefault(pooled.data_ptr(), []).append(weakref.ref(replacement))
                return value.numel() * value.element_size()
        # The pool holds the module's own tensor object (a Parameter's `.data` is a new object at each access).
        refs.append(weakref.ref(value))
        self._storages.setdefault(value.data_ptr(), []).append(weakref.ref(value))
        return 0

    def is_shared(self, t: Tensor) -> bool:
        """Whether `t` lives in a pooled tensor's memory (so it must not be changed in place)."""
        if t.device.type == "meta" or t.numel() == 0:
            return False
        ptr = t.data_ptr()
        with self._lock:
            owners = [o for r in self._storages.get(ptr, []) if (o := r()) is not None]
            if not owners:
                self._storages.pop(ptr, None)
            return len(owners) > 1 or any(o.data_ptr() != ptr for o in owners)


def resident_bytes(*modules: nn.Module) -> int:
    """Bytes of distinct tensor memory the modules' parameters and buffers occupy (shared memory counted once)."""
    seen: dict[tuple[str, int], int] = {}
    for module in modules:
        for t in list(module.parameters()) + list(module.buffers()):
            if t.device.type != "meta" and t.numel():
                seen[(t.device.type, t.data_ptr())] = max(seen.get((t.device.type, t.data_ptr()), 0),
                                                          t.numel() * t.element_size())
    return sum(seen.values())
