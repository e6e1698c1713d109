"""ComfyUI's `nodes` module API over Loom's node library, through the real executor with a tiny checkpoint: a pack
that calls core nodes as objects gets the same image as the same graph built from Loom's own nodes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.custom_nodes.cn_env import make_runtime, run_prompt
from tests.fixtures.tiny_checkpoints import write_tiny_checkpoint

PACKS = Path(__file__).resolve().parent / "nodes_api_packs"

LOOM_GRAPH = {
    "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
    "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a fox"}},
    "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
    "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    "5": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": 7, "steps": 3, "cfg": 7.0,
                                               "sampler_name": "euler", "scheduler": "normal", "positive": ["2", 0],
                                               "negative": ["3", 0], "latent_image": ["4", 0], "denoise": 1.0}},
    "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
    "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}},
}


@pytest.fixture()
def runtime(tmp_path: Path):
    write_tiny_checkpoint(tmp_path / "models" / "checkpoints" / "tiny.safetensors", family="sd15")
    rt = make_runtime(tmp_path, packs=PACKS)
    assert [p.state for p in rt.custom_packs] == ["ok"], [p.to_json() for p in rt.custom_packs]
    return rt


def _pack_graph(common: bool) -> dict:
    return {"1": {"class_type": "PackTextToImage", "inputs": {"ckpt_name": "tiny.safetensors", "text": "a fox",
                                                              "seed": 7, "use_common_ksampler": common}},
            "2": {"class_type": "InvertTwice", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}


def _preview_pixels(runtime, result, node_id: str) -> np.ndarray:
    (image,) = result.outputs[node_id]["images"]
    path = Path(runtime.folders.temp_directory) / image["subfolder"] / image["filename"]
    return np.asarray(Image.open(path).convert("RGB"))


def test_pack_calling_core_nodes_matches_loom_nodes(runtime) -> None:
    loom, _ = run_prompt(runtime, LOOM_GRAPH, "loom")
    assert loom.status == "success", loom.error
    expected = _preview_pixels(runtime, loom, "7")
    assert expected.shape == (64, 64, 3) and expected.std() > 0
    for common in (False, True):
        result, _ = run_prompt(runtime, _pack_graph(common), f"pack-{common}")
        assert result.status == "success", result.error
        assert np.array_equal(_preview_pixels(runtime, result, "3"), expected), f"common_ksampler={common}"


def test_facades_follow_comfyui_signatures_and_shapes(runtime) -> None:
    import nodes

    assert nodes.MAX_RESOLUTION == 16384
    assert "KSampler" in nodes.NODE_CLASS_MAPPINGS and "PackTextToImage" in nodes.NODE_CLASS_MAPPINGS
    assert nodes.NODE_DISPLAY_NAME_MAPPINGS["KSamplerAdvanced"] == "KSampler (Advanced)"
    assert nodes.NODE_CLASS_MAPPINGS["PackTextToImage"].__name__ == "PackTextToImage"  # a pack's own class
    encode = nodes.CLIPTextEncode
    assert encode.FUNCTION == "encode" and encode.RETURN_TYPES == ("CONDITIONING",)
    assert list(encode.INPUT_TYPES()["required"]) == ["text", "clip"]
    assert nodes.VAEDecode.FUNCTION == "decode" and nodes.KSampler.FUNCTION == "sample"
    latent = nodes.EmptyLatentImage().generate(64, 32, 2)
    assert isinstance(latent, tuple) and latent[0]["samples"].shape == (2, 4, 4, 8)
    inverted = nodes.ImageInvert().invert(torch.full((1, 2, 2, 3), 0.25))
    assert torch.allclose(inverted[0], torch.full((1, 2, 2, 3), 0.75))
    with pytest.raises(TypeError, match="positional"):
        nodes.ImageInvert().invert(torch.zeros(1, 2, 2, 3), 1)
    with pytest.raises(AttributeError):
        nodes.NoSuchCoreNode  # noqa: B018
    assert hasattr(nodes, "spec")  # Loom's own submodules stay reachable


def test_pack_sampling_through_comfy_sample_matches_ksampler(runtime) -> None:
    expected, _ = run_prompt(runtime, LOOM_GRAPH, "loom-image")
    assert expected.status == "success", expected.error
    graph = {k: v for k, v in LOOM_GRAPH.items() if k in ("1", "2", "3", "4", "6", "7")}
    pack = {**graph,
            "5": {"class_type": "PackSampleLikeComfy", "inputs": {"model": ["1", 0], "positive": ["2", 0],
                                                                  "negative": ["3", 0], "latent_image": ["4", 0],
                                                                  "seed": 7, "custom": False}},
            "8": {"class_type": "PreviewAny", "inputs": {"source": ["5", 1]}}}
    result, events = run_prompt(runtime, pack, "pack-sample")
    assert result.status == "success", result.error
    assert np.array_equal(_preview_pixels(runtime, result, "7"), _preview_pixels(runtime, expected, "7"))
    progress = [e.data for e in events if getattr(e, "type", None) == "progress" and e.data.get("node") == "5"]
    assert [p["value"] for p in progress] == [1, 2, 3], "latent_preview.prepare_callback reports the steps"
    assert result.outputs["8"]["text"] == ["8188|False|True|True"]  # comfy.cli_args and k_diffusion as packs read
    custom = {**pack, "5": {**pack["5"], "inputs": {**pack["5"]["inputs"], "custom": True}}}
    result, _ = run_prompt(runtime, custom, "pack-sample-custom")
    assert result.status == "success", result.error
    assert not np.array_equal(_preview_pixels(runtime, result, "7"), _preview_pixels(runtime, expected, "7"))
