"""A fixed random vector to fingerprint weights with: ``weight @ probe`` changes when any
weight does, at the cost of one matrix-vector product (used by the statistics cache's key
and by packed layers to notice an edited weight).
"""

from __future__ import annotations

import functools

import torch


@functools.cache
def fixed_probe(width: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The same standard-normal vector of ``width`` values every call (seed 0).

    Example:
        >>> import torch
        >>> probe = fixed_probe(4)
        >>> probe.shape, torch.equal(probe, fixed_probe(4))
        (torch.Size([4]), True)
        >>> fixed_probe(4, torch.float64).dtype
        torch.float64
    """
    return torch.randn(width, generator=torch.Generator().manual_seed(0),
                       dtype=dtype)  # [width]
