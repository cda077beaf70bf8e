"""The allowed values of steering and circuit-size arguments, and their checks, once.

Every module that takes ``signs``, ``positions``, a multiplier, a token budget or a circuit
size checks it here, so an argument is refused with the same error and the same message
wherever it is given (the library, the widgets, the ``cna`` command's choices). This module
imports only the standard library and :mod:`workbench.errors`, so that any module can use
it: the circuit, the configs, the activation sites and steering.

- ``signs``: which circuit neurons to scale: ``"all"``, those with ``"positive"`` or
  with ``"negative"`` score (:data:`SIGNS`).
- ``positions``: which token positions an edit acts on: ``"all"``, the ``"prompt"`` only
  or the ``"generated"`` tokens only (:data:`POSITIONS`).
- the circuit size: ``top_k`` neurons (a positive integer), or ``fraction`` of all MLP
  neurons (a number in (0, 1]), that is ``round(fraction * n_layers * d_mlp)`` neurons and
  at least one (:func:`fraction_size`).

Bad signs, positions, multipliers and token budgets raise
:class:`~workbench.errors.SteeringError` (an :class:`~workbench.errors.InvalidArgumentError`);
a bad circuit size raises :class:`~workbench.errors.InvalidArgumentError`.

Example:
    >>> SIGNS, POSITIONS
    (('all', 'positive', 'negative'), ('all', 'prompt', 'generated'))
    >>> check_multiplier(0), fraction_size(0.001, 30, 1536)
    (0.0, 46)
    >>> check_signs("both")
    Traceback (most recent call last):
    ...
    workbench.errors.SteeringError: signs must be one of ('all', 'positive', 'negative'), ...
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Literal, get_args

from .errors import InvalidArgumentError, SteeringError

#: which circuit neurons a steering edit scales
Signs = Literal["all", "positive", "negative"]
SIGNS: tuple[Signs, ...] = get_args(Signs)

#: which token positions an edit acts on (see :class:`workbench.sites.Phase`)
Positions = Literal["all", "prompt", "generated"]
POSITIONS: tuple[Positions, ...] = get_args(Positions)


def check_multiplier(multiplier: Any, what: str = "multiplier") -> float:
    """Return ``multiplier`` as a float, or raise :class:`SteeringError` if it is not a number.

    A one-element tensor counts as its number.

    Example:
        >>> check_multiplier(0)
        0.0
    """
    import torch  # here, so that importing this module stays light (the configs use it)

    if isinstance(multiplier, torch.Tensor) and multiplier.numel() == 1:
        multiplier = multiplier.item()
    if isinstance(multiplier, bool) or not isinstance(multiplier, numbers.Real):
        raise SteeringError(
            f"{what} must be a number (0 ablates, 1 leaves the model unchanged, >1 amplifies), "
            f"not {multiplier!r}"
        )
    value = float(multiplier)
    if not math.isfinite(value):
        raise SteeringError(f"{what} must be finite, not {value}")
    return value


def check_positions(positions: Any) -> None:
    """Refuse a ``positions`` value that is not one of :data:`POSITIONS`."""
    if positions not in POSITIONS:
        raise SteeringError(f"positions must be one of {POSITIONS}, not {positions!r}")


def check_signs(signs: Any) -> None:
    """Refuse a ``signs`` value that is not one of :data:`SIGNS`."""
    if signs not in SIGNS:
        raise SteeringError(f"signs must be one of {SIGNS}, not {signs!r}")


def check_positions_signs(positions: Any, signs: Any) -> None:
    """Refuse ``positions`` / ``signs`` values that :func:`workbench.steer` does not know."""
    check_positions(positions)
    check_signs(signs)


def check_max_new_tokens(max_new_tokens: Any) -> None:
    """Refuse a token budget that is not a positive integer (a bool is not one)."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) \
            or max_new_tokens < 1:
        raise SteeringError(f"max_new_tokens must be a positive integer, not {max_new_tokens!r}")


def check_top_k(top_k: Any) -> int:
    """Return ``top_k``, a circuit size in neurons, or refuse it unless a positive integer.

    Example:
        >>> check_top_k(200)
        200
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise InvalidArgumentError(f"top_k must be a positive integer, not {top_k!r}")
    return top_k


def check_fraction(fraction: Any) -> float:
    """Return ``fraction``, a circuit size as a share of all MLP neurons, or refuse it
    unless a number in (0, 1].

    Example:
        >>> check_fraction(0.001)
        0.001
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) \
            or not 0 < fraction <= 1:
        raise InvalidArgumentError(f"fraction must be a number in (0, 1], not {fraction!r}")
    return fraction


def fraction_size(fraction: float, n_layers: int, d_mlp: int) -> int:
    """Neurons in a circuit of ``fraction`` of all MLP neurons: ``round(fraction * n_layers
    * d_mlp)``, at least 1. ``fraction`` is not checked here (see :func:`check_fraction`).

    Example:
        >>> fraction_size(0.001, 30, 1536), fraction_size(1e-6, 2, 8)
        (46, 1)
    """
    return max(1, round(fraction * n_layers * d_mlp))
