"""The VIDEO socket value and video files (PyAV): decoding to components, encoding and remuxing to files.

Owns `VideoContainer` / `VideoCodec` (the choices, ComfyUI's enums), `VideoComponents` (frames as an IMAGE batch, optional AUDIO `{"waveform": B×C×S, "sample_rate"}`, the frame
rate as a `Fraction`, the container's metadata) and the two VIDEO values ComfyUI's video nodes pass around:
`VideoFromFile` (a file, decoded only when asked) and `VideoFromComponents` (tensors, encoded when saved). Both
have ComfyUI's `VideoInput` methods: `get_components()`, `get_dimensions()` (width, height) and
`save_to(path, format, codec, metadata)`.

Saving follows ComfyUI 0.3.64 (`comfy_api/latest/_input_impl/video_types.py`): the only container is MP4 and the
only codec H.264 (`auto` means those); a file whose streams already fit is remuxed packet for packet, not
re-encoded; metadata entries are JSON text (strings as they are) in the container's tags, written with
`movflags=use_metadata_tags` so MP4 keeps them; frames are encoded as yuv420p at the frame rate rounded to 1/1000.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from fractions import Fraction
from pathlib import Path
from typing import Any, Mapping

import av
import numpy as np
import torch



class VideoContainer(str, Enum):
    """The containers SaveVideo writes (ComfyUI's `Types.VideoContainer`; "auto" is MP4)."""

    AUTO = "auto"
    MP4 = "mp4"

    @classmethod
    def as_input(cls) -> list[str]:
        return [member.value for member in cls]

    @classmethod
    def get_extension(cls, value: "str | VideoContainer") -> str:
        cls(value)  # a ValueError names an unknown container
        return "mp4"


class VideoCodec(str, Enum):
    """The codecs SaveVideo writes (ComfyUI's `Types.VideoCodec`; "auto" is H.264)."""

    AUTO = "auto"
    H264 = "h264"

    @classmethod
    def as_input(cls) -> list[str]:
        return [member.value for member in cls]


VIDEO_FORMATS = tuple(VideoContainer.as_input())
VIDEO_CODECS = tuple(VideoCodec.as_input())
# Input files LoadVideo lists: those whose content type is video/* (ComfyUI filters by mimetype).
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".qt", ".webm", ".mkv", ".avi", ".mpeg", ".mpg", ".flv", ".wmv")
_METADATA_OPTIONS = {"movflags": "use_metadata_tags"}


def container_extension(format: str) -> str:
    """The file extension of a VIDEO_FORMATS entry."""
    if format not in VIDEO_FORMATS:
        raise ValueError(f"video format {format!r} is not one of {', '.join(VIDEO_FORMATS)}")
    return VideoContainer.get_extension(format)


@dataclass(frozen=True)
class VideoComponents:
    """What a video is made of: `images` F×H×W×3 floats in 0..1, `frame_rate`, optional `audio` and `metadata`."""

    images: torch.Tensor
    frame_rate: Fraction
    audio: Mapping[str, Any] | None = None
    metadata: Mapping[str, str] | None = None


class Video:
    """A VIDEO socket value (ComfyUI's `VideoInput`)."""

    def get_components(self) -> VideoComponents:
        raise NotImplementedError

    def get_dimensions(self) -> tuple[int, int]:
        """(width, height) of the frames."""
        images = self.get_components().images
        return int(images.shape[2]), int(images.shape[1])

    def get_duration(self) -> float:
        """Seconds: the frame count over the frame rate."""
        components = self.get_components()
        return float(int(components.images.shape[0]) / components.frame_rate)

    def save_to(self, path: str | Path, format: str = "auto", codec: str = "auto",
                metadata: Mapping[str, Any] | None = None) -> None:
        raise NotImplementedError


VideoInput = Video  # ComfyUI's name (`comfy_api.latest.Input.Video`)


def _check_choices(format: str, codec: str) -> None:
    if format not in VIDEO_FORMATS:
        raise ValueError(f"video format {format!r} is not supported: only {', '.join(VIDEO_FORMATS)}")
    if codec not in VIDEO_CODECS:
        raise ValueError(f"video codec {codec!r} is not supported: only {', '.join(VIDEO_CODECS)}")


