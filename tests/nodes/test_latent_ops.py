"""nodes/latent_transforms.py (and the resize maths of nodes/upscaling_math.py) through the real executor: every latent
node's values against direct computations, and ComfyUI's .latent files written and read back."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
from safetensors import safe_open

from tests.nodes.ops_env import OpsEnv


@pytest.fixture
def env(tmp_path: Path) -> OpsEnv:
    return OpsEnv(tmp_path)


def latent(batch: int = 1, h: int = 6, w: int = 8, seed: int = 0, **extra: Any) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(seed)
    return {"samples": torch.randn(batch, 4, h, w, generator=gen), **extra}


def test_declarations(env: OpsEnv) -> None:
    up = env.info("LatentUpscale")
    assert up["input"]["required"]["upscale_method"][0] == ["nearest-exact", "bilinear", "area", "bicubic", "bislerp"]
    assert up["display_name"] == "Upscale Latent" and up["input_order"]["required"][-1] == "crop"
    assert env.info("LatentUpscaleBy")["input"]["required"]["scale_by"][1] == {"default": 1.5, "min": 0.01,
                                                                             "max": 8.0, "step": 0.01}
    assert env.info("LatentCompositeMasked")["input_order"] == {"required": ["destination", "source", "x", "y",
                                                                             "resize_source"],
                                                                "optional": ["mask"]}
    assert env.info("LatentRotate")["category"] == "latent/transform"
    assert env.info("SaveLatent")["output_node"] is True


def test_upscale_nearest_exact_and_aspect(env: OpsEnv) -> None:
    src = latent(h=3, w=4)
    out = env.value("LatentUpscale", {"samples": src, "upscale_method": "nearest-exact", "width": 0, "height": 72,
                                      "crop": "disabled"})["samples"]
    # width 0 keeps the aspect ratio: round(4 * 72 / 3) = 96 px -> 12 latent pixels; 72 px -> 9.
    assert out.shape == (1, 4, 9, 12)
    rows = [math.floor((i + 0.5) * 3 / 9) for i in range(9)]
    cols = [math.floor((j + 0.5) * 4 / 12) for j in range(12)]
    assert torch.equal(out, src["samples"][:, :, rows][:, :, :, cols])
    by = env.value("LatentUpscaleBy", {"samples": src, "upscale_method": "nearest-exact", "scale_by": 2.0})
    assert by["samples"].shape == (1, 4, 6, 8)
    same = env.value("LatentUpscale", {"samples": src, "upscale_method": "bilinear", "width": 0, "height": 0,
                                       "crop": "disabled"})
    assert torch.equal(same["samples"], src["samples"])


def test_upscale_center_crop_area(env: OpsEnv) -> None:
    src = latent(h=8, w=16)
    out = env.value("LatentUpscale", {"samples": src, "upscale_method": "area", "width": 64, "height": 64,
                                      "crop": "center"})["samples"]
    # 16x8 cropped to square is columns 4..11; "area" to 8x8 is then the identity.
    assert torch.allclose(out, src["samples"][:, :, :, 4:12])


def _slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    na, nb = a.norm(), b.norm()
    ua, ub = a / na, b / nb
    dot = float((ua * ub).sum())
    if dot > 1 - 1e-5:
        return a
    omega = math.acos(dot)
    return (math.sin((1 - t) * omega) * ua + math.sin(t * omega) * ub) / math.sin(omega) * (na * (1 - t) + nb * t)


def _taps(old: int, new: int) -> list[tuple[int, int, float]]:
    out = []
    for i in range(new):
        pos = min(max((i + 0.5) * old / new - 0.5, 0.0), old - 1)
        first = int(math.floor(pos))
        out.append((first, min(first + 1, old - 1), pos - first))
    return out


def test_bislerp_matches_per_pixel_slerp(env: OpsEnv) -> None:
    src = latent(h=2, w=3, seed=5)
    out = env.value("LatentUpscaleBy", {"samples": src, "upscale_method": "bislerp", "scale_by": 2.0})["samples"]
    x = src["samples"][0]
    wide = torch.stack([torch.stack([_slerp(x[:, r, a], x[:, r, b], t) for a, b, t in _taps(3, 6)], -1)
                        for r in range(2)], 1)
    expected = torch.stack([torch.stack([_slerp(wide[:, a, c], wide[:, b, c], t) for c in range(6)], -1)
                            for a, b, t in _taps(2, 4)], 1)
    assert out.shape == (1, 4, 4, 6)
    assert torch.allclose(out[0], expected, atol=1e-5)


def test_composite_plain_and_feathered(env: OpsEnv) -> None:
    to, frm = latent(h=6, w=6, seed=1), latent(h=4, w=4, seed=2)
    out = env.value("LatentComposite", {"samples_to": to, "samples_from": frm, "x": 24, "y": 16,
                                        "feather": 0})["samples"]
    expected = to["samples"].clone()
    expected[:, :, 2:6, 3:6] = frm["samples"][:, :, :4, :3]
    assert torch.equal(out, expected)
    out = env.value("LatentComposite", {"samples_to": to, "samples_from": frm, "x": 8, "y": 0,
                                        "feather": 16})["samples"]
    # x=1 (not on the border): left ramp over 2 columns; right edge x+4=5<6: right ramp; top at 0: none; bottom 4<6.
    col = torch.tensor([0.5, 1.0, 1.0, 0.5])
    row = torch.tensor([1.0, 1.0, 1.0, 0.5])  # ramp step t multiplies by (t+1)/feather: 0.5 then 1.0
    weight = row[:, None] * col[None, :]
    expected = to["samples"].clone()
    expected[:, :, 0:4, 1:5] = frm["samples"] * weight + to["samples"][:, :, 0:4, 1:5] * (1 - weight)
    assert torch.allclose(out, expected)


def test_composite_masked(env: OpsEnv) -> None:
    dest, src = latent(h=6, w=6, seed=1), latent(h=4, w=4, seed=2)
    out = env.value("LatentCompositeMasked", {"destination": dest, "source": src, "x": 32, "y": 8,
                                              "resize_source": False})["samples"]
    expected = dest["samples"].clone()
    expected[:, :, 1:5, 4:6] = src["samples"][:, :, :4, :2]
    assert torch.equal(out, expected)
    mask = torch.full((1, 32, 32), 0.25)
    out = env.value("LatentCompositeMasked", {"destination": dest, "source": src, "x": 0, "y": 0,
                                              "resize_source": False, "mask": mask})["samples"]
    expected = dest["samples"].clone()
    expected[:, :, :4, :4] = 0.25 * src["samples"] + 0.75 * dest["samples"][:, :, :4, :4]
    assert torch.allclose(out, expected)
    resized = env.value("LatentCompositeMasked", {"destination": dest, "source": latent(h=6, w=6, seed=3),
                                                  "x": 0, "y": 0, "resize_source": True})["samples"]
    assert torch.equal(resized, latent(h=6, w=6, seed=3)["samples"])


def test_blend_crop_flip_rotate(env: OpsEnv) -> None:
    a, b = latent(seed=1), latent(seed=2)
    out = env.value("LatentBlend", {"samples1": a, "samples2": b, "blend_factor": 0.3})["samples"]
    assert torch.allclose(out, a["samples"] * 0.3 + b["samples"] * 0.7)
    big = latent(h=12, w=12)
    crop = env.value("LatentCrop", {"samples": big, "width": 64, "height": 72, "x": 16, "y": 80})["samples"]
    # y = 80/8 = 10 is beyond 12 - 8, so the origin moves to 4.
    assert torch.equal(crop, big["samples"][:, :, 4:12, 2:10])
    x = a["samples"]
    assert torch.equal(env.value("LatentFlip", {"samples": a, "flip_method": "x-axis: vertically"})["samples"],
                       x.flip(2))
    assert torch.equal(env.value("LatentFlip", {"samples": a, "flip_method": "y-axis: horizontally"})["samples"],
                       x.flip(3))
    rot = env.value("LatentRotate", {"samples": a, "rotation": "90 degrees"})["samples"]
    h = x.shape[2]
    assert rot.shape == (1, 4, 8, 6)
    for i in range(rot.shape[2]):
        for j in range(rot.shape[3]):
            assert torch.equal(rot[:, :, i, j], x[:, :, h - 1 - j, i])  # clockwise
    assert torch.equal(env.value("LatentRotate", {"samples": a, "rotation": "none"})["samples"], x)


def test_batches(env: OpsEnv) -> None:
    src = latent(batch=2, noise_mask=torch.rand(2, 1, 6, 8), batch_index=[3, 4])
    rep = env.value("RepeatLatentBatch", {"samples": src, "amount": 3})
    assert torch.equal(rep["samples"], torch.cat([src["samples"]] * 3))
    assert torch.equal(rep["noise_mask"], torch.cat([src["noise_mask"]] * 3))
    assert rep["batch_index"] == [3, 4, 5, 6, 7, 8]
    four = latent(batch=4, noise_mask=torch.rand(2, 1, 6, 8))
    part = env.value("LatentFromBatch", {"samples": four, "batch_index": 1, "length": 5})
    assert torch.equal(part["samples"], four["samples"][1:4]) and part["batch_index"] == [1, 2, 3]
    tiled = torch.cat([four["noise_mask"]] * 2)
    assert torch.equal(part["noise_mask"], tiled[1:4])
    last = env.value("LatentFromBatch", {"samples": four, "batch_index": 9, "length": 1})
    assert torch.equal(last["samples"], four["samples"][3:4]) and last["batch_index"] == [3]
    joined = env.value("LatentBatch", {"samples1": latent(batch=2), "samples2": latent(batch=1, h=3, w=4, seed=9)})
    assert joined["samples"].shape == (3, 4, 6, 8) and joined["batch_index"] == [0, 1, 0]


def test_arithmetic_and_interpolate(env: OpsEnv) -> None:
    a, b = latent(batch=2, seed=1), latent(batch=1, seed=2)
    add = env.value("LatentAdd", {"samples1": a, "samples2": b})["samples"]
    assert torch.allclose(add, a["samples"] + b["samples"])  # batch of one tiled to two
    sub = env.value("LatentSubtract", {"samples1": a, "samples2": b})["samples"]
    assert torch.allclose(sub, a["samples"] - b["samples"])
    mul = env.value("LatentMultiply", {"samples": a, "multiplier": -1.5})["samples"]
    assert torch.allclose(mul, a["samples"] * -1.5)
    one = latent(seed=3)
    out = env.value("LatentInterpolate", {"samples1": one, "samples2": b, "ratio": 0.25})["samples"]
    x, y = one["samples"][0], b["samples"][0]
    for i in range(x.shape[1]):
        for j in range(x.shape[2]):
            u, v = x[:, i, j], y[:, i, j]
            mix = u / u.norm() * 0.25 + v / v.norm() * 0.75
            want = mix / mix.norm() * (u.norm() * 0.25 + v.norm() * 0.75)
            assert torch.allclose(out[0, :, i, j], want, atol=1e-5)


def test_save_and_load_latent(env: OpsEnv) -> None:
    src = latent(batch=2, seed=4)
    prompt = env.prompt("SaveLatent", {"samples": src, "filename_prefix": "latents/test"})
    result = env.ok(prompt)
    ui = result.outputs["n"]["latents"][0]
    assert ui == {"filename": "test_00001_.latent", "subfolder": "latents", "type": "output"}
    path = env.folders.output_directory / "latents" / ui["filename"]
    with safe_open(str(path), framework="pt") as handle:
        assert set(handle.keys()) == {"latent_tensor", "latent_format_version_0"}
        assert json.loads(handle.metadata()["prompt"])["n"]["class_type"] == "SaveLatent"
        assert torch.equal(handle.get_tensor("latent_tensor"), src["samples"])
    env.ok(env.prompt("SaveLatent", {"samples": src, "filename_prefix": "latents/test"}))
    assert (path.parent / "test_00002_.latent").is_file()
    env.folders.input_directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, env.folders.input_directory / "mine.latent")
    assert "mine.latent" in env.info("LoadLatent")["input"]["required"]["latent"][0]
    loaded = env.value("LoadLatent", {"latent": "mine.latent"})
    assert torch.equal(loaded["samples"], src["samples"])
    safetensors.torch.save_file({"latent_tensor": src["samples"] * 0.18215},
                                str(env.folders.input_directory / "old.latent"))
    old = env.value("LoadLatent", {"latent": "old.latent"})
    assert torch.allclose(old["samples"], src["samples"], atol=1e-6)
    bad = env.run(env.prompt("LoadLatent", {"latent": "missing.latent"}) | {
        "grab": {"class_type": "Grab", "inputs": {"value": ["n", 0]}}})
    assert bad.status != "success"


def test_common_upscale_frames_and_grey_lanczos() -> None:
    from nodes.upscaling_math import common_upscale
    video = torch.randn(2, 4, 3, 5, 6)  # B×C×T×H×W: every frame resized alike
    out = common_upscale(video, 9, 7, "bicubic", "disabled")
    assert out.shape == (2, 4, 3, 7, 9)
    for t in range(3):
        assert torch.allclose(out[:, :, t], F.interpolate(video[:, :, t], size=(7, 9), mode="bicubic"), atol=1e-6)
    grey = torch.rand(1, 1, 5, 5)
    small = common_upscale(grey, 3, 3, "lanczos", "disabled")
    assert small.shape == (1, 1, 3, 3) and 0.0 <= float(small.min()) and float(small.max()) <= 1.0
    with pytest.raises(ValueError, match="unknown upscale method"):
        common_upscale(grey, 3, 3, "cubic", "disabled")
