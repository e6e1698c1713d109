"""Classifier-free guidance (Ho & Salimans 2022) on denoised predictions, its hooks, RescaleCFG, and the
guiders that SamplerCustomAdvanced takes (CFG, Basic, DualCFG).

CFG mixes the denoised predictions: uncond + (cond - uncond)·cfg; at cfg 1 the uncond pass is skipped
unless model_options["disable_cfg1_optimization"] is set (the CFG++ samplers set it). Hooks from
model_options, with ComfyUI's argument dicts so that ported patches work:
- "sampler_cfg_function"(args) replaces the mix; args["cond"]/["uncond"] are x - prediction (noise
  form), it returns x - result.
- "sampler_post_cfg_function": list of fn(args) -> denoised run after the mix.
A guider is called like a denoiser: guider(x, sigma, model_options=None, seed=None) -> denoised.
"""
from __future__ import annotations

import inspect
import math
from typing import Any, Callable

import torch

from diffusion.sampling.conditioning import (apply_control_to_uncond, apply_timestep_ranges, calc_cond_batch, convert_cond,
                                    create_cond_with_same_area_if_none, resolve_areas_and_masks)


def cfg_function(model: Any, cond_pred: torch.Tensor, uncond_pred: torch.Tensor | None, cond_scale: float,
                 x: torch.Tensor, sigma: torch.Tensor, model_options: dict, cond=None, uncond=None) -> torch.Tensor:
    """Mix cond and uncond predictions (or call sampler_cfg_function), then the post-CFG hooks."""
    if "sampler_cfg_function" in model_options:
        args = {"cond": x - cond_pred, "uncond": x - uncond_pred, "cond_scale": cond_scale, "timestep": sigma,
                "input": x, "sigma": sigma, "cond_denoised": cond_pred, "uncond_denoised": uncond_pred,
                "model": model, "model_options": model_options, "input_cond": cond, "input_uncond": uncond}
        result = x - model_options["sampler_cfg_function"](args)
    else:
        result = uncond_pred + (cond_pred - uncond_pred) * cond_scale
    for fn in model_options.get("sampler_post_cfg_function", []):
        args = {"denoised": result, "cond": cond, "uncond": uncond, "cond_scale": cond_scale, "model": model,
                "uncond_denoised": uncond_pred, "cond_denoised": cond_pred, "sigma": sigma,
                "model_options": model_options, "input": x}
        result = fn(args)
    return result


def _calc_cond_batch(apply_model: Callable, conds: list, x: torch.Tensor, sigma: torch.Tensor,
                     model_options: dict) -> list[torch.Tensor]:
    """`calc_cond_batch`, through a ComfyUI pack's "calc_cond_batch" wrappers when there are any
    (`diffusion/wrappers.py`; the first argument is the model call)."""
    transformer_options = model_options.get("transformer_options", {})
    if not transformer_options.get("wrappers"):
        return calc_cond_batch(apply_model, conds, x, sigma, model_options)
    from diffusion.wrappers import run_wrapped

    return run_wrapped("calc_cond_batch", calc_cond_batch, None, transformer_options, apply_model, conds, x, sigma,
                       model_options)


def sampling_function(apply_model: Callable, x: torch.Tensor, sigma: torch.Tensor, uncond: list[dict] | None,
                      cond: list[dict] | None, cond_scale: float, model_options: dict | None = None,
                      model: Any = None) -> torch.Tensor:
    """Guided denoised prediction: cond and uncond batched into as few model calls as fit, then CFG."""
    model_options = dict(model_options or {})
    model_options["current_cfg_scale"] = cond_scale
    if math.isclose(cond_scale, 1.0) and not model_options.get("disable_cfg1_optimization", False):
        uncond = None
    conds = [cond, uncond]
    if "sampler_calc_cond_batch_function" in model_options:
        args = {"conds": conds, "input": x, "sigma": sigma, "model": model, "model_options": model_options}
        out = model_options["sampler_calc_cond_batch_function"](args)
    else:
        out = _calc_cond_batch(apply_model, conds, x, sigma, model_options)
    for fn in model_options.get("sampler_pre_cfg_function", []):
        out = fn({"conds": conds, "conds_out": out, "cond_scale": cond_scale, "timestep": sigma, "input": x,
                  "sigma": sigma, "model": model, "model_options": model_options})
    return cfg_function(model, out[0], out[1], cond_scale, x, sigma, model_options, cond=cond, uncond=uncond)


