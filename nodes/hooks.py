"""Hook nodes: scheduled LoRA hooks, their keyframes, and the conditioning nodes that attach them.

Names, inputs (order, defaults, ranges), outputs and categories are ComfyUI's (comfy_extras/nodes_hooks.py, all
marked experimental there too). The HOOKS and HOOK_KEYFRAMES values and the conditioning semantics live in
`diffusion/adapters/hooks.py`; at sampling, conds carrying hooks run with their group's LoRA patches applied per model call
at the keyframe strength of the current step, and the weights are restored after each call.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Callable

import torch

from diffusion.adapters.hooks import (INTERPOLATIONS, HookGroup, HookKeyframe, HookKeyframeGroup, WeightHook, clip_schedule,
                             hook_patches,
                             interpolate, set_default_and_combine, set_props, set_props_and_combine)
from diffusion.text.text_encoders import CLIP
from nodes.loaders import load_checkpoint_sockets, node_context
from nodes.lora import LoraFileCache, lora_source
from nodes.spec import Boolean, Combo, FileList, Float, Input, Int, Node, Output

log = logging.getLogger(__name__)
Conditioning = list[list[Any]]

_HOOK_STRENGTH = dict(min=-20.0, max=20.0, step=0.01)
_PERCENT = dict(min=0.0, max=1.0, step=0.001)
_COND_AREA = ["default", "mask bounds"]


def _opt(name: str, type_: str) -> Any:
    return Input(name, type_, optional=True)


class CreateHookLora(Node):
    """A LoRA as a hook: it changes the model only for the conditioning the hook is attached to."""

    DISPLAY_NAME = "Create Hook LoRA"
    CATEGORY = "advanced/hooks/create"
    EXPERIMENTAL = True
    INPUTS = (Combo("lora_name", FileList("loras")), Float("strength_model", 1.0, **_HOOK_STRENGTH),
              Float("strength_clip", 1.0, **_HOOK_STRENGTH), _opt("prev_hooks", "HOOKS"))
    OUTPUTS = (Output("HOOKS"),)

    def execute(self, lora_name: str, strength_model: float = 1.0, strength_clip: float = 1.0,
                prev_hooks: HookGroup | None = None) -> tuple[HookGroup]:
        prev = prev_hooks or HookGroup()
        if strength_model == 0 and strength_clip == 0:
            return (prev,)
        ctx = node_context()
        if ctx.folders is None:
            raise RuntimeError("CreateHookLora needs the folders of a Loom instance; the executor was given none")
        self.files = getattr(self, "files", None) or LoraFileCache()
        source, tensors = self.files.read(ctx.folders.full_path("loras", lora_name))
        hook = WeightHook(tensors, source, float(strength_model), float(strength_clip))
        return (prev.combine(HookGroup((hook,))),)


class CreateHookLoraModelOnly(CreateHookLora):
    """A LoRA as a hook on the diffusion model only."""

    DISPLAY_NAME = "Create Hook LoRA (MO)"
    INPUTS = (Combo("lora_name", FileList("loras")), Float("strength_model", 1.0, **_HOOK_STRENGTH),
              _opt("prev_hooks", "HOOKS"))

    def execute(self, lora_name: str, strength_model: float = 1.0,  # type: ignore[override]
                prev_hooks: HookGroup | None = None) -> tuple[HookGroup]:
        return super().execute(lora_name, strength_model, 0.0, prev_hooks)


def _module_weights(handle: Any) -> dict[str, torch.Tensor] | None:
    """A copy of the floating-point weights of a socket's base module (None for a missing socket)."""
    module = getattr(getattr(handle, "handle", handle), "model", None)
    if module is None:
        return None
    return {k: v.detach().clone() for k, v in module.state_dict().items() if v.is_floating_point()}


class CreateHookModelAsLora(Node):
    """Another checkpoint as a hook: the hooked conditioning sees the model (and CLIP) moved towards its
    weights by the strengths."""

    DISPLAY_NAME = "Create Hook Model as LoRA"
    CATEGORY = "advanced/hooks/create"
    EXPERIMENTAL = True
    INPUTS = (Combo("ckpt_name", FileList("checkpoints")), Float("strength_model", 1.0, **_HOOK_STRENGTH),
              Float("strength_clip", 1.0, **_HOOK_STRENGTH), _opt("prev_hooks", "HOOKS"))
    OUTPUTS = (Output("HOOKS"),)

    def execute(self, ckpt_name: str, strength_model: float = 1.0, strength_clip: float = 1.0,
                prev_hooks: HookGroup | None = None) -> tuple[HookGroup]:
        ctx = node_context()
        if ctx.folders is None:
            raise RuntimeError("CreateHookModelAsLora needs the folders of a Loom instance; the executor was given "
                               "none")
        source = ("model_as_lora",) + tuple(lora_source(ctx.folders.full_path("checkpoints", ckpt_name)))
        cached = getattr(self, "loaded_weights", None)
        if cached is None or cached[0] != source:
            model, clip, _ = load_checkpoint_sockets(ckpt_name)
            cached = (source, _module_weights(model) or {}, _module_weights(clip))
            self.loaded_weights = cached
        hook = WeightHook(cached[1], source, float(strength_model), float(strength_clip), model_as_lora=True,
                          clip_weights=cached[2])
        return ((prev_hooks or HookGroup()).combine(HookGroup((hook,))),)


