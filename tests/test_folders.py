"""folders.py: model kinds, listings, full paths, ComfyUI extra_model_paths YAML, path safety."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from config import parse_args
from folders import (FolderConfigError, Folders, UnsafePathError, load_extra_model_paths, resolve_inside,
                     split_annotation)


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def folders(tmp_path: Path) -> Folders:
    return Folders(parse_args(["--base-directory", str(tmp_path)], {}))


def test_directories_follow_the_config(tmp_path: Path, folders: Folders) -> None:
    assert folders.models_directory == tmp_path / "models"
    assert folders.input_directory == tmp_path / "input"
    assert folders.output_directory == tmp_path / "output"
    assert folders.temp_directory == tmp_path / "temp"
    assert folders.user_directory == tmp_path / "user"
    assert folders.directory_of_type("output") == tmp_path / "output"
    assert folders.directory_of_type("models") is None
    assert not (tmp_path / "models").exists()  # nothing is created up front


def test_kinds_and_legacy_names(tmp_path: Path, folders: Folders) -> None:
    kinds = folders.kinds()
    for kind in ("checkpoints", "vae", "loras", "embeddings", "upscale_models", "controlnet", "clip",
                 "diffusion_models", "clip_vision", "vae_approx", "hypernetworks", "style_models", "gligen"):
        assert kind in kinds
    assert folders.folder_paths("unet") == folders.folder_paths("diffusion_models") == [
        tmp_path / "models" / "unet", tmp_path / "models" / "diffusion_models"]
    assert folders.folder_paths("text_encoders") == folders.folder_paths("clip")
    assert folders.folder_paths("input") == [tmp_path / "input"]
    with pytest.raises(KeyError, match="unknown folder kind"):
        folders.folder_paths("nonsense")


def test_list_files_recursive_sorted_filtered_and_merged(tmp_path: Path, folders: Folders) -> None:
    models = tmp_path / "models"
    touch(models / "checkpoints" / "b.safetensors")
    touch(models / "checkpoints" / "sub" / "deep" / "a.ckpt")
    touch(models / "checkpoints" / "notes.txt")
    touch(models / "checkpoints" / "UPPER.SAFETENSORS")
    touch(models / "checkpoints" / ".git" / "hidden.safetensors")
    touch(models / "unet" / "u1.sft")
    touch(models / "diffusion_models" / "u2.pth")
    touch(models / "diffusion_models" / "u1.sft")  # the same name in two folders is listed once
    assert folders.list_files("checkpoints") == ["UPPER.SAFETENSORS", "b.safetensors", "sub/deep/a.ckpt"]
    assert folders.list_files("unet") == ["u1.sft", "u2.pth"]
    assert folders.list_files("vae") == []


def test_input_lists_top_level_files_only(tmp_path: Path, folders: Folders) -> None:
    touch(tmp_path / "input" / "a.png")
    touch(tmp_path / "input" / "notes.txt")
    touch(tmp_path / "input" / "clipspace" / "mask.png")
    assert folders.list_files("input") == ["a.png", "notes.txt"]


def test_listing_sees_new_files_and_removals(tmp_path: Path, folders: Folders) -> None:
    loras = tmp_path / "models" / "loras"
    assert folders.list_files("loras") == []  # the folder does not exist yet
    touch(loras / "one.safetensors")
    assert folders.list_files("loras") == ["one.safetensors"]
    touch(loras / "nested" / "two.safetensors")
    assert folders.list_files("loras") == ["nested/two.safetensors", "one.safetensors"]
    os.remove(loras / "one.safetensors")
    assert folders.list_files("loras") == ["nested/two.safetensors"]
    touch(loras / "nested" / "three.pt")  # changes only the nested folder's mtime
    assert folders.list_files("loras") == ["nested/three.pt", "nested/two.safetensors"]


def test_full_path_searches_folders_in_order(tmp_path: Path, folders: Folders) -> None:
    first = touch(tmp_path / "models" / "unet" / "m.safetensors", b"1")
    touch(tmp_path / "models" / "diffusion_models" / "m.safetensors", b"2")
    assert folders.full_path("diffusion_models", "m.safetensors") == first
    nested = touch(tmp_path / "models" / "vae" / "sd" / "v.pt")
    assert folders.full_path("vae", "sd/v.pt") == nested
    with pytest.raises(FileNotFoundError, match="not found in folder kind 'vae'"):
        folders.full_path("vae", "missing.pt")
    with pytest.raises(UnsafePathError):
        folders.full_path("vae", "../checkpoints/x.pt")
    with pytest.raises(UnsafePathError):
        folders.full_path("vae", "/etc/passwd")


def test_model_folders_may_hold_symlinks_to_elsewhere(tmp_path: Path, folders: Folders) -> None:
    target = touch(tmp_path / "shared_disk" / "big.safetensors")
    link = tmp_path / "models" / "checkpoints" / "big.safetensors"
    link.parent.mkdir(parents=True)
    link.symlink_to(target)
    assert folders.list_files("checkpoints") == ["big.safetensors"]
    assert folders.full_path("checkpoints", "big.safetensors") == link


def test_full_path_of_input_refuses_symlinks_out(tmp_path: Path, folders: Folders) -> None:
    secret = touch(tmp_path / "secret.png")
    (tmp_path / "input").mkdir()
    (tmp_path / "input" / "leak.png").symlink_to(secret)
    with pytest.raises(UnsafePathError):
        folders.full_path("input", "leak.png")
    ok = touch(tmp_path / "input" / "ok.png")
    assert folders.full_path("input", "ok.png") == ok.resolve()


def test_add_folder_new_kind_and_default_first(tmp_path: Path, folders: Folders) -> None:
    extra = tmp_path / "extra_loras"
    touch(extra / "x.safetensors")
    folders.add_folder("loras", extra)
    assert folders.folder_paths("loras")[-1] == extra
    assert folders.list_files("loras") == ["x.safetensors"]
    first = tmp_path / "first"
    folders.add_folder("loras", first, is_default=True)
    assert folders.folder_paths("loras")[0] == first
    folders.add_folder("ipadapter", tmp_path / "ip")
    touch(tmp_path / "ip" / "any.bin")
    touch(tmp_path / "ip" / "any.json")
    assert "ipadapter" in folders.kinds() and folders.list_files("ipadapter") == ["any.bin", "any.json"]
    with pytest.raises(ValueError):
        folders.add_folder("output", tmp_path)


COMFY_YAML = """\
comfyui:
    base_path: {base}
    is_default: true
    checkpoints: models/checkpoints/
    clip: models/clip/
    unet: |
        models/unet
        models/diffusion_models
    custom_nodes: custom_nodes/

