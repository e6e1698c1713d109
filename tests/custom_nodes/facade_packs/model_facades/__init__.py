"""A test pack written the way popular packs use ComfyUI's model-side modules: `model.clone()` and every
`set_model_*` patch of `comfy.model_patcher.ModelPatcher`, `comfy.sd` loaders with CLIP/VAE methods,
`comfy.sd.load_lora_for_models`, `comfy.lora`, `comfy.ops`, `comfy.model_management`, `comfy.latent_formats`,
`comfy.model_base` and `optimized_attention`."""
import comfy.latent_formats
import comfy.lora
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.ops
import comfy.patcher_extension
import comfy.sample
import comfy.sd
import comfy.utils
import folder_paths
import torch
from comfy.ldm.modules.attention import optimized_attention

CALLS = {}  # patch kind -> number of calls (read by the tests)
KINDS = ("attn1_patch", "attn2_patch", "attn1_replace", "attn2_replace", "attn1_output_patch", "attn2_output_patch",
         "input_block_patch", "input_block_patch_after_skip", "middle_block_patch", "output_block_patch",
         "emb_patch", "sampler_cfg_function", "sampler_post_cfg_function", "sampler_pre_cfg_function",
         "model_function_wrapper", "apply_model_wrapper", "diffusion_model_wrapper", "attn2_patch_to",
         "calc_cond_batch_wrapper")


class _DevicePatch:
    """An attn2 patch holding a tensor, moved by the model manager through `.to` (IPAdapter's pattern)."""

    def __init__(self):
        self.scale = torch.ones(1)
        self.moved_to = None

    def to(self, device):
        self.moved_to = str(device)
        self.scale = self.scale.to(device)
        return self

    def __call__(self, n, context, value, extra_options):
        _note("attn2_patch_to")
        assert self.scale.device == n.device
        return n * self.scale.to(n.dtype), context, value


DEVICE_PATCH = _DevicePatch()


def _note(kind):
    CALLS[kind] = CALLS.get(kind, 0) + 1


def _attn_patch(kind):
    def patch(n, context, value, extra_options):
        _note(kind)
        return n, context, value
    return patch


def _replace(kind):
    def patch(q, k, v, extra_options):
        _note(kind)
        return optimized_attention(q, k, v, extra_options["n_heads"])
    return patch


def _out_patch(kind):
    def patch(out, extra_options):
        _note(kind)
        return out
    return patch


def _block_patch(kind):
    def patch(h, transformer_options):
        _note(kind)
        return h
    return patch


def _output_block(h, hsp, transformer_options):
    _note("output_block_patch")
    return h, hsp


def _emb(emb, model_channels, transformer_options):
    _note("emb_patch")
    return emb


def _cfg(args):
    _note("sampler_cfg_function")
    return args["uncond"] + (args["cond"] - args["uncond"]) * args["cond_scale"]


def _post_cfg(args):
    _note("sampler_post_cfg_function")
    return args["denoised"]


def _pre_cfg(args):
    _note("sampler_pre_cfg_function")
    return args["conds_out"]


def _wrapper(apply_model, args):
    _note("model_function_wrapper")
    return apply_model(args["input"], args["timestep"], **args["c"])


def _apply_model_wrapper(executor, x, t, c_concat, c_crossattn, control, transformer_options, **kwargs):
    _note("apply_model_wrapper")
    assert executor.class_obj is not None
    return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)


def _diffusion_model_wrapper(executor, x, timesteps, context, y, control, transformer_options, **kwargs):
    _note("diffusion_model_wrapper")
    return executor(x, timesteps, context, y, control, transformer_options, **kwargs)


def _calc_cond_batch_wrapper(executor, model, conds, x_in, timestep, model_options):
    _note("calc_cond_batch_wrapper")
    return executor(model, conds, x_in, timestep, model_options)


def patch_everything(model):
    """A clone with an identity patch of every kind (each counts its calls)."""
    m = model.clone()
    m.set_model_attn1_patch(_attn_patch("attn1_patch"))
    m.set_model_attn2_patch(_attn_patch("attn2_patch"))
    m.set_model_attn2_patch(DEVICE_PATCH)
    m.set_model_attn1_replace(_replace("attn1_replace"), "input", 1)
    m.set_model_attn2_replace(_replace("attn2_replace"), "output", 3, 0)
    m.set_model_attn1_output_patch(_out_patch("attn1_output_patch"))
    m.set_model_attn2_output_patch(_out_patch("attn2_output_patch"))
    m.set_model_input_block_patch(_block_patch("input_block_patch"))
    m.set_model_input_block_patch_after_skip(_block_patch("input_block_patch_after_skip"))
    m.set_model_patch(_block_patch("middle_block_patch"), "middle_block_patch")
    m.set_model_output_block_patch(_output_block)
    m.set_model_emb_patch(_emb)
    m.set_model_sampler_cfg_function(_cfg)
    m.set_model_sampler_post_cfg_function(_post_cfg)
    m.set_model_sampler_pre_cfg_function(_pre_cfg)
    m.set_model_unet_function_wrapper(_wrapper)
    m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "tests", _apply_model_wrapper)
    m.add_wrapper(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, _diffusion_model_wrapper)
    m.add_wrapper(comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, _calc_cond_batch_wrapper)
    return m