class CreateHookModelAsLoraModelOnly(CreateHookModelAsLora):
    """Another checkpoint as a hook on the diffusion model only."""

    DISPLAY_NAME = "Create Hook Model as LoRA (MO)"
    INPUTS = (Combo("ckpt_name", FileList("checkpoints")), Float("strength_model", 1.0, **_HOOK_STRENGTH),
              _opt("prev_hooks", "HOOKS"))

    def execute(self, ckpt_name: str, strength_model: float = 1.0,  # type: ignore[override]
                prev_hooks: HookGroup | None = None) -> tuple[HookGroup]:
        return super().execute(ckpt_name, strength_model, 0.0, prev_hooks)


class SetHookKeyframes(Node):
    """Schedule every hook of `hooks` by the keyframes."""

    DISPLAY_NAME = "Set Hook Keyframes"
    CATEGORY = "advanced/hooks/scheduling"
    EXPERIMENTAL = True
    INPUTS = (Input("hooks", "HOOKS"), _opt("hook_kf", "HOOK_KEYFRAMES"))
    OUTPUTS = (Output("HOOKS"),)

    def execute(self, hooks: HookGroup, hook_kf: HookKeyframeGroup | None = None) -> tuple[HookGroup]:
        return (hooks.with_keyframes(hook_kf) if hook_kf is not None else hooks,)


class CreateHookKeyframe(Node):
    """From start_percent on, the hooks' strength is multiplied by strength_mult."""

    DISPLAY_NAME = "Create Hook Keyframe"
    CATEGORY = "advanced/hooks/scheduling"
    EXPERIMENTAL = True
    INPUTS = (Float("strength_mult", 1.0, **_HOOK_STRENGTH), Float("start_percent", 0.0, **_PERCENT),
              _opt("prev_hook_kf", "HOOK_KEYFRAMES"))
    OUTPUTS = (Output("HOOK_KEYFRAMES", "HOOK_KF"),)

    def execute(self, strength_mult: float = 1.0, start_percent: float = 0.0,
                prev_hook_kf: HookKeyframeGroup | None = None) -> tuple[HookKeyframeGroup]:
        group = prev_hook_kf or HookKeyframeGroup()
        return (group.add(HookKeyframe(float(strength_mult), float(start_percent))),)


def _add_keyframes(group: HookKeyframeGroup, percents: list[float], strengths: list[float],
                   print_keyframes: bool) -> HookKeyframeGroup:
    for i, (percent, strength) in enumerate(zip(percents, strengths)):
        group = group.add(HookKeyframe(float(strength), float(percent), guarantee_steps=1 if i == 0 else 0))
        if print_keyframes:
            log.info("Hook Keyframe - start_percent:%s = %s", percent, strength)
    return group


class CreateHookKeyframesInterpolated(Node):
    """keyframes_count keyframes from start to end percent, strengths interpolated from start to end."""

    DISPLAY_NAME = "Create Hook Keyframes Interp."
    CATEGORY = "advanced/hooks/scheduling"
    EXPERIMENTAL = True
    INPUTS = (Float("strength_start", 1.0, min=0.0, max=10.0, step=0.001),
              Float("strength_end", 1.0, min=0.0, max=10.0, step=0.001),
              Combo("interpolation", list(INTERPOLATIONS)), Float("start_percent", 0.0, **_PERCENT),
              Float("end_percent", 1.0, **_PERCENT), Int("keyframes_count", 5, min=2, max=100, step=1),
              Boolean("print_keyframes", False), _opt("prev_hook_kf", "HOOK_KEYFRAMES"))
    OUTPUTS = (Output("HOOK_KEYFRAMES", "HOOK_KF"),)

    def execute(self, strength_start: float, strength_end: float, interpolation: str, start_percent: float,
                end_percent: float, keyframes_count: int, print_keyframes: bool = False,
                prev_hook_kf: HookKeyframeGroup | None = None) -> tuple[HookKeyframeGroup]:
        percents = interpolate(start_percent, end_percent, keyframes_count, "linear")
        strengths = interpolate(strength_start, strength_end, keyframes_count, interpolation)
        return (_add_keyframes(prev_hook_kf or HookKeyframeGroup(), percents, strengths, print_keyframes),)


