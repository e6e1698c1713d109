"""A test pack using ComfyUI's comfy.controlnet, comfy.clip_vision, comfy.sdxl_clip and comfy.model_detection the
way ControlNet, IP-Adapter and prompt packs do."""
import comfy.clip_vision
import comfy.cldm.cldm
import comfy.controlnet
import comfy.model_detection
import comfy.sdxl_clip
import comfy.utils
import folder_paths


class FacadeControlNetApply:
    """ComfyUI's ControlNetApply written against comfy.controlnet (a pack's own loader + apply)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning": ("CONDITIONING",), "image": ("IMAGE",),
                             "control_net_name": ("STRING", {"default": ""}),
                             "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0})}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "apply"
    CATEGORY = "tests"

    def apply(self, conditioning, image, control_net_name, strength):
        control_net = comfy.controlnet.load_controlnet(folder_paths.get_full_path("controlnet", control_net_name))
        assert isinstance(control_net.handle.model, comfy.cldm.cldm.ControlNet)
        hint = image.movedim(-1, 1)
        out = []
        for t, d in conditioning:
            n = [t, d.copy()]
            c_net = control_net.copy().set_cond_hint(hint, strength, timestep_percent_range=(0.0, 1.0))
            if "control" in d:
                c_net.set_previous_controlnet(d["control"])
            n[1]["control"] = c_net
            n[1]["control_apply_to_uncond"] = True
            out.append(n)
        return (out,)


class FacadeClipVisionEncode:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"clip_name": ("STRING", {"default": ""}), "image": ("IMAGE",)}}

    RETURN_TYPES = ("CLIP_VISION_OUTPUT",)
    FUNCTION = "encode"
    CATEGORY = "tests"

    def encode(self, clip_name, image):
        clip_vision = comfy.clip_vision.load(folder_paths.get_full_path("clip_vision", clip_name))
        assert isinstance(clip_vision, comfy.clip_vision.ClipVisionModel)
        return (clip_vision.encode_image(image, crop=True),)


class FacadeCompareVision:
    """Reports whether two CLIP vision outputs hold the same tensors."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("CLIP_VISION_OUTPUT",), "b": ("CLIP_VISION_OUTPUT",)}}

    RETURN_TYPES = ()
    FUNCTION = "compare"
    CATEGORY = "tests"
    OUTPUT_NODE = True

    def compare(self, a, b):
        names = ("image_embeds", "last_hidden_state", "penultimate_hidden_states")
        return {"ui": {"equal": [bool((a[n] == b[n]).all()) for n in names],
                       "shape": [list(a["image_embeds"].shape)]}}


class FacadeInspect:
    """What prompt packs ask of a CLIP and a checkpoint file."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"clip": ("CLIP",), "ckpt_name": ("STRING", {"default": ""})}}

    RETURN_TYPES = ()
    FUNCTION = "inspect"
    CATEGORY = "tests"
    OUTPUT_NODE = True

    def inspect(self, clip, ckpt_name):
        model = clip.cond_stage_model
        sd = comfy.utils.load_torch_file(folder_paths.get_full_path("checkpoints", ckpt_name))
        prefix = comfy.model_detection.unet_prefix_from_state_dict(sd)
        config = comfy.model_detection.model_config_from_unet(sd, prefix)
        facts = {"sdxl": isinstance(model, comfy.sdxl_clip.SDXLClipModel),
                 "refiner": isinstance(model, comfy.sdxl_clip.SDXLRefinerClipModel),
                 "tokens": sorted(clip.tokenize("a fox")), "prefix": prefix, "family": config.family,
                 "context_dim": config.unet_config["context_dim"],
                 "latent_format": type(config.latent_format).__name__}
        return {"ui": {"facts": [facts]}}


NODE_CLASS_MAPPINGS = {"FacadeControlNetApply": FacadeControlNetApply,
                       "FacadeClipVisionEncode": FacadeClipVisionEncode, "FacadeInspect": FacadeInspect,
                       "FacadeCompareVision": FacadeCompareVision}
