"""Hooks: LoRA weight changes that belong to conditioning and follow a strength schedule during sampling.

This module owns the HOOKS value (`HookGroup` of `WeightHook`s), the HOOK_KEYFRAMES value (`HookKeyframeGroup`),
the conditioning helpers of ComfyUI's hook nodes (set properties / combine / default conds), and
`hook_weights_applied`, which puts one hook group's patches on the model's weights for one batched model call and
restores them bitwise afterwards. The semantics follow ComfyUI's comfy/hooks.py and the hook grouping of
comfy/samplers.py `_calc_cond_batch` (conds run grouped by their hooks, each group with its own weights; "default"
conds fill whatever area a group's own conds leave uncovered); the code is Loom's own.

A hook's strength at a step is `strength_model · keyframe strength`. Within one sampling run a cursor per hook
walks its keyframes as the sigma falls: the first keyframe applies from the start; at each new sigma, once the
current keyframe has been used for its `guarantee_steps`, the cursor moves to later keyframes whose start sigma
(from start_percent) is at or above the sigma, stopping at one that guarantees steps (ComfyUI's
HookKeyframeGroup.prepare_current_keyframe). The cursors live in the run's transformer_options["hook_keyframes"].
"""
from __future__ import annotations

import math
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Hashable, Iterator

import torch
from torch import Tensor, nn

from diffusion.patcher import ModelHandle, WeightPatch, apply_patches

INTERPOLATIONS: tuple[str, ...] = ("linear", "ease_in", "ease_out", "ease_in_out")


def interpolate(start: float, end: float, count: int, method: str) -> list[float]:
    """`count` values from `start` to `end` spaced by `method` (one of INTERPOLATIONS)."""
    if method not in INTERPOLATIONS:
        raise ValueError(f"interpolation {method!r} is not one of {INTERPOLATIONS}")
    if count <= 1:
        return [float(start)]
    ts = [i / (count - 1) for i in range(count)]
    shape: dict[str, Callable[[float], float]] = {
        "linear": lambda t: t, "ease_in": lambda t: t * t, "ease_out": lambda t: 1 - (1 - t) ** 2,
        "ease_in_out": lambda t: t * t * (3 - 2 * t)}
    return [start + (end - start) * shape[method](t) for t in ts]


@dataclass(frozen=True)
class HookKeyframe:
    """From `start_percent` of the sampling on, the hook's strength is multiplied by `strength`."""

    strength: float = 1.0
    start_percent: float = 0.0
    guarantee_steps: int = 1


@dataclass(frozen=True)
class HookKeyframeGroup:
    """A HOOK_KEYFRAMES value: keyframes kept sorted by start_percent (stable for equal ones)."""

    keyframes: tuple[HookKeyframe, ...] = ()

    def add(self, keyframe: HookKeyframe) -> "HookKeyframeGroup":
        """A new group with `keyframe` added."""
        ordered = sorted(self.keyframes + (keyframe,), key=lambda k: k.start_percent)
        return HookKeyframeGroup(tuple(ordered))

    def strength_at(self, sigma: float, percent_to_sigma: Callable[[float], float]) -> float:
        """The multiplier at `sigma`: the last keyframe whose start sigma is >= sigma (the first one before all)."""
        if not self.keyframes:
            return 1.0
        current = self.keyframes[0]
        for keyframe in self.keyframes[1:]:
            if percent_to_sigma(keyframe.start_percent) >= sigma:
                current = keyframe
        return current.strength


@dataclass
class KeyframeCursor:
    """Where one hook's schedule stands in a sampling run."""

    index: int = 0
    used_steps: int = 0
    last_sigma: float | None = None

    def advance(self, group: HookKeyframeGroup, sigma: float, percent_to_sigma: Callable[[float], float]) -> float:
        """The keyframe strength at `sigma` (counting a step only when the sigma changes)."""
        frames = group.keyframes
        if sigma != self.last_sigma:
            self.last_sigma = sigma
            if self.used_steps >= frames[self.index].guarantee_steps:
                for i in range(self.index + 1, len(frames)):
                    if percent_to_sigma(frames[i].start_percent) < sigma:
                        break
                    self.index, self.used_steps = i, 0
                    if frames[i].guarantee_steps > 0:
                        break
            self.used_steps += 1
        return frames[self.index].strength