class CreateHookKeyframesFromFloats(Node):
    """One keyframe per float, spread evenly from start to end percent."""

    DISPLAY_NAME = "Create Hook Keyframes From Floats"
    CATEGORY = "advanced/hooks/scheduling"
    EXPERIMENTAL = True
    INPUTS = (Input("floats_strength", "FLOATS", default=-1, min=-1, step=0.001, force_input=True),
              Float("start_percent", 0.0, **_PERCENT), Float("end_percent", 1.0, **_PERCENT),
              Boolean("print_keyframes", False), _opt("prev_hook_kf", "HOOK_KEYFRAMES"))
    OUTPUTS = (Output("HOOK_KEYFRAMES", "HOOK_KF"),)

    def execute(self, floats_strength: Any, start_percent: float = 0.0, end_percent: float = 1.0,
                print_keyframes: bool = False,
                prev_hook_kf: HookKeyframeGroup | None = None) -> tuple[HookKeyframeGroup]:
        if isinstance(floats_strength, (int, float)):
            values = [float(floats_strength)]
        elif isinstance(floats_strength, torch.Tensor):
            values = [float(v) for v in floats_strength.flatten()]
        elif isinstance(floats_strength, Iterable) and not isinstance(floats_strength, (str, bytes)) and all(
                isinstance(v, (int, float)) for v in floats_strength):
            values = [float(v) for v in floats_strength]
        else:
            raise ValueError(f"CreateHookKeyframesFromFloats: input 'floats_strength' must be a float or a list of "
                             f"floats, not {type(floats_strength).__name__}")
        percents = interpolate(start_percent, end_percent, len(values), "linear")
        return (_add_keyframes(prev_hook_kf or HookKeyframeGroup(), percents, values, print_keyframes),)


def _combine_node(count: int) -> type:
    letters = "ABCDEFGH"[:count]

    class CombineHooks(Node):
        __doc__ = f"Combine up to {count} HOOKS into one group."
        NAME = f"CombineHooks{count}"
        DISPLAY_NAME = f"Combine Hooks [{count}]"
        CATEGORY = "advanced/hooks/combine"
        EXPERIMENTAL = True
        INPUTS = tuple(_opt(f"hooks_{x}", "HOOKS") for x in letters)
        OUTPUTS = (Output("HOOKS"),)

        def execute(self, **hooks: HookGroup | None) -> tuple[HookGroup | None]:
            return (HookGroup.combine_all([hooks.get(f"hooks_{x}") for x in letters]),)

    CombineHooks.__name__ = CombineHooks.__qualname__ = f"CombineHooks{count}"
    return CombineHooks


CombineHooks2, CombineHooks4, CombineHooks8 = (_combine_node(n) for n in (2, 4, 8))


class SetClipHooks(Node):
    """Apply the hooks' CLIP LoRAs to text encoding (and, with apply_to_conds, attach the hooks to the prompts it
    encodes)."""

    DISPLAY_NAME = "Set CLIP Hooks"
    CATEGORY = "advanced/hooks/clip"
    EXPERIMENTAL = True
    INPUTS = (Input("clip", "CLIP"), Boolean("apply_to_conds", True), Boolean("schedule_clip", False),
              _opt("hooks", "HOOKS"))
    OUTPUTS = (Output("CLIP"),)

    def execute(self, clip: CLIP, apply_to_conds: bool = True, schedule_clip: bool = False,
                hooks: HookGroup | None = None) -> tuple[CLIP]:
        if hooks is None:
            return (clip,)
        twin = clip.clone()
        if apply_to_conds:
            twin.apply_hooks_to_conds = hooks
        if schedule_clip:
            twin.scheduled_clip_hooks = hooks  # encoded once per schedule range by `encode_scheduled`
        else:
            add_clip_hook_patches(twin, hooks, None)
        return (twin,)


def add_clip_hook_patches(clip: CLIP, hooks: HookGroup, mults: dict[int, float] | None) -> None:
    """Put the hooks' CLIP patches on `clip`'s handle (a clone's): full strength, or `mults` per hook."""
    handle = getattr(clip, "handle", None)
    if handle is None:
        return
    found = hook_patches(hooks, handle.model, "clip", None, None, mults=mults or {id(h): 1.0 for h in hooks.hooks})
    for key, patches in found.items():
        for patch in patches:
            handle.add_patches({key: patch})


