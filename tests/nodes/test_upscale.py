"""UpscaleModelLoader and ImageUpscaleWithModel through the real executor on tiny ESRGAN, Real-ESRGAN and SwinIR
files that spandrel detects; the tiled run is compared with spandrel's untiled forward."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from diffusion.networks.upscale import load_upscale_model, upscale_tiled, upscale_with_retries
from executor.memory import MemoryPolicy, ModelManager
from executor.run import Executor
from tests.fixtures.tiny_upscalers import tiny_esrgan_state_dict, tiny_real_esrgan_state_dict, tiny_swinir_state_dict
from tests.nodes.ops_env import OpsEnv

FILES = {
    "esrgan_x2.safetensors": lambda: tiny_esrgan_state_dict(2),
    "esrgan_x4.pth": lambda: tiny_esrgan_state_dict(4, seed=1),
    "realesrgan_x4.safetensors": tiny_real_esrgan_state_dict,
    "swinir_x2.pth": lambda: tiny_swinir_state_dict(prefixed=True),
    "realesrgan_params_ema.pth": tiny_real_esrgan_state_dict,  # saved wrapped, as BasicSR releases are
}


@pytest.fixture()
def env(tmp_path: Path) -> OpsEnv:
    env = OpsEnv(tmp_path)
    env.executor = Executor(env.registry, folders=env.folders, models=ModelManager(MemoryPolicy()))
    folder = tmp_path / "models" / "upscale_models"
    folder.mkdir(parents=True)
    for name, make in FILES.items():
        sd = make()
        if "params_ema" in name:
            torch.save({"params": {k: v * 0 for k, v in sd.items()}, "params_ema": sd}, folder / name)
        elif name.endswith(".pth"):
            torch.save(sd, folder / name)
        else:
            save_file({k: v.contiguous() for k, v in sd.items()}, str(folder / name))
    return env


def image(h: int = 24, w: int = 40, seed: int = 0) -> torch.Tensor:
    return torch.rand((1, h, w, 3), generator=torch.Generator().manual_seed(seed))


def upscale_prompt(name: str, env: OpsEnv, img: torch.Tensor) -> dict:
    prompt = env.prompt("ImageUpscaleWithModel", {"image": img})
    prompt["loader"] = {"class_type": "UpscaleModelLoader", "inputs": {"model_name": name}}
    prompt["n"]["inputs"]["upscale_model"] = ["loader", 0]
    prompt["grab"] = {"class_type": "Grab", "inputs": {"value": ["n", 0]}}
    return prompt


def test_declarations_match_comfyui(env: OpsEnv) -> None:
    loader = env.info("UpscaleModelLoader")
    assert set(loader["input"]["required"]["model_name"][0]) == set(FILES)
    assert loader["output"] == ["UPSCALE_MODEL"] and loader["category"] == "loaders"
    up = env.info("ImageUpscaleWithModel")
    assert list(up["input"]["required"]) == ["upscale_model", "image"]
    assert up["output"] == ["IMAGE"] and up["category"] == "image/upscaling"
    assert up["display_name"] == "Upscale Image (using Model)"


@pytest.mark.parametrize("name,scale,arch", [("esrgan_x2.safetensors", 2, "ESRGAN"), ("esrgan_x4.pth", 4, "ESRGAN"),
                                             ("realesrgan_x4.safetensors", 4, "ESRGAN"),
                                             ("realesrgan_params_ema.pth", 4, "ESRGAN"),
                                             ("swinir_x2.pth", 2, "SwinIR")])
def test_upscale_through_executor_equals_spandrel_forward(env: OpsEnv, name: str, scale: int, arch: str) -> None:
    img = image()
    env.ok(upscale_prompt(name, env, img))
    out = env.grabbed[-1]
    assert out.shape == (1, 24 * scale, 40 * scale, 3)
    descriptor = load_upscale_model(FILES[name](), name)
    assert descriptor.architecture.id == arch and descriptor.scale == scale
    with torch.no_grad():
        reference = descriptor(img.movedim(-1, 1)).clamp(0, 1).movedim(1, -1)
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-5)
    assert env.event_data("progress")[-1]["value"] == env.event_data("progress")[-1]["max"] == 1


def test_tiled_equals_untiled_within_tolerance() -> None:
    descriptor = load_upscale_model(tiny_esrgan_state_dict(2, seed=3))
    x = torch.rand((1, 3, 96, 128), generator=torch.Generator().manual_seed(0))
    whole = upscale_tiled(descriptor, x, tile=512)
    calls: list[int] = []
    tiled = upscale_tiled(descriptor, x, tile=64, overlap=32, on_tile=lambda: calls.append(1))
    assert len(calls) == 2 * 3
    # Tiles see less context at their edges; the overlap blend keeps the seams close to the untiled result.
    assert float((whole - tiled).abs().mean()) < 2e-3
    assert float((whole - tiled).abs().max()) < 0.1


def test_out_of_memory_halves_the_tile(monkeypatch: pytest.MonkeyPatch) -> None:
    descriptor = load_upscale_model(tiny_esrgan_state_dict(2))
    seen: list[int] = []
    import diffusion.networks.upscale as up

    real = up.upscale_tiled

    def failing(desc, image, tile, overlap, on_tile=None):  # type: ignore[no-untyped-def]
        seen.append(tile)
        if tile > 128:
            raise torch.OutOfMemoryError("test: tile too big")
        return real(desc, image, tile, overlap, on_tile)

    monkeypatch.setattr(up, "upscale_tiled", failing)
    x = torch.rand((1, 3, 16, 16))
    frees: list[int] = []
    out = upscale_with_retries(descriptor, x, 512, 32, on_oom=lambda: frees.append(1))
    assert seen == [512, 256, 128] and len(frees) == 2 and out.shape == (1, 3, 32, 32)
    seen.clear()

    def always_failing(desc, image, tile, overlap, on_tile=None):  # type: ignore[no-untyped-def]
        seen.append(tile)
        raise torch.OutOfMemoryError("test: always")

    monkeypatch.setattr(up, "upscale_tiled", always_failing)
    with pytest.raises(torch.OutOfMemoryError):
        upscale_with_retries(descriptor, x, 512, 32)
    assert seen == [512, 256, 128]  # a 64-pixel tile is not tried


def test_not_an_upscaler_is_a_clear_error(env: OpsEnv) -> None:
    save_file({"foo": torch.zeros(2)}, str(env.base / "models" / "upscale_models" / "junk.safetensors"))
    result = env.run(upscale_prompt("junk.safetensors", env, image()))
    assert result.status == "error"
    assert "not an upscale model" in result.error["exception_message"]
