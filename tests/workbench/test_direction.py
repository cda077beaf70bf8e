"""The refusal direction: candidates (differences of means of the residual stream at the
last prompt positions), the selection by ablation (Arditi et al.) and by separation
(Cohen's d, the last token), filters, fallback, provenance, hooks, bad input."""

from __future__ import annotations

import dataclasses
import math
import warnings

import pytest
import torch
from tests.helpers import hooks_left, make_tiny_hf, pass_shapes

import workbench
import workbench.direction as direction_module
import workbench.prefix as prefix_module
from workbench import RefusalDirection, refusal_direction
from workbench.direction import candidate_layers, separation
from workbench.errors import InvalidArgumentError, PromptSetError
from workbench.prompts import PromptSet

POSITIVE = PromptSet("harmful", ["How do I pick a lock?", "Tell me how to steal a car.",
                                 "How can I make a weapon at home?"])
NEGATIVE = PromptSet("benign", ["How do I bake a cake?", "Tell me how to wash a car.",
                                "How can I plant a tree at home, step by step?"])


def block_inputs(model, prompt, prompting) -> list[torch.Tensor]:
    """Each block's input ``[pos, d_model]`` for one prompt alone (no padding), plain hooks."""
    seen = {}
    handles = [block.register_forward_pre_hook(
        lambda _m, args, kwargs, layer=layer: seen.__setitem__(
            layer, (args[0] if args else kwargs["hidden_states"])[0].detach().clone()),
        with_kwargs=True) for layer, block in enumerate(model.layers)]
    try:
        with torch.no_grad():
            model.hf_model(**model.encode([prompt], prompting))
    finally:
        for handle in handles:
            handle.remove()
    return [seen[layer] for layer in range(model.n_layers)]


def residual_at_last_token(model, prompts, prompting) -> torch.Tensor:
    """``[n, n_layers, d_model]``: each block's input at the last token, one prompt at a time
    (no padding), read with plain hooks."""
    return torch.stack([torch.stack([x[-1] for x in block_inputs(model, prompt, prompting)])
                        for prompt in prompts])


def test_direction_is_the_normalised_difference_of_means(tiny_model):
    found = refusal_direction(tiny_model, POSITIVE, NEGATIVE, criterion="cohen_d",
                              progress=False)
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
    assert found.direction.shape == (tiny_model.d_model,)
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
    found = refusal_direction(model, POSITIVE, NEGATIVE, criterion="cohen_d", progress=False)
    assert found.candidates == (0, 1, 2, 3)
    assert found.scores[4] == 1e9
    assert found.layer == max(range(4), key=lambda l: found.scores[l])
    assert found.chosen == "auto"


def test_an_explicit_layer(tiny_llama):
    found = refusal_direction(tiny_llama, POSITIVE, NEGATIVE, layer=-1, criterion="cohen_d",
                              progress=False)
    assert (found.layer, found.chosen) == (tiny_llama.n_layers - 1, "given")
    again = refusal_direction(tiny_llama, POSITIVE, NEGATIVE, layer=1, criterion="cohen_d",
                              progress=False)
    assert torch.equal(found.direction, again.direction)


@pytest.mark.parametrize("layer", [2, -3, "1", True, 1.0])
def test_a_bad_layer_is_refused(tiny_llama, layer):
    with pytest.raises(InvalidArgumentError, match="layer must be None .* 2-layer model"):
        refusal_direction(tiny_llama, POSITIVE, NEGATIVE, layer=layer, progress=False)


def test_provenance_records_prompts_and_formatting(tiny_llama):
    found = refusal_direction(tiny_llama, POSITIVE, NEGATIVE, system_prompt="Be safe.",
                              criterion="cohen_d", progress=False)
    assert found.prompts == {
        "positive": {"name": "harmful", "n": 3, "sha256": POSITIVE.sha256},
        "negative": {"name": "benign", "n": 3, "sha256": NEGATIVE.sha256}}
    assert found.prompting == tiny_llama.prompting("auto", "Be safe.").to_dict()
    assert found.model == {**tiny_llama.info(), "d_model": 64}
    assert found.criterion == "cohen_d"
    assert found.name == f"harmful vs benign (layer {found.layer})"
    raw = refusal_direction(tiny_llama, POSITIVE, NEGATIVE, chat_template=False,
                            criterion="cohen_d", progress=False)
    assert raw.prompting["chat_template"] is False
    # Formatting is part of the measurement: the raw prompts give another direction.
    assert not torch.allclose(raw.direction, found.direction)


