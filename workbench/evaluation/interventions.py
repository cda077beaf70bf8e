"""What an evaluation does to the model: nothing, a CNA circuit, a CAA vector, a direction,
or a control.

Every intervention is applied at a *multiplier* ``m`` on one shared axis where ``m = 1``
leaves the model unchanged:

- CNA circuit: circuit neurons' down-projection inputs are multiplied by ``m``.
- CAA vector: ``alpha = m - 1`` times the vector is added to every MLP output, so
  ``m = 0`` subtracts the harmful-minus-benign direction once and ``m = 2`` adds it once.
- Random control: a circuit with the same size and per-layer counts as the real one,
  neurons drawn at random (seeded), scaled like a CNA circuit.
- Direction (the refusal-direction positive control, Arditi et al. 2024): every write into
  the residual stream keeps ``m`` times its component along the unit direction ``r``,
  ``x <- x - (1 - m) (x . r) r`` (see :mod:`workbench.ablation`), so ``m = 0`` ablates the
  direction, ``m = 2`` doubles it and ``m = -1`` flips it.

Circuit interventions (CNA and random) can be taken at a smaller size with
:meth:`Intervention.at_size`: the CNA circuit's top neurons (a prefix), and a random
control drawn afresh, with the same seed, for that prefix.

Example:
    >>> from workbench.circuit import Circuit, Neuron
    >>> real = Circuit.from_neurons([Neuron(1, 5, 2.0), Neuron(1, 9, -1.0), Neuron(0, 2, 0.5)],
    ...                             model={"name": "m", "architecture": "A",
    ...                                    "n_layers": 2, "d_mlp": 16})
    >>> control = random_control(real, seed=0)
    >>> control.layer_counts() == real.layer_counts(), control.keys() & real.keys()
    (True, set())
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import torch

from ..ablation import scale_direction
from ..circuit import Circuit, Neuron
from ..errors import InvalidArgumentError, SteeringError
from ..models import WorkbenchModel
from ..steering import add_vector, steer
from ..values import Positions, Signs, check_multiplier

if TYPE_CHECKING:  # for an annotation only
    from ..direction import RefusalDirection

Kind = Literal["baseline", "cna", "caa", "random", "direction"]


@dataclass(frozen=True, eq=False)
class Intervention:
    """A named way of changing the model, applied at a multiplier (1 = unchanged).

    ``vector`` is the CAA vector ``[n_layers, d_model]``, or the direction ``[d_model]``
    of a direction intervention (normalised to unit length when applied). A random control
    keeps the circuit it controls (``control_of``) and its ``seed``, so that it can be
    re-drawn at another size.
    """

    name: str
    kind: Kind
    circuit: Circuit | None = field(default=None, repr=False)
    vector: torch.Tensor | None = field(default=None, repr=False)
    positions: Positions = "all"
    signs: Signs = "all"
    control_of: Circuit | None = field(default=None, repr=False)
    seed: int | None = None

    @classmethod
    def baseline(cls) -> Intervention:
        """The unchanged model (only evaluated at multiplier 1)."""
        return cls("baseline", "baseline")

    @classmethod
    def cna(cls, circuit: Circuit, name: str = "cna", *, positions: Positions = "all",
            signs: Signs = "all") -> Intervention:
        return cls(name, "cna", circuit=circuit, positions=positions, signs=signs)

    @classmethod
    def random(cls, circuit: Circuit, seed: int = 0, name: str | None = None) -> Intervention:
        """The random-circuit control of ``circuit`` (see :func:`random_control`)."""
        return cls(name or f"random(seed={seed})", "random",
                   circuit=random_control(circuit, seed=seed), control_of=circuit, seed=seed)

    @classmethod
    def caa(cls, vector: torch.Tensor, name: str = "caa") -> Intervention:
        return cls(name, "caa", vector=vector)

    @classmethod
    def direction(cls, direction: RefusalDirection | torch.Tensor,
                  name: str = "refusal-direction") -> Intervention:
        """Scale a residual-stream direction: 0 ablates it, 1 is unchanged, 2 doubles it.

        ``direction`` is a :class:`~workbench.direction.RefusalDirection` or a tensor
        ``[d_model]`` (normalised to unit length when applied). At multiplier ``m`` every
        residual write ``x`` becomes ``x - (1 - m) (x . r) r`` (:mod:`workbench.ablation`).

        Example:
            >>> import torch
            >>> Intervention.direction(torch.ones(4)).kind
            'direction'
        """
        vector = getattr(direction, "direction", direction)
        if not isinstance(vector, torch.Tensor) or vector.ndim != 1:
            shown = list(vector.shape) if isinstance(vector, torch.Tensor) else type(vector)
            raise SteeringError(
                f"a direction intervention needs a [d_model] tensor or a RefusalDirection, "
                f"not {shown}; build one with refusal_direction()")
        return cls(name, "direction", vector=vector.detach().clone())

    def at_size(self, size: int | float) -> Intervention:
        """This intervention with its circuit cut to ``size`` neurons (int) or a fraction.

        CNA: the top ``size`` neurons by ``|score|`` (:meth:`Circuit.top`). Random control:
        :func:`random_control` of the controlled circuit's top ``size`` neurons, same seed.
        Other kinds do not have a size and are returned unchanged.

        Example:
            >>> shape = {"name": "m", "architecture": "A", "n_layers": 2, "d_mlp": 16}
            >>> c = Circuit.from_neurons([(0, 1, 3.0), (1, 2, -5.0), (1, 4, 1.0)], model=shape)
            >>> Intervention.cna(c).at_size(2).circuit.keys() == {(1, 2), (0, 1)}
            True
            >>> len(Intervention.random(c, seed=0).at_size(1).circuit)
            1
        """
        if self.kind == "cna":
            assert self.circuit is not None  # Intervention.cna() sets it
            return replace(self, circuit=self.circuit.top(size))
        if self.kind == "random":
            if self.control_of is None or self.seed is None:
                raise InvalidArgumentError(
                    f"the random control {self.name!r} does not know which circuit it controls, "
                    "so it cannot be re-drawn at another size; build it with "
                    "Intervention.random(circuit, seed)")
            prefix = self.control_of.top(size)
            return replace(self, circuit=random_control(prefix, seed=self.seed),
                           control_of=prefix)
        return self

    def strength(self, multiplier: float) -> float:
        """The raw strength applied: the multiplier, or ``alpha = m - 1`` for CAA."""
        return multiplier - 1.0 if self.kind == "caa" else multiplier

    def apply(self, model: WorkbenchModel,
              multiplier: float) -> contextlib.AbstractContextManager[None]:
        """A context manager that applies this intervention at ``multiplier``."""
        multiplier = check_multiplier(multiplier)
        if self.kind == "baseline" or multiplier == 1.0:
            return contextlib.nullcontext()
        if self.kind == "caa":
            assert self.vector is not None  # Intervention.caa() sets it
            return add_vector(model, self.vector, self.strength(multiplier))
        if self.kind == "direction":
            return scale_direction(model, self.vector, multiplier)
        assert self.circuit is not None  # Intervention.cna() and .random() set it
        return steer(model, self.circuit, multiplier=multiplier, positions=self.positions,
                     signs=self.signs)

    def describe(self) -> dict[str, Any]:
        """Provenance recorded with every result row."""
        info: dict[str, Any] = {"intervention": self.name, "kind": self.kind}
        if self.circuit is not None:
            info["n_neurons"] = len(self.circuit)
        return info


def random_control(circuit: Circuit, seed: int = 0) -> Circuit:
    """A circuit with the same size and per-layer counts, neurons drawn at random.

    Within each layer, indices are drawn uniformly without replacement from the neurons
    *not* in the original circuit. Each random neuron inherits the score (and so the sign)
    of an original neuron of the same layer, so ``signs=`` filtering behaves alike.
    """
    rng = random.Random(seed)
    d_mlp = circuit.model["d_mlp"]
    taken = circuit.keys()
    neurons = []
    for layer in sorted(circuit.layer_counts()):
        originals = [n for n in circuit.neurons if n.layer == layer]
        free = [i for i in range(d_mlp) if (layer, i) not in taken]
        if len(free) < len(originals):
            raise InvalidArgumentError(
                f"layer {layer} has too few neurons outside the circuit for a random control")
        drawn = rng.sample(free, len(originals))
        neurons += [Neuron(layer, index, original.score)
                    for index, original in zip(drawn, originals)]
    selection = {"method": "random-control", "seed": seed, "top_k": len(neurons),
                 "control_of": circuit.name}
    return Circuit.from_neurons(neurons, model=circuit.model, prompting=dict(circuit.prompting),
                                selection=selection, prompts=dict(circuit.prompts))
