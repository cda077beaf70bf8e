"""Baseline against steered: the first divergent token and the alternatives there."""

from __future__ import annotations

import math

import pytest
import torch

import workbench
from tests.helpers import PROMPTS, hooks_left
from workbench.circuit import Circuit, Neuron
from workbench.divergence import compare, divergence, first_divergence, greedy_steps
from workbench.errors import InvalidArgumentError

TOKENS = 12


def hf_greedy(model, prompt: str, circuit=None, multiplier: float = 1.0) -> list[int]:
    """The new token ids of transformers' own greedy generate, steered or not."""
    inputs = model.encode([prompt], model.prompting())
    inputs.pop("position_ids", None)
    context = workbench.steer(model, circuit, multiplier=multiplier) if circuit else None
    with torch.no_grad():
        if context is None:
            out = model.hf_model.generate(**inputs, max_new_tokens=TOKENS, do_sample=False,
                                          pad_token_id=model.tokenizer.pad_token_id)
        else:
            with context:
                out = model.hf_model.generate(**inputs, max_new_tokens=TOKENS, do_sample=False,
                                              pad_token_id=model.tokenizer.pad_token_id)
    return out[0, inputs["input_ids"].shape[1]:].tolist()


def whole_layer(model, layer: int, score: float = 1.0) -> Circuit:
    return Circuit.from_neurons([Neuron(layer, i, score) for i in range(model.d_mlp)],
                                model=model)


@pytest.mark.parametrize("a, b, expected", [
    ([], [], None), ([4, 5, 6], [4, 5, 6], None), ([4, 5, 6], [7, 5, 6], 0),
    ([4, 5, 6], [4, 5, 7], 2), ([4, 5], [4, 5, 6], 2), ([4, 5, 6], [4], 1), ([], [3], 0),
])
def test_first_divergence_on_constructed_cases(a, b, expected):
    assert first_divergence(a, b) == expected
    assert first_divergence(b, a) == expected


def test_a_case_built_to_differ_finds_the_first_differing_token(tiny_llama):
    circuit = whole_layer(tiny_llama, 1)
    for prompt in PROMPTS:
        d = divergence(tiny_llama, prompt, circuit, multiplier=-3.0, max_new_tokens=TOKENS)
        expected_baseline = hf_greedy(tiny_llama, prompt)
        expected_steered = hf_greedy(tiny_llama, prompt, circuit, -3.0)
        assert list(d.baseline_ids) == expected_baseline
        assert list(d.steered_ids) == expected_steered
        position = next(i for i, (x, y) in enumerate(zip(expected_baseline, expected_steered))
                        if x != y)
        assert d.position == position
        assert d.baseline_ids[:position] == d.steered_ids[:position]
        assert d.baseline_ids[position] != d.steered_ids[position]
        # the top token under each model is the one each completion took there
        assert d.baseline_top[0].token_id == d.baseline_ids[position]
        assert d.steered_top[0].token_id == d.steered_ids[position]
        assert len(d.baseline_top) == len(d.steered_top) == 5
        for top, side in ((d.baseline_top, "baseline"), (d.steered_top, "steered")):
            probabilities = [getattr(c, side) for c in top]
            assert probabilities == sorted(probabilities, reverse=True)
            assert all(0 < p <= 1 for c in top for p in (c.baseline, c.steered))
        assert d.baseline_token == d.baseline_tokens[position]
        table = d.aligned()
        assert table.same.tolist() == [i < position for i in range(len(table))]
    assert hooks_left(tiny_llama.hf_model) == []


def test_a_divergence_at_the_first_token(tiny_llama):
    circuit = whole_layer(tiny_llama, 1)
    found = [divergence(tiny_llama, p, circuit, multiplier=-3.0, max_new_tokens=4)
             for p in PROMPTS]
    first = [d for d in found if d.position == 0]
    assert first, [d.position for d in found]  # this seed's steering changes a first token
    for d in first:
        assert d.shared_tokens == ()
        assert d.baseline_ids[0] != d.steered_ids[0]
        assert d.baseline_ids[0] == hf_greedy(tiny_llama, d.prompt)[0]


def test_multiplier_one_reports_no_divergence(tiny_llama):
    circuit = whole_layer(tiny_llama, 1)
    for prompt in PROMPTS:
        d = divergence(tiny_llama, prompt, circuit, multiplier=1.0, max_new_tokens=TOKENS)
        assert d.position is None and not d.diverged
        assert d.baseline_ids == d.steered_ids and len(d.baseline_ids) > 0
        assert d.baseline_top == d.steered_top == ()
        assert d.shared_tokens == d.baseline_tokens
        assert d.alternatives().empty
    assert hooks_left(tiny_llama.hf_model) == []


def test_recorded_probabilities_are_the_greedy_choices(tiny_llama):
    steps = greedy_steps(tiny_llama, PROMPTS[0], max_new_tokens=TOKENS)
    assert steps.probabilities.shape == (len(steps.ids), tiny_llama.hf_model.config.vocab_size)
    assert steps.probabilities.argmax(-1).tolist() == list(steps.ids)
    torch.testing.assert_close(steps.probabilities.sum(-1), torch.ones(len(steps.ids)))
    assert workbench.generate(tiny_llama, PROMPTS[0], max_new_tokens=TOKENS)[0] == \
        tiny_llama.tokenizer.decode(list(steps.ids), skip_special_tokens=True)


def test_a_completion_that_ended_has_no_probability_there(tiny_llama):
    long = greedy_steps(tiny_llama, PROMPTS[1], max_new_tokens=6)
    short = type(long)(long.ids[:3], long.probabilities[:3])
    d = compare(tiny_llama.tokenizer, PROMPTS[1], 0.0, short, long)
    assert d.position == 3 and d.baseline_token is None
    assert d.baseline_top == ()
    assert all(math.isnan(c.baseline) for c in d.steered_top)


def test_remote_models_and_bad_arguments_are_refused(tiny_llama, tiny_tokenizer):
    circuit = whole_layer(tiny_llama, 1)
    with pytest.raises(InvalidArgumentError, match="k must be a positive integer"):
        divergence(tiny_llama, PROMPTS[0], circuit, multiplier=0.0, k=0)
    there = workbench.from_hf(tiny_llama.hf_model, tiny_tokenizer, remote="local")
    with pytest.raises(InvalidArgumentError, match="remote model"):
        divergence(there, PROMPTS[0], circuit, multiplier=0.0)
