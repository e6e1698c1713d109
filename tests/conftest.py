"""Test-suite wide settings: the `slow` marker and the location of ../shared."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = (REPO_ROOT / ".." / "shared").resolve()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: full-size model or browser tests (CI still runs them)")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared reference folder beside the repository; skips the test where it is absent."""
    if not SHARED.is_dir():
        pytest.skip("../shared is absent")
    return SHARED
