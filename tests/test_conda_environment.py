"""``environment.yml`` (conda) stays in step with ``pyproject.toml`` (pip)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_environment_yml_lists_what_pyproject_requires():
    """The conda file must install the same requirements as ``pip install -e .[all extras]``
    (torch is pinned to 2.13.0 there and a range in pyproject)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    def normalised(requirements) -> set[str]:
        found = set()
        for line in requirements:
            requirement = line.split("#")[0].strip().replace(" ", "")
            if requirement and not requirement.startswith("torch"):
                found.add(requirement.lower())
        return found

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = normalised(project["dependencies"]) | normalised(
        r for extra in project["optional-dependencies"].values() for r in extra)
    pip_lines = [line.strip()[2:] for line in
                 (REPO / "environment.yml").read_text().split("- pip:", 1)[1].splitlines()
                 if line.strip().startswith("- ")]
    assert "--constraint requirements/lock.txt" in pip_lines  # the same lock as make setup
    listed = normalised(line for line in pip_lines if not line.startswith("-"))
    assert listed == wanted, (f"only in pyproject.toml: {sorted(wanted - listed)}; "
                              f"only in environment.yml: {sorted(listed - wanted)}")
