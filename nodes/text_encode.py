"""Conditioning nodes: CLIPTextEncode and CLIPSetLastLayer (more conditioning nodes join this module later).

Names, inputs, outputs and categories are ComfyUI's (`nodes.py`). CONDITIONING values are lists of
`[tensor B×T×C, dict]`; the dict carries `pooled_output`. Encoding loads the text tower through the memory
manager (`ctx.models.use([clip.handle])`); the CLIP value itself is never modified (CLIPSetLastLayer clones it).
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

from diffusion.text.text_encoders import CLIP
from nodes.context import NodeContext, current_or_none
from nodes.spec import Input, Int, Node, Output, String

Conditioning = list[list[Any]]


@contextlib.contextmanager
def clip_on_device(clip: CLIP, ctx: NodeContext | None = None) -> Iterator[None]:
    """Have the memory manager place the CLIP's text tower (with its patches) for the block."""
    ctx = ctx if ctx is not None else current_or_none()
    handle = getattr(clip, "handle", None)
    if ctx is None or ctx.models is None or handle is None:
        yield
        return
    with ctx.models.use([handle]):
        yield


def encode_text(clip: CLIP, text: str) -> Conditioning:
    """A prompt as CONDITIONING: `[[cond 1×(77·k)×C, {"pooled_output": 1×C}]]`."""
    if getattr(clip, "scheduled_clip_hooks", None) is not None:  # SetClipHooks with schedule_clip
        from nodes.hooks import encode_scheduled
        return encode_scheduled(clip, text, encode_text)
    tokens = clip.tokenize(text)
    with clip_on_device(clip):
        output = clip.encode_from_tokens(tokens, return_pooled=True, return_dict=True)
    cond = output.pop("cond")
    hooks = getattr(clip, "apply_hooks_to_conds", None)  # SetClipHooks with apply_to_conds
    if hooks is not None:
        output["hooks"] = hooks
    return [[cond, output]]


class CLIPTextEncode(Node):
    __doc__ = ("Encodes a text prompt using a CLIP model into an embedding that can be used to guide the diffusion "
               "model towards generating specific images.")  # ComfyUI's description, kept on one line

    DISPLAY_NAME = "CLIP Text Encode (Prompt)"
    CATEGORY = "conditioning"
    INPUTS = (
        String("text", None, multiline=True, dynamicPrompts=True, tooltip="The text to be encoded."),
        Input("clip", "CLIP", tooltip="The CLIP model used for encoding the text."),
    )
    OUTPUTS = (Output("CONDITIONING",
                      tooltip="A conditioning containing the embedded text used to guide the diffusion model."),)

    def execute(self, text: str, clip: CLIP | None) -> tuple[Conditioning]:
        if clip is None:
            raise RuntimeError("ERROR: clip input is invalid: None\n\nIf the clip is from a checkpoint loader node "
                               "your checkpoint does not contain a valid clip or text encoder model.")
        return (encode_text(clip, text),)


class CLIPSetLastLayer(Node):
    """Uses the hidden states of an earlier CLIP layer (-1 the last, -2 the penultimate: "CLIP skip")."""

    DISPLAY_NAME = "CLIP Set Last Layer"
    CATEGORY = "conditioning"
    INPUTS = (
        Input("clip", "CLIP"),
        Int("stop_at_clip_layer", -1, min=-24, max=-1, step=1),
    )
    OUTPUTS = (Output("CLIP"),)

    def execute(self, clip: CLIP, stop_at_clip_layer: int = -1) -> tuple[CLIP]:
        clip = clip.clone()
        clip.clip_layer(stop_at_clip_layer)
        return (clip,)


NODES: list[type] = [CLIPTextEncode, CLIPSetLastLayer]
