"""The device and memory policy: where every model's weights live, in what precision, and when they move.

This module owns `MemoryPolicy` (the flags that steer it) and `ModelManager` (the one instance, made in main.py
and handed to nodes through their context). Only the manager moves weights between devices or asks a device for
its free memory; nodes say what they need with `with ctx.models.use([handle, ...], working_memory=n):`.
The mechanics of one module's placement live in `executor/memory_load.py`, devices in `executor/devices.py`,
the file-level RAM cache in `executor/memory_files.py`.
"""
from __future__ import annotations

import gc
import itertools
import logging
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence, TypeVar

import torch
from torch import nn

from diffusion.networks.compile import compile_model
from diffusion.patcher import ModelHandle
from executor.devices import (OFFLOAD, DeviceModel, cpu_supports_bf16, cpu_threads, detect_device, ram_info,
                              release_host_memory)
from executor.memory_cast import ComputeCast
from executor.memory_files import ModelFileCache
from executor.memory_load import LoadedModule
from executor.memory_shared import SharedWeights

T = TypeVar("T")
GIB = 1024 ** 3
DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
          "half": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
# Weight (storage) dtypes: ComfyUI's --fp16-unet / --fp8_e4m3fn-unet / ... flags and UNETLoader's weight_dtype
WEIGHT_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16,
                 "fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e4m3fn_fast": torch.float8_e4m3fn,
                 "fp8_e5m2": torch.float8_e5m2}
FP8 = (torch.float8_e4m3fn, torch.float8_e5m2)
VRAM_STATES = ("gpu_only", "high", "normal", "low", "none", "cpu")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MemoryPolicy:
    """The flags of the memory policy (ComfyUI's names). `precision` None means the defaults: half precision on
    GPUs, fp32 on the CPU; "auto" is the same but also picks bf16 for the UNet and VAE on CPUs with bf16 units
    (AMX-BF16 or AVX512-BF16: on this project's AMD EPYC a bf16 2048² matmul runs 2.9× faster than fp32, a 320-channel
    conv 1.6×, an SD1.5 UNet step 2.45× and a VAE decode 1.6×)."""

    cpu: bool = False
    gpu_only: bool = False
    highvram: bool = False
    normalvram: bool = False
    lowvram: bool = False
    novram: bool = False
    reserve_vram: float | None = None
    precision: str | None = None
    unet_precision: str | None = None
    vae_precision: str | None = None
    text_enc_precision: str | None = None
    unet_weight_dtype: str | None = None
    vae_weight_dtype: str | None = None
    text_enc_weight_dtype: str | None = None
    cache_ram: float | None = None
    compile: bool = False

    @classmethod
    def from_config(cls, config: Any) -> "MemoryPolicy":
        """Read the policy's fields off a Config (attributes of the same names; missing ones keep defaults)."""
        values = {name: getattr(config, name) for name in cls.__dataclass_fields__ if hasattr(config, name)}
        return cls(**values)

    def vram_state(self, device_type: str) -> str:
        """One of VRAM_STATES; the first matching flag wins, as the order of ComfyUI's flags suggests."""
        if self.cpu or device_type == "cpu":
            return "cpu"
        for flag, state in (("gpu_only", "gpu_only"), ("highvram", "high"), ("novram", "none"),
                            ("lowvram", "low")):
            if getattr(self, flag):
                return state
        return "normal"


