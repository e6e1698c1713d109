"""A test pack written the way sampler packs use ComfyUI's sampling internals: a `comfy.samplers.CFGGuider`
subclass overriding `predict_noise` (plain CFG from `calc_cond_batch`), `comfy.samplers.KSampler(...).sample(...)`,
`comfy.sampler_helpers` and `comfy.patcher_extension` wrappers on a model clone."""
import torch

import comfy.model_management
import comfy.patcher_extension
import comfy.sample
import comfy.sampler_helpers
import comfy.samplers

from comfy.k_diffusion import sampling as k_sampling

CALLS = {"outer_sample": 0, "predict_noise": 0, "sampler_sample": 0, "pack_sampler": 0, "patched_batch": 0}
_original_calc_cond_batch = comfy.samplers.calc_cond_batch


def _counting_calc_cond_batch(model, conds, x_in, timestep, model_options):
    """A monkeypatch of comfy.samplers.calc_cond_batch, as regional-prompting packs install them."""
    CALLS["patched_batch"] += 1
    return _original_calc_cond_batch(model, conds, x_in, timestep, model_options)


comfy.samplers.calc_cond_batch = _counting_calc_cond_batch


class PlainCFGGuider(comfy.samplers.CFGGuider):
    """CFG written out by hand, as guidance packs do in predict_noise."""

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        positive, negative = self.conds.get("positive"), self.conds.get("negative")
        cond, uncond = _original_calc_cond_batch(self.inner_model, [positive, negative], x, timestep, model_options)
        return uncond + (cond - uncond) * self.cfg


class PackPlainCFGGuider:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "positive": ("CONDITIONING",), "negative": ("CONDITIONING",),
                             "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0}),
                             "wrapped": ("BOOLEAN", {"default": False})}}

    RETURN_TYPES = ("GUIDER",)
    FUNCTION = "get_guider"
    CATEGORY = "tests"

    def get_guider(self, model, positive, negative, cfg, wrapped):
        if wrapped:
            model = model.clone()
            comfy.patcher_extension.add_wrapper(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, _outer_wrapper,
                                                model.model_options if hasattr(model, "model_options")
                                                else model.options, is_model_options=True)
            comfy.patcher_extension.add_wrapper(comfy.patcher_extension.WrappersMP.SAMPLER_SAMPLE, _sampler_wrapper,
                                                model.model_options if hasattr(model, "model_options")
                                                else model.options, is_model_options=True)
            comfy.patcher_extension.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREDICT_NOISE, "pack",
                                                         _predict_wrapper,
                                                         model.model_options if hasattr(model, "model_options")
                                                         else model.options, is_model_options=True)
        guider = PlainCFGGuider(model)
        guider.set_conds(positive, negative)
        guider.set_cfg(cfg)
        return (guider,)


def _outer_wrapper(executor, *args, **kwargs):
    CALLS["outer_sample"] += 1
    assert isinstance(executor.class_obj, comfy.samplers.CFGGuider)
    return executor(*args, **kwargs)


def _sampler_wrapper(executor, guider, sigmas, extra_args, callback, noise, *args, **kwargs):
    CALLS["sampler_sample"] += 1
    assert hasattr(executor.class_obj, "sample") or callable(getattr(executor.class_obj, "function", None))
    return executor(guider, sigmas, extra_args, callback, noise, *args, **kwargs)


class PackEulerSampler(comfy.samplers.Sampler):
    """A sampler written against ComfyUI's Sampler protocol, delegating to KSAMPLER."""

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        CALLS["pack_sampler"] += 1
        assert hasattr(model_wrap, "inner_model") and self.max_denoise(model_wrap, sigmas)
        inner = comfy.samplers.KSAMPLER(k_sampling.sample_euler)
        return inner.sample(model_wrap, sigmas, extra_args, callback, noise, latent_image, denoise_mask,
                            disable_pbar)


class PackSamplerSelect:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ("SAMPLER",)
    FUNCTION = "get_sampler"
    CATEGORY = "tests"

    def get_sampler(self):
        return (PackEulerSampler(),)


def _predict_wrapper(executor, x, timestep, model_options, seed):
    CALLS["predict_noise"] += 1
    return executor(x, timestep, model_options, seed)


class PackKSamplerObject:
    """comfy.samplers.KSampler used as an object, with comfy.sample.prepare_noise."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "positive": ("CONDITIONING",), "negative": ("CONDITIONING",),
                             "latent_image": ("LATENT",), "seed": ("INT", {"default": 0, "min": 0}),
                             "steps": ("INT", {"default": 3, "min": 1}), "cfg": ("FLOAT", {"default": 7.0}),
                             "sampler_name": (comfy.samplers.KSampler.SAMPLERS,),
                             "scheduler": (comfy.samplers.KSampler.SCHEDULERS,)}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "sample"
    CATEGORY = "tests"

    def sample(self, model, positive, negative, latent_image, seed, steps, cfg, sampler_name, scheduler):
        latent = comfy.sample.fix_empty_latent_channels(model, latent_image["samples"])
        noise = comfy.sample.prepare_noise(latent, seed)
        device = comfy.model_management.get_torch_device()
        sampler = comfy.samplers.KSampler(model, steps=steps, device=device, sampler=sampler_name,
                                          scheduler=scheduler, denoise=1.0, model_options=model.model_options
                                          if hasattr(model, "model_options") else model.options)
        samples = sampler.sample(noise, positive, negative, cfg=cfg, latent_image=latent, seed=seed)
        return ({"samples": samples.to(comfy.model_management.intermediate_device())},)


class PackPlacementProbe:
    """comfy.sampler_helpers: convert_cond, get_additional_models, prepare_sampling / cleanup_models."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "positive": ("CONDITIONING",)}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "probe"
    CATEGORY = "tests"
    OUTPUT_NODE = True

    def probe(self, model, positive):
        conds = {"positive": comfy.sampler_helpers.convert_cond(positive)}
        extra, memory = comfy.sampler_helpers.get_additional_models(conds, torch.float32)
        real_model, conds, loaded = comfy.sampler_helpers.prepare_sampling(model, (1, 4, 8, 8), conds)
        try:
            placed = hasattr(real_model, "apply_model") and len(loaded) == 1 + len(extra)
        finally:
            comfy.sampler_helpers.cleanup_models(conds, loaded)
        text = f"placed={placed} extra={len(extra)} memory={memory} model_conds={'model_conds' in conds['positive'][0]}"
        return {"ui": {"text": [text]}, "result": (text,)}


NODE_CLASS_MAPPINGS = {"PackPlainCFGGuider": PackPlainCFGGuider, "PackSamplerSelect": PackSamplerSelect,
                       "PackKSamplerObject": PackKSamplerObject,
                       "PackPlacementProbe": PackPlacementProbe}