@dataclass(frozen=True)
class WeightHook:
    """A LoRA (or model-as-LoRA) file's tensors as a hook: patches the MODEL at `strength_model` and the CLIP at
    `strength_clip`, scheduled by `keyframes`. `source` identifies the file (for patch identity).

    With `model_as_lora`, `lora` holds another checkpoint's MODEL weights and `clip_weights` its text encoder's
    (Loom key layouts); the patch moves each weight towards the other model's: W + s·(W_other - W)."""

    lora: dict[str, Tensor] = field(repr=False, compare=False, hash=False)
    source: Hashable
    strength_model: float = 1.0
    strength_clip: float = 1.0
    keyframes: HookKeyframeGroup = HookKeyframeGroup()
    model_as_lora: bool = False
    clip_weights: dict[str, Tensor] | None = field(default=None, repr=False, compare=False, hash=False)


@dataclass(frozen=True)
class HookGroup:
    """A HOOKS value: an ordered tuple of hooks (combining keeps order and drops exact repeats)."""

    hooks: tuple[WeightHook, ...] = ()

    def combine(self, other: "HookGroup | None") -> "HookGroup":
        if other is None:
            return self
        extra = tuple(h for h in other.hooks if not any(h is mine for mine in self.hooks))
        return HookGroup(self.hooks + extra)

    @staticmethod
    def combine_all(groups: list["HookGroup | None"]) -> "HookGroup | None":
        """CombineHooks: None when no group is given."""
        present = [g for g in groups if g is not None]
        if not present:
            return None
        out = present[0]
        for group in present[1:]:
            out = out.combine(group)
        return out

    def with_keyframes(self, keyframes: HookKeyframeGroup | None) -> "HookGroup":
        """SetHookKeyframes: every hook scheduled by `keyframes` (None: unscheduled)."""
        return HookGroup(tuple(replace(h, keyframes=keyframes or HookKeyframeGroup()) for h in self.hooks))


def clip_schedule(hooks: HookGroup) -> list[tuple[tuple[float, float], dict[int, float]]]:
    """SetClipHooks with schedule_clip: the percent ranges over which every hook's keyframe strength is constant,
    each with the multiplier per hook (by id); adjacent keyframes of equal strength share a range."""
    spans: dict[int, list[tuple[float, float, float]]] = {}
    for hook in hooks.hooks:
        frames = hook.keyframes.keyframes
        if not frames:
            spans[id(hook)] = [(0.0, 1.0, 1.0)]
            continue
        own: list[tuple[float, float, float]] = []
        current = frames[0]
        for frame in frames[1:]:
            if frame.start_percent > current.start_percent and not math.isclose(frame.strength, current.strength):
                own.append((current.start_percent, frame.start_percent, current.strength))
                current = frame
            elif frame.start_percent == current.start_percent:
                current = frame
        if not math.isclose(current.start_percent, 1.0):
            own.append((current.start_percent, 1.0, current.strength))
        spans[id(hook)] = own
    bounds = sorted({0.0} | {b for own in spans.values() for lo, hi, _ in own for b in (lo, hi)})
    out = []
    for lo, hi in zip(bounds, bounds[1:]):
        mults = {}
        for key, own in spans.items():
            match = next((m for a, b, m in own if a < hi and b > lo), None)
            mults[key] = 1.0 if match is None else match
        out.append(((lo, hi), mults))
    return out


# --- conditioning helpers (the hook nodes' semantics) --------------------------------------------------------------
Conditioning = list[list[Any]]


def _with_values(conditioning: Conditioning, values: dict[str, Any]) -> Conditioning:
    return [[t[0], {**t[1], **values}] for t in conditioning]


def set_hooks(conditioning: Conditioning, hooks: HookGroup | None) -> Conditioning:
    """Attach `hooks` to every entry, after any hooks the entry already has."""
    if hooks is None:
        return conditioning
    out = []
    for t in conditioning:
        current = t[1].get("hooks")
        out.append([t[0], {**t[1], "hooks": current.combine(hooks) if current is not None else hooks}])
    return out


