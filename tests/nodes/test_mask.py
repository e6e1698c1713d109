"""nodes/mask.py through the real executor: every mask node's values against direct computations."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.nodes.ops_env import OpsEnv


@pytest.fixture
def env(tmp_path: Path) -> OpsEnv:
    return OpsEnv(tmp_path)


def test_declarations(env: OpsEnv) -> None:
    assert env.info("ImageToMask")["input"]["required"]["channel"][0] == ["red", "green", "blue", "alpha"]
    assert env.info("ImageToMask")["display_name"] == "Convert Image to Mask"
    assert env.info("MaskToImage")["display_name"] == "Convert Mask to Image"
    assert env.info("MaskComposite")["input"]["required"]["operation"][0] == [
        "multiply", "add", "subtract", "and", "or", "xor"]
    assert env.info("GrowMask")["input"]["required"]["expand"][1] == {"default": 0, "min": -16384, "max": 16384,
                                                                     "step": 1}
    assert env.info("SolidMask")["input_order"]["required"] == ["value", "width", "height"]
    assert all(env.info(n)["category"] == "mask" for n in ("FeatherMask", "ThresholdMask", "CropMask"))


def test_mask_image_conversions(env: OpsEnv) -> None:
    mask = torch.rand(2, 3, 4)
    image = env.value("MaskToImage", {"mask": mask})
    assert image.shape == (2, 3, 4, 3) and torch.equal(image[..., 1], mask)
    rgba = torch.rand(1, 3, 4, 4)
    for index, channel in enumerate(("red", "green", "blue", "alpha")):
        assert torch.equal(env.value("ImageToMask", {"image": rgba, "channel": channel}), rgba[..., index])


def test_image_color_to_mask(env: OpsEnv) -> None:
    image = torch.zeros(1, 2, 2, 3)
    image[0, 0, 0] = torch.tensor([0x12, 0x34, 0x56]) / 255.0
    image[0, 1, 1] = torch.tensor([0x12, 0x34, 0x57]) / 255.0
    mask = env.value("ImageColorToMask", {"image": image, "color": 0x123456})
    assert mask.tolist() == [[[1.0, 0.0], [0.0, 0.0]]]
    black = env.value("ImageColorToMask", {"image": image, "color": 0})
    assert black.tolist() == [[[0.0, 1.0], [1.0, 0.0]]]


def test_solid_invert_threshold_crop(env: OpsEnv) -> None:
    solid = env.value("SolidMask", {"value": 0.25, "width": 5, "height": 3})
    assert solid.shape == (1, 3, 5) and torch.all(solid == 0.25)
    mask = torch.rand(2, 6, 7)
    assert torch.allclose(env.value("InvertMask", {"mask": mask}), 1.0 - mask)
    assert torch.equal(env.value("ThresholdMask", {"mask": mask, "value": 0.4}), (mask > 0.4).float())
    crop = env.value("CropMask", {"mask": mask, "x": 2, "y": 1, "width": 3, "height": 10})
    assert torch.equal(crop, mask[:, 1:6, 2:5])
    assert torch.equal(env.value("CropMask", {"mask": mask[0], "x": 0, "y": 0, "width": 2, "height": 2}),
                       mask[0:1, :2, :2])


@pytest.mark.parametrize("operation", ["multiply", "add", "subtract", "and", "or", "xor"])
def test_mask_composite(env: OpsEnv, operation: str) -> None:
    dest = torch.rand(1, 5, 6)
    src = torch.rand(1, 4, 4)
    out = env.value("MaskComposite", {"destination": dest, "source": src, "x": 3, "y": 2, "operation": operation})
    expected = dest.clone()
    d, s = dest[:, 2:5, 3:6], src[:, :3, :3]
    db, sb = d.round().bool(), s.round().bool()
    value = {"multiply": d * s, "add": d + s, "subtract": d - s, "and": (db & sb).float(),
             "or": (db | sb).float(), "xor": (db ^ sb).float()}[operation]
    expected[:, 2:5, 3:6] = value
    assert torch.allclose(out, expected.clamp(0, 1))
    assert torch.equal(out[:, :2], dest[:, :2])


def test_feather_mask(env: OpsEnv) -> None:
    mask = torch.ones(1, 4, 6)
    out = env.value("FeatherMask", {"mask": mask, "left": 2, "top": 0, "right": 0, "bottom": 0})
    assert torch.allclose(out[0, 0], torch.tensor([0.5, 1, 1, 1, 1, 1]))
    out = env.value("FeatherMask", {"mask": mask, "left": 0, "top": 2, "right": 0, "bottom": 0})
    assert torch.allclose(out[0, :, 0], torch.tensor([0.5, 1, 1, 1]))
    # ComfyUI's right/bottom ramps index -i: the first column gets 1/n and the last 2/n.
    out = env.value("FeatherMask", {"mask": mask, "left": 0, "top": 0, "right": 3, "bottom": 0})
    assert torch.allclose(out[0, 0], torch.tensor([1 / 3, 1, 1, 1, 1, 2 / 3]))


def _dilate_reference(mask: torch.Tensor, steps: int, square: bool) -> torch.Tensor:
    out = mask.clone()
    offsets = [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)] + ([(1, 1), (1, -1), (-1, 1), (-1, -1)] if square else [])
    for _ in range(steps):
        padded = torch.nn.functional.pad(out, (1, 1, 1, 1), value=-1.0)
        h, w = out.shape[-2:]
        out = torch.stack([padded[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy, dx in offsets]).amax(0)
    return out


@pytest.mark.parametrize("tapered", [True, False])
def test_grow_mask(env: OpsEnv, tapered: bool) -> None:
    mask = torch.zeros(2, 7, 7)
    mask[0, 3, 3] = 1.0
    mask[1, 1, 5] = 0.5
    grown = env.value("GrowMask", {"mask": mask, "expand": 2, "tapered_corners": tapered})
    assert torch.equal(grown, _dilate_reference(mask, 2, not tapered))
    assert grown[0].sum() == (13 if tapered else 25)
    shrunk = env.value("GrowMask", {"mask": grown, "expand": -2, "tapered_corners": tapered})
    assert shrunk[0, 3, 3] == 1.0 and shrunk[0].sum() == 1.0
