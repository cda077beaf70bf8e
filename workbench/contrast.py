"""The statistics behind a circuit: :class:`Contrast`, kept in memory for plots.

:func:`~workbench.discover` makes one from the activations of the two prompt sets and
stores it as ``circuit.contrast``; it is never serialised. It lives below
:mod:`workbench.circuit`, which names it, and is re-exported as ``workbench.cna.Contrast``.

Example:
    >>> import torch
    >>> from workbench.activation_stats import ActivationStats
    >>> positive, negative = ActivationStats.empty(2, 3, 1), ActivationStats.empty(2, 3, 1)
    >>> contrast = Contrast(positive, negative, positive.mean - negative.mean,
    ...                     torch.zeros(2, 3, dtype=torch.bool))
    >>> contrast.delta.shape, contrast.universal_stats is None
    (torch.Size([2, 3]), True)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .activation_stats import ActivationStats


@dataclass
class Contrast:
    """The statistics behind a circuit, kept in memory for plots (not serialised).

    ``delta``, ``universal`` are ``[n_layers, d_mlp]`` (float64 and bool).
    """

    positive: ActivationStats
    negative: ActivationStats
    delta: torch.Tensor
    universal: torch.Tensor
    universal_stats: ActivationStats | None = None
