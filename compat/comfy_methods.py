"""The method name (`FUNCTION`) and positional parameter order of ComfyUI's core node classes.

Packs call core nodes as plain Python objects with ComfyUI's method names and argument order, which is not always
the order of the inputs (`CLIPTextEncode.encode(clip, text)`, `VAEDecode.decode(vae, samples)`). These are facts
about ComfyUI's API (0.3.x), used by `compat/nodes_module.py`; a node missing here is called by its declared
input order with Loom's method name `execute`.
"""
from __future__ import annotations

COMFY_METHODS: dict[str, tuple[str, tuple[str, ...]]] = {
    # conditioning
    "CLIPTextEncode": ("encode", ("clip", "text")),
    "CLIPSetLastLayer": ("set_last_layer", ("clip", "stop_at_clip_layer")),
    "CLIPTextEncodeSD3": ("encode", ("clip", "clip_l", "clip_g", "t5xxl", "empty_padding")),
    "ConditioningCombine": ("combine", ("conditioning_1", "conditioning_2")),
    "ConditioningAverage": ("addWeighted", ("conditioning_to", "conditioning_from", "conditioning_to_strength")),
    "ConditioningConcat": ("concat", ("conditioning_to", "conditioning_from")),
    "ConditioningSetArea": ("append", ("conditioning", "width", "height", "x", "y", "strength")),
    "ConditioningSetAreaPercentage": ("append", ("conditioning", "width", "height", "x", "y", "strength")),
    "ConditioningSetAreaStrength": ("append", ("conditioning", "strength")),
    "ConditioningSetMask": ("append", ("conditioning", "mask", "set_cond_area", "strength")),
    "ConditioningZeroOut": ("zero_out", ("conditioning",)),
    "ConditioningSetTimestepRange": ("set_range", ("conditioning", "start", "end")),
    "ControlNetApply": ("apply_controlnet", ("conditioning", "control_net", "image", "strength")),
    "ControlNetApplyAdvanced": ("apply_controlnet", ("positive", "negative", "control_net", "image", "strength",
                                                     "start_percent", "end_percent", "vae")),
    "ControlNetApplySD3": ("apply_controlnet", ("positive", "negative", "control_net", "vae", "image", "strength",
                                                "start_percent", "end_percent")),
    "CLIPVisionEncode": ("encode", ("clip_vision", "image", "crop")),
    "StyleModelApply": ("apply_stylemodel", ("conditioning", "style_model", "clip_vision_output", "strength",
                                             "strength_type")),
    "unCLIPConditioning": ("apply_adm", ("conditioning", "clip_vision_output", "strength", "noise_augmentation")),
    "GLIGENTextBoxApply": ("append", ("conditioning_to", "clip", "gligen_textbox_model", "text", "width", "height",
                                      "x", "y")),
    "InpaintModelConditioning": ("encode", ("positive", "negative", "pixels", "vae", "mask", "noise_mask")),
    # loaders
    "CheckpointLoaderSimple": ("load_checkpoint", ("ckpt_name",)),
    "CheckpointLoader": ("load_checkpoint", ("config_name", "ckpt_name")),
    "unCLIPCheckpointLoader": ("load_checkpoint", ("ckpt_name",)),
    "DiffusersLoader": ("load_checkpoint", ("model_path",)),
    "VAELoader": ("load_vae", ("vae_name",)),
    "LoraLoader": ("load_lora", ("model", "clip", "lora_name", "strength_model", "strength_clip")),
    "LoraLoaderModelOnly": ("load_lora_model_only", ("model", "lora_name", "strength_model")),
    "ControlNetLoader": ("load_controlnet", ("control_net_name",)),
    "DiffControlNetLoader": ("load_controlnet", ("model", "control_net_name")),
    "UNETLoader": ("load_unet", ("unet_name", "weight_dtype")),
    "CLIPLoader": ("load_clip", ("clip_name", "type", "device")),
    "DualCLIPLoader": ("load_clip", ("clip_name1", "clip_name2", "type", "device")),
    "TripleCLIPLoader": ("load_clip", ("clip_name1", "clip_name2", "clip_name3")),
    "CLIPVisionLoader": ("load_clip", ("clip_name",)),
    "StyleModelLoader": ("load_style_model", ("style_model_name",)),
    "GLIGENLoader": ("load_gligen", ("gligen_name",)),
    "UpscaleModelLoader": ("load_model", ("model_name",)),
    # latents and VAE
    "EmptyLatentImage": ("generate", ("width", "height", "batch_size")),
    "VAEDecode": ("decode", ("vae", "samples")),
    "VAEDecodeTiled": ("decode", ("vae", "samples", "tile_size", "overlap", "temporal_size", "temporal_overlap")),
    "VAEEncode": ("encode", ("vae", "pixels")),
    "VAEEncodeTiled": ("encode", ("vae", "pixels", "tile_size", "overlap", "temporal_size", "temporal_overlap")),
    "VAEEncodeForInpaint": ("encode", ("vae", "pixels", "mask", "grow_mask_by")),
    "LatentFromBatch": ("frombatch", ("samples", "batch_index", "length")),
    "RepeatLatentBatch": ("repeat", ("samples", "amount")),
    "LatentUpscale": ("upscale", ("samples", "upscale_method", "width", "height", "crop")),
    "LatentUpscaleBy": ("upscale", ("samples", "upscale_method", "scale_by")),
    "LatentRotate": ("rotate", ("samples", "rotation")),
    "LatentFlip": ("flip", ("samples", "flip_method")),
    "LatentComposite": ("composite", ("samples_to", "samples_from", "x", "y", "feather")),
    "LatentBlend": ("blend", ("samples1", "samples2", "blend_factor")),
    "LatentCrop": ("crop", ("samples", "width", "height", "x", "y")),
    "SetLatentNoiseMask": ("set_mask", ("samples", "mask")),
    "SaveLatent": ("save", ("samples", "filename_prefix", "prompt", "extra_pnginfo")),
    "LoadLatent": ("load", ("latent",)),
    # sampling
    "KSampler": ("sample", ("model", "seed", "steps", "cfg", "sampler_name", "scheduler", "positive", "negative",
                            "latent_image", "denoise")),
    "KSamplerAdvanced": ("sample", ("model", "add_noise", "noise_seed", "steps", "cfg", "sampler_name", "scheduler",
                                    "positive", "negative", "latent_image", "start_at_step", "end_at_step",
                                    "return_with_leftover_noise", "denoise")),
    # images
    "SaveImage": ("save_images", ("images", "filename_prefix", "prompt", "extra_pnginfo")),
    "PreviewImage": ("save_images", ("images", "filename_prefix", "prompt", "extra_pnginfo")),
    "LoadImage": ("load_image", ("image",)),
    "LoadImageMask": ("load_image", ("image", "channel")),
    "ImageScale": ("upscale", ("image", "upscale_method", "width", "height", "crop")),
    "ImageScaleBy": ("upscale", ("image", "upscale_method", "scale_by")),
    "ImageScaleToTotalPixels": ("upscale", ("image", "upscale_method", "megapixels")),
    "ImageUpscaleWithModel": ("upscale", ("upscale_model", "image")),
    "ImageInvert": ("invert", ("image",)),
    "ImageBatch": ("batch", ("image1", "image2")),
    "EmptyImage": ("generate", ("width", "height", "batch_size", "color")),
    "ImagePadForOutpaint": ("expand_image", ("image", "left", "top", "right", "bottom", "feathering")),
    "ImageCrop": ("crop", ("image", "width", "height", "x", "y")),
    "ImageBlend": ("blend_images", ("image1", "image2", "blend_factor", "blend_mode")),
    "ImageBlur": ("blur", ("image", "blur_radius", "sigma")),
    "ImageSharpen": ("sharpen", ("image", "sharpen_radius", "sigma", "alpha")),
    "ImageQuantize": ("quantize", ("image", "colors", "dither")),
    "ImageCompositeMasked": ("composite", ("destination", "source", "x", "y", "resize_source", "mask")),
    "RepeatImageBatch": ("repeat", ("image", "amount")),
    "ImageFromBatch": ("frombatch", ("image", "batch_index", "length")),
    # model patches
    "FreeU": ("patch", ("model", "b1", "b2", "s1", "s2")),
    "FreeU_V2": ("patch", ("model", "b1", "b2", "s1", "s2")),
    "PerturbedAttentionGuidance": ("patch", ("model", "scale")),
}