a111:
    base_path: ../webui
    checkpoints: models/Stable-diffusion
    vae: models/VAE
    loras: |
         models/Lora
         models/LyCORIS
    upscale_models: |
                  models/ESRGAN
                  models/RealESRGAN
    embeddings: embeddings
    controlnet: models/ControlNet

homed:
    base_path: ~/comfy_models
    vae: vae

nobase:
    loras: relative_loras

empty:
"""


def test_comfyui_extra_model_paths_yaml(tmp_path: Path, folders: Folders, monkeypatch: pytest.MonkeyPatch) -> None:
    comfy = tmp_path / "ComfyUI"
    monkeypatch.setenv("HOME", "/not/this/home")  # the process environment is never read: Config's is
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    yaml_path = conf_dir / "extra_model_paths.yaml"
    yaml_path.write_text(COMFY_YAML.format(base=comfy))
    ckpt = touch(comfy / "models" / "checkpoints" / "shared.safetensors")
    touch(tmp_path / "webui" / "models" / "Lora" / "style.safetensors")
    touch(tmp_path / "webui" / "models" / "LyCORIS" / "lyco.safetensors")
    load_extra_model_paths(folders, yaml_path, {"HOME": str(tmp_path / "home")})

    assert folders.folder_paths("checkpoints")[0] == comfy / "models" / "checkpoints"  # is_default: first
    assert folders.folder_paths("checkpoints")[-1] == tmp_path / "conf" / ".." / "webui" / "models" / "Stable-diffusion"
    assert comfy / "models" / "unet" in folders.folder_paths("diffusion_models")
    assert comfy / "models" / "diffusion_models" in folders.folder_paths("diffusion_models")
    assert tmp_path / "home" / "comfy_models" / "vae" in folders.folder_paths("vae")
    assert conf_dir / "relative_loras" in folders.folder_paths("loras")
    assert comfy / "custom_nodes" in folders.folder_paths("custom_nodes")
    assert folders.list_files("checkpoints") == ["shared.safetensors"]
    assert folders.full_path("checkpoints", "shared.safetensors") == ckpt
    assert folders.list_files("loras") == ["lyco.safetensors", "style.safetensors"]


def test_yaml_given_on_the_command_line(tmp_path: Path) -> None:
    touch(tmp_path / "store" / "vae" / "v.safetensors")
    yaml_path = tmp_path / "paths.yaml"
    yaml_path.write_text("mine:\n  base_path: store\n  vae: vae\n")
    folders = Folders(parse_args(["--base-directory", str(tmp_path / "loom"),
                                  "--extra-model-paths-config", str(yaml_path)], {}))
    assert folders.list_files("vae") == ["v.safetensors"]


@pytest.mark.parametrize("text", ["just a string", "- a\n- b\n", "s:\n  vae: 3\n", "s: [1, 2]\n", "a: [\n"])
def test_malformed_yaml_is_reported_with_the_file_name(tmp_path: Path, folders: Folders, text: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(FolderConfigError, match="bad.yaml"):
        load_extra_model_paths(folders, path)


def test_missing_yaml_file(tmp_path: Path, folders: Folders) -> None:
    with pytest.raises(FileNotFoundError, match="extra model paths file not found"):
        load_extra_model_paths(folders, tmp_path / "nope.yaml")


# ---- resolve_inside ---------------------------------------------------------------------------

def test_resolve_inside_accepts_plain_names(tmp_path: Path) -> None:
    assert resolve_inside(tmp_path, "a.png") == tmp_path.resolve() / "a.png"
    assert resolve_inside(tmp_path, "sub/dir/a.png") == tmp_path.resolve() / "sub" / "dir" / "a.png"
    assert resolve_inside(tmp_path, "./a.png") == tmp_path.resolve() / "a.png"
    assert resolve_inside(tmp_path, "") == tmp_path.resolve()
    assert resolve_inside(tmp_path, "a..b.png").name == "a..b.png"


@pytest.mark.parametrize("name", ["..", "../x.png", "a/../../x.png", "a/../b.png", "sub/..", "/etc/passwd",
                                  "//server/share", "a\\b.png", "..\\x.png", "C:x.png", "c:/windows/x",
                                  "a\x00.png"])
def test_resolve_inside_refuses_escapes(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnsafePathError):
        resolve_inside(tmp_path, name)


def test_resolve_inside_refuses_non_strings(tmp_path: Path) -> None:
    with pytest.raises(UnsafePathError):
        resolve_inside(tmp_path, 5)  # type: ignore[arg-type]


def test_resolve_inside_refuses_symlinks_leading_out(tmp_path: Path) -> None:
    base = tmp_path / "base"
    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    base.mkdir()
    (base / "dirlink").symlink_to(outside)
    (base / "filelink.png").symlink_to(touch(outside / "f.png"))
    (base / "inner").mkdir()
    (base / "inside_link").symlink_to(base / "inner")
    for name in ("dirlink", "dirlink/deep/x.png", "filelink.png"):
        with pytest.raises(UnsafePathError):
            resolve_inside(base, name)
    assert resolve_inside(base, "inside_link/x.png") == (base / "inner" / "x.png").resolve()


def test_resolve_inside_refuses_symlink_loops(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(UnsafePathError):
        resolve_inside(tmp_path, "a/x.png")


def test_resolve_inside_works_when_base_itself_is_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    assert resolve_inside(link, "a.png") == real / "a.png"


def test_annotations() -> None:
    assert split_annotation("a.png [output]") == ("a.png", "output")
    assert split_annotation("sub/a.png [temp]") == ("sub/a.png", "temp")
    assert split_annotation("a.png[input]") == ("a.png", "input")
    assert split_annotation("a.png") == ("a.png", None)


def test_annotated_path(tmp_path: Path, folders: Folders) -> None:
    assert folders.get_annotated_path("x.png [output]") == (tmp_path / "output").resolve() / "x.png"
    assert folders.get_annotated_path("x.png") == (tmp_path / "input").resolve() / "x.png"
    with pytest.raises(UnsafePathError):
        folders.get_annotated_path("../x.png [temp]")


def test_yaml_variables_come_from_the_config_environment(tmp_path: Path) -> None:
    yaml_path = tmp_path / "extra.yaml"
    yaml_path.write_text("shared:\n    base_path: $MODELS_ROOT/sd\n    checkpoints: ${SUB}/ckpt\n    vae: $UNSET/vae\n")
    config = parse_args(["--base-directory", str(tmp_path), "--extra-model-paths-config", str(yaml_path)],
                        {"MODELS_ROOT": str(tmp_path / "root"), "SUB": "deep"})
    folders = Folders(config)
    assert tmp_path / "root" / "sd" / "deep" / "ckpt" in folders.folder_paths("checkpoints")
    assert tmp_path / "root" / "sd" / "$UNSET" / "vae" in folders.folder_paths("vae")
    assert "MODELS_ROOT" not in repr(config)
