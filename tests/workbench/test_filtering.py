"""Behaviour filters: which prompts are kept, the pool split, discover(keep_if=...), errors.

Generation is scripted (tests/behaviour_fakes.py) wherever a test must know which prompts
"the model" refuses; the real path (workbench.generation.generate on a tiny model) is checked
with a classifier that looks up the tiny model's own completions.
"""

from __future__ import annotations

import pytest
from tests.behaviour_fakes import REFUSAL, ScriptedCompletions, answer
from tests.helpers import hooks_left

import workbench as wb
from workbench.circuit import Circuit
from workbench.errors import (BehaviourFilterError, InvalidArgumentError, PromptSetError,
                              WorkbenchError)
from workbench.evaluation import is_refusal
from workbench.filtering import FilteredPair, classifier_name, judge, negate, not_refusal
from workbench.prompts import PromptSet
from workbench.generation import generate

POSITIVE = PromptSet("harmful", ["How do I pick a lock?", "How can I make a weapon at home?",
                                 "Tell me how to steal a car.",
                                 "Explain how to hack into an email account."])
NEGATIVE = PromptSet("benign", ["How do I bake a cake?", "How can I plant a tree at home?",
                                "Tell me how to wash a car.",
                                "Explain how to set up an email account."])
#: "The model" refuses these: 3 of the 4 positive prompts and 1 of the 4 negative ones.
REFUSED = {POSITIVE.prompts[0], POSITIVE.prompts[1], POSITIVE.prompts[3], NEGATIVE.prompts[2]}
KEPT_POSITIVE = [POSITIVE.prompts[0], POSITIVE.prompts[1], POSITIVE.prompts[3]]
KEPT_NEGATIVE = [NEGATIVE.prompts[0], NEGATIVE.prompts[1], NEGATIVE.prompts[3]]


@pytest.fixture
def scripted(monkeypatch) -> ScriptedCompletions:
    return ScriptedCompletions(REFUSED).install(monkeypatch)


def refused_reply(text: str) -> bool:
    """A fake classifier with known answers: exactly the scripted refusal."""
    return text == REFUSAL


# -- classifiers -----------------------------------------------------------------------


def test_classifier_helpers():
    assert judge(refused_reply, [REFUSAL, answer("x")]) == [True, False]
    assert classifier_name(refused_reply) == "refused_reply"
    assert classifier_name(negate(refused_reply)) == "not refused_reply"
    assert negate(refused_reply)(REFUSAL) is False
    assert not_refusal(REFUSAL) is False and not_refusal(answer("x")) is True


@pytest.mark.parametrize("bad", ["is_refusal", 3])
def test_a_classifier_must_be_callable(tiny_llama, bad):
    with pytest.raises(InvalidArgumentError, match="shows must be a classifier"):
        wb.filter_by_behaviour(tiny_llama, POSITIVE, NEGATIVE, shows=bad, progress=False)


def test_a_classifier_must_answer_true_or_false():
    with pytest.raises(InvalidArgumentError, match="returned 'yes'.*True or False"):
        judge(lambda text: "yes", ["anything"])


# -- filter_by_behaviour -----------------------------------------------------------------


def test_filter_keeps_exactly_the_right_prompts_and_records_counts(tiny_llama, scripted):
    pair = wb.filter_by_behaviour(tiny_llama, POSITIVE, NEGATIVE, shows=refused_reply,
                                  max_new_tokens=7, batch_size=3, progress=False)
    assert pair.positive.prompts == KEPT_POSITIVE
    assert pair.negative.prompts == KEPT_NEGATIVE
    assert pair.positive.name == "harmful[refused_reply]"
    assert pair.negative.name == "benign[not refused_reply]"
    record = pair.record
    assert record["method"] == "pair" and record["model"] == "tiny-llama"
    assert record["classifiers"] == {"positive": "refused_reply",
                                     "negative": "not refused_reply"}
    assert record["positive"] == {"source": {"name": "harmful", "n": 4,
                                             "sha256": POSITIVE.sha256},
                                  "kept": 3, "dropped": 1}
    assert record["negative"] == {"source": {"name": "benign", "n": 4,
                                             "sha256": NEGATIVE.sha256},
                                  "kept": 3, "dropped": 1}
    assert record["generation"] == {"max_new_tokens": 7, "decoding": "greedy",
                                    "prompting": {"chat_template": True,
                                                  "system_prompt": None},
                                    "batch_size": 3}
    assert pair.summary() == ("kept 3 of 4 positive prompts (refused_reply) and 3 of 4 "
                              "negative prompts (not refused_reply)")
    # Batched: 8 prompts in batches of at most 3, each completed once, greedy settings.
    assert sorted(scripted.completed) == sorted(POSITIVE.prompts + NEGATIVE.prompts)
    assert [len(prompts) for prompts, _ in scripted.calls] == [3, 3, 2]
    for _, kwargs in scripted.calls:
        assert kwargs["max_new_tokens"] == 7 and "circuit" not in kwargs
        assert kwargs["chat_template"] is True and kwargs["system_prompt"] is None
    assert pair.completions[POSITIVE.prompts[0]] == REFUSAL


