"""ComfyUI-style node classes, written as they are for ComfyUI."""
import os

import comfy.model_management
import comfy.samplers
import comfy.utils
import folder_paths
import node_helpers
import server
import torch

CALLS = {"is_changed": 0}


class ClassicScale:
    @classmethod
    def INPUT_TYPES(s):
        return {"required": {"image": ("IMAGE",),
                             "width": ("INT", {"default": 8, "min": 1, "max": 4096}),
                             "height": ("INT", {"default": 8, "min": 1, "max": 4096}),
                             "method": (["nearest-exact", "bilinear", "area", "bicubic", "lanczos"],)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "scale"
    CATEGORY = "tests/classic"

    def scale(self, image, width, height, method):
        bar = comfy.utils.ProgressBar(2)
        comfy.model_management.throw_exception_if_processing_interrupted()
        bar.update(1)
        samples = image.movedim(-1, 1)
        out = comfy.utils.common_upscale(samples, width, height, method, "center").movedim(1, -1)
        bar.update(1)
        return (out.to(comfy.model_management.intermediate_device()),)


class ClassicModels:
    @classmethod
    def INPUT_TYPES(s):
        return {"required": {"ckpt_name": (folder_paths.get_filename_list("checkpoints"),)}}

    RETURN_TYPES = ("STRING", "STRING")
    RETURN_NAMES = ("path", "input_dir")
    FUNCTION = "where"
    CATEGORY = "tests/classic"

    def where(self, ckpt_name):
        return (folder_paths.get_full_path_or_raise("checkpoints", ckpt_name), folder_paths.get_input_directory())


class ClassicNotify:
    @classmethod
    def INPUT_TYPES(s):
        return {"required": {"text": ("STRING", {"default": "hi", "multiline": True})},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ()
    FUNCTION = "notify"
    OUTPUT_NODE = True
    CATEGORY = "tests/classic"

    @classmethod
    def IS_CHANGED(s, text):
        CALLS["is_changed"] += 1
        return text

    def notify(self, text, unique_id=None):
        instance = server.PromptServer.instance
        instance.send_sync("classic_pack.note", {"text": text, "node": unique_id}, instance.client_id)
        return {"ui": {"text": [text]}}


class ClassicSplit:
    @classmethod
    def INPUT_TYPES(s):
        return {"required": {"text": ("STRING", {"default": "a,b,c"})}}

    RETURN_TYPES = ("STRING",)
    OUTPUT_IS_LIST = (True,)
    FUNCTION = "split"
    CATEGORY = "tests/classic"

    def split(self, text):
        return (text.split(","),)


class ClassicJoin:
    @classmethod
    def INPUT_TYPES(s):
        return {"required": {"parts": ("STRING", {"forceInput": True}),
                             "sampler": (comfy.samplers.KSampler.SAMPLERS,),
                             "scheduler": (comfy.samplers.KSampler.SCHEDULERS,)}}

    INPUT_IS_LIST = True
    RETURN_TYPES = ("STRING",)
    FUNCTION = "join"
    CATEGORY = "tests/classic"

    def join(self, parts, sampler, scheduler):
        return ("|".join(parts) + f"@{sampler[0]}/{scheduler[0]}",)


class ClassicOpenImage:
    @classmethod
    def INPUT_TYPES(s):
        return {"required": {"image": ("STRING", {"default": "x.png"})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "open"
    CATEGORY = "tests/classic"

    def open(self, image):
        from PIL import Image
        path = folder_paths.get_annotated_filepath(image)
        picture = node_helpers.pillow(Image.open, path)
        return (picture.size[0] * picture.size[1] + (0 if os.path.isfile(path) else -1),)


NODE_CLASS_MAPPINGS = {"ClassicScale": ClassicScale, "ClassicModels": ClassicModels, "ClassicNotify": ClassicNotify,
                       "ClassicSplit": ClassicSplit, "ClassicJoin": ClassicJoin, "ClassicOpenImage": ClassicOpenImage}
NODE_DISPLAY_NAME_MAPPINGS = {"ClassicScale": "Classic Scale", "ClassicNotify": "Classic Notify"}
