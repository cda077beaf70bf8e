"""A shared prompt prefix computed once gives what whole prompts give, steered or not."""

from __future__ import annotations

import pytest
import torch
from tests.helpers import PROMPTS, hooks_left, make_tiny_hf, pass_shapes

import workbench
from workbench import prefix as prefixes
from workbench.activations import collect
from workbench.prefix import Prefix, shared_prefix, supports_prefix
from workbench.prompts import Prompting
from workbench.sites import _CONTINUING_PROMPTS


@pytest.mark.parametrize("prompts, expected", [
    ([[1, 2, 3], [1, 2, 3]], [1, 2]),  # identical prompts keep one token each
    ([[1, 2, 3]], []),  # a single prompt: nothing to share
    ([[1, 2], [3, 2]], []),
    ([[4, 4, 4, 9], [4, 4, 4, 4, 4], [4, 4, 4, 4]], [4, 4, 4]),
])
def test_shared_prefix(prompts, expected):
    assert shared_prefix(prompts) == expected


def collected(model, **options) -> torch.Tensor:
    """Every prompt's last-token activations ``[n, n_layers, d_mlp]``."""
    return collect(model, PROMPTS, batch_size=2, keep=True, progress=False,
                   **options).per_prompt


def test_collection_computes_the_chat_template_opening_once(tiny_llama, monkeypatch):
    encoded = tiny_llama.encode(PROMPTS, tiny_llama.prompting())
    ids = [row[mask.bool()].tolist()
           for row, mask in zip(encoded["input_ids"], encoded["attention_mask"])]
    opening = shared_prefix(ids)
    assert len(opening) >= prefixes.MIN_SHARED_PREFIX
    shapes = pass_shapes(tiny_llama, lambda: collect(tiny_llama, PROMPTS, batch_size=2,
                                                     progress=False))
    assert shapes[0] == (1, len(opening))  # the opening, once
    lengths = sorted(len(row) for row in ids)
    assert shapes[1] == (2, lengths[1] - len(opening))  # then only the rest of each batch
    shared = collected(tiny_llama)
    monkeypatch.setattr(prefixes, "MIN_SHARED_PREFIX", 10**6)  # never share
    shapes = pass_shapes(tiny_llama, lambda: collect(tiny_llama, PROMPTS, batch_size=2,
                                                     progress=False))
    assert shapes[0] == (2, lengths[1])
    whole = collected(tiny_llama)
    assert whole.abs().max() > 1e-3
    torch.testing.assert_close(shared, whole, rtol=1e-4, atol=1e-5)
    assert not hooks_left(tiny_llama.hf_model)
    assert not list(_CONTINUING_PROMPTS)  # no cache is left marked as a prompt


@pytest.mark.parametrize("chat_template", [False, True])
def test_every_architecture_reads_the_same_with_the_opening_shared(tiny_model, chat_template,
                                                                   monkeypatch):
    prompting = Prompting(chat_template=chat_template)
    shared = collect(tiny_model, PROMPTS, prompting=prompting, batch_size=3, keep=True,
                     progress=False)
    monkeypatch.setattr(prefixes, "MIN_SHARED_PREFIX", 10**6)  # whole prompts
    whole = collect(tiny_model, PROMPTS, prompting=prompting, batch_size=3, keep=True,
                    progress=False)
    assert whole.per_prompt.abs().max() > 1e-3
    torch.testing.assert_close(shared.per_prompt, whole.per_prompt, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(shared.mean, whole.mean, rtol=1e-4, atol=1e-5)
    assert not hooks_left(tiny_model.hf_model)


def test_steering_acts_on_the_shared_opening_too(tiny_llama, monkeypatch):
    circuit = workbench.Circuit.from_neurons([(0, 3, 1.0), (0, 7, -1.0), (1, 5, 1.0)],
                                             model=tiny_llama)
    with workbench.steer(tiny_llama, circuit, multiplier=0.0):
        shared = collected(tiny_llama)
    monkeypatch.setattr(prefixes, "MIN_SHARED_PREFIX", 10**6)
    with workbench.steer(tiny_llama, circuit, multiplier=0.0):
        whole = collected(tiny_llama)
    unsteered = collected(tiny_llama)
    assert (whole[:, 0, 3] == 0).all()  # the ablated neuron reads zero at the last token
    assert not torch.allclose(whole, unsteered, atol=1e-3)  # and the ablation moved the rest
    torch.testing.assert_close(shared, whole, rtol=1e-4, atol=1e-5)
    assert not hooks_left(tiny_llama.hf_model)


def test_a_sliding_window_model_is_read_whole(tiny_tokenizer):
    model = workbench.from_hf(make_tiny_hf("mistral", sliding_window=8), tiny_tokenizer,
                              name="tiny-sliding")
    assert not supports_prefix(model)
    shapes = pass_shapes(model, lambda: collect(model, PROMPTS, batch_size=4, progress=False))
    assert len(shapes) == 1 and shapes[0][0] == 4


def test_an_empty_prefix_shares_nothing(tiny_llama):
    prefix = Prefix.prefill(tiny_llama, [[5, 6, 7], [8, 9]])
    assert len(prefix) == 0 and prefix.kv == []
    ids, mask = prefix.left_padded([[5, 6, 7], [8, 9]], pad=0, device="cpu")
    assert ids.tolist() == [[5, 6, 7], [0, 8, 9]]
    assert mask.tolist() == [[1, 1, 1], [0, 1, 1]]
