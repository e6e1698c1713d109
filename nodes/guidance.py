"""Guidance nodes: PerpNeg, PerpNegGuider, APG, CFGZeroStar, CFGNorm, TCFG, Mahiro, FreSca and Epsilon Scaling.

Each MODEL node returns a clone whose model options carry a CFG hook from `diffusion/sampling/guidance_patches.py`;
PerpNegGuider returns a GUIDER. Names, inputs, defaults, ranges, categories and display names are ComfyUI's
(`comfy_extras/nodes_perpneg.py`, `nodes_apg.py`, `nodes_cfg.py`, `nodes_tcfg.py`, `nodes_mahiro.py`,
`nodes_fresca.py`, `nodes_eps.py`).
"""
from __future__ import annotations

from typing import Any, Callable

from diffusion.sampling.guidance_patches import (APGPatch, CFGNormPatch, EpsilonScalingPatch, FreScaPatch, PerpNegCFG,
                                        PerpNegGuider as PerpNegGuidance, cfg_zero_star, mahiro, tcfg)
from diffusion.patcher import ModelHandle
from nodes.sampling import cfg_input
from nodes.spec import Float, Input, Int, Node, Output

_GUIDANCE = "advanced/guidance"


def with_hook(model: ModelHandle, hook_list: str, fn: Callable[..., Any]) -> ModelHandle:
    """A clone of `model` with `fn` appended to the list option `hook_list`."""
    clone = model.clone()
    clone.add_wrapper(hook_list, fn)
    return clone


class PerpNeg(Node):
    """Perp-Neg as a model patch: the negative's direction is made perpendicular to the positive's, relative to
    the empty conditioning, before CFG subtracts it (superseded by PerpNegGuider)."""

    DISPLAY_NAME = "Perp-Neg (DEPRECATED by PerpNegGuider)"
    CATEGORY = "_for_testing"
    DEPRECATED = True
    EXPERIMENTAL = True
    INPUTS = (Input("model", "MODEL"), Input("empty_conditioning", "CONDITIONING"),
              Float("neg_scale", 1.0, min=0.0, max=100.0, step=0.01))
    OUTPUTS = (Output("MODEL"),)

    def execute(self, model: ModelHandle, empty_conditioning: list, neg_scale: float) -> tuple[ModelHandle]:
        clone = model.clone()
        clone.set_option("sampler_cfg_function", PerpNegCFG(tuple(empty_conditioning), neg_scale))
        return (clone,)


class PerpNegGuider(Node):
    """A GUIDER mixing positive, negative and empty conditioning by Perp-Neg."""

    CATEGORY = "_for_testing"
    EXPERIMENTAL = True
    INPUTS = (Input("model", "MODEL"), Input("positive", "CONDITIONING"), Input("negative", "CONDITIONING"),
              Input("empty_conditioning", "CONDITIONING"), cfg_input(),
              Float("neg_scale", 1.0, min=0.0, max=100.0, step=0.01))
    OUTPUTS = (Output("GUIDER"),)

    def execute(self, model: ModelHandle, positive: list, negative: list, empty_conditioning: list, cfg: float,
                neg_scale: float) -> tuple[Any]:
        guider = PerpNegGuidance(model.model, model.options)
        guider.handle = model  # what SamplerCustomAdvanced has the memory manager place
        guider.set_conds(positive, negative, empty_conditioning)
        guider.set_cfg(cfg, neg_scale)
        return (guider,)


class APG(Node):
    """Adaptive projected guidance: damps the part of the guidance parallel to the conditional prediction (eta),
    optionally clips its norm and averages it over steps."""

    DISPLAY_NAME = "Adaptive Projected Guidance"
    CATEGORY = "sampling/custom_sampling"
    INPUTS = (
        Input("model", "MODEL"),
        Float("eta", 1.0, min=-10.0, max=10.0, step=0.01,
              tooltip="Scale of the guidance part parallel to the conditional prediction; 1 is plain CFG."),
        Float("norm_threshold", 5.0, min=0.0, max=50.0, step=0.1,
              tooltip="Clip the guidance norm to this value; 0 turns clipping off."),
        Float("momentum", 0.0, min=0.0, max=1.0, step=0.01,
              tooltip="Weight of the running average of the guidance over the steps; 0 turns it off."),
    )
    OUTPUTS = (Output("MODEL"),)

    def execute(self, model: ModelHandle, eta: float, norm_threshold: float, momentum: float) -> tuple[ModelHandle]:
        return (with_hook(model, "sampler_pre_cfg_function", APGPatch(eta, norm_threshold, momentum)),)


