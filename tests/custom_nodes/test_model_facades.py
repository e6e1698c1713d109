"""ComfyUI's model-side modules (comfy.model_patcher, comfy.sd, comfy.lora, comfy.ops, comfy.model_management,
comfy.latent_formats, comfy.model_base, optimized_attention) through the real executor with a tiny checkpoint and
LoRA: a pack's patches are honoured by Loom's UNet and sampler, and the pack's way gives the same images as Loom's
own nodes."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.custom_nodes.cn_env import make_runtime, run_prompt
from tests.fixtures.tiny_checkpoints import write_tiny_checkpoint
from tests.fixtures.tiny_loras import write_tiny_lora

PACKS = Path(__file__).resolve().parent / "facade_packs"


def _graph(model_node: dict | None = None, cfg: float = 7.0, lora: bool = False) -> dict:
    graph = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a fox"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": 7, "steps": 3, "cfg": cfg,
                                                   "sampler_name": "euler", "scheduler": "normal",
                                                   "positive": ["2", 0], "negative": ["3", 0],
                                                   "latent_image": ["4", 0], "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}},
    }
    if model_node is not None:
        graph["8"] = model_node
        graph["5"]["inputs"]["model"] = ["8", 0]
    if lora:
        graph["9"] = {"class_type": "LoraLoader", "inputs": {"model": ["1", 0], "clip": ["1", 1],
                                                             "lora_name": "tiny_lora.safetensors",
                                                             "strength_model": 0.8, "strength_clip": 0.6}}
        graph["5"]["inputs"]["model"] = ["9", 0]
        graph["2"]["inputs"]["clip"] = graph["3"]["inputs"]["clip"] = ["9", 1]
    return graph


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    base = tmp_path_factory.mktemp("facades")
    write_tiny_checkpoint(base / "models" / "checkpoints" / "tiny.safetensors", family="sd15")
    write_tiny_lora(base / "models" / "loras" / "tiny_lora.safetensors", layout="kohya")
    rt = make_runtime(base, packs=PACKS)
    assert [p.state for p in rt.custom_packs] == ["ok", "ok"], [p.to_json() for p in rt.custom_packs]
    return rt


def _pixels(runtime, result, node_id: str) -> np.ndarray:
    (image,) = result.outputs[node_id]["images"]
    path = Path(runtime.folders.temp_directory) / image["subfolder"] / image["filename"]
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int16)


def _run(runtime, graph: dict, name: str, node: str = "7") -> np.ndarray:
    result, _ = run_prompt(runtime, graph, name)
    assert result.status == "success", result.error
    return _pixels(runtime, result, node)


def _pack():
    return next(m for n, m in sys.modules.items() if n.endswith("model_facades") and hasattr(m, "CALLS"))


def test_every_model_options_patch_is_honoured(runtime) -> None:
    baseline = _run(runtime, _graph(), "base")
    pack = _pack()
    pack.CALLS.clear()
    patched = _run(runtime, _graph({"class_type": "FacadePatchEverything", "inputs": {"model": ["1", 0]}}), "all")
    missing = [k for k in pack.KINDS if pack.CALLS.get(k, 0) == 0]
    assert missing == [], f"patches never called: {missing}"
    assert pack.DEVICE_PATCH.moved_to == "cpu"  # the manager moved the patch's tensors with the model
    assert np.abs(patched - baseline).max() <= 1  # identity patches: the same image (CFG mix rounding aside)


def test_patches_change_the_image_as_comfyui_defines(runtime) -> None:
    cfg1 = _run(runtime, _graph(cfg=1.0), "cfg1")
    cond_only = _run(runtime, _graph({"class_type": "FacadeCondOnlyCFG", "inputs": {"model": ["1", 0]}}), "cond")
    assert np.abs(cond_only - cfg1).max() <= 1
    baseline = _run(runtime, _graph(), "base2")
    scaled = _run(runtime, _graph({"class_type": "FacadeScaleMiddle", "inputs": {"model": ["1", 0]}}), "mid")
    assert np.abs(scaled - baseline).max() > 8


@pytest.mark.parametrize("lora_path", ["", "load_lora_for_models", "comfy.lora", "parts"])
def test_comfy_sd_path_matches_loom_nodes(runtime, lora_path: str) -> None:
    with_lora = lora_path not in ("", "parts")
    expected = _run(runtime, _graph(lora=with_lora), f"loom-{lora_path}")
    pack_graph = {"1": {"class_type": "FacadeTextToImage",
                        "inputs": {"ckpt_name": "tiny.safetensors", "text": "a fox", "seed": 7,
                                   "lora_name": "tiny_lora.safetensors" if with_lora else "",
                                   "lora_path": lora_path or "load_lora_for_models"}},
                  "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    got = _run(runtime, pack_graph, f"pack-{lora_path}", node="2")
    assert np.array_equal(got, expected)
    if with_lora:
        assert not np.array_equal(got, _run(runtime, _graph(), "plain"))


def test_ops_and_model_management_follow_the_manager(runtime) -> None:
    graph = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
             "2": {"class_type": "FacadeOpsProbe", "inputs": {"model": ["1", 0]}}}
    result, _ = run_prompt(runtime, graph, "probe")
    assert result.status == "success", result.error
    # manual_cast computes in the input's dtype: ones(4) · (0, .1, .2, .3) = 0.6; --cpu: fp32, not fp16
    assert result.outputs["2"]["facts"] == ["torch.float32", "0.6", "torch.float32", "False", "cpu",
                                            "torch.float32", "True", "True"]
    import comfy.model_management as mm
    import comfy.ops

    layer = comfy.ops.manual_cast.Linear(4, 3, dtype=torch.float16)
    assert layer.weight.dtype == torch.float16
    out = layer(torch.ones(1, 4))
    assert out.dtype == torch.float32
    assert mm.unet_dtype() == torch.float32 and mm.should_use_fp16() is False  # --cpu: fp32
    assert mm.cast_to_device(torch.ones(2, dtype=torch.float16), "cpu", torch.float32).dtype == torch.float32
    assert mm.unet_manual_cast(torch.float16, "cpu") == torch.float32
    assert mm.vram_state == mm.VRAMState.DISABLED


@pytest.fixture(scope="module")
def control_runtime(tmp_path_factory):
    from tests.fixtures.tiny_clip_vision import tiny_clip_vision_state_dict
    from tests.fixtures.tiny_controlnet import tiny_controlnet_state_dict, write_state_dict
    from tests.fixtures.tiny_sdxl import tiny_sdxl_state_dict, write

    base = tmp_path_factory.mktemp("control_facades")
    write_tiny_checkpoint(base / "models" / "checkpoints" / "tiny.safetensors", family="sd15")
    write(tiny_sdxl_state_dict(), base / "models" / "checkpoints" / "tiny_xl.safetensors")
    write_state_dict(tiny_controlnet_state_dict("sd15"), base / "models" / "controlnet" / "cn.safetensors")
    write_state_dict(tiny_clip_vision_state_dict(), base / "models" / "clip_vision" / "vision.safetensors")
    (base / "input").mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.random.default_rng(3).random((64, 64, 3)) * 255).astype(np.uint8)).save(
        base / "input" / "hint.png")
    rt = make_runtime(base, packs=PACKS)
    assert all(p.state == "ok" for p in rt.custom_packs), [p.to_json() for p in rt.custom_packs]
    return rt


def test_comfy_controlnet_path_matches_loom_nodes(control_runtime) -> None:
    hint = {"class_type": "LoadImage", "inputs": {"image": "hint.png"}}
    loom = _graph()
    loom.update({"10": hint, "11": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "cn.safetensors"}},
                 "12": {"class_type": "ControlNetApply", "inputs": {"conditioning": ["2", 0], "control_net": ["11", 0],
                                                                    "image": ["10", 0], "strength": 0.9}}})
    loom["5"]["inputs"]["positive"] = ["12", 0]
    pack = _graph()
    pack.update({"10": hint, "12": {"class_type": "FacadeControlNetApply",
                                    "inputs": {"conditioning": ["2", 0], "image": ["10", 0],
                                               "control_net_name": "cn.safetensors", "strength": 0.9}}})
    pack["5"]["inputs"]["positive"] = ["12", 0]
    expected = _run(control_runtime, loom, "cn-loom")
    assert np.array_equal(_run(control_runtime, pack, "cn-pack"), expected)
    assert not np.array_equal(expected, _run(control_runtime, _graph(), "cn-none"))


def test_comfy_clip_vision_equals_loom_encode(control_runtime) -> None:
    graph = {"1": {"class_type": "LoadImage", "inputs": {"image": "hint.png"}},
             "2": {"class_type": "FacadeClipVisionEncode", "inputs": {"clip_name": "vision.safetensors",
                                                                      "image": ["1", 0]}},
             "3": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": "vision.safetensors"}},
             "4": {"class_type": "CLIPVisionEncode", "inputs": {"clip_vision": ["3", 0], "image": ["1", 0],
                                                                "crop": "center"}},
             "5": {"class_type": "FacadeCompareVision", "inputs": {"a": ["2", 0], "b": ["4", 0]}}}
    result, _ = run_prompt(control_runtime, graph, "vision")
    assert result.status == "success", result.error
    assert result.outputs["5"] == {"equal": [True, True, True], "shape": [[1, 48]]}


@pytest.mark.parametrize("ckpt, loader", [("tiny.safetensors", "sd1"), ("tiny_xl.safetensors", "sdxl")])
def test_prompt_pack_inspection(control_runtime, ckpt: str, loader: str) -> None:
    graph = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
             "2": {"class_type": "FacadeInspect", "inputs": {"clip": ["1", 1], "ckpt_name": ckpt}}}
    result, _ = run_prompt(control_runtime, graph, f"inspect-{ckpt}")
    assert result.status == "success", result.error
    (facts,) = result.outputs["2"]["facts"]
    assert facts["prefix"] == "model.diffusion_model." and facts["family"] == loader
    assert facts["sdxl"] is (loader == "sdxl") and facts["refiner"] is False
    assert facts["tokens"] == (["g", "l"] if loader == "sdxl" else ["l"])
    assert facts["latent_format"] == ("SDXL" if loader == "sdxl" else "SD15")
