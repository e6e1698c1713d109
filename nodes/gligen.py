"""GLIGEN nodes: GLIGENLoader and GLIGENTextBoxApply (ComfyUI's class names, inputs, defaults, ranges, outputs and
categories, `nodes.py`).

The loader reads a GLIGEN file from models/gligen in the manager's UNet precision and returns a `ModelHandle` on the
`diffusion.adapters.gligen.Gligen` network (the sampler has the memory manager place it, see `nodes/sampling.cond_models`).
The apply node encodes a phrase, and appends `(pooled, height//8, width//8, y//8, x//8)` (the box in latent pixels)
to each entry's `gligen: ("position", model, boxes)`; the sampler turns it into the UNet's middle patch.
"""
from __future__ import annotations

from diffusion.files.checkpoint import read_state_dict
from diffusion.adapters.gligen import Gligen, load_gligen
from diffusion.patcher import ModelHandle
from nodes.text_encode import clip_on_device
from nodes.loaders import cached_one, dtype_for, node_context
from nodes.spec import Combo, FileList, Input, Int, Node, Output, String

GLIGEN = "GLIGEN"
MAX_RESOLUTION = 16384


class GLIGENLoader(Node):
    """Loads a GLIGEN box-grounding model (e.g. gligen_sd14_textbox_pruned.safetensors)."""

    CATEGORY = "loaders"
    INPUTS = (Combo("gligen_name", FileList("gligen")),)
    OUTPUTS = (Output(GLIGEN),)

    def execute(self, gligen_name: str) -> tuple[ModelHandle]:
        ctx = node_context()
        if ctx.folders is None:
            raise RuntimeError("GLIGENLoader needs the folders of a Loom instance")
        path = ctx.folders.full_path("gligen", gligen_name)
        dtype = dtype_for(ctx, "unet")

        def load() -> ModelHandle:
            net: Gligen = load_gligen(read_state_dict(path)).to(dtype)
            return ModelHandle(net, name=gligen_name, kind="other")

        return (cached_one(ctx, path, load, f"gligen:{dtype}", "gligen"),)


class GLIGENTextBoxApply(Node):
    """Places a phrase in a box (pixels, multiples of 8) on top of the conditioning, through a GLIGEN model."""

    CATEGORY = "conditioning/gligen"
    INPUTS = (
        Input("conditioning_to", "CONDITIONING"),
        Input("clip", "CLIP"),
        Input("gligen_textbox_model", GLIGEN),
        String("text", None, multiline=True, dynamicPrompts=True),
        Int("width", 64, min=8, max=MAX_RESOLUTION, step=8),
        Int("height", 64, min=8, max=MAX_RESOLUTION, step=8),
        Int("x", 0, min=0, max=MAX_RESOLUTION, step=8),
        Int("y", 0, min=0, max=MAX_RESOLUTION, step=8),
    )
    OUTPUTS = (Output("CONDITIONING"),)

    def execute(self, conditioning_to: list, clip, gligen_textbox_model: ModelHandle, text: str, width: int,
                height: int, x: int, y: int) -> tuple[list]:
        # SD1's pooled output is the unprojected one ComfyUI asks for here (return_pooled="unprojected").
        tokens = clip.tokenize(text)
        with clip_on_device(clip):
            _, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
        box = (pooled, height // 8, width // 8, y // 8, x // 8)
        out = []
        for tensor, options in conditioning_to:
            options = dict(options)
            previous = list(options["gligen"][2]) if "gligen" in options else []
            options["gligen"] = ("position", gligen_textbox_model, previous + [box])
            out.append([tensor, options])
        return (out,)


NODES: list[type] = [GLIGENLoader, GLIGENTextBoxApply]
