"""Text models of several CLIP towers encoded in step: SDXL (CLIP-L + OpenCLIP bigG) and the SDXL refiner (bigG).

Owns `MultiTextEncoder` (the towers as submodules `clip_l` / `clip_g`, the family's combination rule, and its layer
semantics: penultimate layer by default, no final layer norm on an intermediate layer), the builders from an SDXL
checkpoint's `conditioner.embedders.*` keys (`build_conditioner`) and from two separate text-encoder files
(`build_dual`, DualCLIPLoader), and the combination rules (ComfyUI `comfy/sdxl_clip.py`):

- "sdxl": context = CLIP-L's hidden ‖ bigG's hidden per token (768 + 1280 = 2048; cut to the shorter of the two
  when their chunk counts differ), pooled = bigG's projected pooled output (1280);
- "sdxl_refiner": context and pooled are bigG's alone.

Another family adds its rule to `COMBINERS` (SD3: CLIP-L ‖ bigG ‖ zeros to 4096, pooled L ‖ G).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from diffusion.text_encoders import TextEncoder, build_text_encoder

Outputs = dict[str, tuple[torch.Tensor, torch.Tensor]]


def combine_sdxl(outputs: Outputs) -> tuple[torch.Tensor, torch.Tensor]:
    """SDXL: CLIP-L ‖ bigG per token, pooled from bigG."""
    (l_cond, _), (g_cond, g_pooled) = outputs["l"], outputs["g"]
    cut = min(l_cond.shape[1], g_cond.shape[1])
    return torch.cat([l_cond[:, :cut], g_cond[:, :cut]], dim=-1), g_pooled


def combine_g_only(outputs: Outputs) -> tuple[torch.Tensor, torch.Tensor]:
    """The SDXL refiner: bigG alone."""
    return outputs["g"]


SD3_CONTEXT_WIDTH = 4096  # T5-XXL's width; the CLIP part is zero-padded to it
SD3_L_WIDTH, SD3_G_WIDTH = 768, 1280


def combine_sd3(outputs: Outputs) -> tuple[torch.Tensor, torch.Tensor]:
    """SD3 (ComfyUI `comfy/text_encoders/sd3_clip.py` as the spec): context = CLIP-L ‖ bigG per token (bigG alone
    is preceded by 768 zeros), zero-padded to 4096 wide; pooled = L's unprojected ‖ G's projected pooled output,
    zeros for a missing tower. T5-XXL tokens, when a T5 tower is present, follow along the sequence."""
    l_out, g_out = outputs.get("l"), outputs.get("g")
    ref = next(v[0] for v in outputs.values())
    l_pooled = l_out[1] if l_out is not None else ref.new_zeros(1, SD3_L_WIDTH)
    g_pooled = g_out[1] if g_out is not None else ref.new_zeros(1, SD3_G_WIDTH)
    lg = l_out[0] if l_out is not None else None
    if g_out is not None:
        if lg is None:
            lg = torch.nn.functional.pad(g_out[0], (SD3_L_WIDTH, 0))
        else:
            cut = min(lg.shape[1], g_out[0].shape[1])
            lg = torch.cat([lg[:, :cut], g_out[0][:, :cut]], dim=-1)
    lg = torch.nn.functional.pad(lg, (0, SD3_CONTEXT_WIDTH - lg.shape[-1]))
    t5 = outputs.get("t5")
    cond = lg if t5 is None else torch.cat([lg, t5[0]], dim=-2)
    return cond, torch.cat([l_pooled, g_pooled], dim=-1)


COMBINERS: dict[str, Callable[[Outputs], tuple[torch.Tensor, torch.Tensor]]] = {
    "sdxl": combine_sdxl, "sdxl_refiner": combine_g_only, "sd3": combine_sd3,
}
# The towers each family needs, by token key.
REQUIRED_TOWERS = {"sdxl": ("l", "g"), "sdxl_refiner": ("g",)}


class MultiTextEncoder(nn.Module):
    """Several CLIP towers whose outputs a family combines. State-dict keys are `clip_l.model.*`,
    `clip_g.model.*` (each tower in `TextEncoder`'s open_clip layout)."""

    default_layer_idx = -2  # SDXL and SD3 take the penultimate layer of every tower
    norm_hidden = False     # ... without the final layer norm

    def __init__(self, family: str, clip_l: TextEncoder | None = None, clip_g: TextEncoder | None = None) -> None:
        super().__init__()
        if family not in COMBINERS:
            raise ValueError(f"no multi-tower text model for family {family!r}; known: {sorted(COMBINERS)}")
        self.family = family
        self.clip_l = clip_l
        self.clip_g = clip_g
        missing = [k for k in REQUIRED_TOWERS.get(family, ()) if self.towers().get(k) is None]
        if missing:
            raise ValueError(f"the {family} text model needs CLIP-{'/'.join(m.upper() for m in missing)}")

    def towers(self) -> dict[str, TextEncoder]:
        """The towers present, by token key, in encoding order ("l" before "g")."""
        found = {"l": self.clip_l, "g": self.clip_g}
        return {k: v for k, v in found.items() if v is not None}

    def combine(self, outputs: Outputs) -> tuple[torch.Tensor, torch.Tensor]:
        """The family's (cond, pooled) from each tower's (hidden, pooled)."""
        return COMBINERS[self.family](outputs)


def _sub(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def build_conditioner(state_dict: dict[str, torch.Tensor], family: str,
                      dtype: torch.dtype | None = None) -> MultiTextEncoder:
    """The text model of an SDXL checkpoint's conditioner keys (`conditioner.` removed): "sdxl" has CLIP-L at
    `embedders.0.transformer.*` (HF layout) and bigG at `embedders.1.model.*` (open_clip layout); "sdxl_refiner"
    has bigG at `embedders.0.model.*`. The slot says which tower is which, so tiny test towers work too."""
    if family == "sdxl":
        clip_l = build_text_encoder(_sub(state_dict, "embedders.0.transformer."), dtype, family="sd1")
        clip_g = build_text_encoder(_sub(state_dict, "embedders.1.model."), dtype, family="clip_g")
        return MultiTextEncoder("sdxl", clip_l=clip_l, clip_g=clip_g)
    if family == "sdxl_refiner":
        return MultiTextEncoder("sdxl_refiner", clip_g=build_text_encoder(_sub(state_dict, "embedders.0.model."),
                                                                          dtype, family="clip_g"))
    raise ValueError(f"no conditioner layout known for family {family!r}")


def build_dual(first: TextEncoder, second: TextEncoder, family: str = "sdxl") -> MultiTextEncoder:
    """A two-tower text model from two separately loaded towers (DualCLIPLoader), whichever order they come in;
    ValueError unless one is CLIP-L and the other bigG."""
    kinds = {first.config.family: first, second.config.family: second}
    if set(kinds) != {"sd1", "clip_g"}:
        found = ", ".join(_describe(t) for t in (first, second))
        raise ValueError(f"type {family} needs one CLIP-L and one CLIP-G (OpenCLIP bigG) text encoder; got {found}")
    return MultiTextEncoder(family, clip_l=kinds["sd1"], clip_g=kinds["clip_g"])


def _describe(tower: TextEncoder) -> str:
    names = {"sd1": "CLIP-L", "sd2": "OpenCLIP-H", "clip_g": "CLIP-G"}
    c = tower.config
    return f"{names.get(c.family, c.family)} ({c.layers} layers, width {c.width})"
