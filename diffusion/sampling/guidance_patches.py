"""Guidance variants as CFG hooks (`diffusion/sampling/guidance.py`'s sampler_cfg_function, sampler_pre_cfg_function and
sampler_post_cfg_function argument dicts), plus the Perp-Neg guider.

All predictions here are denoised (x0) predictions unless a name says "noise" (x − denoised). Each patch is a small
frozen callable so that a model clone carrying it has a stable identity; stateful ones (APG's momentum) keep their
state per sampling run, reset when sigma rises.

- Perp-Neg (Armandpour et al. 2023, arXiv:2304.04968): the negative's direction is reduced to its component
  perpendicular to the positive's before it is subtracted.
- APG, adaptive projected guidance (Sadat et al. 2024, arXiv:2410.02416): the guidance is split into parts parallel
  and orthogonal to the conditional prediction and the parallel part scaled by eta; optional norm clip and momentum.
- CFG-Zero* (Fan et al. 2025, arXiv:2503.18886): the unconditional prediction is scaled by the projection factor
  st* = <c, u>/|u|² of the noise predictions before mixing.
- CFGNorm: the guided prediction's per-pixel channel norm is capped at the conditional prediction's.
- TCFG, tangential damping (Kwon et al. 2025, arXiv:2503.18137): the unconditional noise prediction keeps only its
  component along the first right-singular vector of [uncond; cond].
- Mahiro: the result leans towards cond·scale by how similar the (sign-sqrt) uncond leap and merge are.
- FreSca (Huang et al. 2025, arXiv:2504.02154): low and high spatial frequencies of the guidance scaled apart.
- Epsilon scaling (Ning et al. 2023, arXiv:2308.15321): the noise prediction is divided by a constant factor.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from diffusion.sampling.conditioning import calc_cond_batch, convert_cond
from diffusion.sampling.guidance import CFGGuider, prepare_conds


def perp_neg(noise_pred_pos: torch.Tensor, noise_pred_neg: torch.Tensor, noise_pred_nocond: torch.Tensor,
             neg_scale: float, cond_scale: float) -> torch.Tensor:
    """Perp-Neg: empty + cfg·(pos − neg_scale·perp), perp = the part of (neg − empty) orthogonal to (pos − empty)
    (one projection over the whole batch, as ComfyUI)."""
    pos = noise_pred_pos - noise_pred_nocond
    neg = noise_pred_neg - noise_pred_nocond
    perp = neg - (torch.mul(neg, pos).sum() / (torch.norm(pos) ** 2)) * pos
    return noise_pred_nocond + cond_scale * (pos - perp * neg_scale)


@dataclass(frozen=True, eq=False)
class PerpNegCFG:
    """The deprecated PerpNeg node's sampler_cfg_function: evaluates the empty conditioning itself each step."""

    empty_conditioning: tuple
    neg_scale: float

    def __call__(self, args: dict[str, Any]) -> torch.Tensor:
        model, x, sigma = args["model"], args["input"], args["sigma"]
        nocond = prepare_conds(model, {"negative": convert_cond(list(self.empty_conditioning))}, x, None, None)
        (nocond_pred,) = calc_cond_batch(model.apply_model, [nocond["negative"]], x, sigma, args["model_options"])
        return x - perp_neg(args["cond_denoised"], args["uncond_denoised"], nocond_pred, self.neg_scale,
                            args["cond_scale"])


