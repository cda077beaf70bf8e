"""CircuitVenn: how two or three circuits overlap.

Circles are plotly shapes (equal sizes: the numbers carry the information, not the
areas); each region shows its neuron count. The table under the diagram gives every
pair's shared count and Jaccard index, plus the Jaccard index of all circuits together.
Clicking a region's count (or choosing it in the list) lists its neurons with layer and
score in each circuit.

Example:
    >>> import workbench as wb
    >>> base = wb.Circuit.load("base.json")             # doctest: +SKIP
    >>> instruct = wb.Circuit.load("instruct.json")     # doctest: +SKIP
    >>> CircuitVenn([base, instruct], names=["base", "instruct"])  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ipywidgets
import plotly.graph_objects as go

from workbench.circuit import Circuit
from workbench.errors import InvalidArgumentError

from . import markup
from .export import Exportable, circuit_record
from .figures import FigureView
from .observers import Observers
from .overlaps import (
    Membership,
    check_circuits,
    jaccard,
    memberships,
    pairwise,
    region_label,
    region_table,
    venn_regions,
)
from .view import View

LETTERS = ("A", "B", "C")
RADIUS = 1.0
COLOURS = ("rgba(192, 57, 43, 0.25)", "rgba(44, 127, 184, 0.25)", "rgba(39, 174, 96, 0.25)")

#: Circle centres and the point inside each region where its count is drawn.
LAYOUTS: dict[int, dict[str, Any]] = {
    2: {"centres": [(-0.6, 0.0), (0.6, 0.0)],
        "labels": {(True, False): (-1.05, 0.0), (False, True): (1.05, 0.0),
                   (True, True): (0.0, 0.0)},
        "names": [(-0.6, 1.2), (0.6, 1.2)]},
    3: {"centres": [(-0.6, 0.35), (0.6, 0.35), (0.0, -0.65)],
        "labels": {(True, False, False): (-1.15, 0.65), (False, True, False): (1.15, 0.65),
                   (False, False, True): (0.0, -1.25), (True, True, False): (0.0, 0.85),
                   (True, False, True): (-0.75, -0.45), (False, True, True): (0.75, -0.45),
                   (True, True, True): (0.0, 0.05)},
        "names": [(-0.9, 1.55), (0.9, 1.55), (0.0, -1.85)]},
}


class VennController:
    """Regions, counts and the chosen region of two or three circuits.

    Args:
        circuits: two or three circuits of models of the same shape.
        names: one per circuit; default: each circuit's ``name``.
    """

    def __init__(self, circuits: Sequence[Circuit], names: Sequence[str] | None = None) -> None:
        self.circuits = check_circuits(circuits)
        n = len(self.circuits)
        self.names = list(names) if names is not None else [c.name for c in self.circuits]
        if len(self.names) != n:
            raise InvalidArgumentError(f"give one name per circuit ({n}), not {len(self.names)}")
        self.letters = list(LETTERS[:n])
        self.regions = venn_regions(self.circuits)
        self.counts = {m: len(keys) for m, keys in self.regions.items()}
        self.region: Membership | None = None
        self.selected = Observers()  # (membership, DataFrame) after a region is chosen

    @property
    def jaccard(self) -> float:
        """Jaccard index of all circuits together."""
        return jaccard(self.circuits)

    def pairs(self):
        """Pairwise overlap table (pandas DataFrame), circuits named by letter."""
        return pairwise(self.circuits, self.letters)

    def label(self, membership: Membership) -> str:
        return region_label(membership, self.letters)

    def neurons(self, membership: Sequence[bool]):
        """The neurons of one region (pandas DataFrame), without choosing it."""
        membership = tuple(bool(x) for x in membership)
        if membership not in self.regions:
            raise InvalidArgumentError(
                f"{membership!r} is not a region of {len(self.circuits)} circuits")
        return region_table(self.circuits, self.letters, membership)

    def select(self, membership: Sequence[bool]):
        """List the neurons of one region; also notifies ``selected``."""
        membership = tuple(bool(x) for x in membership)
        table = self.neurons(membership)
        self.region = membership
        self.selected(membership, table)
        return table

    def region_at(self, x: float, y: float) -> Membership:
        """The region whose count is drawn nearest to (x, y)."""
        labels = LAYOUTS[len(self.circuits)]["labels"]
        return min(labels, key=lambda m: (labels[m][0] - x) ** 2 + (labels[m][1] - y) ** 2)

    def exportable(self) -> Exportable:
        """The diagram, with every circuit's provenance, for :func:`widgets.export.export`."""
        return Exportable("circuit venn", self.figure(), extra={
            "circuits": {f"{letter}: {name}": circuit_record(circuit) for letter, name, circuit
                         in zip(self.letters, self.names, self.circuits)}})

    def figure(self) -> go.Figure:
        """Circles as shapes, names as annotations, counts as one clickable scatter trace."""
        layout = LAYOUTS[len(self.circuits)]
        figure = go.Figure()
        for (cx, cy), colour in zip(layout["centres"], COLOURS):
            figure.add_shape(type="circle", x0=cx - RADIUS, y0=cy - RADIUS, x1=cx + RADIUS,
                             y1=cy + RADIUS, fillcolor=colour, line={"color": "#444444"})
        for (x, y), letter, name, circuit in zip(layout["names"], self.letters, self.names,
                                                 self.circuits):
            figure.add_annotation(x=x, y=y, showarrow=False,
                                  text=f"<b>{letter}</b>: {markup.escape(name)} ({len(circuit)})")
        regions = memberships(len(self.circuits))
        figure.add_scatter(
            x=[layout["labels"][m][0] for m in regions],
            y=[layout["labels"][m][1] for m in regions],
            text=[str(self.counts[m]) for m in regions],
            hovertext=[f"{self.label(m)}: {self.counts[m]} neurons" for m in regions],
            hovertemplate="%{hovertext}<extra></extra>", mode="markers+text",
            marker={"size": 30, "color": "rgba(255, 255, 255, 0.6)",
                    "line": {"color": "#444444", "width": 1}},
            textfont={"size": 14},
        )
        figure.update_layout(
            xaxis={"visible": False, "range": [-2.3, 2.3]},
            yaxis={"visible": False, "range": [-2.1, 1.9], "scaleanchor": "x"},
            height=420, width=520, margin={"l": 10, "r": 10, "t": 40, "b": 10},
            title={"text": f"Jaccard (all): {self.jaccard:.3f}"}, showlegend=False,
            plot_bgcolor="white",
        )
        return figure


