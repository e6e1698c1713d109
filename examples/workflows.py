"""The example workflows, declared once: nodes with ComfyUI's class and input names, their place on the editor's
grid and their group. `examples/build_examples.py` writes each as `<name>.api.json` and `<name>.json`.

The graphs follow the examples ComfyUI's documentation teaches (comfyanonymous.github.io/ComfyUI_examples:
txt2img, img2img, inpaint, outpaint, hires fix, LoRA, textual inversion, area composition, model merging,
upscale models, ControlNet, unCLIP, GLIGEN), at their usual sizes and step counts; tests shrink them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SD15 = "v1-5-pruned-emaonly.safetensors"
SD15_OTHER = "dreamshaper_8.safetensors"
INPAINT = "512-inpainting-ema.safetensors"
LORA = "add_detail.safetensors"
EMBEDDING = "EasyNegative"
UPSCALER = "RealESRGAN_x4plus.pth"
CONTROLNET = "control_v11p_sd15_canny.safetensors"
UNCLIP = "sd21-unclip-h.ckpt"
GLIGEN = "gligen_sd14_textbox_pruned.safetensors"
PHOTO, INPAINT_SOURCE, CANNY = "example.png", "inpaint_source.png", "canny_edges.png"
SEED = 156680208700286
NEGATIVE = "text, watermark, blurry, lowres"
MODELS, PROMPTS, SAMPLE, HIRES, INPUT = "Load models", "Prompt", "Sample and save", "Hires fix", "Input image"
COLORS = {MODELS: "#3f789e", PROMPTS: "#8A8", SAMPLE: "#b06634", HIRES: "#a1309b", INPUT: "#88A"}


@dataclass
class Step:
    """One node: id, class, inputs (constants, or `[source id, output slot]` links), grid cell and group."""

    id: int
    class_type: str
    inputs: dict[str, Any]
    col: int
    row: int
    group: str = SAMPLE
    title: str | None = None


@dataclass
class Workflow:
    """A whole example: its nodes and the groups drawn around them."""

    steps: list[Step]
    groups: dict[str, str] = field(default_factory=lambda: dict(COLORS))


def _ckpt(node_id: int, name: str, col: int = 0, row: int = 1) -> Step:
    return Step(node_id, "CheckpointLoaderSimple", {"ckpt_name": name}, col, row, MODELS)


def _text(node_id: int, text: str, clip: list[Any], row: int, title: str, col: int = 1) -> Step:
    return Step(node_id, "CLIPTextEncode", {"text": text, "clip": clip}, col, row, PROMPTS, title)


def _ksampler(node_id: int, model: list[Any], pos: list[Any], neg: list[Any], latent: list[Any], col: int,
              denoise: float = 1.0, steps: int = 20, sampler: str = "euler", scheduler: str = "normal",
              cfg: float = 8.0, title: str | None = None, group: str = SAMPLE) -> Step:
    return Step(node_id, "KSampler", {"model": model, "seed": SEED, "steps": steps, "cfg": cfg,
                                      "sampler_name": sampler, "scheduler": scheduler, "positive": pos,
                                      "negative": neg, "latent_image": latent, "denoise": denoise},
                col, 0, group, title)


def _decode_save(decode_id: int, samples: list[Any], vae: list[Any], prefix: str, col: int,
                 group: str = SAMPLE) -> list[Step]:
    return [Step(decode_id, "VAEDecode", {"samples": samples, "vae": vae}, col, 1, group),
            Step(decode_id + 1, "SaveImage", {"images": [str(decode_id), 0], "filename_prefix": prefix}, col + 1, 0,
                 group)]


def _empty(node_id: int, width: int = 512, height: int = 512, col: int = 1, row: int = 2) -> Step:
    return Step(node_id, "EmptyLatentImage", {"width": width, "height": height, "batch_size": 1}, col, row, SAMPLE)


def _load_image(node_id: int, name: str, col: int = 0, row: int = 3) -> Step:
    return Step(node_id, "LoadImage", {"image": name}, col, row, INPUT)


def text_to_image() -> Workflow:
    """ComfyUI's default graph: checkpoint, two prompts, empty latent, KSampler, decode, save."""
    return Workflow([
        _ckpt(4, SD15), _text(6, "beautiful scenery nature glass bottle landscape, purple galaxy bottle",
                              ["4", 1], 0, "Positive"),
        _text(7, NEGATIVE, ["4", 1], 1, "Negative"), _empty(5),
        _ksampler(3, ["4", 0], ["6", 0], ["7", 0], ["5", 0], 2),
        *_decode_save(8, ["3", 0], ["4", 2], "txt2img", 3)])


