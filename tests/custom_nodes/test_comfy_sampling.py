"""ComfyUI's sampling internals over Loom, through the real executor with a tiny SD1.5 checkpoint: a pack's
`comfy.samplers.CFGGuider` subclass (plain CFG in `predict_noise`) fed to SamplerCustomAdvanced, and
`comfy.samplers.KSampler(...).sample(...)`, give the image of Loom's KSampler; patcher_extension wrappers run."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.custom_nodes.cn_env import make_runtime, run_prompt
from tests.fixtures.tiny_checkpoints import write_tiny_checkpoint

PACKS = Path(__file__).resolve().parent / "sampling_packs"
BASE = {
    "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
    "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a fox"}},
    "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
    "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
    "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}},
}
KSAMPLER = {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": 7, "steps": 3, "cfg": 7.0,
                                                 "sampler_name": "euler", "scheduler": "normal", "positive": ["2", 0],
                                                 "negative": ["3", 0], "latent_image": ["4", 0], "denoise": 1.0}}


def _guider_graph(wrapped: bool, pack_sampler: bool = False) -> dict:
    sampler = {"class_type": "PackSamplerSelect", "inputs": {}} if pack_sampler else \
        {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}}
    return {**BASE,
            "10": {"class_type": "PackPlainCFGGuider", "inputs": {"model": ["1", 0], "positive": ["2", 0],
                                                                  "negative": ["3", 0], "cfg": 7.0,
                                                                  "wrapped": wrapped}},
            "11": {"class_type": "RandomNoise", "inputs": {"noise_seed": 7}},
            "12": sampler,
            "13": {"class_type": "BasicScheduler", "inputs": {"model": ["1", 0], "scheduler": "normal", "steps": 3,
                                                              "denoise": 1.0}},
            "5": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["11", 0], "guider": ["10", 0],
                                                                    "sampler": ["12", 0], "sigmas": ["13", 0],
                                                                    "latent_image": ["4", 0]}}}


@pytest.fixture()
def runtime(tmp_path: Path):
    write_tiny_checkpoint(tmp_path / "models" / "checkpoints" / "tiny.safetensors", family="sd15")
    rt = make_runtime(tmp_path, packs=PACKS)
    assert [p.state for p in rt.custom_packs] == ["ok"], [p.to_json() for p in rt.custom_packs]
    return rt


def _pixels(runtime, result, node_id: str = "7") -> np.ndarray:
    assert result.status == "success", result.error
    (image,) = result.outputs[node_id]["images"]
    return np.asarray(Image.open(Path(runtime.folders.temp_directory) / image["subfolder"] / image["filename"]))


def test_cfg_guider_subclass_and_ksampler_object_match_ksampler(runtime) -> None:
    expected = _pixels(runtime, run_prompt(runtime, {**BASE, "5": KSAMPLER}, "loom")[0])
    assert expected.std() > 0
    guided = _pixels(runtime, run_prompt(runtime, _guider_graph(False), "guider")[0])
    assert np.array_equal(guided, expected)
    calls = sys.modules["loom_custom_nodes.comfy_guider_pack"].CALLS
    patched_before = calls["patched_batch"]
    obj = {**BASE, "5": {"class_type": "PackKSamplerObject",
                         "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0],
                                    "latent_image": ["4", 0], "seed": 7, "steps": 3, "cfg": 7.0,
                                    "sampler_name": "euler", "scheduler": "normal"}}}
    assert np.array_equal(_pixels(runtime, run_prompt(runtime, obj, "object")[0]), expected)
    assert calls["patched_batch"] == patched_before + 3  # the pack's monkeypatch of calc_cond_batch ran, per step


def test_wrappers_on_a_model_clone_run_around_the_guider(runtime) -> None:
    calls = sys.modules["loom_custom_nodes.comfy_guider_pack"].CALLS
    before = dict(calls)
    expected = _pixels(runtime, run_prompt(runtime, {**BASE, "5": KSAMPLER}, "loom")[0])
    wrapped = _pixels(runtime, run_prompt(runtime, _guider_graph(True), "wrapped")[0])
    assert np.array_equal(wrapped, expected)
    assert calls["outer_sample"] == before["outer_sample"] + 1
    assert calls["sampler_sample"] == before["sampler_sample"] + 1
    assert calls["predict_noise"] == before["predict_noise"] + 3  # one per euler step


def test_pack_sampler_object_follows_comfyui_protocol(runtime) -> None:
    calls = sys.modules["loom_custom_nodes.comfy_guider_pack"].CALLS
    before = calls["pack_sampler"]
    expected = _pixels(runtime, run_prompt(runtime, {**BASE, "5": KSAMPLER}, "loom")[0])
    custom = _pixels(runtime, run_prompt(runtime, _guider_graph(False, pack_sampler=True), "pack-sampler")[0])
    assert calls["pack_sampler"] == before + 1
    assert np.array_equal(custom, expected)


def test_sampler_helpers_place_the_model(runtime) -> None:
    graph = {"1": BASE["1"], "2": BASE["2"],
             "5": {"class_type": "PackPlacementProbe", "inputs": {"model": ["1", 0], "positive": ["2", 0]}}}
    result, _ = run_prompt(runtime, graph, "probe")
    assert result.status == "success", result.error
    assert result.outputs["5"]["text"] == ["placed=True extra=0 memory=0 model_conds=True"]


def test_comfy_samplers_module_api() -> None:
    import compat.cfg_guider as cfg_guider
    from compat import patcher_extension as pe

    options: dict = {}
    order: list[str] = []

    def outer(executor, value):
        order.append("outer")
        return executor(value + 1) * 10

    def inner(executor, value):
        order.append("inner")
        return executor(value * 2)

    pe.add_wrapper(pe.WrappersMP.OUTER_SAMPLE, outer, options, is_model_options=True)
    pe.add_wrapper_with_key(pe.WrappersMP.OUTER_SAMPLE, "k", inner, options, is_model_options=True)
    wrappers = pe.get_all_wrappers(pe.WrappersMP.OUTER_SAMPLE, options, is_model_options=True)
    assert wrappers == [outer, inner]
    assert pe.WrapperExecutor.new_executor(lambda v: v + 100, wrappers).execute(1) == ((1 + 1) * 2 + 100) * 10
    assert order == ["outer", "inner"]
    merged = pe.merge_nested_dicts({"a": {"b": [1]}, "c": 1}, {"a": {"b": [2]}, "c": 2})
    assert merged == {"a": {"b": [2, 1]}, "c": 2}
    with pytest.raises(TypeError, match="MODEL"):
        cfg_guider.CFGGuider(torch.zeros(1))
