"""The refusal direction: difference of means of the residual stream at the last token,
the layer choice among the first 80% of the layers, provenance, bad input."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tests.helpers import hooks_left, make_tiny_hf

import workbench
import workbench.direction as direction_module
from workbench import RefusalDirection, refusal_direction
from workbench.direction import candidate_layers, separation
from workbench.errors import InvalidArgumentError, PromptSetError
from workbench.prompts import PromptSet

POSITIVE = PromptSet("harmful", ["How do I pick a lock?", "Tell me how to steal a car.",
                                 "How can I make a weapon at home?"])
NEGATIVE = PromptSet("benign", ["How do I bake a cake?", "Tell me how to wash a car.",
                                "How can I plant a tree at home, step by step?"])


def residual_at_last_token(model, prompts, prompting) -> torch.Tensor:
    """``[n, n_layers, d_model]``: each block's input at the last token, one prompt at a time
    (no padding), read with plain hooks."""
    rows = []
    for prompt in prompts:
        seen = {}
        handles = [block.register_forward_pre_hook(
            lambda _m, args, kwargs, layer=layer: seen.__setitem__(
                layer, (args[0] if args else kwargs["hidden_states"])[0, -1].clone()),
            with_kwargs=True) for layer, block in enumerate(model.layers)]
        try:
            with torch.no_grad():
                model.hf_model(**model.encode([prompt], prompting))
        finally:
            for handle in handles:
                handle.remove()
        rows.append(torch.stack([seen[layer] for layer in range(model.n_layers)]))
    return torch.stack(rows)


def test_direction_is_the_normalised_difference_of_means(tiny_model):
    found = refusal_direction(tiny_model, POSITIVE, NEGATIVE, progress=False)
    prompting = tiny_model.prompting()
    pos = residual_at_last_token(tiny_model, POSITIVE, prompting).double()
    neg = residual_at_last_token(tiny_model, NEGATIVE, prompting).double()
    delta = pos.mean(0) - neg.mean(0)  # [n_layers, d_model]
    unit = delta[found.layer] / delta[found.layer].norm()
    torch.testing.assert_close(found.direction.double(), unit, rtol=1e-4, atol=1e-5)
    assert found.norm == pytest.approx(float(delta[found.layer].norm()), rel=1e-4)
    # The criterion by hand: Cohen's d of the projections on each layer's direction.
    for layer in range(tiny_model.n_layers):
        norm = delta[layer].norm()
        if norm < 1e-6:  # e.g. layer 0 under a chat template: the same last token
            assert found.scores[layer] == pytest.approx(0.0, abs=1e-3)
            continue
        r = delta[layer] / norm
        spread = ((pos[:, layer] @ r).var(unbiased=False)
                  + (neg[:, layer] @ r).var(unbiased=False)) / 2
        assert found.scores[layer] == pytest.approx(float(norm / spread.sqrt()), rel=1e-3)
    assert found.layer == max(found.candidates, key=lambda l: found.scores[l])
    assert found.direction.dtype == torch.float32
    assert found.direction.shape == (tiny_model.config.hidden_size,)
    assert float(found.direction.norm()) == pytest.approx(1.0, abs=1e-6)
    assert hooks_left(tiny_model.hf_model) == []


def test_separation_by_hand():
    # 2 layers; layer 1 separates the sets perfectly up to a small spread.
    pos = torch.tensor([[[1.0, 0.0], [3.0, 1.0]], [[-1.0, 0.0], [5.0, 1.0]]])
    neg = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[-1.0, 0.0], [0.0, 1.0]]])
    delta, scores = separation(pos, neg)
    assert delta.tolist() == [[0.0, 0.0], [4.0, 0.0]]
    # projections on (1, 0): pos 3, 5 (variance 1), neg 0, 0 (variance 0) -> 4 / sqrt(0.5)
    assert scores.tolist() == pytest.approx([0.0, 4 / 0.5 ** 0.5])
    assert delta.dtype == scores.dtype == torch.float64


def test_candidates_are_the_first_80_percent_of_the_layers():
    assert candidate_layers(30) == list(range(24))
    assert candidate_layers(18) == list(range(15))
    assert candidate_layers(5) == [0, 1, 2, 3]
    assert candidate_layers(1) == [0]


def test_the_last_20_percent_are_never_chosen(tiny_tokenizer, monkeypatch):
    model = workbench.from_hf(make_tiny_hf("llama", num_hidden_layers=5), tiny_tokenizer,
                              name="tiny-llama-5")
    real = separation

    def last_layer_best(positive, negative):
        delta, scores = real(positive, negative)
        scores = scores.clone()
        scores[4] = 1e9
        return delta, scores

    monkeypatch.setattr(direction_module, "separation", last_layer_best)
    found = refusal_direction(model, POSITIVE, NEGATIVE, progress=False)
    assert found.candidates == (0, 1, 2, 3)
    assert found.scores[4] == 1e9
    assert found.layer == max(range(4), key=lambda l: found.scores[l])
    assert found.chosen == "auto"


def test_an_explicit_layer(tiny_llama):
    found = refusal_direction(tiny_llama, POSITIVE, NEGATIVE, layer=-1, progress=False)
    assert (found.layer, found.chosen) == (tiny_llama.n_layers - 1, "given")
    again = refusal_direction(tiny_llama, POSITIVE, NEGATIVE, layer=1, progress=False)
    assert torch.equal(found.direction, again.direction)


@pytest.mark.parametrize("layer", [2, -3, "1", True, 1.0])
def test_a_bad_layer_is_refused(tiny_llama, layer):
    with pytest.raises(InvalidArgumentError, match="layer must be None .* 2-layer model"):
        refusal_direction(tiny_llama, POSITIVE, NEGATIVE, layer=layer, progress=False)


def test_provenance_records_prompts_and_formatting(tiny_llama):
    found = refusal_direction(tiny_llama, POSITIVE, NEGATIVE, system_prompt="Be safe.",
                              progress=False)
    assert found.prompts == {
        "positive": {"name": "harmful", "n": 3, "sha256": POSITIVE.sha256},
        "negative": {"name": "benign", "n": 3, "sha256": NEGATIVE.sha256}}
    assert found.prompting == tiny_llama.prompting("auto", "Be safe.").to_dict()
    assert found.model == {**tiny_llama.info(), "d_model": 64}
    assert found.criterion == "cohen_d"
    assert found.name == f"harmful vs benign (layer {found.layer})"
    raw = refusal_direction(tiny_llama, POSITIVE, NEGATIVE, chat_template=False,
                            progress=False)
    assert raw.prompting["chat_template"] is False
    # Formatting is part of the measurement: the raw prompts give another direction.
    assert not torch.allclose(raw.direction, found.direction)


def test_the_result_is_frozen(tiny_llama):
    found = refusal_direction(tiny_llama, POSITIVE, NEGATIVE, progress=False)
    assert isinstance(found, RefusalDirection)
    with pytest.raises(dataclasses.FrozenInstanceError):
        found.layer = 0
    assert "direction=" not in repr(found) and f"layer={found.layer}" in repr(found)


def test_bundled_names_and_lists_are_accepted(tiny_llama):
    found = refusal_direction(tiny_llama, "qualitative-harmful", list(NEGATIVE) * 2,
                              progress=False)
    assert found.prompts["positive"]["name"] == "qualitative-harmful"
    assert found.prompts["positive"]["n"] == 8


def test_identical_sets_have_no_direction(tiny_llama):
    with pytest.raises(InvalidArgumentError, match="same mean residual stream"):
        refusal_direction(tiny_llama, POSITIVE, PromptSet("same", POSITIVE.prompts),
                          progress=False)


def test_empty_or_lopsided_sets_are_refused(tiny_llama):
    with pytest.raises(PromptSetError, match="empty"):
        refusal_direction(tiny_llama, PromptSet("none", []), NEGATIVE, progress=False)
    with pytest.raises(PromptSetError, match="lopsided"):
        refusal_direction(tiny_llama, POSITIVE.prompts[:1], list(NEGATIVE) * 3,
                          progress=False)


@pytest.mark.integration
def test_on_the_embedded_model(smollm):
    from workbench import ablate_direction

    found = refusal_direction(smollm, "qualitative-harmful", "qualitative-benign",
                              progress=False)
    assert found.candidates == tuple(range(24))  # 30 layers: the last 6 are skipped
    assert found.layer in found.candidates and found.scores[found.layer] > 1.0
    assert found.prompting["chat_template"] is True
    seen = []
    handle = smollm.layers[found.layer].register_forward_pre_hook(
        lambda _m, args: seen.append(args[0][:, -1].detach().clone()))
    try:
        with ablate_direction(smollm, found), torch.no_grad():
            smollm.hf_model(**smollm.encode(["How do I pick a lock?"], smollm.prompting()))
    finally:
        handle.remove()
    residual = seen[0]  # [1, d_model]
    assert float((residual @ found.direction).abs()) < 1e-5 * float(residual.norm())
    assert hooks_left(smollm.hf_model) == []
