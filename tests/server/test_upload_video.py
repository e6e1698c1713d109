"""POST /upload/image takes video files as ComfyUI's editor sends them for LoadVideo (a real MP4 made with PyAV,
through a real aiohttp server on loopback): the file is stored, LoadVideo's /object_info lists it, and a file
named as a video that is not one is refused with a 400 and nothing written."""
from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import aiohttp
import av
import numpy as np

from harness import LiveServer, build_test_runtime, run


def mp4_bytes(frames: int = 3) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("h264", rate=Fraction(8))
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        for i in range(frames):
            picture = np.full((16, 16, 3), 40 * i, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def _form(data: bytes, filename: str, content_type: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("image", data, filename=filename, content_type=content_type)
    return form


def test_upload_accepts_a_video_and_load_video_lists_it(tmp_path: Path) -> None:
    async def body() -> None:
        async with LiveServer(build_test_runtime(tmp_path)) as srv:
            data = mp4_bytes()
            async with srv.session.post(f"{srv.url}/upload/image", data=_form(data, "clip.mp4", "video/mp4")) as r:
                assert r.status == 200
                assert await r.json() == {"name": "clip.mp4", "subfolder": "", "type": "input"}
            assert (tmp_path / "input" / "clip.mp4").read_bytes() == data
            async with srv.session.get(f"{srv.url}/object_info/LoadVideo") as r:
                info = await r.json()
            assert info["LoadVideo"]["input"]["required"]["file"][0] == ["clip.mp4"]
            async with srv.session.post(f"{srv.url}/upload/image",
                                        data=_form(b"\x00not a video" * 50, "fake.mp4", "video/mp4")) as r:
                assert r.status == 400
                assert "not a video file" in (await r.json())["error"]["message"]
            assert not (tmp_path / "input" / "fake.mp4").exists()

    run(body)
