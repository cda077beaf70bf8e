"""Single neurons: per-prompt activations against collect(), output directions, tokens."""

from __future__ import annotations

import pytest
import torch
from tests.helpers import PROMPTS, hooks_left

from workbench.activations import collect
from workbench.errors import InvalidArgumentError, PromptSetError
from workbench.neurons import (check_neuron, neuron_activations, output_direction,
                               promoted_tokens)


def test_activations_match_collect_for_every_architecture(tiny_model):
    stats = collect(tiny_model, PROMPTS, keep=True, progress=False)  # per_prompt [n, L, d_mlp]
    neurons = [(1, 50), (0, 3), (1, 7)]
    got = neuron_activations(tiny_model, PROMPTS, neurons, batch_size=3)  # [n, 3]
    expected = torch.stack([stats.per_prompt[:, layer, index] for layer, index in neurons],
                           dim=1)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert not hooks_left(tiny_model.hf_model)


def test_activations_follow_the_prompting(tiny_llama):
    plain = tiny_llama.prompting(chat_template=False)
    stats = collect(tiny_llama, PROMPTS, prompting=plain, keep=True, progress=False)
    got = neuron_activations(tiny_llama, PROMPTS, [(0, 5)], prompting=plain)
    torch.testing.assert_close(got[:, 0], stats.per_prompt[:, 0, 5], rtol=1e-4, atol=1e-5)


def test_hooks_are_removed_after_an_error(tiny_llama):
    with pytest.raises(PromptSetError):
        neuron_activations(tiny_llama, ["x " * 500], [(0, 1)])
    assert not hooks_left(tiny_llama.hf_model)


@pytest.mark.parametrize("bad", [(2, 0), (0, 96), (-1, 0), (0, 1.5)])
def test_bad_neurons_are_refused(tiny_llama, bad):
    with pytest.raises(InvalidArgumentError, match="neuron|integer"):
        check_neuron(tiny_llama, *bad)


def test_bad_prompts_are_refused(tiny_llama):
    with pytest.raises(PromptSetError):
        neuron_activations(tiny_llama, [], [(0, 1)])
    with pytest.raises(PromptSetError):
        neuron_activations(tiny_llama, "one string", [(0, 1)])


def test_output_direction_is_the_down_projection_column(tiny_model):
    direction = output_direction(tiny_model, 1, 7)
    module = tiny_model.down_proj(1)
    d_model = tiny_model.hf_model.get_output_embeddings().weight.shape[1]
    assert direction.shape == (d_model,)
    unit = torch.zeros(1, 1, tiny_model.d_mlp)
    unit[..., 7] = 1.0
    bias = getattr(module, "bias", None)
    with torch.no_grad():
        out = module(unit)[0, 0] - (bias if bias is not None else 0)  # [d_model]
    torch.testing.assert_close(direction, out.float(), rtol=1e-5, atol=1e-6)


def test_promoted_tokens_rank_the_direct_logit_effect(tiny_llama):
    table = promoted_tokens(tiny_llama, 0, 3, k=5)
    assert list(table.columns) == ["rank", "token", "token_id", "logit"]
    logits = tiny_llama.hf_model.get_output_embeddings().weight.detach() \
        @ output_direction(tiny_llama, 0, 3)  # [vocab]
    assert table["token_id"].tolist() == logits.topk(5).indices.tolist()
    assert table["logit"].is_monotonic_decreasing
    assert table["token"][0] == tiny_llama.tokenizer.decode([table["token_id"][0]])
    lowered = promoted_tokens(tiny_llama, 0, 3, k=5, demoted=True)
    assert lowered["token_id"].tolist() == (-logits).topk(5).indices.tolist()
    assert lowered["logit"].is_monotonic_increasing
    with pytest.raises(InvalidArgumentError, match="k must be"):
        promoted_tokens(tiny_llama, 0, 3, k=0)
