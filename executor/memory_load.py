"""The mechanics of putting one base module on a device: full or partial placement, per-layer streaming, patches.

This module owns `LoadedModule`, the model manager's record of one base `nn.Module` (shared by all clones of a
handle): which of its parameter groups live on the compute device, which are streamed per call, which weight
patches are applied and the backups that undo them bitwise. The decisions — what to load, how much, what to
evict — are made by `executor/memory.py`; this module only carries them out.

A *unit* is one submodule's own parameters and buffers (`recurse=False`). Units of leaf modules (Linear, Conv,
GroupNorm, LayerNorm, Embedding, ... — anything whose forward reads only its own tensors) can be streamed: a
forward pre-hook moves their tensors to the device for the call and a forward hook drops the device copies after
it (the low-VRAM scheme of ComfyUI's model_patcher and accelerate's cpu offload, written here from scratch). Units
of non-leaf modules (e.g. a positional embedding parameter on a transformer) are always placed whole.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Callable, Hashable

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from diffusion.patcher import ModelHandle, apply_patches
from executor.devices import OFFLOAD, DeviceModel, tensor_bytes


@dataclass
class Unit:
    """One submodule's own tensors: its path, size and whether it may be streamed."""

    path: str
    nbytes: int
    streamable: bool


# Layers whose forward reads only their own tensors, so a pre-hook can bring those in just for the call.
STREAMABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
              nn.GroupNorm, nn.LayerNorm, nn.Embedding, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _own(mod: nn.Module) -> list[Tensor]:
    return [t for t in list(mod._parameters.values()) + list(mod._buffers.values()) if t is not None]


# Modules whose forward reads their children's weights without calling the children.
READS_CHILD_WEIGHTS = (nn.MultiheadAttention,)


def module_units(model: nn.Module) -> list[Unit]:
    """The model's units in module order (submodules without tensors of their own are skipped).

    A unit streams only if its module is a leaf of a known type (`STREAMABLE`) that is called through its own
    forward: children of `READS_CHILD_WEIGHTS` modules (nn.MultiheadAttention reads `out_proj.weight` directly)
    are placed whole.
    """
    units = []
    direct_reads: set[str] = set()
    for path, mod in model.named_modules():
        if isinstance(mod, READS_CHILD_WEIGHTS):
            direct_reads.add(path)
        own = _own(mod)
        if not own:
            continue
        leaf = next(iter(mod.children()), None) is None
        streamable = leaf and isinstance(mod, STREAMABLE) and path.rpartition(".")[0] not in direct_reads
        units.append(Unit(path, sum(tensor_bytes(t) for t in own), streamable))
    return units


def plan_partial(units: list[Unit], budget: int | None) -> set[str]:
    """The unit paths to keep resident within `budget` bytes (None: all of them).

    Units that cannot stream are always kept; streamable ones are kept in module order while the total leaves room
    for the largest streamed unit to visit the device during its call.
    """
    total = sum(u.nbytes for u in units)
    if budget is None or total <= budget:
        return {u.path for u in units}
    keep = {u.path for u in units if not u.streamable}
    used = sum(u.nbytes for u in units if not u.streamable)
    streamable = [u for u in units if u.streamable]
    headroom = max((u.nbytes for u in streamable), default=0)
    for u in streamable:
        if used + u.nbytes + headroom > budget:
            break
        keep.add(u.path)
        used += u.nbytes
    return keep


def _own_tensors(mod: nn.Module) -> list[tuple[dict[str, Any], str]]:
    """(container, name) pairs of a module's own non-empty parameters and buffers."""
    pairs = [(mod._parameters, n) for n, t in mod._parameters.items() if t is not None]
    return pairs + [(mod._buffers, n) for n, t in mod._buffers.items() if t is not None]


def _get_tensor(container: dict[str, Any], name: str) -> Tensor:
    t = container[name]
    return t.data if isinstance(t, nn.Parameter) else t


