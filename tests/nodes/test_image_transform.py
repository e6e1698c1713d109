"""nodes/image_transform.py, image_filters.py and compositing.py through the real executor: exact pixels for
flips, rotations, stitching, padding, noise, morphology (checked against kornia 0.8, ComfyUI's implementation),
Canny, YUV, the Porter-Duff operators and alpha split/join; errors and /object_info entries."""
from __future__ import annotations

from pathlib import Path

import kornia
import pytest
import torch
import torch.nn.functional as F

from nodes.compositing import MODES
from nodes.image_filters import MORPHOLOGY_OPERATIONS
from tests.nodes.ops_env import OpsEnv


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> OpsEnv:
    return OpsEnv(tmp_path_factory.mktemp("transform"))


def image(batch: int = 1, h: int = 4, w: int = 6, c: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, h, w, c, generator=torch.Generator().manual_seed(seed))


def test_get_image_size(env: OpsEnv) -> None:
    src = image(batch=3, h=5, w=7)
    assert [env.value("GetImageSize", {"image": src}, i) for i in range(3)] == [7, 5, 3]
    assert env.info("GetImageSize")["output_name"] == ["width", "height", "batch_size"]


def test_flip_and_rotate(env: OpsEnv) -> None:
    src = torch.arange(6, dtype=torch.float32).reshape(1, 2, 3, 1).expand(1, 2, 3, 3).contiguous()
    flipped_x = env.value("ImageFlip", {"image": src, "flip_method": "x-axis: vertically"})
    assert flipped_x[0, :, :, 0].tolist() == [[3, 4, 5], [0, 1, 2]]
    flipped_y = env.value("ImageFlip", {"image": src, "flip_method": "y-axis: horizontally"})
    assert flipped_y[0, :, :, 0].tolist() == [[2, 1, 0], [5, 4, 3]]
    clockwise = env.value("ImageRotate", {"image": src, "rotation": "90 degrees"})
    assert clockwise[0, :, :, 0].tolist() == [[3, 0], [4, 1], [5, 2]]  # [[0,1,2],[3,4,5]] turned clockwise
    assert env.value("ImageRotate", {"image": src, "rotation": "180 degrees"})[0, :, :, 0].tolist() == \
        [[5, 4, 3], [2, 1, 0]]
    assert env.value("ImageRotate", {"image": src, "rotation": "270 degrees"})[0, :, :, 0].tolist() == \
        [[2, 5], [1, 4], [0, 3]]
    assert torch.equal(env.value("ImageRotate", {"image": src, "rotation": "none"}), src)
    assert env.info("ImageRotate")["display_name"] == "Rotate"


def test_stitch_without_resizing_pads_and_spaces(env: OpsEnv) -> None:
    a, b = torch.zeros(1, 2, 2, 3), torch.full((2, 4, 3, 3), 0.5)
    out = env.value("ImageStitch", {"image1": a, "direction": "right", "match_image_size": False,
                                    "spacing_width": 1, "spacing_color": "white", "image2": b})
    # batch grows to 2 (image1's last repeated); spacing 1 -> 2 columns; image1 padded 1 row top and bottom, white
    assert out.shape == (2, 4, 2 + 2 + 3, 3)
    assert out[1, 0, 0].tolist() == [1.0, 1.0, 1.0] and out[0, 1, 0].tolist() == [0.0, 0.0, 0.0]
    assert out[0, 0, 2].tolist() == [1.0, 1.0, 1.0] and out[0, 3, 3].tolist() == [1.0, 1.0, 1.0]
    assert torch.equal(out[:, :, 4:], b)
    red = env.value("ImageStitch", {"image1": a, "direction": "right", "match_image_size": False,
                                    "spacing_width": 2, "spacing_color": "red", "image2": b})
    assert red[0, 0, 0].tolist() == [0.0, 0.0, 0.0]  # a colour spacing pads with black
    assert red[0, 0, 2].tolist() == [1.0, 0.0, 0.0] and red[0, 3, 3].tolist() == [1.0, 0.0, 0.0]
    up = env.value("ImageStitch", {"image1": a, "direction": "up", "match_image_size": False, "spacing_width": 0,
                                   "spacing_color": "black", "image2": torch.ones(1, 1, 2, 4)})
    assert up.shape == (1, 3, 2, 4)
    assert up[0, 0].tolist() == [[1, 1, 1, 1]] * 2 and up[0, 1:, :, 3].tolist() == [[1, 1], [1, 1]]  # opaque alpha