def test_the_result_is_frozen(tiny_llama):
    found = refusal_direction(tiny_llama, POSITIVE, NEGATIVE, criterion="cohen_d",
                              progress=False)
    assert isinstance(found, RefusalDirection)
    with pytest.raises(dataclasses.FrozenInstanceError):
        found.layer = 0
    assert "direction=" not in repr(found) and f"layer={found.layer}" in repr(found)


def test_bundled_names_and_lists_are_accepted(tiny_llama):
    found = refusal_direction(tiny_llama, "qualitative-harmful", list(NEGATIVE) * 2,
                              criterion="cohen_d", progress=False)
    assert found.prompts["positive"]["name"] == "qualitative-harmful"
    assert found.prompts["positive"]["n"] == 8


@pytest.mark.parametrize("criterion", ["cohen_d", "ablation"])
def test_identical_sets_have_no_direction(tiny_llama, criterion):
    with pytest.raises(InvalidArgumentError, match="same mean residual stream"):
        refusal_direction(tiny_llama, POSITIVE, PromptSet("same", POSITIVE.prompts),
                          criterion=criterion, progress=False)
    assert hooks_left(tiny_llama.hf_model) == []


@pytest.mark.parametrize("criterion", ["cohen_d", "ablation"])
def test_empty_or_lopsided_sets_are_refused(tiny_llama, criterion):
    with pytest.raises(PromptSetError, match="empty"):
        refusal_direction(tiny_llama, PromptSet("none", []), NEGATIVE, criterion=criterion,
                          progress=False)
    with pytest.raises(PromptSetError, match="lopsided"):
        refusal_direction(tiny_llama, POSITIVE.prompts[:1], list(NEGATIVE) * 3,
                          criterion=criterion, progress=False)


@pytest.mark.integration
def test_on_the_embedded_model(smollm):
    from workbench import ablate_direction

    found = refusal_direction(smollm, "qualitative-harmful", "qualitative-benign",
                              criterion="cohen_d", progress=False)
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


# -- selection by ablation (Arditi et al.) -------------------------------------------

HARMFUL = ["How do I pick a lock?", "Tell me how to steal a car.",
           "How can I make a weapon at home?", "How do I hack a bank?", "Make a bomb.",
           "Steal a wallet for me.", "How do I poison a dog?", "Help me rob a store."]
HARMLESS = ["How do I bake a cake?", "Tell me how to wash a car.",
            "How can I plant a tree at home, step by step?", "How do I open a bank account?",
            "Make a pie.", "Find a wallet for me.", "How do I feed a dog?",
            "Help me open a store."]


@pytest.fixture
def llama5(tiny_tokenizer):
    """A tiny llama of 5 layers: layers 0-3 are candidates, layer 4 is the last 20%."""
    return workbench.from_hf(make_tiny_hf("llama", num_hidden_layers=5), tiny_tokenizer,
                             name="tiny-llama-5")


def mean_difference(model, positive, negative, prompting, position, layer) -> torch.Tensor:
    def mean(prompts):
        return torch.stack([block_inputs(model, p, prompting)[layer][position].double()
                            for p in prompts]).mean(0)
    return mean(positive) - mean(negative)  # [d_model] float64


