"""ComfyUI's `comfy_extras` package for custom node packs: the `comfy_extras.nodes_*` modules packs import node
classes and helpers from, and `comfy_extras.chainner_models.model_loading.load_state_dict`.

Each module's attributes are ComfyUI's Python class names in that module (`from comfy_extras.nodes_upscale_model
import ImageUpscaleWithModel`; `from comfy_extras.nodes_post_processing import Blend`), resolved when asked to
the class `nodes.NODE_CLASS_MAPPINGS` gives for the node id (the ComfyUI-style facade of Loom's node, with
ComfyUI's method name: `ImageUpscaleWithModel().upscale(upscale_model, image)`), so `nodes.X` and
`comfy_extras.<module>.X` are one class. A name whose node Loom lacks raises AttributeError (an ImportError for
`from ... import`) naming the module and node. Each module also has its own NODE_CLASS_MAPPINGS, limited to its
nodes, and the helper objects packs use (`Noise_RandomNoise`, `Guider_Basic`, `composite`, `reshape_latent_to`...).
"""
from __future__ import annotations

import sys
import types
from collections.abc import Mapping
from typing import Any, Iterator

_SAMPLER = ("BasicScheduler KarrasScheduler ExponentialScheduler PolyexponentialScheduler LaplaceScheduler "
            "VPScheduler BetaSamplingScheduler SDTurboScheduler KSamplerSelect SamplerEulerAncestral "
            "SamplerEulerAncestralCFGPP SamplerLMS SamplerDPMPP_3M_SDE SamplerDPMPP_2M_SDE SamplerDPMPP_SDE "
            "SamplerDPMPP_2S_Ancestral SamplerDPMAdaptative SamplerER_SDE SamplerSASolver SplitSigmas "
            "SplitSigmasDenoise FlipSigmas SetFirstSigma ExtendIntermediateSigmas SamplingPercentToSigma CFGGuider "
            "DualCFGGuider BasicGuider RandomNoise DisableNoise AddNoise SamplerCustom SamplerCustomAdvanced")
_HOOKS = ("CreateHookLora CreateHookLoraModelOnly CreateHookModelAsLora CreateHookModelAsLoraModelOnly "
          "SetHookKeyframes CreateHookKeyframe CreateHookKeyframesInterpolated CreateHookKeyframesFromFloats "
          "SetClipHooks ConditioningTimestepsRange ConditioningSetProperties ConditioningSetPropertiesAndCombine "
          "PairConditioningSetProperties PairConditioningSetPropertiesAndCombine PairConditioningCombine")


def _same(names: str) -> dict[str, str]:
    return {name: name for name in names.split()}


