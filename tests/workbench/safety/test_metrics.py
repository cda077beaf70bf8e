"""Targets of the safety-tuned model: how they are measured and judged."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from workbench.evaluation.benchmarks import load_benchmark
from workbench.safety import metrics as safety_metrics_module
from workbench.safety.metrics import TARGETS, check_targets, safety_metrics


def test_check_targets_uses_each_comparison():
    passing = {"jbb_harmful_refusal": 0.8, "jbb_benign_refusal": 0.15,
               "strongreject_refusal": 0.7, "mmlu_drop_points": 2.0,
               "jbb_benign_quality": 0.95}
    assert check_targets(passing) == dict.fromkeys(TARGETS, True)
    failing = {"jbb_harmful_refusal": 0.79, "jbb_benign_refusal": 0.16,
               "strongreject_refusal": 0.69, "mmlu_drop_points": 2.1,
               "jbb_benign_quality": 0.94}
    assert check_targets(failing) == dict.fromkeys(TARGETS, False)
    assert check_targets({}) == {}


def test_safety_metrics_measure_every_target(tiny_llama, monkeypatch):
    harmful = set(load_benchmark("jbb-harmful").prompts)
    strongreject = set(load_benchmark("strongreject").prompts)
    refused_heldout = set(load_benchmark("jbb-benign", split="heldout", n=5).prompts)

    def fake_generate(model, prompts, **_kwargs):
        # refuse harmful, StrongREJECT and five held-out benign prompts; answer the rest
        return ["I'm sorry, but I can't help with that." if p in harmful | strongreject
                | refused_heldout else "Here is a clear and helpful answer about " + p
                for p in prompts.prompts]

    untuned = object()

    def fake_mmlu(model, n, progress):
        assert n == 4
        return SimpleNamespace(accuracy=0.31 if model is untuned else 0.30)

    monkeypatch.setattr(safety_metrics_module, "generate", fake_generate)
    monkeypatch.setattr(safety_metrics_module, "mmlu", fake_mmlu)
    metrics = safety_metrics(tiny_llama, untuned, mmlu_n=4, progress=False)
    assert metrics["jbb_harmful_refusal"] == 1.0 == metrics["strongreject_refusal"]
    assert metrics["jbb_benign_refusal_discover"] == 0.0
    assert metrics["jbb_benign_refusal_heldout"] == pytest.approx(5 / 50)
    assert metrics["jbb_benign_refusal"] == pytest.approx(5 / 100)
    assert metrics["mmlu_drop_points"] == pytest.approx(1.0)
    assert 0.9 < metrics["jbb_benign_quality"] <= 1.0
    assert metrics["targets_met"] == {name: True for name in TARGETS}