def set_props(conditioning: Conditioning, strength: float, set_cond_area: str, mask: Tensor | None = None,
              hooks: HookGroup | None = None, timesteps: tuple[float, float] | None = None) -> Conditioning:
    """ConditioningSetProperties on one list: hooks, timestep range, and (with a mask) mask, bounds and strength."""
    out = set_hooks(conditioning, hooks)
    if timesteps is not None:
        out = _with_values(out, {"start_percent": float(timesteps[0]), "end_percent": float(timesteps[1])})
    if mask is not None:
        mask = mask.unsqueeze(0) if mask.ndim < 3 else mask
        out = _with_values(out, {"mask": mask, "set_area_to_bounds": set_cond_area != "default",
                                 "mask_strength": float(strength)})
    return out


def set_props_and_combine(base: Conditioning, new: Conditioning, strength: float = 1.0,
                          set_cond_area: str = "default", mask: Tensor | None = None, hooks: HookGroup | None = None,
                          timesteps: tuple[float, float] | None = None) -> Conditioning:
    """`base` followed by `new` with its properties set."""
    return list(base) + set_props(new, strength, set_cond_area, mask, hooks, timesteps)


def set_default_and_combine(base: Conditioning, new: Conditioning, hooks: HookGroup | None = None) -> Conditioning:
    """`base` followed by `new` marked as default conds (with `hooks`)."""
    return list(base) + _with_values(set_hooks(new, hooks), {"default": True})


# --- applying weights ---------------------------------------------------------------------------------------------
class _ResolvedCache:
    """Hook patches matched against one module's keys, built once per (hook, module, target); the most recent
    `size` are kept, so old hooks (and their file tensors) are released."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self.entries: OrderedDict[tuple[int, int, str], tuple[WeightHook, nn.Module, dict[str, list]]] = \
            OrderedDict()

    def deltas(self, hook: WeightHook, module: nn.Module, target: str) -> dict[str, list]:
        key = (id(hook), id(module), target)
        found = self.entries.get(key)
        if found is None or found[0] is not hook or found[1] is not module:
            found = (hook, module, _resolve(hook, module, target))
            self.entries[key] = found
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)
        self.entries.move_to_end(key)
        return found[2]


def _resolve(hook: WeightHook, module: nn.Module, target: str) -> dict[str, list]:
    """module key -> [(name, delta)] for `hook` on `module` ("unet" or "clip")."""
    from diffusion.adapters.lora import clip_map_for, match_adapters, unet_map_for

    handle = ModelHandle(module, kind="unet" if target == "unet" else "text_encoder")
    if hook.model_as_lora:
        return _model_as_lora_deltas(hook.lora if target == "unet" else (hook.clip_weights or {}), handle)
    key_map = unet_map_for(handle) if target == "unet" else clip_map_for(handle)
    return match_adapters(hook.lora, key_map).deltas


def _model_as_lora_deltas(weights: dict[str, Tensor], handle: ModelHandle) -> dict[str, list]:
    """Model as LoRA: delta = other model's weight - this model's (same key layout)."""
    out: dict[str, list] = {}
    for key in handle.state_keys():
        other = weights.get(key)
        if other is not None and other.is_floating_point() and key.split(".")[0] != "model_sampling":
            out[key] = [(key, lambda w, o=other: o.to(device=w.device, dtype=torch.float32) - w)]
    return out


RESOLVED = _ResolvedCache()


def keyframe_mult(hook: WeightHook, sigma: float | None, percent_to_sigma: Callable[[float], float] | None,
                  cursors: dict[int, tuple[WeightHook, KeyframeCursor]] | None) -> float:
    """The hook's keyframe multiplier at `sigma`: through its run cursor when `cursors` is given, else by the
    stateless rule of `HookKeyframeGroup.strength_at`; 1 when unscheduled."""
    if sigma is None or percent_to_sigma is None or not hook.keyframes.keyframes:
        return 1.0
    if cursors is None:
        return hook.keyframes.strength_at(sigma, percent_to_sigma)
    entry = cursors.get(id(hook))
    if entry is None or entry[0] is not hook:
        entry = cursors[id(hook)] = (hook, KeyframeCursor())
    return entry[1].advance(hook.keyframes, sigma, percent_to_sigma)


def hook_patches(hooks: HookGroup, module: nn.Module, target: str, sigma: float | None,
                 percent_to_sigma: Callable[[float], float] | None,
                 cursors: dict[int, tuple[WeightHook, KeyframeCursor]] | None = None,
                 mults: dict[int, float] | None = None) -> dict[str, list[WeightPatch]]:
    """The weight patches `hooks` put on `module` at `sigma` (None: unscheduled, full strength; `mults` gives
    fixed multipliers per hook id instead, as a CLIP schedule range does)."""
    patches: dict[str, list[WeightPatch]] = {}
    for hook in hooks.hooks:
        base = hook.strength_model if target == "unet" else hook.strength_clip
        mult = mults.get(id(hook), 1.0) if mults is not None else keyframe_mult(hook, sigma, percent_to_sigma,
                                                                                cursors)
        strength = base * mult
        if strength == 0 or math.isnan(strength):
            continue
        for key, deltas in RESOLVED.deltas(hook, module, target).items():
            for name, delta in deltas:
                patches.setdefault(key, []).append(WeightPatch(delta, float(strength), key_hint=key,
                                                               ident=(hook.source, name)))
    return patches


def _tensor_at(module: nn.Module, key: str) -> Tensor:
    owner_path, _, name = key.rpartition(".")
    owner = module.get_submodule(owner_path) if owner_path else module
    tensor = owner._parameters[name] if name in owner._parameters else owner._buffers[name]
    return tensor.data if isinstance(tensor, nn.Parameter) else tensor


@contextmanager
def weights_patched(module: nn.Module, patches: dict[str, list[WeightPatch]]) -> Iterator[None]:
    """Apply `patches` on top of the module's current weights (wherever they live) and restore them bitwise."""
    backups: list[tuple[Tensor, Tensor]] = []
    try:
        with torch.no_grad():
            for key, plist in patches.items():
                target = _tensor_at(module, key)
                backups.append((target, target.detach().clone()))
                with torch.inference_mode(torch.is_inference(target)):
                    target.copy_(apply_patches(target, plist))
        yield
    finally:
        with torch.no_grad():
            for target, backup in reversed(backups):
                with torch.inference_mode(torch.is_inference(target)):
                    target.copy_(backup)


