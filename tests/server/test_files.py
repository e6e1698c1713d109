"""/view and the uploads: content types, collisions, masks, size limits, and every path-safety case."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import aiohttp
from PIL import Image

from harness import LiveServer, build_test_runtime, png_bytes, run

UNSAFE_NAMES = ["../secret.txt", "..", "/etc/passwd", "a/../../secret.txt", "C:/Windows/win.ini", "C:secret.txt",
                "..\\secret.txt", "sub\\..\\..\\secret.txt", "bad\x00.png"]


def _form(data: bytes, filename: str, **fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("image", data, filename=filename, content_type="image/png")
    for key, value in fields.items():
        form.add_field(key, value)
    return form


def _raw_form(data: bytes, filename: str, **fields: str) -> tuple[bytes, dict[str, str]]:
    """A multipart body written by hand, with the file name exactly as given (aiohttp's own
    client would percent-encode it; hostile clients do not)."""
    boundary = "loomtestboundary"
    filename = filename.replace("\\", "\\\\")  # quoted-string escaping: the server sees one backslash
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
             f"Content-Type: image/png\r\n\r\n".encode("utf-8", "surrogateescape") + data + b"\r\n"]
    for key, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode())
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def _setup(tmp_path: Path) -> Path:
    (tmp_path / "secret.txt").write_text("top secret")
    (tmp_path / "output").mkdir(parents=True, exist_ok=True)
    (tmp_path / "output" / "page.html").write_text("<script>alert(1)</script>")
    (tmp_path / "output" / "pic.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'><script/></svg>")
    (tmp_path / "output" / "notes.txt").write_text("hello")
    os.symlink(tmp_path / "secret.txt", tmp_path / "output" / "link.txt")
    os.symlink(tmp_path, tmp_path / "output" / "linkdir")
    return tmp_path


def test_view_refuses_every_unsafe_path(tmp_path: Path) -> None:
    async def body() -> None:
        async with LiveServer(build_test_runtime(_setup(tmp_path))) as srv:
            cases = [{"filename": name} for name in UNSAFE_NAMES]
            cases += [{"filename": "secret.txt", "subfolder": sub} for sub in
                      ["..", "../", "/", "/tmp", "a/../..", "..\\", "C:\\", "x\x00"]]
            cases += [{"filename": "link.txt"}, {"filename": "secret.txt", "subfolder": "linkdir"},
                      {"filename": "secret.txt", "type": "../.."}, {"filename": "secret.txt", "type": "models"}]
            for params in cases:
                async with srv.session.get(f"{srv.url}/view", params={"type": "output", **params}
                                           if "type" not in params else params) as r:
                    text = await r.text()
                    assert r.status in (400, 403), (params, r.status)
                    assert "top secret" not in text and "Traceback" not in text

    run(body)


def test_view_never_serves_html_or_script(tmp_path: Path) -> None:
    async def body() -> None:
        async with LiveServer(build_test_runtime(_setup(tmp_path))) as srv:
            for name in ("page.html", "pic.svg"):
                async with srv.session.get(f"{srv.url}/view", params={"filename": name}) as r:
                    assert r.status == 200
                    assert r.content_type == "application/octet-stream", name
                    assert r.headers["Content-Disposition"].startswith("attachment")
                    assert r.headers["X-Content-Type-Options"] == "nosniff"
                    assert "sandbox" in r.headers["Content-Security-Policy"]
            async with srv.session.get(f"{srv.url}/view", params={"filename": "notes.txt"}) as r:
                assert r.content_type == "text/plain" and await r.text() == "hello"
            async with srv.session.get(f"{srv.url}/view", params={"filename": "missing.png"}) as r:
                assert r.status == 404

    run(body)


def test_upload_image_collisions_subfolder_overwrite(tmp_path: Path) -> None:
    async def body() -> None:
        async with LiveServer(build_test_runtime(tmp_path)) as srv:
            first, second = png_bytes(color=(1, 2, 3, 255)), png_bytes(color=(9, 9, 9, 255))
            names = []
            for data in (first, second, second, png_bytes(color=(7, 7, 7, 255))):
                async with srv.session.post(f"{srv.url}/upload/image", data=_form(data, "up.png")) as r:
                    assert r.status == 200
                    names.append((await r.json())["name"])
            assert names == ["up.png", "up (1).png", "up (1).png", "up (2).png"]
            assert (tmp_path / "input" / "up (1).png").read_bytes() == second
            async with srv.session.post(f"{srv.url}/api/upload/image",
                                        data=_form(second, "up.png", overwrite="true", subfolder="s/t",
                                                   type="input")) as r:
                assert await r.json() == {"name": "up.png", "subfolder": "s/t", "type": "input"}
            assert (tmp_path / "input" / "s" / "t" / "up.png").read_bytes() == second
            async with srv.session.post(f"{srv.url}/upload/image",
                                        data=_form(second, "up.png", overwrite="true")) as r:
                assert (await r.json())["name"] == "up.png"
            assert (tmp_path / "input" / "up.png").read_bytes() == second
            async with srv.session.get(f"{srv.url}/view", params={"filename": "up.png", "type": "input"}) as r:
                assert await r.read() == second

    run(body)


def test_upload_refuses_unsafe_names_non_images_and_big_files(tmp_path: Path) -> None:
    async def body() -> None:
        runtime = build_test_runtime(tmp_path)
        async with LiveServer(runtime, max_upload_bytes=50_000) as srv:
            before = sorted(p for p in tmp_path.rglob("*"))
            for name in UNSAFE_NAMES:
                data, headers = _raw_form(png_bytes(), name)
                async with srv.session.post(f"{srv.url}/upload/image", data=data, headers=headers) as r:
                    assert r.status in (400, 403), (name, r.status)
            for sub in ("..", "../x", "/abs", "a\\b", "C:/x", "x\x00y"):
                data, headers = _raw_form(png_bytes(), "ok.png", subfolder=sub)
                async with srv.session.post(f"{srv.url}/upload/image", data=data, headers=headers) as r:
                    assert r.status in (400, 403), (sub, r.status)
            async with srv.session.post(f"{srv.url}/upload/image", data=_form(b"<html>not an image", "x.png")) as r:
                assert r.status == 400
            big = png_bytes(size=(400, 400), color=(1, 2, 3, 4)) + os.urandom(60_000)
            async with srv.session.post(f"{srv.url}/upload/image", data=_form(big, "big.png")) as r:
                assert r.status in (400, 413)
            async with srv.session.post(f"{srv.url}/upload/image", data=b"plain body") as r:
                assert r.status == 400
            assert sorted(p for p in tmp_path.rglob("*")) == before, "nothing may be written"
            async with srv.session.get(f"{srv.url}/queue") as r:
                assert r.status == 200

    run(body)


def test_upload_mask_writes_alpha_into_original(tmp_path: Path) -> None:
    async def body() -> None:
        async with LiveServer(build_test_runtime(tmp_path)) as srv:
            original = io.BytesIO()
            Image.new("RGB", (8, 8), (10, 20, 30)).save(original, format="PNG")
            async with srv.session.post(f"{srv.url}/upload/image", data=_form(original.getvalue(), "orig.png")) as r:
                ref = await r.json()
            mask = png_bytes(size=(4, 4), color=(0, 0, 0, 77))
            form = _form(mask, "orig_mask.png", original_ref=json.dumps({"filename": ref["name"], "type": "input"}))
            async with srv.session.post(f"{srv.url}/upload/mask", data=form) as r:
                assert r.status == 200
                result = await r.json()
            with Image.open(tmp_path / "input" / result["name"]) as img:
                assert img.mode == "RGBA" and img.size == (8, 8)
                assert img.getpixel((3, 3)) == (10, 20, 30, 77)
            bad = _form(mask, "m.png", original_ref=json.dumps({"filename": "../secret.txt"}))
            async with srv.session.post(f"{srv.url}/upload/mask", data=bad) as r:
                assert r.status in (400, 403)

    run(body)


def test_internal_files_lists_a_folder_newest_first(tmp_path: Path) -> None:
    base = _setup(tmp_path)
    output = base / "output"
    for age, name in enumerate(["new.png", "mid.png", "old.png"]):
        (output / name).write_bytes(png_bytes())
        os.utime(output / name, (1_000_000 - age * 100, 1_000_000 - age * 100))
    (output / ".hidden.png").write_bytes(b"x")
    (output / "sub").mkdir()
    for name in ("page.html", "pic.svg", "notes.txt"):
        os.utime(output / name, (10, 10))

    async def body() -> None:
        async with LiveServer(build_test_runtime(base)) as srv:
            async with srv.session.get(f"{srv.url}/internal/files/output") as r:
                assert r.status == 200
                names = await r.json()
            assert names[:3] == ["new.png", "mid.png", "old.png"]
            assert set(names) == {"new.png", "mid.png", "old.png", "page.html", "pic.svg", "notes.txt"}
            async with srv.session.get(f"{srv.url}/internal/files/models") as r:
                assert r.status == 400
            async with srv.session.get(f"{srv.url}/internal/files/input") as r:
                assert r.status == 200 and await r.json() == []

    run(body)
