"""``requirements/lock.txt`` pins everything ``make setup`` installs, within pyproject's ranges."""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
LOCK = REPO / "requirements" / "lock.txt"
MAKEFILE = (REPO / "Makefile").read_text()


def locked() -> dict[str, str]:
    """Package name (canonical) -> the exact version the lock pins."""
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def makefile_pins(variable: str) -> dict[str, str]:
    """``name==version`` pins of a Makefile variable (continued lines included)."""
    value = re.search(rf"^{variable}\s*:=((?:.*\\\n)*.*)$", MAKEFILE, re.MULTILINE).group(1)
    return {canonicalize_name(name): version
            for name, version in re.findall(r"([\w.-]+)==([\w.+-]+)", value)}


def test_every_requirement_is_pinned_within_its_range():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    requirements += [Requirement(r) for extra in ("dev", "jupyter")
                     for r in project["optional-dependencies"][extra]]
    pins = locked()
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not in {LOCK.name}: run make lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), \
            f"{LOCK.name} pins {name}=={pins[name]}, outside pyproject's {requirement}"


def test_the_lock_keeps_the_makefile_pins_and_no_cuda_build():
    pins = locked()
    for name, version in {**makefile_pins("TORCH"), **makefile_pins("MODEL_WHEELS")}.items():
        assert pins.get(name) == version, f"Makefile pins {name}=={version}, the lock {pins.get(name)}"
    assert "+" not in pins["torch"]  # the local CPU wheel matches ==2.13.0 without "+cpu"
    assert not [name for name in pins if name.startswith(("nvidia-", "triton"))]


@pytest.mark.skipif(Path(sys.prefix).resolve() != (REPO / ".venv").resolve(),
                    reason="checks the environment make setup built (.venv), not this one")
def test_make_setup_installed_exactly_the_locked_versions():
    wrong = {}
    for name, version in locked().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed is None or installed.split("+")[0] != version:
            wrong[name] = (version, installed)
    assert not wrong, f"locked vs installed: {wrong}; rerun make setup"
