"""Validation of API prompts: ComfyUI's error vocabulary and shape, all errors at once."""
from __future__ import annotations

from typing import Any

import pytest

from executor.validate import validate_prompt
from tests.executor.fake_nodes import fake_registry

REG = fake_registry()


def graph(**nodes: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    return {k.lstrip("n"): {"class_type": c, "inputs": i} for k, (c, i) in nodes.items()}


def errors_of(result: Any, node: str) -> list[dict[str, Any]]:
    return result.node_errors[node]["errors"]


def test_valid_prompt_converts_constants_like_comfyui() -> None:
    prompt = graph(n1=("FInt", {"value": "5"}), n2=("FFloat", {"value": 3}), n3=("FAdd", {"a": ["1", 0], "b": 2.9}),
                   n4=("FIntOut", {"value": ["3", 0]}), n5=("FOut", {"value": ["2", 0]}))
    result = validate_prompt(prompt, REG)
    assert result.ok and result.error is None and result.node_errors == {}
    assert sorted(result.outputs) == ["4", "5"]
    assert result.prompt["1"]["inputs"]["value"] == 5
    assert result.prompt["2"]["inputs"]["value"] == 3.0 and isinstance(result.prompt["2"]["inputs"]["value"], float)
    assert result.prompt["3"]["inputs"]["b"] == 2  # int(2.9), as ComfyUI's int() does
    assert prompt["1"]["inputs"]["value"] == "5"  # the caller's prompt is untouched


def test_no_outputs() -> None:
    result = validate_prompt(graph(n1=("FInt", {"value": 1})), REG)
    assert not result.ok
    assert result.error == {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "",
                            "extra_info": {}}


def test_only_nodes_feeding_outputs_are_validated() -> None:
    prompt = graph(n1=("FInt", {"value": 99999}), n2=("FString", {"value": "a"}), n3=("FOut", {"value": ["2", 0]}))
    result = validate_prompt(prompt, REG)
    assert result.ok and result.node_errors == {}


def test_every_error_at_once_in_comfyui_shape() -> None:
    prompt = graph(
        n1=("FInt", {"value": 5000}),                       # above max 1000
        n2=("FInt", {"value": -5000}),                      # below min
        n3=("FAdd", {"a": ["1", 0]}),                       # b missing
        n4=("FPick", {"mode": "z", "amount": "x"}),          # not in list, not a float
        n5=("FIntOut", {"value": ["4", 0]}),                # STRING into INT
        n6=("FOut", {"value": ["3", 0]}),
        n7=("FOut", {"value": ["2", 0]}),
        n8=("FIntOut", {"value": ["99", 0]}),               # missing node
        n9=("FIntOut", {"value": ["1", 3]}),                # slot out of range
        n10=("FIntOut", {"value": ["1", 0, 2]}),            # malformed link
    )
    result = validate_prompt(prompt, REG)
    assert not result.ok and result.outputs == []
    assert result.error["type"] == "prompt_outputs_failed_validation"
    assert result.error["message"] == "Prompt outputs failed validation"
    assert errors_of(result, "1") == [{
        "type": "value_bigger_than_max", "message": "Value 5000 bigger than max of 1000", "details": "value",
        "extra_info": {"input_name": "value", "input_config": ["INT", {"default": 0, "min": -1000, "max": 1000}],
                       "received_value": 5000}}]
    assert errors_of(result, "2")[0]["type"] == "value_smaller_than_min"
    assert errors_of(result, "2")[0]["message"] == "Value -5000 smaller than min of -1000"
    assert errors_of(result, "3") == [{"type": "required_input_missing", "message": "Required input is missing",
                                       "details": "b", "extra_info": {"input_name": "b"}}]
    kinds = sorted(e["type"] for e in errors_of(result, "4"))
    assert kinds == ["invalid_input_type", "value_not_in_list"]
    not_in_list = next(e for e in errors_of(result, "4") if e["type"] == "value_not_in_list")
    assert not_in_list["details"] == "mode: 'z' not in ['a', 'b', 'c']"
    bad_float = next(e for e in errors_of(result, "4") if e["type"] == "invalid_input_type")
    assert bad_float["message"] == "Failed to convert an input value to a FLOAT value"
    mismatch = errors_of(result, "5")[0]
    assert mismatch["type"] == "return_type_mismatch"
    assert mismatch["details"] == "value, received_type(STRING) mismatch input_type(INT)"
    assert mismatch["extra_info"]["linked_node"] == ["4", 0]
    assert errors_of(result, "8")[0]["type"] == "bad_linked_input" and "'99'" in errors_of(result, "8")[0]["details"]
    assert errors_of(result, "9")[0]["type"] == "bad_linked_input" and "slot 3" in errors_of(result, "9")[0]["details"]
    assert errors_of(result, "10")[0]["message"] == "Bad linked input, must be a length-2 list of [node_id, slot_index]"
    # dependent_outputs: the failed outputs that depend on each failing node
    assert sorted(result.node_errors["1"]["dependent_outputs"]) == ["6", "9"]
    assert result.node_errors["3"]["dependent_outputs"] == ["6"]
    assert result.node_errors["3"]["class_type"] == "FAdd"
    assert "6" not in result.node_errors  # invalid only through node 3: reported there, as ComfyUI does


def test_one_good_output_makes_the_prompt_valid_as_in_comfyui() -> None:
    prompt = graph(n1=("FInt", {"value": 5000}), n2=("FIntOut", {"value": ["1", 0]}),
                   n3=("FInt", {"value": 5}), n4=("FIntOut", {"value": ["3", 0]}))
    result = validate_prompt(prompt, REG)
    assert result.ok and result.outputs == ["4"] and list(result.node_errors) == ["1"]
    assert result.node_errors["1"]["dependent_outputs"] == ["2"]


def test_unknown_class_reported_per_node() -> None:
    prompt = graph(n1=("Nope", {}), n2=("FOut", {"value": ["1", 0]}), n3=("FInt", {"value": 5000}),
                   n4=("FIntOut", {"value": ["3", 0]}))
    prompt["1"]["_meta"] = {"title": "My nope"}
    result = validate_prompt(prompt, REG)
    assert not result.ok
    assert result.error["type"] == "missing_node_type"
    assert result.error["message"] == "Node 'My nope' not found. The custom node may not be installed."
    assert result.error["details"] == "Node ID '#1'"
    assert set(result.node_errors) == {"1", "3"}


@pytest.mark.parametrize("prompt", [[], "x", {"1": 5}, {"1": {"inputs": {}}}, {"1": {"class_type": 3}},
                                    {"1": {"class_type": "FInt", "inputs": []}}])
def test_malformed_prompt_is_invalid_prompt(prompt: Any) -> None:
    result = validate_prompt(prompt, REG)
    assert not result.ok and result.error["type"] == "invalid_prompt"


def test_types_star_and_unions() -> None:
    union = fake_registry()
    prompt = graph(n1=("FString", {"value": "a"}), n2=("FOut", {"value": ["1", 0]}))  # STRING into *
    assert validate_prompt(prompt, union).ok
    from executor.validate_checks import types_match
    assert types_match("IMAGE", "IMAGE,MASK") and types_match("MASK, LATENT", "IMAGE,MASK")
    assert not types_match("LATENT", "IMAGE,MASK") and types_match("*", "MODEL") and types_match("VEC2", "*")


def test_cycle_names_its_nodes() -> None:
    prompt = graph(n1=("FAdd", {"a": ["2", 0], "b": 1}), n2=("FAdd", {"a": ["1", 0], "b": 1}),
                   n3=("FIntOut", {"value": ["2", 0]}))
    result = validate_prompt(prompt, REG)
    assert not result.ok
    for node in ("1", "2"):
        [error] = errors_of(result, node)
        assert error["type"] == "dependency_cycle" and error["extra_info"]["cycle"] == ["1", "2"]
        assert error["details"] == "nodes 1 -> 2 -> 1"
    assert "3" not in result.node_errors


def test_custom_validation() -> None:
    prompt = graph(n1=("FChecked", {"value": 3}), n2=("FIntOut", {"value": ["1", 0]}),
                   n3=("FChecked", {"value": 13}), n4=("FIntOut", {"value": ["3", 0]}),
                   n5=("FChecked", {"value": 4}), n6=("FIntOut", {"value": ["5", 0]}))
    result = validate_prompt(prompt, REG)
    assert result.ok and result.outputs == ["6"]
    assert errors_of(result, "1") == [{"type": "custom_validation_failed", "message": "Custom validation failed for node",
                                       "details": "value - 3 is odd", "extra_info": {"input_name": "value"}}]
    [raised] = errors_of(result, "3")
    assert raised["type"] == "exception_during_validation" and raised["details"] == "unlucky"
    assert raised["extra_info"]["exception_type"] == "builtins.ValueError"


def test_partial_targets() -> None:
    prompt = graph(n1=("FInt", {"value": 5000}), n2=("FIntOut", {"value": ["1", 0]}),
                   n3=("FInt", {"value": 5}), n4=("FIntOut", {"value": ["3", 0]}))
    result = validate_prompt(prompt, REG, partial_targets=["4"])
    assert result.ok and result.outputs == ["4"] and result.node_errors == {}


def test_ten_thousand_node_chain_validates() -> None:
    n = 10_000
    prompt = {"0": {"class_type": "FString", "inputs": {"value": "x"}}}
    for i in range(1, n):
        prompt[str(i)] = {"class_type": "FConcat", "inputs": {"string_a": [str(i - 1), 0], "string_b": "y"}}
    prompt[str(n)] = {"class_type": "FOut", "inputs": {"value": [str(n - 1), 0]}}
    assert validate_prompt(prompt, REG).ok
    prompt["5000"]["inputs"]["string_b"] = ["77", 0, 1]
    result = validate_prompt(prompt, REG)
    assert not result.ok and list(result.node_errors) == ["5000"]
    assert result.node_errors["5000"]["dependent_outputs"] == [str(n)]


def test_link_into_an_input_the_node_cannot_take_is_refused() -> None:
    """Undeclared links reach nodes that read `**kwargs` (ComfyUI passes them); a node whose function cannot take
    the name gets a validation error naming node and input, and the other outputs still run."""
    from nodes.spec import Input, Node, Output

    class Dyn(Node):
        INPUTS = [Input("first", "*")]
        OUTPUTS = [Output("STRING")]

        def execute(self, **kw: Any) -> tuple[str]:
            return (str(sorted(kw)),)

    reg = fake_registry(Dyn)
    prompt = graph(n1=("FInt", {"value": 1}), n2=("Dyn", {"first": ["1", 0], "extra_1": ["1", 0]}),
                   n3=("FOut", {"value": ["2", 0]}), n4=("FAdd", {"a": ["1", 0], "b": 1, "c": ["1", 0]}),
                   n5=("FIntOut", {"value": ["4", 0]}), n6=("FAdd", {"a": ["1", 0], "b": 1, "junk": 3}),
                   n7=("FIntOut", {"value": ["6", 0]}))
    result = validate_prompt(prompt, reg)
    assert result.ok and sorted(result.outputs) == ["3", "7"]  # an undeclared constant is dropped, as in ComfyUI
    assert errors_of(result, "4") == [{"type": "unexpected_input", "message": "'c' is not an input of FAdd",
                                       "details": "c", "extra_info": {"input_name": "c"}}]
    assert set(result.node_errors) == {"4"}
