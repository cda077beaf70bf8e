"""Streaming statistics of activations: :class:`ActivationStats`, plain tensors only.

:func:`workbench.activations.collect` fills them batch by batch; a
:class:`~workbench.contrast.Contrast` (the statistics behind a circuit) holds them. This
module needs nothing but torch, so the circuit can name them without importing the code
that runs models. They are re-exported as ``workbench.activations.ActivationStats``.

Example:
    >>> import torch
    >>> stats = ActivationStats.empty(n_layers=1, width=2, top_k=1)
    >>> stats.update(torch.tensor([[[1.0, -3.0]], [[3.0, 1.0]]]))  # [batch, n_layers, width]
    >>> stats.n, stats.mean.tolist(), stats.top_fraction.tolist()
    (2, [[2.0, -1.0]], [[0.5, 0.5]])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ActivationStats:
    """Streaming statistics of one prompt set at one site, all layers at once.

    Attributes:
        n: number of prompts seen.
        sum: float64 ``[n_layers, width]`` sum over prompts.
        sum_sq: float64 ``[n_layers, width]`` sum of squares.
        top_counts: int64 ``[n_layers, width]``: in how many prompts the neuron was among
            the ``top_k`` largest ``|activation|`` of all layers (for the universal filter).
        top_k: how many neurons count as "top" per prompt.
        per_prompt: optional float32 ``[n, n_layers, width]`` (only with ``keep=True``),
            rows in the prompt set's order.
    """

    n: int
    sum: torch.Tensor
    sum_sq: torch.Tensor
    top_counts: torch.Tensor
    top_k: int
    per_prompt: torch.Tensor | None = None

    @classmethod
    def empty(cls, n_layers: int, width: int, top_k: int) -> ActivationStats:
        zeros = torch.zeros(n_layers, width, dtype=torch.float64)
        return cls(0, zeros, zeros.clone(), torch.zeros(n_layers, width, dtype=torch.int64),
                   top_k)

    def update(self, acts: torch.Tensor) -> None:
        """Add a batch of activations ``[batch, n_layers, width]``."""
        acts64 = acts.detach().to("cpu", torch.float64)  # [batch, n_layers, width]
        self.n += acts64.shape[0]
        self.sum += acts64.sum(dim=0)
        self.sum_sq += acts64.square().sum(dim=0)
        flat = acts64.abs().flatten(start_dim=1)  # [batch, n_layers * width]
        top = flat.topk(self.top_k, dim=1).indices.flatten()
        self.top_counts.view(-1).index_add_(0, top, torch.ones_like(top))

    @property
    def mean(self) -> torch.Tensor:
        """float64 ``[n_layers, width]`` mean over prompts."""
        return self.sum / max(self.n, 1)

    @property
    def std(self) -> torch.Tensor:
        """float64 ``[n_layers, width]`` population standard deviation over prompts."""
        return (self.sum_sq / max(self.n, 1) - self.mean.square()).clamp(min=0).sqrt()

    @property
    def top_fraction(self) -> torch.Tensor:
        """float64 ``[n_layers, width]``: share of prompts in which the neuron was top-k."""
        return self.top_counts.to(torch.float64) / max(self.n, 1)
