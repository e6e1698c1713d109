"""`python main.py install-pack-requirements [PACK ...]`: install the `requirements.txt` of each custom node pack
into Loom's environment without moving Loom's own pins.

Owns the check and the pip call, nothing else. For each pack folder (in the custom-node folders, or the named
packs) that has a `requirements.txt`:

1. every named requirement whose environment marker applies is checked against Loom's pins (`constraints.txt`):
   one that names a pinned package with a version range excluding the pinned version refuses the whole pack,
   naming the package, the range and the pin (nothing of that pack is installed);
2. otherwise `pip install -c constraints.txt -r requirements.txt` runs with the pack folder as working directory
   (so `./wheels/x.whl` and `./vendor/pkg` lines work); the constraints make pip keep every pinned package at its
   pin, so a dependency that would need another version makes pip refuse, and the pack is reported as refused
   with pip's lines naming the dependency and the pin.

Returns exit status 0 when every pack installed (or had nothing to install), 1 otherwise. Packs are not imported.
"""
from __future__ import annotations

import logging
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

log = logging.getLogger("loom.packs")
REPO_ROOT = Path(__file__).resolve().parent
CONSTRAINTS = REPO_ROOT / "constraints.txt"


@dataclass
class PackInstall:
    """What happened to one pack: "installed", "refused" (a pin conflict) or "failed" (pip failed otherwise)."""

    name: str
    requirements: Path
    state: str = "installed"
    reasons: list[str] = field(default_factory=list)
    output: str = ""


def read_pins(path: Path = CONSTRAINTS) -> dict[str, str]:
    """{canonical name: version} of the `name==version` lines of a constraints file."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if not text or text.startswith("-"):
            continue
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        exact = [s.version for s in req.specifier if s.operator in ("==", "===")]
        if exact:
            pins[canonicalize_name(req.name)] = exact[0]
    return pins


def _requirement_lines(path: Path) -> Iterable[tuple[int, str]]:
    """(line number, text) of the lines of a requirements file that name a requirement (not options or paths)."""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        text = line.split(" #", 1)[0].strip()
        if not text or text.startswith(("#", "-")) or text.startswith((".", "/", "file:")) or "://" in text \
                and "@" not in text:
            continue
        yield number, text


def pin_conflicts(path: Path, pins: dict[str, str]) -> list[str]:
    """Why the requirements at `path` cannot be installed beside Loom's pins (empty when they can)."""
    reasons = []
    for number, text in _requirement_lines(path):
        try:
            req = Requirement(text)
        except InvalidRequirement as error:
            reasons.append(f"{path.name}:{number}: {text!r} is not a valid requirement ({error})")
            continue
        if req.marker is not None and not req.marker.evaluate():
            continue
        pinned = pins.get(canonicalize_name(req.name))
        if pinned is None:
            continue
        if req.url:
            reasons.append(f"{path.name}:{number}: {req.name} from {req.url} would replace Loom's pinned "
                           f"{req.name}=={pinned}")
        elif req.specifier and not req.specifier.contains(pinned, prereleases=True):
            reasons.append(f"{path.name}:{number}: {req.name}{req.specifier} conflicts with Loom's pin "
                           f"{req.name}=={pinned} (constraints.txt)")
    return reasons


def find_requirement_files(directories: Iterable[Path], only: Sequence[str] = ()) -> list[tuple[str, Path]]:
    """(pack name, requirements.txt) of the pack folders in `directories` (only the named packs, if given)."""
    found = []
    for directory in directories:
        if not Path(directory).is_dir():
            continue
        for entry in sorted(Path(directory).iterdir(), key=lambda p: p.name):
            if entry.name.startswith((".", "__")) or entry.name.endswith(".disabled") or not entry.is_dir():
                continue
            if only and entry.name not in only:
                continue
            if (entry / "requirements.txt").is_file():
                found.append((entry.name, entry / "requirements.txt"))
    return found


def install_pack(name: str, requirements: Path, pins: dict[str, str], *, python: str = sys.executable,
                 constraints: Path = CONSTRAINTS, pip_args: Sequence[str] = ()) -> PackInstall:
    """Check one pack's requirements against the pins, then pip-install them with the constraints."""
    result = PackInstall(name, requirements)
    result.reasons = pin_conflicts(requirements, pins)
    if result.reasons:
        result.state = "refused"
        return result
    command = [python, "-m", "pip", "install", "--disable-pip-version-check", "-c", str(constraints.resolve()),
               "-r", str(requirements.resolve()), *pip_args]
    done = subprocess.run(command, cwd=requirements.parent, capture_output=True, text=True)
    result.output = done.stdout + done.stderr
    if done.returncode != 0:
        causes = [line.strip() for line in result.output.splitlines()
                  if " depends on " in line or "(constraint)" in line]
        if "ResolutionImpossible" in result.output and causes:
            result.state = "refused"
            result.reasons.append("a dependency would change a package Loom pins (constraints.txt): "
                                  + "; ".join(dict.fromkeys(causes)))
        else:
            result.state = "failed"
            result.reasons.append(f"pip failed with status {done.returncode}")
    return result


def install_all(directories: Iterable[Path], only: Sequence[str] = (), *, python: str = sys.executable,
                constraints: Path = CONSTRAINTS, pip_args: Sequence[str] = ()) -> list[PackInstall]:
    """`install_pack` for every pack with a requirements.txt (see the module docstring)."""
    pins = read_pins(constraints)
    files = find_requirement_files(directories, only)
    missing = [n for n in only if n not in {name for name, _ in files}]
    results = [install_pack(name, path, pins, python=python, constraints=constraints, pip_args=pip_args)
               for name, path in files]
    for name in missing:
        results.append(PackInstall(name, Path(), "failed", [f"no pack named {name} with a requirements.txt"]))
    return results


def report(results: Sequence[PackInstall]) -> str:
    """The summary printed by the command."""
    if not results:
        return "No custom node pack has a requirements.txt."
    lines = []
    for r in results:
        lines.append(f"{r.name}: {r.state}")
        lines += [f"  {reason}" for reason in r.reasons]
        if r.state == "failed" and r.output:
            lines += ["  " + line for line in r.output.strip().splitlines()[-15:]]
    return "\n".join(lines)


def main(config: object, packs: Sequence[str] = ()) -> int:
    """The command: every pack folder of `config`'s custom-node folders; status 0 when all installed."""
    from folders import Folders
    from nodes.custom_loader import pack_directories

    results = install_all(pack_directories(config, Folders(config)), packs)
    print(report(results), flush=True)
    return 0 if all(r.state == "installed" for r in results) else 1
