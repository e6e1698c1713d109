"""SDXL base + refiner loaded together keep one copy of the bigG text tower they share (executor/memory_shared.py),
counted by distinct tensor memory; a LoRA on one model's bigG never reaches the other (copy-on-write patches);
encodings are those of each checkpoint loaded alone."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from executor.memory_shared import SharedWeights, resident_bytes
from tests.fixtures.tiny_sdxl import G_WIDTH, tiny_sdxl_state_dict, write
from tests.nodes.sd_env import SDEnv
from tests.nodes.test_sdxl_nodes import _lora

PROMPT = "a lighthouse at dusk"


@pytest.fixture()
def env(tmp_path: Path) -> SDEnv:
    env = SDEnv(tmp_path)
    folder = tmp_path / "models" / "checkpoints"
    write(tiny_sdxl_state_dict(seed=0), folder / "base.safetensors")
    # Same seed: the refiner's bigG is the base's, bit for bit, as in the released SDXL 1.0 pair.
    write(tiny_sdxl_state_dict(refiner=True, seed=0), folder / "refiner.safetensors")
    write(tiny_sdxl_state_dict(refiner=True, seed=4), folder / "other-refiner.safetensors")
    return env


def _graph(refiner: str = "refiner.safetensors", base_clip: list | None = None) -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "base.safetensors"}},
        "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": refiner}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": base_clip or ["1", 1]}},
        "4": {"class_type": "CLIPTextEncodeSDXLRefiner",
              "inputs": {"ascore": 6.0, "width": 1024, "height": 1024, "text": PROMPT, "clip": ["2", 1]}},
    }


def _tower_bytes(module: torch.nn.Module) -> int:
    return resident_bytes(module)


def test_base_and_refiner_hold_one_copy_of_bigg(env: SDEnv) -> None:
    graph = _graph()
    base_clip, refiner_clip = env.value(graph, "1", 1), env.value(graph, "2", 1)
    base_g, refiner_g = base_clip.model.clip_g, refiner_clip.model.clip_g
    together = resident_bytes(base_clip.model, refiner_clip.model)
    assert together == resident_bytes(base_clip.model) + resident_bytes(refiner_clip.model) - _tower_bytes(refiner_g)
    shared = {p.data_ptr() for p in base_g.parameters()} & {p.data_ptr() for p in refiner_g.parameters()}
    assert len(shared) == len(list(refiner_g.parameters()))
    assert env.models.shared.shared_bytes >= _tower_bytes(refiner_g)
    # A refiner with a different bigG shares only the few tensors that happen to be bit-identical (constant
    # buffers such as the causal mask): well under 1% of its weights.
    other = env.value(_graph("other-refiner.safetensors"), "2", 1)
    apart = resident_bytes(base_clip.model) + resident_bytes(other.model)
    assert apart - resident_bytes(base_clip.model, other.model) < 0.01 * resident_bytes(other.model)


def test_shared_tower_encodes_as_when_loaded_alone(env: SDEnv, tmp_path: Path) -> None:
    graph = _graph()
    together = env.value(graph, "4", 0)[0]
    alone_env = SDEnv(tmp_path / "alone")
    write(tiny_sdxl_state_dict(refiner=True, seed=0), alone_env.base / "models" / "checkpoints" / "refiner.safetensors")
    alone = alone_env.value({"2": graph["2"], "4": graph["4"]}, "4", 0)[0]
    assert torch.equal(together[0], alone[0])
    assert torch.equal(together[1]["pooled_output"], alone[1]["pooled_output"])


def test_lora_on_the_base_bigg_leaves_the_refiner_alone(env: SDEnv, tmp_path: Path) -> None:
    _lora(env.base / "models" / "loras" / "g.safetensors",
          {"lora_te2_text_model_encoder_layers_1_mlp_fc1": (4 * G_WIDTH, G_WIDTH)}, peft=False)
    plain = _graph()
    base_before = env.value(plain, "3", 0)[0][0]
    refiner_clip = env.value(plain, "2", 1)  # held, as a workflow using both models holds it
    patched = _graph(base_clip=["10", 1])
    patched["10"] = {"class_type": "LoraLoader", "inputs": {"model": ["1", 0], "clip": ["1", 1],
                                                            "lora_name": "g.safetensors", "strength_model": 1.0,
                                                            "strength_clip": 1.0}}
    del patched["4"]
    base_after = env.value(patched, "3", 0)[0][0]
    assert not torch.allclose(base_after[..., -G_WIDTH:], base_before[..., -G_WIDTH:])
    # The base's patched bigG stays placed with its LoRA applied (lazy offload) while the refiner encodes a
    # prompt nothing has encoded yet: it must read the unpatched shared weights.
    entry = env.models._entries[id(env.value(plain, "1", 1).model)]
    assert entry.patched_keys and entry.swapped
    fresh = _graph()
    fresh["4"]["inputs"]["text"] = "a new prompt"
    refiner_cond = env.value({"2": fresh["2"], "4": fresh["4"]}, "4", 0)[0][0]
    alone_env = SDEnv(tmp_path / "alone")
    write(tiny_sdxl_state_dict(refiner=True, seed=0), alone_env.base / "models" / "checkpoints" / "refiner.safetensors")
    assert refiner_clip.model.clip_g is env.value(fresh, "2", 1).model.clip_g
    assert torch.equal(refiner_cond, alone_env.value({"2": fresh["2"], "4": fresh["4"]}, "4", 0)[0][0])
    # And the base's own weights come back bitwise once the LoRA is gone.
    plain["3"]["inputs"]["text"] = PROMPT + ", again"
    again = env.value(plain, "3", 0)[0][0]
    alone_base = SDEnv(tmp_path / "alone-base")
    write(tiny_sdxl_state_dict(seed=0), alone_base.base / "models" / "checkpoints" / "base.safetensors")
    assert torch.equal(again, alone_base.value({"1": plain["1"], "3": plain["3"]}, "3", 0)[0][0])


def test_pool_adopts_only_equal_tensors() -> None:
    pool = SharedWeights()
    a, b, c = torch.nn.Linear(8, 8), torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        c.weight.copy_(a.weight)
        c.weight[3, 5] += 1.0  # equal on every sampled element but one
        c.bias.copy_(a.bias)
    assert pool.adopt(a) == 0
    assert pool.adopt(b) == (64 + 8) * 4 and b.weight.data_ptr() == a.weight.data_ptr()
    assert b.weight is not a.weight  # own Parameter objects: placing one never moves the other
    assert pool.adopt(c) == 8 * 4 and c.weight.data_ptr() != a.weight.data_ptr()
    assert pool.is_shared(a.weight) and pool.is_shared(b.bias) and not pool.is_shared(c.weight)


def test_offloading_from_a_device_keeps_the_shared_copy(env: SDEnv) -> None:
    """On a (fake) compute device the text encoders are copied over for the encode; offloading them must put
    the shared host memory back, not a private copy of it."""
    from executor.devices import FakeDevice
    from executor.memory import MemoryPolicy, ModelManager
    from executor.run import Executor

    device = FakeDevice(10 ** 10)
    env.models = ModelManager(MemoryPolicy(reserve_vram=0.0), device=device)
    env.executor = Executor(env.registry, folders=env.folders, models=env.models)
    graph = _graph()
    base_clip, refiner_clip = env.value(graph, "1", 1), env.value(graph, "2", 1)
    before = resident_bytes(base_clip.model, refiner_clip.model)
    env.value(graph, "3", 0)
    env.value(graph, "4", 0)
    assert device.moves > 0 and device.used > 0
    env.models.unload_all()
    assert device.used == 0
    assert resident_bytes(base_clip.model, refiner_clip.model) == before
    assert all(a.data_ptr() == b.data_ptr() for a, b in zip(base_clip.model.clip_g.parameters(),
                                                             refiner_clip.model.clip_g.parameters()))
