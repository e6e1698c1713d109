"""The evaluation loop: order, events, errors, interrupts, lazy inputs, lists, instances."""
from __future__ import annotations

from typing import Any

import pytest

from executor.events import Event, PreviewImage
from executor.run import Executor
from nodes.context import current
from nodes.spec import Input, Int, Node, Output
from tests.executor.fake_nodes import CALLS, fake_registry


@pytest.fixture(autouse=True)
def calls() -> Any:
    CALLS.clear()
    yield CALLS


def run(executor: Executor, prompt: dict[str, Any], prompt_id: str = "p", **kw: Any) -> tuple[Any, list[Any]]:
    seen: list[Any] = []
    result = executor.execute(prompt, prompt_id, emit=seen.append, **kw)
    return result, seen


def types(events: list[Any]) -> list[str]:
    """Event kinds in order, leaving out progress_state (tests/executor/test_progress_state.py)."""
    return [e.type if isinstance(e, Event) else "preview" for e in events
            if not (isinstance(e, Event) and e.type == "progress_state")]


SIMPLE = {"1": {"class_type": "FInt", "inputs": {"value": 5}},
          "2": {"class_type": "FAdd", "inputs": {"a": ["1", 0], "b": 3}},
          "3": {"class_type": "FOut", "inputs": {"value": ["2", 0]}},
          "4": {"class_type": "FInt", "inputs": {"value": 7}}}  # feeds no output: never runs


def test_runs_in_topological_order_with_comfyui_events() -> None:
    result, seen = run(Executor(fake_registry()), SIMPLE, "p1")
    assert result.status == "success" and result.error is None
    assert result.outputs == {"3": {"text": ["8"]}}
    assert result.meta == {"3": {"node_id": "3", "display_node": "3", "parent_node": None, "real_node_id": "3"}}
    assert types(seen) == ["execution_start", "execution_cached", "executing", "executing", "executing", "executed",
                           "execution_success", "executing"]
    assert [e.data["node"] for e in seen if e.type == "executing"] == ["1", "2", "3", None]
    executed = [e for e in seen if isinstance(e, Event) and e.type == "executed"]
    assert executed[0].data == {"node": "3", "display_node": "3", "output": {"text": ["8"]}, "prompt_id": "p1"}
    assert seen[1].data["nodes"] == [] and seen[1].data["prompt_id"] == "p1" and "timestamp" in seen[1].data
    assert [m[0] for m in result.messages] == ["execution_start", "execution_cached", "execution_success"]
    assert CALLS == {"FInt": 1, "FAdd": 1, "FOut": 1}


def test_node_exception_is_reported_not_raised() -> None:
    prompt = {"1": {"class_type": "FInt", "inputs": {"value": 5}},
              "2": {"class_type": "FFail", "inputs": {"value": ["1", 0], "message": "kaput"}},
              "3": {"class_type": "FOut", "inputs": {"value": ["2", 0]}}}
    executor = Executor(fake_registry())
    result, seen = run(executor, prompt, "e1")
    assert result.status == "error"
    error = result.error
    assert error["node_id"] == "2" and error["node_type"] == "FFail" and error["prompt_id"] == "e1"
    assert error["exception_message"] == "kaput" and error["exception_type"] == "RuntimeError"
    assert error["executed"] == ["1"] and error["current_inputs"] == {"value": [5], "message": ["kaput"]}
    assert error["current_outputs"] == ["1"] and any("raise RuntimeError" in line for line in error["traceback"])
    assert types(seen)[-2:] == ["execution_error", "executing"] and seen[-1].data["node"] is None
    # The node that succeeded stays cached, the failing one is not: a rerun retries only node 2.
    result, seen = run(executor, prompt, "e2")
    assert seen[1].data["nodes"] == ["1"] and CALLS["FInt"] == 1 and CALLS["FFail"] == 2


def test_unknown_class_and_cycle_fail_cleanly_without_validation() -> None:
    executor = Executor(fake_registry())
    result, _ = run(executor, {"1": {"class_type": "Nope", "inputs": {}}, "2": {"class_type": "FOut",
                                                                               "inputs": {"value": ["1", 0]}}})
    assert result.status == "error" and result.error["node_id"] == "1"
    cyc = {"1": {"class_type": "FAdd", "inputs": {"a": ["2", 0], "b": 1}},
           "2": {"class_type": "FAdd", "inputs": {"a": ["1", 0], "b": 1}},
           "3": {"class_type": "FIntOut", "inputs": {"value": ["2", 0]}}}
    result, _ = run(executor, cyc)
    assert result.status == "error" and "cycle" in result.error["exception_message"]


