"""Build a wheel from this checkout and prove an installed copy finds its bundled prompts.

The prompt sets live in ``prompts/`` in the repository and are copied into the wheel as
``workbench/bundled_prompts``. A checkout falls back to ``prompts/``, so only an installed
wheel shows whether that mapping works.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.packaging

EXPECTED_IN_WHEEL = [
    "workbench/__init__.py",
    "workbench/cli.py",
    "workbench/bundled_prompts/qualitative-harmful.txt",
    "workbench/bundled_prompts/qualitative-benign.txt",
    "workbench/bundled_prompts/diverse.txt",
    "workbench/bundled_prompts/jbb-harmful.csv",
    "workbench/bundled_prompts/jbb-benign.csv",
    "workbench/bundled_prompts/licenses/JailbreakBench-MIT.txt",
    "widgets/__init__.py",
]

PROBE = textwrap.dedent("""
    import json
    import workbench
    from workbench.prompts import BUNDLED, PromptSet, bundled_dir
    print(json.dumps({
        "file": workbench.__file__,
        "bundled_dir": str(bundled_dir()),
        "counts": {name: len(PromptSet.bundled(name)) for name in BUNDLED},
    }))
""")


def _run(command: list, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True,
                            timeout=300, **kwargs)
    assert result.returncode == 0, (
        f"{command} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "--no-index", "-q", "-w", out, REPO])
    wheels = list(out.glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_contains_the_bundled_prompt_sets(wheel):
    assert wheel.name.startswith("cna_workbench-")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "cna = workbench.cli:main" in archive.read(entry_points).decode()
    missing = [name for name in EXPECTED_IN_WHEEL if name not in names]
    assert not missing, f"missing from {wheel.name}: {missing}"
    assert not any(name.startswith(("tests/", "benchmarks/", "prompts/")) for name in names)


def test_installed_wheel_finds_the_bundled_prompt_sets(wheel, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv])
    python = venv / "bin" / "python"
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", wheel])

    # torch, transformers, ... come from this venv through PYTHONPATH. Its editable install
    # of workbench is a .pth file, which Python only reads in site directories, never in
    # PYTHONPATH entries, so `workbench` has to come from the wheel just installed.
    outer_site = sysconfig.get_paths()["purelib"]
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(PYTHONPATH=outer_site, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    result = _run([python, "-c", PROBE], cwd=outside, env=env)
    report = json.loads(result.stdout.strip().splitlines()[-1])

    venv_root = venv.resolve()
    package = Path(report["file"]).resolve()
    assert package.is_relative_to(venv_root), f"workbench imported from {package}"
    assert not package.is_relative_to(REPO)
    bundled = Path(report["bundled_dir"]).resolve()
    assert bundled.is_relative_to(venv_root), f"bundled prompts found at {bundled}"
    assert bundled == package.parent / "bundled_prompts"

    counts = report["counts"]
    from workbench.prompts import BUNDLED

    assert set(counts) == set(BUNDLED)
    assert counts["qualitative-harmful"] == counts["qualitative-benign"] == 8
    assert counts["jbb-harmful"] == counts["jbb-benign"] == 100
    assert counts["diverse"] > 0
