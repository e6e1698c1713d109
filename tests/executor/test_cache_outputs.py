"""The output cache: signatures, reuse across prompts and ids, IS_CHANGED, budgets."""
from __future__ import annotations

from typing import Any

import pytest

from executor.cache import CachedOutput, OutputCache, node_signature, signatures_in_order
from executor.run import Executor
from tests.executor.fake_nodes import CALLS, FFingerprint, fake_registry


@pytest.fixture(autouse=True)
def calls() -> Any:
    CALLS.clear()
    FFingerprint.VERSION = 1
    yield CALLS


def chain(value: int = 5, b: int = 3) -> dict[str, Any]:
    return {"1": {"class_type": "FInt", "inputs": {"value": value}},
            "2": {"class_type": "FAdd", "inputs": {"a": ["1", 0], "b": b}},
            "3": {"class_type": "FOut", "inputs": {"value": ["2", 0]}}}


def cached_nodes(executor: Executor, prompt: dict[str, Any]) -> tuple[Any, list[str]]:
    seen: list[Any] = []
    result = executor.execute(prompt, "p", emit=seen.append)
    return result, next(e.data["nodes"] for e in seen if e.type == "execution_cached")


def test_rerun_with_nothing_changed_does_no_work() -> None:
    executor = Executor(fake_registry())
    executor.execute(chain(), "a")
    result, cached = cached_nodes(executor, chain())
    assert sorted(cached) == ["1", "2", "3"] and CALLS == {"FInt": 1, "FAdd": 1, "FOut": 1}
    assert result.outputs == {"3": {"text": ["8"]}}  # cached ui outputs are reported again


def test_changing_one_input_reruns_it_and_downstream_only() -> None:
    executor = Executor(fake_registry())
    executor.execute(chain(), "a")
    _, cached = cached_nodes(executor, chain(b=4))
    assert cached == ["1"] and CALLS == {"FInt": 1, "FAdd": 2, "FOut": 2}


def test_same_partial_graph_reused_across_node_ids() -> None:
    executor = Executor(fake_registry())
    executor.execute(chain(), "a")
    renamed = {"a" + k: {"class_type": v["class_type"],
                         "inputs": {n: (["a" + x[0], x[1]] if isinstance(x, list) else x) for n, x in v["inputs"].items()}}
               for k, v in chain().items()}
    _, cached = cached_nodes(executor, renamed)
    assert sorted(cached) == ["a1", "a2", "a3"] and CALLS["FAdd"] == 1


def test_is_changed_nan_always_reruns_and_values_compare() -> None:
    executor = Executor(fake_registry())
    prompt = {"1": {"class_type": "FVolatile", "inputs": {"value": 1}},
              "2": {"class_type": "FFingerprint", "inputs": {"value": 1}},
              "3": {"class_type": "FOut", "inputs": {"value": ["1", 0]}},
              "4": {"class_type": "FOut", "inputs": {"value": ["2", 0]}}}
    executor.execute(prompt, "a")
    executor.execute(prompt, "b")
    assert CALLS["FVolatile"] == 2 and CALLS["FFingerprint"] == 1
    FFingerprint.VERSION = 2
    executor.execute(prompt, "c")
    assert CALLS["FFingerprint"] == 2


def test_not_idempotent_nodes_keyed_by_id() -> None:
    executor = Executor(fake_registry())
    prompt = {"1": {"class_type": "FNotIdempotent", "inputs": {"value": 1}},
              "2": {"class_type": "FNotIdempotent", "inputs": {"value": 1}},
              "3": {"class_type": "FOut", "inputs": {"value": ["1", 0]}},
              "4": {"class_type": "FOut", "inputs": {"value": ["2", 0]}}}
    executor.execute(prompt, "a")
    assert CALLS["FNotIdempotent"] == 2  # identical inputs, distinct ids: both run
    executor.execute(prompt, "b")
    assert CALLS["FNotIdempotent"] == 2  # but each is cached under its id


def test_identical_nodes_in_one_prompt_share_one_run() -> None:
    prompt = {"1": {"class_type": "FInt", "inputs": {"value": 5}}, "2": {"class_type": "FInt", "inputs": {"value": 5}},
              "3": {"class_type": "FOut", "inputs": {"value": ["1", 0]}},
              "4": {"class_type": "FIntOut", "inputs": {"value": ["2", 0]}}}
    Executor(fake_registry()).execute(prompt, "a")
    assert CALLS["FInt"] == 1


def test_cache_none_reruns_everything() -> None:
    executor = Executor(fake_registry(), cache=OutputCache(enabled=False))
    executor.execute(chain(), "a")
    executor.execute(chain(), "b")
    assert CALLS == {"FInt": 2, "FAdd": 2, "FOut": 2}


def test_lru_and_ram_budget() -> None:
    cache = OutputCache(ram_budget_bytes=250)
    for i in range(5):
        cache.put(f"s{i}", CachedOutput(values=([i],), size=100))
    assert len(cache) == 2 and "s4" in cache and "s3" in cache and cache.total_bytes == 200
    cache.get("s3")
    cache.put("s5", CachedOutput(values=([5],), size=100))
    assert "s3" in cache and "s4" not in cache
    cache.put("huge", CachedOutput(values=([0],), size=1000))
    assert "huge" not in cache
    lru = OutputCache(lru_size=2)
    for i in range(3):
        lru.put(f"s{i}", CachedOutput(values=([i],)))
    assert list(lru._entries) == ["s1", "s2"]
    lru.clear()
    assert len(lru) == 0


def test_signatures_are_pure_and_depend_on_ancestors() -> None:
    a = node_signature("FInt", {"value": 1}, {})
    assert a == node_signature("FInt", {"value": 1}, {})
    assert a != node_signature("FInt", {"value": 2}, {}) and a != node_signature("FFloat", {"value": 1}, {})
    assert node_signature("X", {}, {}, float("nan")) != node_signature("X", {}, {}, float("nan"))
    sigs1 = signatures_in_order(chain(1), ["1", "2", "3"], {})
    sigs2 = signatures_in_order(chain(2), ["1", "2", "3"], {})
    assert all(sigs1[k] != sigs2[k] for k in "123")


def test_cache_none_releases_outputs_once_read() -> None:
    executor = Executor(fake_registry(), cache=OutputCache(enabled=False))
    n = 50
    prompt = {"0": {"class_type": "FInt", "inputs": {"value": 0}}}
    for i in range(1, n):
        prompt[str(i)] = {"class_type": "FAdd", "inputs": {"a": [str(i - 1), 0], "b": 1}}
    prompt["out"] = {"class_type": "FOut", "inputs": {"value": [str(n - 1), 0]}}
    seen: list[Any] = []
    result = executor.execute(prompt, "p", emit=seen.append)
    assert result.status == "success" and result.outputs["out"] == {"text": [str(n - 1)]}