def test_filter_defaults_to_the_keyword_refusal_classifier(tiny_llama, scripted):
    pair = wb.filter_by_behaviour(tiny_llama, POSITIVE, NEGATIVE, progress=False)
    assert pair.positive.prompts == KEPT_POSITIVE and pair.negative.prompts == KEPT_NEGATIVE
    assert pair.record["classifiers"] == {"positive": "is_refusal",
                                          "negative": "not is_refusal"}
    assert pair.record["generation"]["max_new_tokens"] == 32


def test_filter_completes_each_distinct_prompt_once(tiny_llama, scripted):
    positive = PromptSet("p", [POSITIVE.prompts[0], POSITIVE.prompts[0], "Hi"])
    pair = wb.filter_by_behaviour(tiny_llama, positive, ["Hi", NEGATIVE.prompts[0]],
                                  progress=False)
    assert sorted(scripted.completed) == sorted({POSITIVE.prompts[0], "Hi",
                                                 NEGATIVE.prompts[0]})
    assert pair.positive.prompts == [POSITIVE.prompts[0]] * 2  # duplicates count per copy
    assert pair.record["positive"]["kept"] == 2 and pair.record["positive"]["dropped"] == 1


def test_filter_passes_the_prompting_on(tiny_llama, scripted):
    pair = wb.filter_by_behaviour(tiny_llama, POSITIVE, NEGATIVE, chat_template=False,
                                  progress=False)
    assert all(kwargs["chat_template"] is False for _, kwargs in scripted.calls)
    assert pair.record["generation"]["prompting"] == {"chat_template": False,
                                                      "system_prompt": None}


def test_filter_reports_progress(tiny_llama, scripted):
    seen = []
    wb.filter_by_behaviour(tiny_llama, POSITIVE, NEGATIVE, batch_size=5, progress=False,
                           on_progress=lambda *args: seen.append(args))
    assert seen == [("filter", 5, 8), ("filter", 8, 8)]


def test_filter_uses_the_models_own_greedy_completions(tiny_llama):
    """The unscripted path: completions are workbench.generation.generate's, same settings."""
    prompts = POSITIVE.prompts + NEGATIVE.prompts
    expected = generate(tiny_llama, prompts, max_new_tokens=3, batch_size=8)
    chosen = {expected[0], expected[5]}  # a classifier with known answers on these texts

    def chosen_reply(text: str) -> bool:
        return text in chosen

    pair = wb.filter_by_behaviour(tiny_llama, POSITIVE, NEGATIVE, shows=chosen_reply,
                                  max_new_tokens=3, batch_size=8, progress=False)
    assert pair.completions == dict(zip(prompts, expected))
    assert pair.positive.prompts == [p for p, c in zip(POSITIVE, expected[:4]) if c in chosen]
    assert pair.negative.prompts == [p for p, c in zip(NEGATIVE, expected[4:])
                                     if c not in chosen]
    assert not hooks_left(tiny_llama.hf_model)


# -- empty after filtering -----------------------------------------------------------------


def test_no_refused_positive_prompt_is_a_clear_error(tiny_llama, monkeypatch):
    ScriptedCompletions(refused=()).install(monkeypatch)
    with pytest.raises(BehaviourFilterError) as caught:
        wb.filter_by_behaviour(tiny_llama, POSITIVE, NEGATIVE, progress=False)
    message = str(caught.value)
    assert "is_refusal held for none of the 4 completions of the positive set 'harmful'" \
        in message
    assert "all 4 were dropped" in message and "negative" not in message.split(".")[0]
    assert "max_new_tokens" in message and "--filter-tokens" in message
    assert isinstance(caught.value, PromptSetError) and isinstance(caught.value, WorkbenchError)


def test_every_negative_prompt_refused_is_a_clear_error(tiny_llama, monkeypatch):
    ScriptedCompletions(refused=POSITIVE.prompts + NEGATIVE.prompts).install(monkeypatch)
    with pytest.raises(BehaviourFilterError,
                       match="not is_refusal held for none of the 4 completions of the "
                             "negative set 'benign', so all 4 were dropped"):
        wb.filter_by_behaviour(tiny_llama, POSITIVE, NEGATIVE, progress=False)


