"""Where files live: model folders by kind, input/ output/ temp/ user/, and path safety.

`Folders` owns the folder layout of one Loom instance (built from the `Config`): every model
kind (checkpoints, vae, loras, ...) has a list of folders searched in order and the file
suffixes it accepts, as ComfyUI's `folder_paths.py` has; ComfyUI's `extra_model_paths.yaml`
files add folders. Listings are recursive, sorted, with "/" separators, and cached per kind
until the modification time of one of the listed directories changes.

`resolve_inside(base, relative)` is the one path-safety check for names that come from
outside (the server's uploads and /view, LoadImage, SaveImage's prefix): it refuses `..`,
absolute paths, NUL bytes, backslashes, drive letters and symlinks that lead out of `base`.
Nothing here creates a directory except `ensure_directory`, called by whoever writes.
"""
from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol

import yaml

MODEL_SUFFIXES = (".ckpt", ".pt", ".bin", ".pth", ".safetensors", ".pkl", ".sft")
IO_KINDS = ("input", "output", "temp")

# kind -> (folders under models/, accepted suffixes; () accepts every file). ComfyUI's defaults.
DEFAULT_MODEL_KINDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "checkpoints": (("checkpoints",), MODEL_SUFFIXES),
    "configs": (("configs",), (".yaml",)),
    "loras": (("loras",), MODEL_SUFFIXES),
    "vae": (("vae",), MODEL_SUFFIXES),
    "clip": (("clip", "text_encoders"), MODEL_SUFFIXES),
    "diffusion_models": (("unet", "diffusion_models"), MODEL_SUFFIXES),
    "unet_gguf": (("unet", "diffusion_models"), (".gguf",)),  # the ComfyUI-GGUF pack's kind
    "clip_gguf": (("clip", "text_encoders"), (".gguf",)),  # the pack's kind for GGUF text encoders
    "clip_vision": (("clip_vision",), MODEL_SUFFIXES),
    "style_models": (("style_models",), MODEL_SUFFIXES),
    "embeddings": (("embeddings",), MODEL_SUFFIXES),
    "vae_approx": (("vae_approx",), MODEL_SUFFIXES),
    "controlnet": (("controlnet", "t2i_adapter"), MODEL_SUFFIXES),
    "gligen": (("gligen",), MODEL_SUFFIXES),
    "upscale_models": (("upscale_models",), MODEL_SUFFIXES),
    "hypernetworks": (("hypernetworks",), MODEL_SUFFIXES),
    "photomaker": (("photomaker",), MODEL_SUFFIXES),
    "classifiers": (("classifiers",), ()),
    "safety_checker": (("safety_checker",), ()),
    "diffusers": (("diffusers",), ()),  # model folders (DiffusersLoader lists those with a model_index.json)
}
# Other names for the same kind (ComfyUI's legacy names).
KIND_ALIASES = {"unet": "diffusion_models", "text_encoders": "clip"}
_DRIVE = re.compile(r"^[A-Za-z]:")
_SKIPPED_DIRS = {".git", "__pycache__"}


class UnsafePathError(ValueError):
    """A name given from outside would leave the folder it must stay in."""


class FolderConfigError(ValueError):
    """An extra_model_paths YAML file is malformed; the message names the file and the problem."""


class DirectoryConfig(Protocol):
    """The part of `config.Config` that `Folders` reads."""

    base_directory: Path
    models_directory: Path
    input_directory: Path
    output_directory: Path
    temp_directory: Path
    user_directory: Path
    extra_model_paths_config: tuple[Path, ...]