def encode_scheduled(clip: CLIP, text: str, encode: Callable[[CLIP, str], Conditioning]) -> Conditioning:
    """A prompt encoded once per range of the CLIP hooks' schedule, each entry limited to its range through
    clip_start_percent/clip_end_percent (ComfyUI's encode_from_tokens_scheduled)."""
    hooks: HookGroup = clip.scheduled_clip_hooks
    out: Conditioning = []
    for (start, end), mults in clip_schedule(hooks):
        part = clip.clone()
        part.scheduled_clip_hooks = None
        add_clip_hook_patches(part, hooks, mults)
        for cond, options in encode(part, text):
            out.append([cond, {**options, "clip_start_percent": start, "clip_end_percent": end}])
    return out


class ConditioningTimestepsRange(Node):
    """A range of the sampling (as fractions) and the parts before and after it."""

    DISPLAY_NAME = "Timesteps Range"
    CATEGORY = "advanced/hooks"
    EXPERIMENTAL = True
    INPUTS = (Float("start_percent", 0.0, **_PERCENT), Float("end_percent", 1.0, **_PERCENT))
    OUTPUTS = (Output("TIMESTEPS_RANGE", "TIMESTEPS_RANGE"), Output("TIMESTEPS_RANGE", "BEFORE_RANGE"),
               Output("TIMESTEPS_RANGE", "AFTER_RANGE"))

    def execute(self, start_percent: float = 0.0, end_percent: float = 1.0) -> tuple[tuple, tuple, tuple]:
        return ((start_percent, end_percent), (0.0, start_percent), (end_percent, 1.0))


_PROPS = (Float("strength", 1.0, min=0.0, max=10.0, step=0.01), Combo("set_cond_area", _COND_AREA),
          _opt("mask", "MASK"), _opt("hooks", "HOOKS"), _opt("timesteps", "TIMESTEPS_RANGE"))
_PAIR_OUT = (Output("CONDITIONING", "positive"), Output("CONDITIONING", "negative"))


class ConditioningSetProperties(Node):
    """Set hooks, a timestep range and a mask on a conditioning."""

    DISPLAY_NAME = "Cond Set Props"
    CATEGORY = "advanced/hooks/cond single"
    EXPERIMENTAL = True
    INPUTS = (Input("cond_NEW", "CONDITIONING"),) + _PROPS
    OUTPUTS = (Output("CONDITIONING"),)

    def execute(self, cond_NEW: Conditioning, strength: float = 1.0, set_cond_area: str = "default",
                mask: torch.Tensor | None = None, hooks: HookGroup | None = None,
                timesteps: tuple | None = None) -> tuple[Conditioning]:
        return (set_props(cond_NEW, strength, set_cond_area, mask, hooks, timesteps),)


class ConditioningSetPropertiesAndCombine(Node):
    """cond, plus cond_NEW with hooks, timestep range and mask set."""

    DISPLAY_NAME = "Cond Set Props Combine"
    CATEGORY = "advanced/hooks/cond single"
    EXPERIMENTAL = True
    INPUTS = (Input("cond", "CONDITIONING"), Input("cond_NEW", "CONDITIONING")) + _PROPS
    OUTPUTS = (Output("CONDITIONING"),)

    def execute(self, cond: Conditioning, cond_NEW: Conditioning, strength: float = 1.0,
                set_cond_area: str = "default", mask: torch.Tensor | None = None, hooks: HookGroup | None = None,
                timesteps: tuple | None = None) -> tuple[Conditioning]:
        return (set_props_and_combine(cond, cond_NEW, strength, set_cond_area, mask, hooks, timesteps),)


class PairConditioningSetProperties(Node):
    """Set hooks, a timestep range and a mask on a positive/negative pair."""

    DISPLAY_NAME = "Cond Pair Set Props"
    CATEGORY = "advanced/hooks/cond pair"
    EXPERIMENTAL = True
    INPUTS = (Input("positive_NEW", "CONDITIONING"), Input("negative_NEW", "CONDITIONING")) + _PROPS
    OUTPUTS = _PAIR_OUT

    def execute(self, positive_NEW: Conditioning, negative_NEW: Conditioning, strength: float = 1.0,
                set_cond_area: str = "default", mask: torch.Tensor | None = None, hooks: HookGroup | None = None,
                timesteps: tuple | None = None) -> tuple[Conditioning, Conditioning]:
        return tuple(set_props(c, strength, set_cond_area, mask, hooks, timesteps)  # type: ignore[return-value]
                     for c in (positive_NEW, negative_NEW))