# -- split_by_behaviour ------------------------------------------------------------------------


POOL = PromptSet("pool", [f"Question number {i}?" for i in range(10)])
POOL_REFUSED = {POOL.prompts[i] for i in (1, 4, 8)}


def test_pool_split_balances_with_a_seed(tiny_llama, monkeypatch):
    ScriptedCompletions(POOL_REFUSED).install(monkeypatch)
    pair = wb.split_by_behaviour(tiny_llama, POOL, seed=3, progress=False)
    assert pair.positive.prompts == [POOL.prompts[i] for i in (1, 4, 8)]
    assert len(pair.negative) == 3
    answered = [p for p in POOL if p not in POOL_REFUSED]
    assert set(pair.negative.prompts) <= set(answered)
    assert pair.negative.prompts == sorted(pair.negative.prompts, key=POOL.prompts.index)
    assert pair.positive.name == "pool[is_refusal]"
    assert pair.negative.name == "pool[not is_refusal]"
    record = pair.record
    assert record["method"] == "pool" and record["balance"] == {"seed": 3}
    assert record["pool"] == {"name": "pool", "n": 10, "sha256": POOL.sha256}
    assert record["positive"] == {"matched": 3, "kept": 3, "dropped": 0}
    assert record["negative"] == {"matched": 7, "kept": 3, "dropped": 4}
    assert "3 show it, 7 do not; kept 3 + 3 (balanced, seed 3)" in pair.summary()


def test_pool_split_is_deterministic(tiny_llama, monkeypatch):
    ScriptedCompletions(POOL_REFUSED).install(monkeypatch)
    runs = [wb.split_by_behaviour(tiny_llama, POOL, seed=seed, progress=False).negative.prompts
            for seed in (0, 0, 1, 2, 5)]
    assert runs[0] == runs[1]
    assert len({tuple(run) for run in runs}) > 1  # the seed chooses the subsample


def test_pool_split_without_balance_keeps_everything(tiny_llama, monkeypatch):
    ScriptedCompletions(POOL_REFUSED).install(monkeypatch)
    pair = wb.split_by_behaviour(tiny_llama, POOL, balance=False, progress=False)
    assert len(pair.positive) == 3 and len(pair.negative) == 7
    assert pair.record["balance"] is None
    assert pair.record["negative"] == {"matched": 7, "kept": 7, "dropped": 0}


@pytest.mark.parametrize("refused, empty", [((), "positive"), (POOL.prompts, "negative")])
def test_pool_split_with_one_side_empty_is_a_clear_error(tiny_llama, monkeypatch, refused,
                                                         empty):
    ScriptedCompletions(refused).install(monkeypatch)
    with pytest.raises(BehaviourFilterError,
                       match=rf"of the 10 completions of the pool 'pool'.* so the {empty} "
                             "side is empty"):
        wb.split_by_behaviour(tiny_llama, POOL, progress=False)


def test_pool_split_seed_must_be_an_integer(tiny_llama):
    with pytest.raises(InvalidArgumentError, match="seed must be an integer"):
        wb.split_by_behaviour(tiny_llama, POOL, seed=0.5, progress=False)


# -- discover(keep_if=...) -------------------------------------------------------------------


def _neurons(circuit: Circuit) -> list[tuple[int, int, float]]:
    return [(n.layer, n.index, n.score) for n in circuit.neurons]


def test_discover_keep_if_equals_discover_on_the_filtered_sets(tiny_llama, scripted,
                                                              tmp_path):
    options = dict(top_k=8, universal=None, progress=False)
    filtered = wb.discover(tiny_llama, POSITIVE, NEGATIVE, keep_if=(is_refusal, not_refusal),
                           **options)
    direct = wb.discover(tiny_llama, KEPT_POSITIVE, KEPT_NEGATIVE, **options)
    assert _neurons(filtered) == _neurons(direct)
    record = filtered.selection["filter"]
    assert record["classifiers"] == {"positive": "is_refusal", "negative": "not_refusal"}
    assert (record["positive"]["kept"], record["positive"]["dropped"]) == (3, 1)
    assert (record["negative"]["kept"], record["negative"]["dropped"]) == (3, 1)
    assert record["positive"]["source"]["sha256"] == POSITIVE.sha256
    assert filtered.prompts["positive"] == {"name": "harmful[is_refusal]", "n": 3,
                                            "sha256": PromptSet("k", KEPT_POSITIVE).sha256}
    assert "filter" not in direct.selection  # unfiltered circuits are unchanged
    loaded = Circuit.load(filtered.save(tmp_path / "filtered.json"))
    assert loaded == filtered and loaded.selection["filter"] == record
    assert not hooks_left(tiny_llama.hf_model)


