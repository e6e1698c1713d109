"""The dependency graph helpers and the blocker-counting scheduler."""
from __future__ import annotations

import pytest

from executor.plan import CycleError, Scheduler, as_link, find_cycles, reachable, topological_order


def chain(n: int) -> dict:
    prompt = {"0": {"class_type": "A", "inputs": {}}}
    for i in range(1, n):
        prompt[str(i)] = {"class_type": "B", "inputs": {"x": [str(i - 1), 0], "k": 3}}
    return prompt


def test_as_link() -> None:
    assert as_link(["3", 0]) == ("3", 0) and as_link([3, 1]) == ("3", 1)
    for value in (["3"], ["3", "0"], [True, 0], ["3", 0.0], "3", None, ["a", 0, 1], {"0": 1}):
        assert as_link(value) is None


def test_reachable_and_order_are_iterative() -> None:
    prompt = chain(20_000)
    nodes = reachable(prompt, ["19999"])
    assert len(nodes) == 20_000
    order = topological_order(prompt, nodes)
    assert order == [str(i) for i in range(20_000)]
    assert reachable(prompt, ["5"]) == ["5", "4", "3", "2", "1", "0"]
    assert reachable(prompt, ["nope"]) == []


def test_cycles_are_named() -> None:
    prompt = {"1": {"inputs": {"a": ["3", 0]}}, "2": {"inputs": {"a": ["1", 0]}}, "3": {"inputs": {"a": ["2", 0]}},
              "4": {"inputs": {"a": ["3", 0]}}, "5": {"inputs": {"a": ["5", 0]}}}
    with pytest.raises(CycleError) as raised:
        topological_order(prompt, ["1", "2", "3", "4"])
    assert sorted(raised.value.nodes) == ["1", "2", "3"] and "dependency cycle" in str(raised.value)
    assert find_cycles(prompt, ["1", "2", "3", "4", "5"]) == [["1", "2", "3"], ["5"]]


def test_scheduler_counts_blockers_and_adds_late_dependencies() -> None:
    deps = {"out": ["a", "b"], "a": ["src"], "b": ["src"], "src": [], "lazy": []}
    scheduler = Scheduler(lambda n: deps[n])
    scheduler.add("out")
    ran = []
    while (node := scheduler.pop()) is not None:
        if node == "out" and "lazy" not in ran:
            scheduler.block("out", ["lazy"])  # a lazy input asked for late
            continue
        ran.append(node)
        scheduler.finish(node)
    assert ran[0] == "src" and set(ran[1:3]) == {"a", "b"} and ran[3:] == ["lazy", "out"]
    assert scheduler.stuck() == []


def test_scheduler_reports_stuck_nodes_on_a_cycle() -> None:
    deps = {"x": ["y"], "y": ["x"], "z": []}
    scheduler = Scheduler(lambda n: deps[n])
    scheduler.add("x")
    scheduler.add("z")
    assert scheduler.pop() == "z"
    scheduler.finish("z")
    assert scheduler.pop() is None and sorted(scheduler.stuck()) == ["x", "y"]
