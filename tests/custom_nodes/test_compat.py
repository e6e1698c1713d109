"""The ComfyUI compatibility modules, imported under their ComfyUI names after
`compat.install_compat`, against real folders, real files and real node contexts."""
from __future__ import annotations

import importlib
import io as stdio
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from cn_env import bare_runtime

from compat import install_compat
from nodes.context import InterruptFlag, Interrupted, NodeContext, running


def _import(name: str):
    return importlib.import_module(name)


@pytest.fixture()
def env(tmp_path: Path):
    runtime = bare_runtime(tmp_path)
    (tmp_path / "models" / "checkpoints" / "sub").mkdir(parents=True)
    (tmp_path / "models" / "checkpoints" / "a.safetensors").write_bytes(b"x")
    (tmp_path / "models" / "checkpoints" / "sub" / "b.ckpt").write_bytes(b"x")
    (tmp_path / "models" / "checkpoints" / "notes.txt").write_text("not a model")
    binding = install_compat(runtime)
    return runtime, binding, tmp_path


def test_folder_paths_lists_and_resolves(env) -> None:
    runtime, _, base = env
    fp = _import("folder_paths")
    assert fp.models_dir == str(base / "models") and fp.base_path == str(base)
    assert fp.get_filename_list("checkpoints") == ["a.safetensors", "sub/b.ckpt"]
    assert fp.get_full_path("checkpoints", "sub/b.ckpt") == str(base / "models" / "checkpoints" / "sub" / "b.ckpt")
    assert fp.get_full_path("checkpoints", "missing.safetensors") is None
    assert fp.get_full_path("checkpoints", "../../escape.txt") is None
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        fp.get_full_path_or_raise("checkpoints", "missing.safetensors")
    assert fp.get_folder_paths("checkpoints") == [str(base / "models" / "checkpoints")]
    assert fp.get_input_directory() == str(base / "input") and fp.get_output_directory() == str(base / "output")
    assert fp.get_temp_directory() == str(base / "temp")
    assert ".safetensors" in fp.supported_pt_extensions


def test_folder_paths_annotations_and_save_paths(env) -> None:
    _, _, base = env
    fp = _import("folder_paths")
    (base / "output" / "x.png").write_bytes(b"png")
    assert fp.get_annotated_filepath("x.png [output]") == str(base / "output" / "x.png")
    assert fp.get_annotated_filepath("y.png") == str(base / "input" / "y.png")
    assert fp.exists_annotated_filepath("x.png [output]") and not fp.exists_annotated_filepath("x.png")
    with pytest.raises(ValueError):
        fp.get_annotated_filepath("../secret.png")
    folder, filename, counter, subfolder, prefix = fp.get_save_image_path("shots/run", str(base / "output"), 64, 64)
    assert (folder, filename, counter, subfolder, prefix) == (str(base / "output" / "shots"), "run", 1, "shots", "shots/run")
    (base / "output" / "shots" / "run_00001_.png").write_bytes(b"png")
    assert fp.get_save_image_path("shots/run", str(base / "output"))[2] == 2


def test_folder_paths_table_adds_folders(env) -> None:
    runtime, _, base = env
    fp = _import("folder_paths")
    extra = base / "elsewhere" / "ipadapter"
    extra.mkdir(parents=True)
    (extra / "ip.bin").write_bytes(b"x")
    fp.folder_names_and_paths["ipadapter"] = ([str(extra)], fp.supported_pt_extensions)
    assert fp.get_filename_list("ipadapter") == ["ip.bin"]
    more = base / "more_ckpts"
    more.mkdir()
    (more / "c.safetensors").write_bytes(b"x")
    fp.folder_names_and_paths["checkpoints"][0].append(str(more))
    assert "c.safetensors" in fp.get_filename_list("checkpoints")
    assert runtime.folders.folder_paths("checkpoints")[-1] == more
    fp.add_model_folder_path("loras", str(more), is_default=True)
    assert runtime.folders.folder_paths("loras")[0] == more
    assert "checkpoints" in fp.folder_names_and_paths and "nonsense" not in fp.folder_names_and_paths


def test_running_node_context_wins_over_the_runtime(env, tmp_path: Path) -> None:
    fp = _import("folder_paths")
    other = bare_runtime(tmp_path / "other")
    ctx = NodeContext(prompt_id="p", node_id="1", class_type="X", interrupt=InterruptFlag(), folders=other.folders)
    with running(ctx):
        assert fp.get_output_directory() == str(tmp_path / "other" / "output")
    assert fp.get_output_directory() == str(tmp_path / "output")


def test_a_second_install_binds_the_new_runtime(env, tmp_path: Path) -> None:
    first = _import("folder_paths")
    install_compat(bare_runtime(tmp_path / "second"))
    second = _import("folder_paths")
    assert second is not first and second.get_input_directory() == str(tmp_path / "second" / "input")
    assert first.get_input_directory() == str(tmp_path / "input")  # a pack loaded earlier keeps its runtime
    assert sys.modules["comfy"].utils is sys.modules["comfy.utils"]