class FacadePatchEverything:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",)}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = "tests"

    def patch(self, model):
        assert isinstance(model, comfy.model_patcher.ModelPatcher)
        m = patch_everything(model)
        assert "attn1_patch" not in model.model_options["transformer_options"].get("patches", {})
        return (m,)


class FacadeCondOnlyCFG:
    """A cfg function of the old 3-argument form that returns the cond prediction only (the same as cfg 1)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",)}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = "tests"

    def patch(self, model):
        m = model.clone()
        m.set_model_sampler_cfg_function(lambda cond, uncond, cond_scale: cond)
        return (m,)


class FacadeScaleMiddle:
    """A middle-block patch with an effect (the image must change)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",)}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = "tests"

    def patch(self, model):
        m = model.clone()
        m.set_model_patch(lambda h, options: h * 3.0, "middle_block_patch")
        return (m,)


def _encode(clip, text):
    tokens = clip.tokenize(text)
    cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
    return [[cond, {"pooled_output": pooled}]]


class FacadeTextToImage:
    """comfy.sd loaders, CLIP/VAE methods, comfy.sample.sample, optionally a LoRA through load_lora_for_models
    (or comfy.lora.load_lora + add_patches)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"ckpt_name": ("STRING", {"default": ""}), "text": ("STRING", {"default": "a fox"}),
                             "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff}),
                             "lora_name": ("STRING", {"default": ""}),
                             "lora_path": (["load_lora_for_models", "comfy.lora", "parts"],)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"
    CATEGORY = "tests"

    def run(self, ckpt_name, text, seed, lora_name, lora_path):
        path = folder_paths.get_full_path("checkpoints", ckpt_name)
        if lora_path == "parts":  # the loaders of single parts, on the checkpoint file itself
            model = comfy.sd.load_diffusion_model(path)
            clip = comfy.sd.load_clip([path], clip_type=comfy.sd.CLIPType.STABLE_DIFFUSION)
            vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(path))
        else:
            model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(path, output_vae=True, output_clip=True)
        assert isinstance(clip, comfy.sd.CLIP) and isinstance(vae, comfy.sd.VAE)
        assert isinstance(model.model, comfy.model_base.BaseModel)
        assert isinstance(model.model, comfy.model_base.SD15) and not isinstance(model.model, comfy.model_base.SDXL)
        assert model.model.model_type == comfy.model_base.ModelType.EPS
        assert isinstance(model.model.latent_format, comfy.latent_formats.SD15)
        assert vae.spacial_compression_decode() == 8
        if lora_name:
            lora = comfy.utils.load_torch_file(folder_paths.get_full_path("loras", lora_name), safe_load=True)
            if lora_path == "load_lora_for_models":
                model, clip = comfy.sd.load_lora_for_models(model, clip, lora, 0.8, 0.6)
            else:
                keys = comfy.lora.model_lora_keys_unet(model.model, {})
                keys = comfy.lora.model_lora_keys_clip(clip.cond_stage_model, keys)
                patches = comfy.lora.load_lora(lora, keys)
                model, clip = model.clone(), clip.clone()
                clip.handle = clip.handle.clone()
                model.add_patches(patches, 0.8)
                clip.add_patches(patches, 0.6)
        positive, negative = _encode(clip, text), _encode(clip, "")
        latent = torch.zeros(1, 4, 8, 8)
        noise = comfy.sample.prepare_noise(latent, seed)
        samples = comfy.sample.sample(model, noise, 3, 7.0, "euler", "normal", positive, negative, latent,
                                      denoise=1.0, seed=seed)
        return (vae.decode(samples),)


class FacadeOpsProbe:
    """comfy.ops layers and comfy.model_management helpers on the running node's manager."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",)}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "probe"
    CATEGORY = "tests"
    OUTPUT_NODE = True

    def probe(self, model):
        layer = comfy.ops.manual_cast.Linear(4, 3, dtype=torch.float16)
        layer.weight.data.copy_(torch.arange(12, dtype=torch.float16).reshape(3, 4) / 10)
        layer.bias.data.zero_()
        out = layer(torch.ones(2, 4))
        comfy.model_management.load_models_gpu([model])
        own = comfy.model_patcher.ModelPatcher(torch.nn.Linear(2, 2), model.load_device, model.offload_device)
        twin = own.clone()
        twin.set_model_sampler_cfg_function(_cfg, disable_cfg1_optimization=True)
        assert type(twin) is type(own) and isinstance(model, comfy.model_patcher.ModelPatcher)
        assert twin.model_options["disable_cfg1_optimization"] is True and "sampler_cfg_function" not in (
            own.model_options)
        comfy.model_management.load_models_gpu([twin], memory_required=1024)
        facts = [str(out.dtype), str(round(float(out[0, 0].detach()), 3)), str(comfy.model_management.unet_dtype()),
                 str(comfy.model_management.should_use_fp16()), str(model.load_device), str(model.model_dtype()),
                 str(comfy.model_management.get_free_memory() > 0), str(model.size > 0)]
        return {"ui": {"facts": facts}, "result": (" ".join(facts),)}


NODE_CLASS_MAPPINGS = {"FacadePatchEverything": FacadePatchEverything, "FacadeCondOnlyCFG": FacadeCondOnlyCFG,
                       "FacadeScaleMiddle": FacadeScaleMiddle, "FacadeTextToImage": FacadeTextToImage,
                       "FacadeOpsProbe": FacadeOpsProbe}
