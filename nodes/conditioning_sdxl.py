"""SDXL text-conditioning nodes: CLIPTextEncodeSDXL (separate CLIP-G / CLIP-L prompts plus the size conditioning
SDXL was trained with) and CLIPTextEncodeSDXLRefiner (aesthetic score and size for the refiner).

Names, inputs (order, defaults, ranges), category and the values put into the conditioning are ComfyUI's
(`comfy_extras/nodes_clip_sdxl.py`); the ADM vector itself is built at sampling time by the model's family
(`diffusion/families/sdxl.py`, `sdxl_refiner.py`) from these entries.
"""
from __future__ import annotations

from diffusion.text.text_encoders import CLIP
from nodes.text_encode import Conditioning, clip_on_device
from nodes.latent_create import MAX_RESOLUTION
from nodes.spec import Float, Input, Int, Node, Output, String


def _require(clip: CLIP | None, node: str) -> CLIP:
    if clip is None:
        raise RuntimeError(f"{node}: clip input is invalid: None (the checkpoint has no text encoder?)")
    return clip


def _encode(clip: CLIP, tokens: dict, extra: dict) -> Conditioning:
    with clip_on_device(clip):
        cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
    return [[cond, {"pooled_output": pooled, **extra}]]


class CLIPTextEncodeSDXLRefiner(Node):
    """Encodes a prompt for the SDXL refiner with its aesthetic score and image size."""

    CATEGORY = "advanced/conditioning"
    INPUTS = (
        Float("ascore", 6.0, min=0.0, max=1000.0, step=0.01),
        Int("width", 1024, min=0, max=MAX_RESOLUTION),
        Int("height", 1024, min=0, max=MAX_RESOLUTION),
        String("text", None, multiline=True, dynamicPrompts=True),
        Input("clip", "CLIP"),
    )
    OUTPUTS = (Output("CONDITIONING"),)

    def execute(self, clip: CLIP | None, ascore: float, width: int, height: int, text: str) -> tuple[Conditioning]:
        clip = _require(clip, "CLIPTextEncodeSDXLRefiner")
        extra = {"aesthetic_score": ascore, "width": width, "height": height}
        return (_encode(clip, clip.tokenize(text), extra),)


class CLIPTextEncodeSDXL(Node):
    """Encodes text_g with CLIP-G and text_l with CLIP-L (padded to the same number of chunks) and attaches the
    original size, crop and target size SDXL's ADM vector embeds."""

    CATEGORY = "advanced/conditioning"
    INPUTS = (
        Input("clip", "CLIP"),
        Int("width", 1024, min=0, max=MAX_RESOLUTION),
        Int("height", 1024, min=0, max=MAX_RESOLUTION),
        Int("crop_w", 0, min=0, max=MAX_RESOLUTION),
        Int("crop_h", 0, min=0, max=MAX_RESOLUTION),
        Int("target_width", 1024, min=0, max=MAX_RESOLUTION),
        Int("target_height", 1024, min=0, max=MAX_RESOLUTION),
        String("text_g", None, multiline=True, dynamicPrompts=True),
        String("text_l", None, multiline=True, dynamicPrompts=True),
    )
    OUTPUTS = (Output("CONDITIONING"),)

    def execute(self, clip: CLIP | None, width: int, height: int, crop_w: int, crop_h: int, target_width: int,
                target_height: int, text_g: str, text_l: str) -> tuple[Conditioning]:
        clip = _require(clip, "CLIPTextEncodeSDXL")
        tokens = clip.tokenize(text_g)
        if "l" not in tokens or "g" not in tokens:
            raise ValueError(f"CLIPTextEncodeSDXL needs an SDXL CLIP (CLIP-L and CLIP-G); input 'clip' is a "
                             f"{clip.family} text encoder with towers {sorted(tokens)}")
        tokens["l"] = clip.tokenize(text_l)["l"]
        empty = clip.tokenize("")
        while len(tokens["l"]) < len(tokens["g"]):
            tokens["l"] += empty["l"]
        while len(tokens["g"]) < len(tokens["l"]):
            tokens["g"] += empty["g"]
        extra = {"width": width, "height": height, "crop_w": crop_w, "crop_h": crop_h,
                 "target_width": target_width, "target_height": target_height}
        return (_encode(clip, tokens, extra),)


NODES: list[type] = [CLIPTextEncodeSDXLRefiner, CLIPTextEncodeSDXL]
