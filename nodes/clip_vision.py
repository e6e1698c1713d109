"""CLIP vision, style and unCLIP nodes: CLIPVisionLoader, CLIPVisionEncode, StyleModelLoader, StyleModelApply and
unCLIPConditioning, with ComfyUI's class names, inputs, defaults, ranges, outputs and categories (`nodes.py`).

CLIP vision towers are open_clip VisionTransformers loaded from HF-layout files (`diffusion/networks/clip_vision.py`); the
memory manager places the tower while it encodes. unCLIPConditioning records the image embedding on each
conditioning entry (`unclip_conditioning`), as ComfyUI does, for unCLIP models to turn into their class input.
"""
from __future__ import annotations

import torch

from diffusion.files.checkpoint import read_state_dict
from diffusion.networks.clip_vision import ClipVisionModel, ClipVisionOutput, load_clip_vision
from diffusion.patcher import ModelHandle
from diffusion.files.assemble import model_socket
from diffusion.adapters.style_model import StyleModel, load_style_model
from diffusion.adapters.unclip import UnCLIPModel, split_unclip_checkpoint
from nodes.loaders import cached_one, cached_parts, dtype_for, load_checkpoint_sockets, node_context
from nodes.spec import Combo, FileList, Float, Input, Node, Output


class ClipVision:
    """CLIP_VISION socket value: the tower and the handle the memory manager places."""

    def __init__(self, model: ClipVisionModel, name: str) -> None:
        self.model = model
        self.handle = ModelHandle(model, name=name, kind="other")

    def encode_image(self, image: torch.Tensor, crop: bool = True) -> ClipVisionOutput:
        ctx = node_context()
        if ctx.models is None:
            return self.model.encode_image(image, crop)
        with ctx.models.use([self.handle]):
            return self.model.encode_image(image, crop)


class CLIPVisionLoader(Node):
    """Loads a CLIP vision model (HF CLIPVisionModelWithProjection layout: ViT-L/14, ViT-H/14, ViT-bigG/14)."""

    DISPLAY_NAME = "Load CLIP Vision"
    CATEGORY = "loaders"
    INPUTS = (Combo("clip_name", FileList("clip_vision")),)
    OUTPUTS = (Output("CLIP_VISION"),)

    def execute(self, clip_name: str) -> tuple[ClipVision]:
        ctx = node_context()
        path = ctx.folders.full_path("clip_vision", clip_name)  # type: ignore[union-attr]
        dtype = dtype_for(ctx, "text_encoder")
        model = cached_one(ctx, path, lambda: load_clip_vision(read_state_dict(path), dtype), f"clipvision:{dtype}",
                           "clip_vision")
        return (ClipVision(model, clip_name),)


class unCLIPCheckpointLoader(Node):  # noqa: N801 (ComfyUI's class name)
    """Loads an unCLIP checkpoint (SD 2.1 unCLIP): model, CLIP, VAE and its CLIP vision image tower."""

    DISPLAY_NAME = "unCLIPCheckpointLoader"
    CATEGORY = "loaders"
    INPUTS = (Combo("ckpt_name", FileList("checkpoints")),)
    OUTPUTS = (Output("MODEL"), Output("CLIP"), Output("VAE"), Output("CLIP_VISION"))

    def execute(self, ckpt_name: str) -> tuple:
        ctx = node_context()
        model, clip, vae = load_checkpoint_sockets(ckpt_name)
        path = ctx.folders.full_path("checkpoints", ckpt_name)  # type: ignore[union-attr]
        dtype = dtype_for(ctx, "text_encoder")

        def load() -> dict:
            tower, augmentor = split_unclip_checkpoint(read_state_dict(path), dtype)
            return {"tower": tower, "unclip": UnCLIPModel(model.model, augmentor)}

        parts = cached_parts(ctx, path, ("tower", "unclip"), load, f"unclip:{dtype}")
        # The unCLIP model shares the checkpoint loader's UNet; rebuild the wrapper if that UNet was reloaded.
        if parts["unclip"].diffusion_model is not model.model.diffusion_model:
            parts["unclip"] = UnCLIPModel(model.model, parts["unclip"].noise_augmentor)
        unclip = model_socket(parts["unclip"], ckpt_name)
        return unclip, clip, vae, ClipVision(parts["tower"], ckpt_name)