def _set_tensor(container: dict[str, Any], name: str, value: Tensor) -> None:
    t = container[name]
    if isinstance(t, nn.Parameter):
        t.data = value
    else:
        container[name] = value


def _resolve(root: nn.Module, dotted: str) -> tuple[Any, str]:
    """(owner, attribute) for a dotted path inside `root`."""
    parent_path, _, attr = dotted.rpartition(".")
    owner: Any = root
    for part in parent_path.split(".") if parent_path else []:
        owner = getattr(owner, part)
    return owner, attr


def patch_modules(options: dict[str, Any]) -> list[Any]:
    """The patch objects in a handle's `transformer_options` ("patches" lists and "patches_replace" dicts) and its
    `model_function_wrapper` that hold weights of their own: they say so with a `to(device)` method (e.g. `HypernetworkPatch`), and the manager
    moves them with the model, as ComfyUI's ModelPatcher moves its patches' modules."""
    topts = options.get("transformer_options") or {}
    found: list[Any] = []
    candidates = [p for ps in (topts.get("patches") or {}).values() for p in ps]
    candidates += [p for block in (topts.get("patches_replace") or {}).values() for p in block.values()]
    candidates.append(options.get("model_function_wrapper"))
    for patch in candidates:
        if callable(getattr(patch, "to", None)) and not isinstance(patch, (Tensor, nn.Module)) \
                and all(patch is not f for f in found):
            found.append(patch)
    return found


