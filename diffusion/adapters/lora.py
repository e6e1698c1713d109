"""LoRA and its relatives as weight patches: reading the adapters of a file and turning them into `WeightPatch`es.

Owns the maths of each adapter kind and the matching of a file's keys against a key map
(`diffusion.adapters.lora_formats`):

- LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models"): ΔW = (α/r)·up@down, with the key
  spellings of kohya/A1111 (`.lora_up/.lora_down` + `.alpha`), diffusers (`_lora.up/_lora.down`,
  `.lora.up/.lora.down`, `.lora_linear_layer.up/down`) and PEFT (`.lora_B/.lora_A`, no alpha: scale 1);
  LoCon's convolution LoRA is the same product with the down matrix a k×k kernel, and a `.lora_mid` core makes it
  the Tucker-decomposed form of LyCORIS;
- LoHa (Hyeon-Woo et al. 2022, "FedPara"; LyCORIS `hada_*`): ΔW = (α/r)·(w1a@w1b)⊙(w2a@w2b), optionally with
  Tucker cores `hada_t1/t2`;
- LoKr (Yeh et al. 2023, "Navigating Text-To-Image Customization: From LyCORIS Fine-Tuning to Model Evaluation";
  LyCORIS `lokr_*`): ΔW = (α/r)·kron(w1, w2), each factor whole or a low-rank product;
- full differences (`.diff` for the weight, `.diff_b` for the bias), as written by LyCORIS "full" and model-diff
  exports;
- DoRA's `.dora_scale` magnitude on top of any of the above.

Scaling conventions (α/rank; no alpha → 1) follow LyCORIS and ComfyUI `comfy/weight_adapter/*`. Deltas are
computed in float32 on the weight's device when the memory manager patches the weight; nothing here touches a
module. Keys of a file that no adapter consumed are returned so callers can report them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Hashable, Mapping

from torch import Tensor

from diffusion.adapters.lora_deltas import DoraDelta, FullDelta, LohaDelta, LokrDelta, LoraDelta, SliceDelta
from diffusion.adapters.lora_formats import Target
from diffusion.patcher import ModelHandle, WeightPatch

__all__ = ["DoraDelta", "FullDelta", "LohaDelta", "LokrDelta", "LoraDelta", "SliceDelta", "LoadedLora",
           "match_adapters", "add_lora_patches", "unused_keys", "unet_map_for", "clip_map_for", "LoraResult",
           "apply_lora"]

StateDict = Mapping[str, Tensor]
# (up, down) spellings of plain LoRA, kohya first.
_LORA_PAIRS = ((".lora_up.weight", ".lora_down.weight"), ("_lora.up.weight", "_lora.down.weight"),
               (".lora_B.weight", ".lora_A.weight"), (".lora.up.weight", ".lora.down.weight"),
               (".lora_linear_layer.up.weight", ".lora_linear_layer.down.weight"))
_LOHA = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2")
_LOKR = ("lokr_w1", "lokr_w2", "lokr_w1_a", "lokr_w1_b", "lokr_w2_a", "lokr_w2_b", "lokr_t2")


@dataclass
class LoadedLora:
    """What matching a file against a key map found: module key -> patch deltas, and the file keys used."""

    deltas: dict[str, list[tuple[str, Callable[[Tensor], Tensor]]]] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)

    def add(self, target: Target, name: str, delta: Callable[[Tensor], Tensor]) -> None:
        wrapped = SliceDelta(delta, target.offset) if target.offset is not None else delta
        self.deltas.setdefault(target.key, []).append((name, wrapped))


def _take(sd: StateDict, used: set[str], *keys: str) -> list[Tensor | None]:
    values = []
    for key in keys:
        value = sd.get(key)
        if value is not None:
            used.add(key)
        values.append(value)
    return values


def _match_lora(sd: StateDict, name: str, out: LoadedLora) -> Callable[[Tensor], Tensor] | None:
    for up_suffix, down_suffix in _LORA_PAIRS:
        if name + up_suffix in sd and name + down_suffix in sd:
            up, down, mid, alpha = _take(sd, out.used, name + up_suffix, name + down_suffix,
                                         name + ".lora_mid.weight", name + ".alpha")
            return LoraDelta(up, down, alpha, mid)
    return None


def _match_loha(sd: StateDict, name: str, out: LoadedLora) -> Callable[[Tensor], Tensor] | None:
    if name + ".hada_w1_a" not in sd:
        return None
    w1a, w1b, w2a, w2b, t1, t2 = _take(sd, out.used, *(f"{name}.{k}" for k in _LOHA))
    (alpha,) = _take(sd, out.used, name + ".alpha")
    return LohaDelta(w1a, w1b, w2a, w2b, alpha, t1, t2)


def _match_lokr(sd: StateDict, name: str, out: LoadedLora) -> Callable[[Tensor], Tensor] | None:
    if not any(f"{name}.{k}" in sd for k in _LOKR):
        return None
    w1, w2, w1a, w1b, w2a, w2b, t2 = _take(sd, out.used, *(f"{name}.{k}" for k in _LOKR))
    (alpha,) = _take(sd, out.used, name + ".alpha")
    return LokrDelta(w1, w2, w1a, w1b, w2a, w2b, t2, alpha)


_MATCHERS = (_match_lora, _match_loha, _match_lokr)


def match_adapters(sd: StateDict, key_map: Mapping[str, Target]) -> LoadedLora:
    """Every adapter of `sd` whose module name is in `key_map`, as deltas on the mapped module keys."""
    out = LoadedLora()
    for name, target in key_map.items():
        for matcher in _MATCHERS:
            delta = matcher(sd, name, out)
            if delta is not None:
                (dora,) = _take(sd, out.used, name + ".dora_scale")
                out.add(target, name, DoraDelta(delta, dora) if dora is not None else delta)
                break
        for suffix, tgt in ((".diff", target), (".diff_b", target.bias())):
            (diff,) = _take(sd, out.used, name + suffix)
            if diff is not None:
                out.add(tgt, name + suffix, FullDelta(diff))
    return out


def add_lora_patches(handle: ModelHandle, loaded: LoadedLora, strength: float, source: Hashable) -> list[str]:
    """Append `loaded`'s deltas to `handle` (a clone) at `strength`; returns the module keys patched. `source`
    names the file (path, mtime) so patch identities differ between files and strengths."""
    applied = []
    for key, deltas in loaded.deltas.items():
        for name, delta in deltas:
            patch = WeightPatch(delta, float(strength), key_hint=key, ident=(source, name))
            applied += handle.add_patches({key: patch})
    return applied


def unused_keys(sd: StateDict, *loads: LoadedLora) -> list[str]:
    """The keys of `sd` that no load consumed, sorted."""
    used: set[str] = set().union(*(load.used for load in loads)) if loads else set()
    return sorted(k for k in sd if k not in used)


def unet_map_for(handle: ModelHandle) -> dict[str, Target]:
    """The key map of a MODEL handle (a `DiffusionModel`)."""
    from diffusion.adapters.lora_formats import unet_key_map
    from diffusion.adapters.lora_mmdit import mmdit_key_map
    from diffusion.networks.mmdit import MMDiTConfig

    config = getattr(getattr(handle.model, "diffusion_model", None), "config", None)
    if isinstance(config, MMDiTConfig):  # SD3 / SD3.5
        return mmdit_key_map(handle.state_keys(), config.depth, config.hidden_size)
    return unet_key_map(handle.state_keys(), config)


def clip_map_for(handle: ModelHandle) -> dict[str, Target]:
    """The key map of a CLIP's text-encoder handle (a `TextEncoder`, or SDXL's two-tower `MultiTextEncoder`)."""
    from diffusion.adapters.lora_formats import clip_key_map, sdxl_clip_key_map

    model = handle.model
    if hasattr(model, "towers"):  # SDXL's MultiTextEncoder
        towers = {k: (t.config.width, t.config.layers) for k, t in model.towers().items() if k in ("l", "g")}
        return sdxl_clip_key_map(handle.state_keys(), towers)
    return clip_key_map(handle.state_keys(), model.config.width, model.config.layers)


@dataclass
class LoraResult:
    """LoraLoader's outcome: the patched clones (None where not requested) and the file keys nothing used."""

    model: ModelHandle | None
    clip_handle: ModelHandle | None
    unknown: list[str]
    patched_model_keys: list[str] = field(default_factory=list)
    patched_clip_keys: list[str] = field(default_factory=list)


def apply_lora(sd: StateDict, model: ModelHandle | None, clip_handle: ModelHandle | None, strength_model: float,
               strength_clip: float, source: Hashable) -> LoraResult:
    """Clones of `model` and `clip_handle` with the LoRA `sd` added at the given strengths (ComfyUI
    `load_lora_for_models`); a None handle is skipped. Keys neither model uses are returned in `unknown`."""
    loads = []
    result = LoraResult(None, None, [])
    if model is not None:
        load = match_adapters(sd, unet_map_for(model))
        loads.append(load)
        result.model = model.clone()
        result.patched_model_keys = add_lora_patches(result.model, load, strength_model, source)
    if clip_handle is not None:
        load = match_adapters(sd, clip_map_for(clip_handle))
        loads.append(load)
        result.clip_handle = clip_handle.clone()
        result.patched_clip_keys = add_lora_patches(result.clip_handle, load, strength_clip, source)
    result.unknown = unused_keys(sd, *loads)
    return result
