"""Every workflow of `examples/` run for real on tiny random-weight model files of the real layouts.

For each example, both files (`<name>.api.json` and the editor's `<name>.json`) go through the headless runner
(`executor.headless.run_headless` on a runtime built from a `--base-directory` config; two through
`python main.py run` as a subprocess), shrunk with `--set` overrides to 64-pixel images and one or two steps. The
test asserts the saved PNGs exist at the expected size and carry the `prompt` chunk (and, from the editor file,
the `workflow` chunk), that each editor file converts to exactly its API twin, and that the files are what
`examples/build_examples.py` writes from `examples/workflows.py`.
"""
from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import config
import runtime as loom_runtime
from examples.build_examples import build
from executor.headless import run_headless
from executor.workflow_ui import ui_to_api
from nodes.registry import build_builtin_registry
from tests.fixtures.example_models import ExampleModels, write_example_models, write_upscaler

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
NAMES = sorted(p.name[: -len(".api.json")] for p in EXAMPLES.glob("*.api.json"))
TINY_LATENT = ["5.width=64", "5.height=64"]

# name -> (--set overrides that make it tiny, {SaveImage prefix: (width, height)} expected)
SMALL: dict[str, tuple[list[str], dict[str, tuple[int, int]]]] = {
    "text_to_image": (TINY_LATENT + ["3.steps=2"], {"txt2img": (64, 64)}),
    "image_to_image": (["3.steps=2"], {"img2img": (64, 64)}),
    "inpainting": (["3.steps=2"], {"inpaint": (64, 64)}),
    "inpaint_model_conditioning": (["3.steps=2"], {"inpaint_conditioning": (64, 64)}),
    "outpainting": (["12.right=32", "12.feathering=8", "3.steps=2"], {"outpaint": (96, 64)}),
    "hires_fix_latent": (TINY_LATENT + ["3.steps=1", "11.steps=2"], {"hires_latent": (96, 96)}),
    "hires_fix_model": (TINY_LATENT + ["3.steps=1", "11.steps=2"], {"hires_model": (96, 96)}),
    "lora": (TINY_LATENT + ["3.steps=2"], {"lora": (64, 64)}),
    "embeddings": (TINY_LATENT + ["3.steps=2"], {"embeddings": (64, 64)}),
    "area_composition": (["5.width=128", "5.height=64", "3.steps=2", "14.width=64", "14.height=64",
                          "15.width=64", "15.height=64", "15.x=64"], {"area_composition": (128, 64)}),
    "model_merging": (TINY_LATENT + ["3.steps=2"], {"merged": (64, 64)}),
    "upscaling": ([], {"upscaled": (256, 256)}),
    "controlnet": (TINY_LATENT + ["3.steps=2"], {"controlnet": (64, 64)}),
    "unclip": (TINY_LATENT + ["3.steps=2"], {"unclip": (64, 64)}),
    "gligen": (TINY_LATENT + ["3.steps=2", "11.width=32", "11.height=32", "11.x=0", "11.y=16",
                              "12.width=16", "12.height=16", "12.x=40", "12.y=40"], {"gligen": (64, 64)}),
}


@pytest.fixture(scope="module")
def registry() -> Any:
    return build_builtin_registry()


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ExampleModels]:
    """One base folder holding every example model file and input picture, shared by the module's runs."""
    folder = tmp_path_factory.mktemp("examples_base")
    return folder, write_example_models(folder)


def _load(path: Path) -> Any:
    return json.loads(path.read_text())


def _classes(name: str) -> list[str]:
    return sorted({node["class_type"] for node in _load(EXAMPLES / f"{name}.api.json").values()})


def _require_nodes(name: str, registry: Any) -> None:
    """Every node an example uses must exist: a missing one is a failure, never a skip."""
    missing = [c for c in _classes(name) if registry.get(c) is None]
    assert not missing, f"example {name} uses nodes Loom does not have: {', '.join(missing)}"


def _model_files(name: str) -> list[str]:
    """The model files (relative to models/) the example names, from its loader inputs."""
    folders = {"ckpt_name": "checkpoints", "lora_name": "loras", "model_name": "upscale_models",
               "control_net_name": "controlnet", "gligen_name": "gligen"}
    files = [f"{folders[key]}/{value}" for node in _load(EXAMPLES / f"{name}.api.json").values()
             for key, value in node["inputs"].items() if key in folders]
    return files + ["embeddings/EasyNegative.safetensors"] * (name == "embeddings")


def test_every_example_has_both_files_and_a_tiny_run() -> None:
    assert len(NAMES) >= 15
    assert sorted(SMALL) == NAMES
    for name in NAMES:
        assert (EXAMPLES / f"{name}.json").is_file(), name
    readme = (EXAMPLES / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in NAMES)


