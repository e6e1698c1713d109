"""nodes/strings.py through the real executor: every string node's result on concrete inputs (Python's str/re
semantics, as ComfyUI), invalid regex handling, and the /object_info entries (ComfyUI's names, defaults, order)."""
from __future__ import annotations

from typing import Any

import pytest

from tests.nodes.ops_env import OpsEnv


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> OpsEnv:
    return OpsEnv(tmp_path_factory.mktemp("strings"))


TEXT = "  Hello World, hello loom  "


@pytest.mark.parametrize("class_type, inputs, expected", [
    ("StringLength", {"string": TEXT}, 27),
    ("StringSubstring", {"string": "abcdefgh", "start": 2, "end": 5}, "cde"),
    ("StringSubstring", {"string": "abcdefgh", "start": -3, "end": 100}, "fgh"),
    ("CaseConverter", {"string": "hello wORLD", "mode": "UPPERCASE"}, "HELLO WORLD"),
    ("CaseConverter", {"string": "hello wORLD", "mode": "lowercase"}, "hello world"),
    ("CaseConverter", {"string": "hello wORLD", "mode": "Capitalize"}, "Hello world"),
    ("CaseConverter", {"string": "hello wORLD", "mode": "Title Case"}, "Hello World"),
    ("StringTrim", {"string": TEXT, "mode": "Both"}, "Hello World, hello loom"),
    ("StringTrim", {"string": TEXT, "mode": "Left"}, "Hello World, hello loom  "),
    ("StringTrim", {"string": TEXT, "mode": "Right"}, "  Hello World, hello loom"),
    ("StringReplace", {"string": "a.b.c", "find": ".", "replace": "::"}, "a::b::c"),
    ("StringContains", {"string": TEXT, "substring": "WORLD", "case_sensitive": True}, False),
    ("StringContains", {"string": TEXT, "substring": "WORLD", "case_sensitive": False}, True),
    ("StringCompare", {"string_a": "Prefix-x", "string_b": "prefix", "mode": "Starts With", "case_sensitive": True},
     False),
    ("StringCompare", {"string_a": "Prefix-x", "string_b": "prefix", "mode": "Starts With", "case_sensitive": False},
     True),
    ("StringCompare", {"string_a": "file.PNG", "string_b": ".png", "mode": "Ends With", "case_sensitive": False},
     True),
    ("StringCompare", {"string_a": "abc", "string_b": "abc", "mode": "Equal", "case_sensitive": True}, True),
])
def test_plain_string_nodes(env: OpsEnv, class_type: str, inputs: dict[str, Any], expected: Any) -> None:
    assert env.value(class_type, inputs) == expected


FLAGS = {"case_insensitive": True, "multiline": False, "dotall": False}


@pytest.mark.parametrize("text, pattern, flags, expected", [
    (TEXT, r"WORLD", FLAGS, True),
    (TEXT, r"WORLD", {**FLAGS, "case_insensitive": False}, False),
    ("a\nb", r"^b", FLAGS, False),
    ("a\nb", r"^b", {**FLAGS, "multiline": True}, True),
    ("a\nb", r"a.b", FLAGS, False),
    ("a\nb", r"a.b", {**FLAGS, "dotall": True}, True),
    (TEXT, r"([unclosed", FLAGS, False),  # an invalid pattern matches nothing
])
def test_regex_match(env: OpsEnv, text: str, pattern: str, flags: dict[str, bool], expected: bool) -> None:
    assert env.value("RegexMatch", {"string": text, "regex_pattern": pattern, **flags}) is expected


@pytest.mark.parametrize("mode, pattern, group, expected", [
    ("First Match", r"\d+", 1, "12"),
    ("All Matches", r"\d+", 1, "12\n345\n6"),
    ("All Matches", r"(\w)(\d+)", 1, "a\nb\nc"),  # with groups, the first group of each match
    ("First Group", r"(\w)(\d+)", 2, "12"),
    ("First Group", r"(\w)(\d+)", 3, ""),  # no such group
    ("All Groups", r"(\w)(\d+)", 2, "12\n345\n6"),
    ("All Groups", r"(\w)(\d+)", 0, "a12\nb345\nc6"),  # group 0 is the whole match
    ("All Groups", r"\d+", 1, ""),  # a pattern without groups has no group 1
    ("First Match", r"zzz", 1, ""),
    ("First Match", r"(bad", 1, ""),  # an invalid pattern finds nothing
])
def test_regex_extract(env: OpsEnv, mode: str, pattern: str, group: int, expected: str) -> None:
    inputs = {"string": "a12 b345 c6", "regex_pattern": pattern, "mode": mode, **FLAGS, "group_index": group}
    assert env.value("RegexExtract", inputs) == expected


def test_regex_replace(env: OpsEnv) -> None:
    base = {"string": "Cat cat CAT", "regex_pattern": "cat", "replace": "dog"}
    assert env.value("RegexReplace", base) == "dog dog dog"  # optional flags default: case-insensitive
    assert env.value("RegexReplace", {**base, "case_insensitive": False}) == "Cat dog CAT"
    assert env.value("RegexReplace", {**base, "count": 2}) == "dog dog CAT"
    grouped = {"string": "2024-01-31", "regex_pattern": r"(\d+)-(\d+)-(\d+)", "replace": r"\3/\2/\1"}
    assert env.value("RegexReplace", grouped) == "31/01/2024"


def test_regex_replace_with_a_bad_pattern_names_the_node_and_input(env: OpsEnv) -> None:
    prompt = env.prompt("RegexReplace", {"string": "x", "regex_pattern": "(open", "replace": ""})
    prompt["grab"] = {"class_type": "Grab", "inputs": {"value": ["n", 0]}}
    result = env.run(prompt)
    assert result.status == "error"
    message = result.error["exception_message"]
    assert "RegexReplace" in message and "regex_pattern" in message and "(open" in message


def test_object_info(env: OpsEnv) -> None:
    extract = env.info("RegexExtract")
    assert extract["input_order"]["required"] == ["string", "regex_pattern", "mode", "case_insensitive", "multiline",
                                                  "dotall", "group_index"]
    assert extract["input"]["required"]["mode"][0] == ["First Match", "All Matches", "First Group", "All Groups"]
    assert extract["input"]["required"]["group_index"] == ["INT", {"default": 1, "min": 0, "max": 100}]
    assert extract["display_name"] == "Regex Extract" and extract["category"] == "utils/string"
    replace = env.info("RegexReplace")
    assert replace["input_order"]["optional"] == ["case_insensitive", "multiline", "dotall", "count"]
    assert replace["description"] == "Find and replace text using regex patterns."
    assert env.info("StringLength")["output_name"] == ["length"]
    assert env.info("StringContains")["output_name"] == ["contains"]
    assert env.info("RegexMatch")["output"] == ["BOOLEAN"] and env.info("RegexMatch")["output_name"] == ["matches"]
    substring = env.info("StringSubstring")["input"]["required"]
    assert substring == {"string": ["STRING", {"multiline": True}], "start": ["INT"], "end": ["INT"]}
    assert env.info("CaseConverter")["input"]["required"]["mode"][0] == ["UPPERCASE", "lowercase", "Capitalize",
                                                                         "Title Case"]
    assert env.info("StringTrim")["display_name"] == "Trim"


def test_missing_required_string_is_a_validation_error(env: OpsEnv) -> None:
    prompt = {"n": {"class_type": "StringLength", "inputs": {}},
              "grab": {"class_type": "Grab", "inputs": {"value": ["n", 0]}}}
    result = env.run(prompt)
    assert result.status != "success"
