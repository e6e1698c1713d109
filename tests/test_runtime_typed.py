"""The Runtime is one typed object (issue 13): its parts are read as attributes, never through
`getattr(runtime, "...", default)` fallbacks that hide uses from a type checker."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from runtime import Runtime

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("server", "compat", "executor", "cluster", "nodes")
FALLBACK = re.compile(r"getattr\(\s*(runtime|rt|self\.runtime|(request\.)?app\[RUNTIME\])\s*,")


def test_no_getattr_fallbacks_on_the_runtime() -> None:
    found = []
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if FALLBACK.search(line):
                    found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    for path in (REPO / "runtime.py", REPO / "main.py"):
        found += [f"{path.name}: {line.strip()}" for line in path.read_text().splitlines() if FALLBACK.search(line)]
    assert not found, "read the Runtime's typed attributes instead:\n" + "\n".join(found)


def test_the_parts_that_always_exist_have_no_default() -> None:
    required = [f.name for f in dataclasses.fields(Runtime)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    assert required == ["config", "folders", "registry", "executor", "interrupt", "cache"]
