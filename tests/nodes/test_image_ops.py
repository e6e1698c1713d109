"""nodes/image_editing.py through the real executor: loading masks from files, scaling (nearest, area, lanczos,
centre crop), batching, outpaint padding, cropping, blend modes, blur, sharpen, quantize, masked compositing,
batch slicing, and SaveImageWebsocket's PNG binary frames."""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tests.nodes.ops_env import OpsEnv


@pytest.fixture
def env(tmp_path: Path) -> OpsEnv:
    return OpsEnv(tmp_path)


def image(batch: int = 1, h: int = 6, w: int = 8, c: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, h, w, c, generator=torch.Generator().manual_seed(seed))


def test_declarations(env: OpsEnv) -> None:
    scale = env.info("ImageScale")
    assert scale["input"]["required"]["upscale_method"][0] == ["nearest-exact", "bilinear", "area", "bicubic",
                                                               "lanczos"]
    assert scale["display_name"] == "Upscale Image" and scale["category"] == "image/upscaling"
    pad = env.info("ImagePadForOutpaint")
    assert pad["output"] == ["IMAGE", "MASK"] and pad["input"]["required"]["feathering"][1]["default"] == 40
    assert env.info("ImageBlend")["input"]["required"]["blend_mode"][0][-1] == "difference"
    assert env.info("ImageSharpen")["input_order"]["required"] == ["image", "sharpen_radius", "sigma", "alpha"]
    assert env.info("LoadImageMask")["input"]["required"]["channel"][0] == ["alpha", "red", "green", "blue"]
    assert env.info("SaveImageWebsocket")["output_node"] is True


def test_load_image_mask(env: OpsEnv) -> None:
    env.folders.input_directory.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(1).integers(0, 256, (5, 7, 4), dtype=np.uint8)
    Image.fromarray(pixels, mode="RGBA").save(env.folders.input_directory / "m.png")
    alpha = env.value("LoadImageMask", {"image": "m.png", "channel": "alpha"})
    assert alpha.shape == (1, 5, 7)
    assert torch.allclose(alpha[0], 1.0 - torch.from_numpy(pixels[..., 3].astype(np.float32)) / 255.0)
    green = env.value("LoadImageMask", {"image": "m.png", "channel": "green"})
    assert torch.allclose(green[0], torch.from_numpy(pixels[..., 1].astype(np.float32)) / 255.0)
    Image.fromarray(pixels[..., 0], mode="L").save(env.folders.input_directory / "grey.png")
    opaque = env.value("LoadImageMask", {"image": "grey.png", "channel": "alpha"})
    assert torch.count_nonzero(opaque) == 0  # no alpha: fully opaque, mask 0
    red = env.value("LoadImageMask", {"image": "grey.png", "channel": "red"})
    assert torch.allclose(red[0], torch.from_numpy(pixels[..., 0].astype(np.float32)) / 255.0)


def test_scale_nearest_aspect_and_crop(env: OpsEnv) -> None:
    src = image(h=4, w=6)
    out = env.value("ImageScale", {"image": src, "upscale_method": "nearest-exact", "width": 0, "height": 8,
                                   "crop": "disabled"})
    assert out.shape == (1, 8, 12, 3)
    rows = [math.floor((i + 0.5) * 4 / 8) for i in range(8)]
    cols = [math.floor((j + 0.5) * 6 / 12) for j in range(12)]
    assert torch.equal(out, src[:, rows][:, :, cols])
    square = env.value("ImageScale", {"image": src, "upscale_method": "area", "width": 4, "height": 4,
                                      "crop": "center"})
    assert torch.allclose(square, src[:, :, 1:5])
    by = env.value("ImageScaleBy", {"image": src, "upscale_method": "area", "scale_by": 0.5})
    assert torch.allclose(by, src.reshape(1, 2, 2, 3, 2, 3).mean(dim=(2, 4)), atol=1e-6)
    total = env.value("ImageScaleToTotalPixels", {"image": image(h=16, w=32), "upscale_method": "nearest-exact",
                                                  "megapixels": 0.01})
    scale = math.sqrt(int(0.01 * 1024 * 1024) / (16 * 32))
    assert total.shape == (1, round(16 * scale), round(32 * scale), 3)


def test_scale_lanczos_uses_8bit_pillow(env: OpsEnv) -> None:
    src = image(h=5, w=5, seed=3)
    out = env.value("ImageScale", {"image": src, "upscale_method": "lanczos", "width": 9, "height": 7,
                                   "crop": "disabled"})
    picture = Image.fromarray(np.clip(255.0 * src[0].numpy(), 0, 255).astype(np.uint8))
    want = np.asarray(picture.resize((9, 7), Image.Resampling.LANCZOS), np.float32) / 255.0
    assert torch.allclose(out[0], torch.from_numpy(want))


