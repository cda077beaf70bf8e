"""The base-vs-instruct experiment on tiny random models: tables, overlap and controls."""

from __future__ import annotations

import json

import pytest
from tests.helpers import hooks_left, make_tiny_hf

import workbench
from workbench.circuit import Circuit, overlap
from workbench.compare import LOCKPICKING_PROMPT, compare_models, location
from workbench.errors import InvalidArgumentError


def _circuit(layers: list[int], n_layers: int) -> Circuit:
    return Circuit.from_neurons([(layer, i) for i, layer in enumerate(layers)], model={
        "name": "m", "architecture": "A", "n_layers": n_layers, "d_mlp": 64})


@pytest.mark.parametrize("n_layers, layers, expected", [
    # 30 layers: last 3 = 27..29, last 10% = 27..29, last quarter = 22..29
    (30, [29, 27, 26, 22, 21, 0], (2 / 6, 2 / 6, 4 / 6)),
    # 18 layers: last 3 = 15..17, last 10% = 16..17 (ceil 1.8), last quarter = 13..17
    (18, [17, 16, 15, 13, 12], (3 / 5, 2 / 5, 4 / 5)),
])
def test_location_counts_late_layers(n_layers, layers, expected):
    fractions = location(_circuit(layers, n_layers))
    assert tuple(fractions.values()) == pytest.approx(expected)


@pytest.fixture
def pair(tiny_tokenizer):
    """Two tiny llamas of one shape (the pair) and a mistral of the same shape."""
    def tiny(model_type: str, seed: int, name: str):
        # JBB prompts are long in the tiny tokenizer's tokens: give the models room.
        hf_model = make_tiny_hf(model_type, seed=seed, max_position_embeddings=512)
        return workbench.from_hf(hf_model, tiny_tokenizer, name=name)

    return tiny("llama", 0, "before"), tiny("llama", 1, "after"), tiny("mistral", 0, "other")


def test_compare_models_reports_every_table(pair, tmp_path):
    before, after, other = pair
    comparison = compare_models([before, after, other], n=2, strongreject_n=2,
                                multipliers=[0, 1], max_new_tokens=4, out_dir=tmp_path,
                                progress=False)
    a, b, c = comparison.models
    assert [m.name for m in comparison.models] == ["before", "after", "other"]

    located = comparison.location_table().set_index("model")
    for m in comparison.models:
        assert located.loc[m.name, "neurons"] == len(m.circuit)
        assert located.loc[m.name, "last_quarter_layers"] == location(m.circuit)[
            "last_quarter_layers"]

    expected = overlap(a.circuit, b.circuit)
    row = comparison.overlap_table().iloc[0]
    assert (row["shared"], row["jaccard"]) == (expected.n_shared, expected.jaccard)

    steering = comparison.steering_table()
    assert set(steering["model"]) == {"before", "after"}  # by default: all but the last
    assert set(steering["benchmark"]) == {"jbb-harmful:heldout[n=2,seed=0]",
                                          "jbb-benign:heldout[n=2,seed=0]",
                                          "strongreject[n=2,seed=0]"}
    for model in ("before", "after"):
        rows = steering[steering["model"] == model]
        # the circuit at both multipliers (x1 is the baseline); the control only at 0
        assert sorted(rows["kind"].value_counts().items()) == [("cna", 6), ("random", 3)]
        assert set(rows.loc[rows["kind"] == "random", "multiplier"]) == {0.0}
        assert rows["n"].tolist() == [2] * len(rows)

    locks = comparison.lockpicking_table()
    assert len(locks) == 9 and set(locks["multiplier"]) == {0.0, 1.0, 2.0}
    unchanged = locks[locks["multiplier"] == 1.0].set_index("model")["completion"]
    assert unchanged["before"] == workbench.generate(before, LOCKPICKING_PROMPT,
                                                     max_new_tokens=4)[0]
    for model in (before, after, other):
        assert not hooks_left(model.hf_model)

    saved = json.loads((tmp_path / "comparison.json").read_text())
    assert saved["overlap"][0]["shared"] == expected.n_shared
    assert Circuit.load(tmp_path / "circuit-after.json").keys() == b.circuit.keys()
    assert "Overlap of the pair's circuits" in comparison.report()


def test_no_pair_overlap_across_architectures(pair):
    before, _, other = pair
    comparison = compare_models([other, before], steered=0, n=2, strongreject_n=0,
                                max_new_tokens=2, progress=False)
    assert comparison.pair_overlap is None and comparison.overlap_table().empty
    assert comparison.steering_table().empty


def test_bad_arguments_are_refused(pair):
    with pytest.raises(InvalidArgumentError, match="at least one model"):
        compare_models([])
    with pytest.raises(Exception, match="multiplier"):
        compare_models([pair[0]], multipliers=["lots"], progress=False)


def test_discover_n_subsets_the_discovery_halves(pair):
    before = pair[0]
    comparison = compare_models([before], steered=0, discover_n=3, strongreject_n=0,
                                max_new_tokens=2, progress=False)
    refs = comparison.models[0].circuit.prompts
    assert (refs["positive"]["n"], refs["negative"]["n"]) == (3, 3)
    assert comparison.settings["discover_n"] == 3


def test_the_same_model_twice_is_refused(pair):
    with pytest.raises(InvalidArgumentError, match="same model twice"):
        compare_models(["smollm2-135m-instruct", "smollm2-135m-instruct"])
    with pytest.raises(InvalidArgumentError, match=r"same model twice in \['before', 'before'\]"):
        compare_models([pair[0], pair[0]])  # refused before any model runs