def rescale_cfg(args: dict, multiplier: float = 0.7) -> torch.Tensor:
    """Guidance rescale (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed",
    §3.4, eq. 15-16), as a sampler_cfg_function: the CFG result is rescaled in v-prediction space to the
    standard deviation of the conditional prediction, then blended with the plain result by `multiplier`."""
    cond, uncond, cond_scale, x_orig = args["cond"], args["uncond"], args["cond_scale"], args["input"]
    sigma = args["sigma"].reshape(args["sigma"].shape[:1] + (1,) * (cond.ndim - 1))
    # Work on v predictions: x_vp = x/(σ²+1) scale, v = (x_vp - x0_vp)·sqrt(σ²+1)/σ.
    x = x_orig / (sigma * sigma + 1.0)
    v_cond = ((x - (x_orig - cond)) * (sigma ** 2 + 1.0) ** 0.5) / sigma
    v_uncond = ((x - (x_orig - uncond)) * (sigma ** 2 + 1.0) ** 0.5) / sigma
    v_cfg = v_uncond + cond_scale * (v_cond - v_uncond)
    dims = tuple(range(1, cond.ndim))
    ro_pos = torch.std(v_cond, dim=dims, keepdim=True)
    ro_cfg = torch.std(v_cfg, dim=dims, keepdim=True)
    v_final = multiplier * (v_cfg * (ro_pos / ro_cfg)) + (1.0 - multiplier) * v_cfg
    return x_orig - (x - v_final * sigma / (sigma * sigma + 1.0) ** 0.5)


def rescale_cfg_patch(multiplier: float = 0.7) -> Callable[[dict], torch.Tensor]:
    """The sampler_cfg_function the RescaleCFG node installs on a model clone."""
    def patch(args: dict) -> torch.Tensor:
        return rescale_cfg(args, multiplier)
    return patch


def _extra_conds_kwargs(model: Any, noise: torch.Tensor, latent_image: torch.Tensor | None,
                        denoise_mask: torch.Tensor | None, seed: int | None) -> dict[str, Any]:
    """The keyword arguments of model.extra_conds; the run's seed goes to those that take one (unCLIP's noise
    augmentation is seeded from it, as ComfyUI's process_conds passes `seed`)."""
    kwargs: dict[str, Any] = {"noise": noise, "latent_image": latent_image, "denoise_mask": denoise_mask}
    if seed is not None and "seed" in inspect.signature(model.extra_conds).parameters:
        kwargs["seed"] = seed
    return kwargs


def _takes(fn: Any, name: str) -> bool:
    """Whether `fn` accepts the keyword `name` (ComfyUI's extra_conds get "prompt_type": positive/negative)."""
    return name in inspect.signature(fn).parameters


def prepare_conds(model: Any, conds: dict[str, list[dict]], noise: torch.Tensor, latent_image: torch.Tensor | None,
                  denoise_mask: torch.Tensor | None, seed: int | None = None) -> dict[str, list[dict]]:
    """Per-run preparation of cond dicts (ComfyUI process_conds): areas and masks at the latent size,
    timestep ranges, model-specific inputs (model.extra_conds, given the run's seed where they take it),
    matching areas across lists, control."""
    conds = {k: [dict(c) for c in v] for k, v in conds.items()}
    h, w = noise.shape[2], noise.shape[3]
    extra = _extra_conds_kwargs(model, noise, latent_image, denoise_mask, seed) if hasattr(model, "extra_conds") \
        else {}
    for k in conds:
        resolve_areas_and_masks(conds[k], h, w, noise.device)
        apply_timestep_ranges(conds[k], model.model_sampling.percent_to_sigma)
        if hasattr(model, "extra_conds"):
            typed = {**extra, "prompt_type": k} if _takes(model.extra_conds, "prompt_type") else extra
            for c in conds[k]:
                c["model_conds"] = {**c["model_conds"], **model.extra_conds(c, **typed)}
    for k in conds:
        for c in list(conds[k]):
            for kk in conds:
                if k != kk:
                    create_cond_with_same_area_if_none(conds[kk], c)
    for k in conds:
        for c in conds[k]:
            if c.get("control") is not None and hasattr(c["control"], "pre_run"):
                c["control"].pre_run(model, model.model_sampling.percent_to_sigma)
    if "positive" in conds:
        for k in conds:
            if k != "positive":
                apply_control_to_uncond(conds["positive"], conds[k])
    return conds


