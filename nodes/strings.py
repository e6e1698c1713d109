"""String nodes: StringLength, StringSubstring, StringReplace, StringTrim, StringContains, StringCompare,
CaseConverter, RegexMatch, RegexExtract and RegexReplace (StringConcatenate lives in `nodes/primitives.py`).

Names, inputs, defaults, categories, display names and outputs are ComfyUI's (`comfy_extras/nodes_string.py`); the
semantics are Python's `str` methods and `re` module, as there. RegexMatch and RegexExtract treat an invalid pattern
as "no match" (ComfyUI's behaviour, so a half-typed pattern does not stop a workflow); RegexReplace reports it as an
error naming the node and the pattern.
"""
from __future__ import annotations

import re

from nodes.spec import Boolean, Combo, InputSpec, Int, Node, Output, String

CATEGORY = "utils/string"
CASE_MODES = ("UPPERCASE", "lowercase", "Capitalize", "Title Case")
TRIM_MODES = ("Both", "Left", "Right")
COMPARE_MODES = ("Starts With", "Ends With", "Equal")
EXTRACT_MODES = ("First Match", "All Matches", "First Group", "All Groups")
_JOIN = "\n"


def regex_flags(case_insensitive: bool, multiline: bool, dotall: bool) -> int:
    """The `re` flags the three toggles of the regex nodes stand for."""
    flags = 0
    if case_insensitive:
        flags |= re.IGNORECASE
    if multiline:
        flags |= re.MULTILINE
    if dotall:
        flags |= re.DOTALL
    return flags


def _text(name: str) -> InputSpec:
    return String(name, None, multiline=True)


class StringLength(Node):
    """The number of characters in the string."""

    DISPLAY_NAME = "Length"
    CATEGORY = CATEGORY
    SEARCH_ALIASES = ("character count", "text size")
    INPUTS = (_text("string"),)
    OUTPUTS = (Output("INT", "length"),)

    def execute(self, string: str) -> tuple[int]:
        return (len(string),)


class StringSubstring(Node):
    """The characters from `start` up to (not including) `end`; negative positions count from the end."""

    DISPLAY_NAME = "Substring"
    CATEGORY = CATEGORY
    SEARCH_ALIASES = ("extract text", "text portion")
    INPUTS = (_text("string"), Int("start", None), Int("end", None))
    OUTPUTS = (Output("STRING"),)

    def execute(self, string: str, start: int, end: int) -> tuple[str]:
        return (string[start:end],)


class CaseConverter(Node):
    """The string in upper case, lower case, with its first letter capitalised, or in title case."""

    DISPLAY_NAME = "Case Converter"
    CATEGORY = CATEGORY
    SEARCH_ALIASES = ("text case", "uppercase", "lowercase", "capitalize")
    INPUTS = (_text("string"), Combo("mode", CASE_MODES))
    OUTPUTS = (Output("STRING"),)

    def execute(self, string: str, mode: str) -> tuple[str]:
        convert = {"UPPERCASE": str.upper, "lowercase": str.lower, "Capitalize": str.capitalize,
                   "Title Case": str.title}.get(mode)
        return (convert(string) if convert else string,)


class StringTrim(Node):
    """The string without the white space at both ends, at the start, or at the end."""

    DISPLAY_NAME = "Trim"
    CATEGORY = CATEGORY
    SEARCH_ALIASES = ("clean whitespace", "remove whitespace")
    INPUTS = (_text("string"), Combo("mode", TRIM_MODES))
    OUTPUTS = (Output("STRING"),)

    def execute(self, string: str, mode: str) -> tuple[str]:
        trim = {"Both": str.strip, "Left": str.lstrip, "Right": str.rstrip}.get(mode)
        return (trim(string) if trim else string,)


class StringReplace(Node):
    """Every occurrence of `find` replaced by `replace` (plain text, not a pattern)."""

    DISPLAY_NAME = "Replace"
    CATEGORY = CATEGORY
    SEARCH_ALIASES = ("find and replace", "substitute", "swap text")
    INPUTS = (_text("string"), _text("find"), _text("replace"))
    OUTPUTS = (Output("STRING"),)

    def execute(self, string: str, find: str, replace: str) -> tuple[str]:
        return (string.replace(find, replace),)


class StringContains(Node):
    """Whether `substring` occurs in the string."""

    DISPLAY_NAME = "Contains"
    CATEGORY = CATEGORY
    SEARCH_ALIASES = ("text includes", "string includes")
    INPUTS = (_text("string"), _text("substring"), Boolean("case_sensitive", True))
    OUTPUTS = (Output("BOOLEAN", "contains"),)

    def execute(self, string: str, substring: str, case_sensitive: bool) -> tuple[bool]:
        if not case_sensitive:
            string, substring = string.lower(), substring.lower()
        return (substring in string,)


