"""nodes/image_save_load.py and nodes/image_file_helpers.py through the real executor: PNG files and their
chunks, counters, prefixes, date tokens, previews, and LoadImage's images and masks."""
from __future__ import annotations

import hashlib
import json
import math
import struct
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from executor.run import Executor
from folders import Folders, UnsafePathError
from nodes import image_file_helpers
from nodes.context import InterruptFlag, NodeContext, hook_context, running
from nodes.image_save_load import LoadImage
from nodes.registry import build_builtin_registry

WORKFLOW = {"nodes": [{"id": 1, "type": "EmptyImage"}], "links": [], "version": 0.4}


class Env:
    """A Loom instance under a temporary base folder."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.folders = Folders.for_base(base)
        self.registry = build_builtin_registry()
        self.executor = Executor(self.registry, folders=self.folders)
        self.count = 0

    def run(self, prompt: dict[str, Any], extra_data: dict[str, Any] | None = None) -> Any:
        self.count += 1
        result = self.executor.execute(prompt, f"prompt-{self.count}", extra_data=extra_data)
        return result

    def ok(self, prompt: dict[str, Any], extra_data: dict[str, Any] | None = None) -> dict[str, Any]:
        result = self.run(prompt, extra_data)
        assert result.status == "success", result.error
        return result.outputs

    def context(self) -> Any:
        return running(NodeContext(prompt_id="p", node_id="1", class_type="LoadImage", interrupt=InterruptFlag(),
                                   folders=self.folders))


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def save_prompt(color: int = 0x336699, prefix: str = "ComfyUI", width: int = 8, height: int = 4,
                batch: int = 1) -> dict[str, Any]:
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": width, "height": height, "batch_size": batch,
                                                       "color": color}, "_meta": {"title": "Canvas"}},
            "9": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}}}


# ---- EmptyImage, ImageInvert ------------------------------------------------------------------

def test_empty_image_and_invert(env: Env) -> None:
    spec_empty, spec_invert = env.registry["EmptyImage"], env.registry["ImageInvert"]
    (image,) = spec_empty.instantiate().execute(width=3, height=2, batch_size=2, color=0xFF8000)
    assert image.shape == (2, 2, 3, 3) and image.dtype == torch.float32
    assert torch.allclose(image[0, 0, 0], torch.tensor([1.0, 128 / 255, 0.0]))
    (inverted,) = spec_invert.instantiate().execute(image=image)
    assert torch.allclose(inverted, 1.0 - image)
    info = env.registry.object_info()["EmptyImage"]["input"]["required"]
    assert info["color"] == ["INT", {"default": 0, "min": 0, "max": 0xFFFFFF, "step": 1, "display": "color"}]
    assert info["width"][1] == {"default": 512, "min": 1, "max": 16384, "step": 1}


# ---- SaveImage ---------------------------------------------------------------------------------

def test_save_image_writes_png_with_prompt_and_workflow_chunks(env: Env) -> None:
    prompt = save_prompt()
    outputs = env.ok(prompt, {"extra_pnginfo": {"workflow": WORKFLOW, "note": {"k": [1, 2]}}})
    assert outputs["9"] == {"images": [{"filename": "ComfyUI_00001_.png", "subfolder": "", "type": "output"}]}
    path = env.base / "output" / "ComfyUI_00001_.png"
    with Image.open(path) as png:
        assert png.format == "PNG" and png.mode == "RGB" and png.size == (8, 4)
        assert json.loads(png.text["prompt"]) == prompt
        assert json.loads(png.text["workflow"]) == WORKFLOW
        assert json.loads(png.text["note"]) == {"k": [1, 2]}
        assert np.asarray(png)[0, 0].tolist() == [0x33, 0x66, 0x99]
    chunks = png_chunk_types(path)
    assert chunks.count(b"tEXt") == 3 and b"iTXt" not in chunks and b"zTXt" not in chunks


def test_save_without_extra_pnginfo_writes_only_the_prompt(env: Env) -> None:
    env.ok(save_prompt())
    with Image.open(env.base / "output" / "ComfyUI_00001_.png") as png:
        assert set(png.text) == {"prompt"}


def test_quantisation_truncates_like_comfyui(tmp_path: Path) -> None:
    values = torch.tensor([0.0, 0.5, 0.999, 1.0, 1.7, -0.3, 0.00392, 0.25], dtype=torch.float32)
    images = values.reshape(1, 1, 8, 1).expand(1, 1, 8, 3).contiguous()
    (entry,) = image_file_helpers.save_images(images, "q", tmp_path, "output")
    with Image.open(tmp_path / entry["filename"]) as png:
        got = np.asarray(png)[0, :, 0].tolist()
    assert got == [0, 127, 254, 255, 255, 0, 0, 63]  # uint8(clip(255·x, 0, 255)), truncated


@pytest.mark.parametrize("channels, mode", [(1, "L"), (2, "LA"), (3, "RGB"), (4, "RGBA")])
def test_channel_counts(tmp_path: Path, channels: int, mode: str) -> None:
    (entry,) = image_file_helpers.save_images(torch.full((1, 2, 2, channels), 0.5), "c", tmp_path, "output")
    with Image.open(tmp_path / entry["filename"]) as png:
        assert png.mode == mode


def test_counter_over_batches_and_prompts(env: Env) -> None:
    first = env.ok(save_prompt(batch=2))["9"]["images"]
    assert [e["filename"] for e in first] == ["ComfyUI_00001_.png", "ComfyUI_00002_.png"]
    second = env.ok(save_prompt(color=1))["9"]["images"]
    assert [e["filename"] for e in second] == ["ComfyUI_00003_.png"]
    other = env.ok(save_prompt(color=2, prefix="Other"))["9"]["images"]
    assert [e["filename"] for e in other] == ["Other_00001_.png"]


def test_counter_continues_after_the_highest_existing_number(tmp_path: Path) -> None:
    for name in ("x_00041_.png", "x_00007_.png", "X_00043_.png", "xy_00099_.png", "x_00500.png", "x_abc_.png",
                 "x_00060_extra.png"):
        (tmp_path / name).write_bytes(b"")
    assert image_file_helpers.next_counter(tmp_path, "x") == 61
    assert image_file_helpers.next_counter(tmp_path, "y") == 1
    assert image_file_helpers.next_counter(tmp_path / "missing", "x") == 1


def test_never_overwrites_an_existing_file(tmp_path: Path) -> None:
    where = image_file_helpers.save_image_path("race", tmp_path)
    assert where.counter == 1
    (tmp_path / "race_00001_.png").write_bytes(b"someone else's file")
    picture = image_file_helpers.tensor_to_pil(torch.zeros(2, 2, 3))
    name, counter = image_file_helpers.write_png_exclusive(picture, where.folder, where.filename, where.counter, None, 4)
    assert (name, counter) == ("race_00002_.png", 2)
    assert (tmp_path / "race_00001_.png").read_bytes() == b"someone else's file"


def test_subfolders_and_batch_number(env: Env) -> None:
    images = env.ok(save_prompt(prefix="people/portraits/img_%batch_num%", batch=2))["9"]["images"]
    assert images == [{"filename": "img_0_00001_.png", "subfolder": "people/portraits", "type": "output"},
                      {"filename": "img_1_00002_.png", "subfolder": "people/portraits", "type": "output"}]
    assert (env.base / "output" / "people" / "portraits" / "img_1_00002_.png").is_file()
    windows = env.ok(save_prompt(color=5, prefix="win\\sub\\name"))["9"]["images"]
    assert windows[0]["subfolder"] == "win/sub" and windows[0]["filename"] == "name_00001_.png"


@pytest.mark.parametrize("prefix", ["../evil", "/tmp/abs/evil", "a/../../evil", "..", "C:/x/evil", "sub/../../x"])
def test_prefixes_escaping_output_are_refused(env: Env, prefix: str) -> None:
    result = env.run(save_prompt(prefix=prefix))
    assert result.status == "error"
    assert result.error["node_id"] == "9" and "output folder" in result.error["exception_message"]
    assert not list(env.base.parent.glob("evil*")) and not list(env.base.glob("evil*"))


def test_prefix_through_a_symlink_out_is_refused(env: Env, tmp_path_factory: pytest.TempPathFactory) -> None:
    outside = tmp_path_factory.mktemp("outside")
    (env.base / "output").mkdir()
    (env.base / "output" / "link").symlink_to(outside)
    result = env.run(save_prompt(prefix="link/x"))
    assert result.status == "error" and "outside" in result.error["exception_message"]
    assert list(outside.iterdir()) == []


def test_split_prefix_normalises_like_comfyui() -> None:
    assert image_file_helpers.split_prefix("a/./b//c") == ("a/b", "c")
    assert image_file_helpers.split_prefix("a/../b") == ("", "b")
    assert image_file_helpers.split_prefix("name") == ("", "name")
    with pytest.raises(UnsafePathError):
        image_file_helpers.split_prefix("")


# ---- prefix tokens -----------------------------------------------------------------------------

NOW = time.struct_time((2024, 3, 7, 9, 5, 2, 3, 67, 0))


@pytest.mark.parametrize("pattern, expected", [
    ("%date:yyyy-MM-dd%", "2024-03-07"),
    ("%date:yy-M-d%", "24-3-7"),
    ("%date:hhmmss%", "090502"),
    ("%date:h.m.s%", "9.5.2"),
    ("%date:yyyyMMdd_hh-mm%/img", "20240307_09-05/img"),
    ("%year%-%month%-%day% %hour%:%minute%:%second%", "2024-03-07 09:05:02"),
    ("%width%x%height%", "640x480"),
    ("no tokens", "no tokens"),
    ("%unknown% and %Missing.node%", "%unknown% and %Missing.node%"),
    ("100% sure", "100% sure"),
])
def test_format_prefix_tokens(pattern: str, expected: str) -> None:
    assert image_file_helpers.format_prefix(pattern, width=640, height=480, now=NOW) == expected


def test_node_widget_tokens_come_from_the_prompt() -> None:
    prompt = {"3": {"class_type": "KSampler", "inputs": {"seed": 42, "model": ["4", 0], "sampler_name": "a/b:c"}},
              "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 768},
                    "_meta": {"title": "Empty Latent Image"}},
              "6": {"class_type": "PrimitiveBoolean", "inputs": {"value": True}, "_meta": {"title": "Flag"}}}
    assert image_file_helpers.format_prefix("%KSampler.seed%_%Empty Latent Image.height%", prompt=prompt) == "42_768"
    assert image_file_helpers.format_prefix("%EmptyLatentImage.width%", prompt=prompt) == "512"
    assert image_file_helpers.format_prefix("%KSampler.sampler_name%", prompt=prompt) == "a_b_c"  # unsafe characters
    assert image_file_helpers.format_prefix("%Flag.value%", prompt=prompt) == "true"
    assert image_file_helpers.format_prefix("%KSampler.model%", prompt=prompt) == "%KSampler.model%"  # a link: no value
    assert image_file_helpers.format_prefix("%KSampler.nope%", prompt=prompt) == "%KSampler.nope%"


def test_save_image_expands_tokens(env: Env) -> None:
    year = time.strftime("%Y")
    images = env.ok(save_prompt(prefix="%date:yyyy%/%Canvas.width%x%height%_c%EmptyImage.color%"))["9"]["images"]
    assert images[0]["subfolder"] == year and images[0]["filename"] == f"8x4_c{0x336699}_00001_.png"


# ---- PreviewImage ------------------------------------------------------------------------------

def test_preview_image_goes_to_temp_fast(env: Env) -> None:
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 2,
                                                           "color": 0x123456}},
              "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    images = env.ok(prompt, {"extra_pnginfo": {"workflow": WORKFLOW}})["2"]["images"]
    assert [e["type"] for e in images] == ["temp", "temp"] and images[0]["subfolder"] == ""
    first, second = (e["filename"] for e in images)
    assert first.startswith("ComfyUI_temp_") and first.endswith("_00001_.png") and len(first) == len(
        "ComfyUI_temp_abcde_00001_.png")
    assert second == first.replace("_00001_", "_00002_")
    path = env.base / "temp" / first
    assert not (env.base / "output").exists()
    assert zlib_level_flag(path) == 0  # compress level 1 (zlib FLEVEL "fastest")
    with Image.open(path) as png:
        assert json.loads(png.text["workflow"]) == WORKFLOW
    env.ok(save_prompt())
    assert zlib_level_flag(env.base / "output" / "ComfyUI_00001_.png") == 1  # level 4


# ---- LoadImage ---------------------------------------------------------------------------------

def put(env: Env, name: str, picture: Image.Image, **save: Any) -> Path:
    path = env.base / "input" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path, **save)
    return path


def load(env: Env, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    with env.context():
        return LoadImage().execute(image=name)


def test_load_rgba_gives_mask_from_alpha(env: Env) -> None:
    pixels = np.zeros((2, 3, 4), np.uint8)
    pixels[..., 0] = 200
    pixels[..., 3] = [[255, 0, 51], [102, 255, 0]]
    put(env, "rgba.png", Image.fromarray(pixels, "RGBA"))
    image, mask = load(env, "rgba.png")
    assert image.shape == (1, 2, 3, 3) and mask.shape == (1, 2, 3)
    assert image.dtype == torch.float32 and mask.dtype == torch.float32
    assert torch.allclose(image[0, 0, 0], torch.tensor([200 / 255, 0.0, 0.0]))
    expected = 1.0 - torch.tensor([[255, 0, 51], [102, 255, 0]], dtype=torch.float32) / 255.0
    assert torch.allclose(mask[0], expected)


def test_load_rgb_gives_a_64_square_empty_mask(env: Env) -> None:
    put(env, "rgb.jpg", Image.new("RGB", (5, 7), (10, 20, 30)), quality=100)
    image, mask = load(env, "rgb.jpg")
    assert image.shape == (1, 7, 5, 3) and mask.shape == (1, 64, 64) and float(mask.abs().sum()) == 0.0


def test_load_palette_with_transparency(env: Env) -> None:
    picture = Image.new("P", (2, 1))
    picture.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    picture.putpixel((1, 0), 1)
    put(env, "pal.png", picture, transparency=0)
    image, mask = load(env, "pal.png")
    assert mask[0].tolist() == [[1.0, 0.0]] and image[0, 0, 1].tolist() == [1.0, 0.0, 0.0]


def test_load_applies_exif_orientation(env: Env) -> None:
    picture = Image.new("RGB", (4, 2), (0, 0, 0))
    picture.putpixel((0, 0), (255, 255, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    put(env, "turned.png", picture, exif=exif)
    image, _ = load(env, "turned.png")
    assert image.shape == (1, 4, 2, 3)
    assert image[0, 0, 1].tolist() == [1.0, 1.0, 1.0]  # the top-left pixel is now top-right


def test_load_multi_frame_images_as_a_batch(env: Env) -> None:
    frames = [Image.new("RGB", (3, 3), (255 * (i % 2), 0, 0)) for i in range(3)]
    put(env, "anim.gif", frames[0], save_all=True, append_images=frames[1:], duration=10, loop=0)
    image, mask = load(env, "anim.gif")
    assert image.shape == (3, 3, 3, 3) and mask.shape[0] == 3
    assert image[:, 0, 0, 0].tolist() == [0.0, 1.0, 0.0]


def test_frames_of_another_size_are_skipped(env: Env) -> None:
    frames = [Image.new("RGB", (4, 4), "red"), Image.new("RGB", (2, 2), "blue"), Image.new("RGB", (4, 4), "lime")]
    put(env, "pages.tiff", frames[0], save_all=True, append_images=frames[1:])
    image, _ = load(env, "pages.tiff")
    assert image.shape == (2, 4, 4, 3) and image[1, 0, 0].tolist() == [0.0, 1.0, 0.0]


def test_load_16_bit_greyscale_keeps_precision(env: Env) -> None:
    values = np.array([[0, 257, 1000, 65535]], dtype=np.uint16)
    put(env, "grey16.png", Image.fromarray(values))
    image, mask = load(env, "grey16.png")
    assert image.shape == (1, 1, 4, 3) and mask.shape == (1, 64, 64)
    assert np.allclose(image[0, 0, :, 0].numpy(), values[0] / 65535.0, atol=1e-6)
    assert torch.equal(image[..., 0], image[..., 2])


def test_load_16_bit_rgba(env: Env) -> None:
    rows = np.array([[[65535, 0, 32896, 65535], [0, 65535, 0, 0]]], dtype=">u2")
    path = env.base / "input" / "rgba16.png"
    path.parent.mkdir(parents=True)
    path.write_bytes(png_bytes(rows, color_type=6))
    image, mask = load(env, "rgba16.png")
    assert image.shape == (1, 1, 2, 3)
    assert torch.allclose(image[0, 0, 0], torch.tensor([1.0, 0.0, 128 / 255]))
    assert mask[0].tolist() == [[0.0, 1.0]]


def test_annotated_names_and_subfolders(env: Env) -> None:
    out = env.base / "output" / "run1"
    out.mkdir(parents=True)
    Image.new("RGB", (2, 2), "white").save(out / "done.png")
    image, _ = load(env, "run1/done.png [output]")
    assert image.shape == (1, 2, 2, 3)
    put(env, "pasted/clip.png", Image.new("RGB", (3, 1)))
    assert load(env, "pasted/clip.png")[0].shape == (1, 1, 3, 3)
    with pytest.raises(FileNotFoundError, match="Invalid image file: nope.png"):
        load(env, "nope.png")
    with pytest.raises(UnsafePathError):
        load(env, "../outside.png")


def test_fingerprint_is_the_content_hash(env: Env) -> None:
    path = put(env, "a.png", Image.new("RGB", (2, 2), "red"))
    with env.context():
        first = LoadImage.fingerprint("a.png")
        assert first == hashlib.sha256(path.read_bytes()).hexdigest()
        Image.new("RGB", (2, 2), "blue").save(path)
        assert LoadImage.fingerprint("a.png") != first
        assert math.isnan(LoadImage.fingerprint("missing.png"))
    assert math.isnan(LoadImage.fingerprint("a.png"))  # outside a run: always rerun


def test_validate_checks_the_file_exists(env: Env) -> None:
    put(env, "here.png", Image.new("RGB", (1, 1)))
    spec = env.registry["LoadImage"]
    assert spec.validate_inputs_args == frozenset({"image"})
    with env.context():
        assert spec.validate_inputs(image="here.png") is True
        assert spec.validate_inputs(image="gone.png") == "Invalid image file: gone.png"
        assert spec.validate_inputs(image="../../etc/passwd") == "Invalid image file: ../../etc/passwd"


def test_hooks_work_in_the_hook_context(env: Env) -> None:
    path = put(env, "h.png", Image.new("RGB", (1, 1)))
    with hook_context("7", "LoadImage", folders=env.folders):
        assert LoadImage.fingerprint("h.png") == hashlib.sha256(path.read_bytes()).hexdigest()
        assert LoadImage.validate("nothere.png") == "Invalid image file: nothere.png"


def test_executor_reuses_an_unchanged_load_and_rejects_a_missing_file(env: Env) -> None:
    from executor.validate import validate_prompt

    put(env, "same.png", Image.new("RGB", (2, 2), "red"))
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "same.png"}},
              "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    env.ok(prompt)
    events: list[Any] = []
    env.executor.execute(prompt, "again", emit=events.append)
    cached = [e.data["nodes"] for e in events if getattr(e, "type", "") == "execution_cached"]
    assert cached and set(cached[0]) == {"1", "2"}
    missing = {"1": {"class_type": "LoadImage", "inputs": {"image": "gone.png"}}, "2": prompt["2"]}
    assert not validate_prompt(missing, env.registry, env.folders).ok


def test_combo_lists_the_images_of_input(env: Env) -> None:
    for name in ("b.png", "a.JPG", "c.webp", "notes.txt", "model.safetensors"):
        (env.base / "input").mkdir(exist_ok=True)
        (env.base / "input" / name).write_bytes(b"")
    (env.base / "input" / "sub").mkdir()
    (env.base / "input" / "sub" / "d.png").write_bytes(b"")
    entry = env.registry.object_info(env.folders)["LoadImage"]
    assert entry["input"]["required"]["image"] == [["a.JPG", "b.png", "c.webp"], {"image_upload": True}]
    assert entry["output"] == ["IMAGE", "MASK"] and entry["display_name"] == "Load Image"


def test_load_invert_save_round_trip_through_the_executor(env: Env) -> None:
    pixels = np.array([[[0, 64, 255, 255], [255, 128, 0, 0]]], np.uint8)
    put(env, "in.png", Image.fromarray(pixels, "RGBA"))
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
              "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
              "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "inv"}},
              "4": {"class_type": "PreviewAny", "inputs": {"source": ["1", 1]}}}
    outputs = env.ok(prompt)
    with Image.open(env.base / "output" / outputs["3"]["images"][0]["filename"]) as png:
        got = np.asarray(png)
    # 1 − x/255 then truncation: 255·(1 − 64/255) = 191 exactly in float32? allow one step.
    assert np.abs(got.astype(int) - (255 - pixels[..., :3].astype(int))).max() <= 1
    assert "tensor" in outputs["4"]["text"][0]
    # A replaced input file gives a new output on the next run.
    put(env, "in.png", Image.fromarray(np.full((1, 2, 4), 255, np.uint8), "RGBA"))
    outputs = env.ok(prompt)
    with Image.open(env.base / "output" / outputs["3"]["images"][0]["filename"]) as png:
        assert np.asarray(png).max() == 0


# ---- helpers -----------------------------------------------------------------------------------

def png_chunks(path: Path) -> list[tuple[bytes, bytes]]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset:offset + 4])
        kind = data[offset + 4:offset + 8]
        chunks.append((kind, data[offset + 8:offset + 8 + length]))
        offset += 12 + length
    return chunks


def png_chunk_types(path: Path) -> list[bytes]:
    return [kind for kind, _ in png_chunks(path)]


def zlib_level_flag(path: Path) -> int:
    """FLEVEL of the zlib stream in the first IDAT (0: fastest … 3: maximum compression)."""
    idat = next(body for kind, body in png_chunks(path) if kind == b"IDAT")
    return idat[1] >> 6


def png_bytes(rows: np.ndarray, *, color_type: int) -> bytes:
    """A 16-bit PNG written by hand (Pillow cannot write 16-bit colour)."""
    height, width = rows.shape[:2]

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in rows)
    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