def test_interrupt_between_nodes_and_inside_a_node() -> None:
    executor = Executor(fake_registry())
    executor.interrupt.set()
    result, seen = run(executor, SIMPLE, "i1")
    assert result.status == "interrupted" and CALLS == {}
    assert seen[-2].type == "execution_interrupted"
    assert seen[-2].data == {"prompt_id": "i1", "node_id": "1", "node_type": "FInt", "executed": [],
                             "timestamp": seen[-2].data["timestamp"]}
    assert not executor.interrupt.is_set()  # handled: the next prompt runs
    prompt = {"1": {"class_type": "FInt", "inputs": {"value": 1}},
              "2": {"class_type": "FInterruptMe", "inputs": {"value": ["1", 0]}},
              "3": {"class_type": "FOut", "inputs": {"value": ["2", 0]}}}
    result, seen = run(executor, prompt, "i2")
    assert result.status == "interrupted" and seen[-2].data["node_id"] == "2" and seen[-2].data["executed"] == ["1"]


def test_progress_events_and_previews() -> None:
    class Previewer(Node):
        INPUTS = [Int("steps", 2)]
        OUTPUTS = [Output("INT")]

        def execute(self, steps: int) -> tuple[int]:
            from PIL import Image
            for i in range(steps):
                current().progress(i + 1, steps, Image.new("RGB", (8, 8), (255, 0, 0)))
            return (steps,)

    executor = Executor(fake_registry(Previewer))
    prompt = {"1": {"class_type": "FProgress", "inputs": {"steps": 3}},
              "2": {"class_type": "Previewer", "inputs": {"steps": 2}},
              "3": {"class_type": "FOut", "inputs": {"value": ["1", 0]}},
              "4": {"class_type": "FOut", "inputs": {"value": ["2", 0]}}}
    result, seen = run(executor, prompt, "g")
    progress = [e.data for e in seen if isinstance(e, Event) and e.type == "progress"]
    assert {"value": 3, "max": 3, "prompt_id": "g", "node": "1"} in progress
    previews = [e for e in seen if isinstance(e, PreviewImage)]
    assert len(previews) == 2 and previews[0].image_format == "JPEG" and previews[0].data[:2] == b"\xff\xd8"
    assert previews[0].to_frame()[:8] == b"\x00\x00\x00\x01\x00\x00\x00\x01"


def test_lazy_inputs_only_evaluated_when_asked() -> None:
    executor = Executor(fake_registry())
    prompt = {"1": {"class_type": "FString", "inputs": {"value": "yes"}},
              "2": {"class_type": "FFail", "inputs": {"value": ["1", 0], "message": "must not run"}},
              "3": {"class_type": "FSwitch", "inputs": {"switch": True, "on_true": ["1", 0], "on_false": ["2", 0]}},
              "4": {"class_type": "FOut", "inputs": {"value": ["3", 0]}}}
    result, _ = run(executor, prompt)
    assert result.status == "success" and result.outputs["4"] == {"text": ["yes"]}
    assert CALLS["FFail"] == 0 and CALLS["FSwitch"] == 1
    prompt["3"]["inputs"]["switch"] = False
    result, _ = run(executor, prompt)
    assert result.status == "error" and result.error["node_id"] == "2"


def test_list_semantics() -> None:
    executor = Executor(fake_registry())
    prompt = {"1": {"class_type": "FRange", "inputs": {"count": 4}},
              "2": {"class_type": "FRange", "inputs": {"count": 2}},
              "3": {"class_type": "FAdd", "inputs": {"a": ["1", 0], "b": ["2", 0]}},   # 4 calls, b repeats its last
              "4": {"class_type": "FSum", "inputs": {"values": ["3", 0]}},            # whole list
              "5": {"class_type": "FOut", "inputs": {"value": ["3", 0]}},
              "6": {"class_type": "FOut", "inputs": {"value": ["4", 0]}}}
    result, _ = run(executor, prompt)
    assert CALLS["FAdd"] == 4 and CALLS["FSum"] == 1
    assert result.outputs["5"] == {"text": ["0", "2", "3", "4"]}  # ui merged over the 4 calls
    assert result.outputs["6"] == {"text": ["9"]}


