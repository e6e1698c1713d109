"""ComfyUI's `folder_paths` module over Loom's `folders.Folders` (loaded by `compat.install_compat`).

Executed as the module `folder_paths` with `BINDING` (a `compat.CompatBinding`) set before it
runs. Functions answer with `str` paths, as ComfyUI's do; lookups use the running node's
folders when called inside a node. `folder_names_and_paths` is a live view: assigning an entry
or appending to its path list adds a search folder (`Folders.add_folder`), which is how packs
register their own model folders.
"""
from __future__ import annotations

from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, Iterable, Iterator

from folders import Folders, resolve_inside, split_annotation
from nodes import image_file_helpers

BINDING: Any  # set by compat.install_compat before this module runs

supported_pt_extensions: set[str] = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}


def _static() -> Any:
    return BINDING.folders


def _now() -> Any:
    return BINDING.current_folders()


base_path = str(_static().base_directory)
models_dir = str(_static().models_directory)
output_directory = str(_static().output_directory)
input_directory = str(_static().input_directory)
temp_directory = str(_static().temp_directory)
user_directory = str(_static().user_directory)


class _LivePaths(list):
    """A folder kind's paths; `append`/`insert`/`extend` also add the folder to Loom's folders."""

    def __init__(self, kind: str, paths: Iterable[str]) -> None:
        super().__init__(paths)
        self._kind = kind

    def append(self, path: Any) -> None:
        super().append(str(path))
        _static().add_folder(self._kind, Path(path))

    def insert(self, index: Any, path: Any) -> None:
        super().insert(index, str(path))
        _static().add_folder(self._kind, Path(path), is_default=index == 0)

    def extend(self, paths: Iterable[Any]) -> None:
        for path in paths:
            self.append(path)


class _FolderTable(MutableMapping):
    """`folder_names_and_paths`: kind -> ([paths], {suffixes}), backed by Loom's folders."""

    def __getitem__(self, kind: str) -> tuple[list[str], set[str]]:
        folders = _static()
        if not folders.has_kind(kind):
            raise KeyError(kind)
        return _LivePaths(kind, (str(p) for p in folders.folder_paths(kind))), set(folders.suffixes(kind))

    def __setitem__(self, kind: str, value: Any) -> None:
        paths, suffixes = (value[0], value[1]) if isinstance(value, tuple) else (value, ())
        for path in paths:
            _static().add_folder(kind, Path(path), suffixes=suffixes or None)

    def __delitem__(self, kind: str) -> None:
        raise TypeError("Loom's folder_paths does not remove folder kinds")

    def __iter__(self) -> Iterator[str]:
        return iter(_static().kinds())

    def __len__(self) -> int:
        return len(_static().kinds())


folder_names_and_paths = _FolderTable()


def map_legacy(folder_name: str) -> str:
    return Folders.canonical_kind(folder_name)


def get_folder_paths(folder_name: str) -> list[str]:
    return [str(p) for p in _now().folder_paths(folder_name)]


def get_filename_list(folder_name: str) -> list[str]:
    return _now().list_files(folder_name)


def get_full_path(folder_name: str, filename: str) -> str | None:
    """The file's path, or None when no folder of the kind has it (or the name is unsafe)."""
    try:
        return str(_now().full_path(folder_name, filename))
    except (FileNotFoundError, KeyError, ValueError):
        return None


def get_full_path_or_raise(folder_name: str, filename: str) -> str:
    path = get_full_path(folder_name, filename)
    if path is None:
        raise FileNotFoundError(f"Model in folder '{folder_name}' with filename '{filename}' not found.")
    return path


def add_model_folder_path(folder_name: str, full_folder_path: str, is_default: bool = False) -> None:
    _static().add_folder(folder_name, Path(full_folder_path), is_default=is_default)


def get_input_directory() -> str:
    return str(_now().input_directory)


def get_output_directory() -> str:
    return str(_now().output_directory)


def get_temp_directory() -> str:
    return str(_now().temp_directory)


def get_user_directory() -> str:
    return str(_now().user_directory)


def get_directory_by_type(type_name: str) -> str | None:
    path = _now().directory_of_type(type_name)
    return str(path) if path is not None else None


def annotated_filepath(name: str) -> tuple[str, str | None]:
    """`("x.png", <output dir>)` for "x.png [output]"; `(name, None)` without an annotation."""
    plain, kind = split_annotation(name)
    return plain, (get_directory_by_type(kind) if kind else None)


def get_annotated_filepath(name: str, default_dir: str | None = None) -> str:
    """The path of an annotated name (`x.png [temp]`), inside its folder (input by default)."""
    plain, base = annotated_filepath(name)
    base = base or default_dir or get_input_directory()
    return str(resolve_inside(Path(base), plain))


def exists_annotated_filepath(name: str) -> bool:
    try:
        return Path(get_annotated_filepath(name)).is_file()
    except ValueError:
        return False


def filter_files_extensions(files: Iterable[str], extensions: Iterable[str]) -> list[str]:
    wanted = {e.lower() for e in extensions}
    return sorted(f for f in files if not wanted or Path(f).suffix.lower() in wanted)


def get_save_image_path(filename_prefix: str, output_dir: str, image_width: int = 0,
                        image_height: int = 0) -> tuple[str, str, int, str, str]:
    """(full_output_folder, filename, counter, subfolder, filename_prefix), as ComfyUI returns;
    the prefix may hold %date:...%, %width%/%height% and folders, and must stay inside `output_dir`."""
    where = image_file_helpers.save_image_path(filename_prefix, Path(output_dir), width=image_width, height=image_height)
    return str(where.folder), where.filename, where.counter, where.subfolder, filename_prefix
