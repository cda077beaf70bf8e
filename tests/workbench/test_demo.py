"""The demo end to end, shortened: `make demo` on the real 0.5B model, and the teaching
model that `python -m workbench.demo` runs by default; a few held-out prompts each."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench import demo
from workbench.circuit import Circuit

pytestmark = pytest.mark.integration


def test_demo_discovers_measures_and_steers(tmp_path, capsys):
    out = tmp_path / "circuit.json"
    demo.main(["--out", str(out), "--n", "4", "--max-new-tokens", "8"])
    printed = capsys.readouterr().out
    circuit = Circuit.load(out)
    assert circuit.model["name"] == demo.DEMO_MODEL and len(circuit) == 46
    for condition in ("unchanged (x1)", "circuit ablated (x0)", "random control ablated (x0)"):
        assert printed.count(condition) == 2, condition  # once per held-out half
    assert all(f"multiplier {m}" in printed for m in ("0 (ablated)", "1 (unchanged)",
                                                      "2 (amplified)"))


def makefile_demo_args() -> list[str]:
    """``DEMO_ARGS`` of the Makefile, the arguments ``make demo`` passes to the demo."""
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    definition = makefile.split("DEMO_ARGS ?=", 1)[1].replace("\\\n", " ")
    return definition.split("\n", 1)[0].split()


def test_make_demo_runs_on_the_real_model(tmp_path, capsys):
    """``make demo``'s own arguments, with fewer prompts and tokens (the last value of an
    option wins): the refusal-filtered contrast on Qwen2.5-Coder-0.5B-Instruct, 1% of its
    MLP neurons."""
    out = tmp_path / "circuit.json"
    demo.main([*makefile_demo_args(), "--out", str(out), "--n", "4", "--max-new-tokens", "8"])
    printed = capsys.readouterr().out
    circuit = Circuit.load(out)
    assert circuit.model["name"] == "qwen2.5-coder-0.5b-instruct"
    assert len(circuit) == round(0.01 * 24 * 4864)  # 1,167 of the 116,736 MLP neurons
    assert "of 50 positive prompts (is_refusal)" in printed  # the contrast was filtered
    for condition in ("unchanged (x1)", "circuit ablated (x0)", "random control ablated (x0)"):
        assert printed.count(condition) == 2, condition