@contextmanager
def hook_weights_applied(apply_model: Callable[..., Tensor], hooks: HookGroup | None, sigma: Tensor,
                         cursors: dict | None = None) -> Iterator[None]:
    """Around one model call: the hook group's patches at this sigma on the module behind `apply_model`
    (`cursors`: the run's keyframe cursors, transformer_options["hook_keyframes"])."""
    module = getattr(apply_model, "__self__", None)
    if hooks is None or not hooks.hooks or not isinstance(module, nn.Module):
        yield
        return
    sampling = getattr(module, "model_sampling", None)
    to_sigma = getattr(sampling, "percent_to_sigma", None)
    patches = hook_patches(hooks, module, "unet", float(sigma.reshape(-1)[0]), to_sigma, cursors)
    with weights_patched(module, patches):
        yield


def default_cond_mults(hooked: dict[Any, list[tuple[Any, int]]], default_count: list[int],
                       x: Tensor) -> list[Tensor | None]:
    """Per cond list, the weight left for its default conds: 1 minus every run cond's weight on its area,
    floored at 0 (None where the list has no default conds or nothing is left)."""
    mults: list[Tensor | None] = []
    for index, count in enumerate(default_count):
        if count == 0:
            mults.append(None)
            continue
        left = torch.ones_like(x)
        for chunks in hooked.values():
            for chunk, which in chunks:
                if which != index:
                    continue
                view = left
                if chunk.area is not None:
                    a = chunk.area
                    view = left.narrow(2, a[2], a[0]).narrow(3, a[3], a[1])
                view -= chunk.mult
        left.clamp_(min=0)
        mults.append(left if float(left.max()) > 0 else None)
    return mults
