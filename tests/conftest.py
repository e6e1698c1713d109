"""Test-suite wide settings: the `slow` marker and the location of ../shared."""
from __future__ import annotations

import os
import sys
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


@pytest.fixture(autouse=True)
def _torch_threads(request: pytest.FixtureRequest) -> None:
    """Tiny-model tests run single-threaded (thread start-up costs more than their small kernels gain, and
    oversubscribed cores slow them many times over); full-size `slow` tests use every core."""
    torch = sys.modules.get("torch")
    if torch is None:
        return
    slow = request.node.get_closest_marker("slow") is not None
    torch.set_num_threads(max(1, os.cpu_count() or 1) if slow else 1)
