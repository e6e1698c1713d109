"""SD3 text nodes: TripleCLIPLoader (CLIP-L, CLIP-G and T5-XXL files as one CLIP) and CLIPTextEncodeSD3 (a prompt
per tower, with `empty_padding`).

Names, inputs, categories and behaviour are ComfyUI's (`comfy_extras/nodes_sd3.py`): with `empty_padding` "none" an
empty prompt gives its tower no tokens at all (an empty CLIP pair drops the CLIP part from the context and leaves
the pooled vector zero; an empty T5 prompt encodes the end token alone); "empty_prompt" encodes the empty prompt.
CLIP-L's and CLIP-G's token lists are padded with empty-prompt chunks to the same length.
"""
from __future__ import annotations

from diffusion.files.assemble import clip_socket, load_sd3_text_encoder_module
from diffusion.text.text_encoders import CLIP
from nodes.text_encode import Conditioning, clip_on_device
from nodes.loaders import _folders, cached_one, dtype_for, embedding_directories, node_context, \
    text_encoder_directories
from nodes.spec import Combo, FileList, Input, Node, Output, String

EMPTY_PADDING = ("none", "empty_prompt")


class TripleCLIPLoader(Node):
    """Loads three text encoder files from models/text_encoders (models/clip) as one CLIP.

    [Recipes]

    sd3: clip-l, clip-g, t5 (in any order; T5's tokenizer.json goes beside it or in
    models/text_encoders/t5_tokenizer/)"""

    CATEGORY = "advanced/loaders"
    INPUTS = (
        Combo("clip_name1", FileList("text_encoders")),
        Combo("clip_name2", FileList("text_encoders")),
        Combo("clip_name3", FileList("text_encoders")),
    )
    OUTPUTS = (Output("CLIP"),)

    def execute(self, clip_name1: str, clip_name2: str, clip_name3: str) -> tuple[CLIP]:
        ctx = node_context()
        folders = _folders(ctx)
        paths = [folders.full_path("text_encoders", name) for name in (clip_name1, clip_name2, clip_name3)]
        dtype = dtype_for(ctx, "text_encoder")
        dirs = text_encoder_directories(folders)
        module = cached_one(ctx, paths[0], lambda: load_sd3_text_encoder_module(paths, dtype, dirs),
                            f"tripleclip:{paths[1]}:{paths[2]}:{dtype}", "clip")
        return (clip_socket(module, f"{clip_name1}+{clip_name2}+{clip_name3}", embedding_directories(folders)),)


def sd3_tokens(clip: CLIP, clip_l: str, clip_g: str, t5xxl: str, empty_padding: str) -> dict[str, list]:
    """The token lists CLIPTextEncodeSD3 encodes, for the towers `clip` has."""
    no_padding = empty_padding == "none"
    tokens: dict[str, list] = {}
    for key, text in (("l", clip_l), ("g", clip_g), ("t5xxl", t5xxl)):
        if key in clip.tokenizers:
            tokens[key] = [] if (no_padding and text == "") else clip.tokenizers[key].tokenize(text)
    if "l" in tokens and "g" in tokens and len(tokens["l"]) != len(tokens["g"]):
        while len(tokens["l"]) < len(tokens["g"]):
            tokens["l"].append(clip.tokenizers["l"].empty_chunk())
        while len(tokens["g"]) < len(tokens["l"]):
            tokens["g"].append(clip.tokenizers["g"].empty_chunk())
    return tokens


class CLIPTextEncodeSD3(Node):
    """Encodes a prompt for each of SD3's text encoders (CLIP-L, CLIP-G, T5-XXL)."""

    CATEGORY = "advanced/conditioning"
    INPUTS = (
        Input("clip", "CLIP"),
        String("clip_l", None, multiline=True, dynamicPrompts=True),
        String("clip_g", None, multiline=True, dynamicPrompts=True),
        String("t5xxl", None, multiline=True, dynamicPrompts=True),
        Combo("empty_padding", EMPTY_PADDING),
    )
    OUTPUTS = (Output("CONDITIONING"),)

    def execute(self, clip: CLIP | None, clip_l: str, clip_g: str, t5xxl: str,
                empty_padding: str = "none") -> tuple[Conditioning]:
        if clip is None:
            raise RuntimeError("CLIPTextEncodeSD3: clip input is invalid: None (the checkpoint has no text encoder?)")
        if clip.family != "sd3":
            raise ValueError(f"CLIPTextEncodeSD3 needs an SD3 CLIP (TripleCLIPLoader, or CLIPLoader/DualCLIPLoader "
                             f"type sd3); input 'clip' is a {clip.family} text encoder")
        tokens = sd3_tokens(clip, clip_l, clip_g, t5xxl, empty_padding)
        with clip_on_device(clip):
            cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
        return ([[cond, {"pooled_output": pooled}]],)


NODES: list[type] = [TripleCLIPLoader, CLIPTextEncodeSD3]
