"""Token activations: every token's value of chosen neurons, the template marked."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import workbench
from tests.helpers import PROMPTS, hooks_left, make_tiny_hf
from workbench.activations import collect
from workbench.circuit import Circuit, Neuron
from workbench.errors import InvalidArgumentError, PromptSetError
from workbench.prompts import Prompting, format_prompts
from workbench.sites import read_neurons
from workbench.tokens import COLUMNS, prompt_tokens, signed_sum, token_activations

NEURONS = [(1, 7), (0, 3), (1, 95), (0, 40)]


def by_hand(model, prompt: str, prompting: Prompting) -> torch.Tensor:
    """Every position's down-projection input of one unpadded prompt: ``[pos, n_layers, d_mlp]``."""
    seen: dict[int, torch.Tensor] = {}
    handles = [model.down_proj(layer).register_forward_pre_hook(
        lambda _m, args, layer=layer: seen.__setitem__(layer, args[0][0].detach().clone()))
        for layer in range(model.n_layers)]
    try:
        inputs = model.encode([prompt], prompting)
        with torch.no_grad():
            model.hf_model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    return torch.stack([seen[layer] for layer in range(model.n_layers)], dim=1)


def test_every_position_matches_a_plain_forward_hook_and_collect_at_the_last(tiny_model):
    prompting = tiny_model.prompting()
    frame = token_activations(tiny_model, PROMPTS, NEURONS, batch_size=3)
    assert tuple(frame.columns) == COLUMNS
    stats = collect(tiny_model, PROMPTS, keep=True, progress=False)
    assert stats.per_prompt is not None
    for i, prompt in enumerate(PROMPTS):
        rows = frame[frame.prompt == i]
        expected = by_hand(tiny_model, prompt, prompting)  # [pos, n_layers, d_mlp]
        assert rows.position.max() + 1 == expected.shape[0]
        got = rows.activation.to_numpy().reshape(expected.shape[0], len(NEURONS))
        want = np.stack([expected[:, layer, index].numpy() for layer, index in NEURONS], axis=1)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        last = [stats.per_prompt[i, layer, index].item() for layer, index in NEURONS]
        np.testing.assert_allclose(got[-1], last, rtol=1e-4, atol=1e-5)
    assert hooks_left(tiny_model.hf_model) == []


def test_the_chat_template_is_marked(tiny_llama):
    prompting = tiny_llama.prompting()
    assert prompting.chat_template
    frame = token_activations(tiny_llama, PROMPTS[:2], [(1, 7)])
    for i, prompt in enumerate(PROMPTS[:2]):
        rows = frame[frame.prompt == i]
        formatted = format_prompts(tiny_llama.tokenizer, [prompt], prompting)[0]
        assert "".join(rows.token) == formatted
        assert "".join(rows.token[~rows.in_template]).strip() == prompt
        template = "".join(rows.token[rows.in_template])
        assert "<|im_start|>user" in template and "<|im_start|>assistant" in template
        assert prompt not in template
        assert rows.in_template.iloc[0] and rows.in_template.iloc[-1]


def test_without_a_template_no_token_is_marked(tiny_llama):
    plain = Prompting(chat_template=False)
    tokens = prompt_tokens(tiny_llama.tokenizer, PROMPTS[0], plain)
    assert "".join(tokens.texts) == PROMPTS[0]
    assert not any(tokens.in_template)


def test_a_system_prompt_is_template_and_a_repeated_prompt_is_found_last(tiny_llama):
    prompting = Prompting(chat_template=True, system_prompt="Hi")
    tokens = prompt_tokens(tiny_llama.tokenizer, "Hi", prompting)
    marked = "".join(t for t, m in zip(tokens.texts, tokens.in_template) if not m)
    assert marked.strip() == "Hi"
    formatted = "".join(tokens.texts)
    # the unmarked "Hi" is the user's, after the system prompt's
    first_unmarked = tokens.prompt_positions()[0]
    assert "".join(tokens.texts[:first_unmarked]).count("Hi") == 1
    assert formatted.count("Hi") == 2


