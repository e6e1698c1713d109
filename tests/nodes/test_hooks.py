"""Hook nodes through the real executor on a tiny SD1.5 checkpoint and a tiny LoRA file: ComfyUI's declarations,
a hook at strength 0 equals no LoRA, a hook over the whole run equals LoraLoaderModelOnly, a keyframe switching
the LoRA off mid-run equals KSamplerAdvanced split at that step with/without the LoRA, weights restored
afterwards, timestep ranges, default conds, and SetClipHooks on text encoding."""
from __future__ import annotations

from typing import Any

import pytest
import torch

from diffusion.adapters.hooks import HookKeyframe, HookKeyframeGroup, KeyframeCursor, interpolate
from diffusion.sampling.sample import ksampler_sigmas
from tests.fixtures.tiny_checkpoints import write_tiny_checkpoint
from tests.fixtures.tiny_loras import write_tiny_lora
from tests.nodes.sd_env import SDEnv, txt2img

LORA = "hook.safetensors"
OTHER = "other-sd15.safetensors"
STEPS = 4


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> SDEnv:
    env = SDEnv(tmp_path_factory.mktemp("hooks"))
    write_tiny_lora(env.base / "models" / "loras" / LORA, "kohya")
    write_tiny_checkpoint(env.base / "models" / "checkpoints" / OTHER, seed=7)
    return env


def _latent(env: SDEnv, prompt: dict[str, Any], node: str = "3") -> torch.Tensor:
    return env.value(prompt, node)["samples"]


def _hooked(strength: float = 1.0, keyframes: list[tuple[float, float]] | None = None, **kw: Any) -> dict:
    """txt2img with a model-only hook LoRA attached to both prompts (optionally scheduled)."""
    prompt = txt2img(steps=STEPS, **kw)
    prompt["20"] = {"class_type": "CreateHookLoraModelOnly", "inputs": {"lora_name": LORA,
                                                                        "strength_model": strength}}
    hooks_ref = ["20", 0]
    previous = None
    for i, (mult, start) in enumerate(keyframes or []):
        inputs: dict[str, Any] = {"strength_mult": mult, "start_percent": start}
        if previous is not None:
            inputs["prev_hook_kf"] = previous
        prompt[f"3{i}"] = {"class_type": "CreateHookKeyframe", "inputs": inputs}
        previous = [f"3{i}", 0]
    if previous is not None:
        prompt["21"] = {"class_type": "SetHookKeyframes", "inputs": {"hooks": hooks_ref, "hook_kf": previous}}
        hooks_ref = ["21", 0]
    prompt["22"] = {"class_type": "PairConditioningSetProperties",
                    "inputs": {"positive_NEW": ["6", 0], "negative_NEW": ["7", 0], "strength": 1.0,
                               "set_cond_area": "default", "hooks": hooks_ref}}
    prompt["3"]["inputs"].update(positive=["22", 0], negative=["22", 1])
    return prompt


def _with_lora_loader(**kw: Any) -> dict:
    prompt = txt2img(steps=STEPS, **kw)
    prompt["10"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["4", 0], "lora_name": LORA,
                                                                    "strength_model": 1.0}}
    prompt["3"]["inputs"]["model"] = ["10", 0]
    return prompt


def test_declarations_match_comfyui(env: SDEnv) -> None:
    info = env.registry.object_info(env.folders)
    lora = info["CreateHookLora"]
    assert lora["category"] == "advanced/hooks/create" and lora["output"] == ["HOOKS"]
    assert list(lora["input"]["required"]) == ["lora_name", "strength_model", "strength_clip"]
    assert list(lora["input"]["optional"]) == ["prev_hooks"]
    opts = lora["input"]["required"]["strength_model"][1]
    assert {k: opts[k] for k in ("default", "min", "max", "step")} == {"default": 1.0, "min": -20.0, "max": 20.0,
                                                                       "step": 0.01}
    props = info["PairConditioningSetPropertiesAndCombine"]
    assert list(props["input"]["required"]) == ["positive", "negative", "positive_NEW", "negative_NEW", "strength",
                                                "set_cond_area"]
    assert list(props["input"]["optional"]) == ["mask", "hooks", "timesteps"]
    assert props["output"] == ["CONDITIONING", "CONDITIONING"] and props["output_name"] == ["positive", "negative"]
    rng = info["ConditioningTimestepsRange"]
    assert rng["output"] == ["TIMESTEPS_RANGE"] * 3
    assert rng["output_name"] == ["TIMESTEPS_RANGE", "BEFORE_RANGE", "AFTER_RANGE"]
    assert list(info["CombineHooks8"]["input"]["optional"]) == [f"hooks_{x}" for x in "ABCDEFGH"]
    interp = info["CreateHookKeyframesInterpolated"]["input"]["required"]
    assert interp["interpolation"][0] == ["linear", "ease_in", "ease_out", "ease_in_out"]
    assert interp["keyframes_count"][1]["default"] == 5 and interp["keyframes_count"][1]["min"] == 2
    assert info["CreateHookKeyframe"]["output_name"] == ["HOOK_KF"]
    clip = info["SetClipHooks"]["input"]
    assert list(clip["required"]) == ["clip", "apply_to_conds", "schedule_clip"] and list(clip["optional"]) == [
        "hooks"]
    assert info["ConditioningSetDefaultCombine"]["display_name"] == "Cond Set Default Combine"
    as_lora = info["CreateHookModelAsLora"]["input"]
    assert list(as_lora["required"]) == ["ckpt_name", "strength_model", "strength_clip"]
    assert list(info["CreateHookModelAsLoraModelOnly"]["input"]["required"]) == ["ckpt_name", "strength_model"]
    floats = info["CreateHookKeyframesFromFloats"]["input"]["required"]["floats_strength"]
    assert floats[0] == "FLOATS" and floats[1]["forceInput"] is True
    assert all(info[name]["experimental"] for name in ("CreateHookLora", "SetHookKeyframes", "CombineHooks2"))