def test_files_are_what_the_builder_writes(tmp_path: Path, registry: Any) -> None:
    build(registry, tmp_path)
    stale = [p.name for p in sorted(tmp_path.glob("*.json")) if _load(p) != _load(EXAMPLES / p.name)]
    assert not stale, f"run `python examples/build_examples.py` to refresh: {stale}"


@pytest.mark.parametrize("name", NAMES)
def test_ui_file_converts_to_its_api_twin(name: str, registry: Any) -> None:
    _require_nodes(name, registry)
    ui = _load(EXAMPLES / f"{name}.json")
    assert ui["version"] == 0.4 and ui["links"] and all("widgets_values" in n for n in ui["nodes"])
    cells = [tuple(n["pos"]) for n in ui["nodes"]]
    assert len(cells) == len(set(cells)), "two nodes drawn on the same spot"
    assert ui_to_api(ui, registry) == _load(EXAMPLES / f"{name}.api.json")


def _run(base: Path, workflow: Path, sets: list[str]) -> list[Path]:
    runtime = loom_runtime.build_runtime(config.parse_args(["--base-directory", str(base)], {}))
    out, err = io.StringIO(), io.StringIO()
    status = run_headless(runtime, workflow, [config.parse_override(s) for s in sets], stdout=out, stderr=err)
    assert status == 0, err.getvalue()
    return [Path(line) for line in out.getvalue().splitlines() if line.strip()]


def _check_outputs(paths: list[Path], name: str, sets: list[str], from_ui: bool) -> None:
    expected = SMALL[name][1]
    assert len(paths) == len(expected), paths
    for path in paths:
        prefix = path.name.rsplit("_", 2)[0]
        assert path.is_file() and prefix in expected, path
        with Image.open(path) as png:
            assert png.format == "PNG" and png.size == expected[prefix]
            prompt = json.loads(png.text["prompt"])
            assert ("workflow" in png.text) == from_ui
            if from_ui:
                assert json.loads(png.text["workflow"]) == _load(EXAMPLES / f"{name}.json")
        classes = {n["class_type"] for n in prompt.values()}
        assert classes == set(_classes(name))
        for item in sets:  # the overrides are in the prompt the PNG records
            key, value = item.split("=")
            node, field = key.rsplit(".", 1)
            assert prompt[node]["inputs"][field] == json.loads(value)


@pytest.mark.parametrize("suffix", [".api.json", ".json"])
@pytest.mark.parametrize("name", NAMES)
def test_example_runs_on_tiny_models(name: str, suffix: str, registry: Any, base: tuple[Path, ExampleModels],
                                     caplog: pytest.LogCaptureFixture) -> None:
    _require_nodes(name, registry)
    folder, models = base
    absent = [f for f in _model_files(name) if f in models.missing]
    assert not absent, f"fixture generators missing for {absent}: {[models.missing[f] for f in absent]}"
    sets = SMALL[name][0]
    with caplog.at_level(logging.WARNING):
        paths = _run(folder, EXAMPLES / f"{name}{suffix}", sets)
    _check_outputs(paths, name, sets, from_ui=suffix == ".json")
    # every embedding reference resolved and every LoRA key found a weight
    assert "was not found" not in caplog.text and "lora key not loaded" not in caplog.text
    if name == "model_merging":
        saved = sorted((folder / "output" / "checkpoints").glob("merged_*.safetensors"))
        assert saved, "CheckpointSave wrote no file"


@pytest.mark.parametrize("name", ["text_to_image", "image_to_image"])
def test_main_py_run_on_an_editor_file(name: str, registry: Any, base: tuple[Path, ExampleModels]) -> None:
    folder, _ = base
    sets = SMALL[name][0]
    args = [sys.executable, str(REPO / "main.py"), "--base-directory", str(folder), "--cpu", "run",
            str(EXAMPLES / f"{name}.json")]
    for item in sets:
        args += ["--set", item]
    done = subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    paths = [Path(line) for line in done.stdout.splitlines() if line.strip()]
    _check_outputs(paths, name, sets, from_ui=True)


def test_upscaling_with_a_bare_state_dict_file(tmp_path: Path, registry: Any) -> None:
    """The example fixture is the released `params_ema` layout; most other shared .pth upscalers are bare."""
    _require_nodes("upscaling", registry)
    write_example_models(tmp_path, only=[])
    write_upscaler(tmp_path / "models" / "upscale_models" / "RealESRGAN_x4plus.pth", wrapped=False)
    _check_outputs(_run(tmp_path, EXAMPLES / "upscaling.api.json", []), "upscaling", [], from_ui=False)