class StringCompare(Node):
    """Whether string_a starts with, ends with, or equals string_b."""

    DISPLAY_NAME = "Compare"
    CATEGORY = CATEGORY
    SEARCH_ALIASES = ("text match", "string equals", "starts with", "ends with")
    INPUTS = (_text("string_a"), _text("string_b"), Combo("mode", COMPARE_MODES), Boolean("case_sensitive", True))
    OUTPUTS = (Output("BOOLEAN"),)

    def execute(self, string_a: str, string_b: str, mode: str, case_sensitive: bool) -> tuple[bool]:
        if not case_sensitive:
            string_a, string_b = string_a.lower(), string_b.lower()
        if mode == "Starts With":
            return (string_a.startswith(string_b),)
        if mode == "Ends With":
            return (string_a.endswith(string_b),)
        return (string_a == string_b,)


_FLAG_INPUTS = (Boolean("case_insensitive", True), Boolean("multiline", False), Boolean("dotall", False))


class RegexMatch(Node):
    """Whether the pattern matches anywhere in the string (an invalid pattern matches nothing)."""

    DISPLAY_NAME = "Regex Match"
    CATEGORY = CATEGORY
    SEARCH_ALIASES = ("pattern match", "text contains", "string match")
    INPUTS = (_text("string"), _text("regex_pattern"), *_FLAG_INPUTS)
    OUTPUTS = (Output("BOOLEAN", "matches"),)

    def execute(self, string: str, regex_pattern: str, case_insensitive: bool, multiline: bool,
                dotall: bool) -> tuple[bool]:
        try:
            found = re.search(regex_pattern, string, regex_flags(case_insensitive, multiline, dotall))
        except re.error:
            return (False,)
        return (found is not None,)


def extract(string: str, pattern: str, mode: str, flags: int, group_index: int) -> str:
    """RegexExtract's result: the first match, all matches, the first match's group, or that group of every match
    (several results joined by newlines; "" when nothing matches or the group does not exist)."""
    if mode == "First Match":
        found = re.search(pattern, string, flags)
        return found.group(0) if found else ""
    if mode == "All Matches":
        matches = re.findall(pattern, string, flags)
        # With groups in the pattern findall gives the groups: ComfyUI keeps the first group of each match.
        return _JOIN.join(m[0] if isinstance(m, tuple) else m for m in matches)
    if mode == "First Group":
        found = re.search(pattern, string, flags)
        return found.group(group_index) if found and len(found.groups()) >= group_index else ""
    if mode == "All Groups":
        groups = [m.group(group_index) for m in re.finditer(pattern, string, flags)
                  if m.groups() and len(m.groups()) >= group_index]
        return _JOIN.join(g if g is not None else "" for g in groups)
    return ""


class RegexExtract(Node):
    """Text the pattern finds in the string (an invalid pattern finds nothing)."""

    DISPLAY_NAME = "Regex Extract"
    CATEGORY = CATEGORY
    SEARCH_ALIASES = ("pattern extract", "text parser", "parse text")
    INPUTS = (_text("string"), _text("regex_pattern"), Combo("mode", EXTRACT_MODES), *_FLAG_INPUTS,
              Int("group_index", 1, min=0, max=100))
    OUTPUTS = (Output("STRING"),)

    def execute(self, string: str, regex_pattern: str, mode: str, case_insensitive: bool, multiline: bool,
                dotall: bool, group_index: int) -> tuple[str]:
        try:
            return (extract(string, regex_pattern, mode, regex_flags(case_insensitive, multiline, dotall),
                            group_index) or "",)
        except re.error:
            return ("",)


class RegexReplace(Node):
    """Find and replace text using regex patterns."""

    DISPLAY_NAME = "Regex Replace"
    CATEGORY = CATEGORY
    SEARCH_ALIASES = ("pattern replace", "find and replace", "substitution")
    INPUTS = (
        _text("string"), _text("regex_pattern"), _text("replace"),
        Boolean("case_insensitive", True, optional=True),
        Boolean("multiline", False, optional=True),
        Boolean("dotall", False, optional=True,
                tooltip="When enabled, the dot (.) character will match any character including newline "
                        "characters. When disabled, dots won't match newlines."),
        Int("count", 0, min=0, max=100, optional=True,
            tooltip="Maximum number of replacements to make. Set to 0 to replace all occurrences (default). Set "
                    "to 1 to replace only the first match, 2 for the first two matches, etc."),
    )
    OUTPUTS = (Output("STRING"),)

    def execute(self, string: str, regex_pattern: str, replace: str, case_insensitive: bool = True,
                multiline: bool = False, dotall: bool = False, count: int = 0) -> tuple[str]:
        flags = regex_flags(case_insensitive, multiline, dotall)
        try:
            return (re.sub(regex_pattern, replace, string, count=count, flags=flags),)
        except re.error as err:
            raise ValueError(f"RegexReplace: input 'regex_pattern' {regex_pattern!r} (or the 'replace' text's "
                             f"group references) is not a valid regular expression: {err}") from err


NODES: list[type] = [StringLength, StringSubstring, CaseConverter, StringTrim, StringReplace, StringContains,
                     StringCompare, RegexMatch, RegexExtract, RegexReplace]