def test_zero_strength_hook_equals_no_lora(env: SDEnv) -> None:
    base = _latent(env, txt2img(steps=STEPS))
    assert torch.equal(_latent(env, _hooked(strength=0.0)), base)
    assert torch.equal(_latent(env, _hooked(keyframes=[(0.0, 0.0)])), base)


def test_whole_range_hook_equals_lora_loader_and_weights_are_restored(env: SDEnv) -> None:
    handle = env.value({"4": {"class_type": "CheckpointLoaderSimple",
                              "inputs": {"ckpt_name": "tiny-sd15.safetensors"}}}, "4", 0)
    snapshot = {k: v.detach().clone() for k, v in handle.model.state_dict().items()}
    base = _latent(env, txt2img(steps=STEPS))
    hooked = _latent(env, _hooked())
    loader = _latent(env, _with_lora_loader())
    assert (hooked - base).abs().max() > 1e-3
    torch.testing.assert_close(hooked, loader, rtol=1e-4, atol=1e-4)
    assert torch.equal(_latent(env, txt2img(steps=STEPS)), base)
    env.models.unload_all()
    for key, value in handle.model.state_dict().items():
        assert torch.equal(value, snapshot[key]), key


def _switch_percent(env: SDEnv, step: int) -> float:
    """A start_percent whose sigma lies between the sigmas of steps `step`-1 and `step`."""
    model = env.value({"4": {"class_type": "CheckpointLoaderSimple",
                             "inputs": {"ckpt_name": "tiny-sd15.safetensors"}}}, "4", 0).model
    sigmas = ksampler_sigmas(model, "normal", STEPS, "euler")
    to_sigma = model.model_sampling.percent_to_sigma
    for i in range(1, 1000):
        p = i / 1000
        if float(sigmas[step]) <= to_sigma(p) < float(sigmas[step - 1]):
            return p
    raise AssertionError("no percent between the two steps' sigmas")


def _split(lora_steps: int) -> dict:
    """KSamplerAdvanced with the LoRA for the first `lora_steps` steps, then without it."""
    prompt = _with_lora_loader()
    common = {"noise_seed": 1, "steps": STEPS, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal",
              "positive": ["6", 0], "negative": ["7", 0]}
    prompt["3"] = {"class_type": "KSamplerAdvanced", "inputs": {
        **common, "model": ["10", 0], "add_noise": "enable", "latent_image": ["5", 0], "start_at_step": 0,
        "end_at_step": lora_steps, "return_with_leftover_noise": "enable"}}
    prompt["11"] = {"class_type": "KSamplerAdvanced", "inputs": {
        **common, "model": ["4", 0], "add_noise": "disable", "latent_image": ["3", 0], "start_at_step": lora_steps,
        "end_at_step": 10000, "return_with_leftover_noise": "disable"}}
    prompt["8"]["inputs"]["samples"] = ["11", 0]
    return prompt


def test_keyframe_switch_equals_split_sampling(env: SDEnv) -> None:
    percent = _switch_percent(env, 2)
    scheduled = _latent(env, _hooked(keyframes=[(1.0, 0.0), (0.0, percent)]))
    split = _latent(env, _split(2), "11")
    torch.testing.assert_close(scheduled, split, rtol=1e-4, atol=1e-4)
    assert (scheduled - _latent(env, _hooked())).abs().max() > 1e-4


