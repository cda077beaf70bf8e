"""Contrastive Neuron Attribution: find the neurons that best separate two prompt sets.

1. Record every MLP neuron's down-projection input at the last prompt token.
2. ``delta[l, j] = mean_positive[l, j] - mean_negative[l, j]`` (float64).
3. Exclude "universal" neurons: those among the top 0.1% by ``|activation|`` on at least
   ``universal_threshold`` of a diverse prompt set.
4. Rank all remaining neurons of all layers together by ``|delta|`` (ties by layer, then
   index) and keep ``top_k = round(fraction * n_layers * d_mlp)`` of them, sign kept.

This module holds the algorithm on statistics already collected; it runs no model.
:func:`workbench.discover` (:mod:`workbench.discovery`) runs it on a model: it collects
the statistics, applies an optional behaviour filter first, and builds the circuit.

Example:
    >>> delta = torch.tensor([[0.5, -2.0, 0.1], [1.0, 0.0, -0.3]])  # [n_layers, d_mlp]
    >>> k = circuit_size(n_layers=2, d_mlp=3, fraction=0.5)
    >>> [(n.layer, n.index, n.score) for n in select_top(delta, k)]
    [(0, 1, -2.0), (1, 0, 1.0), (0, 0, 0.5)]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .activation_stats import ActivationStats
from .circuit import Neuron
from .config import DEFAULT_FRACTION, DiscoverConfig
from .contrast import Contrast as Contrast  # re-exported: workbench.cna.Contrast
from .errors import InvalidArgumentError, PromptSetError
from .prompts import PromptSet
from .values import check_fraction, check_top_k, fraction_size

#: share of all neurons that counts as "top" on a prompt, for the universal filter
UNIVERSAL_TOP_FRACTION = 0.001


def circuit_size(n_layers: int, d_mlp: int, fraction: float | None = DEFAULT_FRACTION,
                 top_k: int | None = None) -> int:
    """Number of neurons to keep: ``top_k`` if given, else ``round(fraction * n_layers * d_mlp)``.

    Example:
        >>> circuit_size(30, 1536, 0.001)
        46
    """
    if top_k is not None:
        return check_top_k(top_k)
    return fraction_size(check_fraction(fraction), n_layers, d_mlp)


def select_top(delta: torch.Tensor, k: int, excluded: torch.Tensor | None = None,
               ) -> list[Neuron]:
    """The ``k`` neurons of largest ``|delta|``; ties broken by (layer, index).

    Args:
        delta: ``[n_layers, d_mlp]`` signed differences.
        excluded: optional bool ``[n_layers, d_mlp]``; True neurons are never chosen.

    Example:
        >>> d = torch.tensor([[0.0, -3.0], [2.0, 3.0]])
        >>> [(n.layer, n.index, n.score) for n in select_top(d, 2)]
        [(0, 1, -3.0), (1, 1, 3.0)]
    """
    magnitude = delta.abs().to(torch.float64).flatten()  # [n_layers * d_mlp]
    candidates = torch.arange(magnitude.numel())
    if excluded is not None:
        candidates = candidates[~excluded.flatten()]
    # Stable sort on the flat (layer, index) order keeps ties in (layer, index) order.
    order = torch.sort(-magnitude[candidates], stable=True).indices[:k]
    chosen = candidates[order]
    d_mlp = delta.shape[1]
    return [Neuron(int(i) // d_mlp, int(i) % d_mlp, float(delta.flatten()[i])) for i in chosen]


def universal_neurons(stats: ActivationStats,
                      threshold: float = DiscoverConfig.universal_threshold) -> torch.Tensor:
    """Bool ``[n_layers, d_mlp]``: the universal neurons of ``stats``.

    A neuron is universal when it is top by ``|activation|`` on ``>= threshold`` of prompts.
    """
    if not 0 < threshold <= 1:
        raise InvalidArgumentError(f"universal_threshold must be in (0, 1], not {threshold!r}")
    return stats.top_fraction >= threshold


def check_balance(positive: PromptSet, negative: PromptSet, max_ratio: float | None) -> None:
    """Raise :class:`PromptSetError` for an empty set, or sizes differing by > ``max_ratio``.

    ``max_ratio=None`` only checks that neither set is empty.
    """
    positive.require_nonempty("positive")
    negative.require_nonempty("negative")
    big, small = max(len(positive), len(negative)), min(len(positive), len(negative))
    if max_ratio is not None and big / small > max_ratio:
        raise PromptSetError(
            f"the prompt sets are lopsided ({len(positive)} positive vs {len(negative)} "
            f"negative, more than {max_ratio:g}x): the smaller set's mean is much noisier. "
            "Balance them, or pass max_imbalance=None (CLI: --allow-imbalance) to go on anyway"
        )


def _normalise_layers(layers: Sequence[int], n_layers: int) -> list[int]:
    result = set()
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, int) \
                or not -n_layers <= layer < n_layers:
            raise InvalidArgumentError(f"exclude_layers: {layer!r} is not a layer of this "
                             f"{n_layers}-layer model")
        result.add(layer % n_layers)
    return sorted(result)
