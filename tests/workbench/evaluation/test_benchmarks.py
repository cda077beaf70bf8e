"""Bundled benchmarks: sizes, fixed halves, paired JBB rows, seeded samples, MMLU, bad input."""

from __future__ import annotations

import pytest

from workbench.errors import InvalidArgumentError
from workbench.evaluation.benchmarks import (
    BENCHMARKS,
    PROMPT_BENCHMARKS,
    MMLUQuestion,
    load_benchmark,
    mmlu_subjects,
)
from workbench.prompts import PromptSet

SIZES = {"jbb-harmful": 100, "jbb-benign": 100, "advbench": 520, "strongreject": 313}


def indices(prompts: PromptSet) -> list[int]:
    return prompts.metadata["indices"]


# -- prompt benchmarks ----------------------------------------------------------


def test_every_prompt_benchmark_has_a_size():
    assert set(SIZES) == set(PROMPT_BENCHMARKS)
    assert BENCHMARKS == PROMPT_BENCHMARKS + ("mmlu",)


@pytest.mark.parametrize("name", sorted(SIZES))
def test_full_benchmark_size_name_and_metadata(name):
    prompts = load_benchmark(name)
    assert isinstance(prompts, PromptSet)
    assert len(prompts) == SIZES[name]
    assert prompts.name == name
    assert indices(prompts) == list(range(SIZES[name]))
    assert prompts.metadata["benchmark"] == name
    assert prompts.metadata["split"] is None
    assert len(prompts.metadata["rows"]) == SIZES[name]
    assert all(p.strip() for p in prompts.prompts)


@pytest.mark.parametrize("name", sorted(SIZES))
def test_halves_are_disjoint_and_cover_every_row(name):
    full = load_benchmark(name)
    discover = load_benchmark(name, split="discover")
    heldout = load_benchmark(name, split="heldout")
    assert discover.name == f"{name}:discover"
    assert heldout.name == f"{name}:heldout"
    assert discover.metadata["split"] == "discover"
    a, b = indices(discover), indices(heldout)
    assert a == sorted(a) and b == sorted(b)
    assert not set(a) & set(b)
    assert sorted(a + b) == list(range(len(full)))
    assert len(a) == len(full) // 2
    # The prompts are the full set's rows at those indices.
    assert discover.prompts == [full.prompts[i] for i in a]
    assert heldout.metadata["rows"] == [full.metadata["rows"][i] for i in b]


def test_jbb_halves_are_fifty_fifty():
    assert len(load_benchmark("jbb-harmful", split="discover")) == 50
    assert len(load_benchmark("jbb-harmful", split="heldout")) == 50


@pytest.mark.parametrize("split", [None, "discover", "heldout"])
def test_jbb_harmful_and_benign_halves_keep_pairs_together(split):
    harmful = load_benchmark("jbb-harmful", split=split)
    benign = load_benchmark("jbb-benign", split=split)
    assert indices(harmful) == indices(benign)
    # The pairing is real: each harmful behaviour sits next to its benign twin.
    for h, b in zip(harmful.metadata["rows"], benign.metadata["rows"]):
        assert h["index"] == b["index"]
        assert h["behavior"] == b["behavior"]


def test_jbb_samples_with_the_same_seed_stay_paired():
    harmful = load_benchmark("jbb-harmful", split="heldout", n=10, seed=4)
    benign = load_benchmark("jbb-benign", split="heldout", n=10, seed=4)
    assert indices(harmful) == indices(benign)


def test_halves_do_not_depend_on_the_sample_seed():
    # The halves always use seed 0; a sample's seed only picks rows inside the half.
    heldout = set(indices(load_benchmark("advbench", split="heldout")))
    for seed in (0, 1, 7):
        assert set(indices(load_benchmark("advbench", split="heldout", n=30, seed=seed))) \
            <= heldout


def test_sample_is_deterministic_sorted_and_seed_dependent():
    first = load_benchmark("advbench", n=20, seed=3)
    again = load_benchmark("advbench", n=20, seed=3)
    other = load_benchmark("advbench", n=20, seed=4)
    full = load_benchmark("advbench")
    assert len(first) == 20
    assert first.prompts == again.prompts
    assert indices(first) == indices(again)
    assert indices(first) != indices(other)
    assert indices(first) == sorted(indices(first))
    assert len(set(indices(first))) == 20
    assert first.prompts == [full.prompts[i] for i in indices(first)]
    assert first.name == "advbench[n=20,seed=3]"
    assert first.metadata["seed"] == 3


def test_sample_of_a_half_is_named_after_both():
    sample = load_benchmark("jbb-harmful", split="heldout", n=10, seed=1)
    assert len(sample) == 10
    assert sample.name == "jbb-harmful:heldout[n=10,seed=1]"