class CFGGuider:
    """Positive/negative conditioning with a CFG scale (ComfyUI CFGGuider / the CFGGuider node)."""

    def __init__(self, model: Any, model_options: dict | None = None):
        self.model = model
        self.model_options = dict(model_options or {})
        self.original_conds: dict[str, list[dict]] = {}
        self.conds: dict[str, list[dict]] = {}
        self.cfg = 1.0

    def set_conds(self, positive: list, negative: list) -> None:
        self.original_conds = {"positive": convert_cond(positive), "negative": convert_cond(negative)}

    def set_cfg(self, cfg: float) -> None:
        self.cfg = cfg

    def prepare(self, noise: torch.Tensor, latent_image: torch.Tensor | None, denoise_mask: torch.Tensor | None,
                seed: int | None = None) -> None:
        """Resolve the conds for one sampling run of this noise shape (and seed)."""
        self.conds = prepare_conds(self.model, self.original_conds, noise, latent_image, denoise_mask, seed)

    def predict(self, x: torch.Tensor, sigma: torch.Tensor, model_options: dict) -> torch.Tensor:
        return sampling_function(self.model.apply_model, x, sigma, self.conds.get("negative"),
                                 self.conds.get("positive"), self.cfg, model_options, model=self.model)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, model_options: dict | None = None,
                 seed: int | None = None, **_: Any) -> torch.Tensor:
        return self.predict(x, sigma, model_options if model_options is not None else self.model_options)


class BasicGuider(CFGGuider):
    """Only positive conditioning, no CFG (BasicGuider node, for guidance-distilled models)."""

    def set_conds(self, positive: list, negative: list | None = None) -> None:
        self.original_conds = {"positive": convert_cond(positive)}

    def predict(self, x, sigma, model_options):
        return calc_cond_batch(self.model.apply_model, [self.conds.get("positive")], x, sigma, model_options)[0]


class DualCFGGuider(CFGGuider):
    """Two-level CFG (DualCFGGuider node, `set_cfg(cfg_conds, cfg_cond2_negative)`): CFG with scale cfg2
    between the middle and negative predictions, plus cfg1·(positive - middle); style "nested" instead
    applies cfg1 between positive and middle first, then cfg2 against the negative."""

    def __init__(self, model: Any, model_options: dict | None = None):
        super().__init__(model, model_options)
        self.cfg1, self.cfg2, self.nested = 1.0, 1.0, False

    def set_conds(self, positive: list, middle: list, negative: list) -> None:  # type: ignore[override]
        middle = [[t, {**o, "prompt_type": "negative"}] for t, o in middle]
        self.original_conds = {"positive": convert_cond(positive), "middle": convert_cond(middle),
                               "negative": convert_cond(negative)}

    def set_cfg(self, cfg1: float, cfg2: float = 1.0, nested: bool = False) -> None:  # type: ignore[override]
        self.cfg1, self.cfg2, self.nested = cfg1, cfg2, nested

    def predict(self, x, sigma, model_options):
        negative, middle, positive = self.conds.get("negative"), self.conds.get("middle"), self.conds.get("positive")
        apply = self.model.apply_model
        if self.nested:
            out = calc_cond_batch(apply, [negative, middle, positive], x, sigma, model_options)
            pred_text = cfg_function(self.model, out[2], out[1], self.cfg1, x, sigma, model_options, positive, middle)
            return out[0] + self.cfg2 * (pred_text - out[0])
        if not model_options.get("disable_cfg1_optimization", False) and math.isclose(self.cfg2, 1.0):
            negative = None
            if math.isclose(self.cfg1, 1.0):
                middle = None
        out = calc_cond_batch(apply, [negative, middle, positive], x, sigma, model_options)
        return cfg_function(self.model, out[1], out[0], self.cfg2, x, sigma, model_options, middle, negative) \
            + (out[2] - out[1]) * self.cfg1
