"""The one module that reads and changes activation sites, and the rule that keeps it so."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import workbench
from tests.helpers import PROMPTS, hooks_left
from workbench.errors import SteeringError
from workbench.sites import Edit, Projection, edited, read_last_positions, read_last_token

ROOT = Path(__file__).resolve().parents[2]

#: Ways of reaching inside a forward pass: PyTorch hooks, nnsight traces and envoys, and a
#: module's forward replaced (``layer.forward = ...``, ``setattr(layer, "forward", ...)``).
REACHING_IN = re.compile(r"register_forward(_pre)?_hook|\.nnsight\.(trace|generate)\(|"
                         r"\.envoy\(|\.(input|output)\[|\.forward\s*=[^=]|"
                         r"setattr\([^,]+,\s*[\"']forward[\"']")


def test_only_sites_reaches_inside_a_forward_pass():
    offenders = []
    for path in sorted([*ROOT.glob("workbench/**/*.py"), *ROOT.glob("widgets/**/*.py")]):
        if path.name == "sites.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if REACHING_IN.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == [], "read or change activations through workbench.sites:\n" + \
        "\n".join(offenders)


def test_an_edit_acts_in_the_steps_of_its_positions():
    assert [Edit(positions=p).applies_at(0) for p in ("all", "prompt", "generated")] == \
        [True, True, False]
    assert [Edit(positions=p).applies_at(2) for p in ("all", "prompt", "generated")] == \
        [True, False, True]
    with pytest.raises(SteeringError, match="positions must be one of"):
        Edit(positions="everywhere")


def test_reading_matches_a_plain_forward_pass(tiny_model):
    inputs = tiny_model.encode(PROMPTS, tiny_model.prompting())
    with torch.no_grad():
        hidden = tiny_model.hf_model(**inputs, output_hidden_states=True).hidden_states
    residual = read_last_token(tiny_model, inputs, "residual")  # [batch, layers, d_model]
    torch.testing.assert_close(residual[:, 0], hidden[0][:, -1], rtol=0, atol=1e-6)
    picked = read_last_token(tiny_model, inputs, "input", layers=[1])
    assert picked.shape == (len(PROMPTS), 1, tiny_model.d_mlp)
    torch.testing.assert_close(picked[:, 0], read_last_token(tiny_model, inputs, "input")[:, 1])


def test_reading_the_last_positions_matches_a_plain_forward_pass(tiny_model):
    inputs = tiny_model.encode(PROMPTS, tiny_model.prompting())
    with torch.no_grad():
        hidden = tiny_model.hf_model(**inputs, output_hidden_states=True).hidden_states
    residual = read_last_positions(tiny_model, inputs, "residual", 3)
    assert residual.shape == (len(PROMPTS), 3, tiny_model.n_layers,
                              tiny_model.d_model)
    torch.testing.assert_close(residual[:, :, 0], hidden[0][:, -3:], rtol=0, atol=1e-6)
    torch.testing.assert_close(residual[:, -1], read_last_token(tiny_model, inputs, "residual"))
    picked = read_last_positions(tiny_model, inputs, "input", 2, layers=[1])
    assert picked.shape == (len(PROMPTS), 2, 1, tiny_model.d_mlp)
    torch.testing.assert_close(picked[:, -1, 0],
                               read_last_token(tiny_model, inputs, "input", layers=[1])[:, 0])
    with pytest.raises(SteeringError, match="n_positions must be a positive int"):
        read_last_positions(tiny_model, inputs, "residual", 0)


def test_an_edit_is_hooked_for_the_block_and_removed_after(tiny_llama):
    factor = torch.zeros(tiny_llama.d_mlp)
    inputs = tiny_llama.encode(PROMPTS, tiny_llama.prompting())
    with edited(tiny_llama, Edit(scales={1: factor})):
        assert hooks_left(tiny_llama.hf_model) != []
        zeroed = read_last_token(tiny_llama, inputs, "input", layers=[1])
    assert hooks_left(tiny_llama.hf_model) == []
    assert zeroed.abs().max() == 0
    assert read_last_token(tiny_llama, inputs, "input", layers=[1]).abs().max() > 0


def test_bad_sites_are_refused(tiny_llama):
    inputs = tiny_llama.encode(PROMPTS, tiny_llama.prompting())
    with pytest.raises(SteeringError, match="site must be one of"):
        read_last_token(tiny_llama, inputs, "attention")


def test_the_public_steering_api_builds_edits(tiny_llama):
    circuit = workbench.Circuit.from_neurons([(1, 3, 1.0), (0, 5, -1.0)], model=tiny_llama)
    edit = workbench.steering.circuit_edit(tiny_llama, circuit, 0.5, signs="positive")
    assert edit.layers() == [1]
    assert edit.scales[1][3] == 0.5 and edit.scales[1].sum() == tiny_llama.d_mlp - 0.5


def test_phase_counts_a_pass_that_continues_the_prompt_as_prompt():
    from transformers import DynamicCache

    from workbench.sites import Phase, continuing_prompt

    def cache_of(length: int) -> DynamicCache:
        cache = DynamicCache()
        cache.update(torch.zeros(2, 1, length, 4), torch.zeros(2, 1, length, 4), 0)
        return cache

    phase = Phase()
    phase.hook(None, (), {"input_ids": torch.ones(1, 3, dtype=torch.long)})  # the prefix
    assert phase.prompt_length == 3
    rest = {"input_ids": torch.ones(2, 4, dtype=torch.long), "cache": cache_of(3)}
    phase.hook(None, (), rest)  # without the mark: four generated tokens
    assert phase.generated.tolist() == [True] * 4
    with continuing_prompt(rest["cache"]):
        phase.hook(None, (), rest)
    assert phase.generated.tolist() == [False] * 4 and phase.prompt_length == 7
    phase.hook(None, (), {"input_ids": torch.ones(2, 1, dtype=torch.long),
                          "cache": cache_of(7)})  # the next decode step
    assert phase.generated.tolist() == [True]


def test_a_new_prompt_on_an_empty_cache_is_a_prompt_even_if_it_starts_like_the_last_pass():
    from transformers import DynamicCache

    from workbench.sites import Phase

    phase = Phase()
    phase.hook(None, (), {"input_ids": torch.tensor([[1, 2, 3]]), "cache": DynamicCache()})
    cache = DynamicCache()
    cache.update(torch.zeros(1, 1, 3, 4), torch.zeros(1, 1, 3, 4), 0)
    phase.hook(None, (), {"input_ids": torch.tensor([[7]]), "cache": cache})  # decode: 7
    assert phase.generated.tolist() == [True]
    phase.hook(None, (), {"input_ids": torch.tensor([[7, 8, 9, 10, 11]]),
                          "cache": DynamicCache()})  # another call, its prompt starts with 7
    assert phase.prompt_length == 5 and phase.generated.tolist() == [False] * 5


@pytest.mark.parametrize("direction", [torch.tensor([3.0, 4.0]), torch.zeros(2),
                                       torch.eye(2)])
def test_a_projection_needs_a_unit_vector(direction):
    with pytest.raises(SteeringError, match="unit vector"):
        Projection(direction, keep=0.0)
    assert Projection(torch.tensor([0.6, 0.8]), keep=0.0).keep == 0.0