def image_to_image() -> Workflow:
    """An input photo encoded to a latent and re-sampled at denoise 0.6."""
    return Workflow([
        _ckpt(4, SD15), _text(6, "a watercolor painting of a mountain lake at dawn", ["4", 1], 0, "Positive"),
        _text(7, NEGATIVE, ["4", 1], 1, "Negative"), _load_image(10, PHOTO, 1, 2),
        Step(11, "VAEEncode", {"pixels": ["10", 0], "vae": ["4", 2]}, 2, 2, INPUT),
        _ksampler(3, ["4", 0], ["6", 0], ["7", 0], ["11", 0], 2, denoise=0.6, sampler="dpmpp_2m",
                  scheduler="karras"),
        *_decode_save(8, ["3", 0], ["4", 2], "img2img", 3)])


def inpainting() -> Workflow:
    """An inpainting checkpoint fills the transparent part of the input (LoadImage's mask), VAEEncodeForInpaint."""
    return Workflow([
        _ckpt(4, INPAINT), _text(6, "a small black cat sitting on the bench", ["4", 1], 0, "Positive"),
        _text(7, NEGATIVE, ["4", 1], 1, "Negative"), _load_image(10, INPAINT_SOURCE, 1, 2),
        Step(11, "VAEEncodeForInpaint", {"pixels": ["10", 0], "vae": ["4", 2], "mask": ["10", 1],
                                         "grow_mask_by": 6}, 2, 2, INPUT),
        _ksampler(3, ["4", 0], ["6", 0], ["7", 0], ["11", 0], 2),
        *_decode_save(8, ["3", 0], ["4", 2], "inpaint", 3)])


def inpaint_model_conditioning() -> Workflow:
    """Inpainting through InpaintModelConditioning: the masked image rides on the conditioning, so the
    sampler may keep part of the original (denoise below 1)."""
    return Workflow([
        _ckpt(4, INPAINT), _text(6, "a small black cat sitting on the bench", ["4", 1], 0, "Positive"),
        _text(7, NEGATIVE, ["4", 1], 1, "Negative"), _load_image(10, INPAINT_SOURCE, 1, 2),
        Step(11, "InpaintModelConditioning", {"positive": ["6", 0], "negative": ["7", 0], "vae": ["4", 2],
                                              "pixels": ["10", 0], "mask": ["10", 1], "noise_mask": True},
             2, 2, INPUT),
        _ksampler(3, ["4", 0], ["11", 0], ["11", 1], ["11", 2], 3, denoise=0.9),
        *_decode_save(8, ["3", 0], ["4", 2], "inpaint_conditioning", 4)])


def outpainting() -> Workflow:
    """The photo padded on the right (ImagePadForOutpaint's mask marks the new part) and filled by an
    inpainting checkpoint."""
    return Workflow([
        _ckpt(4, INPAINT), _text(6, "a wide mountain valley, river, evening light", ["4", 1], 0, "Positive"),
        _text(7, NEGATIVE, ["4", 1], 1, "Negative"), _load_image(10, PHOTO, 1, 2),
        Step(12, "ImagePadForOutpaint", {"image": ["10", 0], "left": 0, "top": 0, "right": 256, "bottom": 0,
                                         "feathering": 40}, 2, 3, INPUT),
        Step(11, "VAEEncodeForInpaint", {"pixels": ["12", 0], "vae": ["4", 2], "mask": ["12", 1],
                                         "grow_mask_by": 8}, 2, 2, INPUT),
        _ksampler(3, ["4", 0], ["6", 0], ["7", 0], ["11", 0], 3),
        *_decode_save(8, ["3", 0], ["4", 2], "outpaint", 4)])


