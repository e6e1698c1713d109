"""ComfyUI's comfy_extras modules over Loom's nodes, through the real executor: a pack importing classes and
helpers from them (upscaling with a tiny ESRGAN through spandrel, SamplerCustomAdvanced with Guider_Basic, mask
tools) gets what Loom's own nodes give."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from tests.custom_nodes.cn_env import make_runtime, run_prompt
from tests.fixtures.tiny_checkpoints import write_tiny_checkpoint
from tests.fixtures.tiny_upscalers import tiny_esrgan_state_dict

PACKS = Path(__file__).resolve().parent / "extras_packs"


@pytest.fixture()
def runtime(tmp_path: Path):
    folder = tmp_path / "models" / "upscale_models"
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in tiny_esrgan_state_dict(2).items()}, str(folder / "x2.safetensors"))
    write_tiny_checkpoint(tmp_path / "models" / "checkpoints" / "tiny.safetensors", family="sd15")
    (tmp_path / "input").mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "input" / "in.png")
    rt = make_runtime(tmp_path, packs=PACKS)
    assert [p.state for p in rt.custom_packs] == ["ok"], [p.to_json() for p in rt.custom_packs]
    return rt


def _pixels(runtime, result, node_id: str) -> np.ndarray:
    assert result.status == "success", result.error
    (image,) = result.outputs[node_id]["images"]
    return np.asarray(Image.open(Path(runtime.folders.temp_directory) / image["subfolder"] / image["filename"]))


def _load(graph: dict) -> dict:
    return {"1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}}, **graph}


def test_upscale_pack_matches_loom_nodes(runtime) -> None:
    loom = _load({"2": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "x2.safetensors"}},
                  "3": {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["2", 0],
                                                                          "image": ["1", 0]}},
                  "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}}})
    expected = _pixels(runtime, run_prompt(runtime, loom, "loom")[0], "4")
    assert expected.shape == (32, 32, 3)
    for via_state_dict in (False, True):
        graph = _load({"3": {"class_type": "PackUpscaleTwice", "inputs": {"image": ["1", 0],
                                                                          "model_name": "x2.safetensors",
                                                                          "via_state_dict": via_state_dict}},
                       "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}}})
        assert np.array_equal(_pixels(runtime, run_prompt(runtime, graph, f"pack-{via_state_dict}")[0], "4"),
                              expected)


COMMON = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
          "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a fox"}},
          "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
          "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
          "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}}}
SAMPLING = {"11": {"class_type": "RandomNoise", "inputs": {"noise_seed": 5}},
            "12": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
            "13": {"class_type": "BasicScheduler", "inputs": {"model": ["1", 0], "scheduler": "normal", "steps": 3,
                                                              "denoise": 1.0}},
            "5": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["11", 0], "guider": ["10", 0],
                                                                    "sampler": ["12", 0], "sigmas": ["13", 0],
                                                                    "latent_image": ["4", 0]}}}


def test_guider_basic_through_sampler_custom_advanced_object(runtime) -> None:
    common = COMMON
    loom = {**common, **SAMPLING,
            "10": {"class_type": "BasicGuider", "inputs": {"model": ["1", 0], "conditioning": ["2", 0]}}}
    expected = _pixels(runtime, run_prompt(runtime, loom, "loom")[0], "7")
    pack = {**common, "5": {"class_type": "PackBasicGuidedSample",
                            "inputs": {"model": ["1", 0], "conditioning": ["2", 0], "latent_image": ["4", 0],
                                       "seed": 5}}}
    assert np.array_equal(_pixels(runtime, run_prompt(runtime, pack, "pack")[0], "7"), expected)


def test_guider_dual_cfg_matches_the_dual_cfg_node(runtime) -> None:
    conds = {"3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a red fox"}},
             "8": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}}}
    inputs = {"model": ["1", 0], "cond1": ["2", 0], "cond2": ["3", 0], "negative": ["8", 0], "cfg_conds": 6.0,
              "cfg_cond2_negative": 3.0}
    loom = {**COMMON, **conds, **SAMPLING,
            "10": {"class_type": "DualCFGGuider", "inputs": {**inputs, "style": "regular"}}}
    pack = {**COMMON, **conds, **SAMPLING, "10": {"class_type": "PackDualGuider", "inputs": inputs}}
    expected = _pixels(runtime, run_prompt(runtime, loom, "loom-dual")[0], "7")
    assert np.array_equal(_pixels(runtime, run_prompt(runtime, pack, "pack-dual")[0], "7"), expected)


def test_module_names_and_mappings(runtime) -> None:
    import comfy_extras.nodes_mask as nodes_mask
    import comfy_extras.nodes_post_processing as post
    import nodes

    assert post.Blend is nodes.ImageBlend and post.Blend.FUNCTION == "blend_images"
    assert nodes_mask.GrowMask.FUNCTION == "expand_mask"
    assert "GrowMask" in nodes_mask.NODE_CLASS_MAPPINGS and "ImageBlend" not in nodes_mask.NODE_CLASS_MAPPINGS
    mask = torch.zeros(1, 5, 5)
    mask[0, 2, 2] = 1.0
    grown = nodes_mask.GrowMask().expand_mask(mask, 1, False)[0]
    assert grown.sum().item() == 9.0
    schema_style = nodes_mask.GrowMask.execute(mask, 1, False)  # ComfyUI's v3 classmethod form: a NodeOutput
    assert torch.equal(schema_style[0], grown) and torch.equal(schema_style.result[0], grown)
    from comfy_extras.nodes_images import GetImageSize
    assert GetImageSize.FUNCTION == "execute" and GetImageSize.execute(torch.zeros(2, 6, 4, 3))[:2] == (4, 6)
    with pytest.raises(ImportError, match="NoSuchMaskNode"):
        from comfy_extras.nodes_mask import NoSuchMaskNode  # noqa: F401
    from comfy_extras.nodes_sd3 import EmptySD3LatentImage
    assert EmptySD3LatentImage().generate(64, 64, 1)[0]["samples"].shape == (1, 16, 8, 8)
