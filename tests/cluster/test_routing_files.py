"""The Ray-free parts of cluster mode: the routing policy, output renaming on the head, the flags."""
from __future__ import annotations

from pathlib import Path

import pytest

import config
from cluster.files import FileBlob, OutputStore, gather_inputs
from cluster.routing import PendingView, Router, WorkerView, prompt_models
from folders import Folders


def test_prompt_models_are_the_model_file_names_of_literal_inputs() -> None:
    prompt = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd/a.safetensors"}},
              "2": {"class_type": "LoraLoader", "inputs": {"lora_name": "x.pt", "model": ["1", 0], "strength": 1.0}},
              "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat"}}}
    assert prompt_models(prompt) == {"sd/a.safetensors", "x.pt"}


def test_affinity_then_least_loaded_then_steal_after_waiting() -> None:
    a, b = frozenset({"a.safetensors"}), frozenset({"b.safetensors"})
    router = Router(affinity_wait_s=5.0)
    idle_b = WorkerView("1", True, b, prompts_run=3)
    busy_a = WorkerView("0", False, a)
    pending = [PendingView("p1", a), PendingView("p2", b)]
    assert router.choose([busy_a, idle_b], pending, now=0.0) == ("1", "p2")
    # Only a prompt for the busy worker's model (passed over since t=0): it waits 5 s, then an idle worker takes it.
    assert router.choose([busy_a, idle_b], [PendingView("p1", a)], now=4.0) is None
    assert router.choose([busy_a, idle_b], [PendingView("p1", a)], now=5.5) == ("1", "p1")
    # Nobody holds it: the least-loaded idle worker (fewest models, then fewest prompts run).
    empty = WorkerView("2", True, frozenset(), prompts_run=9)
    assert router.choose([idle_b, empty], [PendingView("p3", frozenset({"c.safetensors"}))], 0.0) == ("2", "p3")
    assert router.choose([busy_a], pending, 0.0) is None


def test_output_store_names_files_as_a_local_run_and_discards_a_lost_attempt(tmp_path: Path) -> None:
    folders = Folders.for_base(tmp_path)
    out = tmp_path / "output"
    out.mkdir()
    (out / "img_00001_.png").write_bytes(b"old")
    store = OutputStore(folders)
    store.store("p", [FileBlob("output", "img_00001_.png", b"one"), FileBlob("output", "img_00002_.png", b"two"),
                      FileBlob("temp", "t_abc_00001_.png", b"tmp")])
    ui = {"images": [{"filename": "img_00001_.png", "subfolder": "", "type": "output"},
                     {"filename": "img_00002_.png", "subfolder": "", "type": "output"}]}
    assert [i["filename"] for i in store.rewrite("p", ui)["images"]] == ["img_00002_.png", "img_00003_.png"]
    assert (out / "img_00003_.png").read_bytes() == b"two"
    assert (tmp_path / "temp" / "t_abc_00001_.png").read_bytes() == b"tmp"
    store.discard("p")
    assert sorted(p.name for p in out.iterdir()) == ["img_00001_.png"]


def test_gather_inputs_ships_named_files_and_refuses_escapes(tmp_path: Path) -> None:
    folders = Folders.for_base(tmp_path)
    (tmp_path / "input" / "sub").mkdir(parents=True)
    (tmp_path / "input" / "sub" / "x.png").write_bytes(b"png")
    (tmp_path / "output").mkdir()
    (tmp_path / "output" / "y.png").write_bytes(b"out")
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "sub/x.png"}},
              "2": {"class_type": "LoadImage", "inputs": {"image": "y.png [output]"}},
              "3": {"class_type": "LoadImage", "inputs": {"image": "../../etc/passwd"}}}
    blobs = sorted(gather_inputs(prompt, folders), key=lambda b: b.kind)
    assert blobs == [FileBlob("input", "sub/x.png", b"png"), FileBlob("output", "y.png", b"out")]


def test_cluster_flags() -> None:
    c = config.parse_args(["--ray-address", "local", "--ray-workers", "3"], {})
    assert (c.ray_address, c.ray_workers) == ("local", 3)
    assert config.parse_args([], {}).ray_address is None
    with pytest.raises(SystemExit):
        config.parse_args(["--ray-workers", "0"], {})


def test_single_process_loom_never_imports_ray_or_cluster(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = ("import sys, config, runtime, server.app; rt = runtime.build_runtime(config.parse_args("
            f"['--base-directory', {str(tmp_path)!r}, '--cpu'], {{}})); server.app.create_app(rt); "
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith(('ray.', 'cluster'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
