"""nodes/image_save_formats.py through the real executor: animated PNG/WebP files (frames, timing, ComfyUI's metadata
chunks/EXIF), SVG saving with metadata, MaskPreview's temp PNGs, LoadImageOutput reading "name [output]"."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nodes.image_save_formats import SVG
from tests.nodes.ops_env import OpsEnv

WORKFLOW = {"nodes": [], "links": [], "version": 0.4}


@pytest.fixture
def env(tmp_path: Path) -> OpsEnv:
    return OpsEnv(tmp_path)


def frames(count: int = 3) -> torch.Tensor:
    return torch.stack([torch.full((4, 6, 3), i / (count - 1)) for i in range(count)])


def run_saver(env: OpsEnv, class_type: str, inputs: dict, extra: dict | None = None) -> dict:
    env.count += 1  # fresh Feed keys, so a changed input reruns the saver
    prompt = env.prompt(class_type, inputs)
    result = env.executor.execute(prompt, f"p-save-{env.count}", extra_data=extra or {})
    assert result.status == "success", result.error
    return result.outputs["n"]


def test_animated_png(env: OpsEnv) -> None:
    ui = run_saver(env, "SaveAnimatedPNG", {"images": frames(), "filename_prefix": "anim/a", "fps": 8.0,
                                            "compress_level": 4}, {"extra_pnginfo": {"workflow": WORKFLOW}})
    assert ui["images"] == [{"filename": "a_00001_.png", "subfolder": "anim", "type": "output"}]
    assert list(ui["animated"]) == [True]
    path = env.folders.output_directory / "anim" / "a_00001_.png"
    data = path.read_bytes()
    assert b"acTL" in data and data.count(b"comf") == 2  # prompt and workflow chunks
    assert data.index(b"comf") > data.index(b"IDAT")
    start = data.index(b"workflow\0") + len(b"workflow\0")
    length = int.from_bytes(data[start - len(b"workflow\0") - 8:start - len(b"workflow\0") - 4], "big")
    assert json.loads(data[start:start - len(b"workflow\0") + length]) == WORKFLOW
    with Image.open(path) as png:
        assert png.n_frames == 3 and png.info["duration"] == 125
        png.seek(2)
        assert np.asarray(png.convert("RGB"))[0, 0].tolist() == [255, 255, 255]


def test_animated_webp(env: OpsEnv) -> None:
    ui = run_saver(env, "SaveAnimatedWEBP", {"images": frames(), "filename_prefix": "w", "fps": 6.0,
                                             "lossless": True, "quality": 80, "method": "fastest"},
                   {"extra_pnginfo": {"workflow": WORKFLOW}})
    assert ui["images"] == [{"filename": "w_00001_.webp", "subfolder": "", "type": "output"}]
    with Image.open(env.folders.output_directory / "w_00001_.webp") as webp:
        assert webp.n_frames == 3
        exif = webp.getexif()
        assert exif[0x010F] == f"workflow:{json.dumps(WORKFLOW)}"
        assert exif[0x0110].startswith("prompt:") and json.loads(exif[0x0110][7:])["n"]["class_type"] == \
            "SaveAnimatedWEBP"
        webp.seek(1)
        assert np.asarray(webp.convert("RGB"))[0, 0].tolist() == [127, 127, 127]


def test_second_save_takes_the_next_counter(env: OpsEnv) -> None:
    inputs = {"images": frames(2), "filename_prefix": "x", "fps": 1.0, "compress_level": 1}
    run_saver(env, "SaveAnimatedPNG", inputs)
    ui = run_saver(env, "SaveAnimatedPNG", dict(inputs, images=frames(2) * 0.5))
    assert ui["images"][0]["filename"] == "x_00002_.png"


def test_unsafe_prefix_is_refused(env: OpsEnv) -> None:
    prompt = env.prompt("SaveAnimatedPNG", {"images": frames(2), "filename_prefix": "../escape", "fps": 1.0,
                                            "compress_level": 1})
    result = env.run(prompt)
    assert result.status == "error"
    assert not (env.base / "escape_00001_.png").exists()


def test_save_svg_with_metadata(env: OpsEnv) -> None:
    docs = SVG([io.BytesIO(b'<svg xmlns="http://www.w3.org/2000/svg" width="2"><rect/></svg>'),
                io.BytesIO(b"<svg><circle/></svg>")])
    ui = run_saver(env, "SaveSVGNode", {"svg": docs, "filename_prefix": "svg/v%batch_num%"},
                   {"extra_pnginfo": {"workflow": WORKFLOW}})
    assert [r["filename"] for r in ui["images"]] == ["v0_00001_.svg", "v1_00002_.svg"]
    text = (env.folders.output_directory / "svg" / "v0_00001_.svg").read_text()
    assert text.startswith('<svg xmlns="http://www.w3.org/2000/svg" width="2">\n  <metadata>')
    payload = text[text.index("<![CDATA[") + 9:text.index("]]>")]
    meta = json.loads(payload)
    assert meta["workflow"] == WORKFLOW and meta["prompt"]["n"]["class_type"] == "SaveSVGNode"
    assert text.rstrip().endswith("<rect/></svg>")


def test_mask_preview_writes_grey_temp_png(env: OpsEnv) -> None:
    mask = torch.tensor([[[0.0, 1.0], [0.5, 0.25]]])
    ui = run_saver(env, "MaskPreview", {"mask": mask})
    (entry,) = ui["images"]
    assert entry["type"] == "temp" and entry["filename"].startswith("ComfyUI_temp_")
    with Image.open(env.folders.temp_directory / entry["filename"]) as png:
        assert png.mode == "RGB"
        assert np.asarray(png)[..., 0].tolist() == [[0, 255], [127, 63]]


def test_load_image_output_reads_the_output_folder(env: OpsEnv) -> None:
    env.folders.output_directory.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(0).integers(0, 256, (3, 5, 4), dtype=np.uint8)
    Image.fromarray(pixels, mode="RGBA").save(env.folders.output_directory / "gen.png")
    picture = env.value("LoadImageOutput", {"image": "gen.png [output]"})
    mask = env.value("LoadImageOutput", {"image": "gen.png [output]"}, 1)
    assert torch.allclose(picture[0], torch.from_numpy(pixels[..., :3].astype(np.float32)) / 255.0)
    assert torch.allclose(mask[0], 1.0 - torch.from_numpy(pixels[..., 3].astype(np.float32)) / 255.0)
    missing = env.run(env.prompt("LoadImageOutput", {"image": "nope.png [output]"}) |
                      {"grab": {"class_type": "Grab", "inputs": {"value": ["n", 0]}}})
    assert missing.status != "success"
    info = env.info("LoadImageOutput")
    assert info["input"]["required"]["image"] == ["COMBO", {"image_upload": True, "image_folder": "output",
                                                            "remote": {"route": "/internal/files/output",
                                                                       "refresh_button": True,
                                                                       "control_after_refresh": "first"}}]
    assert info["experimental"] is True and info["output"] == ["IMAGE", "MASK"]