def check_relative_name(relative: str) -> list[str]:
    """The parts of a relative name from outside, or `UnsafePathError` if it is not one.

    Refused: non-strings, NUL bytes, backslashes, drive letters, absolute paths and `..` parts.
    Empty and `.` parts are dropped, so "" names the base folder itself.
    """
    if not isinstance(relative, str):
        raise UnsafePathError(f"path must be a string, got {type(relative).__name__}")
    if "\x00" in relative:
        raise UnsafePathError("path contains a NUL byte")
    if "\\" in relative:
        raise UnsafePathError(f"path {relative!r} contains a backslash; use '/' between folders")
    if _DRIVE.match(relative):
        raise UnsafePathError(f"path {relative!r} starts with a drive letter")
    if relative.startswith("/"):
        raise UnsafePathError(f"path {relative!r} is absolute; give a path relative to the folder")
    parts = [p for p in relative.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafePathError(f"path {relative!r} contains '..'")
    return parts


def resolve_inside(base: Path, relative: str) -> Path:
    """`base / relative`, resolved, guaranteed to stay inside `base` (symlinks followed).

    Raises `UnsafePathError` on `..`, absolute paths, NUL bytes, backslashes, drive letters,
    or a symlink (anywhere along the path) that leads outside `base`. The target need not exist.
    """
    parts = check_relative_name(relative)
    root = Path(base).resolve()
    try:
        target = root.joinpath(*parts).resolve()
    except (RuntimeError, OSError) as exc:  # a symlink loop (RuntimeError before Python 3.13)
        raise UnsafePathError(f"path {relative!r} cannot be resolved: {exc}") from None
    if target != root and root not in target.parents:
        raise UnsafePathError(f"path {relative!r} leads outside its folder (through a symbolic link)")
    return target


def ensure_directory(path: Path) -> Path:
    """Create `path` (and parents) if missing; for writers, just before they write."""
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class _Kind:
    paths: list[Path]
    suffixes: tuple[str, ...]


@dataclass
class _Listing:
    names: list[str]
    mtimes: dict[Path, float]
    roots: tuple[Path, ...]


def _walk(root: Path, suffixes: tuple[str, ...], recursive: bool) -> tuple[list[str], dict[Path, float]]:
    """Files under `root` (relative, "/"-separated) with the mtimes of every directory visited."""
    names: list[str] = []
    mtimes: dict[Path, float] = {}
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            mtimes[folder] = folder.stat().st_mtime
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                is_dir = entry.is_dir()
                is_file = not is_dir and entry.is_file()
            except OSError:
                continue
            if is_dir:
                if recursive and entry.name not in _SKIPPED_DIRS:
                    stack.append(Path(entry.path))
            elif is_file and (not suffixes or entry.name.lower().endswith(suffixes)):
                names.append(Path(entry.path).relative_to(root).as_posix())
    return names, mtimes


class Folders:
    """The folders of one Loom instance; see the module docstring.

    `Folders(config)` takes a `config.Config` (or any object with its directory fields).
    Thread-safe: the server's request threads and the worker thread may list at once.
    """

    def __init__(self, config: DirectoryConfig) -> None:
        self._base = Path(config.base_directory)
        self._models = Path(config.models_directory)
        self._io = {"input": Path(config.input_directory), "output": Path(config.output_directory),
                    "temp": Path(config.temp_directory)}
        self._user = Path(config.user_directory)
        self._kinds: dict[str, _Kind] = {
            kind: _Kind([self._models / sub for sub in subs], suffixes)
            for kind, (subs, suffixes) in DEFAULT_MODEL_KINDS.items()
        }
        self._kinds["custom_nodes"] = _Kind([self._base / "custom_nodes"], ())
        self._listings: dict[str, _Listing] = {}
        self._lock = threading.Lock()
        variables = getattr(config, "path_variables", None) or {}
        for yaml_path in getattr(config, "extra_model_paths_config", ()) or ():
            load_extra_model_paths(self, Path(yaml_path), variables)

    @classmethod
    def for_base(cls, base: Path) -> "Folders":
        """Folders with every directory under `base` (models/ input/ output/ temp/ user/); for tests."""
        base = Path(base)
        return cls(_BaseLayout(base_directory=base, models_directory=base / "models",
                               input_directory=base / "input", output_directory=base / "output",
                               temp_directory=base / "temp", user_directory=base / "user"))

    # ---- directories -------------------------------------------------------------------------
    @property
    def base_directory(self) -> Path:
        return self._base

    @property
    def models_directory(self) -> Path:
        return self._models

    @property
    def input_directory(self) -> Path:
        return self._io["input"]

    @property
    def output_directory(self) -> Path:
        return self._io["output"]

    @property
    def temp_directory(self) -> Path:
        return self._io["temp"]

    @property
    def user_directory(self) -> Path:
        return self._user

    def directory_of_type(self, type_name: str) -> Path | None:
        """The folder of "input", "output" or "temp" (the `type` of /view and uploads), else None."""
        return self._io.get(type_name)

    # ---- kinds -------------------------------------------------------------------------------
    @staticmethod
    def canonical_kind(kind: str) -> str:
        return KIND_ALIASES.get(kind, kind)

    def kinds(self) -> list[str]:
        """The model folder kinds (not input/output/temp), sorted."""
        return sorted(self._kinds)

    def has_kind(self, kind: str) -> bool:
        kind = self.canonical_kind(kind)
        return kind in self._kinds or kind in self._io

    def suffixes(self, kind: str) -> tuple[str, ...]:
        return self._kind(kind).suffixes

    def folder_paths(self, kind: str) -> list[Path]:
        """The folders searched for `kind`, in order (a copy)."""
        kind = self.canonical_kind(kind)
        if kind in self._io:
            return [self._io[kind]]
        return list(self._kind(kind).paths)

    def add_folder(self, kind: str, path: Path, *, is_default: bool = False,
                   suffixes: Iterable[str] | None = None) -> None:
        """Search `path` for `kind` too (first when `is_default`); a new kind accepts `suffixes`
        (every file when not given)."""
        kind = self.canonical_kind(kind)
        if kind in self._io:
            raise ValueError(f"'{kind}' is not a model folder kind; use --{kind}-directory")
        path = Path(path)
        with self._lock:
            entry = self._kinds.get(kind)
            if entry is None:
                entry = self._kinds[kind] = _Kind([], tuple(s.lower() for s in suffixes or ()))
            if path in entry.paths:
                entry.paths.remove(path)
            if is_default:
                entry.paths.insert(0, path)
            else:
                entry.paths.append(path)
            self._listings.pop(kind, None)

    def _kind(self, kind: str) -> _Kind:
        kind = self.canonical_kind(kind)
        try:
            return self._kinds[kind]
        except KeyError:
            raise KeyError(f"unknown folder kind '{kind}'; known kinds: {', '.join(self.kinds())}") from None

    # ---- files -------------------------------------------------------------------------------
    def list_files(self, kind: str) -> list[str]:
        """Relative file names of `kind` ("/"-separated, sorted, de-duplicated across folders).

        Model kinds are listed recursively and filtered by suffix; "input", "output" and "temp"
        list the files directly in that folder (as ComfyUI's LoadImage does).
        """
        kind = self.canonical_kind(kind)
        if kind in self._io:
            roots, suffixes, recursive = (self._io[kind],), (), False
        else:
            entry = self._kind(kind)
            roots, suffixes, recursive = tuple(entry.paths), entry.suffixes, True
        with self._lock:
            cached = self._listings.get(kind)
        if cached is not None and cached.roots == roots and _still_fresh(cached):
            return list(cached.names)
        names: set[str] = set()
        mtimes: dict[Path, float] = {}
        for root in roots:
            found, seen = _walk(root, suffixes, recursive)
            names.update(found)
            mtimes.update(seen)
        listing = _Listing(sorted(names), mtimes, roots)
        with self._lock:
            self._listings[kind] = listing
        return list(listing.names)

    def full_path(self, kind: str, name: str) -> Path:
        """The file `name` of `kind` (first folder that has it).

        Raises `UnsafePathError` for names that would leave the folder, and FileNotFoundError
        (naming the folders searched) when no folder has the file. Model folders may hold
        symlinks to files elsewhere; input/output/temp may not.
        """
        kind = self.canonical_kind(kind)
        parts = check_relative_name(name)
        if not parts:
            raise FileNotFoundError(f"no file name given for folder kind '{kind}'")
        if kind in self._io:
            path = resolve_inside(self._io[kind], name)
            if path.is_file():
                return path
            raise FileNotFoundError(f"file '{name}' not found in the {kind} folder {self._io[kind]}")
        entry = self._kind(kind)
        for folder in entry.paths:
            path = folder.joinpath(*parts)
            if path.is_file():
                return path
        searched = ", ".join(str(p) for p in entry.paths) or "(none)"
        raise FileNotFoundError(f"model '{name}' not found in folder kind '{kind}' (searched: {searched})")

    def get_annotated_path(self, name: str, default: str = "input") -> Path:
        """Resolve a ComfyUI annotated name (`x.png [output]`, `[input]`, `[temp]`) safely."""
        plain, kind = split_annotation(name)
        return resolve_inside(self._io[kind or default], plain)


@dataclass(frozen=True)
class _BaseLayout:
    base_directory: Path
    models_directory: Path
    input_directory: Path
    output_directory: Path
    temp_directory: Path
    user_directory: Path
    extra_model_paths_config: tuple[Path, ...] = field(default=())


def split_annotation(name: str) -> tuple[str, str | None]:
    """`("x.png", "output")` for "x.png [output]"; `(name, None)` when there is no annotation.

    ComfyUI strips the annotation and the one space before it.
    """
    for kind in IO_KINDS:
        tag = f"[{kind}]"
        if name.endswith(tag):
            plain = name[: -len(tag)]
            return (plain[:-1] if plain.endswith(" ") else plain), kind
    return name, None


def _still_fresh(listing: _Listing) -> bool:
    """True while no listed directory changed and every root that exists was listed."""
    for folder, mtime in listing.mtimes.items():
        try:
            if folder.stat().st_mtime != mtime:
                return False
        except OSError:
            return False
    return all(root in listing.mtimes or not root.is_dir() for root in listing.roots)


def _yaml_paths(value: Any, yaml_path: Path, section: str, kind: str) -> list[str]:
    if isinstance(value, str):
        return [line.strip() for line in value.splitlines() if line.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value if v.strip()]
    raise FolderConfigError(f"{yaml_path}: section '{section}', key '{kind}': expected a path or lines of "
                            f"paths, got {type(value).__name__}")


_VARIABLE = re.compile(r"\$(\w+|\{[^}]*\})")


def expand_path_text(text: str, variables: Mapping[str, str]) -> Path:
    """`~` and `$NAME` / `${NAME}` expanded from `variables` (the environment as `Config`
    read it); names that are not defined stay as written, as `os.path.expandvars` leaves them."""
    home = variables.get("HOME") or variables.get("USERPROFILE")
    if home and (text == "~" or text.startswith(("~/", "~\\"))):
        text = home + text[1:]

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1).strip("{}")
        return variables.get(name, match.group(0))
    return Path(_VARIABLE.sub(substitute, text))


