"""Stability's Control-LoRA files through ControlNetLoader on a tiny SDXL checkpoint.

The file (marker `lora_controlnet`; full hint encoder, zero convs and `middle_block_out`; retrained biases and
norms as full tensors; `<module>.up` / `<module>.down` low-rank pairs for every Linear and Conv weight of the
UNet encoder) must act exactly like the ordinary ControlNet file whose weights are the tiny SDXL UNet's encoder
plus up·down and the file's full tensors — that file is built here independently and sampled side by side."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffusion.adapters.controlnet import ControlNetNet
from tests.fixtures.tiny_sdxl import tiny_sdxl_state_dict, tiny_sdxl_unet_config, write
from tests.nodes.sd_env import SDEnv, txt2img
from tests.nodes.test_controlnet import save_hint, with_control

XL = "tiny-xl.safetensors"
RANK = 3


def control_lora_files(seed: int = 21) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(the Control-LoRA file, the equivalent original-layout ControlNet weights as float32)."""
    base = {k.removeprefix("model.diffusion_model."): v for k, v in tiny_sdxl_state_dict().items()
            if k.startswith("model.diffusion_model.")}
    with torch.device("meta"):
        net = ControlNetNet(tiny_sdxl_unet_config())
    gen = torch.Generator().manual_seed(seed)
    lora: dict[str, torch.Tensor] = {"lora_controlnet": torch.tensor([])}
    whole: dict[str, torch.Tensor] = {}
    for key, meta in net.state_dict().items():
        shape = tuple(meta.shape)
        if key in base and len(shape) >= 2:
            module = key[: -len(".weight")]
            up = (torch.randn((shape[0], RANK) + (1,) * (len(shape) - 2), generator=gen) * 0.1).half()
            down = (torch.randn((RANK,) + shape[1:], generator=gen) * 0.1).half()
            lora[f"{module}.up"], lora[f"{module}.down"] = up, down
            whole[key] = base[key].float() + torch.mm(up.flatten(1).float(), down.flatten(1).float()).reshape(shape)
        elif key in base:
            lora[key] = (base[key].float() + 0.02 * torch.randn(shape, generator=gen)).half()
            whole[key] = lora[key].float()
        else:
            fan_in = max(1, meta[0].numel()) if len(shape) > 1 else 50
            lora[key] = (torch.randn(shape, generator=gen) / fan_in ** 0.5).half()
            whole[key] = lora[key].float()
    return lora, whole


@pytest.fixture()
def env(tmp_path: Path) -> SDEnv:
    env = SDEnv(tmp_path)
    write(tiny_sdxl_state_dict(), tmp_path / "models" / "checkpoints" / XL)
    lora, whole = control_lora_files()
    folder = tmp_path / "models" / "controlnet"
    write(lora, folder / "control-lora-canny-rank3.safetensors")
    write({f"control_model.{k}": v for k, v in whole.items()}, folder / "equivalent.safetensors")
    save_hint(env)
    return env


def _sample(env: SDEnv, name: str, ckpt: str = XL) -> torch.Tensor:
    prompt = with_control(env, name, strength=0.9)
    prompt["4"]["inputs"]["ckpt_name"] = ckpt
    prompt["5"]["inputs"].update(width=64, height=64)
    return env.value(prompt, "3")["samples"]


def test_control_lora_samples_as_its_equivalent_controlnet(env: SDEnv) -> None:
    got = _sample(env, "control-lora-canny-rank3.safetensors")
    expected = _sample(env, "equivalent.safetensors")
    plain = env.value(txt2img(XL, size=64), "3")["samples"]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert (got - plain).abs().max().item() > 1e-3


def test_control_lora_on_a_model_of_another_family_is_refused(env: SDEnv) -> None:
    prompt = with_control(env, "control-lora-canny-rank3.safetensors")  # the tiny SD1.5 checkpoint
    result = env.run(prompt)
    assert result.status == "error"
    message = result.error["exception_message"]
    assert "control-lora-canny-rank3.safetensors" in message and "Control-LoRA" in message
