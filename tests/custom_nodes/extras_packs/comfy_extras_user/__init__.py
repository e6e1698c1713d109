"""A test pack importing node classes and helpers from ComfyUI's comfy_extras modules, as upscaling and sampler
packs do, and calling them as objects with ComfyUI's method names."""
import comfy.utils
import folder_paths
from comfy_extras.chainner_models.model_loading import load_state_dict
from comfy_extras.nodes_custom_sampler import (BasicScheduler, Guider_Basic, Guider_DualCFG, KSamplerSelect,
                                               Noise_RandomNoise, SamplerCustomAdvanced)
from comfy_extras.nodes_upscale_model import ImageUpscaleWithModel, UpscaleModelLoader


class PackUpscaleTwice:
    """Upscale with the model loaded both ways: UpscaleModelLoader().load_model and load_state_dict."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "model_name": (folder_paths.get_filename_list("upscale_models"),),
                             "via_state_dict": ("BOOLEAN", {"default": False})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"
    CATEGORY = "tests"

    def run(self, image, model_name, via_state_dict):
        if via_state_dict:
            path = folder_paths.get_full_path_or_raise("upscale_models", model_name)
            model = load_state_dict(comfy.utils.load_torch_file(path, safe_load=True))
        else:
            model = UpscaleModelLoader().load_model(model_name)[0]
        return ImageUpscaleWithModel().upscale(model, image)


class PackBasicGuidedSample:
    """SamplerCustomAdvanced called as an object with Noise_RandomNoise and Guider_Basic."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "conditioning": ("CONDITIONING",), "latent_image": ("LATENT",),
                             "seed": ("INT", {"default": 0, "min": 0})}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "run"
    CATEGORY = "tests"

    def run(self, model, conditioning, latent_image, seed):
        guider = Guider_Basic(model)
        guider.set_conds(conditioning)
        sigmas = BasicScheduler().get_sigmas(model, "normal", 3, 1.0)[0]
        sampler = KSamplerSelect().get_sampler("euler")[0]
        out, _denoised = SamplerCustomAdvanced().sample(Noise_RandomNoise(seed), guider, sampler, sigmas, latent_image)
        return (out,)


class PackDualGuider:
    """Guider_DualCFG from comfy_extras, as a GUIDER for SamplerCustomAdvanced."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "cond1": ("CONDITIONING",), "cond2": ("CONDITIONING",),
                             "negative": ("CONDITIONING",), "cfg_conds": ("FLOAT", {"default": 8.0}),
                             "cfg_cond2_negative": ("FLOAT", {"default": 8.0})}}

    RETURN_TYPES = ("GUIDER",)
    FUNCTION = "get_guider"
    CATEGORY = "tests"

    def get_guider(self, model, cond1, cond2, negative, cfg_conds, cfg_cond2_negative):
        guider = Guider_DualCFG(model)
        guider.set_conds(cond1, cond2, negative)
        guider.set_cfg(cfg_conds, cfg_cond2_negative)
        return (guider,)


NODE_CLASS_MAPPINGS = {"PackDualGuider": PackDualGuider, "PackUpscaleTwice": PackUpscaleTwice,
                       "PackBasicGuidedSample": PackBasicGuidedSample}