class ModelManager:
    """Decides where every model's weights live. The policy:

    1. `use(handles, working_memory)` puts each handle's base module on the compute device with the handle's
       patches applied, and marks it most recently used. Models stay loaded after the block (lazy offload).
    2. Before loading, if the device's free memory minus the reserve (--reserve-vram) and `working_memory` is short,
       the least recently used models not in use are offloaded to the CPU, one at a time, until it is not.
    3. A model that still does not fit is loaded partially: whole layers in module order while they fit (leaving
       room for the largest streamed layer), the rest streamed per call by forward hooks. --lowvram caps a model's
       resident weights at half the usable memory; --novram streams every layer; --highvram and --gpu-only never
       offload on their own (an explicit `free()` or an out-of-memory retry still does). If the device runs out
       while placing (its free-memory figure was optimistic), everything evictable is offloaded and the model is
       placed again with half the usable memory, the rest streamed.
    4. Weight patches (LoRA etc.) are applied where the weights are and removed, bitwise, on offload or when another
       clone of the same module with different patches is loaded; the base weights are never changed for good.
       Only the original values of patched keys are backed up, on the CPU.
    5. Precision (`dtype_for`; loaders read weights in it, the manager never casts): fp16 for UNet and text
       encoder on CUDA/MPS (the VAE bf16 where supported, else fp32), fp32 on the CPU (text encoders stored in fp16
       there, as ComfyUI stores them, and computed in fp32); `--precision bf16`
       anywhere but on a CPU without AMX-BF16/AVX512-BF16 (fp32 there, said once), or `auto` on CPUs with them for
       the UNet; per-component overrides win. Weights may be stored in another dtype than they compute in
       (`weight_dtype_for`; the layers upcast per call, diffusion/networks/weight_cast.py): ComfyUI's --fp16-unet /
       --bf16-unet / --fp32-unet / --fp16-vae / --bf16-vae / --fp16-text-enc / ... keep ComfyUI's meaning, that
       arithmetic on a GPU and storage with fp32 compute on a CPU (ComfyUI's manual cast); --fp8_e4m3fn-unet,
       --fp8_e5m2-unet, --fp8_e4m3fn-text-enc, UNETLoader's fp8 weight_dtype and files stored in fp8 keep the
       matmul weights in fp8 and compute in the precision above. A handle's `model_compute_dtype` option
       (ModelComputeDtype) makes its layers compute in that dtype while it is loaded, by per-layer cast hooks
       (`executor/memory_cast.py`; the stored weights stay as they are), under the same CPU bf16 rule.
    6. On CPU compute, loading moves nothing but patches are still applied and removed. Patch objects in a
       handle's options that have a `.to` (hypernetworks, packs' attention patches) are moved to the compute
       device with the model and back to the offload device when it is offloaded.
    7. `--compile` (`policy.compile`): a fully placed UNet is compiled in place on its first load
       (`diffusion/networks/compile.py`; one graph per input shape); text encoders, VAEs and streamed models stay eager.
    8. Text encoders loaded from files keep one copy of weights another loaded model holds bit for bit (SDXL
       base and refiner share bigG): `executor/memory_shared.py`; patches on such tensors are copy-on-write.
    9. Host memory a load freed goes back to the system when the load is done (`devices.release_host_memory`,
       glibc's malloc_trim: an SDXL checkpoint load left 1.3 GiB of freed buffers resident), and on `free()`.
    One worker thread calls `use`; `free` may come from the server thread: a lock guards all state, and models in
    use are never unloaded (a free request for them is carried out when their block ends).
    """

    def __init__(self, policy: MemoryPolicy | None = None, device: DeviceModel | None = None) -> None:
        self.policy = policy or MemoryPolicy()
        self.device: DeviceModel = device or detect_device(force_cpu=self.policy.cpu)
        self.state = self.policy.vram_state(self.device.type)
        self.shared = SharedWeights()
        self.files = ModelFileCache(on_load=self._share_weights, after_load=release_host_memory)
        self._entries: dict[int, LoadedModule] = {}
        self._lock = threading.RLock()
        self._tick = itertools.count(1)
        self._dead: list[int] = []
        self._pending_unload = False
        self.cpu_flags: frozenset[str] | None = None  # None: read /proc/cpuinfo
        self._bf16_fallback_said = False
        self._casts: dict[int, ComputeCast] = {}  # module id -> the compute-dtype hooks on it

    # --- devices and precision ----------------------------------------------------------------------------------
    @property
    def compute_device(self) -> torch.device:
        """Where models run."""
        return self.device.device

    @property
    def offload_device(self) -> torch.device:
        """Where offloaded weights live (always the CPU)."""
        return OFFLOAD

    @property
    def intermediate_device(self) -> torch.device:
        """Where node outputs (latents, images, conditioning) are kept between nodes: the CPU, or the GPU under
        --gpu-only."""
        return self.device.device if self.state == "gpu_only" else OFFLOAD

    def reserve_bytes(self) -> int:
        """Device memory kept free for others (--reserve-vram GB; 0.4 GB by default on GPUs, 0 otherwise)."""
        if self.policy.reserve_vram is not None:
            return int(self.policy.reserve_vram * GIB)
        return int(0.4 * GIB) if self.device.type in ("cuda", "mps") else 0

    def dtype_for(self, kind: str) -> torch.dtype:
        """The dtype a component computes in: kind is "unet", "vae", "text_encoder" or "other". Loom's own
        --precision / --<part>-precision choose it; ComfyUI's --fp16-unet-style flags do on GPUs (on the CPU they
        only choose the storage, `weight_dtype_for`)."""
        override = {"unet": self.policy.unet_precision, "vae": self.policy.vae_precision,
                    "text_encoder": self.policy.text_enc_precision}.get(kind)
        flag = self._weight_flag(kind)
        if override is None and flag in DTYPES and self.device.type != "cpu":
            override = flag
        choice = (override or self.policy.precision or "default").lower()
        if choice in DTYPES:
            return self._cpu_native(DTYPES[choice], kind)
        if choice not in ("auto", "default"):
            raise ValueError(f"precision {choice!r} is not one of fp32, fp16, bf16, auto")
        if self.device.type == "cuda":
            if kind == "vae":
                return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
            return torch.float16
        if self.device.type == "mps":
            return torch.float32 if kind == "vae" else torch.float16
        if choice == "auto" and kind in ("unet", "vae") and cpu_supports_bf16(self.cpu_flags):
            return torch.bfloat16  # the VAE too: 1.6× faster decode at ~50 dB from fp32 (bench/RESULTS.md)
        return torch.float32

    def _weight_flag(self, kind: str) -> str | None:
        return {"unet": self.policy.unet_weight_dtype, "vae": self.policy.vae_weight_dtype,
                "text_encoder": self.policy.text_enc_weight_dtype}.get(kind)

    def weight_dtype_for(self, kind: str, requested: str = "default", file_dtype: torch.dtype | None = None
                         ) -> torch.dtype:
        """The dtype a component's weights are stored in (the compute dtype, `dtype_for`, unless asked otherwise):
        `requested` is a loader's choice (UNETLoader's weight_dtype: "default" or an fp8 type), then the
        component's ComfyUI flag (--fp8_e4m3fn-unet, --fp16-unet, ...), then a file stored in fp8 (`file_dtype`)
        stays fp8. The fp8 types hold the matmul weights; see diffusion/networks/weight_cast.py."""
        choice = requested if requested not in ("", "default") else self._weight_flag(kind)
        if choice:
            if choice not in WEIGHT_DTYPES:
                raise ValueError(f"weight dtype {choice!r} is not one of {', '.join(WEIGHT_DTYPES)}")
            return WEIGHT_DTYPES[choice]
        if file_dtype in FP8:
            return file_dtype
        compute = self.dtype_for(kind)
        if kind == "text_encoder" and self.device.type == "cpu" and compute == torch.float32:
            # ComfyUI's text_encoder_dtype on a CPU: fp16 storage, fp32 arithmetic block by block (its manual cast,
            # Loom's towers' `_call_fp32`): the same numbers as ComfyUI and half the resident bytes (SDXL's two
            # towers 3.3 → 1.6 GB); --fp32-text-enc keeps fp32.
            return torch.float16
        return compute

    def _cpu_native(self, dtype: torch.dtype, kind: str) -> torch.dtype:
        """bf16 asked for on a CPU without bf16 instructions: torch would emulate it (over ten times slower than
        fp32), so compute in fp32 instead; said once in the log. `cpu_flags` may be injected (tests)."""
        if dtype != torch.bfloat16 or self.device.type != "cpu" or cpu_supports_bf16(self.cpu_flags):
            return dtype
        if not self._bf16_fallback_said:
            self._bf16_fallback_said = True
            log.warning("bf16 was asked for, but this CPU has no bf16 instructions (avx512_bf16/amx_bf16): torch "
                        "would emulate it far slower than fp32, so models compute in fp32 (first: %s)", kind)
        return torch.float32

    def compute_dtype_for(self, handle: ModelHandle) -> torch.dtype | None:
        """The dtype a handle's layers compute in when it asks for one (`model_compute_dtype`, set by
        ModelComputeDtype), after the CPU bf16 rule; None: the dtype of its weights."""
        asked = handle.options.get("model_compute_dtype")
        return None if asked is None else self._cpu_native(asked, handle.kind)

    def _set_cast(self, handle: ModelHandle, shared: bool) -> None:
        """Put the module's compute-dtype hooks in line with `handle`, attached anew after each placement so they
        run inside the streaming hooks. While another block uses the module (`shared`) its dtype is kept."""
        old = self._casts.pop(id(handle.model), None)
        if old is not None:
            old.remove()
        dtype = (old.dtype if old is not None else None) if shared else self.compute_dtype_for(handle)
        if dtype is not None:
            self._casts[id(handle.model)] = ComputeCast(handle.model, dtype)

    def configure_threads(self) -> int:
        """Once at start-up (runtime.build_runtime): give torch's intra-op pool one thread per core this process may
        use (its affinity mask), so convolutions and matmuls use the whole CPU; returns the count."""
        threads = cpu_threads()
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        return threads

    # --- loading ------------------------------------------------------------------------------------------------
    def handle_for(self, obj: Any) -> ModelHandle:
        """The ModelHandle behind a handle, a wrapper with `.handle` or `.patcher`, or a wrapper/module with
        `.model` (then an unpatched handle on it)."""
        if isinstance(obj, ModelHandle):
            return obj
        for attr in ("handle", "patcher"):
            inner = getattr(obj, attr, None)
            if isinstance(inner, ModelHandle):
                return inner
        module = obj if isinstance(obj, nn.Module) else getattr(obj, "model", None)
        if not isinstance(module, nn.Module):
            raise TypeError(f"cannot load {type(obj).__name__}: expected a ModelHandle, a wrapper with .handle, or an "
                            f"nn.Module")
        # A fresh unpatched handle: the manager's record is per module, so nothing needs to remember it.
        return ModelHandle(module, name=type(obj).__name__, kind=getattr(obj, "kind", "other"))

    @contextmanager
    def use(self, handles: Sequence[Any], working_memory: int = 0) -> Iterator[torch.device]:
        """Load `handles` (with their patches) for the block and keep them from eviction; yields the compute
        device. `working_memory` is the activation memory the block will need (the models estimate it: `DiffusionModel.working_memory`,
        `VAE.memory_required_decode` / `memory_required_encode`, `UpscaleModel.working_memory`)."""
        hs = self._distinct([self.handle_for(h) for h in handles])
        with self._lock:
            self._cleanup_dead()
            entries = [self._entry(h) for h in hs]
            for entry, handle in zip(entries, hs):
                if entry.in_use and entry.weights_key != handle.weights_key():
                    raise RuntimeError(f"model {handle.name!r} is in use with other patches; a clone with different "
                                       f"patches cannot be loaded until that block ends")
            for entry in entries:
                entry.in_use += 1
            try:
                self._load(entries, hs, int(working_memory))
            except BaseException:
                self._release(entries)
                raise
        try:
            yield self.compute_device
        finally:
            with self._lock:
                self._release(entries)

    def _release(self, entries: list[LoadedModule]) -> None:
        for entry in entries:
            entry.in_use -= 1
            entry.last_used = next(self._tick)
        if self._pending_unload and not any(e.in_use for e in self._entries.values()):
            self._pending_unload = False
            self._unload_where(lambda e: True)

    @staticmethod
    def _distinct(handles: list[ModelHandle]) -> list[ModelHandle]:
        seen: dict[int, ModelHandle] = {}
        for h in handles:
            other = seen.get(id(h.model))
            if other is not None and other.weights_key() != h.weights_key():
                raise ValueError(f"two clones of {h.name!r} with different patches cannot be used at once")
            seen.setdefault(id(h.model), h)
        return list(seen.values())

    def _entry(self, handle: ModelHandle) -> LoadedModule:
        key = id(handle.model)
        entry = self._entries.get(key)
        if entry is None or entry.ref() is not handle.model:
            entry = LoadedModule(handle.model, self.device, handle.name, handle.kind, self._on_dead(key),
                                 is_shared=self.shared.is_shared)
            self._entries[key] = entry
        return entry

    def _share_weights(self, part: str, obj: Any) -> None:
        """Text encoders a file load produced use the pooled copy of any tensor another loaded model already
        holds bit for bit (policy 8)."""
        if part == "clip" and isinstance(obj, nn.Module):
            saved = self.shared.adopt(obj)
            if saved:
                log.info("text encoder shares %.1f MB of weights with a model already loaded", saved / 2 ** 20)

    def _on_dead(self, key: int) -> Callable[[Any], None]:
        def note(_ref: Any) -> None:
            self._dead.append(key)
        return note

    def _cleanup_dead(self) -> None:
        while self._dead:
            key = self._dead.pop()
            entry = self._entries.get(key)
            if entry is not None and entry.ref() is None:
                self.device.release(entry.device_bytes)
                del self._entries[key]
                self._casts.pop(key, None)

    def _load(self, entries: list[LoadedModule], handles: list[ModelHandle], working_memory: int) -> None:
        extra = working_memory + self.reserve_bytes()
        if self.state not in ("cpu", "gpu_only", "high"):
            missing = 0 if self.state == "none" else sum(e.total_bytes - e.device_bytes for e in entries)
            self._make_room(missing + extra, keep=entries)
        for entry, handle in zip(entries, handles):
            self._place(entry, extra)
            if entry.weights_key != handle.weights_key():
                entry.restore()
                entry.apply(handle)
            # Patch objects with tensors of their own (a `.to` method: hypernetworks, packs' attention patches)
            # follow the model, as ComfyUI's model_patches_to does.
            entry.place_patch_modules(handle.options, self.compute_device)
            self._set_cast(handle, shared=entry.in_use > 1)
            asked = handle.options.get("torch_compile")  # set by the TorchCompileModel node
            if (self.policy.compile or asked) and handle.kind == "unet" and not entry.partial:
                # in place, once; streamed (partial) models stay eager
                compile_model(handle.model, backend=(asked or {}).get("backend", "inductor"))
            entry.last_used = next(self._tick)

    def _place(self, entry: LoadedModule, extra: int) -> None:
        """Place one entry fully or partially, as the state and free memory allow."""
        if self.state in ("cpu", "gpu_only", "high"):
            if not entry.placed:
                entry.place(None)
            return
        if entry.placed and not entry.partial:
            return
        usable = self.device.free_memory() - extra + entry.device_bytes
        budget = {"none": 0, "low": usable // 2}.get(self.state, usable)
        fits = entry.total_bytes <= budget
        if entry.placed:
            if fits:
                self._reload_full(entry)
            return
        try:
            entry.place(None if fits else max(0, budget))
        except torch.OutOfMemoryError:
            # The estimate was wrong (fragmentation, other processes): free all that is evictable and stream more.
            self._unload_where(lambda e: e is not entry)
            self.device.empty_cache()
            usable = self.device.free_memory() - extra
            entry.place(max(0, min(usable, budget) // 2))

    def _reload_full(self, entry: LoadedModule) -> None:
        """A partially placed entry that now fits is moved whole (its patches are redone on the new placement)."""
        entry.restore()
        entry.unplace()
        entry.place(None)

    def _make_room(self, needed: int, keep: list[LoadedModule]) -> None:
        """Offload least recently used models not in use until `needed` bytes are free or none is left."""
        evicted = False
        while self.device.free_memory() < needed:
            victims = [e for e in self._entries.values()
                       if e.placed and e.device_bytes > 0 and not e.in_use and e not in keep]
            if not victims:
                break
            self._unload(min(victims, key=lambda e: e.last_used))
            evicted = True
        if evicted:
            self.device.empty_cache()

    def _unload(self, entry: LoadedModule) -> None:
        if entry.ref() is None:
            return
        cast = self._casts.pop(id(entry.ref()), None)
        if cast is not None:
            cast.remove()
        entry.restore()
        if entry.placed:
            entry.unplace()

    def _unload_where(self, pred: Callable[[LoadedModule], bool]) -> int:
        count = 0
        for entry in list(self._entries.values()):
            if not entry.in_use and (entry.placed or entry.weights_key is not None) and pred(entry):
                self._unload(entry)
                count += 1
        return count

    # --- freeing ------------------------------------------------------------------------------------------------
    def unload_all(self) -> int:
        """Offload every model not in use and remove its patches; returns how many were unloaded."""
        with self._lock:
            self._cleanup_dead()
            count = self._unload_where(lambda e: True)
        self.device.empty_cache()
        return count

    def free(self, unload_models: bool = True, free_memory: bool = True) -> dict[str, Any]:
        """POST /free: unload models (those in use are unloaded when their block ends) and/or return cached device
        memory to the driver."""
        unloaded = 0
        with self._lock:
            if unload_models:
                unloaded = self._unload_where(lambda e: True)
                self._pending_unload = any(e.in_use for e in self._entries.values())
        if free_memory:
            gc.collect()
            self.device.empty_cache()
        return {"unloaded": unloaded, "pending": self._pending_unload}

    def retry_on_oom(self, fn: Callable[[], T], fallback: Callable[[], T] | None = None) -> T:
        """Run `fn`; on out-of-memory free what is not in use and retry once, then run `fallback` (e.g. a tiled
        VAE decode) if given, else re-raise."""
        try:
            return fn()
        except torch.OutOfMemoryError:
            self._free_for_oom()
        try:
            return fn()
        except torch.OutOfMemoryError:
            if fallback is None:
                raise
            self._free_for_oom()
        return fallback()

    def _free_for_oom(self) -> None:
        self.unload_all()
        gc.collect()
        self.device.empty_cache()

    # --- reports ------------------------------------------------------------------------------------------------
    def is_loaded(self, handle: Any) -> bool:
        """True when the handle's module is placed on the compute device with exactly this handle's patches."""
        h = self.handle_for(handle)
        with self._lock:
            entry = self._entries.get(id(h.model))
            return bool(entry and entry.ref() is h.model and entry.placed and entry.weights_key == h.weights_key())

    def base_weight(self, module: nn.Module, key: str) -> torch.Tensor:
        """`module`'s unpatched weight at state-dict `key`: the bitwise backup while a clone's patches are
        applied to it, else the live tensor. Merges read the other model through this, so a LoRA applied
        to that model is never counted twice."""
        with self._lock:
            entry = self._entries.get(id(module))
            if entry is not None and entry.ref() is module and key in entry.backups:
                return entry.backups[key]
        owner_path, _, name = key.rpartition(".")
        owner = module.get_submodule(owner_path) if owner_path else module
        return owner._parameters[name] if name in owner._parameters else owner._buffers[name]

    def loaded_models(self) -> list[dict[str, Any]]:
        """One summary per placed model, most recently used first."""
        with self._lock:
            self._cleanup_dead()
            placed = [e for e in self._entries.values() if e.placed]
            return [e.summary() for e in sorted(placed, key=lambda e: -e.last_used)]

    def stats(self) -> dict[str, Any]:
        """Device and RAM figures for GET /system_stats (ComfyUI's field names)."""
        ram_total, ram_free = ram_info()
        reserved, reserved_free = self.device.torch_memory()
        index = self.device.device.index
        return {"name": self.device.name, "type": self.device.type, "index": 0 if index is None else index,
                "vram_total": self.device.total_memory(), "vram_free": self.device.free_memory(),
                "torch_vram_total": reserved, "torch_vram_free": reserved_free,
                "ram_total": ram_total, "ram_free": ram_free, "vram_state": self.state}