def test_first_keyframe_holds_its_guaranteed_step(env: SDEnv) -> None:
    """Two keyframes at 0%: the first still holds for one step (guarantee_steps=1), as in ComfyUI."""
    scheduled = _latent(env, _hooked(keyframes=[(1.0, 0.0), (0.0, 0.0)]))
    torch.testing.assert_close(scheduled, _latent(env, _split(1), "11"), rtol=1e-4, atol=1e-4)


def test_timesteps_range_on_conditioning(env: SDEnv) -> None:
    base = _latent(env, txt2img(steps=STEPS))
    prompt = txt2img(steps=STEPS)
    prompt["40"] = {"class_type": "ConditioningTimestepsRange", "inputs": {"start_percent": 0.0,
                                                                           "end_percent": 0.5}}
    prompt["41"] = {"class_type": "ConditioningSetProperties",
                    "inputs": {"cond_NEW": ["6", 0], "strength": 1.0, "set_cond_area": "default",
                               "timesteps": ["40", 0]}}
    prompt["42"] = {"class_type": "ConditioningSetProperties",
                    "inputs": {"cond_NEW": ["7", 0], "strength": 1.0, "set_cond_area": "default",
                               "timesteps": ["40", 2]}}
    prompt["43"] = {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["41", 0],
                                                                    "conditioning_2": ["42", 0]}}
    prompt["3"]["inputs"]["positive"] = ["43", 0]
    ranged = _latent(env, prompt)
    reference = txt2img(steps=STEPS)
    reference["41"] = {"class_type": "ConditioningSetTimestepRange",
                       "inputs": {"conditioning": ["6", 0], "start": 0.0, "end": 0.5}}
    reference["42"] = {"class_type": "ConditioningSetTimestepRange",
                       "inputs": {"conditioning": ["7", 0], "start": 0.5, "end": 1.0}}
    reference["43"] = {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["41", 0],
                                                                       "conditioning_2": ["42", 0]}}
    reference["3"]["inputs"]["positive"] = ["43", 0]
    assert torch.equal(ranged, _latent(env, reference))
    assert (ranged - base).abs().max() > 1e-4


def test_default_cond_fills_what_is_left(env: SDEnv) -> None:
    """A default cond beside a full-weight cond gets no weight; alone it acts as a plain cond."""
    base = _latent(env, txt2img(steps=STEPS))
    prompt = txt2img(steps=STEPS)
    prompt["50"] = {"class_type": "ConditioningSetDefaultCombine", "inputs": {"cond": ["6", 0],
                                                                             "cond_DEFAULT": ["7", 0]}}
    prompt["3"]["inputs"]["positive"] = ["50", 0]
    assert torch.equal(_latent(env, prompt), base)
    prompt["52"] = {"class_type": "ConditioningSetAreaStrength", "inputs": {"conditioning": ["6", 0],
                                                                            "strength": 0.0}}
    prompt["53"] = {"class_type": "PairConditioningSetDefaultCombine",
                    "inputs": {"positive": ["52", 0], "negative": ["7", 0], "positive_DEFAULT": ["6", 0],
                               "negative_DEFAULT": ["7", 0]}}
    prompt["3"]["inputs"].update(positive=["53", 0], negative=["53", 1])
    # (the zero-weight cond still runs in the batch, which moves the float sums slightly)
    torch.testing.assert_close(_latent(env, prompt), base, rtol=1e-3, atol=1e-3)


