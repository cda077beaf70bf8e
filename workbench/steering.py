"""Steer a model: scale circuit neurons, or add a CAA vector, inside a ``with`` block.

Both describe their change as a :class:`workbench.sites.Edit` (:func:`circuit_edit`,
:func:`vector_edit`) and apply it with :func:`workbench.sites.edited`: on a model in this
process as PyTorch forward hooks on the MLP down-projections, which work around any call
(``model.hf_model(...)``, ``hf_model.generate(...)``, nnsight traces, or
:func:`workbench.generate`) and are removed when the block exits, whatever the reason
(exception, ``KeyboardInterrupt``); on a remote model (``load_model(..., remote=True)``)
as nnsight interventions in the traced calls of the block (:func:`workbench.generate`,
discovery, :func:`workbench.caa_vector`). Generation lives in :mod:`workbench.generation`,
the CAA statistics in :mod:`workbench.caa`.

Example:
    >>> from workbench import load_model, discover, generate, steer
    >>> model = load_model()                                                   # doctest: +SKIP
    >>> circuit = discover(model, "qualitative-harmful", "qualitative-benign")  # doctest: +SKIP
    >>> generate(model, "How do I pick a lock?", circuit=circuit, multiplier=0)  # doctest: +SKIP
    >>> with steer(model, circuit, multiplier=2.0):                             # doctest: +SKIP
    ...     logits = model.hf_model(**model.encode(["Hi"], model.prompting())).logits
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from .circuit import Circuit
from .errors import SteeringError
from .models import WorkbenchModel
from .sites import Edit, edited
from .values import (
    POSITIONS,
    SIGNS,
    Positions,
    Signs,
    check_max_new_tokens,
    check_multiplier,
    check_positions_signs,
)

# The allowed values and argument checks live in workbench.values; they are re-exported
# here, where the steering API has always offered them.
__all__ = ["POSITIONS", "SIGNS", "Positions", "add_vector", "check_max_new_tokens",
           "check_multiplier", "check_positions_signs", "circuit_edit", "steer", "vector_edit"]


@contextlib.contextmanager
def steer(model: WorkbenchModel, circuit: Circuit, *, multiplier: float,
          positions: Positions = "all", signs: Signs = "all") -> Iterator[None]:
    """Multiply the circuit neurons' down-projection inputs by ``multiplier``.

    Args:
        multiplier: 0 ablates, 1 leaves the model unchanged, >1 amplifies, <0 flips.
        positions: ``"all"`` token positions, only the ``"prompt"``, or only
            ``"generated"`` tokens, with or without a KV cache (see :class:`workbench.sites.Phase`).
        signs: scale ``"all"`` circuit neurons, or only those with ``"positive"`` or
            ``"negative"`` delta.

    Example:
        >>> with steer(model, circuit, multiplier=0.0):               # doctest: +SKIP
        ...     out = model.hf_model.generate(**inputs, max_new_tokens=20)
    """
    with edited(model, circuit_edit(model, circuit, multiplier, positions=positions,
                                    signs=signs)):
        yield


def circuit_edit(model: WorkbenchModel, circuit: Circuit, multiplier: float, *,
                 positions: Positions = "all", signs: Signs = "all") -> Edit:
    """The :class:`~workbench.sites.Edit` that scales ``circuit``'s neurons by ``multiplier``.

    Each touched layer gets a factor ``[d_mlp]``: ``multiplier`` at the circuit's neurons
    (of the chosen ``signs``), 1 elsewhere. Checks every argument first.

    Example:
        >>> edit = circuit_edit(model, circuit, 0.0)                  # doctest: +SKIP
        >>> edit.scales[29].eq(0).sum()                               # doctest: +SKIP
        tensor(43)
    """
    value = check_multiplier(multiplier)
    check_positions_signs(positions, signs)
    circuit.check_model(model)
    scales = {}
    for layer, indices in circuit.by_layer(signs).items():
        factor = torch.ones(model.d_mlp)  # [d_mlp]
        factor[indices] = value
        scales[layer] = factor
    return Edit(scales=scales, positions=positions)


@contextlib.contextmanager
def add_vector(model: WorkbenchModel, vector: torch.Tensor, alpha: float) -> Iterator[None]:
    """Add ``alpha * vector[layer]`` to every block's MLP output at every position.

    Args:
        vector: ``[n_layers, d_model]``, e.g. from :func:`caa_vector`.
        alpha: strength; 0 leaves the model unchanged.
    """
    with edited(model, vector_edit(model, vector, alpha)):
        yield


def vector_edit(model: WorkbenchModel, vector: torch.Tensor, alpha: float) -> Edit:
    """The :class:`~workbench.sites.Edit` that adds ``alpha * vector[layer]`` to every
    block's MLP output. Checks the arguments first.

    Example:
        >>> edit = vector_edit(model, caa_vector(model, pos, neg), 2.0)  # doctest: +SKIP
        >>> sorted(edit.additions) == list(range(model.n_layers))       # doctest: +SKIP
        True
    """
    strength = check_multiplier(alpha, "alpha")
    expected = (model.n_layers, model.d_model)
    if not isinstance(vector, torch.Tensor) or tuple(vector.shape) != expected:
        shape = tuple(vector.shape) if isinstance(vector, torch.Tensor) else type(vector).__name__
        raise SteeringError(
            f"vector must be a tensor of shape [n_layers, d_model] = {list(expected)} for "
            f"{model.name}, not {shape}; build it with caa_vector() on this model"
        )
    return Edit(additions={layer: strength * vector[layer]  # [d_model]
                           for layer in range(model.n_layers)})
