"""The pure selection maths of CNA and the streaming statistics behind it (no model)."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from workbench.activations import ActivationStats
from workbench.circuit import Neuron
from workbench.cna import (_normalise_layers, check_balance, circuit_size, select_top,
                           universal_neurons)
from workbench.errors import InvalidArgumentError, PromptSetError
from workbench.prompts import PromptSet


def as_tuples(neurons: list[Neuron]) -> list[tuple[int, int, float]]:
    return [(n.layer, n.index, n.score) for n in neurons]


# -- circuit_size ------------------------------------------------------------------


@pytest.mark.parametrize("n_layers, d_mlp, fraction, expected", [
    (30, 1536, 0.001, 46),     # 46.08
    (30, 1536, 0.01, 461),     # 460.8: rounded, not truncated
    (30, 1536, 1, 46080),      # every neuron
    (2, 10, 0.1, 2),
    (30, 1536, 1e-9, 1),       # never empty
])
def test_circuit_size_from_fraction(n_layers, d_mlp, fraction, expected):
    assert circuit_size(n_layers, d_mlp, fraction) == expected


def test_circuit_size_default_fraction():
    assert circuit_size(30, 1536) == 46


@pytest.mark.parametrize("fraction", [0.001, None])
def test_top_k_overrides_fraction(fraction):
    assert circuit_size(30, 1536, fraction, top_k=200) == 200
    assert circuit_size(30, 1536, fraction, top_k=1) == 1


@pytest.mark.parametrize("fraction", [0, 0.0, -1, 1.5, True, False, "x", None, "0.001"])
def test_invalid_fraction(fraction):
    with pytest.raises(InvalidArgumentError, match="fraction"):
        circuit_size(30, 1536, fraction)


@pytest.mark.parametrize("top_k", [0, -1, 1.5, True, "x", 10.0])
def test_invalid_top_k(top_k):
    with pytest.raises(InvalidArgumentError, match="top_k"):
        circuit_size(30, 1536, 0.001, top_k=top_k)


# -- select_top --------------------------------------------------------------------


def test_select_top_orders_by_magnitude_and_keeps_sign():
    delta = torch.tensor([[0.5, -7.0, 1.0, 0.0],
                          [2.0, 0.25, -3.0, 6.0],
                          [-0.75, 4.0, 0.1, -5.0]], dtype=torch.float64)
    assert as_tuples(select_top(delta, 5)) == [
        (0, 1, -7.0), (1, 3, 6.0), (2, 3, -5.0), (2, 1, 4.0), (1, 2, -3.0)]


def test_select_top_breaks_exact_ties_by_layer_then_index():
    delta = torch.zeros(3, 4)
    for layer, index, value in [(2, 0, 2.0), (0, 3, -2.0), (1, 1, 2.0), (0, 1, -2.0),
                                (2, 3, -2.0), (1, 0, 9.0)]:
        delta[layer, index] = value
    assert as_tuples(select_top(delta, 6)) == [
        (1, 0, 9.0), (0, 1, -2.0), (0, 3, -2.0), (1, 1, 2.0), (2, 0, 2.0), (2, 3, -2.0)]


def test_select_top_cuts_within_a_tie_by_position():
    delta = torch.tensor([[1.0, -1.0], [1.0, -1.0]])
    assert [n.key for n in select_top(delta, 3)] == [(0, 0), (0, 1), (1, 0)]


def test_select_top_honours_excluded_mask():
    delta = torch.tensor([[10.0, -9.0, 1.0],
                          [8.0, 0.5, -7.0]])
    excluded = torch.tensor([[True, False, False],
                             [False, False, True]])
    assert as_tuples(select_top(delta, 3, excluded)) == [
        (0, 1, -9.0), (1, 0, 8.0), (0, 2, 1.0)]


def test_select_top_with_more_k_than_candidates_returns_all_candidates():
    delta = torch.tensor([[3.0, -1.0], [2.0, 4.0]])
    excluded = torch.tensor([[False, True], [False, True]])
    assert as_tuples(select_top(delta, 10, excluded)) == [(0, 0, 3.0), (1, 0, 2.0)]
    assert len(select_top(delta, 100)) == 4


def test_select_top_everything_excluded():
    delta = torch.ones(2, 3)
    assert select_top(delta, 3, torch.ones(2, 3, dtype=torch.bool)) == []


def test_select_top_scores_are_python_floats_of_delta():
    delta = torch.tensor([[0.1, -0.3]], dtype=torch.float32)
    neurons = select_top(delta, 2)
    assert all(type(n.score) is float for n in neurons)
    assert [n.score for n in neurons] == [float(delta[0, 1]), float(delta[0, 0])]


@pytest.mark.parametrize("seed", range(5))
def test_select_top_matches_a_plain_sort(seed):
    """Against an independent reference, on small integers so that ties are common."""
    generator = torch.Generator().manual_seed(seed)
    delta = torch.randint(-4, 5, (6, 7), generator=generator).to(torch.float64)
    excluded = torch.rand(6, 7, generator=generator) < 0.3
    reference = sorted(
        (-abs(delta[l, i].item()), l, i)
        for l in range(6) for i in range(7) if not excluded[l, i]
    )
    for k in (1, 5, 17, 42):
        expected = [(l, i, delta[l, i].item()) for _, l, i in reference[:k]]
        assert as_tuples(select_top(delta, k, excluded)) == expected


# -- ActivationStats ---------------------------------------------------------------


def make_acts(n: int, n_layers: int = 3, width: int = 5, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, n_layers, width, generator=generator, dtype=torch.float64) * 3 + 2


def test_empty_stats():
    stats = ActivationStats.empty(3, 5, top_k=2)
    assert stats.n == 0
    for buffer in (stats.sum, stats.sum_sq, stats.mean, stats.std, stats.top_fraction):
        assert buffer.shape == (3, 5) and not buffer.any()
    assert stats.sum.dtype == stats.sum_sq.dtype == torch.float64
    assert stats.top_counts.dtype == torch.int64


@pytest.mark.parametrize("batch_sizes", [[23], [1] * 23, [1, 7, 10, 5], [16, 7]])
def test_streaming_matches_all_at_once(batch_sizes):
    acts = make_acts(sum(batch_sizes))
    stats = ActivationStats.empty(3, 5, top_k=2)
    for batch in acts.split(batch_sizes):
        stats.update(batch)
    assert stats.n == 23
    assert stats.mean.dtype == stats.std.dtype == torch.float64
    assert_close(stats.mean, acts.mean(dim=0))
    assert_close(stats.std, acts.std(dim=0, correction=0))

    at_once = ActivationStats.empty(3, 5, top_k=2)
    at_once.update(acts)
    assert_close(stats.sum, at_once.sum)
    assert_close(stats.sum_sq, at_once.sum_sq)
    assert torch.equal(stats.top_counts, at_once.top_counts)


def test_buffers_keep_their_shape():
    stats = ActivationStats.empty(3, 5, top_k=2)
    for step in range(50):
        stats.update(make_acts(4, seed=step))
        assert stats.sum.shape == stats.sum_sq.shape == stats.top_counts.shape == (3, 5)
    assert stats.n == 200
    assert stats.per_prompt is None
    assert stats.top_counts.sum() == 200 * 2  # top_k per prompt


def test_constant_activations_have_zero_std():
    stats = ActivationStats.empty(2, 3, top_k=1)
    stats.update(torch.full((10, 2, 3), 0.1, dtype=torch.float64))
    assert torch.equal(stats.std, torch.zeros(2, 3, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_batches_accumulate_in_float64(dtype):
    stats = ActivationStats.empty(1, 2, top_k=1)
    # 1000 and 1 are exact in both dtypes, but sums like 100000 or 1e8 (one batch) overflow
    # float16 and are not representable in bfloat16, nor is 301.
    for _ in range(3):
        stats.update(torch.tensor([[[1000.0, 1.0]]] * 100, dtype=dtype))  # [100, 1, 2]
    stats.update(torch.tensor([[[1000.0, 1.0]]], dtype=dtype))
    assert stats.sum.dtype == stats.sum_sq.dtype == torch.float64
    assert stats.sum.tolist() == [[301000.0, 301.0]]
    assert stats.sum_sq.tolist() == [[301000000.0, 301.0]]
    assert stats.mean.tolist() == [[1000.0, 1.0]]
    assert torch.equal(stats.std, torch.zeros(1, 2, dtype=torch.float64))


def test_low_precision_values_are_kept_exactly():
    half = torch.tensor([[[0.1, -0.3]], [[0.7, 0.2]]], dtype=torch.float16)
    stats = ActivationStats.empty(1, 2, top_k=1)
    stats.update(half)
    assert_close(stats.mean, half.to(torch.float64).mean(dim=0), rtol=0, atol=0)


# -- universal neurons -------------------------------------------------------------


def spiky_acts(spikes: list[tuple[int, int, float]], n_layers: int = 2,
               width: int = 3) -> torch.Tensor:
    """One prompt per spike: small distinct background, one large |activation|."""
    background = torch.arange(n_layers * width, dtype=torch.float64).view(n_layers, width)
    rows = []
    for layer, index, value in spikes:
        row = background * 0.01
        row[layer, index] = value
        rows.append(row)
    return torch.stack(rows)  # [n_prompts, n_layers, width]


@pytest.fixture
def universal_stats() -> ActivationStats:
    """5 prompts, top_k=1: (1, 2) is top in 4 of them (0.8), (0, 0) in 1 (0.2)."""
    stats = ActivationStats.empty(2, 3, top_k=1)
    acts = spiky_acts([(1, 2, -10.0), (0, 0, 7.0), (1, 2, 9.0), (1, 2, -8.0), (1, 2, 5.0)])
    stats.update(acts[:2])  # in two batches
    stats.update(acts[2:])
    return stats


def test_top_counts_use_absolute_value(universal_stats):
    expected = torch.zeros(2, 3, dtype=torch.int64)
    expected[1, 2] = 4
    expected[0, 0] = 1
    assert torch.equal(universal_stats.top_counts, expected)
    assert universal_stats.top_fraction[1, 2].item() == 0.8


@pytest.mark.parametrize("threshold, expected", [
    (0.8, {(1, 2)}),           # >= threshold: exactly 0.8 counts
    (0.81, set()),
    (1.0, set()),
    (0.2, {(1, 2), (0, 0)}),
    (0.19, {(1, 2), (0, 0)}),
    (0.21, {(1, 2)}),
])
def test_universal_threshold(universal_stats, threshold, expected):
    mask = universal_neurons(universal_stats, threshold)
    assert mask.dtype == torch.bool and mask.shape == (2, 3)
    assert {tuple(ix) for ix in mask.nonzero().tolist()} == expected


def test_universal_top_is_over_all_layers_together():
    """Top-k is taken over every neuron of every layer, not per layer."""
    stats = ActivationStats.empty(2, 3, top_k=2)
    acts = torch.tensor([[[0.1, 0.2, 0.3], [5.0, -6.0, 0.0]]] * 4, dtype=torch.float64)
    stats.update(acts)
    assert universal_neurons(stats, 1.0).tolist() == [[False, False, False],
                                                      [True, True, False]]


def test_universal_default_threshold(universal_stats):
    assert torch.equal(universal_neurons(universal_stats),
                       universal_neurons(universal_stats, 0.8))


@pytest.mark.parametrize("threshold", [0, 0.0, -0.5, 1.01, 2])
def test_invalid_universal_threshold(universal_stats, threshold):
    with pytest.raises(InvalidArgumentError, match="universal_threshold"):
        universal_neurons(universal_stats, threshold)


# -- check_balance -----------------------------------------------------------------


def prompts(n: int, name: str = "s") -> PromptSet:
    return PromptSet(name, [f"{name} prompt {i}" for i in range(n)])


@pytest.mark.parametrize("n_pos, n_neg", [(8, 8), (4, 16), (16, 4), (10, 7), (1, 1)])
def test_balanced_sets_pass(n_pos, n_neg):
    check_balance(prompts(n_pos, "pos"), prompts(n_neg, "neg"), max_ratio=4)


@pytest.mark.parametrize("n_pos, n_neg", [(1, 10), (10, 1), (4, 17)])
def test_lopsided_sets_fail(n_pos, n_neg):
    with pytest.raises(PromptSetError, match="lopsided") as info:
        check_balance(prompts(n_pos, "pos"), prompts(n_neg, "neg"), max_ratio=4)
    message = str(info.value)
    assert f"{n_pos} positive vs {n_neg} negative" in message
    assert "max_imbalance=None" in message and "--allow-imbalance" in message


def test_larger_ratio_allows_lopsided_sets():
    check_balance(prompts(1, "pos"), prompts(10, "neg"), max_ratio=10)


@pytest.mark.parametrize("n_pos, n_neg, role", [(0, 5, "positive"), (5, 0, "negative"),
                                                (0, 0, "positive")])
def test_empty_set_fails(n_pos, n_neg, role):
    with pytest.raises(PromptSetError, match=f"the {role} set .* is empty"):
        check_balance(prompts(n_pos, "pos"), prompts(n_neg, "neg"), max_ratio=4)


# -- _normalise_layers -------------------------------------------------------------


@pytest.mark.parametrize("layers, expected", [
    ([], []),
    ([0, 29], [0, 29]),
    ([-1], [29]),
    ([-30], [0]),
    ([5, -1, 29, 5, 2], [2, 5, 29]),   # wrapped, deduplicated, sorted
    ((-2, -3), [27, 28]),
])
def test_normalise_layers(layers, expected):
    assert _normalise_layers(layers, 30) == expected


@pytest.mark.parametrize("bad", [30, -31, 100, True, False, 1.0, "1", None])
def test_normalise_layers_rejects(bad):
    with pytest.raises(InvalidArgumentError, match="not a layer of this 30-layer model"):
        _normalise_layers([0, bad], 30)
