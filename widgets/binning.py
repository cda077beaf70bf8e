"""Aggregate a wide ``[n_layers, d_mlp]`` map into bins for drawing.

A model with 80 layers of 29,568 neurons has 2.4 million deltas: too many cells to draw.
:func:`bin_max_abs` splits a neuron range into at most ``max_bins`` equal bins per layer
and keeps, for each bin, the element of largest ``|delta|`` with its sign (so a strong
negative neuron is not averaged away by its neighbours), and which neuron it was. When
the range has no more neurons than ``max_bins``, every bin is one neuron: full resolution.

Example:
    >>> import numpy as np
    >>> delta = np.array([[0.1, -0.9, 0.3, 0.2, 0.5]])
    >>> b = bin_max_abs(delta, max_bins=2)
    >>> b.values.tolist(), b.neurons.tolist(), b.starts.tolist(), b.width
    ([[-0.9, 0.5]], [[1, 4]], [0, 3], 3)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Binned:
    """Bins of one neuron range ``[start, stop)`` of every layer.

    Attributes:
        values: ``[n_layers, n_bins]``: the signed value of the max-``|delta|`` element.
        neurons: ``[n_layers, n_bins]`` int: the neuron index of that element.
        starts: ``[n_bins]`` int: first neuron of each bin.
        stops: ``[n_bins]`` int: one past the last neuron of each bin.
        width: neurons per bin (the last bin may hold fewer).
    """

    values: np.ndarray
    neurons: np.ndarray
    starts: np.ndarray
    stops: np.ndarray
    width: int

    @property
    def centers(self) -> np.ndarray:
        """``[n_bins]`` x position of each bin: the middle of its neuron range."""
        return (self.starts + self.stops - 1) / 2

    @property
    def full_resolution(self) -> bool:
        return self.width == 1

    def bin_of(self, x: float) -> int:
        """The bin that holds neuron position ``x`` (clipped to the binned range)."""
        i = int(np.searchsorted(self.stops, math.floor(x + 0.5), side="right"))
        return min(max(i, 0), len(self.starts) - 1)


def bin_max_abs(delta: np.ndarray, max_bins: int, start: int = 0,
                stop: int | None = None) -> Binned:
    """Max-``|delta|`` bins (sign kept) over neurons ``[start, stop)`` of every layer.

    Args:
        delta: ``[n_layers, d_mlp]`` values.
        max_bins: largest number of bins per layer; the bin width is
            ``ceil((stop - start) / max_bins)``.
        start, stop: the neuron range (default: all neurons); clipped to ``[0, d_mlp]``.

    Ties keep the lowest neuron index.
    """
    values = np.asarray(delta)
    if values.ndim != 2:
        raise ValueError(f"delta must be [n_layers, d_mlp], not shape {values.shape}")
    if isinstance(max_bins, bool) or not isinstance(max_bins, (int, np.integer)) \
            or max_bins < 1:
        raise ValueError(f"max_bins must be a positive integer, not {max_bins!r}")
    n_layers, d_mlp = values.shape
    start = max(0, min(int(start), d_mlp - 1))
    stop = d_mlp if stop is None else max(start + 1, min(int(stop), d_mlp))
    span = stop - start
    width = math.ceil(span / max_bins)
    n_bins = math.ceil(span / width)
    block = values[:, start:stop]  # [n_layers, span]
    pad = n_bins * width - span
    if pad:
        # Zeros never beat a real element: argmax keeps the first of equal |values|.
        block = np.pad(block, ((0, 0), (0, pad)))
    blocks = block.reshape(n_layers, n_bins, width)  # [n_layers, n_bins, width]
    local = np.abs(blocks).argmax(axis=2)  # [n_layers, n_bins]
    picked = np.take_along_axis(blocks, local[..., None], axis=2)[..., 0]  # [n_layers, n_bins]
    starts = start + np.arange(n_bins) * width  # [n_bins]
    stops = np.minimum(starts + width, stop)
    return Binned(values=picked, neurons=starts[None, :] + local, starts=starts, stops=stops,
                  width=width)
