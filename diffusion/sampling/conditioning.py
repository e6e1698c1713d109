"""Conditioning lists -> batched UNet calls, combined as ComfyUI's `calc_cond_batch` does.

A CONDITIONING is a list of `[tensor B×T×C, options]`; options may hold `pooled_output`, `area`
(`(h, w, y, x)` in latent pixels or `("percentage", h, w, y, x)`), `strength`, `mask` (+`mask_strength`,
`set_area_to_bounds`), `start_percent`/`end_percent`, `control`, `concat_latent_image`, `concat_mask`,
`gligen` (made into a per-call "middle_patch" in transformer_options, see `diffusion.adapters.gligen`; such a chunk shares
a model call with no other, as in ComfyUI).

Owns: converting those entries to cond dicts (`convert_cond`), resolving areas and masks to the latent
size, timestep ranges (percent -> sigma), giving every area an opposite with the same area, and
`calc_cond_batch`: each active cond is cropped to its area and weighted (masks, strengths, 8-pixel
feathered area edges), conds that fit are concatenated into one model call (token lengths padded by
repetition up to their LCM when the ratio is <= 4), and the outputs are averaged by weight.
The model is any `apply_model(x, sigma, *, c_crossattn, c_concat=None, y=None, control=None,
transformer_options=None) -> denoised`.
"""
from __future__ import annotations

import math
import uuid
from typing import Any, Callable, NamedTuple, Protocol

import torch
import torch.nn.functional as F

from diffusion.adapters.gligen import gligen_patches
from diffusion.adapters.hooks import default_cond_mults, hook_weights_applied

COND, UNCOND = 0, 1


class Control(Protocol):
    """What a ControlNet-like object in a cond dict must offer (ControlNet itself is later work)."""

    def get_control(self, x: torch.Tensor, sigma: torch.Tensor, cond: dict[str, Any], batch_chunks: int,
                    transformer_options: dict | None = None) -> dict: ...


