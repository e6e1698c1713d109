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