def test_progress_bar_reports_and_interrupts(env) -> None:
    runtime, _, _ = env
    utils = _import("comfy.utils")
    utils.ProgressBar(3).update(1)  # outside a node: nothing to report, no error
    seen = []
    ctx = NodeContext(prompt_id="p", node_id="7", class_type="X", interrupt=runtime.interrupt,
                      on_progress=lambda v, t, preview=None: seen.append((v, t, preview)))
    preview = Image.new("RGB", (4, 4))
    with running(ctx):
        bar = utils.ProgressBar(4)
        bar.update(1)
        bar.update_absolute(3, 6, ("JPEG", preview, 512))
        bar.update(10)
        assert seen == [(1, 4, None), (3, 6, preview), (6, 6, None)]
        mm = _import("comfy.model_management")
        mm.interrupt_current_processing()
        assert mm.processing_interrupted() and runtime.interrupt.is_set()
        with pytest.raises(mm.InterruptProcessingException):
            bar.update(1)
        with pytest.raises(Interrupted):
            mm.throw_exception_if_processing_interrupted()
        mm.interrupt_current_processing(False)
        mm.throw_exception_if_processing_interrupted()


def test_model_management_devices_without_a_manager(env) -> None:
    mm = _import("comfy.model_management")
    assert mm.get_torch_device() == torch.device("cpu") and mm.intermediate_device() == torch.device("cpu")
    mm.soft_empty_cache()
    assert mm.cpu_mode()


def test_model_management_follows_the_model_manager(tmp_path: Path) -> None:
    from executor.memory import MemoryPolicy, ModelManager

    runtime = bare_runtime(tmp_path)
    runtime.models = ModelManager(MemoryPolicy())
    install_compat(runtime)
    mm = _import("comfy.model_management")
    assert mm.get_torch_device() == torch.device(runtime.models.compute_device)
    assert mm.intermediate_device() == torch.device(runtime.models.intermediate_device)
    mm.soft_empty_cache()
    mm.unload_all_models()


def test_common_upscale_matches_torch_and_crops_the_centre(env) -> None:
    utils = _import("comfy.utils")
    samples = torch.rand(2, 3, 8, 16)
    out = utils.common_upscale(samples, 4, 4, "bilinear", "disabled")
    assert torch.equal(out, F.interpolate(samples, size=(4, 4), mode="bilinear"))
    cropped = utils.common_upscale(samples, 8, 8, "nearest-exact", "center")
    assert torch.equal(cropped, samples[:, :, :, 4:12])
    lanczos = utils.common_upscale(torch.full((1, 3, 8, 8), 0.5), 16, 12, "lanczos", "disabled")
    assert lanczos.shape == (1, 3, 12, 16) and torch.allclose(lanczos, torch.full_like(lanczos, 127 / 255), atol=1e-6)
    assert utils.common_upscale(samples, 5, 3, "bislerp", "disabled").shape == (2, 3, 3, 5)
    with pytest.raises(ValueError, match="unknown upscale method"):
        utils.common_upscale(samples, 4, 4, "sinc", "disabled")
    assert utils.repeat_to_batch_size(torch.arange(2), 5).tolist() == [0, 1, 0, 1, 0]


def test_load_torch_file_reads_real_safetensors(env) -> None:
    _, _, base = env
    utils = _import("comfy.utils")
    path = base / "w.safetensors"
    weights = {"layer.weight": torch.randn(3, 2), "layer.bias": torch.arange(3, dtype=torch.float32)}
    save_file(weights, str(path), metadata={"format": "pt", "note": "loom"})
    loaded = utils.load_torch_file(str(path))
    assert set(loaded) == set(weights) and torch.equal(loaded["layer.weight"], weights["layer.weight"])
    state, metadata = utils.load_torch_file(str(path), safe_load=True, return_metadata=True)
    assert metadata["note"] == "loom" and torch.equal(state["layer.bias"], weights["layer.bias"])


def test_samplers_names_come_from_diffusion(env) -> None:
    from diffusion.sampling.samplers import SAMPLERS
    from diffusion.sampling.schedules import SCHEDULES

    samplers = _import("comfy.samplers")
    assert samplers.KSampler.SAMPLERS == list(SAMPLERS) and samplers.KSampler.SCHEDULERS == list(SCHEDULES)
    assert "euler" in samplers.KSampler.SAMPLERS and "karras" in samplers.KSampler.SCHEDULERS
    assert "ddim" not in samplers.KSAMPLER_NAMES


def test_node_helpers_pillow_and_conditioning(env) -> None:
    _, _, base = env
    helpers = _import("node_helpers")
    buffer = stdio.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 30)).save(buffer, format="PNG")
    truncated = base / "cut.png"
    truncated.write_bytes(buffer.getvalue()[:-30])

    def load(path: Path) -> Image.Image:
        picture = Image.open(path)
        picture.load()
        return picture

    with pytest.raises(OSError):
        load(truncated)
    assert helpers.pillow(load, truncated).size == (32, 32)
    cond = [[torch.zeros(1, 2, 3), {"strength": 1.0}]]
    out = helpers.conditioning_set_values(cond, {"strength": 0.5, "area": (8, 8, 0, 0)})
    assert out[0][1] == {"strength": 0.5, "area": (8, 8, 0, 0)} and cond[0][1] == {"strength": 1.0}
    added = helpers.conditioning_set_values(cond, {"strength": 0.5}, append=True)
    assert added[0][1]["strength"] == 1.5 and added[0][0] is cond[0][0]


def test_prompt_server_instance_before_any_server(env) -> None:
    _, binding, _ = env
    import server

    assert server.PromptServer.instance is binding.prompt_server
    server.PromptServer.instance.send_sync("nobody.listens", {"x": 1})  # dropped, no error
    assert server.PromptServer.instance.client_id is None
    ctx = NodeContext(prompt_id="p", node_id="1", class_type="X", interrupt=InterruptFlag(),
                      extra={"extra_data": {"client_id": "abc"}})
    with running(ctx):
        assert server.PromptServer.instance.client_id == "abc"