def load_extra_model_paths(folders: Folders, yaml_path: Path, variables: Mapping[str, str] | None = None) -> None:
    """Add the folders of a ComfyUI `extra_model_paths.yaml` to `folders`.

    Each top-level section may hold `base_path` (`~` and `$VARS` expanded; relative to the
    YAML file's folder), `is_default` (search these folders first) and `kind: paths`, where
    paths are one per line, relative to `base_path` (or to the YAML file's folder).
    """
    yaml_path = Path(yaml_path)
    try:
        document = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"extra model paths file not found: {yaml_path}") from None
    except yaml.YAMLError as exc:
        raise FolderConfigError(f"{yaml_path}: not valid YAML: {exc}") from None
    if document is None:
        return
    if not isinstance(document, dict):
        raise FolderConfigError(f"{yaml_path}: expected sections (a mapping) at the top level")
    here = yaml_path.resolve().parent
    variables = variables or {}
    for section, conf in document.items():
        if conf is None:
            continue
        if not isinstance(conf, dict):
            raise FolderConfigError(f"{yaml_path}: section '{section}' must be a mapping of kind: paths")
        conf = dict(conf)
        base_value = conf.pop("base_path", None)
        base = here / expand_path_text(str(base_value), variables) if base_value is not None else here
        is_default = bool(conf.pop("is_default", False))
        for kind, value in conf.items():
            if value is None:
                continue
            for line in _yaml_paths(value, yaml_path, str(section), str(kind)):
                folders.add_folder(str(kind), base / expand_path_text(line, variables), is_default=is_default)