# ComfyUI module -> {Python class name in that module: node id}; most classes are named as their node.
EXTRAS: dict[str, dict[str, str]] = {
    "nodes_custom_sampler": _same(_SAMPLER),
    "nodes_upscale_model": _same("UpscaleModelLoader ImageUpscaleWithModel"),
    "nodes_clip_sdxl": _same("CLIPTextEncodeSDXLRefiner CLIPTextEncodeSDXL"),
    "nodes_mask": _same("LatentCompositeMasked ImageCompositeMasked MaskToImage ImageToMask ImageColorToMask "
                        "SolidMask InvertMask CropMask MaskComposite FeatherMask GrowMask ThresholdMask MaskPreview"),
    "nodes_latent": _same("LatentAdd LatentSubtract LatentMultiply LatentInterpolate LatentConcat LatentCut "
                          "LatentBatch LatentBatchSeedBehavior LatentApplyOperation LatentApplyOperationCFG "
                          "LatentOperationTonemapReinhard LatentOperationSharpen"),
    "nodes_model_advanced": _same("ModelSamplingDiscrete ModelSamplingContinuousEDM ModelSamplingContinuousV "
                                  "ModelSamplingSD3 ModelSamplingAuraFlow RescaleCFG"),
    "nodes_images": _same("ImageCrop RepeatImageBatch ImageFromBatch ImageAddNoise SaveAnimatedWEBP SaveAnimatedPNG "
                          "SaveSVGNode GetImageSize ImageStitch ResizeAndPadImage ImageRotate ImageFlip "
                          "ImageScaleToMaxDimension"),
    "nodes_post_processing": {"Blend": "ImageBlend", "Blur": "ImageBlur", "Quantize": "ImageQuantize",
                              "Sharpen": "ImageSharpen", "ImageScaleToTotalPixels": "ImageScaleToTotalPixels"},
    "nodes_hooks": {**_same(_HOOKS), "ConditioningSetDefaultAndCombine": "ConditioningSetDefaultCombine",
                    "PairConditioningSetDefaultAndCombine": "PairConditioningSetDefaultCombine",
                    "CombineHooks": "CombineHooks2", "CombineHooksFour": "CombineHooks4",
                    "CombineHooksEight": "CombineHooks8"},
    "nodes_rebatch": {"LatentRebatch": "RebatchLatents", "ImageRebatch": "RebatchImages"},
    "nodes_freelunch": _same("FreeU FreeU_V2"),
    "nodes_perpneg": _same("PerpNeg PerpNegGuider"),
    "nodes_pag": _same("PerturbedAttentionGuidance"),
    "nodes_sag": _same("SelfAttentionGuidance"),
    "nodes_differential_diffusion": _same("DifferentialDiffusion"),
    "nodes_compositing": _same("PorterDuffImageComposite SplitImageWithAlpha JoinImageWithAlpha"),
    "nodes_canny": _same("Canny"),
    "nodes_morphology": _same("Morphology ImageRGBToYUV ImageYUVToRGB"),
    "nodes_model_merging": {**_same("ModelMergeSimple ModelMergeBlocks CLIPMergeSimple CheckpointSave VAESave"),
                            "ModelSubtract": "ModelMergeSubtract", "ModelAdd": "ModelMergeAdd",
                            "CLIPSubtract": "CLIPMergeSubtract", "CLIPAdd": "CLIPMergeAdd"},
    "nodes_model_merging_model_specific": _same("ModelMergeSD1 ModelMergeSD2 ModelMergeSDXL ModelMergeSD3_2B "
                                                "ModelMergeSD35_Large"),
    "nodes_sd3": _same("EmptySD3LatentImage SkipLayerGuidanceSD3"),
    "nodes_align_your_steps": _same("AlignYourStepsScheduler"),
    "nodes_gits": _same("GITSScheduler"),
    "nodes_optimalsteps": _same("OptimalStepsScheduler"),
    "nodes_attention_multiply": _same("UNetSelfAttentionMultiply UNetCrossAttentionMultiply CLIPAttentionMultiply"),
    "nodes_hypertile": _same("HyperTile"),
    "nodes_tomesd": _same("TomePatchModel"),
    "nodes_model_downscale": _same("PatchModelAddDownscale"),
    "nodes_hypernetwork": _same("HypernetworkLoader"),
    "nodes_ip2p": _same("InstructPixToPixConditioning"),
    "nodes_sdupscale": _same("SD_4XUpscale_Conditioning"),
    "nodes_cfg": _same("CFGZeroStar CFGNorm"),
    "nodes_apg": _same("APG"),
    "nodes_mahiro": _same("Mahiro"),
    "nodes_tcfg": _same("TCFG"),
    "nodes_fresca": _same("FreSca"),
    "nodes_easycache": _same("EasyCache LazyCache"),
    "nodes_torch_compile": _same("TorchCompileModel"),
    "nodes_preview_any": _same("PreviewAny"),
    "nodes_primitive": {"String": "PrimitiveString", "StringMultiline": "PrimitiveStringMultiline",
                        "Int": "PrimitiveInt", "Float": "PrimitiveFloat", "Boolean": "PrimitiveBoolean"},
    "nodes_string": _same("StringConcatenate StringSubstring StringLength CaseConverter StringTrim StringReplace "
                          "StringContains StringCompare RegexMatch RegexExtract RegexReplace"),
}