def test_a_tokenizer_without_offsets_is_decoded_token_by_token(tiny_llama):
    class NoOffsets:
        """Wraps the fast tokenizer and refuses offsets, as a slow tokenizer does."""

        def __init__(self, inner):
            self.inner = inner
            self.chat_template = inner.chat_template
            self.all_special_ids = inner.all_special_ids

        def __call__(self, text, return_offsets_mapping=False, **kwargs):
            if return_offsets_mapping:
                raise NotImplementedError("no offsets")
            return self.inner(text, **kwargs)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    prompting = tiny_llama.prompting()
    fast = prompt_tokens(tiny_llama.tokenizer, PROMPTS[2], prompting)
    slow = prompt_tokens(NoOffsets(tiny_llama.tokenizer), PROMPTS[2], prompting)
    assert slow.ids == fast.ids
    assert "".join(slow.texts) == "".join(fast.texts)
    assert slow.in_template == fast.in_template


def test_remote_local_reads_the_same_values_without_hooks(tiny_tokenizer):
    hf = make_tiny_hf("llama")
    here = workbench.from_hf(hf, tiny_tokenizer, name="tiny-llama")
    there = workbench.from_hf(hf, tiny_tokenizer, name="tiny-llama", remote="local")
    local = token_activations(here, PROMPTS, NEURONS)
    simulated = token_activations(there, PROMPTS, NEURONS)
    assert local[["prompt", "position", "token", "layer", "neuron"]].equals(
        simulated[["prompt", "position", "token", "layer", "neuron"]])
    np.testing.assert_allclose(simulated.activation, local.activation, rtol=0, atol=1e-5)
    circuit = Circuit.from_neurons([Neuron(1, 7, 1.0)], model=here)
    with workbench.steer(there, circuit, multiplier=0.0):
        assert hooks_left(there.hf_model) == []
        steered = token_activations(there, PROMPTS[:1], [(1, 7), (0, 3)])
    assert (steered[steered.layer == 1].activation == 0).all()
    assert (steered[steered.layer == 0].activation != 0).any()
    assert hooks_left(hf) == []


def test_a_steered_read_sees_the_edit_and_leaves_no_hook(tiny_llama):
    circuit = Circuit.from_neurons([Neuron(1, 7, 1.0)], model=tiny_llama)
    with workbench.steer(tiny_llama, circuit, multiplier=0.0):
        frame = token_activations(tiny_llama, PROMPTS[:2], [(1, 7), (1, 8)])
    assert hooks_left(tiny_llama.hf_model) == []
    assert (frame[frame.neuron == 7].activation == 0).all()
    assert (frame[frame.neuron == 8].activation != 0).any()


def test_read_neurons_keeps_the_order_given(tiny_llama):
    inputs = tiny_llama.encode(PROMPTS, tiny_llama.prompting())
    both = read_neurons(tiny_llama, inputs, [(1, 9), (0, 2), (1, 4)])
    assert both.shape == (len(PROMPTS), inputs["input_ids"].shape[1], 3)
    torch.testing.assert_close(both[..., 2], read_neurons(tiny_llama, inputs, [(1, 4)])[..., 0])
    torch.testing.assert_close(both[..., 1], read_neurons(tiny_llama, inputs, [(0, 2)])[..., 0])


def test_signed_sum_weights_by_score(tiny_llama):
    circuit = Circuit.from_neurons([Neuron(1, 7, 2.0), Neuron(0, 3, -0.5)], model=tiny_llama)
    frame = token_activations(tiny_llama, PROMPTS[:2], circuit)
    summed = signed_sum(frame, circuit)
    assert len(summed) == len(frame) // 2
    for _, row in summed.sample(5, random_state=0).iterrows():
        cell = frame[(frame.prompt == row.prompt) & (frame.position == row.position)]
        a = cell[cell.layer == 1].activation.item()
        b = cell[cell.layer == 0].activation.item()
        assert row.value == pytest.approx(2.0 * a - 0.5 * b, rel=1e-5)
    with pytest.raises(InvalidArgumentError, match="no activations of 1"):
        signed_sum(frame, [(1, 8)])


def test_bad_arguments_say_what_is_wrong(tiny_llama):
    with pytest.raises(InvalidArgumentError, match="not a neuron of this model"):
        token_activations(tiny_llama, PROMPTS, [(5, 0)])
    with pytest.raises(InvalidArgumentError, match="listed twice"):
        token_activations(tiny_llama, PROMPTS, [(1, 2), (1, 2)])
    with pytest.raises(PromptSetError, match="at least one prompt"):
        token_activations(tiny_llama, [], [(1, 2)])
    with pytest.raises(InvalidArgumentError, match="at least one neuron"):
        token_activations(tiny_llama, PROMPTS, [])