def test_batch_repeat_from_batch(env: OpsEnv) -> None:
    a, b = image(batch=2, seed=1), image(batch=1, h=3, w=4, seed=2)
    joined = env.value("ImageBatch", {"image1": a, "image2": b})
    assert joined.shape == (3, 6, 8, 3) and torch.equal(joined[:2], a)
    assert torch.allclose(joined[2:], F.interpolate(b.movedim(-1, 1), size=(6, 8), mode="bilinear").movedim(1, -1))
    mixed = env.value("ImageBatch", {"image1": a, "image2": image(batch=1, c=4, seed=3)})
    assert mixed.shape == (3, 6, 8, 4) and torch.all(mixed[:2, ..., 3] == 1.0)
    assert torch.equal(mixed[:2, ..., :3], a) and torch.equal(mixed[2], image(batch=1, c=4, seed=3)[0])
    rep = env.value("RepeatImageBatch", {"image": a, "amount": 3})
    assert torch.equal(rep, torch.cat([a, a, a]))
    part = env.value("ImageFromBatch", {"image": rep, "batch_index": 4, "length": 5})
    assert torch.equal(part, rep[4:6])


def test_pad_for_outpaint(env: OpsEnv) -> None:
    src = image(h=10, w=12)
    inputs = {"image": src, "left": 2, "top": 0, "right": 0, "bottom": 3, "feathering": 4}
    padded, mask = env.value("ImagePadForOutpaint", inputs, 0), env.value("ImagePadForOutpaint", inputs, 1)
    assert padded.shape == (1, 13, 14, 3) and torch.equal(padded[:, 0:10, 2:14], src)
    assert torch.all(padded[:, 10:] == 0.5) and torch.all(padded[:, :, :2] == 0.5)
    assert mask.shape == (1, 13, 14) and torch.all(mask[0, 10:] == 1) and torch.all(mask[0, :, :2] == 1)
    for i in range(10):
        for j in range(12):
            d = min(10 - i, j)  # bottom and left are padded
            want = ((4 - d) / 4) ** 2 if d < 4 else 0.0
            assert mask[0, i, 2 + j].item() == pytest.approx(want)
    plain = env.value("ImagePadForOutpaint", {"image": src, "left": 8, "top": 0, "right": 0, "bottom": 0,
                                              "feathering": 6}, 1)
    assert torch.count_nonzero(plain[0, :, 8:]) == 0  # feathering*2 >= height: no feathering


def test_crop(env: OpsEnv) -> None:
    src = image(h=6, w=8)
    assert torch.equal(env.value("ImageCrop", {"image": src, "width": 3, "height": 2, "x": 4, "y": 1}),
                       src[:, 1:3, 4:7])
    assert torch.equal(env.value("ImageCrop", {"image": src, "width": 3, "height": 3, "x": 50, "y": 50}),
                       src[:, 5:, 7:])


@pytest.mark.parametrize("mode", ["normal", "multiply", "screen", "overlay", "soft_light", "difference"])
def test_blend_modes(env: OpsEnv, mode: str) -> None:
    a, b = image(seed=1), image(seed=2)
    out = env.value("ImageBlend", {"image1": a, "image2": b, "blend_factor": 0.4, "blend_mode": mode})
    ea, eb = a.flatten().tolist(), b.flatten().tolist()

    def one(x: float, y: float) -> float:
        if mode == "normal":
            return y
        if mode == "multiply":
            return x * y
        if mode == "screen":
            return 1 - (1 - x) * (1 - y)
        if mode == "overlay":
            return 2 * x * y if x <= 0.5 else 1 - 2 * (1 - x) * (1 - y)
        if mode == "soft_light":
            if y <= 0.5:
                return x - (1 - 2 * y) * x * (1 - x)
            g = ((16 * x - 12) * x + 4) * x if x <= 0.25 else math.sqrt(x)
            return x + (2 * y - 1) * (g - x)
        return x - y

    want = [min(max(x * 0.6 + one(x, y) * 0.4, 0.0), 1.0) for x, y in zip(ea, eb)]
    assert torch.allclose(out.flatten(), torch.tensor(want), atol=1e-6)


def _gauss(size: int, sigma: float) -> list[list[float]]:
    coords = [-1 + 2 * i / (size - 1) for i in range(size)]
    w = [[math.exp(-(x * x + y * y) / (2 * sigma * sigma)) for x in coords] for y in coords]
    total = sum(map(sum, w))
    return [[v / total for v in row] for row in w]