def _tag(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _decode_frames(container: Any) -> tuple[torch.Tensor, Fraction]:
    frames = [torch.from_numpy(frame.to_ndarray(format="rgb24")) for frame in container.decode(video=0)]
    images = (torch.stack(frames).float() / 255.0) if frames else torch.zeros(0, 0, 0, 3)
    stream = container.streams.video[0]
    rate = Fraction(stream.average_rate) if stream.average_rate else Fraction(1)
    return images, rate


def _decode_audio(container: Any) -> dict[str, Any] | None:
    """The first audio stream as planar float samples (1×channels×samples), or None."""
    if not container.streams.audio:
        return None
    stream = container.streams.audio[0]
    container.seek(0)
    resampler = av.AudioResampler(format="fltp", layout=stream.layout, rate=stream.sample_rate)
    chunks = []
    for frame in container.decode(stream):
        chunks += [out.to_ndarray() for out in resampler.resample(frame)]
    chunks += [out.to_ndarray() for out in resampler.resample(None)]
    if not chunks:
        return None
    waveform = torch.from_numpy(np.concatenate(chunks, axis=1)).float().unsqueeze(0)
    return {"waveform": waveform, "sample_rate": int(stream.sample_rate or 1)}


class VideoFromFile(Video):
    """A video file; decoded each time its components are asked for (the file is the value)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"VideoFromFile({str(self.path)!r})"

    def get_dimensions(self) -> tuple[int, int]:
        with av.open(str(self.path)) as container:
            if not container.streams.video:
                raise ValueError(f"no video stream in {self.path.name}")
            stream = container.streams.video[0]
            return int(stream.width), int(stream.height)

    def get_duration(self) -> float:
        with av.open(str(self.path)) as container:
            if container.duration is not None:
                return float(container.duration / av.time_base)
        return super().get_duration()

    def get_components(self) -> VideoComponents:
        with av.open(str(self.path)) as container:
            if not container.streams.video:
                raise ValueError(f"no video stream in {self.path.name}")
            images, rate = _decode_frames(container)
            audio = _decode_audio(container)
            return VideoComponents(images=images, frame_rate=rate, audio=audio, metadata=dict(container.metadata))

    def save_to(self, path: str | Path, format: str = "auto", codec: str = "auto",
                metadata: Mapping[str, Any] | None = None) -> None:
        """Remux when the container and codec fit (no re-encoding), else decode and encode as H.264 in MP4."""
        _check_choices(format, codec)
        with av.open(str(self.path)) as source:
            names = source.format.name.split(",")
            video_codec = source.streams.video[0].codec.name if source.streams.video else None
            fits = (format == "auto" or format in names) and (codec == "auto" or video_codec in (None, codec))
            if fits:
                _remux(source, path, metadata)
                return
        VideoFromComponents(self.get_components()).save_to(path, format, codec, metadata)


def _remux(source: Any, path: str | Path, metadata: Mapping[str, Any] | None) -> None:
    """Copy `source`'s video, audio and subtitle packets into a new file, its tags overlaid by `metadata`."""
    with av.open(str(path), mode="w", options=dict(_METADATA_OPTIONS)) as output:
        for key, value in source.metadata.items():
            if metadata is None or key not in metadata:
                output.metadata[key] = value
        for key, value in (metadata or {}).items():
            output.metadata[key] = _tag(value)
        mapping = {}
        for stream in source.streams:
            if stream.type in ("video", "audio", "subtitle"):
                mapping[stream.index] = output.add_stream_from_template(template=stream, opaque=True)
        for packet in source.demux():
            if packet.stream.index in mapping and packet.dts is not None:
                packet.stream = mapping[packet.stream.index]
                output.mux(packet)


class VideoFromComponents(Video):
    """A video made of tensors (CreateVideo); encoded when saved."""

    def __init__(self, components: VideoComponents) -> None:
        self.components = components

    def get_components(self) -> VideoComponents:
        c = self.components
        return VideoComponents(images=c.images, frame_rate=c.frame_rate, audio=c.audio)

    def save_to(self, path: str | Path, format: str = "auto", codec: str = "auto",
                metadata: Mapping[str, Any] | None = None) -> None:
        """Encode the frames as H.264 (yuv420p) and the audio as AAC in an MP4 file."""
        _check_choices(format, codec)
        images = self.components.images
        height, width = int(images.shape[1]), int(images.shape[2])
        if width % 2 or height % 2:
            raise ValueError(f"H.264 (yuv420p) needs an even width and height; the frames are {width}×{height}")
        with av.open(str(path), mode="w", options=dict(_METADATA_OPTIONS)) as output:
            for key, value in (metadata or {}).items():
                output.metadata[key] = json.dumps(value)
            rate = Fraction(round(self.components.frame_rate * 1000), 1000)
            stream = output.add_stream("h264", rate=rate)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            audio_stream = _add_audio_stream(output, self.components.audio)
            for frame in images:
                pixels = (frame[..., :3] * 255).clamp(0, 255).to(torch.uint8).cpu().numpy()
                picture = av.VideoFrame.from_ndarray(pixels, format="rgb24").reformat(format="yuv420p")
                output.mux(stream.encode(picture))
            output.mux(stream.encode(None))
            if audio_stream is not None:
                _encode_audio(output, audio_stream, self.components.audio, rate)


def _add_audio_stream(output: Any, audio: Mapping[str, Any] | None) -> Any:
    if not audio:
        return None
    rate = int(audio["sample_rate"])
    channels = int(audio["waveform"].shape[1])
    stream = output.add_stream("aac", rate=rate, layout="mono" if channels == 1 else "stereo")
    stream.format = "fltp"
    return stream


def _encode_audio(output: Any, stream: Any, audio: Mapping[str, Any], frame_rate: Fraction) -> None:
    """AAC-encode the first item of the waveform in chunks of one video frame's worth of samples."""
    waveform = audio["waveform"][0, :2].float().cpu()
    rate = int(audio["sample_rate"])
    layout = "mono" if waveform.shape[0] == 1 else "stereo"
    chunk = max(1, int(rate / frame_rate))
    for start in range(0, waveform.shape[1], chunk):
        frame = av.AudioFrame.from_ndarray(waveform[:, start:start + chunk].contiguous().numpy(), format="fltp",
                                           layout=layout)
        frame.sample_rate, frame.pts = rate, start
        output.mux(stream.encode(frame))
    output.mux(stream.encode(None))