class CFGZeroStar(Node):
    """CFG-Zero*: scales the unconditional prediction by its optimal projection factor before mixing."""

    CATEGORY = _GUIDANCE
    INPUTS = (Input("model", "MODEL"),)
    OUTPUTS = (Output("MODEL", "patched_model"),)

    def execute(self, model: ModelHandle) -> tuple[ModelHandle]:
        return (with_hook(model, "sampler_post_cfg_function", cfg_zero_star),)


class CFGNorm(Node):
    """Caps the guided prediction's per-pixel norm at the conditional prediction's."""

    CATEGORY = _GUIDANCE
    EXPERIMENTAL = True
    INPUTS = (Input("model", "MODEL"), Float("strength", 1.0, min=0.0, max=100.0, step=0.01))
    OUTPUTS = (Output("MODEL", "patched_model"),)

    def execute(self, model: ModelHandle, strength: float) -> tuple[ModelHandle]:
        return (with_hook(model, "sampler_post_cfg_function", CFGNormPatch(strength)),)


class TCFG(Node):
    """Tangential damping CFG (arXiv:2503.18137): the unconditional prediction keeps only its part along the
    direction it shares with the conditional one, before CFG mixes them."""

    DISPLAY_NAME = "Tangential Damping CFG"
    CATEGORY = _GUIDANCE
    INPUTS = (Input("model", "MODEL"),)
    OUTPUTS = (Output("MODEL", "patched_model"),)

    def execute(self, model: ModelHandle) -> tuple[ModelHandle]:
        return (with_hook(model, "sampler_pre_cfg_function", tcfg),)


class Mahiro(Node):
    """Leans the guidance towards the positive prompt's own direction instead of its difference from the
    negative, by how similar the two are."""

    DISPLAY_NAME = "Mahiro is so cute that she deserves a better guidance function!! (。・ω・。)"
    CATEGORY = "_for_testing"
    INPUTS = (Input("model", "MODEL"),)
    OUTPUTS = (Output("MODEL", "patched_model"),)

    def execute(self, model: ModelHandle) -> tuple[ModelHandle]:
        return (with_hook(model, "sampler_post_cfg_function", mahiro),)


class FreSca(Node):
    """Scales the guidance's low and high spatial frequencies separately."""

    DISPLAY_NAME = "FreSca"
    CATEGORY = "_for_testing"
    INPUTS = (
        Input("model", "MODEL"),
        Float("scale_low", 1.0, min=0, max=10, step=0.01, tooltip="Factor on the guidance's low frequencies"),
        Float("scale_high", 1.25, min=0, max=10, step=0.01, tooltip="Factor on the guidance's high frequencies"),
        Int("freq_cutoff", 20, min=1, max=100, step=1,
            tooltip="How many frequency indices either side of the centre count as low"),
    )
    OUTPUTS = (Output("MODEL"),)

    def execute(self, model: ModelHandle, scale_low: float, scale_high: float, freq_cutoff: int) -> tuple[ModelHandle]:
        return (with_hook(model, "sampler_pre_cfg_function", FreScaPatch(scale_low, scale_high, freq_cutoff)),)


class EpsilonScaling(Node):
    """Epsilon scaling against exposure bias: the predicted noise is divided by scaling_factor each step."""

    NAME = "Epsilon Scaling"
    CATEGORY = "model_patches/unet"
    INPUTS = (Input("model", "MODEL"), Float("scaling_factor", 1.005, min=0.5, max=1.5, step=0.001,
                                               display="number"))
    OUTPUTS = (Output("MODEL"),)

    def execute(self, model: ModelHandle, scaling_factor: float) -> tuple[ModelHandle]:
        factor = scaling_factor if scaling_factor != 0 else 1e-9
        return (with_hook(model, "sampler_post_cfg_function", EpsilonScalingPatch(factor)),)


NODES: list[type] = [PerpNeg, PerpNegGuider, APG, CFGZeroStar, CFGNorm, TCFG, Mahiro, FreSca, EpsilonScaling]