class PerpNegGuider(CFGGuider):
    """positive, negative and empty conditioning in one batch, mixed by Perp-Neg; pre- and post-CFG hooks run as
    they would around plain CFG."""

    def __init__(self, model: Any, model_options: dict | None = None):
        super().__init__(model, model_options)
        self.neg_scale = 1.0

    def set_conds(self, positive: list, negative: list, empty: list) -> None:  # type: ignore[override]
        empty = [[t, {**o, "prompt_type": "negative"}] for t, o in empty]
        self.original_conds = {"positive": convert_cond(positive), "empty_negative_prompt": convert_cond(empty),
                               "negative": convert_cond(negative)}

    def set_cfg(self, cfg: float, neg_scale: float = 1.0) -> None:  # type: ignore[override]
        self.cfg, self.neg_scale = cfg, neg_scale

    def predict(self, x: torch.Tensor, sigma: torch.Tensor, model_options: dict) -> torch.Tensor:
        positive, negative = self.conds.get("positive"), self.conds.get("negative")
        empty = self.conds.get("empty_negative_prompt")
        if not model_options.get("disable_cfg1_optimization", False) and math.isclose(self.neg_scale, 0.0):
            negative = None
            if math.isclose(self.cfg, 1.0):
                empty = None
        conds = [positive, negative, empty]
        out = calc_cond_batch(self.model.apply_model, conds, x, sigma, model_options)
        for fn in model_options.get("sampler_pre_cfg_function", []):
            out = fn({"conds": conds, "conds_out": out, "cond_scale": self.cfg, "timestep": sigma, "input": x,
                      "sigma": sigma, "model": self.model, "model_options": model_options})
        pos_pred, neg_pred, empty_pred = out
        result = perp_neg(pos_pred, neg_pred, empty_pred, self.neg_scale, self.cfg)
        for fn in model_options.get("sampler_post_cfg_function", []):
            result = fn({"denoised": result, "cond": positive, "uncond": negative, "cond_scale": self.cfg,
                         "model": self.model, "uncond_denoised": neg_pred, "cond_denoised": pos_pred, "sigma": sigma,
                         "model_options": model_options, "input": x, "empty_cond": empty,
                         "empty_cond_denoised": empty_pred})
        return result


