"""ComfyUI's video value API as packs import it after `compat.install_compat` (`comfy_api.latest.InputImpl`,
`Types`, `Input`; the `comfy_api.input_impl` / `.util` module paths): a pack-style round trip through a real MP4
file, and the classes being the ones Loom's own video nodes pass around."""
from __future__ import annotations

import importlib
from fractions import Fraction
from pathlib import Path

import torch

from cn_env import bare_runtime

from compat import install_compat
from nodes.video_io import VideoFromFile


def test_pack_style_video_round_trip(tmp_path: Path) -> None:
    install_compat(bare_runtime(tmp_path))
    latest = importlib.import_module("comfy_api.latest")
    from comfy_api.input_impl import VideoFromFile as old_path  # the older module path packs still use
    from comfy_api.latest.util import VideoContainer

    InputImpl, Types, Input = latest.InputImpl, latest.Types, latest.Input
    assert old_path is InputImpl.VideoFromFile is VideoFromFile and VideoContainer is Types.VideoContainer
    assert Types.VideoContainer.as_input() == ["auto", "mp4"] and Types.VideoCodec.as_input() == ["auto", "h264"]
    assert Types.VideoContainer.get_extension("auto") == "mp4"
    frames = torch.linspace(0.2, 0.8, 6).view(6, 1, 1, 1).expand(6, 8, 10, 3).contiguous()
    video = InputImpl.VideoFromComponents(Types.VideoComponents(images=frames, frame_rate=Fraction(6)))
    assert isinstance(video, Input.Video) and video.get_dimensions() == (10, 8)
    path = tmp_path / "clip.mp4"
    video.save_to(str(path), format=Types.VideoContainer.MP4, codec=Types.VideoCodec.H264,
                  metadata={"workflow": {"nodes": []}})
    loaded = InputImpl.VideoFromFile(str(path))
    parts = loaded.get_components()
    assert parts.images.shape == (6, 8, 10, 3) and parts.frame_rate == 6 and parts.audio is None
    assert parts.metadata["workflow"] == '{"nodes": []}'
    assert abs(loaded.get_duration() - 1.0) < 0.2