def test_stitch_matching_size_resizes_image2_with_lanczos(env: OpsEnv) -> None:
    a, b = image(h=4, w=4), image(h=2, w=4, seed=1)
    out = env.value("ImageStitch", {"image1": a, "direction": "down", "match_image_size": True, "spacing_width": 0,
                                    "spacing_color": "white", "image2": b})
    assert out.shape == (1, 6, 4, 3) and torch.equal(out[:, :4], a)
    lone = env.value("ImageStitch", {"image1": a, "direction": "left", "match_image_size": True, "spacing_width": 0,
                                     "spacing_color": "white"})
    assert torch.equal(lone, a)


def test_scale_to_max_dimension_and_resize_and_pad(env: OpsEnv) -> None:
    src = image(h=4, w=8)
    out = env.value("ImageScaleToMaxDimension", {"image": src, "upscale_method": "area", "largest_size": 4})
    assert torch.allclose(out, src.reshape(1, 2, 2, 4, 2, 3).mean(dim=(2, 4)), atol=1e-6)
    padded = env.value("ResizeAndPadImage", {"image": src, "target_width": 4, "target_height": 4,
                                             "padding_color": "black", "interpolation": "area"})
    assert padded.shape == (1, 4, 4, 3)
    assert torch.count_nonzero(padded[:, :1]) == 0 and torch.count_nonzero(padded[:, 3:]) == 0
    assert torch.allclose(padded[:, 1:3], out[:, :, :], atol=1e-6)
    result = env.run(env.prompt("ImageScaleToMaxDimension", {"image": src, "upscale_method": "area",
                                                             "largest_size": 0}) |
                     {"grab": {"class_type": "Grab", "inputs": {"value": ["n", 0]}}})
    assert result.status == "error" and "largest_size" in result.error["exception_message"]


def test_add_noise_is_seeded_cpu_randn(env: OpsEnv) -> None:
    src = torch.full((1, 3, 4, 3), 0.5)
    out = env.value("ImageAddNoise", {"image": src, "seed": 7, "strength": 0.25})
    noise = torch.randn(src.size(), generator=torch.Generator().manual_seed(7))
    assert torch.equal(out, torch.clip(src + 0.25 * noise, 0.0, 1.0))
    assert env.info("ImageAddNoise")["input"]["required"]["seed"][1]["control_after_generate"] is True


@pytest.mark.parametrize("kernel_size", [3, 4, 7])
def test_morphology_matches_kornia(env: OpsEnv, kernel_size: int) -> None:
    src = image(batch=2, h=9, w=11, seed=kernel_size)
    for operation in MORPHOLOGY_OPERATIONS:
        out = env.value("Morphology", {"image": src, "operation": operation, "kernel_size": kernel_size})
        reference = getattr(kornia.morphology, {"erode": "erosion", "dilate": "dilation", "open": "opening",
                                                "close": "closing"}.get(operation, operation))
        expected = reference(src.movedim(-1, 1), torch.ones(kernel_size, kernel_size)).movedim(1, -1)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-6, msg=operation)
    assert env.info("Morphology")["display_name"] == "ImageMorphology"


def test_dilation_by_hand(env: OpsEnv) -> None:
    src = torch.zeros(1, 5, 5, 3)
    src[0, 2, 2] = 1.0
    grown = env.value("Morphology", {"image": src, "operation": "dilate", "kernel_size": 3})
    assert grown[0, :, :, 0].tolist() == [[0] * 5, [0, 1, 1, 1, 0], [0, 1, 1, 1, 0], [0, 1, 1, 1, 0], [0] * 5]
    gone = env.value("Morphology", {"image": src, "operation": "erode", "kernel_size": 3})
    assert torch.count_nonzero(gone) == 0


def test_canny_finds_the_square_edges(env: OpsEnv) -> None:
    src = torch.zeros(1, 32, 32, 3)
    src[:, 8:24, 8:24] = 1.0
    edges = env.value("Canny", {"image": src, "low_threshold": 0.4, "high_threshold": 0.8})
    expected = kornia.filters.canny(src.movedim(-1, 1), 0.4, 0.8)[1].repeat(1, 3, 1, 1).movedim(1, -1)
    assert torch.equal(edges, expected)
    assert edges.shape == (1, 32, 32, 3) and set(edges.unique().tolist()) == {0.0, 1.0}
    assert edges[0, 16, 8, 0] == 1.0 or edges[0, 16, 7, 0] == 1.0  # the left edge
    assert torch.count_nonzero(edges[0, 12:20, 12:20]) == 0 and torch.count_nonzero(edges[0, :4]) == 0
    bad = env.prompt("Canny", {"image": src, "low_threshold": 0.9, "high_threshold": 0.2})
    result = env.run(bad | {"grab": {"class_type": "Grab", "inputs": {"value": ["n", 0]}}})
    assert result.status == "error" and "low_threshold" in result.error["exception_message"]


