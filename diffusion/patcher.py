"""Model handles: a shared base module plus the weight patches and options a workflow put on it.

This module owns `WeightPatch` (one LoRA-like change to one weight) and `ModelHandle` (what flows along MODEL,
CLIP and VAE sockets). A handle never changes its module's parameters itself: it only records patches. The
executor's model manager (`executor/memory.py`) applies a handle's patches when it puts the module on the compute
device and restores the base weights bitwise when it offloads it or switches to another clone — the idea of
ComfyUI's `ModelPatcher` (model_patcher.py, `clone`/`add_patches`), written from scratch.

Cached node outputs are immutable, so every edit goes through `clone()`: the clone shares the (big) module and
copies the (small) patch lists and options, so nothing a clone does leaks into the handle it came from.

The handle is also ComfyUI's `ModelPatcher` as packs use it: its ComfyUI-named methods come from
`diffusion/patcher_api.py` (a base class), so one object type flows along MODEL sockets.
"""
from __future__ import annotations

from typing import Any, Hashable, Iterable, Literal

from torch import Tensor, nn

from diffusion.adapters.patch_data import PatchSource, to_weight_patch
from diffusion.patcher_api import ModelPatcherAPI
from diffusion.weight_patch import WeightPatch, apply_patches

__all__ = ["ModelHandle", "WeightPatch", "apply_patches", "freeze", "KINDS"]

Kind = Literal["unet", "vae", "text_encoder", "other"]
KINDS: tuple[str, ...] = ("unet", "vae", "text_encoder", "other")


def freeze(value: Any) -> Hashable:
    """A hashable description of an options value: dicts and lists by content, other objects by identity."""
    if isinstance(value, dict):
        return ("dict",) + tuple(sorted(((str(k), freeze(v)) for k, v in value.items()), key=lambda kv: kv[0]))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__,) + tuple(freeze(v) for v in value)
    if isinstance(value, (str, int, float, bool, type(None), bytes)):
        return value
    if isinstance(value, Tensor):
        return ("tensor", id(value), tuple(value.shape), str(value.dtype))
    try:
        hash(value)
    except TypeError:
        return ("object", type(value).__qualname__, id(value))
    return value


def _copy_containers(value: Any) -> Any:
    """Copy nested dicts and lists (not their leaves), so a clone's option edits never reach the original."""
    if isinstance(value, dict):
        return {k: _copy_containers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_containers(v) for v in value]
    return value


