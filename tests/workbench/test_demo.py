"""``make demo`` end to end, shortened: the safety-tuned model, a few held-out prompts."""

from __future__ import annotations

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
