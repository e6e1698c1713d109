"""nodes/video.py through the real executor and real PyAV files: CreateVideo → SaveVideo (H.264 MP4 with the
workflow in its tags) → LoadVideo → GetVideoComponents gives the same frame count, rate, size and (nearly, H.264
being lossy) pixels; a loaded video saves by remuxing (identical frames); audio survives the round trip; SaveWEBM
writes a valid VP9 WebM; LoadVideo lists only video files and names a missing one."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import av
import pytest
import torch

from tests.nodes.ops_env import OpsEnv

WORKFLOW = {"nodes": [], "links": [], "version": 0.4}


@pytest.fixture
def env(tmp_path: Path) -> OpsEnv:
    return OpsEnv(tmp_path)


def frames(count: int = 5, height: int = 24, width: int = 32) -> torch.Tensor:
    """Smooth frames (flat colours that change per frame), which H.264 keeps within a few levels."""
    colours = torch.linspace(0.1, 0.9, count)
    images = torch.empty(count, height, width, 3)
    for i, c in enumerate(colours):
        images[i, ..., 0], images[i, ..., 1], images[i, ..., 2] = c, 1.0 - c, 0.5
    return images


def to_input(env: OpsEnv, source: Path, name: str) -> None:
    env.folders.input_directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, env.folders.input_directory / name)


def run(env: OpsEnv, prompt: dict, extra: dict | None = None) -> dict:
    env.count += 1
    result = env.executor.execute(prompt, f"p-video-{env.count}", extra_data=extra or {})
    assert result.status == "success", result.error and result.error["exception_message"]
    return result.outputs


def save_created(env: OpsEnv, images: torch.Tensor, fps: float, audio: dict | None = None) -> dict:
    inputs = {"images": images, "fps": fps} | ({"audio": audio} if audio is not None else {})
    prompt = env.prompt("CreateVideo", inputs)
    prompt["save"] = {"class_type": "SaveVideo", "inputs": {"video": ["n", 0], "filename_prefix": "video/clip",
                                                            "format": "auto", "codec": "auto"}}
    return run(env, prompt, {"extra_pnginfo": {"workflow": WORKFLOW}})["save"]


def load_components(env: OpsEnv, name: str) -> tuple[torch.Tensor, object, float]:
    prompt = {"load": {"class_type": "LoadVideo", "inputs": {"file": name}},
              "parts": {"class_type": "GetVideoComponents", "inputs": {"video": ["load", 0]}}}
    for index in range(3):
        prompt[f"g{index}"] = {"class_type": "Grab", "inputs": {"value": ["parts", index]}}
    before = len(env.grabbed)
    run(env, prompt)
    got = env.grabbed[before:]  # the three Grab nodes run in any order: tell the values apart by type
    images = next(v for v in got if isinstance(v, torch.Tensor))
    fps = next(v for v in got if isinstance(v, float))
    audio = next(v for v in got if v is not images and v is not fps)
    return images, audio, fps


def test_create_save_load_round_trip(env: OpsEnv) -> None:
    ui = save_created(env, frames(), 12.0)
    assert ui["images"] == [{"filename": "clip_00001_.mp4", "subfolder": "video", "type": "output"}]
    assert list(ui["animated"]) == [True]
    path = env.folders.output_directory / "video" / "clip_00001_.mp4"
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert (stream.width, stream.height) == (32, 24) and stream.average_rate == 12
        assert json.loads(container.metadata["workflow"]) == WORKFLOW
        assert json.loads(container.metadata["prompt"])["save"]["class_type"] == "SaveVideo"
    to_input(env, path, "clip.mp4")
    images, audio, fps = load_components(env, "clip.mp4")
    assert images.shape == (5, 24, 32, 3) and images.dtype == torch.float32
    assert fps == 12.0 and audio is None
    assert (images - frames()).abs().mean() < 0.02


def test_loaded_video_is_remuxed_not_reencoded(env: OpsEnv) -> None:
    save_created(env, frames(4), 10.0)
    to_input(env, env.folders.output_directory / "video" / "clip_00001_.mp4", "a.mp4")
    prompt = {"load": {"class_type": "LoadVideo", "inputs": {"file": "a.mp4"}},
              "save": {"class_type": "SaveVideo", "inputs": {"video": ["load", 0], "filename_prefix": "again",
                                                            "format": "mp4", "codec": "h264"}}}
    assert run(env, prompt)["save"]["images"][0]["filename"] == "again_00001_.mp4"
    copy = env.folders.output_directory / "again_00001_.mp4"
    with av.open(str(env.folders.input_directory / "a.mp4")) as a, av.open(str(copy)) as b:
        packets_a = [bytes(p) for p in a.demux(video=0) if p.size]
        packets_b = [bytes(p) for p in b.demux(video=0) if p.size]
        assert packets_a == packets_b and len(packets_a) == 4
        assert "prompt" in b.metadata and "workflow" in b.metadata  # the source's tags carried over


def test_audio_survives_the_round_trip(env: OpsEnv) -> None:
    rate = 16000
    t = torch.arange(rate) / rate
    audio = {"waveform": (0.5 * torch.sin(2 * math.pi * 440 * t)).view(1, 1, -1), "sample_rate": rate}
    save_created(env, frames(10), 10.0, audio)
    to_input(env, env.folders.output_directory / "video" / "clip_00001_.mp4", "s.mp4")
    images, loaded, fps = load_components(env, "s.mp4")
    assert images.shape[0] == 10 and fps == 10.0
    assert loaded["sample_rate"] == rate and loaded["waveform"].shape[:2] == (1, 1)
    assert abs(loaded["waveform"].shape[2] - rate) <= 2048  # AAC pads to whole 1024-sample frames
    assert 0.3 < float(loaded["waveform"].abs().max()) < 0.7


def test_save_webm(env: OpsEnv) -> None:
    prompt = env.prompt("SaveWEBM", {"images": frames(4, 16, 20), "filename_prefix": "w", "codec": "vp9",
                                     "fps": 8.0, "crf": 20.0})
    ui = run(env, prompt, {"extra_pnginfo": {"workflow": WORKFLOW}})["n"]
    assert ui["images"] == [{"filename": "w_00001_.webm", "subfolder": "", "type": "output"}]
    with av.open(str(env.folders.output_directory / "w_00001_.webm")) as container:
        assert container.format.name.split(",")[0] in ("matroska", "webm")
        stream = container.streams.video[0]
        assert stream.codec_context.name == "vp9" and (stream.width, stream.height) == (20, 16)
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert len(decoded) == 4
        tags = {k.lower(): v for k, v in container.metadata.items()}  # Matroska reads its tag names back upper-case
        assert json.loads(tags["workflow"]) == WORKFLOW
        assert json.loads(tags["prompt"])["n"]["class_type"] == "SaveWEBM"
    first = torch.from_numpy(decoded[0]).float() / 255
    assert (first - frames(4, 16, 20)[0]).abs().mean() < 0.03


def test_load_video_lists_videos_and_names_a_missing_file(env: OpsEnv) -> None:
    save_created(env, frames(2), 5.0)
    to_input(env, env.folders.output_directory / "video" / "clip_00001_.mp4", "v.mp4")
    (env.folders.input_directory / "note.txt").write_text("not a video")
    spec = env.info("LoadVideo")["input"]["required"]["file"]
    assert spec[0] == ["v.mp4"] and spec[1]["video_upload"] is True
    result = env.run({"load": {"class_type": "LoadVideo", "inputs": {"file": "gone.mp4"}},
                      "save": {"class_type": "SaveVideo", "inputs": {"video": ["load", 0]}}})
    assert result.status != "success"
    assert "Invalid video file: gone.mp4" in json.dumps(result.error or result.node_errors)


def test_object_info_matches_comfyui(env: OpsEnv) -> None:
    info = env.info("SaveVideo")
    assert info["input"]["required"]["format"] == [["auto", "mp4"], {"default": "auto",
                                                                     "tooltip": "The format to save the video as."}]
    assert info["output_node"] is True and info["category"] == "image/video"
    parts = env.info("GetVideoComponents")
    assert parts["output"] == ["IMAGE", "AUDIO", "FLOAT"] and parts["output_name"] == ["images", "audio", "fps"]
    webm = env.info("SaveWEBM")
    assert webm["input"]["required"]["codec"][0] == ["vp9", "av1"] and webm["experimental"] is True
    assert env.info("CreateVideo")["input"]["optional"]["audio"][0] == "AUDIO"