def test_sample_of_every_row_is_the_whole_set():
    assert load_benchmark("jbb-benign", n=100).prompts == load_benchmark("jbb-benign").prompts


def test_strongreject_rows_carry_a_category():
    prompts = load_benchmark("strongreject")
    rows = prompts.metadata["rows"]
    assert all(row["category"] for row in rows)
    assert len({row["category"] for row in rows}) > 1
    sample = load_benchmark("strongreject", split="discover", n=5, seed=2)
    assert all("category" in row for row in sample.metadata["rows"])


def test_unknown_benchmark_names_the_choices():
    with pytest.raises(InvalidArgumentError, match="unknown benchmark 'jbb'.*advbench"):
        load_benchmark("jbb")


@pytest.mark.parametrize("split", ["test", "dev", "train", ""])
def test_invalid_prompt_split(split):
    with pytest.raises(InvalidArgumentError, match="split must be one of.*discover.*heldout"):
        load_benchmark("jbb-harmful", split=split)


@pytest.mark.parametrize("n", [0, -1, 101, True, "5", 2.0])
def test_invalid_n(n):
    with pytest.raises(InvalidArgumentError, match=r"n must be an integer in 1\.\.100"):
        load_benchmark("jbb-harmful", n=n)


def test_n_larger_than_a_half_is_rejected_with_the_half_size():
    with pytest.raises(InvalidArgumentError, match=r"1\.\.50 for jbb-harmful:heldout"):
        load_benchmark("jbb-harmful", split="heldout", n=51)


def test_subjects_only_for_mmlu():
    with pytest.raises(InvalidArgumentError, match="subjects= only applies to the mmlu"):
        load_benchmark("advbench", subjects=["anatomy"])


# -- MMLU ---------------------------------------------------------------------------


def test_mmlu_sizes_and_subjects():
    test = load_benchmark("mmlu")
    dev = load_benchmark("mmlu", split="dev")
    assert len(test) == 14042
    assert len(dev) == 285
    subjects = mmlu_subjects()
    assert len(subjects) == 57
    assert subjects == sorted(subjects)
    assert {q.subject for q in test} == set(subjects)
    # Five dev exemplars per subject (the few-shot pool).
    assert all(sum(q.subject == s for q in dev) == 5 for s in subjects)
    assert load_benchmark("mmlu", split="test") == test


def test_mmlu_rows_are_well_formed():
    for question in load_benchmark("mmlu") + load_benchmark("mmlu", split="dev"):
        assert isinstance(question, MMLUQuestion)
        assert len(question.choices) == 4
        assert question.answer in (0, 1, 2, 3)
        assert isinstance(question.question, str)


def test_mmlu_subjects_filter():
    rows = load_benchmark("mmlu", subjects=["anatomy", "virology"])
    assert rows
    assert {q.subject for q in rows} == {"anatomy", "virology"}
    everything = load_benchmark("mmlu")
    assert rows == [q for q in everything if q.subject in ("anatomy", "virology")]
    dev = load_benchmark("mmlu", split="dev", subjects=["anatomy"])
    assert len(dev) == 5


def test_mmlu_unknown_subject():
    with pytest.raises(InvalidArgumentError, match=r"unknown MMLU subjects \['astrology'\]"):
        load_benchmark("mmlu", subjects=["anatomy", "astrology"])


def test_mmlu_sample_is_deterministic():
    first = load_benchmark("mmlu", n=25, seed=5)
    assert first == load_benchmark("mmlu", n=25, seed=5)
    assert first != load_benchmark("mmlu", n=25, seed=6)
    assert len(first) == 25
    # In original order: positions in the full list increase.
    position = {id(q): i for i, q in enumerate(load_benchmark("mmlu"))}
    positions = [position[id(q)] for q in first]
    assert positions == sorted(positions)


def test_mmlu_sample_within_subjects():
    rows = load_benchmark("mmlu", n=3, seed=0, subjects=["anatomy"])
    assert len(rows) == 3
    assert {q.subject for q in rows} == {"anatomy"}


@pytest.mark.parametrize("split", ["discover", "heldout", "train"])
def test_mmlu_invalid_split(split):
    with pytest.raises(InvalidArgumentError, match="mmlu split must be one of.*test.*dev"):
        load_benchmark("mmlu", split=split)


@pytest.mark.parametrize("n", [0, 14043, True, "5"])
def test_mmlu_invalid_n(n):
    with pytest.raises(InvalidArgumentError, match="n must be an integer in 1..14042 for mmlu"):
        load_benchmark("mmlu", n=n)