def hires_fix_latent() -> Workflow:
    """Two passes: 512² sampled, its latent upscaled 1.5× (LatentUpscaleBy) and re-sampled at denoise 0.5."""
    return Workflow([
        _ckpt(4, SD15), _text(6, "a cozy cabin in a snowy forest, warm windows, night", ["4", 1], 0, "Positive"),
        _text(7, NEGATIVE, ["4", 1], 1, "Negative"), _empty(5),
        _ksampler(3, ["4", 0], ["6", 0], ["7", 0], ["5", 0], 2, title="First pass"),
        Step(10, "LatentUpscaleBy", {"samples": ["3", 0], "upscale_method": "nearest-exact", "scale_by": 1.5},
             3, 1, HIRES),
        _ksampler(11, ["4", 0], ["6", 0], ["7", 0], ["10", 0], 3, denoise=0.5, steps=14,
                  sampler="dpmpp_2m", scheduler="karras", title="Hires pass", group=HIRES),
        *_decode_save(8, ["11", 0], ["4", 2], "hires_latent", 4, HIRES)])


def hires_fix_model() -> Workflow:
    """Two passes through pixels: the first image upscaled 4× by an ESRGAN model, scaled to 1.5× of the
    original, encoded and re-sampled at denoise 0.5."""
    return Workflow([
        _ckpt(4, SD15), _text(6, "a cozy cabin in a snowy forest, warm windows, night", ["4", 1], 0, "Positive"),
        _text(7, NEGATIVE, ["4", 1], 1, "Negative"), _empty(5),
        _ksampler(3, ["4", 0], ["6", 0], ["7", 0], ["5", 0], 2, title="First pass"),
        Step(12, "VAEDecode", {"samples": ["3", 0], "vae": ["4", 2]}, 2, 1, SAMPLE),
        Step(13, "UpscaleModelLoader", {"model_name": UPSCALER}, 0, 2, MODELS),
        Step(14, "ImageUpscaleWithModel", {"upscale_model": ["13", 0], "image": ["12", 0]}, 3, 1, HIRES),
        Step(15, "ImageScaleBy", {"image": ["14", 0], "upscale_method": "area", "scale_by": 0.375}, 3, 2, HIRES),
        Step(16, "VAEEncode", {"pixels": ["15", 0], "vae": ["4", 2]}, 3, 3, HIRES),
        _ksampler(11, ["4", 0], ["6", 0], ["7", 0], ["16", 0], 4, denoise=0.5, steps=14,
                  sampler="dpmpp_2m", scheduler="karras", title="Hires pass", group=HIRES),
        *_decode_save(8, ["11", 0], ["4", 2], "hires_model", 5, HIRES)])


def lora() -> Workflow:
    """A LoRA patched into both the UNet and the text encoder (LoraLoader) before prompting and sampling."""
    return Workflow([
        _ckpt(4, SD15),
        Step(10, "LoraLoader", {"model": ["4", 0], "clip": ["4", 1], "lora_name": LORA, "strength_model": 0.8,
                                "strength_clip": 0.8}, 0, 2, MODELS),
        _text(6, "portrait of an old fisherman, detailed skin, rim light", ["10", 1], 0, "Positive"),
        _text(7, NEGATIVE, ["10", 1], 1, "Negative"), _empty(5),
        _ksampler(3, ["10", 0], ["6", 0], ["7", 0], ["5", 0], 2),
        *_decode_save(8, ["3", 0], ["4", 2], "lora", 3)])