class CircuitVenn(View):
    """The Venn widget: diagram, pairwise table, region picker and region listing.

    Example:
        >>> CircuitVenn([circuit_a, circuit_b, circuit_c])  # doctest: +SKIP
    """

    def __init__(self, circuits: Sequence[Circuit], names: Sequence[str] | None = None, *,
                 interactive: bool | None = None) -> None:
        self._build(VennController(circuits, names), interactive)

    @classmethod
    def from_controller(cls, controller: VennController, *,
                        interactive: bool | None = None) -> CircuitVenn:
        """The view of an existing controller (as :class:`~widgets.CircuitExplorer` does).

        Example:
            >>> venn = VennController([circuit_a, circuit_b])     # doctest: +SKIP
            >>> CircuitVenn.from_controller(venn)                # doctest: +SKIP
        """
        view = cls.__new__(cls)
        view._build(controller, interactive)
        return view

    def _build(self, controller: VennController, interactive: bool | None) -> None:
        super().__init__()
        self.controller = c = controller
        self.diagram = FigureView(c.figure(), interactive)
        self.diagram.on_click(lambda _trace, x, y: self.show_region(c.region_at(x, y)))
        self.picker = ipywidgets.Dropdown(
            options=[(f"{c.label(m)} ({c.counts[m]})", m) for m in memberships(len(c.circuits))],
            description="region")
        self.list_button = ipywidgets.Button(description="List neurons")
        self.list_button.on_click(lambda _b: self.show_region(self.picker.value))
        self.summary = ipywidgets.HTML(self._summary_html())
        self.listing = ipywidgets.HTML()
        c.selected.add(self._listed)
        self.widget = ipywidgets.VBox([
            ipywidgets.HBox([self.diagram.widget, self.summary]),
            ipywidgets.HBox([self.picker, self.list_button]),
            self.status,
            self.listing,
        ])
        if c.region is not None:  # the controller may hold a choice made before this view
            self._listed(c.region, c.neurons(c.region))

    def show_region(self, membership: Sequence[bool]) -> None:
        """List the neurons of a region, as a click on its count would."""
        self.act(lambda: self.controller.select(membership))

    def _summary_html(self) -> str:
        c = self.controller
        names = "".join(f"<div><b>{letter}</b>: {markup.escape(name)}</div>"
                        for letter, name in zip(c.letters, c.names))
        return (names + f"<div>Jaccard of all: {c.jaccard:.3f}</div>"
                + markup.table(c.pairs()))

    def _listed(self, membership: Membership, table: Any) -> None:
        self.picker.value = membership
        label = markup.escape(self.controller.label(membership))
        self.listing.value = (f"<b>{label}</b>: {len(table)} neurons" + markup.table(table))
        self.clear_status()
