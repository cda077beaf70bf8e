"""The KL drift on harmless prompts: exact zero unchanged, a hand-computed value changed,
the positions an intervention acts on, and no hook left behind."""

from __future__ import annotations

import pytest
import torch
from tests.helpers import PROMPTS, hooks_left

from workbench import Circuit, Neuron
from workbench.errors import InvalidArgumentError
from workbench.evaluation.drift import HarmlessDrift, kl_rows
from workbench.evaluation.interventions import Intervention
from workbench.steering import steer


@pytest.fixture
def circuit(tiny_llama) -> Circuit:
    return Circuit.from_neurons([Neuron(0, i, 1.0) for i in range(0, 60, 2)]
                                + [Neuron(1, i, -1.0) for i in range(1, 61, 2)],
                                model=tiny_llama)


def test_the_unchanged_model_drifts_exactly_zero(tiny_model):
    drift = HarmlessDrift(tiny_model, PROMPTS, tokens=3, batch_size=2)
    values = drift.per_prompt()
    assert values.shape == (len(PROMPTS),) and torch.all(values == 0)
    assert drift.kl() == 0.0
    assert drift.describe()["n"] == len(PROMPTS) and drift.describe()["tokens"] == 3


def test_the_drift_is_the_kl_of_a_teacher_forced_pass_computed_by_hand(tiny_llama, circuit):
    """One prompt at a time, no padding, no cache: the baseline's greedy tokens fed whole."""
    tokens = 4
    drift = HarmlessDrift(tiny_llama, PROMPTS, tokens=tokens, batch_size=3)
    with steer(tiny_llama, circuit, multiplier=3.0):
        measured = drift.per_prompt()
    prompting = tiny_llama.prompting()
    for row, prompt in enumerate(PROMPTS):
        ids = tiny_llama.encode([prompt], prompting)["input_ids"]  # [1, pos]
        for _ in range(tokens - 1):  # the unchanged greedy continuation
            logits = tiny_llama.hf_model(input_ids=ids).logits  # [1, pos, vocab]
            ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        start = ids.shape[1] - tokens  # logits here predict the first new token
        with torch.no_grad():
            before = tiny_llama.hf_model(input_ids=ids).logits[0, start:].log_softmax(-1)
            with steer(tiny_llama, circuit, multiplier=3.0):
                after = tiny_llama.hf_model(input_ids=ids).logits[0, start:].log_softmax(-1)
        expected = kl_rows(before, after).mean()  # over the 4 positions
        assert float(measured[row]) == pytest.approx(float(expected), rel=1e-3, abs=1e-6)
    assert float(measured.min()) > 0


def test_an_intervention_on_generated_tokens_is_measured_where_it_acts(tiny_llama, circuit):
    """The first position is the prompt's; the continuation is fed as generated tokens."""
    first_only = HarmlessDrift(tiny_llama, PROMPTS, tokens=1)
    along = HarmlessDrift(tiny_llama, PROMPTS, tokens=3)
    generated = Intervention.cna(circuit, positions="generated")
    with generated.apply(tiny_llama, 0.0):
        assert first_only.kl() == 0.0
        assert along.kl() > 0.0
    prompt_only = Intervention.cna(circuit, positions="prompt")
    with prompt_only.apply(tiny_llama, 0.0):
        assert first_only.kl() > 0.0


def test_no_hook_is_left_and_bad_arguments_are_refused(tiny_llama, circuit):
    drift = HarmlessDrift(tiny_llama, PROMPTS, tokens=2)
    with Intervention.cna(circuit).apply(tiny_llama, 0.0):
        assert drift.kl() > 0.0
    assert hooks_left(tiny_llama.hf_model) == []
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InvalidArgumentError, match="tokens"):
            HarmlessDrift(tiny_llama, PROMPTS, tokens=bad)


def test_the_default_prompts_are_a_seeded_sample_of_the_harmless_set(tiny_llama):
    a = HarmlessDrift(tiny_llama, n=5, tokens=1, seed=1)
    b = HarmlessDrift(tiny_llama, n=5, tokens=1, seed=1)
    assert a.prompts.prompts == b.prompts.prompts and len(a.prompts) == 5
    assert a.describe()["prompts"].startswith("diverse")


def test_kl_rows_is_zero_for_equal_rows_and_positive_otherwise():
    p = torch.tensor([[0.2, 0.3, 0.5]]).log()
    q = torch.tensor([[0.5, 0.3, 0.2]]).log()
    expected = sum(a * (torch.tensor(a).log() - torch.tensor(b).log())
                   for a, b in zip([0.2, 0.3, 0.5], [0.5, 0.3, 0.2]))
    assert float(kl_rows(p, p)[0]) == 0.0
    assert float(kl_rows(p, q)[0]) == pytest.approx(float(expected))
