"""Event values: JSON messages and binary preview frames."""
from __future__ import annotations

from PIL import Image

from executor.events import Event, PreviewImage, encode_preview


def test_event_json_shape() -> None:
    assert Event("executing", {"node": "3"}).to_json() == {"type": "executing", "data": {"node": "3"}}


def test_preview_encodings() -> None:
    image = Image.new("RGBA", (64, 32), (0, 255, 0, 128))
    jpeg = encode_preview("p", "3", image)
    assert isinstance(jpeg, PreviewImage) and jpeg.image_format == "JPEG" and jpeg.data[:2] == b"\xff\xd8"
    png = encode_preview("p", "3", ("PNG", image, 16))
    assert png.image_format == "PNG" and png.data[:4] == b"\x89PNG"
    with Image.open(__import__("io").BytesIO(png.data)) as decoded:
        assert max(decoded.size) == 16  # shrunk to the requested size
    assert png.to_frame()[:8] == b"\x00\x00\x00\x01\x00\x00\x00\x02"
    assert encode_preview("p", "3", ("JPEG", b"raw")).data == b"raw"
    assert encode_preview("p", "3", 42) is None
