"""Venn regions of two or three circuits, as plain sets and tables.

A region is named by a membership tuple: ``(True, False)`` holds the neurons in the first
circuit only, ``(True, True)`` those in both. Every one of the ``2**n - 1`` regions is
present, empty or not.

Example:
    >>> from workbench.circuit import Circuit, Neuron
    >>> shape = {"name": "m", "architecture": "A", "n_layers": 2, "d_mlp": 8}
    >>> a = Circuit.from_neurons([(0, 1, 1.0), (1, 2, -0.5)], model=shape)
    >>> b = Circuit.from_neurons([(1, 2, -0.7), (1, 3, 0.2)], model=shape)
    >>> {k: sorted(v) for k, v in venn_regions([a, b]).items()}
    {(True, False): [(0, 1)], (False, True): [(1, 3)], (True, True): [(1, 2)]}
    >>> region_label((True, True), ["A", "B"])
    'A ∩ B'
    >>> jaccard([a, b])
    0.3333333333333333
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations, product

from workbench.circuit import Circuit, overlap
from workbench.errors import InvalidArgumentError

Membership = tuple[bool, ...]
Key = tuple[int, int]


def check_circuits(circuits: Sequence[Circuit]) -> list[Circuit]:
    """Two or three circuits of models of the same shape, or a clear error."""
    circuits = list(circuits)
    if not 2 <= len(circuits) <= 3:
        raise InvalidArgumentError(
            f"a Venn diagram compares two or three circuits, not {len(circuits)}")
    for other in circuits[1:]:
        overlap(circuits[0], other)  # raises CircuitMismatchError for different shapes
    return circuits


def memberships(n: int) -> list[Membership]:
    """All non-empty membership tuples of ``n`` sets, fewest members first.

    Example:
        >>> memberships(2)
        [(True, False), (False, True), (True, True)]
    """
    found = [m for m in product((False, True), repeat=n) if any(m)]
    return sorted(found, key=lambda m: (sum(m), [not x for x in m]))


def venn_regions(circuits: Sequence[Circuit]) -> dict[Membership, set[Key]]:
    """Membership tuple -> the ``(layer, index)`` keys in exactly those circuits."""
    circuits = check_circuits(circuits)
    sets = [c.keys() for c in circuits]
    regions: dict[Membership, set[Key]] = {m: set() for m in memberships(len(sets))}
    for key in set().union(*sets):
        regions[tuple(key in s for s in sets)].add(key)
    return regions


def region_label(membership: Membership, names: Sequence[str]) -> str:
    """``"A only"``, ``"A ∩ B"`` (in exactly those), ``"A ∩ B ∩ C"``.

    Example:
        >>> region_label((False, True, False), ["A", "B", "C"])
        'B only'
    """
    inside = [name for name, member in zip(names, membership) if member]
    if len(inside) == 1:
        return f"{inside[0]} only"
    return " ∩ ".join(inside)


def jaccard(circuits: Sequence[Circuit]) -> float:
    """|intersection of all| / |union of all| of the circuits' neurons (0.0 if both empty)."""
    sets = [c.keys() for c in check_circuits(circuits)]
    union = set().union(*sets)
    return len(set.intersection(*sets)) / len(union) if union else 0.0


def pairwise(circuits: Sequence[Circuit], names: Sequence[str]):
    """One row per pair: a, b, n_a, n_b, n_shared, jaccard (a pandas DataFrame)."""
    import pandas as pd

    circuits = check_circuits(circuits)
    rows = []
    for (i, a), (j, b) in combinations(enumerate(circuits), 2):
        result = overlap(a, b)
        rows.append({"a": names[i], "b": names[j], "n_a": result.n_a, "n_b": result.n_b,
                     "n_shared": result.n_shared, "jaccard": result.jaccard})
    return pd.DataFrame(rows, columns=["a", "b", "n_a", "n_b", "n_shared", "jaccard"])


def region_table(circuits: Sequence[Circuit], names: Sequence[str], membership: Membership):
    """The neurons of one region: layer, index, and their score in each member circuit.

    Sorted by layer, then index; a pandas DataFrame with columns ``layer``, ``index`` and
    ``score (NAME)`` for each circuit the region belongs to.
    """
    import pandas as pd

    circuits = check_circuits(circuits)
    if len(membership) != len(circuits) or not any(membership):
        raise InvalidArgumentError(
            f"{membership!r} is not a region of {len(circuits)} circuits")
    keys = sorted(venn_regions(circuits)[tuple(membership)])
    scores = [{n.key: n.score for n in c.neurons} for c in circuits]
    columns = ["layer", "index"] + [f"score ({name})" for name, member
                                    in zip(names, membership) if member]
    rows = []
    for layer, index in keys:
        row = [layer, index] + [s[(layer, index)] for s, member in zip(scores, membership)
                                if member]
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)