def repeat_to_batch_size(t: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Trim or tile t along dim 0 to batch_size."""
    if t.shape[0] > batch_size:
        return t[:batch_size]
    if t.shape[0] < batch_size:
        return t.repeat([math.ceil(batch_size / t.shape[0])] + [1] * (t.ndim - 1))[:batch_size]
    return t


def convert_cond(conditioning: list) -> list[dict]:
    """[[tensor, options], ...] -> cond dicts carrying `model_conds` (what reaches the UNet) and a uuid."""
    out = []
    for tensor, options in conditioning:
        c = dict(options)
        c["cross_attn"] = tensor
        c["model_conds"] = {"c_crossattn": tensor}
        c["uuid"] = uuid.uuid4()
        out.append(c)
    return out


def _mask_bounds(mask: torch.Tensor) -> tuple[int, int, int, int] | None:
    """(h, w, y, x) of the nonzero part of a H×W mask, None if it is all zero."""
    ys, xs = torch.where(mask != 0)
    if ys.numel() == 0:
        return None
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())
    return max(8, y1 - y0 + 1), max(8, x1 - x0 + 1), y0, x0


def resolve_areas_and_masks(conds: list[dict], h: int, w: int, device: torch.device) -> None:
    """Turn percentage areas into latent pixels, resize masks to h×w (bilinear) and apply set_area_to_bounds."""
    for i, c in enumerate(conds):
        if "area" in c and c["area"][0] == "percentage":
            _, ah, aw, ay, ax = c["area"]
            c = {**c, "area": (max(1, round(ah * h)), max(1, round(aw * w)), round(ay * h), round(ax * w))}
        if "mask" in c:
            mask = c["mask"].to(device=device)
            if mask.ndim == 2:
                mask = mask.unsqueeze(0)
            if mask.shape[1:] != (h, w):
                mask = F.interpolate(mask.unsqueeze(1), size=(h, w), mode="bilinear", align_corners=False).squeeze(1)
            c = {**c, "mask": mask}
            if c.get("set_area_to_bounds", False):
                bounds = _mask_bounds(torch.max(torch.abs(mask), dim=0).values)
                c["area"] = (8, 8, 0, 0) if bounds is None else bounds
        conds[i] = c


def apply_timestep_ranges(conds: list[dict], percent_to_sigma: Callable[[float], float]) -> None:
    """start_percent/end_percent -> sigma bounds (`timestep_start` >= sigma >= `timestep_end`); a scheduled CLIP
    encoding's clip_start_percent/clip_end_percent narrow them further (ComfyUI)."""
    for i, c in enumerate(conds):
        if "clip_start_percent" in c:
            c = dict(c)
            c["timestep_start"] = percent_to_sigma(max(c["clip_start_percent"], c.get("start_percent", 0.0)))
            c["timestep_end"] = percent_to_sigma(min(c["clip_end_percent"], c.get("end_percent", 1.0)))
            conds[i] = c
        elif "start_percent" in c or "end_percent" in c:
            c = dict(c)
            if "start_percent" in c:
                c["timestep_start"] = percent_to_sigma(c["start_percent"])
            if "end_percent" in c:
                c["timestep_end"] = percent_to_sigma(c["end_percent"])
            conds[i] = c


def _area_inside(a, outer) -> bool:
    """Whether area a = (h, w, y, x) lies inside `outer`."""
    return (a[2] >= outer[2] and a[3] >= outer[3]
            and a[0] + a[2] <= outer[0] + outer[2] and a[1] + a[3] <= outer[1] + outer[3])


def create_cond_with_same_area_if_none(conds: list[dict], c: dict) -> None:
    """Give an area cond of the other list a counterpart with the same area, taking the smallest enclosing
    cond's model inputs, so cond and uncond cover the same pixels (ComfyUI)."""
    if "area" not in c:
        return
    smallest = None
    for x in conds:
        if "area" in x:
            if _area_inside(c["area"], x["area"]):
                if smallest is None or "area" not in smallest or \
                        smallest["area"][0] * smallest["area"][1] > x["area"][0] * x["area"][1]:
                    smallest = x
        elif smallest is None:
            smallest = x
    if smallest is None or ("area" in smallest and tuple(smallest["area"]) == tuple(c["area"])):
        return
    out = dict(c)
    out["model_conds"] = dict(smallest["model_conds"])
    conds.append(out)


def apply_control_to_uncond(positive: list[dict], negative: list[dict]) -> None:
    """Copy `control` objects of positive conds marked control_apply_to_uncond onto area-less negative conds."""
    cnets = [c["control"] for c in positive
             if "area" not in c and c.get("control_apply_to_uncond") and c.get("control") is not None]
    if not cnets or any("area" not in c and c.get("control") is not None for c in negative):
        return
    others = [(c, i) for i, c in enumerate(negative) if "area" not in c]
    for k, cnet in enumerate(cnets):
        o, idx = others[k % len(others)]
        n = {**o, "control": cnet}
        if o.get("control") is not None:
            negative.append(n)
        else:
            negative[idx] = n


class CondChunk(NamedTuple):
    input_x: torch.Tensor
    mult: torch.Tensor
    model_conds: dict[str, torch.Tensor]
    area: tuple[int, int, int, int] | None
    control: Any
    patches: dict[str, list] | None = None
    hooks: Any = None  # a diffusion.adapters.hooks.HookGroup: its weights are applied for this chunk's model call


def _feather(mult: torch.Tensor, area, size: tuple[int, int]) -> None:
    """Ramp the weight linearly over up to 8 latent pixels at area edges that are inside the image."""
    for d in range(2):
        rr = min(8, mult.shape[2 + d] // 4)
        if area[2 + d] != 0:
            for t in range(rr):
                mult.narrow(d + 2, t, 1).mul_((1.0 / rr) * (t + 1))
        if area[d] + area[2 + d] < size[d]:
            for t in range(rr):
                mult.narrow(d + 2, area[d] - 1 - t, 1).mul_((1.0 / rr) * (t + 1))


def get_area_and_mult(c: dict, x: torch.Tensor, sigma: torch.Tensor) -> CondChunk | None:
    """The cropped input, weight and model inputs of one cond at this sigma, None when out of its range."""
    if "timestep_start" in c and sigma[0] > c["timestep_start"]:
        return None
    if "timestep_end" in c and sigma[0] < c["timestep_end"]:
        return None
    area, input_x = None, x
    if "area" in c:
        a = list(c["area"])
        for d in range(2):
            a[d] = min(x.shape[d + 2] - a[2 + d], a[d])
            input_x = input_x.narrow(d + 2, a[2 + d], a[d])
        area = tuple(a)
    if "mask" in c:
        mask = c["mask"][:input_x.shape[0]]
        if area is not None:
            mask = mask.narrow(1, area[2], area[0]).narrow(2, area[3], area[1])
        mask = (mask * c.get("mask_strength", 1.0)).unsqueeze(1)
        mask = mask.repeat((input_x.shape[0] // mask.shape[0], input_x.shape[1]) + (1,) * (mask.ndim - 2))
    else:
        mask = torch.ones_like(input_x)
    mult = mask * c.get("strength", 1.0)
    if "mask" not in c and area is not None:
        _feather(mult, area, (x.shape[2], x.shape[3]))
    model_conds = {}
    for key, value in c["model_conds"].items():
        if key == "c_concat" and area is not None:
            value = value.narrow(2, area[2], area[0]).narrow(3, area[3], area[1])
        model_conds[key] = repeat_to_batch_size(value, x.shape[0])
    patches = gligen_patches(c["gligen"], input_x) if c.get("gligen") is not None else None
    return CondChunk(input_x, mult, model_conds, area, c.get("control"), patches, c.get("hooks"))


def _crossattn_compatible(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape == b.shape:
        return True
    if a.shape[0] != b.shape[0] or a.shape[2] != b.shape[2]:
        return False
    return math.lcm(a.shape[1], b.shape[1]) // min(a.shape[1], b.shape[1]) <= 4


def can_concat(a: CondChunk, b: CondChunk) -> bool:
    """Whether two chunks can share one model call: same input shape, same control, compatible inputs."""
    if a.input_x.shape != b.input_x.shape or a.control is not b.control or a.patches is not b.patches:
        return False
    if a.hooks != b.hooks:
        return False
    if a.model_conds.keys() != b.model_conds.keys():
        return False
    for k in a.model_conds:
        va, vb = a.model_conds[k], b.model_conds[k]
        if k == "c_crossattn":
            if not _crossattn_compatible(va, vb):
                return False
        elif va.shape != vb.shape:
            return False
    return True


def cond_cat(chunks: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Concatenate model inputs along the batch; cross-attention contexts are tiled to the LCM token length
    (repeating the tokens does not change attention's result)."""
    out = {}
    for k in chunks[0]:
        values = [c[k] for c in chunks]
        if k == "c_crossattn":
            target = math.lcm(*[v.shape[1] for v in values])
            values = [v.repeat(1, target // v.shape[1], 1) if v.shape[1] < target else v for v in values]
        out[k] = torch.cat(values)
    return out


def _pick_batch(to_run: list, first: CondChunk, max_batch: int | None) -> list[int]:
    """Indices (descending) of the chunks to run together: as many compatible ones as fit max_batch rows."""
    candidates = [i for i, (p, _) in enumerate(to_run) if can_concat(p, first)][::-1]
    for div in range(1, len(candidates) + 1):
        amount = candidates[:len(candidates) // div]
        if max_batch is None or len(amount) * first.input_x.shape[0] <= max_batch:
            return amount
    return candidates[:1]


def _run_chunk_batch(apply_model, to_run: list, picked: list[int], sigma: torch.Tensor, model_options: dict):
    """Run one batched model call; returns the chunks with their output slices."""
    popped = [to_run.pop(i) for i in picked]
    chunks = [p for p, _ in popped]
    which = [w for _, w in popped]
    input_x = torch.cat([p.input_x for p in chunks])
    c: dict[str, Any] = cond_cat([p.model_conds for p in chunks])
    sigma_ = torch.cat([sigma] * len(chunks))
    transformer_options = dict(model_options.get("transformer_options", {}))
    transformer_options.update(cond_or_uncond=which[:], sigmas=sigma)
    if chunks[0].patches is not None:
        merged = dict(transformer_options.get("patches", {}))
        for name, fns in chunks[0].patches.items():
            merged[name] = list(merged.get(name, [])) + list(fns)
        transformer_options["patches"] = merged
    c["transformer_options"] = transformer_options
    control = chunks[0].control
    if control is not None:
        c["control"] = control.get_control(input_x, sigma_, c, len(chunks), transformer_options)
    with hook_weights_applied(apply_model, chunks[0].hooks, sigma, transformer_options.get("hook_keyframes")):
        if "model_function_wrapper" in model_options:
            args = {"input": input_x, "timestep": sigma_, "c": c, "cond_or_uncond": which,
                    "cond_scale": model_options.get("current_cfg_scale")}
            output = model_options["model_function_wrapper"](apply_model, args)
        else:
            output = apply_model(input_x, sigma_, **c)
    return zip(chunks, which, output.chunk(len(chunks)))


def _default_chunks(to_run: list, defaults: list[list[dict]], x: torch.Tensor, sigma: torch.Tensor) -> list:
    """Default conds (ConditioningSetDefaultCombine) weighted by what the other conds of their list leave."""
    grouped: dict[int, list] = {0: to_run}
    mults = default_cond_mults(grouped, [len(d) for d in defaults], x)
    out = []
    for index, (cond_list, mult) in enumerate(zip(defaults, mults)):
        for c in cond_list if mult is not None else []:
            p = get_area_and_mult(c, x, sigma)
            if p is not None:
                out.append((p._replace(mult=mult), index))
    return out


def calc_cond_batch(apply_model, conds: list[list[dict] | None], x: torch.Tensor, sigma: torch.Tensor,
                    model_options: dict | None = None) -> list[torch.Tensor]:
    """One weighted-average prediction per cond list (None lists give zeros), batching compatible chunks.

    model_options["max_batch"] (rows per model call, set from the memory estimate) limits batching."""
    model_options = model_options or {}
    out = [torch.zeros_like(x) for _ in conds]
    counts = [torch.ones_like(x) * 1e-37 for _ in conds]
    to_run = []
    defaults: list[list[dict]] = [[] for _ in conds]
    for index, cond_list in enumerate(conds):
        for c in cond_list or []:
            if "default" in c:
                defaults[index].append(c)
                continue
            p = get_area_and_mult(c, x, sigma)
            if p is not None:
                to_run.append((p, index))
    if any(defaults):
        to_run += _default_chunks(to_run, defaults, x, sigma)
    while to_run:
        picked = _pick_batch(to_run, to_run[0][0], model_options.get("max_batch"))
        for chunk, index, output in _run_chunk_batch(apply_model, to_run, picked, sigma, model_options):
            o, n = out[index], counts[index]
            if chunk.area is not None:
                a = chunk.area
                o, n = o.narrow(2, a[2], a[0]).narrow(3, a[3], a[1]), n.narrow(2, a[2], a[0]).narrow(3, a[3], a[1])
            o += output * chunk.mult
            n += chunk.mult
    for o, n in zip(out, counts):
        o /= n
    return out