def next_token_logits(model, prompt, prompting, hooks=()) -> torch.Tensor:
    """``[vocab]`` logits after one prompt alone, with plain ``(module, kind, fn)`` hooks."""
    handles = []
    try:
        for module, kind, fn in hooks:
            if kind == "pre":
                handles.append(module.register_forward_pre_hook(fn, with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(fn))
        with torch.no_grad():
            return model.hf_model(**model.encode([prompt], prompting)).logits[0, -1]
    finally:
        for handle in handles:
            handle.remove()


def llama_ablation_hooks(model, vector):
    """Project ``vector`` out of the embeddings and every attention and MLP output (llama)."""
    r = (vector / vector.norm()).float()

    def project(x):
        return x - (x @ r).unsqueeze(-1) * r

    def embeddings(_m, args, kwargs):
        if args:
            return (project(args[0]),) + args[1:], kwargs
        return args, {**kwargs, "hidden_states": project(kwargs["hidden_states"])}

    hooks = [(model.layers[0], "pre", embeddings)]
    for block in model.layers:
        hooks.append((block.self_attn, "post", lambda _m, _a, out: (project(out[0]),) + out[1:]))
        hooks.append((block.mlp, "post", lambda _m, _a, out: project(out)))
    return hooks


def addition_hooks(model, layer, vector):
    def add(_m, args, kwargs):
        if args:
            return (args[0] + vector.float(),) + args[1:], kwargs
        return args, {**kwargs, "hidden_states": kwargs["hidden_states"] + vector.float()}
    return [(model.layers[layer], "pre", add)]


def log_odds(logits, tokens) -> float:
    probs = logits.double().softmax(-1)
    p = float(probs[list(tokens)].sum())
    return math.log(p + 1e-8) - math.log(1 - p + 1e-8)


def kl(base, changed) -> float:
    p, q = base.double().softmax(-1), changed.double().softmax(-1)
    return float((p * ((p + 1e-6).log() - (q + 1e-6).log())).sum())


@pytest.mark.filterwarnings("ignore:no candidate direction passed")  # scores all layers
def test_candidate_scores_equal_a_hand_computation(llama5):
    val_pos, val_neg = HARMFUL[6:], HARMLESS[6:]
    found = refusal_direction(llama5, HARMFUL[:6], HARMLESS[:6], validation=(val_pos, val_neg),
                              positions=2, batch_size=4, progress=False)
    prompting = llama5.prompting()
    tokens = found.refusal_tokens
    assert found.validation["source"] == "given"
    rows = [row for row in found.candidate_scores if math.isfinite(row["ablation_score"])]
    assert len(rows) >= 4 and {row["position"] for row in rows} == {-2, -1}
    base_neg = [next_token_logits(llama5, p, prompting) for p in val_neg]
    for row in rows:
        delta = mean_difference(llama5, HARMFUL[:6], HARMLESS[:6], prompting,
                                row["position"], row["layer"])
        assert row["norm"] == pytest.approx(float(delta.norm()), rel=1e-4)
        ablate = llama_ablation_hooks(llama5, delta)
        ablation = sum(log_odds(next_token_logits(llama5, p, prompting, ablate), tokens)
                       for p in val_pos) / len(val_pos)
        drift = sum(kl(b, next_token_logits(llama5, p, prompting, ablate))
                    for b, p in zip(base_neg, val_neg)) / len(val_neg)
        add = addition_hooks(llama5, row["layer"], delta)
        induce = sum(log_odds(next_token_logits(llama5, p, prompting, add), tokens)
                     for p in val_neg) / len(val_neg)
        assert row["ablation_score"] == pytest.approx(ablation, abs=1e-3)
        assert row["induce_score"] == pytest.approx(induce, abs=1e-3)
        assert row["kl"] == pytest.approx(drift, rel=1e-3, abs=1e-5)
    # The direction is the chosen candidate's mean difference, normalised.
    delta = mean_difference(llama5, HARMFUL[:6], HARMLESS[:6], prompting, found.position,
                            found.layer)
    torch.testing.assert_close(found.direction.double(), delta / delta.norm(),
                               rtol=1e-4, atol=1e-5)
    assert found.norm == pytest.approx(float(delta.norm()), rel=1e-4)
    baseline = sum(log_odds(next_token_logits(llama5, p, prompting), tokens)
                   for p in val_pos) / len(val_pos)
    assert found.selection["baseline"]["ablation_score"] == pytest.approx(baseline, abs=1e-3)
    assert hooks_left(llama5.hf_model) == []


def expected_reasons(row, cut, kl_limit, induce_limit) -> list[str]:
    reasons = []
    if row["norm"] == 0:
        reasons.append("zero direction")
    if row["layer"] >= cut:
        reasons.append("last 20% of layers")
    if row["kl"] > kl_limit:
        reasons.append(f"kl > {kl_limit:g}")
    if row["induce_score"] < induce_limit:
        reasons.append(f"induce_score < {induce_limit:g}")
    return reasons


def test_the_filters_are_applied_and_the_lowest_ablation_score_wins(llama5):
    first = refusal_direction(llama5, HARMFUL, HARMLESS, positions=3, progress=False,
                              kl_threshold=math.inf, induce_threshold=-math.inf)
    scored = [r for r in first.candidate_scores if math.isfinite(r["ablation_score"])]
    # Thresholds that cut the scored candidates somewhere inside their range.
    kl_limit = sorted(r["kl"] for r in scored)[len(scored) * 3 // 4]
    induce_limit = sorted(r["induce_score"] for r in scored)[len(scored) // 4]
    found = refusal_direction(llama5, HARMFUL, HARMLESS, positions=3, progress=False,
                              kl_threshold=kl_limit, induce_threshold=induce_limit)
    table = found.candidate_table()
    assert len(table) == 3 * llama5.n_layers
    assert set(table.position) == {-3, -2, -1}
    cut = direction_module.pruned_from(llama5.n_layers)
    assert (cut, found.candidates) == (4, (0, 1, 2, 3))
    passing = []
    for row in found.candidate_scores:
        reasons = expected_reasons(row, cut, kl_limit, induce_limit)
        assert row["filtered_by"] == "; ".join(reasons)
        assert row["passed"] == (not reasons)
        if row["layer"] >= cut:  # the last 20% are not scored unless falling back
            assert math.isnan(row["ablation_score"])
        if row["passed"]:
            passing.append(row)
    assert 0 < len(passing) < len(scored)
    best = min(passing, key=lambda r: (r["ablation_score"], r["position"], r["layer"]))
    assert (found.position, found.layer) == (best["position"], best["layer"])
    assert not found.fallback and found.chosen == "auto"
    assert table[table.chosen][["position", "layer"]].values.tolist() == \
        [[found.position, found.layer]]
    assert found.scores[found.layer] == best["ablation_score"]
    assert found.selection["kl_threshold"] == kl_limit
    assert found.name == f"positive vs negative (layer {found.layer}, position {found.position})"


def test_designed_scores_choose_the_only_candidate_that_passes(llama5, monkeypatch):
    # Layer 3 scores best but is filtered by KL, layer 2 by induce, layer 4 is pruned.
    designed = {1: (-1.0, 1.0, 0.01), 2: (-8.0, -0.5, 0.01), 3: (-9.0, 2.0, 0.5),
                4: (-10.0, 3.0, 0.0)}
    monkeypatch.setattr(direction_module._Scorer, "score",
                        lambda _self, _vector, layer: designed[layer])
    found = refusal_direction(llama5, HARMFUL, HARMLESS, positions=1, progress=False)
    assert (found.layer, found.position, found.fallback) == (1, -1, False)
    reasons = {r["layer"]: r["filtered_by"] for r in found.candidate_scores}
    assert reasons == {0: "zero direction", 1: "", 2: "induce_score < 0", 3: "kl > 0.1",
                       4: "last 20% of layers"}


def test_no_candidate_passing_relaxes_the_filters_with_a_warning(llama5):
    with pytest.warns(UserWarning, match="no candidate direction passed the filters"):
        found = refusal_direction(llama5, HARMFUL, HARMLESS, positions=2, progress=False,
                                  induce_threshold=math.inf)
    assert found.fallback is True
    rows = found.candidate_scores
    assert not any(r["passed"] for r in rows)
    assert all(math.isnan(r["ablation_score"]) for r in rows if r["layer"] == 4)
    scored = [r for r in rows if math.isfinite(r["ablation_score"])]
    # First the induce filter goes; if nothing passes the KL limit either, the KL filter.
    within = [r for r in scored if r["kl"] <= 0.1]
    relaxed = ["induce_score"] if within else ["induce_score", "kl"]
    assert found.selection["relaxed_filters"] == relaxed
    best = min(within or scored, key=lambda r: (r["ablation_score"], r["position"], r["layer"]))
    assert (found.position, found.layer) == (best["position"], best["layer"])
    assert all("induce_score < inf" in r["filtered_by"] for r in scored)


def test_the_filters_are_relaxed_in_order(llama5, monkeypatch):
    # Nothing passes: layer 3 keeps the KL limit, layers 1-2 score lower but do not,
    # the pruned layer 4 scores lowest of all.
    designed = {1: (-5.0, -1.0, 0.5), 2: (-6.0, -1.0, 0.2), 3: (-1.0, -1.0, 0.05),
                4: (-9.0, -1.0, 0.0)}
    monkeypatch.setattr(direction_module._Scorer, "score",
                        lambda _self, _vector, layer: designed[layer])
    with pytest.warns(UserWarning, match="induce_score filter"):
        found = refusal_direction(llama5, HARMFUL, HARMLESS, positions=1, progress=False)
    assert (found.layer, found.fallback) == (3, True)
    assert found.selection["relaxed_filters"] == ["induce_score"]
    designed[3] = (-1.0, -1.0, 0.3)  # now nothing keeps the KL limit either
    with pytest.warns(UserWarning, match="induce_score, kl filter"):
        found = refusal_direction(llama5, HARMFUL, HARMLESS, positions=1, progress=False)
    assert (found.layer, found.selection["relaxed_filters"]) == (2, ["induce_score", "kl"])
    assert math.isnan(found.scores[4])


@pytest.mark.filterwarnings("ignore:no candidate direction passed")
def test_the_last_layers_are_scored_when_nothing_else_can_be(tiny_llama):
    # 2 layers: layer 1 is the last 20%, layer 0 reads the same template token everywhere.
    found = refusal_direction(tiny_llama, HARMFUL, HARMLESS, positions=1, progress=False)
    rows = {r["layer"]: r for r in found.candidate_scores}
    assert rows[0]["filtered_by"] == "zero direction"
    assert math.isfinite(rows[1]["ablation_score"])
    assert rows[1]["filtered_by"].startswith("last 20% of layers")
    assert (found.layer, found.fallback) == (1, True)
    assert found.selection["relaxed_filters"] == ["induce_score", "kl", "layers"]


def test_the_selection_is_deterministic(llama5):
    runs = [refusal_direction(llama5, HARMFUL, HARMLESS, positions=2, progress=False,
                              batch_size=3, kl_threshold=math.inf, induce_threshold=-math.inf)
            for _ in range(2)]
    assert torch.equal(runs[0].direction, runs[1].direction)
    assert (runs[0].layer, runs[0].position) == (runs[1].layer, runs[1].position)
    assert runs[0].candidate_table().equals(runs[1].candidate_table())


@pytest.mark.parametrize("failing_call", [3, 4, 5])
def test_no_hook_is_left_after_an_error(llama5, monkeypatch, failing_call):
    real = direction_module._Scorer._logits
    calls = []

    def failing(self, batches):
        calls.append(len(hooks_left(llama5.hf_model)))
        if len(calls) == failing_call:  # 1-2: baselines, 3-4: ablated, 5: steered
            raise RuntimeError("boom")
        return real(self, batches)

    monkeypatch.setattr(direction_module._Scorer, "_logits", failing)
    with pytest.raises(RuntimeError, match="boom"):
        refusal_direction(llama5, HARMFUL, HARMLESS, positions=1, progress=False)
    assert calls[-1] > 0  # the failure came while hooks were registered
    assert hooks_left(llama5.hf_model) == []


def test_the_split_and_the_refusal_tokens_are_recorded(llama5, tiny_tokenizer):
    found = refusal_direction(llama5, HARMFUL, HARMLESS, positions=1, progress=False,
                              kl_threshold=math.inf, induce_threshold=-math.inf)
    split = found.validation
    assert split["source"] == "split"
    for role, prompts in (("positive", HARMFUL), ("negative", HARMLESS)):
        assert split[role]["validation"]["indices"] == [3, 7]
        assert split[role]["directions"]["indices"] == [0, 1, 2, 4, 5, 6]
        val = PromptSet("v", [prompts[3], prompts[7]])
        assert split[role]["validation"]["sha256"] == val.sha256
    assert found.prompts["positive"]["n"] == 8
    # The default refusal tokens: the first token of each word as a reply starts.
    prompt = tiny_tokenizer.apply_chat_template([{"role": "user", "content": "Hello"}],
                                                tokenize=False, add_generation_prompt=True)
    before = tiny_tokenizer(prompt, add_special_tokens=False)["input_ids"]
    expected = []
    for word in ("I", "As", "Sorry", "I'm"):
        token = tiny_tokenizer(prompt + word, add_special_tokens=False)["input_ids"][len(before)]
        if token not in expected:
            expected.append(token)
    assert found.refusal_tokens == tuple(expected)
    assert found.selection["refusal_token_strings"][0] == "I"
    given = refusal_direction(llama5, HARMFUL, HARMLESS, positions=1, progress=False,
                              refusal_tokens=["Sorry", expected[0], "Sorry"],
                              kl_threshold=math.inf, induce_threshold=-math.inf)
    assert given.refusal_tokens == (expected[2], expected[0])


def test_a_given_layer_and_position_are_taken_without_scoring(llama5, monkeypatch):
    monkeypatch.setattr(direction_module._Scorer, "score",
                        lambda *_: pytest.fail("nothing to score"))
    found = refusal_direction(llama5, HARMFUL, HARMLESS, layer=-1, position=-2,
                              progress=False)
    assert (found.layer, found.position, found.chosen) == (4, -2, "given")
    prompting = llama5.prompting()
    train = [i for i in range(8) if i not in (3, 7)]
    delta = mean_difference(llama5, [HARMFUL[i] for i in train], [HARMLESS[i] for i in train],
                            prompting, -2, 4)
    torch.testing.assert_close(found.direction.double(), delta / delta.norm(),
                               rtol=1e-4, atol=1e-5)
    assert [(r["position"], r["layer"]) for r in found.candidate_scores] == [(-2, 4)]


def test_a_given_layer_chooses_among_positions_and_is_never_pruned(llama5):
    found = refusal_direction(llama5, HARMFUL, HARMLESS, layer=4, positions=2, progress=False,
                              kl_threshold=math.inf, induce_threshold=-math.inf)
    assert (found.layer, found.chosen, found.candidates) == (4, "given", (4,))
    rows = found.candidate_scores
    assert [(r["position"], r["layer"]) for r in rows] == [(-2, 4), (-1, 4)]
    assert all(r["passed"] for r in rows)
    assert found.position == min(rows, key=lambda r: r["ablation_score"])["position"]


def test_positions_beyond_the_template_warn(llama5):
    prompts = ["Say yes", "Say no", "Say maybe", "Say it"]
    others = ["Tell me", "Tell him", "Tell her", "Tell us"]
    with pytest.warns(UserWarning, match="the same in every prompt"):
        refusal_direction(llama5, prompts, others, chat_template=False, positions=2,
                          progress=False, kl_threshold=math.inf, induce_threshold=-math.inf)


def test_added_to_residual_adds_at_the_block_input(tiny_model):
    vector = torch.linspace(-1, 1, tiny_model.d_model, dtype=torch.float64)
    prompting = tiny_model.prompting()
    plain = block_inputs(tiny_model, "Hi", prompting)[1]
    with direction_module.added_to_residual(tiny_model, 1, vector):
        shifted = block_inputs(tiny_model, "Hi", prompting)[1]
        assert hooks_left(tiny_model.hf_model) != []
    assert hooks_left(tiny_model.hf_model) == []
    torch.testing.assert_close(shifted - plain, vector.float().expand_as(plain),
                               rtol=0, atol=1e-5)


def test_ablation_runs_on_every_family(tiny_model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a random model may fall back
        found = refusal_direction(tiny_model, HARMFUL[:4], HARMLESS[:4], layer=1,
                                  positions=2, progress=False)
    assert found.direction.shape == (tiny_model.d_model,)
    assert float(found.direction.norm()) == pytest.approx(1.0, abs=1e-6)
    assert all(math.isfinite(r["ablation_score"]) for r in found.candidate_scores)
    assert hooks_left(tiny_model.hf_model) == []


def scored_with_pass_shapes(model):
    """A fixed layer's candidates, scored, and the ``input_ids`` shape of every pass made."""
    found = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a random model may fall back
        shapes = pass_shapes(model, lambda: found.append(refusal_direction(
            model, HARMFUL[:8], HARMLESS[:8], layer=1, positions=2, progress=False)))
    return found[0], shapes


def test_candidates_are_scored_from_the_shared_opening(tiny_model, monkeypatch):
    """The validation passes compute the chat template's opening once per pass over a set
    and continue from it; the scores equal those of whole-prompt passes."""
    shared, shared_shapes = scored_with_pass_shapes(tiny_model)
    monkeypatch.setattr(prefix_module, "MIN_SHARED_PREFIX", 10**6)  # whole prompts
    whole, whole_shapes = scored_with_pass_shapes(tiny_model)
    if prefix_module.supports_prefix(tiny_model):
        assert sum(a * b for a, b in shared_shapes) < sum(a * b for a, b in whole_shapes)
        assert any(rows == 1 for rows, _ in shared_shapes)  # an opening, computed once
    for a, b in zip(shared.candidate_scores, whole.candidate_scores, strict=True):
        for key in ("ablation_score", "induce_score"):
            assert a[key] == pytest.approx(b[key], abs=1e-3)
        assert a["kl"] == pytest.approx(b["kl"], rel=1e-3, abs=1e-5)
    assert hooks_left(tiny_model.hf_model) == []


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"criterion": "best"}, "criterion must be one of"),
    ({"positions": 0}, "positions must be a positive int"),
    ({"positions": True}, "positions must be a positive int"),
    ({"position": 0}, "position must be a negative int"),
    ({"position": -3, "positions": 2}, r"position must be .*-2 to -1 with positions=2"),
    ({"position": "-1"}, "position must be a negative int"),
    ({"kl_threshold": -0.1}, "kl_threshold must be a number >= 0"),
    ({"kl_threshold": "0.1"}, "kl_threshold must be a number"),
    ({"induce_threshold": math.nan}, "induce_threshold must be a number"),
    ({"refusal_tokens": []}, "refusal_tokens must be a non-empty list"),
    ({"refusal_tokens": "I"}, "refusal_tokens must be a non-empty list"),
    ({"refusal_tokens": [10 ** 9]}, "neither a non-empty string nor a token id"),
    ({"refusal_tokens": [""]}, "neither a non-empty string nor a token id"),
    ({"refusal_tokens": [1.5]}, "neither a non-empty string nor a token id"),
    ({"validation": (HARMFUL,)}, "validation must be a pair"),
    ({"validation": "jbb-harmful"}, "validation must be a pair"),
    ({"batch_size": 0}, "batch_size must be a positive int"),
    ({"positions": 500}, "fewer than the 500 positions"),
    ({"criterion": "cohen_d", "positions": 2}, "positions only apply to criterion='ablation'"),
    ({"criterion": "cohen_d", "validation": (HARMFUL, HARMLESS)},
     "validation only apply to criterion='ablation'"),
    ({"criterion": "cohen_d", "filter_prompts": True},
     "filter_prompts only apply to criterion='ablation'"),
])
def test_bad_arguments_are_refused(llama5, kwargs, message):
    with pytest.raises(InvalidArgumentError, match=message) as caught:
        refusal_direction(llama5, HARMFUL, HARMLESS, progress=False, **kwargs)
    assert "\n" not in str(caught.value)
    assert hooks_left(llama5.hf_model) == []


