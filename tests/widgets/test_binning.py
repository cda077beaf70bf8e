"""Max-|delta| binning against a brute-force loop, full resolution, bin lookup."""

from __future__ import annotations

import numpy as np
import pytest

from widgets.binning import bin_max_abs


def brute_force(delta: np.ndarray, max_bins: int, start: int, stop: int):
    """Bins of width ceil(span / max_bins) from start; per bin the first max-|x| element."""
    width = -(-(stop - start) // max_bins)
    values, neurons = [], []
    for row in delta:
        row_values, row_neurons = [], []
        for lo in range(start, stop, width):
            hi = min(lo + width, stop)
            best = lo
            for j in range(lo, hi):
                if abs(row[j]) > abs(row[best]):
                    best = j
            row_values.append(row[best])
            row_neurons.append(best)
        values.append(row_values)
        neurons.append(row_neurons)
    return np.array(values), np.array(neurons), width


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (4, 97), (5, 100), (2, 1013)])
@pytest.mark.parametrize("max_bins", [1, 3, 10, 64, 5000])
def test_matches_brute_force(shape, max_bins):
    delta = np.random.default_rng(sum(shape) + max_bins).standard_normal(shape)
    binned = bin_max_abs(delta, max_bins)
    values, neurons, width = brute_force(delta, max_bins, 0, shape[1])
    assert binned.width == width
    assert binned.values.shape[1] <= max_bins
    np.testing.assert_array_equal(binned.values, values)
    np.testing.assert_array_equal(binned.neurons, neurons)
    # Bins tile the range exactly.
    assert binned.starts[0] == 0 and binned.stops[-1] == shape[1]
    np.testing.assert_array_equal(binned.starts[1:], binned.stops[:-1])


@pytest.mark.parametrize("start, stop, max_bins", [(5, 96, 7), (0, 50, 50), (33, 34, 10),
                                                   (10, 97, 4), (90, 200, 3)])
def test_sub_ranges_match_brute_force(start, stop, max_bins):
    delta = np.random.default_rng(start).standard_normal((3, 97))
    binned = bin_max_abs(delta, max_bins, start, stop)
    stop = min(stop, 97)
    values, neurons, _ = brute_force(delta, max_bins, start, stop)
    np.testing.assert_array_equal(binned.values, values)
    np.testing.assert_array_equal(binned.neurons, neurons)
    assert binned.starts[0] == start and binned.stops[-1] == stop


def test_sign_of_the_largest_magnitude_is_kept():
    delta = np.array([[0.1, -5.0, 2.0], [0.0, 0.0, 0.0], [3.0, -3.0, 1.0]])
    binned = bin_max_abs(delta, 1)
    assert binned.values[:, 0].tolist() == [-5.0, 0.0, 3.0]  # ties: lowest index
    assert binned.neurons[:, 0].tolist() == [1, 0, 0]


def test_padding_never_wins_in_a_short_last_bin():
    delta = -np.ones((2, 10)) * 1e-9  # tiny negatives; the last bin holds 1 of 3 slots
    binned = bin_max_abs(delta, 4)
    assert binned.width == 3 and binned.stops[-1] == 10
    assert np.all(binned.values == -1e-9)
    assert binned.neurons[0, -1] == 9


def test_narrow_range_is_full_resolution():
    delta = np.random.default_rng(1).standard_normal((6, 2000))
    binned = bin_max_abs(delta, 400, 1200, 1500)
    assert binned.full_resolution
    np.testing.assert_array_equal(binned.values, delta[:, 1200:1500])
    np.testing.assert_array_equal(binned.centers, np.arange(1200, 1500))


def test_bin_of_finds_the_bin_of_every_neuron():
    binned = bin_max_abs(np.zeros((1, 103)), 10)
    for j in range(103):
        b = binned.bin_of(j)
        assert binned.starts[b] <= j < binned.stops[b]
    for b, centre in enumerate(binned.centers):
        assert binned.bin_of(centre) == b
    assert binned.bin_of(-40) == 0 and binned.bin_of(10**6) == len(binned.starts) - 1


def test_the_largest_supported_width_bins_to_max_bins():
    delta = np.random.default_rng(2).standard_normal((80, 29568)).astype(np.float32)
    binned = bin_max_abs(delta, 400)
    assert binned.values.shape == (80, 400)
    flat = np.abs(delta).argmax(axis=1)
    # Each layer's overall max-|delta| neuron is the max of the bin that holds it.
    for layer in range(0, 80, 7):
        b = binned.bin_of(flat[layer])
        assert binned.neurons[layer, b] == flat[layer]
        assert binned.values[layer, b] == delta[layer, flat[layer]]


@pytest.mark.parametrize("bad", [np.zeros(5), np.zeros((2, 3, 4))])
def test_refuses_arrays_that_are_not_two_dimensional(bad):
    with pytest.raises(ValueError, match="n_layers, d_mlp"):
        bin_max_abs(bad, 3)


@pytest.mark.parametrize("max_bins", [0, -1, 2.5, True])
def test_refuses_bad_bin_counts(max_bins):
    with pytest.raises(ValueError, match="max_bins"):
        bin_max_abs(np.zeros((2, 3)), max_bins)