def test_discover_accepts_a_filtered_pair_without_generating_again(tiny_llama, scripted):
    pair = wb.filter_by_behaviour(tiny_llama, POSITIVE, NEGATIVE, progress=False)
    calls = len(scripted.calls)
    options = dict(top_k=5, universal=None, progress=False)
    from_sources = wb.discover(tiny_llama, POSITIVE, NEGATIVE, keep_if=pair, **options)
    from_filtered = wb.discover(tiny_llama, pair.positive, pair.negative, keep_if=pair,
                                **options)
    assert len(scripted.calls) == calls
    assert _neurons(from_sources) == _neurons(from_filtered)
    assert from_sources.selection["filter"] == pair.record
    from_sources.selection["filter"]["positive"]["kept"] = -1
    assert pair.record["positive"]["kept"] == 3  # the circuit holds a copy


def test_discover_reports_the_filter_stage(tiny_llama, scripted):
    stages = []
    wb.discover(tiny_llama, POSITIVE, NEGATIVE, keep_if=(is_refusal, not_refusal), top_k=3,
                universal=None, progress=False, batch_size=4,
                on_progress=lambda stage, done, total: stages.append(stage))
    assert stages[:2] == ["filter", "filter"] and stages[2:] == ["positive", "negative"]


def test_discover_with_a_pool_split(tiny_llama, monkeypatch):
    ScriptedCompletions(POOL_REFUSED).install(monkeypatch)
    pair = wb.split_by_behaviour(tiny_llama, POOL, progress=False)
    circuit = wb.discover(tiny_llama, pair.positive, pair.negative, keep_if=pair, top_k=4,
                          universal=None, progress=False)
    assert circuit.selection["filter"]["method"] == "pool"
    assert circuit.prompts["negative"]["n"] == 3
    with pytest.raises(InvalidArgumentError, match="neither its source nor its filtered"):
        wb.discover(tiny_llama, POOL, pair.negative, keep_if=pair, progress=False)


def test_discover_refuses_a_pair_from_other_prompts(tiny_llama, scripted):
    pair = wb.filter_by_behaviour(tiny_llama, POSITIVE, NEGATIVE, progress=False)
    with pytest.raises(InvalidArgumentError, match=r"made from 'harmful'.*positive set given"):
        wb.discover(tiny_llama, ["Another prompt?"] * 3, NEGATIVE, keep_if=pair,
                    progress=False)


@pytest.mark.parametrize("keep_if", [is_refusal, (is_refusal,), (is_refusal, "no"), "refusal"])
def test_discover_refuses_a_malformed_keep_if(tiny_llama, keep_if):
    with pytest.raises(InvalidArgumentError, match="keep_if must be a pair of classifiers"):
        wb.discover(tiny_llama, POSITIVE, NEGATIVE, keep_if=keep_if, progress=False)


def test_discover_checks_the_balance_after_filtering(tiny_llama, monkeypatch):
    positive = PromptSet("p", [f"Refused question {i}?" for i in range(5)])
    negative = PromptSet("n", [f"Answered question {i}?" for i in range(5)])
    ScriptedCompletions(positive.prompts[:1]).install(monkeypatch)
    keep_if = (is_refusal, not_refusal)
    with pytest.raises(PromptSetError, match="after the behaviour filter the sets are "
                                             r"lopsided \(kept 1 of 5 positive"):
        wb.discover(tiny_llama, positive, negative, keep_if=keep_if, universal=None,
                    progress=False)
    circuit = wb.discover(tiny_llama, positive, negative, keep_if=keep_if,
                          max_imbalance=None, top_k=2, universal=None, progress=False)
    assert circuit.selection["filter"]["positive"]["kept"] == 1


def test_discover_empty_after_filter_is_a_clear_error(tiny_llama, monkeypatch):
    ScriptedCompletions(()).install(monkeypatch)
    with pytest.raises(BehaviourFilterError, match="left nothing to contrast"):
        wb.discover(tiny_llama, POSITIVE, NEGATIVE, keep_if=(is_refusal, not_refusal),
                    progress=False)


def test_public_names():
    for name in ("FilteredPair", "filter_by_behaviour", "split_by_behaviour"):
        assert name in wb.__all__ and hasattr(wb, name)
    assert FilteredPair is wb.FilteredPair
