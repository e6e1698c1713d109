"""`main.py install-pack-requirements`: packs' requirements.txt installed with pip into a fresh virtual environment
made by the test (no network: a wheel built in the test, pip run with --no-index), Loom's pins protected."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from config import parse_args
from pack_requirements import CONSTRAINTS, install_all, pin_conflicts, read_pins, report


def _wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> Path:
    """A minimal pure-Python wheel (PEP 427) of a package `name` whose module holds VALUE = 42."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires)
    files = {f"{name}/__init__.py": "VALUE = 42\n", f"{info}/METADATA": metadata,
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: loom-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{k},,\n" for k in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as archive:
        for arcname, text in {**files, f"{info}/RECORD": record}.items():
            archive.writestr(arcname, text)
    return path


def _pack(root: Path, name: str, requirements: str) -> Path:
    pack = root / name
    pack.mkdir(parents=True)
    (pack / "__init__.py").write_text("NODE_CLASS_MAPPINGS = {}\n")
    (pack / "requirements.txt").write_text(requirements)
    return pack


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", str(target)], check=True, capture_output=True)
    return target / "bin" / "python"


def test_installs_and_refuses_with_pins_kept(tmp_path: Path, venv: Path) -> None:
    packs = tmp_path / "custom_nodes"
    good = _pack(packs, "good_pack", "# a local wheel, as packs vendor them\n./wheels/tinypkg-0.1-py3-none-any.whl\n")
    _wheel(good / "wheels", "tinypkg", "0.1")
    _pack(packs, "pinned_pack", "einops<0.5\nsome-unpinned-package>=1\n")
    deep = _pack(packs, "deep_conflict_pack", "./needsold-0.1-py3-none-any.whl\n")
    _wheel(deep, "needsold", "0.1", requires=("einops<0.5",))
    (packs / "no_requirements").mkdir()

    results = {r.name: r for r in install_all([packs], python=str(venv), pip_args=("--no-index",))}
    assert set(results) == {"good_pack", "pinned_pack", "deep_conflict_pack"}
    assert results["good_pack"].state == "installed", results["good_pack"].output
    imported = subprocess.run([str(venv), "-c", "import tinypkg; print(tinypkg.VALUE)"], capture_output=True,
                              text=True)
    assert imported.stdout.strip() == "42"
    pinned = read_pins(CONSTRAINTS)["einops"]
    assert results["pinned_pack"].state == "refused"
    assert results["pinned_pack"].reasons == [f"requirements.txt:1: einops<0.5 conflicts with Loom's pin "
                                              f"einops=={pinned} (constraints.txt)"]
    deep_result = results["deep_conflict_pack"]
    assert deep_result.state == "refused", deep_result.output
    assert "needsold 0.1 depends on einops<0.5" in deep_result.reasons[0]
    assert f"einops=={pinned}" in deep_result.reasons[0]
    check = subprocess.run([str(venv), "-c", "import needsold"], capture_output=True)
    assert check.returncode != 0  # nothing of a refused pack is installed
    text = report(list(results.values()))
    assert "pinned_pack: refused" in text and "good_pack: installed" in text


def test_pin_check_and_command_line(tmp_path: Path) -> None:
    path = tmp_path / "requirements.txt"
    path.write_text("torch>=1.0 ; python_version >= '3'\nnumpy<0.1 ; python_version < '3'\n"
                    "aiohttp @ https://example.invalid/aiohttp.whl\n--extra-index-url https://example.invalid\n")
    pins = {"torch": "2.5.1", "numpy": "2.1.0", "aiohttp": "3.14.5"}
    assert pin_conflicts(path, pins) == ["requirements.txt:3: aiohttp from https://example.invalid/aiohttp.whl "
                                         "would replace Loom's pinned aiohttp==3.14.5"]
    config = parse_args(["install-pack-requirements", "good_pack", "other"], {})
    assert config.command == "install-pack-requirements" and config.packs == ("good_pack", "other")
    assert parse_args([], {}).packs == ()