def test_yuv_round_trip_and_values(env: OpsEnv) -> None:
    src = image(h=3, w=3, seed=5)
    y, u, v = (env.value("ImageRGBToYUV", {"image": src}, i) for i in range(3))
    reference = kornia.color.rgb_to_ycbcr(src.movedim(-1, 1)).movedim(1, -1)
    for index, plane in enumerate((y, u, v)):
        assert plane.shape == src.shape
        torch.testing.assert_close(plane, reference[..., index:index + 1].expand_as(src))
    back = env.value("ImageYUVToRGB", {"Y": y, "U": u, "V": v})
    torch.testing.assert_close(back, kornia.color.ycbcr_to_rgb(reference.movedim(-1, 1)).movedim(1, -1))
    torch.testing.assert_close(back, src, atol=1e-3, rtol=0)  # kornia 0.8's rounded inverse
    assert env.info("ImageRGBToYUV")["output_name"] == ["Y", "U", "V"]


def test_porter_duff_source_over_by_hand(env: OpsEnv) -> None:
    src, dst = torch.full((1, 2, 2, 3), 0.8), torch.full((1, 2, 2, 3), 0.2)
    src_mask, dst_mask = torch.full((1, 2, 2), 0.5), torch.zeros(1, 2, 2)  # source half transparent, dst opaque
    inputs = {"source": src, "source_alpha": src_mask, "destination": dst, "destination_alpha": dst_mask}
    colour = env.value("PorterDuffImageComposite", inputs | {"mode": "SRC_OVER"})
    mask = env.value("PorterDuffImageComposite", inputs | {"mode": "SRC_OVER"}, 1)
    torch.testing.assert_close(colour, torch.full((1, 2, 2, 3), 0.5 * 0.8 + 0.5 * 0.2))
    torch.testing.assert_close(mask, torch.zeros(1, 2, 2))
    dst_only = env.value("PorterDuffImageComposite", inputs | {"mode": "DST"})
    torch.testing.assert_close(dst_only, dst)
    cleared = env.value("PorterDuffImageComposite", inputs | {"mode": "CLEAR"}, 1)
    assert torch.equal(cleared, torch.ones(1, 2, 2))


@pytest.mark.parametrize("mode", MODES)
def test_porter_duff_modes_stay_in_range_and_resize(env: OpsEnv, mode: str) -> None:
    src, dst = image(h=2, w=3, seed=1), image(h=4, w=6, seed=2)
    src_mask, dst_mask = torch.rand(1, 2, 3), torch.rand(1, 4, 6)
    inputs = {"source": src, "source_alpha": src_mask, "destination": dst, "destination_alpha": dst_mask,
              "mode": mode}
    colour, mask = env.value("PorterDuffImageComposite", inputs), env.value("PorterDuffImageComposite", inputs, 1)
    assert colour.shape == (1, 4, 6, 3) and mask.shape == (1, 4, 6)
    assert colour.min() >= 0 and colour.max() <= 1


def test_split_and_join_alpha(env: OpsEnv) -> None:
    rgba = image(batch=2, h=3, w=4, c=4, seed=3)
    rgb = env.value("SplitImageWithAlpha", {"image": rgba})
    mask = env.value("SplitImageWithAlpha", {"image": rgba}, 1)
    assert torch.equal(rgb, rgba[..., :3]) and torch.allclose(mask, 1.0 - rgba[..., 3])
    joined = env.value("JoinImageWithAlpha", {"image": rgb, "alpha": mask})
    torch.testing.assert_close(joined, rgba)
    opaque = env.value("SplitImageWithAlpha", {"image": rgb}, 1)
    assert torch.count_nonzero(opaque) == 0
    small = env.value("JoinImageWithAlpha", {"image": rgb[:1], "alpha": torch.zeros(1, 2, 2)})
    assert small.shape == (1, 3, 4, 4) and torch.equal(small[..., 3], torch.ones(1, 3, 4))
    info = env.info("PorterDuffImageComposite")
    assert info["input"]["required"]["mode"] == [list(MODES), {"default": "DST"}]
    assert info["output"] == ["IMAGE", "MASK"] and info["category"] == "mask/compositing"


def test_bilinear_mask_resize_matches_torch(env: OpsEnv, tmp_path: Path) -> None:
    rgb, mask = image(h=4, w=4, seed=9), torch.rand(1, 2, 2)
    joined = env.value("JoinImageWithAlpha", {"image": rgb, "alpha": mask})
    expected = 1.0 - F.interpolate(mask[:, None], size=(4, 4), mode="bilinear")[:, 0]
    torch.testing.assert_close(joined[..., 3], expected)
