"""Property tests: random and mutated graphs never raise anything but a validation error, and
graphs that validate also run (hypothesis)."""
from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from executor.run import Executor
from executor.validate import validate_prompt
from executor.workflow import WorkflowError
from executor.workflow_ui import ui_to_api
from tests.executor.fake_nodes import FAKE_NODES, fake_registry
from tests.executor.test_workflow_ui import legacy_document, subgraph_document

REG = fake_registry()
# Nodes whose run may legitimately fail or interrupt; everything else must succeed once valid.
MAY_FAIL = {"FFail", "FInterruptMe"}
CLASSES = [n.__name__ for n in FAKE_NODES] + ["Unknown"]
SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2000, 2000) | st.floats(allow_nan=True) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6)


@st.composite
def input_value(draw: Any, spec: Any, ids: list[str]) -> Any:
    choice = draw(st.integers(0, 5))
    if choice == 0:
        return spec.default if spec.default is not None else draw(json_values)
    if choice == 1:
        return draw(json_values)
    if choice == 2 and spec.choices:
        return draw(st.sampled_from(list(spec.resolve_choices())))
    # a link, sometimes to a missing node or slot
    return [draw(st.sampled_from(ids + ["404"])), draw(st.integers(-1, 2))]


@st.composite
def random_graph(draw: Any) -> dict[str, Any]:
    count = draw(st.integers(1, 8))
    ids = [str(i) for i in range(1, count + 1)]
    prompt: dict[str, Any] = {}
    for node_id in ids:
        class_type = draw(st.sampled_from(CLASSES))
        spec = REG.get(class_type)
        inputs = {}
        for ispec in spec.inputs if spec is not None else ():
            if ispec.hidden or draw(st.integers(0, 9)) == 0:
                continue
            inputs[ispec.name] = draw(input_value(ispec, ids))
        prompt[node_id] = {"class_type": class_type, "inputs": inputs}
    return prompt


def check_runs(prompt: dict[str, Any]) -> None:
    """Validate; when valid, run, and require success unless a may-fail node was involved."""
    result = validate_prompt(prompt, REG)
    assert isinstance(result.ok, bool)
    if result.ok:
        assert result.outputs and result.error is None
        outcome = Executor(REG).execute(result.prompt, "prop", outputs_to_execute=result.outputs)
        if outcome.status != "success":
            assert outcome.error is None or outcome.error["node_type"] in MAY_FAIL or outcome.status == "interrupted", \
                outcome.error
    else:
        assert result.error is not None and {"type", "message", "details", "extra_info"} <= set(result.error)
        for entry in result.node_errors.values():
            assert entry["errors"] and all({"type", "message", "details", "extra_info"} <= set(e)
                                           for e in entry["errors"])


@SETTINGS
@given(random_graph())
def test_random_graphs_only_ever_give_validation_errors(prompt: dict[str, Any]) -> None:
    check_runs(prompt)


def valid_base() -> dict[str, Any]:
    return {"1": {"class_type": "FInt", "inputs": {"value": 2}},
            "2": {"class_type": "FRange", "inputs": {"count": 3}},
            "3": {"class_type": "FAdd", "inputs": {"a": ["1", 0], "b": ["2", 0]}},
            "4": {"class_type": "FSum", "inputs": {"values": ["3", 0]}},
            "5": {"class_type": "FString", "inputs": {"value": "s"}},
            "6": {"class_type": "FSwitch", "inputs": {"switch": True, "on_true": ["4", 0], "on_false": ["5", 0]}},
            "7": {"class_type": "FOut", "inputs": {"value": ["6", 0]}},
            "8": {"class_type": "FIntOut", "inputs": {"value": ["4", 0]}}}


@st.composite
def mutated_graph(draw: Any) -> dict[str, Any]:
    prompt = valid_base()
    for _ in range(draw(st.integers(1, 4))):
        node_id = draw(st.sampled_from(sorted(prompt) or ["1"]))
        kind = draw(st.integers(0, 6))
        node = prompt.get(node_id)
        if not isinstance(node, dict) or not isinstance(node.get("inputs"), dict):
            continue
        names = sorted(node["inputs"]) or ["value"]
        name = draw(st.sampled_from(names))
        if kind == 0:
            node["inputs"].pop(name, None)
        elif kind == 1:
            node["inputs"][name] = draw(json_values)
        elif kind == 2:
            node["inputs"][name] = [draw(st.sampled_from(sorted(prompt) + ["x"])), draw(st.integers(-1, 3))]
        elif kind == 3:
            node["class_type"] = draw(st.sampled_from(CLASSES))
        elif kind == 4:
            del prompt[node_id]
        elif kind == 5:
            prompt[node_id] = draw(json_values)
        else:
            node["inputs"] = draw(json_values)
    return prompt


@SETTINGS
@given(mutated_graph())
def test_mutated_graphs_only_ever_give_validation_errors(prompt: dict[str, Any]) -> None:
    result = validate_prompt(prompt, REG)  # must not raise, whatever the shape
    if result.ok:
        check_runs(prompt)


def test_the_unmutated_base_graph_runs() -> None:
    result = validate_prompt(valid_base(), REG)
    assert result.ok
    outcome = Executor(REG).execute(result.prompt, "p", outputs_to_execute=result.outputs)
    assert outcome.outputs == {"7": {"text": ["9"]}, "8": {"value": [9]}}  # (2+0)+(2+1)+(2+2)


@st.composite
def mutated_document(draw: Any) -> dict[str, Any]:
    doc = copy.deepcopy(draw(st.sampled_from([legacy_document(), subgraph_document()])))
    for _ in range(draw(st.integers(1, 3))):
        target = draw(st.sampled_from(["node", "link", "top"]))
        if target == "node" and doc["nodes"]:
            node = draw(st.sampled_from(doc["nodes"]))
            key = draw(st.sampled_from(["id", "type", "mode", "inputs", "outputs", "widgets_values", "title"]))
            node[key] = draw(json_values)
        elif target == "link" and isinstance(doc["links"], list) and doc["links"]:
            index = draw(st.integers(0, len(doc["links"]) - 1))
            doc["links"][index] = draw(json_values)
        else:
            doc[draw(st.sampled_from(["links", "definitions", "groups"]))] = draw(json_values)
    return doc


@SETTINGS
@given(mutated_document())
def test_mutated_ui_documents_convert_or_raise_workflow_error(doc: dict[str, Any]) -> None:
    try:
        prompt = ui_to_api(doc, REG)
    except WorkflowError as error:
        assert error.path.startswith("$")
        return
    validate_prompt(prompt, REG)  # whatever came out, validation copes with it