def embeddings() -> Workflow:
    """Textual inversion: `embedding:NAME` in a prompt pulls the vectors of models/embeddings/NAME.*."""
    return Workflow([
        _ckpt(4, SD15),
        _text(6, "a castle on a cliff above the sea, (golden hour:1.2)", ["4", 1], 0, "Positive"),
        _text(7, f"embedding:{EMBEDDING}, {NEGATIVE}", ["4", 1], 1, "Negative (with an embedding)"), _empty(5),
        _ksampler(3, ["4", 0], ["6", 0], ["7", 0], ["5", 0], 2),
        *_decode_save(8, ["3", 0], ["4", 2], "embeddings", 3)])


def area_composition() -> Workflow:
    """A prompt for the whole 768×512 image plus one for each half (ConditioningSetArea), combined."""
    area = {"width": 384, "height": 512, "y": 0, "strength": 1.0}
    return Workflow([
        _ckpt(4, SD15),
        _text(6, "a calm lake landscape, sunset, highly detailed", ["4", 1], 0, "Whole image"),
        _text(12, "a tall white lighthouse", ["4", 1], 2, "Left half"),
        _text(13, "a red sailing boat", ["4", 1], 3, "Right half"),
        _text(7, NEGATIVE, ["4", 1], 1, "Negative"),
        Step(14, "ConditioningSetArea", {"conditioning": ["12", 0], **area, "x": 0}, 2, 2, PROMPTS),
        Step(15, "ConditioningSetArea", {"conditioning": ["13", 0], **area, "x": 384}, 2, 3, PROMPTS),
        Step(16, "ConditioningCombine", {"conditioning_1": ["14", 0], "conditioning_2": ["15", 0]}, 3, 2, PROMPTS),
        Step(17, "ConditioningCombine", {"conditioning_1": ["6", 0], "conditioning_2": ["16", 0]}, 3, 3, PROMPTS),
        _empty(5, 768, 512, 1, 4),
        _ksampler(3, ["4", 0], ["17", 0], ["7", 0], ["5", 0], 4),
        *_decode_save(8, ["3", 0], ["4", 2], "area_composition", 5)])


def model_merging() -> Workflow:
    """Two checkpoints' UNets mixed half and half (ModelMergeSimple), sampled, and saved as a new checkpoint."""
    return Workflow([
        _ckpt(4, SD15, 0, 1), _ckpt(10, SD15_OTHER, 0, 2),
        Step(11, "ModelMergeSimple", {"model1": ["4", 0], "model2": ["10", 0], "ratio": 0.5}, 1, 3, MODELS),
        Step(12, "CheckpointSave", {"model": ["11", 0], "clip": ["4", 1], "vae": ["4", 2],
                                    "filename_prefix": "checkpoints/merged"}, 2, 3, MODELS),
        _text(6, "a lighthouse on a rocky coast, stormy sky", ["4", 1], 0, "Positive"),
        _text(7, NEGATIVE, ["4", 1], 1, "Negative"), _empty(5),
        _ksampler(3, ["11", 0], ["6", 0], ["7", 0], ["5", 0], 2),
        *_decode_save(8, ["3", 0], ["4", 2], "merged", 3)])


def upscaling() -> Workflow:
    """An image upscaled 4× by an ESRGAN-family model file (tiled inside ImageUpscaleWithModel)."""
    return Workflow([
        _load_image(10, PHOTO, 0, 1), Step(13, "UpscaleModelLoader", {"model_name": UPSCALER}, 0, 0, MODELS),
        Step(14, "ImageUpscaleWithModel", {"upscale_model": ["13", 0], "image": ["10", 0]}, 1, 0, SAMPLE),
        Step(9, "SaveImage", {"images": ["14", 0], "filename_prefix": "upscaled"}, 2, 0, SAMPLE)])