def _helpers(module: str) -> dict[str, Any]:
    """The non-node objects of a module that packs import (imported only when the module is installed)."""
    if module == "nodes_custom_sampler":
        from compat.cfg_guider import Guider_Basic, Guider_DualCFG
        from nodes.sampling_custom import EmptyNoiseSource, RandomNoiseSource

        return {"Noise_RandomNoise": RandomNoiseSource, "Noise_EmptyNoise": EmptyNoiseSource,
                "Guider_Basic": Guider_Basic, "Guider_DualCFG": Guider_DualCFG}
    if module == "nodes_mask":
        from nodes.mask import composite

        return {"composite": composite}
    if module == "nodes_latent":
        from nodes.latent_transforms import reshape_latent_to

        return {"reshape_latent_to": reshape_latent_to}
    return {}


class _ModuleMappings(Mapping[str, type]):
    """A module's own NODE_CLASS_MAPPINGS: its node ids that are registered, as their facade classes."""

    def __init__(self, names: dict[str, str], mappings: Mapping[str, type]) -> None:
        self._ids = list(dict.fromkeys(names.values()))
        self._mappings = mappings

    def __getitem__(self, node_id: str) -> type:
        if node_id not in self._ids:
            raise KeyError(node_id)
        return self._mappings[node_id]

    def __iter__(self) -> Iterator[str]:
        return (i for i in self._ids if i in self._mappings)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _module_getattr(name: str, names: dict[str, str], mappings: Mapping[str, type]) -> Any:
    def __getattr__(attr: str) -> Any:
        node_id = names.get(attr)
        if node_id is None:
            raise AttributeError(f"module 'comfy_extras.{name}' has no attribute {attr!r} in Loom "
                                 "(docs/custom-nodes.md lists what the compatibility layer provides)")
        try:
            return mappings[node_id]
        except KeyError:
            raise AttributeError(f"comfy_extras.{name}.{attr}: Loom has no node {node_id!r}") from None
    return __getattr__


def load_state_dict(state_dict: dict[str, Any]) -> Any:
    """`chainner_models.model_loading.load_state_dict`: an upscale model (UPSCALE_MODEL value) from its weights,
    through spandrel, as UpscaleModelLoader makes it."""
    from diffusion.networks.upscale import load_upscale_model
    from nodes.upscale import UpscaleModel

    descriptor = load_upscale_model(state_dict)
    return UpscaleModel(descriptor, type(descriptor.model).__name__)


def _package(name: str, doc: str) -> types.ModuleType:
    module = types.ModuleType(name, doc)
    module.__path__ = []
    return module


def extras_modules(mappings: Mapping[str, type]) -> dict[str, types.ModuleType]:
    """Fresh `comfy_extras` modules over `mappings` (the `nodes.NODE_CLASS_MAPPINGS` of one runtime)."""
    root = _package("comfy_extras", "Loom's compatibility package for ComfyUI's comfy_extras.")
    modules: dict[str, types.ModuleType] = {"comfy_extras": root}
    for name, names in EXTRAS.items():
        module = types.ModuleType(f"comfy_extras.{name}", f"ComfyUI's comfy_extras.{name}, over Loom's nodes.")
        module.NODE_CLASS_MAPPINGS = _ModuleMappings(names, mappings)  # type: ignore[attr-defined]
        module.__getattr__ = _module_getattr(name, names, mappings)  # type: ignore[attr-defined]
        for attr, value in _helpers(name).items():
            setattr(module, attr, value)
        setattr(root, name, module)
        modules[module.__name__] = module
    chainner = _package("comfy_extras.chainner_models", "ComfyUI's chainner_models, over spandrel.")
    loading = types.ModuleType("comfy_extras.chainner_models.model_loading", "load_state_dict over spandrel.")
    loading.load_state_dict = load_state_dict  # type: ignore[attr-defined]
    chainner.model_loading = loading  # type: ignore[attr-defined]
    root.chainner_models = chainner  # type: ignore[attr-defined]
    modules.update({chainner.__name__: chainner, loading.__name__: loading})
    return modules


def install_extras(mappings: Mapping[str, type]) -> None:
    """Put the `comfy_extras` modules over `mappings` into `sys.modules`."""
    for key in [k for k in sys.modules if k == "comfy_extras" or k.startswith("comfy_extras.")]:
        del sys.modules[key]
    sys.modules.update(extras_modules(mappings))