class ModelHandle(ModelPatcherAPI):
    """A MODEL/CLIP/VAE weights handle: a shared base `nn.Module` plus patches and ComfyUI-like model options.

    - `model`: the base module, shared by all clones; its parameters are changed only by the model manager while
      the handle is loaded, and restored exactly afterwards.
    - `patches`: state-dict key of `model` → ordered list of `WeightPatch`.
    - `object_patches`: dotted attribute path in `model` → object set there while loaded (e.g. a replacement
      forward or submodule for FreeU or hypernetworks); the original is put back on unload.
    - `options`: ComfyUI's `model_options` (transformer_options, sampler_cfg_function, sampler_post_cfg_function,
      model_function_wrapper, ...).
    """

    def __init__(self, model: nn.Module, name: str = "", kind: Kind = "unet") -> None:
        if kind not in KINDS:
            raise ValueError(f"ModelHandle kind {kind!r} is not one of {KINDS}")
        self.model = model
        self.name = name or type(model).__name__
        self.kind: str = kind
        self.patches: dict[str, list[WeightPatch]] = {}
        self.object_patches: dict[str, Any] = {}
        self.options: dict[str, Any] = {"transformer_options": {}}
        self._keys: frozenset[str] | None = None
        self.parent: ModelHandle | None = None

    def __repr__(self) -> str:
        return (f"ModelHandle({self.name!r}, kind={self.kind!r}, patched_keys={len(self.patches)}, "
                f"object_patches={len(self.object_patches)})")

    # --- copies -------------------------------------------------------------------------------------------------
    def clone(self) -> "ModelHandle":
        """A handle on the same module with its own copies of the patch lists, object patches, options and
        ComfyUI registries (wrappers, callbacks, attachments); a subclass's clone is of the same class."""
        other = type(self).__new__(type(self))
        other.model = self.model
        other.name = self.name
        other.kind = self.kind
        other.patches = {k: list(v) for k, v in self.patches.items()}
        other.object_patches = dict(self.object_patches)
        other.options = _copy_containers(self.options)
        other._keys = self._keys
        self.copy_registries_to(other)
        for callback in self.get_all_callbacks("on_clone"):
            callback(self, other)
        return other

    def is_clone_of(self, other: "ModelHandle") -> bool:
        """True when both handles share the same base module."""
        return isinstance(other, ModelHandle) and self.model is other.model

    # --- weight patches -----------------------------------------------------------------------------------------
    def state_keys(self) -> frozenset[str]:
        """The state-dict keys of the base module (parameters and persistent buffers)."""
        if self._keys is None:
            self._keys = frozenset(self.model.state_dict(keep_vars=True).keys())
        return self._keys

    def add_patches(self, patches: dict[Any, Any], strength_patch: float = 1.0,
                    strength_model: float = 1.0) -> list[Any]:
        """Append patches in place (call on a clone); returns the keys applied. Unknown keys are skipped and can
        be listed with `unknown_keys(patches)`. Values are `WeightPatch`es, or ComfyUI's patch data (a LoRA tuple,
        a difference, a `get_key_patches` list; `diffusion/adapters/patch_data.py`) applied at `strength_patch` with the
        base scaled by `strength_model`, as ComfyUI's `ModelPatcher.add_patches`."""
        known = self.state_keys()
        applied = []
        source = None
        for key, value in patches.items():
            if isinstance(value, WeightPatch) and isinstance(key, str):
                name, patch = key, value
            else:
                source = source or PatchSource(patches)
                name, patch = to_weight_patch(key, value, strength_patch, strength_model, source)
            if name in known:
                self.patches.setdefault(name, []).append(patch)
                applied.append(key)
        return applied

    def unknown_keys(self, patches: Iterable[str]) -> list[str]:
        """The keys among `patches` that are not in the base module's state dict."""
        known = self.state_keys()
        return [k for k in patches if k not in known]

    def add_object_patch(self, path: str, obj: Any) -> None:
        """Replace the attribute at dotted `path` of the module by `obj` while this handle is loaded."""
        self.object_patches[path] = obj

    # --- options ------------------------------------------------------------------------------------------------
    def set_option(self, name: str, value: Any) -> None:
        """Set a top-level model option (e.g. `sampler_cfg_function`)."""
        self.options[name] = value

    def set_transformer_option(self, name: str, value: Any) -> None:
        """Set an entry of `options["transformer_options"]`."""
        self.options.setdefault("transformer_options", {})[name] = value

    # --- identity and size --------------------------------------------------------------------------------------
    def weights_key(self) -> Hashable:
        """What the loaded weights depend on: the weight patches and object patches (not the options)."""
        weights = tuple((k, tuple(p.identity() for p in v)) for k, v in sorted(self.patches.items()))
        objects = tuple((k, freeze(v)) for k, v in sorted(self.object_patches.items()))
        return (weights, objects)

    def patch_key(self) -> Hashable:
        """A hashable description of patches and options, for caching and identity (valid in this process)."""
        return (id(self.model), self.kind, self.weights_key(), freeze(self.options))

    def nbytes(self) -> int:
        """Bytes of the base module's parameters and buffers."""
        total = sum(p.numel() * p.element_size() for p in self.model.parameters())
        return total + sum(b.numel() * b.element_size() for b in self.model.buffers())

    def patched_copy_of(self, key: str) -> Tensor:
        """The patched value of one weight, computed apart from the module (for tests and inspection); call it
        while the module holds its base weights (not inside the manager's `use` of a patched clone)."""
        base = self.model.state_dict(keep_vars=True)[key].detach()
        return apply_patches(base, self.patches.get(key, []))