def controlnet() -> Workflow:
    """A canny-edge ControlNet steering both prompts from 0% to 100% of the steps (ControlNetApplyAdvanced)."""
    return Workflow([
        _ckpt(4, SD15), Step(10, "ControlNetLoader", {"control_net_name": CONTROLNET}, 0, 2, MODELS),
        _text(6, "a modern glass house in a forest, architectural photo", ["4", 1], 0, "Positive"),
        _text(7, NEGATIVE, ["4", 1], 1, "Negative"), _load_image(11, CANNY, 1, 3),
        Step(12, "ControlNetApplyAdvanced", {"positive": ["6", 0], "negative": ["7", 0], "control_net": ["10", 0],
                                             "image": ["11", 0], "strength": 1.0, "start_percent": 0.0,
                                             "end_percent": 1.0}, 2, 2, PROMPTS),
        _empty(5, col=2, row=3), _ksampler(3, ["4", 0], ["12", 0], ["12", 1], ["5", 0], 3),
        *_decode_save(8, ["3", 0], ["4", 2], "controlnet", 4)])


def unclip() -> Workflow:
    """unCLIP: the CLIP-vision embedding of an input image (CLIPVisionEncode) added to the prompt's
    conditioning (unCLIPConditioning) of an SD2.1 unCLIP checkpoint, which makes variations of the image."""
    return Workflow([
        Step(4, "unCLIPCheckpointLoader", {"ckpt_name": UNCLIP}, 0, 1, MODELS),
        _text(6, "a photograph, high quality", ["4", 1], 0, "Positive"),
        _text(7, NEGATIVE, ["4", 1], 1, "Negative"), _load_image(10, PHOTO, 0, 3),
        Step(11, "CLIPVisionEncode", {"clip_vision": ["4", 3], "image": ["10", 0], "crop": "center"}, 1, 3, INPUT),
        Step(12, "unCLIPConditioning", {"conditioning": ["6", 0], "clip_vision_output": ["11", 0], "strength": 1.0,
                                        "noise_augmentation": 0.0}, 2, 2, PROMPTS),
        _empty(5, 768, 768, 2, 3), _ksampler(3, ["4", 0], ["12", 0], ["7", 0], ["5", 0], 3),
        *_decode_save(8, ["3", 0], ["4", 2], "unclip", 4)])


def gligen() -> Workflow:
    """GLIGEN: phrases placed in boxes (GLIGENTextBoxApply, boxes in pixels) on top of the scene prompt."""
    return Workflow([
        _ckpt(4, SD15), Step(10, "GLIGENLoader", {"gligen_name": GLIGEN}, 0, 2, MODELS),
        _text(6, "a photo of a park in autumn, a dog and a red ball on the grass", ["4", 1], 0, "Scene"),
        _text(7, NEGATIVE, ["4", 1], 1, "Negative"),
        Step(11, "GLIGENTextBoxApply", {"conditioning_to": ["6", 0], "clip": ["4", 1],
                                        "gligen_textbox_model": ["10", 0], "text": "a brown dog", "width": 256,
                                        "height": 256, "x": 32, "y": 224}, 2, 2, PROMPTS, "Box: dog"),
        Step(12, "GLIGENTextBoxApply", {"conditioning_to": ["11", 0], "clip": ["4", 1],
                                        "gligen_textbox_model": ["10", 0], "text": "a red ball", "width": 128,
                                        "height": 128, "x": 352, "y": 352}, 2, 3, PROMPTS, "Box: ball"),
        _empty(5, col=1, row=3), _ksampler(3, ["4", 0], ["12", 0], ["7", 0], ["5", 0], 3),
        *_decode_save(8, ["3", 0], ["4", 2], "gligen", 4)])


WORKFLOWS: dict[str, Workflow] = {
    "text_to_image": text_to_image(), "image_to_image": image_to_image(), "inpainting": inpainting(),
    "inpaint_model_conditioning": inpaint_model_conditioning(), "outpainting": outpainting(),
    "hires_fix_latent": hires_fix_latent(), "hires_fix_model": hires_fix_model(), "lora": lora(),
    "embeddings": embeddings(), "area_composition": area_composition(), "model_merging": model_merging(),
    "upscaling": upscaling(), "controlnet": controlnet(), "unclip": unclip(), "gligen": gligen(),
}