class CLIPVisionEncode(Node):
    """Encodes an image with a CLIP vision model (centre crop, or "none": squashed to the tower's size)."""

    DISPLAY_NAME = "CLIP Vision Encode"
    CATEGORY = "conditioning"
    INPUTS = (Input("clip_vision", "CLIP_VISION"), Input("image", "IMAGE"), Combo("crop", ("center", "none")))
    OUTPUTS = (Output("CLIP_VISION_OUTPUT"),)

    def execute(self, clip_vision: ClipVision, image: torch.Tensor, crop: str = "center") -> tuple[ClipVisionOutput]:
        return (clip_vision.encode_image(image, crop=crop == "center"),)


class StyleModelLoader(Node):
    """Loads a style model (T2I-Adapter style)."""

    DISPLAY_NAME = "Load Style Model"
    CATEGORY = "loaders"
    INPUTS = (Combo("style_model_name", FileList("style_models")),)
    OUTPUTS = (Output("STYLE_MODEL"),)

    def execute(self, style_model_name: str) -> tuple[StyleModel]:
        ctx = node_context()
        path = ctx.folders.full_path("style_models", style_model_name)  # type: ignore[union-attr]
        return (load_style_model(read_state_dict(path)),)


class StyleModelApply(Node):
    """Appends the style model's tokens (from a CLIP vision output) to every conditioning entry."""

    DISPLAY_NAME = "Apply Style Model"
    CATEGORY = "conditioning/style_model"
    INPUTS = (
        Input("conditioning", "CONDITIONING"),
        Input("style_model", "STYLE_MODEL"),
        Input("clip_vision_output", "CLIP_VISION_OUTPUT"),
        Float("strength", 1.0, min=0.0, max=10.0, step=0.001),
        Combo("strength_type", ("multiply", "attn_bias")),
    )
    OUTPUTS = (Output("CONDITIONING"),)

    def execute(self, conditioning: list, style_model: StyleModel, clip_vision_output: ClipVisionOutput,
                strength: float = 1.0, strength_type: str = "multiply") -> tuple[list]:
        if strength_type != "multiply":
            raise ValueError("StyleModelApply strength_type 'attn_bias' needs attention masks, which Loom's "
                             "sampler does not support yet; use 'multiply'")
        tokens = style_model.get_cond(clip_vision_output).flatten(0, 1).unsqueeze(0) * strength
        return ([[torch.cat([t, tokens.to(t.dtype)], dim=1), dict(o)] for t, o in conditioning],)


class unCLIPConditioning(Node):  # noqa: N801 (ComfyUI's class name)
    """Adds a CLIP vision image embedding to the conditioning, for unCLIP models."""

    DISPLAY_NAME = "unCLIPConditioning"
    CATEGORY = "conditioning"
    INPUTS = (
        Input("conditioning", "CONDITIONING"),
        Input("clip_vision_output", "CLIP_VISION_OUTPUT"),
        Float("strength", 1.0, min=-10.0, max=10.0, step=0.01),
        Float("noise_augmentation", 0.0, min=0.0, max=1.0, step=0.01),
    )
    OUTPUTS = (Output("CONDITIONING"),)

    def execute(self, conditioning: list, clip_vision_output: ClipVisionOutput, strength: float = 1.0,
                noise_augmentation: float = 0.0) -> tuple[list]:
        if strength == 0:
            return (conditioning,)
        extra = {"clip_vision_output": clip_vision_output, "strength": strength,
                 "noise_augmentation": noise_augmentation}
        out = []
        for t, o in conditioning:
            entry = dict(o)
            entry["unclip_conditioning"] = list(o.get("unclip_conditioning", [])) + [extra]
            out.append([t, entry])
        return (out,)


NODES: list[type] = [CLIPVisionLoader, unCLIPCheckpointLoader, CLIPVisionEncode, StyleModelLoader, StyleModelApply, unCLIPConditioning]
