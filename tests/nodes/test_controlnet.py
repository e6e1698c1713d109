"""ControlNet / T2I-Adapter nodes through the real executor on tiny files in the real key layouts.

The residuals are checked against independent computations: a ControlNet whose encoder is the UNet's own, whose
zero convs are identities and whose hint adds nothing must return exactly the UNet's input-block activations
(captured from the real UNet through its `input_block_patch` hook); freshly initialised (zero) zero convs must
leave sampling unchanged; strength scales linearly; chained controls add up.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from diffusion.adapters.controlnet import ControlBase, ControlNet, T2IAdapter
from tests.fixtures.tiny_controlnet import tiny_controlnet_state_dict, tiny_t2i_adapter_state_dict, write_state_dict
from tests.nodes.sd_env import SDEnv, txt2img


@pytest.fixture()
def env(tmp_path: Path) -> SDEnv:
    return SDEnv(tmp_path)


def controlnet_dir(env: SDEnv) -> Path:
    return env.base / "models" / "controlnet"


def hint_image(size: int = 32, seed: int = 3) -> torch.Tensor:
    return torch.rand((1, size, size, 3), generator=torch.Generator().manual_seed(seed))


def with_control(env: SDEnv, name: str, strength: float = 1.0, start: float = 0.0, end: float = 1.0,
                 loader: str = "ControlNetLoader", image_key: str = "hint") -> dict[str, Any]:
    """txt2img with ControlNetApplyAdvanced between the text encoders and the sampler; the hint image comes
    from a LoadImage of input/<image_key>.png."""
    prompt = txt2img()
    loader_inputs: dict[str, Any] = {"control_net_name": name}
    if loader == "DiffControlNetLoader":
        loader_inputs["model"] = ["4", 0]
    prompt["20"] = {"class_type": loader, "inputs": loader_inputs}
    prompt["21"] = {"class_type": "LoadImage", "inputs": {"image": f"{image_key}.png"}}
    prompt["22"] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
        "positive": ["6", 0], "negative": ["7", 0], "control_net": ["20", 0], "image": ["21", 0],
        "strength": strength, "start_percent": start, "end_percent": end}}
    prompt["3"]["inputs"]["positive"] = ["22", 0]
    prompt["3"]["inputs"]["negative"] = ["22", 1]
    return prompt


def save_hint(env: SDEnv, key: str = "hint", seed: int = 3) -> None:
    from PIL import Image
    env.folders.input_directory.mkdir(parents=True, exist_ok=True)
    pixels = (hint_image(seed=seed)[0].numpy() * 255).round().astype("uint8")
    Image.fromarray(pixels).save(env.folders.input_directory / f"{key}.png")


def sampled(env: SDEnv, prompt: dict[str, Any]) -> torch.Tensor:
    return env.value(prompt, "3")["samples"]


def test_declarations_match_comfyui(env: SDEnv) -> None:
    info = env.registry.object_info(env.folders)
    adv = info["ControlNetApplyAdvanced"]
    assert list(adv["input"]["required"]) == ["positive", "negative", "control_net", "image", "strength",
                                              "start_percent", "end_percent"]
    assert adv["input"]["required"]["strength"][1] == {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01}
    assert adv["input"]["required"]["end_percent"][1] == {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.001}
    assert adv["input"]["optional"] == {"vae": ["VAE"]}
    assert adv["output"] == ["CONDITIONING", "CONDITIONING"] and adv["output_name"] == ["positive", "negative"]
    assert adv["category"] == "conditioning/controlnet"
    assert info["ControlNetApply"]["input"]["required"]["strength"][1]["max"] == 10.0
    assert info["ControlNetLoader"]["output"] == ["CONTROL_NET"]
    assert list(info["DiffControlNetLoader"]["input"]["required"]) == ["model", "control_net_name"]


def test_zero_initialised_controlnet_leaves_sampling_unchanged(env: SDEnv) -> None:
    write_state_dict(tiny_controlnet_state_dict(zero_convs="zero"), controlnet_dir(env) / "zero.safetensors")
    write_state_dict(tiny_controlnet_state_dict(), controlnet_dir(env) / "random.safetensors")
    save_hint(env)
    plain = sampled(env, txt2img())
    zero = sampled(env, with_control(env, "zero.safetensors"))
    active = sampled(env, with_control(env, "random.safetensors"))
    outside = sampled(env, with_control(env, "random.safetensors", start=0.0, end=0.0))
    torch.testing.assert_close(zero, plain)
    torch.testing.assert_close(outside, plain)  # never active: end_percent 0
    assert (active - plain).abs().max() > 1e-3


def controls_from(env: SDEnv, name: str, strength: float, loader: str = "ControlNetLoader") -> list:
    prompt = with_control(env, name, strength, loader=loader)
    return env.value({k: v for k, v in prompt.items() if k in ("4", "6", "7", "20", "21", "22")}, "22")


def residuals(control: ControlBase, x: torch.Tensor, sigma: float, context: torch.Tensor,
              model: Any) -> dict:
    control.pre_run(model, model.model_sampling.percent_to_sigma)
    return control.get_control(x, torch.tensor([sigma]), {"c_crossattn": context}, 1)


def test_residuals_equal_the_unet_encoder_and_scale_linearly(env: SDEnv) -> None:
    sd = tiny_controlnet_state_dict(zero_convs="identity", from_unet=True, dtype=torch.float32)
    write_state_dict(sd, controlnet_dir(env) / "copy.safetensors")
    save_hint(env)
    model = env.value({"4": txt2img()["4"]}, "4")
    cond = controls_from(env, "copy.safetensors", 1.0)
    control = cond[0][1]["control"]
    assert isinstance(control, ControlNet)
    x = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    context = cond[0][0]
    sigma = 3.0
    got = residuals(control, x, sigma, context, model.model)

    captured: list[torch.Tensor] = []

    def keep(h: torch.Tensor, options: dict) -> torch.Tensor:
        captured.append(h.clone())
        return h

    dm = model.model
    ms = dm.model_sampling
    unet = dm.diffusion_model.float()
    unet(ms.calculate_input(torch.tensor([sigma]), x), ms.timestep(torch.tensor([sigma])).float(), context.float(),
         transformer_options={"patches": {"input_block_patch": [keep]}})
    assert len(got["output"]) == len(captured) == len(unet.input_blocks)
    for mine, ref in zip(got["output"], captured):
        torch.testing.assert_close(mine, ref, atol=1e-4, rtol=1e-4)

    doubled = residuals(controls_from(env, "copy.safetensors", 2.0)[0][1]["control"], x, sigma, context, dm)
    for one, two in zip(got["output"] + got["middle"], doubled["output"] + doubled["middle"]):
        torch.testing.assert_close(two, 2 * one, atol=1e-4, rtol=1e-4)


def test_chained_controls_add_up_and_negative_shares_the_control(env: SDEnv) -> None:
    write_state_dict(tiny_controlnet_state_dict(seed=1), controlnet_dir(env) / "a.safetensors")
    write_state_dict(tiny_controlnet_state_dict(seed=2), controlnet_dir(env) / "b.safetensors")
    save_hint(env)
    model = env.value({"4": txt2img()["4"]}, "4")
    prompt = with_control(env, "a.safetensors", 0.7)
    prompt["30"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "b.safetensors"}}
    prompt["31"] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
        "positive": ["22", 0], "negative": ["22", 1], "control_net": ["30", 0], "image": ["21", 0],
        "strength": 0.5, "start_percent": 0.0, "end_percent": 1.0}}
    keep = ("4", "6", "7", "20", "21", "22", "30", "31")
    both = env.value({k: v for k, v in prompt.items() if k in keep}, "31")
    negative = env.value({k: v for k, v in prompt.items() if k in keep}, "31", index=1)
    chained = both[0][1]["control"]
    assert chained.previous_controlnet is not None and negative[0][1]["control"] is chained
    a = controls_from(env, "a.safetensors", 0.7)[0][1]["control"]
    b = chained.copy().set_cond_hint(chained.hint_original, 0.5)
    x = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    ctx = both[0][0]
    total = residuals(chained, x, 2.0, ctx, model.model)
    parts = [residuals(c, x, 2.0, ctx, model.model) for c in (a, b)]
    for i, t in enumerate(total["output"]):
        torch.testing.assert_close(t, parts[0]["output"][i] + parts[1]["output"][i], atol=1e-5, rtol=1e-5)


def test_difference_controlnet_adds_the_model_weights(env: SDEnv) -> None:
    write_state_dict(tiny_controlnet_state_dict(dtype=torch.float32), controlnet_dir(env) / "full.safetensors")
    write_state_dict(tiny_controlnet_state_dict(difference=True, dtype=torch.float32),
                     controlnet_dir(env) / "diff.safetensors")
    save_hint(env)
    full = sampled(env, with_control(env, "full.safetensors"))
    diff = sampled(env, with_control(env, "diff.safetensors", loader="DiffControlNetLoader"))
    # The tiny UNet is stored in fp16, so the rebuilt weights differ from the full file's by fp16 rounding.
    torch.testing.assert_close(diff, full, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("light", [False, True])
def test_t2i_adapters_feed_the_input_blocks(env: SDEnv, light: bool) -> None:
    name = f"adapter_{'light' if light else 'full'}.pth"
    write_state_dict(tiny_t2i_adapter_state_dict(light=light), controlnet_dir(env) / name)
    save_hint(env)
    model = env.value({"4": txt2img()["4"]}, "4")
    cond = controls_from(env, name, 1.0)
    control = cond[0][1]["control"]
    assert isinstance(control, T2IAdapter)
    x = torch.randn(2, 4, 4, 4)
    res = residuals(control, x, 5.0, torch.cat([cond[0][0]] * 2), model.model)
    unet = model.model.diffusion_model
    present = [i for i, r in enumerate(reversed(res["input"])) if r is not None]
    assert present == [2, 5, 8] and len(res["input"]) == len(unet.input_blocks)
    assert all(r.shape[0] == 1 for r in res["input"] if r is not None)  # one hint broadcasts over the batch
    plain = sampled(env, txt2img())
    adapted = sampled(env, with_control(env, name))
    assert (adapted - plain).abs().max() > 1e-3


def test_controlnet_apply_old_node_and_zero_strength(env: SDEnv) -> None:
    write_state_dict(tiny_controlnet_state_dict(), controlnet_dir(env) / "cn.safetensors")
    save_hint(env)
    prompt = txt2img()
    prompt["20"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "cn.safetensors"}}
    prompt["21"] = {"class_type": "LoadImage", "inputs": {"image": "hint.png"}}
    prompt["22"] = {"class_type": "ControlNetApply", "inputs": {
        "conditioning": ["6", 0], "control_net": ["20", 0], "image": ["21", 0], "strength": 0.8}}
    prompt["3"]["inputs"]["positive"] = ["22", 0]
    applied = sampled(env, prompt)
    cond = env.value(prompt, "22")
    assert cond[0][1]["control_apply_to_uncond"] is True and cond[0][1]["control"].strength == 0.8
    prompt["22"]["inputs"]["strength"] = 0.0
    assert env.value(prompt, "22")[0][1].get("control") is None
    assert (applied - sampled(env, txt2img())).abs().max() > 1e-3


def test_not_a_controlnet_is_a_clear_error(env: SDEnv) -> None:
    write_state_dict({"foo.weight": torch.zeros(2, 2)}, controlnet_dir(env) / "junk.safetensors")
    result = env.run({"20": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "junk.safetensors"}},
                      "g": {"class_type": "Grab", "inputs": {"value": ["20", 0]}}})
    assert result.status == "error"
    assert "ControlNet or T2I-Adapter" in result.error["exception_message"]