def test_clip_hooks_patch_text_encoding_like_lora_loader(env: SDEnv) -> None:
    prompt = {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd15.safetensors"}},
              "60": {"class_type": "CreateHookLora", "inputs": {"lora_name": LORA, "strength_model": 1.0,
                                                                "strength_clip": 1.0}},
              "61": {"class_type": "SetClipHooks", "inputs": {"clip": ["4", 1], "apply_to_conds": True,
                                                              "schedule_clip": False, "hooks": ["60", 0]}},
              "62": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red cube", "clip": ["61", 0]}},
              "63": {"class_type": "LoraLoader", "inputs": {"model": ["4", 0], "clip": ["4", 1], "lora_name": LORA,
                                                            "strength_model": 0.0, "strength_clip": 1.0}},
              "64": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red cube", "clip": ["63", 1]}},
              "65": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red cube", "clip": ["4", 1]}}}
    hooked, loader, plain = (env.value(prompt, n)[0] for n in ("62", "64", "65"))
    assert (hooked[0] - plain[0]).abs().max() > 1e-4
    torch.testing.assert_close(hooked[0], loader[0], rtol=1e-4, atol=1e-4)
    assert hooked[1]["hooks"].hooks and "hooks" not in plain[1]


def test_keyframe_cursor_walks_the_schedule() -> None:
    group = (HookKeyframeGroup().add(HookKeyframe(1.0, 0.0)).add(HookKeyframe(0.5, 0.25, guarantee_steps=2))
             .add(HookKeyframe(0.2, 0.5)))
    to_sigma = lambda p: 10.0 * (1 - p)  # noqa: E731 - a monotone stand-in schedule
    cursor = KeyframeCursor()
    seen = [cursor.advance(group, s, to_sigma) for s in (10.0, 10.0, 7.0, 4.0, 3.0, 1.0)]
    # 10 (kf0), same sigma again (no new step), 7 (kf1 starts at 7.5), 4 (kf1 still guaranteed), 3 and 1 (kf2)
    assert seen == [1.0, 1.0, 0.5, 0.5, 0.2, 0.2]


def test_keyframe_groups_and_interpolation() -> None:
    group = HookKeyframeGroup().add(HookKeyframe(0.5, 0.6)).add(HookKeyframe(2.0, 0.0))
    assert [k.start_percent for k in group.keyframes] == [0.0, 0.6]
    to_sigma = lambda p: 10.0 * (1 - p)  # noqa: E731 - a monotone stand-in schedule
    assert group.strength_at(9.0, to_sigma) == 2.0 and group.strength_at(4.0, to_sigma) == 0.5
    assert interpolate(0.0, 1.0, 3, "linear") == [0.0, 0.5, 1.0]
    assert interpolate(0.0, 1.0, 3, "ease_in") == [0.0, 0.25, 1.0]
    with pytest.raises(ValueError, match="interpolation"):
        interpolate(0.0, 1.0, 3, "cubic")


def test_keyframes_from_floats_and_interpolated_nodes(env: SDEnv) -> None:
    prompt = {"70": {"class_type": "CreateHookKeyframesInterpolated",
                     "inputs": {"strength_start": 1.0, "strength_end": 0.0, "interpolation": "linear",
                                "start_percent": 0.0, "end_percent": 1.0, "keyframes_count": 3,
                                "print_keyframes": False}}}
    group = env.value(prompt, "70")
    assert [(k.strength, k.start_percent) for k in group.keyframes] == [(1.0, 0.0), (0.5, 0.5), (0.0, 1.0)]
    assert [k.guarantee_steps for k in group.keyframes] == [1, 0, 0]


def test_model_as_lora_hook_at_strength_one_samples_like_the_other_checkpoint(env: SDEnv) -> None:
    """W + 1·(W_other - W) = W_other: the hooked run equals sampling the other checkpoint's MODEL (same prompts)."""
    prompt = txt2img(steps=STEPS)
    prompt["80"] = {"class_type": "CreateHookModelAsLoraModelOnly", "inputs": {"ckpt_name": OTHER,
                                                                              "strength_model": 1.0}}
    prompt["81"] = {"class_type": "PairConditioningSetProperties",
                    "inputs": {"positive_NEW": ["6", 0], "negative_NEW": ["7", 0], "strength": 1.0,
                               "set_cond_area": "default", "hooks": ["80", 0]}}
    prompt["3"]["inputs"].update(positive=["81", 0], negative=["81", 1])
    hooked = _latent(env, prompt)
    other = txt2img(steps=STEPS)
    other["90"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": OTHER}}
    other["3"]["inputs"]["model"] = ["90", 0]
    expected = _latent(env, other)
    assert (hooked - _latent(env, txt2img(steps=STEPS))).abs().max() > 1e-3
    torch.testing.assert_close(hooked, expected, rtol=1e-3, atol=1e-3)


def test_model_as_lora_clip_hook_encodes_like_the_other_checkpoint(env: SDEnv) -> None:
    prompt = {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd15.safetensors"}},
              "90": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": OTHER}},
              "80": {"class_type": "CreateHookModelAsLora", "inputs": {"ckpt_name": OTHER, "strength_model": 1.0,
                                                                       "strength_clip": 1.0}},
              "81": {"class_type": "SetClipHooks", "inputs": {"clip": ["4", 1], "apply_to_conds": False,
                                                              "schedule_clip": False, "hooks": ["80", 0]}},
              "82": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red cube", "clip": ["81", 0]}},
              "83": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red cube", "clip": ["90", 1]}}}
    hooked, other = (env.value(prompt, n)[0] for n in ("82", "83"))
    torch.testing.assert_close(hooked[0], other[0], rtol=1e-3, atol=1e-3)
    assert "hooks" not in hooked[1]


def _scheduled_clip_prompt() -> dict:
    prompt = txt2img(steps=STEPS)
    prompt["60"] = {"class_type": "CreateHookLora", "inputs": {"lora_name": LORA, "strength_model": 0.0,
                                                              "strength_clip": 1.0}}
    prompt["61"] = {"class_type": "CreateHookKeyframe", "inputs": {"strength_mult": 1.0, "start_percent": 0.0}}
    prompt["62"] = {"class_type": "CreateHookKeyframe", "inputs": {"strength_mult": 0.0, "start_percent": 0.5,
                                                                  "prev_hook_kf": ["61", 0]}}
    prompt["63"] = {"class_type": "SetHookKeyframes", "inputs": {"hooks": ["60", 0], "hook_kf": ["62", 0]}}
    prompt["64"] = {"class_type": "SetClipHooks", "inputs": {"clip": ["4", 1], "apply_to_conds": False,
                                                             "schedule_clip": True, "hooks": ["63", 0]}}
    prompt["6"]["inputs"]["clip"] = ["64", 0]
    return prompt


def test_scheduled_clip_hooks_encode_once_per_range(env: SDEnv) -> None:
    prompt = _scheduled_clip_prompt()
    prompt["70"] = {"class_type": "LoraLoader", "inputs": {"model": ["4", 0], "clip": ["4", 1], "lora_name": LORA,
                                                           "strength_model": 0.0, "strength_clip": 1.0}}
    prompt["71"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "a red cube", "clip": ["70", 1]}}
    prompt["72"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "a red cube", "clip": ["4", 1]}}
    scheduled, with_lora, plain = (env.value(prompt, n) for n in ("6", "71", "72"))
    assert [(o["clip_start_percent"], o["clip_end_percent"]) for _, o in scheduled] == [(0.0, 0.5), (0.5, 1.0)]
    torch.testing.assert_close(scheduled[0][0], with_lora[0][0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(scheduled[1][0], plain[0][0], rtol=1e-4, atol=1e-4)
    # sampling with the scheduled conds equals the two encodings limited to the same ranges
    reference = txt2img(steps=STEPS)
    reference["70"], reference["71"] = prompt["70"], prompt["71"]
    reference["73"] = {"class_type": "ConditioningSetTimestepRange",
                       "inputs": {"conditioning": ["71", 0], "start": 0.0, "end": 0.5}}
    reference["74"] = {"class_type": "ConditioningSetTimestepRange",
                       "inputs": {"conditioning": ["6", 0], "start": 0.5, "end": 1.0}}
    reference["75"] = {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["73", 0],
                                                                       "conditioning_2": ["74", 0]}}
    reference["3"]["inputs"]["positive"] = ["75", 0]
    torch.testing.assert_close(_latent(env, _scheduled_clip_prompt()), _latent(env, reference), rtol=1e-4,
                               atol=1e-4)


def test_clip_schedule_ranges() -> None:
    from diffusion.adapters.hooks import HookGroup, WeightHook, clip_schedule

    frames = (HookKeyframeGroup().add(HookKeyframe(1.0, 0.0)).add(HookKeyframe(1.0, 0.3))
              .add(HookKeyframe(0.5, 0.6)))
    scheduled = WeightHook({}, "a", keyframes=frames)
    plain = WeightHook({}, "b")
    ranges = clip_schedule(HookGroup((scheduled, plain)))
    assert [r for r, _ in ranges] == [(0.0, 0.6), (0.6, 1.0)]  # equal strengths at 0 and 0.3 share a range
    assert [m[id(scheduled)] for _, m in ranges] == [1.0, 0.5] and all(m[id(plain)] == 1.0 for _, m in ranges)


def test_keyframes_from_floats_accepts_floats_and_names_bad_input() -> None:
    from nodes.hooks import CreateHookKeyframesFromFloats

    (group,) = CreateHookKeyframesFromFloats().execute([1.0, 0.5, 0.25, 0.0], 0.0, 0.75)
    assert [(k.strength, k.start_percent) for k in group.keyframes] == [(1.0, 0.0), (0.5, 0.25), (0.25, 0.5),
                                                                         (0.0, 0.75)]
    (single,) = CreateHookKeyframesFromFloats().execute(0.5)
    assert [(k.strength, k.start_percent) for k in single.keyframes] == [(0.5, 0.0)]
    for bad in ("1.0", [1.0, "x"], None):
        with pytest.raises(ValueError, match="CreateHookKeyframesFromFloats: input 'floats_strength'"):
            CreateHookKeyframesFromFloats().execute(bad)