class LoadedModule:
    """The manager's record of one base module: placement, streaming hooks, applied patches and their backups.

    Holds the module only weakly, so a model dropped by every cache and handle is freed; `on_dead` is called then.
    """

    def __init__(self, module: nn.Module, device: DeviceModel, name: str, kind: str,
                 on_dead: Callable[[Any], None], is_shared: Callable[[Tensor], bool] | None = None) -> None:
        self.ref = weakref.ref(module, on_dead)
        self.is_shared = is_shared or (lambda t: False)
        self.swapped: set[str] = set()  # patched keys whose shared tensor was replaced, not written
        # Host tensors shared with another model (executor/memory_shared.py), kept while their unit is placed so
        # offloading puts the shared memory back instead of a private copy.
        self.hosts: dict[tuple[int, str], Tensor] = {}
        self.device = device
        self.name = name
        self.kind = kind
        self.units = module_units(module)
        self.total_bytes = sum(u.nbytes for u in self.units)
        self.resident: set[str] = set()
        self.streamed: list[str] = []
        self.device_bytes = 0
        self.placed = False
        self.hooks: list[RemovableHandle] = []
        self.stash: dict[str, list[tuple[dict[str, Any], str, Tensor]]] = {}
        self.backups: dict[str, Tensor] = {}
        self.deferred: list[nn.Module] = []  # GGUF layers whose patches apply per call, after dequantisation
        self.object_originals: dict[str, Any] = {}
        self.object_tensors: list[tuple[dict[str, Any], str]] = []
        self.weights_key: Hashable | None = None
        self.patched_keys: list[str] = []
        self.last_used = 0
        self.in_use = 0
        self.patch_modules: list[Any] = []  # weight-holding patch objects of the handle placed with it

    @property
    def partial(self) -> bool:
        return self.placed and bool(self.streamed)

    def module(self) -> nn.Module:
        mod = self.ref()
        if mod is None:
            raise RuntimeError(f"model {self.name!r} was freed while the manager still tracked it")
        return mod

    # --- placement ----------------------------------------------------------------------------------------------
    def place(self, budget: int | None) -> None:
        """Move the units that fit `budget` bytes (None: all) to the compute device; stream the rest."""
        mod = self.module()
        keep = plan_partial(self.units, budget)
        subs = dict(mod.named_modules())
        try:
            self._place_units(subs, keep)
        except BaseException:
            # Out of memory half-way (or interrupted): put back what moved, so the record stays true.
            self.placed = True
            self.unplace()
            raise
        self.placed = True

    def _place_units(self, subs: dict[str, nn.Module], keep: set[str]) -> None:
        with torch.no_grad():
            for unit in self.units:
                sub = subs[unit.path]
                if unit.path in keep:
                    self._move_unit_in(sub)
                    self.device_bytes += unit.nbytes
                    self.resident.add(unit.path)
                else:
                    self._hook_stream(unit.path, sub)

    def _move_unit_in(self, sub: nn.Module) -> None:
        """Move one unit's tensors to the device, all or none."""
        moved: list[tuple[dict[str, Any], str]] = []
        try:
            for container, name in _own_tensors(sub):
                host = _get_tensor(container, name)
                placed = self.device.to_compute(host)
                if placed is not host and self.is_shared(host):
                    self.hosts[(id(container), name)] = host
                _set_tensor(container, name, placed)
                moved.append((container, name))
        except BaseException:
            for container, name in moved:
                _set_tensor(container, name, self.device.to_offload(_get_tensor(container, name)))
            raise

    def place_patch_modules(self, options: dict[str, Any], device: torch.device) -> None:
        """Move the weight-holding patches among `options` (hypernetworks and the like: see `patch_modules`) to
        `device` with the module; the previous handle's ones go back to the offload device."""
        wanted = patch_modules(options)
        for old in self.patch_modules:
            if all(old is not new for new in wanted):
                old.to(OFFLOAD)
        for new in wanted:
            new.to(device)
        self.patch_modules = wanted

    def unplace(self) -> None:
        """Undo `place`: streamed units lose their hooks, resident units go back to the offload device."""
        for patch in self.patch_modules:
            patch.to(OFFLOAD)
        self.patch_modules = []
        mod = self.module()
        self._unstash_all()
        for hook in self.hooks:
            hook.remove()
        self.hooks.clear()
        self.streamed.clear()
        subs = dict(mod.named_modules())
        with torch.no_grad():
            for unit in self.units:
                if unit.path in self.resident:
                    for container, name in _own_tensors(subs[unit.path]):
                        placed = _get_tensor(container, name)
                        host = self.hosts.pop((id(container), name), None)
                        if host is None:
                            _set_tensor(container, name, self.device.to_offload(placed))
                        else:  # bitwise the same: patches were restored before unplacing
                            self.device.release(tensor_bytes(placed))
                            _set_tensor(container, name, host)
        self.hosts.clear()
        self.resident.clear()
        self.device_bytes = 0
        self.placed = False

    def _hook_stream(self, path: str, sub: nn.Module) -> None:
        self.streamed.append(path)
        self.hooks.append(sub.register_forward_pre_hook(self._stream_in_hook(path)))
        self.hooks.append(sub.register_forward_hook(self._stream_out_hook(path), always_call=True))

    def _stream_in_hook(self, path: str) -> Callable[..., None]:
        def stream_in(module: nn.Module, args: Any) -> Any:
            if path in self.stash:
                return
            saved = []
            with torch.no_grad():
                for container, name in _own_tensors(module):
                    host = _get_tensor(container, name)
                    _set_tensor(container, name, self.device.to_compute(host))
                    saved.append((container, name, host))
            self.stash[path] = saved
            # A caller that placed its inputs by a streamed (offloaded) weight's device gets them moved here.
            target = self.device.device
            if any(isinstance(a, Tensor) and a.device != target for a in args):
                return tuple(a.to(target) if isinstance(a, Tensor) else a for a in args)
            return None
        return stream_in

    def _stream_out_hook(self, path: str) -> Callable[..., None]:
        def stream_out(module: nn.Module, args: Any, output: Any) -> None:
            self._unstash(path)
        return stream_out

    def _unstash(self, path: str) -> None:
        for container, name, host in self.stash.pop(path, []):
            self.device.release(tensor_bytes(_get_tensor(container, name)))
            _set_tensor(container, name, host)

    def _unstash_all(self) -> None:
        for path in list(self.stash):
            self._unstash(path)

    # --- patches ------------------------------------------------------------------------------------------------
    def apply(self, handle: ModelHandle) -> None:
        """Apply the handle's weight and object patches where the weights now live, keeping bitwise backups.
        A patch that fails (e.g. a delta of the wrong shape) undoes the ones already applied before raising."""
        try:
            self._apply(handle)
        except BaseException:
            self.restore()
            raise
        self.weights_key = handle.weights_key()

    def _apply(self, handle: ModelHandle) -> None:
        mod = self.module()
        with torch.no_grad():
            for key, patches in handle.patches.items():
                if not patches:
                    continue
                owner, attr = _resolve(mod, key)
                container = owner._parameters if attr in owner._parameters else owner._buffers
                if attr == "weight" and getattr(owner, "weight_qtype", None) is not None:
                    # quantised blocks cannot take a delta: the layer applies it to each dequantised copy
                    owner.weight_patches = list(patches)
                    self.deferred.append(owner)
                    self.patched_keys.append(key)
                    continue
                target = _get_tensor(container, attr)
                if self.is_shared(target):
                    # Another model uses this memory too: patch a copy and keep the shared tensor as the backup.
                    self.backups[key] = target
                    with torch.inference_mode(torch.is_inference(target)):
                        _set_tensor(container, attr, apply_patches(target, patches).to(target.dtype))
                    self.swapped.add(key)
                else:
                    self.backups[key] = target.detach().to(OFFLOAD, copy=True)
                    with torch.inference_mode(torch.is_inference(target)):
                        target.copy_(apply_patches(target, patches))
                self.patched_keys.append(key)
        for path, obj in handle.object_patches.items():
            owner, attr = _resolve(mod, path)
            self.object_originals[path] = getattr(owner, attr)
            if isinstance(obj, nn.Module):
                self._object_to_device(obj)
            setattr(owner, attr, obj)

    def _object_to_device(self, obj: nn.Module) -> None:
        """An object patch that is a module (e.g. a replacement `model_sampling` with schedule buffers) goes to the
        compute device with the model, and back on restore."""
        with torch.no_grad():
            for sub in obj.modules():
                for container, name in _own_tensors(sub):
                    t = _get_tensor(container, name)
                    _set_tensor(container, name, self.device.to_compute(t))
                    self.object_tensors.append((container, name))
                    self.device_bytes += tensor_bytes(t)

    def restore(self) -> None:
        """Put back the base weights (bitwise, from the backups) and the objects that object patches replaced."""
        mod = self.module()
        with torch.no_grad():
            for container, name in self.object_tensors:
                t = _get_tensor(container, name)
                self.device_bytes -= tensor_bytes(t)
                _set_tensor(container, name, self.device.to_offload(t))
        self.object_tensors.clear()
        for path, original in reversed(list(self.object_originals.items())):
            owner, attr = _resolve(mod, path)
            setattr(owner, attr, original)
        self.object_originals.clear()
        with torch.no_grad():
            for key, backup in self.backups.items():
                owner, attr = _resolve(mod, key)
                container = owner._parameters if attr in owner._parameters else owner._buffers
                if key in self.swapped:
                    _set_tensor(container, attr, backup)
                    continue
                target = _get_tensor(container, attr)
                with torch.inference_mode(torch.is_inference(target)):
                    target.copy_(backup)
        self.backups.clear()
        self.swapped.clear()
        for owner in self.deferred:
            owner.weight_patches = None
        self.deferred.clear()
        self.patched_keys.clear()
        self.weights_key = None

    def summary(self) -> dict[str, Any]:
        """A plain description for `/system_stats`-like reports."""
        return {"name": self.name, "kind": self.kind, "bytes": self.total_bytes, "device_bytes": self.device_bytes,
                "partial": self.partial, "streamed_units": len(self.streamed), "patched_keys": len(self.patched_keys),
                "in_use": self.in_use > 0, "last_used": self.last_used}