def test_empty_list_runs_nothing_downstream() -> None:
    prompt = {"1": {"class_type": "FRange", "inputs": {"count": 0}},
              "2": {"class_type": "FAdd", "inputs": {"a": ["1", 0], "b": 1}},
              "3": {"class_type": "FSum", "inputs": {"values": ["2", 0]}},
              "4": {"class_type": "FOut", "inputs": {"value": ["3", 0]}}}
    result, _ = run(Executor(fake_registry()), prompt)
    assert result.status == "success" and CALLS["FAdd"] == 0 and result.outputs["4"] == {"text": ["0"]}


def test_hidden_inputs_filled() -> None:
    prompt = {"7": {"class_type": "FHidden", "inputs": {}}}
    result, _ = run(Executor(fake_registry()), prompt, extra_data={"extra_pnginfo": {"workflow": {"v": 1}}})
    assert result.outputs["7"] == {"unique_id": ["7"], "nodes": [["7"]], "extra": [{"workflow": {"v": 1}}]}


def test_one_instance_per_node_id_between_prompts() -> None:
    executor = Executor(fake_registry())
    prompt = {"1": {"class_type": "FCounter", "inputs": {"value": 1}},
              "2": {"class_type": "FOut", "inputs": {"value": ["1", 0]}}}
    run(executor, prompt)
    prompt["1"]["inputs"]["value"] = 2
    result, _ = run(executor, prompt)
    assert result.outputs["2"] == {"text": ["2"]}  # the same object counted both calls
    prompt["9"] = prompt.pop("1")
    prompt["2"]["inputs"]["value"] = ["9", 0]
    prompt["9"]["inputs"]["value"] = 3
    result, _ = run(executor, prompt)
    assert result.outputs["2"] == {"text": ["1"]}  # a new node id gets a new object


def test_undeclared_linked_inputs_pass_through_to_kwargs_nodes() -> None:
    class Dyn(Node):
        INPUTS = [Input("first", "*")]
        OUTPUTS = [Output("STRING")]

        def execute(self, **kw: Any) -> tuple[str]:
            return (",".join(f"{k}={v}" for k, v in sorted(kw.items())),)

    prompt = {"1": {"class_type": "FInt", "inputs": {"value": 1}},
              "2": {"class_type": "Dyn", "inputs": {"first": ["1", 0], "extra_1": ["1", 0], "junk": 5}},
              "3": {"class_type": "FOut", "inputs": {"value": ["2", 0]}}}
    result, _ = run(Executor(fake_registry(Dyn)), prompt)
    assert result.outputs["3"] == {"text": ["extra_1=1,first=1"]}


def test_ten_thousand_node_chain_runs() -> None:
    n = 10_000
    prompt = {"0": {"class_type": "FInt", "inputs": {"value": 0}}}
    for i in range(1, n):
        prompt[str(i)] = {"class_type": "FAdd", "inputs": {"a": [str(i - 1), 0], "b": 1}}
    prompt[str(n)] = {"class_type": "FOut", "inputs": {"value": [str(n - 1), 0]}}
    result, _ = run(Executor(fake_registry()), prompt)
    assert result.status == "success" and result.outputs[str(n)] == {"text": [str(n - 1)]}


def test_a_broken_event_sink_does_not_stop_the_prompt() -> None:
    def sink(_: Any) -> None:
        raise OSError("socket closed")

    result = Executor(fake_registry()).execute(SIMPLE, "s", emit=sink)
    assert result.status == "success"


def test_end_announcement_can_be_left_to_the_worker() -> None:
    result, seen = run(Executor(fake_registry(), announce_done=False), SIMPLE)
    assert result.status == "success" and types(seen)[-1] == "execution_success"


def test_async_node_functions_are_awaited() -> None:
    class Later(Node):
        INPUTS = [Int("value", 1)]
        OUTPUTS = [Output("INT")]

        async def execute(self, value: int) -> tuple[int]:
            import asyncio
            await asyncio.sleep(0)
            return (value * 10,)

    prompt = {"1": {"class_type": "Later", "inputs": {"value": 4}},
              "2": {"class_type": "FOut", "inputs": {"value": ["1", 0]}}}
    result, _ = run(Executor(fake_registry(Later)), prompt)
    assert result.outputs == {"2": {"text": ["40"]}}
