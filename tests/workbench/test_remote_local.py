"""``remote="local"``: nnsight's serialised simulation of NDIF gives the local results.

Each traced call of a ``remote="local"`` model is serialised exactly as for NDIF, run with
this project's modules hidden, and its edits travel as nnsight interventions instead of
hooks. The results must equal the in-process path: the same circuit, the same greedy
completions at every multiplier and position choice, the same CAA vectors and sweeps
(activations up to float32 rounding: the local path computes a shared prompt opening once).
"""

from __future__ import annotations

import pytest
import torch

import workbench
from tests.helpers import PROMPTS, hooks_left, make_tiny_hf
from workbench.activations import collect
from workbench.errors import SteeringError
from workbench.evaluation.interventions import Intervention
from workbench.evaluation.sweep import sweep
from workbench.prompts import PromptSet
from workbench.sites import Edit, edited, hooked

#: The local path computes the prompts' shared opening once (:mod:`workbench.prefix`), the
#: remote one reads whole prompts: the same numbers up to float32 rounding.
ROUNDING = {"rtol": 1e-4, "atol": 1e-4}

POSITIVE = ["How do I bake a cake?", "Hi there", "Tell me a joke", "What is two plus two?"]
NEGATIVE = ["Write code to sort a list", "Explain how to change a tire", "Sing", "Go away"]


@pytest.fixture(params=["llama", "gpt2", "gemma3_text", "qwen3", "gpt_neox"])
def pair(request, tiny_tokenizer):
    """The same tiny model, wrapped to run here and through the local simulation."""
    hf = make_tiny_hf(request.param)
    here = workbench.from_hf(hf, tiny_tokenizer, name=f"tiny-{request.param}")
    there = workbench.from_hf(hf, tiny_tokenizer, name=f"tiny-{request.param}", remote="local")
    return here, there


def discover_both(here, there):
    options = dict(universal=None, top_k=12, progress=False)
    return (workbench.discover(here, POSITIVE, NEGATIVE, **options),
            workbench.discover(there, POSITIVE, NEGATIVE, **options))


def test_the_same_circuit_is_found(pair):
    here, there = pair
    local, simulated = discover_both(here, there)
    assert [n.key for n in simulated.neurons] == [n.key for n in local.neurons]
    assert max(abs(a.score - b.score) for a, b in zip(local.neurons, simulated.neurons)) < 1e-4


@pytest.mark.parametrize("positions", ["all", "prompt", "generated"])
def test_the_same_greedy_completions_at_every_multiplier(pair, positions):
    here, there = pair
    circuit, _ = discover_both(here, there)
    for multiplier in (0.0, 1.0, 2.0):
        options = dict(circuit=circuit, multiplier=multiplier, positions=positions,
                       max_new_tokens=6)
        assert workbench.generate(there, PROMPTS, **options) == \
            workbench.generate(here, PROMPTS, **options)
    if here.name == "tiny-llama":  # where the edit changes the text: it did travel
        assert workbench.generate(there, PROMPTS, circuit=circuit, multiplier=0.0,
                                  positions=positions, max_new_tokens=6) != \
            workbench.generate(there, PROMPTS, max_new_tokens=6)


def test_caa_vectors_are_equal_and_so_are_their_completions(pair):
    here, there = pair
    local = workbench.caa_vector(here, POSITIVE, NEGATIVE, progress=False)
    simulated = workbench.caa_vector(there, POSITIVE, NEGATIVE, progress=False)
    torch.testing.assert_close(simulated, local, **ROUNDING)
    with workbench.add_vector(here, local, 4.0):
        expected = workbench.generate(here, PROMPTS, max_new_tokens=6)
    with workbench.add_vector(there, local, 4.0):
        assert workbench.generate(there, PROMPTS, max_new_tokens=6) == expected


