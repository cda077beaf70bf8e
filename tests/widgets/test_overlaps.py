"""Venn regions, Jaccard and tables against plain set arithmetic."""

from __future__ import annotations

import pytest
from tests.widgets.widget_fixtures import random_circuit, random_keys

from workbench.circuit import overlap
from workbench.errors import CircuitMismatchError, InvalidArgumentError
from widgets.overlaps import (jaccard, memberships, pairwise, region_label, region_table,
                              venn_regions)


@pytest.mark.parametrize("seed", range(5))
def test_two_circuits_match_set_arithmetic(seed):
    a, b = random_keys(seed, 30), random_keys(seed + 100, 25)
    regions = venn_regions([random_circuit(a), random_circuit(b, seed=1)])
    assert regions == {(True, False): a - b, (False, True): b - a, (True, True): a & b}


@pytest.mark.parametrize("seed", range(5))
def test_three_circuits_match_set_arithmetic(seed):
    a, b, c = random_keys(seed, 40), random_keys(seed + 10, 35), random_keys(seed + 20, 30)
    circuits = [random_circuit(a), random_circuit(b, seed=1), random_circuit(c, seed=2)]
    regions = venn_regions(circuits)
    assert regions == {
        (True, False, False): a - b - c, (False, True, False): b - a - c,
        (False, False, True): c - a - b, (True, True, False): (a & b) - c,
        (True, False, True): (a & c) - b, (False, True, True): (b & c) - a,
        (True, True, True): a & b & c,
    }
    assert sum(len(r) for r in regions.values()) == len(a | b | c)
    assert jaccard(circuits) == len(a & b & c) / len(a | b | c)


def test_pairwise_agrees_with_the_library_overlap():
    circuits = [random_circuit(random_keys(s, 20), seed=s) for s in range(3)]
    table = pairwise(circuits, ["A", "B", "C"])
    assert list(zip(table["a"], table["b"])) == [("A", "B"), ("A", "C"), ("B", "C")]
    for row, (i, j) in zip(table.itertuples(), [(0, 1), (0, 2), (1, 2)]):
        expected = overlap(circuits[i], circuits[j])
        assert (row.n_shared, row.jaccard) == (expected.n_shared, expected.jaccard)


def test_region_table_lists_neurons_with_each_score():
    a = random_circuit({(0, 1), (1, 2), (3, 4)}, seed=1)
    b = random_circuit({(1, 2), (3, 4), (2, 9)}, seed=2)
    table = region_table([a, b], ["A", "B"], (True, True))
    assert list(table.columns) == ["layer", "index", "score (A)", "score (B)"]
    assert list(zip(table["layer"], table["index"])) == [(1, 2), (3, 4)]
    scores_a = {n.key: n.score for n in a.neurons}
    scores_b = {n.key: n.score for n in b.neurons}
    assert table["score (A)"].tolist() == [scores_a[(1, 2)], scores_a[(3, 4)]]
    assert table["score (B)"].tolist() == [scores_b[(1, 2)], scores_b[(3, 4)]]
    only_b = region_table([a, b], ["A", "B"], (False, True))
    assert list(only_b.columns) == ["layer", "index", "score (B)"]
    assert only_b[["layer", "index"]].values.tolist() == [[2, 9]]


def test_empty_regions_and_circuits():
    a, b = random_circuit(set()), random_circuit(set())
    assert all(not keys for keys in venn_regions([a, b]).values())
    assert jaccard([a, b]) == 0.0


def test_labels_and_order():
    assert memberships(3)[:3] == [(True, False, False), (False, True, False),
                                  (False, False, True)]
    assert memberships(3)[-1] == (True, True, True)
    assert region_label((True, False, True), ["A", "B", "C"]) == "A ∩ C"
    assert region_label((True, False), ["base", "instruct"]) == "base only"


def test_bad_input_is_refused():
    one = random_circuit({(0, 1)})
    with pytest.raises(InvalidArgumentError, match="two or three"):
        venn_regions([one])
    with pytest.raises(InvalidArgumentError, match="two or three"):
        venn_regions([one] * 4)
    with pytest.raises(CircuitMismatchError, match="differently shaped"):
        venn_regions([one, random_circuit({(0, 1)}, d_mlp=64)])
    with pytest.raises(InvalidArgumentError, match="not a region"):
        region_table([one, one], ["A", "B"], (False, False))