# The nodes of ComfyUI's comfy_extras modules that packs call as objects (`compat/comfy_extras.py` re-exports them);
# where ComfyUI's method takes its parameters in the declared input order, only the order is repeated here.
_EXTRAS_SAME_ORDER: dict[str, str] = {
    # nodes_custom_sampler, nodes_align_your_steps, nodes_gits, nodes_optimalsteps
    "BasicScheduler": "get_sigmas", "KarrasScheduler": "get_sigmas", "ExponentialScheduler": "get_sigmas",
    "PolyexponentialScheduler": "get_sigmas", "LaplaceScheduler": "get_sigmas", "VPScheduler": "get_sigmas",
    "BetaSamplingScheduler": "get_sigmas", "SDTurboScheduler": "get_sigmas", "AlignYourStepsScheduler": "get_sigmas",
    "GITSScheduler": "get_sigmas", "OptimalStepsScheduler": "get_sigmas", "SplitSigmas": "get_sigmas",
    "SplitSigmasDenoise": "get_sigmas", "FlipSigmas": "get_sigmas", "SetFirstSigma": "set_first_sigma",
    "ExtendIntermediateSigmas": "extend", "SamplingPercentToSigma": "get_sigma", "KSamplerSelect": "get_sampler",
    "SamplerEulerAncestral": "get_sampler", "SamplerEulerAncestralCFGPP": "get_sampler", "SamplerLMS": "get_sampler",
    "SamplerDPMPP_3M_SDE": "get_sampler", "SamplerDPMPP_2M_SDE": "get_sampler", "SamplerDPMPP_SDE": "get_sampler",
    "SamplerDPMPP_2S_Ancestral": "get_sampler", "SamplerDPMAdaptative": "get_sampler", "SamplerER_SDE": "get_sampler",
    "SamplerSASolver": "get_sampler", "CFGGuider": "get_guider", "DualCFGGuider": "get_guider",
    "BasicGuider": "get_guider", "PerpNegGuider": "get_guider", "RandomNoise": "get_noise", "DisableNoise": "get_noise",
    "AddNoise": "add_noise", "SamplerCustom": "sample", "SamplerCustomAdvanced": "sample",
    # nodes_clip_sdxl
    "CLIPTextEncodeSDXL": "encode",
    # nodes_mask
    "LatentCompositeMasked": "composite", "MaskToImage": "mask_to_image", "ImageToMask": "image_to_mask",
    "ImageColorToMask": "image_to_mask", "SolidMask": "solid", "InvertMask": "invert", "CropMask": "crop",
    "MaskComposite": "combine", "FeatherMask": "feather", "GrowMask": "expand_mask", "ThresholdMask": "image_to_mask",
    # nodes_latent
    "LatentAdd": "op", "LatentSubtract": "op", "LatentMultiply": "op", "LatentInterpolate": "op",
    "LatentBatch": "batch",
    "LatentBatchSeedBehavior": "op", "LatentApplyOperation": "op", "LatentApplyOperationCFG": "patch",
    "LatentOperationTonemapReinhard": "op", "LatentOperationSharpen": "op",
    # nodes_model_advanced
    "ModelSamplingDiscrete": "patch", "ModelSamplingContinuousEDM": "patch", "ModelSamplingContinuousV": "patch",
    "ModelSamplingSD3": "patch", "ModelSamplingAuraFlow": "patch_aura", "RescaleCFG": "patch",
    # nodes_images
    "ImageAddNoise": "repeat",
    # model patches, compositing, rebatching, merging
    "SelfAttentionGuidance": "patch", "DifferentialDiffusion": "apply", "PerpNeg": "patch", "HyperTile": "patch",
    "TomePatchModel": "patch", "PatchModelAddDownscale": "patch", "UNetSelfAttentionMultiply": "patch",
    "UNetCrossAttentionMultiply": "patch", "CLIPAttentionMultiply": "patch", "CFGZeroStar": "patch",
    "SkipLayerGuidanceSD3": "skip_guidance_sd3", "PorterDuffImageComposite": "composite",
    "SplitImageWithAlpha": "split_image_with_alpha", "JoinImageWithAlpha": "join_image_with_alpha",
    "Canny": "detect_edge", "Morphology": "process", "RebatchLatents": "rebatch", "RebatchImages": "rebatch",
    "ModelMergeSimple": "merge", "ModelMergeSubtract": "merge", "ModelMergeAdd": "merge", "ModelMergeBlocks": "merge",
    "CLIPMergeSimple": "merge", "CLIPMergeSubtract": "merge", "CLIPMergeAdd": "merge", "HypernetworkLoader":
    "load_hypernetwork", "EmptySD3LatentImage": "generate",
    # nodes_hooks
    "CreateHookLora": "create_hook", "CreateHookLoraModelOnly": "create_hook_model_only",
    "CreateHookModelAsLora": "create_hook", "CreateHookModelAsLoraModelOnly": "create_hook_model_only",
    "SetHookKeyframes": "set_hook_keyframes", "CreateHookKeyframe": "create_hook_keyframe",
    "CreateHookKeyframesInterpolated": "create_hook_keyframes",
    "CreateHookKeyframesFromFloats": "create_hook_keyframes",
    "SetClipHooks": "apply_hooks", "ConditioningTimestepsRange": "create_range",
    "ConditioningSetProperties": "set_properties", "ConditioningSetPropertiesAndCombine": "set_properties",
    "PairConditioningSetProperties": "set_properties", "PairConditioningSetPropertiesAndCombine": "set_properties",
    "ConditioningSetDefaultCombine": "set_default_and_combine",
    "PairConditioningSetDefaultCombine": "set_default_and_combine", "PairConditioningCombine": "combine",
    "CombineHooks2": "combine_hooks", "CombineHooks4": "combine_hooks", "CombineHooks8": "combine_hooks",
}
EXTRAS_SAME_ORDER = _EXTRAS_SAME_ORDER  # the names whose order `nodes_module._positional` takes from the spec
COMFY_METHODS.update({
    "CLIPTextEncodeSDXLRefiner": ("encode", ("clip", "ascore", "width", "height", "text")),
    "InstructPixToPixConditioning": ("encode", ("positive", "negative", "pixels", "vae")),
    "SaveAnimatedWEBP": ("save_images", ("images", "fps", "filename_prefix", "lossless", "quality", "method",
                                         "num_frames", "prompt", "extra_pnginfo")),
    "SaveAnimatedPNG": ("save_images", ("images", "fps", "compress_level", "filename_prefix", "prompt",
                                        "extra_pnginfo")),
    "CheckpointSave": ("save", ("model", "clip", "vae", "filename_prefix", "prompt", "extra_pnginfo")),
    "VAESave": ("save", ("vae", "filename_prefix", "prompt", "extra_pnginfo")),
})