def project(v0: torch.Tensor, v1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """v0's components parallel and orthogonal to v1, per sample over the last three dimensions."""
    v1 = F.normalize(v1, dim=[-1, -2, -3])
    parallel = (v0 * v1).sum(dim=[-1, -2, -3], keepdim=True) * v1
    return parallel, v0 - parallel


@dataclass(eq=False)
class APGPatch:
    """APG as a sampler_pre_cfg_function. With g' the clipped, momentum-averaged guidance whose part parallel to
    cond is scaled by eta, it returns cond' = uncond + g' + (cond − uncond)/cond_scale, so plain CFG at cond_scale
    then gives uncond + cond_scale·g' + (cond − uncond) (ComfyUI's formulation)."""

    eta: float
    norm_threshold: float
    momentum: float
    _running: torch.Tensor | None = field(default=None, repr=False)
    _prev_sigma: float | None = field(default=None, repr=False)

    def __call__(self, args: dict[str, Any]) -> list:
        conds_out = args["conds_out"]
        if len(conds_out) == 1 or conds_out[1] is None:
            return conds_out
        cond, uncond = conds_out[0], conds_out[1]
        sigma = float(args["sigma"][0])
        if self._prev_sigma is not None and sigma > self._prev_sigma:
            self._running = None  # a new sampling run
        self._prev_sigma = sigma
        guidance = cond - uncond
        if self.momentum > 0:
            self._running = guidance if self._running is None else self.momentum * self._running + guidance
            guidance = self._running
        if self.norm_threshold > 0:
            norm = guidance.norm(p=2, dim=[-1, -2, -3], keepdim=True)
            guidance = guidance * torch.minimum(torch.ones_like(norm), self.norm_threshold / norm)
        parallel, orthogonal = project(guidance, cond)
        modified = orthogonal + self.eta * parallel
        return [uncond + modified + (cond - uncond) / args["cond_scale"], uncond] + list(conds_out[2:])


def optimized_scale(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """CFG-Zero*'s st* = <positive, negative>/|negative|² per sample, shaped to broadcast."""
    pos = positive.reshape(positive.shape[0], -1)
    neg = negative.reshape(negative.shape[0], -1)
    st = torch.sum(pos * neg, dim=1, keepdim=True) / (torch.sum(neg ** 2, dim=1, keepdim=True) + 1e-8)
    return st.reshape([positive.shape[0]] + [1] * (positive.ndim - 1))


def cfg_zero_star(args: dict[str, Any]) -> torch.Tensor:
    """Post-CFG: the mix redone with uncond scaled by st*: α·u + s·(c − α·u)."""
    x, cond, uncond, scale = args["input"], args["cond_denoised"], args["uncond_denoised"], args["cond_scale"]
    alpha = optimized_scale(x - cond, x - uncond)
    return args["denoised"] + uncond * (alpha - 1.0) + scale * uncond * (1.0 - alpha)


@dataclass(frozen=True)
class CFGNormPatch:
    """Post-CFG: the result times min(1, |cond|/|result|) (channel norms per pixel), times strength."""

    strength: float

    def __call__(self, args: dict[str, Any]) -> torch.Tensor:
        result = args["denoised"]
        scale = (torch.norm(args["cond_denoised"], dim=1, keepdim=True)
                 / (torch.norm(result, dim=1, keepdim=True) + 1e-8)).clamp(min=0.0, max=1.0)
        return result * scale * self.strength


def tangential_damping(cond_score: torch.Tensor, uncond_score: torch.Tensor) -> torch.Tensor:
    """The uncond score projected on the first right-singular vector of the 2×N matrix [uncond; cond]."""
    batch = cond_score.shape[0]
    cond_flat = cond_score.reshape(batch, 1, -1).float()
    uncond_flat = uncond_score.reshape(batch, 1, -1).float()
    matrix = torch.cat((uncond_flat, cond_flat), dim=1)
    try:
        _, _, vh = torch.linalg.svd(matrix, full_matrices=False)
    except RuntimeError:  # some backends lack an SVD kernel
        _, _, vh = torch.linalg.svd(matrix.cpu(), full_matrices=False)
    v1 = vh[:, 0:1, :].to(uncond_flat.device)
    return ((uncond_flat @ v1.transpose(-2, -1)) * v1).reshape_as(uncond_score).to(uncond_score.dtype)


def tcfg(args: dict[str, Any]) -> list:
    """Pre-CFG: the uncond prediction replaced by its tangentially damped form (skipped without an uncond pass)."""
    x, conds_out = args["input"], args["conds_out"]
    if len(conds_out) <= 1 or None in args["conds"][:2]:
        return conds_out
    cond, uncond = conds_out[0], conds_out[1]
    damped = tangential_damping(x - cond, x - uncond)
    return [cond, x - damped] + list(conds_out[2:])


def mahiro(args: dict[str, Any]) -> torch.Tensor:
    """Post-CFG: blend of the CFG result and cond·scale weighted by the cosine similarity of the sign-sqrt
    uncond leap and the merge (result + cond·scale)/2."""
    scale, cond, uncond, result = args["cond_scale"], args["cond_denoised"], args["uncond_denoised"], args["denoised"]
    leap = cond * scale
    u_leap = uncond * scale
    merge = (leap + result) / 2
    norm_u = torch.sqrt(u_leap.abs()) * u_leap.sign()
    norm_m = torch.sqrt(merge.abs()) * merge.sign()
    sim = 2 * (F.cosine_similarity(norm_u, norm_m).mean() + 1)
    return (sim * result + (4 - sim) * leap) / 4


def frequency_scale(x: torch.Tensor, scale_low: float, scale_high: float, freq_cutoff: int) -> torch.Tensor:
    """x with its centred (2·cutoff)² lowest spatial frequencies scaled by scale_low and the rest by scale_high."""
    freq = torch.fft.fftshift(torch.fft.fftn(x.to(torch.float32), dim=(-2, -1)), dim=(-2, -1))
    h, w = freq.shape[-2:]
    mask = torch.full(freq.shape, float(scale_high), device=x.device)
    mask[..., h // 2 - freq_cutoff:h // 2 + freq_cutoff, w // 2 - freq_cutoff:w // 2 + freq_cutoff] = scale_low
    freq = torch.fft.ifftshift(freq * mask, dim=(-2, -1))
    return torch.fft.ifftn(freq, dim=(-2, -1)).real.to(x.dtype)


@dataclass(frozen=True)
class FreScaPatch:
    """Pre-CFG: cond' = uncond + frequency_scale(cond − uncond)."""

    scale_low: float
    scale_high: float
    freq_cutoff: int

    def __call__(self, args: dict[str, Any]) -> list:
        conds_out = args["conds_out"]
        if len(conds_out) < 2 or conds_out[1] is None:
            return conds_out
        cond, uncond = conds_out[0], conds_out[1]
        guidance = frequency_scale(cond - uncond, self.scale_low, self.scale_high, self.freq_cutoff)
        return [guidance + uncond, uncond] + list(conds_out[2:])


@dataclass(frozen=True)
class EpsilonScalingPatch:
    """Post-CFG: x − (x − denoised)/factor."""

    factor: float

    def __call__(self, args: dict[str, Any]) -> torch.Tensor:
        x = args["input"]
        return x - (x - args["denoised"]) / self.factor
