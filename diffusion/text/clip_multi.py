"""Text models of several CLIP towers encoded in step: SDXL (CLIP-L + OpenCLIP bigG) and the SDXL refiner (bigG).

Owns `MultiTextEncoder` (the towers as submodules `clip_l` / `clip_g`, the family's combination rule, and its layer
semantics: penultimate layer by default, no final layer norm on an intermediate layer), the builders from an SDXL
checkpoint's `conditioner.embedders.*` keys (`build_conditioner`) and from two separate text-encoder files
(`build_dual`, DualCLIPLoader), and the combination rules (ComfyUI `comfy/sdxl_clip.py`):

- "sdxl": context = CLIP-L's hidden ‖ bigG's hidden per token (768 + 1280 = 2048; cut to the shorter of the two
  when their chunk counts differ), pooled = bigG's projected pooled output (1280);
- "sdxl_refiner": context and pooled are bigG's alone.

- "sd3": (CLIP-L ‖ bigG ‖ zeros to 4096) then T5-XXL along the sequence, pooled L ‖ G; any subset of the three
  towers (`build_sd3`, for CLIPLoader / DualCLIPLoader / TripleCLIPLoader and SD3 single files).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from diffusion.text.t5 import T5Encoder
from diffusion.text.text_encoders import TextEncoder, build_text_encoder

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
    """SD3 (ComfyUI `comfy/text_encoders/sd3_clip.py` as the spec): the CLIP part is CLIP-L ‖ bigG per token (bigG
    alone is preceded by 768 zeros, CLIP-L alone followed by zeros), zero-padded to 4096 wide; T5-XXL's tokens
    follow it along the sequence (T5 alone: its tokens only; nothing: 77 zero tokens). Pooled = L's unprojected ‖
    G's projected pooled output, zeros for a missing tower or when no CLIP tower encoded anything."""
    l_out, g_out, t5 = outputs.get("l"), outputs.get("g"), outputs.get("t5xxl")
    lg, pooled = None, torch.zeros(1, SD3_L_WIDTH + SD3_G_WIDTH)
    if l_out is not None or g_out is not None:
        l_pooled = l_out[1] if l_out is not None else torch.zeros(1, SD3_L_WIDTH)
        g_pooled = g_out[1] if g_out is not None else torch.zeros(1, SD3_G_WIDTH)
        lg = l_out[0] if l_out is not None else None
        if g_out is not None:
            if lg is None:
                lg = torch.nn.functional.pad(g_out[0], (SD3_L_WIDTH, 0))
            else:
                cut = min(lg.shape[1], g_out[0].shape[1])
                lg = torch.cat([lg[:, :cut], g_out[0][:, :cut]], dim=-1)
        lg = torch.nn.functional.pad(lg, (0, SD3_CONTEXT_WIDTH - lg.shape[-1]))
        pooled = torch.cat([l_pooled, g_pooled], dim=-1)
    if t5 is not None:
        cond = t5[0] if lg is None else torch.cat([lg, t5[0]], dim=-2)
    else:
        cond = lg if lg is not None else torch.zeros(1, 77, SD3_CONTEXT_WIDTH)
    return cond, pooled


COMBINERS: dict[str, Callable[[Outputs], tuple[torch.Tensor, torch.Tensor]]] = {
    "sdxl": combine_sdxl, "sdxl_refiner": combine_g_only, "sd3": combine_sd3,
}
# The towers each family needs, by token key.
REQUIRED_TOWERS = {"sdxl": ("l", "g"), "sdxl_refiner": ("g",)}


class MultiTextEncoder(nn.Module):
    """Several text towers whose outputs a family combines. State-dict keys are `clip_l.model.*`, `clip_g.model.*`
    (each tower in `TextEncoder`'s open_clip layout) and, for SD3, `t5xxl.transformer.*` (`diffusion.text.t5`)."""

    default_layer_idx = -2  # SDXL and SD3 take the penultimate layer of every tower
    norm_hidden = False     # ... without the final layer norm

    def __init__(self, family: str, clip_l: TextEncoder | None = None, clip_g: TextEncoder | None = None,
                 t5xxl: T5Encoder | None = None) -> None:
        super().__init__()
        if family not in COMBINERS:
            raise ValueError(f"no multi-tower text model for family {family!r}; known: {sorted(COMBINERS)}")
        self.family = family
        self.clip_l = clip_l
        self.clip_g = clip_g
        self.t5xxl = t5xxl
        if not self.towers():
            raise ValueError(f"the {family} text model needs at least one text encoder")
        missing = [k for k in REQUIRED_TOWERS.get(family, ()) if self.towers().get(k) is None]
        if missing:
            raise ValueError(f"the {family} text model needs CLIP-{'/'.join(m.upper() for m in missing)}")

    def towers(self) -> dict[str, TextEncoder | T5Encoder]:
        """The towers present, by token key, in encoding order ("l", "g", "t5xxl")."""
        found = {"l": self.clip_l, "g": self.clip_g, "t5xxl": self.t5xxl}
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


def build_sd3(towers: list[TextEncoder | T5Encoder]) -> MultiTextEncoder:
    """SD3's text model of separately loaded towers in any order (at most one CLIP-L, one bigG, one T5), as
    ComfyUI's sd3 type takes one, two or three files; ValueError naming the file kinds otherwise."""
    slots: dict[str, TextEncoder | T5Encoder] = {}
    for tower in towers:
        slot = "t5xxl" if isinstance(tower, T5Encoder) else {"sd1": "clip_l", "clip_g": "clip_g"}.get(
            tower.config.family)
        if slot is None or slot in slots:
            found = ", ".join(_describe(t) for t in towers)
            raise ValueError(f"type sd3 takes at most one CLIP-L, one CLIP-G and one T5-XXL text encoder; "
                             f"got {found}")
        slots[slot] = tower
    return MultiTextEncoder("sd3", **slots)


def _describe(tower: TextEncoder | T5Encoder) -> str:
    if isinstance(tower, T5Encoder):
        return f"T5 ({tower.config.num_layers} layers, width {tower.config.d_model})"
    names = {"sd1": "CLIP-L", "sd2": "OpenCLIP-H", "clip_g": "CLIP-G"}
    c = tower.config
    return f"{names.get(c.family, c.family)} ({c.layers} layers, width {c.width})"
