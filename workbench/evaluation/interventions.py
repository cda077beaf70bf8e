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

Each kind is a small class that says which :class:`workbench.sites.Edit` it makes at a
multiplier (:meth:`Intervention.edit`); applying it (:meth:`Intervention.apply`), on a
model in this process or a remote one, in a sweep, or baked into weights
(:func:`workbench.bake.bake`), goes through that edit and nothing else. A new kind is a
subclass with an ``edit`` method (and ``at_size`` if it has a size).

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
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from ..ablation import direction_edit
from ..circuit import Circuit, Neuron
from ..errors import InvalidArgumentError, SteeringError
from ..models import WorkbenchModel
from ..sites import Edit, edited
from ..steering import circuit_edit, vector_edit
from ..values import Positions, Signs, check_multiplier

if TYPE_CHECKING:  # for an annotation only
    from ..direction import RefusalDirection

__all__ = ["Baseline", "CaaVector", "CnaCircuit", "DirectionProjection", "Intervention",
           "RandomControl", "random_control"]


@dataclass(frozen=True, eq=False)
class Intervention:
    """A named way of changing the model, applied at a multiplier (1 = unchanged).

    Build one with the constructors (:meth:`baseline`, :meth:`cna`, :meth:`random`,
    :meth:`caa`, :meth:`direction`); each returns the subclass of its kind. ``kind`` names
    the kind in result rows.
    """

    name: str
    kind: ClassVar[str] = "intervention"
    #: evaluated at multiplier 1 only: the unchanged model
    runs_once: ClassVar[bool] = False
    #: has a size (a number of neurons) that :meth:`at_size` can cut
    sized: ClassVar[bool] = False

    # -- constructors ------------------------------------------------------------------

    @staticmethod
    def baseline() -> Baseline:
        """The unchanged model (only evaluated at multiplier 1)."""
        return Baseline("baseline")

    @staticmethod
    def cna(circuit: Circuit, name: str = "cna", *, positions: Positions = "all",
            signs: Signs = "all") -> CnaCircuit:
        """Scale ``circuit``'s neurons' down-projection inputs by the multiplier."""
        return CnaCircuit(name, circuit, positions=positions, signs=signs)

    @staticmethod
    def random(circuit: Circuit, seed: int = 0, name: str | None = None) -> RandomControl:
        """The random-circuit control of ``circuit`` (see :func:`random_control`)."""
        return RandomControl(name or f"random(seed={seed})", random_control(circuit, seed=seed),
                             control_of=circuit, seed=seed)

    @staticmethod
    def caa(vector: torch.Tensor, name: str = "caa") -> CaaVector:
        """Add ``(m - 1)`` times the CAA ``vector`` ``[n_layers, d_model]`` to every MLP
        output."""
        return CaaVector(name, vector)

    @staticmethod
    def direction(direction: RefusalDirection | torch.Tensor,
                  name: str = "refusal-direction") -> DirectionProjection:
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
        return DirectionProjection(name, vector.detach().clone())

    # -- what every kind does ----------------------------------------------------------

    def edit(self, model: WorkbenchModel, multiplier: float) -> Edit:
        """The change this intervention makes to ``model`` at ``multiplier``."""
        raise NotImplementedError(f"{type(self).__name__} does not say what it changes")

    def apply(self, model: WorkbenchModel,
              multiplier: float) -> contextlib.AbstractContextManager[None]:
        """A context manager that applies this intervention at ``multiplier``.

        Multiplier 1 (and the baseline) change nothing, whatever the kind.
        """
        multiplier = check_multiplier(multiplier)
        if self.runs_once or multiplier == 1.0:
            return contextlib.nullcontext()
        return edited(model, self.edit(model, multiplier))

    def at_size(self, size: int | float) -> Intervention:  # noqa: ARG002 - kinds with a size
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
        return self

    def size(self) -> int | None:
        """How many neurons it changes, for a kind with a size; None for the others."""
        return None

    def fraction_of_model(self) -> float | None:
        """:meth:`size` as a share of all the model's MLP neurons (None without a size)."""
        return None

    def strength(self, multiplier: float) -> float:
        """The raw strength applied: the multiplier, or ``alpha = m - 1`` for CAA."""
        return multiplier

    def describe(self) -> dict[str, Any]:
        """Provenance for a record: name and kind, the neuron count for kinds with a size,
        the seed for a random control."""
        return {"intervention": self.name, "kind": self.kind}


@dataclass(frozen=True, eq=False)
class Baseline(Intervention):
    """The unchanged model."""

    kind: ClassVar[str] = "baseline"
    runs_once: ClassVar[bool] = True

    def edit(self, model: WorkbenchModel, multiplier: float) -> Edit:  # noqa: ARG002
        return Edit()


@dataclass(frozen=True, eq=False)
class CnaCircuit(Intervention):
    """A CNA circuit's neurons scaled by the multiplier (:func:`workbench.steer`)."""

    circuit: Circuit = field(repr=False)
    positions: Positions = "all"
    signs: Signs = "all"
    kind: ClassVar[str] = "cna"
    sized: ClassVar[bool] = True

    def edit(self, model: WorkbenchModel, multiplier: float) -> Edit:
        return circuit_edit(model, self.circuit, multiplier, positions=self.positions,
                            signs=self.signs)

    def at_size(self, size: int | float) -> Intervention:
        return replace(self, circuit=self.circuit.top(size))

    def size(self) -> int:
        return len(self.circuit)

    def fraction_of_model(self) -> float:
        return len(self.circuit) / self.circuit.n_model_neurons

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "n_neurons": len(self.circuit)}


@dataclass(frozen=True, eq=False)
class RandomControl(CnaCircuit):
    """A random circuit shaped like ``control_of`` (drawn with ``seed``), scaled alike."""

    control_of: Circuit | None = field(default=None, repr=False)
    seed: int | None = None
    kind: ClassVar[str] = "random"

    def at_size(self, size: int | float) -> Intervention:
        if self.control_of is None or self.seed is None:
            raise InvalidArgumentError(
                f"the random control {self.name!r} does not know which circuit it controls, "
                "so it cannot be re-drawn at another size; build it with "
                "Intervention.random(circuit, seed)")
        prefix = self.control_of.top(size)
        return replace(self, circuit=random_control(prefix, seed=self.seed), control_of=prefix)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "seed": self.seed}


@dataclass(frozen=True, eq=False)
class CaaVector(Intervention):
    """``alpha = m - 1`` times a CAA vector ``[n_layers, d_model]`` added to every MLP
    output (:func:`workbench.add_vector`)."""

    vector: torch.Tensor = field(repr=False)
    kind: ClassVar[str] = "caa"

    def edit(self, model: WorkbenchModel, multiplier: float) -> Edit:
        return vector_edit(model, self.vector, self.strength(multiplier))

    def strength(self, multiplier: float) -> float:
        return multiplier - 1.0


@dataclass(frozen=True, eq=False)
class DirectionProjection(Intervention):
    """A residual direction ``[d_model]`` kept at the multiplier in every residual write
    (:func:`workbench.ablation.scale_direction`)."""

    vector: torch.Tensor = field(repr=False)
    kind: ClassVar[str] = "direction"

    def edit(self, model: WorkbenchModel, multiplier: float) -> Edit:
        return direction_edit(model, self.vector, multiplier)


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