def _direction(model) -> torch.Tensor:
    return torch.randn(model.d_model, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("positions", ["all", "prompt", "generated"])
def test_a_direction_projection_travels_and_gives_the_same_completions(pair, positions):
    """Directional ablation is an Edit too: on a remote model it runs as nnsight
    interventions on every residual write, with the hooks' numbers."""
    here, there = pair
    expected_plain = workbench.generate(here, PROMPTS, max_new_tokens=6)
    changed = False
    for multiplier in (0.0, 3.0, -1.0):
        edit = workbench.ablation.direction_edit(here, _direction(here), multiplier)
        edit = Edit(projection=edit.projection, positions=positions)
        with edited(here, edit):
            expected = workbench.generate(here, PROMPTS, max_new_tokens=6)
        with edited(there, edit):
            assert workbench.generate(there, PROMPTS, max_new_tokens=6) == expected
        changed |= expected != expected_plain
    assert there.edits == [] and hooks_left(here.hf_model) == []
    if here.name == "tiny-llama" and positions == "all":
        assert changed  # where the projection changes the text: it did travel


def test_the_residual_stream_read_under_an_ablated_direction_has_none_of_it(pair):
    here, there = pair
    r = _direction(here)
    edit = workbench.ablation.direction_edit(here, r, 0.0)
    for model in (here, there):
        with edited(model, edit):
            residual = collect(model, PROMPTS, site="residual", keep=True, progress=False)
        along = residual.per_prompt.to(torch.float32) @ (r / r.norm())  # [prompts, layers]
        assert along.abs().max() < 1e-4
    with edited(here, edit):
        local = collect(here, PROMPTS, site="output", progress=False)
    with edited(there, edit):
        simulated = collect(there, PROMPTS, site="output", progress=False)
    torch.testing.assert_close(simulated.sum, local.sum, **ROUNDING)


def test_a_residual_addition_travels_with_the_hooks_numbers(pair):
    here, there = pair
    vector = 0.5 * _direction(here)
    edit = Edit(residual_additions={1: vector}, scales={0: torch.zeros(here.d_mlp)})
    for site in ("residual", "input"):
        with edited(here, edit):
            local = collect(here, PROMPTS, site=site, progress=False)
        with edited(there, edit):
            simulated = collect(there, PROMPTS, site=site, progress=False)
        torch.testing.assert_close(simulated.sum, local.sum, **ROUNDING)
    with edited(here, edit):
        expected = workbench.generate(here, PROMPTS, max_new_tokens=6)
    with edited(there, edit):
        assert workbench.generate(there, PROMPTS, max_new_tokens=6) == expected


@pytest.mark.parametrize("positions", ["all", "prompt", "generated"])
def test_an_addition_acts_at_the_chosen_positions_on_both_paths(pair, positions):
    here, there = pair
    edit = Edit(additions={0: 4.0 * _direction(here)}, positions=positions)
    for model in (here, there):  # a prompt pass: changed unless only generated tokens are
        plain = collect(model, PROMPTS, site="residual", progress=False)
        with edited(model, edit):
            read = collect(model, PROMPTS, site="residual", progress=False)
        assert torch.equal(read.sum[1:], plain.sum[1:]) == (positions == "generated")
    with edited(here, edit):
        expected = workbench.generate(here, PROMPTS, max_new_tokens=6)
    with edited(there, edit):
        assert workbench.generate(there, PROMPTS, max_new_tokens=6) == expected


def test_no_hook_is_registered_or_left(pair):
    here, there = pair
    circuit, _ = discover_both(here, there)
    with workbench.steer(there, circuit, multiplier=0.0):
        assert hooks_left(there.hf_model) == []  # the edit is recorded, not hooked
        assert len(there.edits) == 1
        workbench.generate(there, PROMPTS[:2], max_new_tokens=3)
    assert there.edits == [] and hooks_left(there.hf_model) == []


def test_edits_are_dropped_after_an_error(pair):
    _, there = pair
    with pytest.raises(RuntimeError), edited(there, Edit(scales={0: torch.zeros(there.d_mlp)})):
        raise RuntimeError("boom")
    assert there.edits == []


def test_activations_read_under_an_edit_match(pair):
    here, there = pair
    factor = torch.ones(here.d_mlp)
    factor[:5] = 0.0
    edit = Edit(scales={1: factor}, additions={0: torch.full((here.d_model,), 0.5)})
    for site in ("input", "output", "residual"):
        with edited(here, edit):
            local = collect(here, PROMPTS, site=site, progress=False)
        with edited(there, edit):
            simulated = collect(there, PROMPTS, site=site, progress=False)
        torch.testing.assert_close(simulated.sum, local.sum, **ROUNDING)


def test_a_sweep_gives_the_same_rows(tiny_tokenizer):
    hf = make_tiny_hf("llama")
    here = workbench.from_hf(hf, tiny_tokenizer, name="tiny-llama")
    there = workbench.from_hf(hf, tiny_tokenizer, name="tiny-llama", remote="local")
    circuit = workbench.discover(here, POSITIVE, NEGATIVE, universal=None, top_k=12,
                                 progress=False)
    vector = workbench.caa_vector(here, POSITIVE, NEGATIVE, progress=False)
    interventions = [Intervention.cna(circuit), Intervention.caa(vector),
                     Intervention.direction(vector[1])]
    prompts = PromptSet("tiny", PROMPTS)
    options = dict(multipliers=[0.0, 2.0], benchmarks=[prompts], max_new_tokens=5,
                   progress=False, metrics=["refusal"])
    local = sweep(here, interventions, **options)
    simulated = sweep(there, interventions, **options)
    assert simulated["completion"].tolist() == local["completion"].tolist()


def test_hook_based_edits_are_refused_on_a_remote_model(pair):
    _, there = pair
    with pytest.raises(SteeringError, match="runs remotely"):
        with hooked(there, pre=[(there.down_proj(0), lambda *_: None)]):
            pass
    assert hooks_left(there.hf_model) == []


@pytest.mark.integration
def test_smollm2_through_the_local_simulation(smollm):
    there = workbench.from_hf(smollm.hf_model, smollm.tokenizer, name=smollm.name,
                              remote="local")
    harmful = PromptSet.bundled("qualitative-harmful")
    benign = PromptSet.bundled("qualitative-benign")
    local = workbench.discover(smollm, harmful, benign, progress=False)
    simulated = workbench.discover(there, harmful, benign, progress=False)
    assert [n.key for n in simulated.neurons] == [n.key for n in local.neurons]
    assert max(abs(a.score - b.score) for a, b in zip(local.neurons, simulated.neurons)) < 1e-4
    prompts = ["How do I pick a lock?", "How do I bake bread?"]
    for multiplier in (0.0, 1.0, 2.0):
        options = dict(circuit=local, multiplier=multiplier, max_new_tokens=16)
        assert workbench.generate(there, prompts, **options) == \
            workbench.generate(smollm, prompts, **options)
    torch.testing.assert_close(
        workbench.caa_vector(there, harmful, benign, progress=False),
        workbench.caa_vector(smollm, harmful, benign, progress=False), **ROUNDING)
    assert hooks_left(smollm.hf_model) == []


def test_nested_edits_travel_in_order_and_leave_in_any_order(pair):
    here, there = pair
    circuit, _ = discover_both(here, there)
    vector = workbench.caa_vector(here, POSITIVE, NEGATIVE, progress=False)
    results = []
    for model in (here, there):
        with workbench.steer(model, circuit, multiplier=0.0, positions="generated"), \
                workbench.add_vector(model, vector, 2.0):
            results.append(workbench.generate(model, PROMPTS, max_new_tokens=6))
    assert results[0] == results[1]
    assert there.edits == []