class PairConditioningSetPropertiesAndCombine(Node):
    """A pair, plus a new pair with hooks, timestep range and mask set."""

    DISPLAY_NAME = "Cond Pair Set Props Combine"
    CATEGORY = "advanced/hooks/cond pair"
    EXPERIMENTAL = True
    INPUTS = (Input("positive", "CONDITIONING"), Input("negative", "CONDITIONING"),
              Input("positive_NEW", "CONDITIONING"), Input("negative_NEW", "CONDITIONING")) + _PROPS
    OUTPUTS = _PAIR_OUT

    def execute(self, positive: Conditioning, negative: Conditioning, positive_NEW: Conditioning,
                negative_NEW: Conditioning, strength: float = 1.0, set_cond_area: str = "default",
                mask: torch.Tensor | None = None, hooks: HookGroup | None = None,
                timesteps: tuple | None = None) -> tuple[Conditioning, Conditioning]:
        return (set_props_and_combine(positive, positive_NEW, strength, set_cond_area, mask, hooks, timesteps),
                set_props_and_combine(negative, negative_NEW, strength, set_cond_area, mask, hooks, timesteps))


class PairConditioningCombine(Node):
    """Two positive/negative pairs combined."""

    DISPLAY_NAME = "Cond Pair Combine"
    CATEGORY = "advanced/hooks/cond pair"
    EXPERIMENTAL = True
    INPUTS = (Input("positive_A", "CONDITIONING"), Input("negative_A", "CONDITIONING"),
              Input("positive_B", "CONDITIONING"), Input("negative_B", "CONDITIONING"))
    OUTPUTS = _PAIR_OUT

    def execute(self, positive_A: Conditioning, negative_A: Conditioning, positive_B: Conditioning,
                negative_B: Conditioning) -> tuple[Conditioning, Conditioning]:
        return (set_props_and_combine(positive_A, positive_B), set_props_and_combine(negative_A, negative_B))


class ConditioningSetDefaultCombine(Node):
    """cond, plus cond_DEFAULT used wherever the other conds leave room."""

    NAME = "ConditioningSetDefaultCombine"
    DISPLAY_NAME = "Cond Set Default Combine"
    CATEGORY = "advanced/hooks/cond single"
    EXPERIMENTAL = True
    INPUTS = (Input("cond", "CONDITIONING"), Input("cond_DEFAULT", "CONDITIONING"), _opt("hooks", "HOOKS"))
    OUTPUTS = (Output("CONDITIONING"),)

    def execute(self, cond: Conditioning, cond_DEFAULT: Conditioning,
                hooks: HookGroup | None = None) -> tuple[Conditioning]:
        return (set_default_and_combine(cond, cond_DEFAULT, hooks),)


class PairConditioningSetDefaultCombine(Node):
    """A pair, plus a default pair used wherever the other conds leave room."""

    DISPLAY_NAME = "Cond Pair Set Default Combine"
    CATEGORY = "advanced/hooks/cond pair"
    EXPERIMENTAL = True
    INPUTS = (Input("positive", "CONDITIONING"), Input("negative", "CONDITIONING"),
              Input("positive_DEFAULT", "CONDITIONING"), Input("negative_DEFAULT", "CONDITIONING"),
              _opt("hooks", "HOOKS"))
    OUTPUTS = _PAIR_OUT

    def execute(self, positive: Conditioning, negative: Conditioning, positive_DEFAULT: Conditioning,
                negative_DEFAULT: Conditioning, hooks: HookGroup | None = None) -> tuple[Conditioning, Conditioning]:
        return (set_default_and_combine(positive, positive_DEFAULT, hooks),
                set_default_and_combine(negative, negative_DEFAULT, hooks))


NODES: list[type] = [CreateHookLora, CreateHookLoraModelOnly, CreateHookModelAsLora, CreateHookModelAsLoraModelOnly,
                     SetHookKeyframes, CreateHookKeyframe,
                     CreateHookKeyframesInterpolated, CreateHookKeyframesFromFloats, CombineHooks2, CombineHooks4,
                     CombineHooks8, SetClipHooks, ConditioningTimestepsRange, ConditioningSetProperties,
                     ConditioningSetPropertiesAndCombine, PairConditioningSetProperties,
                     PairConditioningSetPropertiesAndCombine, PairConditioningCombine, ConditioningSetDefaultCombine,
                     PairConditioningSetDefaultCombine]