def _filter_at(img: torch.Tensor, kernel: list[list[float]], i: int, j: int) -> torch.Tensor:
    r = len(kernel) // 2
    h, w = img.shape[1], img.shape[2]

    def reflect(k: int, n: int) -> int:
        return -k if k < 0 else (2 * (n - 1) - k if k >= n else k)

    acc = torch.zeros(img.shape[-1])
    for di in range(-r, r + 1):
        for dj in range(-r, r + 1):
            acc += kernel[di + r][dj + r] * img[0, reflect(i + di, h), reflect(j + dj, w)]
    return acc


def test_blur_and_sharpen(env: OpsEnv) -> None:
    src = image(h=5, w=6, seed=4)
    blurred = env.value("ImageBlur", {"image": src, "blur_radius": 2, "sigma": 0.7})
    kernel = _gauss(5, 0.7)
    for i, j in [(0, 0), (2, 3), (4, 5), (1, 5)]:
        assert torch.allclose(blurred[0, i, j], _filter_at(src, kernel, i, j), atol=1e-5)
    sharp = env.value("ImageSharpen", {"image": src, "sharpen_radius": 1, "sigma": 1.0, "alpha": 0.5})
    neg = [[-5.0 * v for v in row] for row in _gauss(3, 1.0)]
    neg[1][1] += 1.0 - sum(map(sum, neg))
    for i, j in [(0, 0), (2, 3), (4, 5)]:
        assert torch.allclose(sharp[0, i, j], _filter_at(src, neg, i, j).clamp(0, 1), atol=1e-5)
    flat = torch.full((1, 4, 4, 3), 0.3)
    assert torch.allclose(env.value("ImageSharpen", {"image": flat, "sharpen_radius": 1, "sigma": 1.0,
                                                     "alpha": 2.0}), flat, atol=1e-5)


@pytest.mark.parametrize("dither", ["none", "floyd-steinberg", "bayer-4"])
def test_quantize(env: OpsEnv, dither: str) -> None:
    src = image(h=8, w=8, seed=5)
    out = env.value("ImageQuantize", {"image": src, "colors": 4, "dither": dither})
    colours = {tuple(p) for p in (out[0] * 255).round().reshape(-1, 3).int().tolist()}
    assert 1 <= len(colours) <= 4 and out.shape == src.shape
    if dither == "none":
        pixels = (src[0] * 255).to(torch.uint8).reshape(-1, 3).float()
        palette = torch.tensor(sorted(colours), dtype=torch.float32)
        nearest = palette[torch.cdist(pixels, palette).argmin(1)]
        assert torch.allclose((out[0] * 255).round().reshape(-1, 3), nearest)


def test_composite_masked(env: OpsEnv) -> None:
    dest, src = image(h=6, w=6, seed=1), image(h=3, w=4, seed=2)
    out = env.value("ImageCompositeMasked", {"destination": dest, "source": src, "x": 4, "y": 1,
                                             "resize_source": False})
    want = dest.clone()
    want[:, 1:4, 4:6] = src[:, :, :2]
    assert torch.equal(out, want)
    mask = torch.zeros(3, 4)
    mask[:, :2] = 1.0
    out = env.value("ImageCompositeMasked", {"destination": dest, "source": src, "x": 0, "y": 0,
                                             "resize_source": False, "mask": mask})
    want = dest.clone()
    want[:, :3, :2] = src[:, :, :2]
    assert torch.allclose(out, want)
    rgba = image(h=3, w=4, c=4, seed=3)
    out = env.value("ImageCompositeMasked", {"destination": dest, "source": rgba, "x": 0, "y": 0,
                                             "resize_source": False})
    assert out.shape == dest.shape and torch.equal(out[:, :3, :4], rgba[..., :3])


def test_save_image_websocket_sends_png_frames(env: OpsEnv) -> None:
    src = image(batch=2, h=4, w=5, seed=6)
    prompt = env.prompt("SaveImageWebsocket", {"images": src})
    env.ok(prompt)
    frames = env.previews()
    assert len(frames) == 2 and all(f.image_format == "PNG" and f.node_id == "n" for f in frames)
    for frame, expected in zip(frames, src):
        raw = frame.to_frame()
        assert raw[:8] == (1).to_bytes(4, "big") + (2).to_bytes(4, "big")
        decoded = np.asarray(Image.open(io.BytesIO(raw[8:])))
        assert np.array_equal(decoded, np.clip(255.0 * expected.numpy(), 0, 255).astype(np.uint8))
    assert [d["value"] for d in env.event_data("progress")] == [0, 1]
    env.ok(prompt)
    assert len(env.previews()) == 2  # the same prompt again is not served from the cache: the frames are sent again
    assert not list(env.base.glob("**/*.png"))  # nothing written to disk
