"""A test pack written the way popular packs use ComfyUI's `nodes` module: core nodes called as Python objects
with ComfyUI's method names and argument order, `nodes.common_ksampler`, `NODE_CLASS_MAPPINGS`, and a subclass
of a core node."""
import nodes


class PackTextToImage:
    """Text to image through ComfyUI's core node objects."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"ckpt_name": ("STRING", {"default": ""}), "text": ("STRING", {"default": "a fox"}),
                             "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff}),
                             "use_common_ksampler": ("BOOLEAN", {"default": False})}}

    RETURN_TYPES = ("IMAGE", "LATENT")
    FUNCTION = "run"
    CATEGORY = "tests"

    def run(self, ckpt_name, text, seed, use_common_ksampler):
        model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint(ckpt_name)[:3]
        positive = nodes.CLIPTextEncode().encode(clip, text)[0]
        negative = nodes.CLIPTextEncode().encode(clip=clip, text="")[0]
        latent = nodes.EmptyLatentImage().generate(64, 64, 1)[0]
        if use_common_ksampler:
            samples = nodes.common_ksampler(model, seed, 3, 7.0, "euler", "normal", positive, negative, latent)[0]
        else:
            sampler = nodes.NODE_CLASS_MAPPINGS["KSampler"]()
            samples = getattr(sampler, sampler.FUNCTION)(model, seed, 3, 7.0, "euler", "normal", positive,
                                                         negative, latent, denoise=1.0)[0]
        image = nodes.VAEDecode().decode(vae, samples)[0]
        return (image, samples)


class InvertTwice(nodes.ImageInvert):
    """A subclass of a core node, as packs make them."""

    CATEGORY = "tests"

    def invert(self, image):
        once = super().invert(image)[0]
        return super().invert(once)


NODE_CLASS_MAPPINGS = {"PackTextToImage": PackTextToImage, "InvertTwice": InvertTwice}


import comfy.sample  # noqa: E402
import comfy.samplers  # noqa: E402
import latent_preview  # noqa: E402
from comfy.cli_args import LatentPreviewMethod, args  # noqa: E402
from comfy.k_diffusion import sampling as k_sampling  # noqa: E402


class PackSampleLikeComfy:
    """Sampling the way sampler packs do it: comfy.sample.sample with latent_preview's callback."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "positive": ("CONDITIONING",), "negative": ("CONDITIONING",),
                             "latent_image": ("LATENT",), "seed": ("INT", {"default": 0, "min": 0}),
                             "custom": ("BOOLEAN", {"default": False})}}

    RETURN_TYPES = ("LATENT", "STRING")
    FUNCTION = "run"
    CATEGORY = "tests"

    def run(self, model, positive, negative, latent_image, seed, custom):
        latent = comfy.sample.fix_empty_latent_channels(model, latent_image["samples"])
        noise = comfy.sample.prepare_noise(latent, seed, latent_image.get("batch_index"))
        callback = latent_preview.prepare_callback(model, 3)
        if custom:
            sigmas = k_sampling.get_sigmas_karras(3, 0.0292, 14.6146)
            sampler = comfy.samplers.sampler_object("euler") if hasattr(comfy.samplers, "sampler_object") else None
            out = comfy.sample.sample_custom(model, noise, 7.0, sampler, sigmas, positive, negative, latent,
                                             callback=callback, seed=seed)
        else:
            out = comfy.sample.sample(model, noise, 3, 7.0, "euler", "normal", positive, negative, latent,
                                      callback=callback, seed=seed)
        facts = f"{args.port}|{args.disable_metadata}|{isinstance(args.preview_method, LatentPreviewMethod)}|" \
                f"{hasattr(k_sampling, 'sample_dpmpp_2m')}"
        return ({**latent_image, "samples": out}, facts)


NODE_CLASS_MAPPINGS["PackSampleLikeComfy"] = PackSampleLikeComfy