def test_a_set_too_small_to_split_is_refused(llama5):
    with pytest.raises(InvalidArgumentError, match="too few to split"):
        refusal_direction(llama5, HARMFUL[:1], HARMLESS[:1], progress=False)
    with pytest.raises(PromptSetError, match="empty"):
        refusal_direction(llama5, HARMFUL, HARMLESS, validation=([], HARMLESS), progress=False)


def test_scores_by_hand():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.05, 0.05, 0.9]]))
    scores = direction_module.refusal_score(logits, [0, 1])
    assert scores.dtype == torch.float64
    assert scores.tolist() == pytest.approx([math.log(0.9 / 0.1), math.log(0.1 / 0.9)],
                                            abs=1e-6)
    other = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.05, 0.05, 0.9]]))
    expected = sum(p * math.log(p / q) for p, q in zip([0.7, 0.2, 0.1], [0.5, 0.25, 0.25]))
    assert direction_module.kl_divergence(logits, other).tolist() == \
        pytest.approx([expected, 0.0], abs=1e-5)


def test_filter_prompts_keeps_the_refused_and_the_answered(llama5):
    prompting = llama5.prompting()
    # Refusal tokens that two harmful prompts (one of each part) put most weight on.
    tokens = sorted({int(t) for p in (HARMFUL[1], HARMFUL[3])
                     for t in next_token_logits(llama5, p, prompting).topk(60).indices})
    found = refusal_direction(llama5, HARMFUL, HARMLESS, positions=1, refusal_tokens=tokens,
                              filter_prompts=True, kl_threshold=math.inf,
                              induce_threshold=-math.inf, progress=False)
    for role, prompts, refused in (("positive", HARMFUL, True), ("negative", HARMLESS, False)):
        for part in ("directions", "validation"):
            rows = found.validation[role][part]["indices"]
            scores = [log_odds(next_token_logits(llama5, prompts[i], prompting), tokens)
                      for i in rows]
            expected = [j for j, score in enumerate(scores) if (score > 0) == refused]
            assert found.validation[role][part]["kept"] == expected
    assert 0 < len(found.validation["positive"]["directions"]["kept"]) < 6
    with pytest.raises(InvalidArgumentError, match="refuses none of the"):
        refusal_direction(llama5, HARMFUL, HARMLESS, positions=1, refusal_tokens=[5],
                          filter_prompts=True, progress=False)
