"""CircuitVenn: counts drawn per region, clicks and the picker list a region's neurons."""

from __future__ import annotations

import plotly.graph_objects as go
import pytest
from tests.widgets.widget_fixtures import random_circuit, random_keys

from widgets.overlaps import memberships, venn_regions
from widgets.venn import LAYOUTS, CircuitVenn, VennController


@pytest.fixture(params=[2, 3])
def circuits(request):
    return [random_circuit(random_keys(s, 30), seed=s) for s in range(request.param)]


def test_figure_has_one_circle_per_circuit_and_the_region_counts(circuits):
    c = VennController(circuits, names=["x", "y", "z"][:len(circuits)])
    figure = c.figure()
    assert [shape.type for shape in figure.layout.shapes] == ["circle"] * len(circuits)
    regions = venn_regions(circuits)
    order = memberships(len(circuits))
    assert list(figure.data[0].text) == [str(len(regions[m])) for m in order]
    assert f"{c.jaccard:.3f}" in figure.layout.title.text


def test_count_positions_lie_inside_exactly_their_circles(circuits):
    layout = LAYOUTS[len(circuits)]
    for membership, (x, y) in layout["labels"].items():
        inside = tuple((x - cx) ** 2 + (y - cy) ** 2 < 1.0 for cx, cy in layout["centres"])
        assert inside == membership


def test_selecting_a_region_lists_it(circuits):
    c = VennController(circuits)
    seen = []
    c.selected.add(lambda membership, table: seen.append((membership, table)))
    everywhere = tuple([True] * len(circuits))
    table = c.select(everywhere)
    expected = set.intersection(*[x.keys() for x in circuits])
    assert set(zip(table["layer"], table["index"])) == expected
    assert seen[0][0] == everywhere and c.region == everywhere
    x, y = LAYOUTS[len(circuits)]["labels"][everywhere]
    assert c.region_at(x + 0.05, y - 0.05) == everywhere


def test_click_on_a_count_lists_the_region_in_the_view(circuits):
    view = CircuitVenn(circuits, interactive=True)
    live = view.diagram.figure
    assert isinstance(live, go.FigureWidget)
    only_a = tuple([True] + [False] * (len(circuits) - 1))
    x, y = LAYOUTS[len(circuits)]["labels"][only_a]
    live._js2py_pointsCallback = {"event_type": "plotly_click",
                                  "points": {"xs": [x], "ys": [y], "point_indexes": [0],
                                             "trace_indexes": [0]}}
    assert view.controller.region == only_a and view.picker.value == only_a
    expected = circuits[0].keys() - set.union(*[c.keys() for c in circuits[1:]])
    assert f"{len(expected)} neurons" in view.listing.value
    assert "A only" in view.listing.value


def test_picker_works_without_clicks(circuits):
    view = CircuitVenn(circuits, interactive=False)
    both = (True, True) + (False,) * (len(circuits) - 2)
    view.picker.value = both
    view.list_button.click()
    assert view.controller.region == both
    shared = (circuits[0].keys() & circuits[1].keys()) - \
        (circuits[2].keys() if len(circuits) == 3 else set())
    assert f"{len(shared)} neurons" in view.listing.value


def test_names_are_escaped():
    circuits = [random_circuit({(0, 1)}), random_circuit({(0, 1), (1, 1)})]
    view = CircuitVenn(circuits, names=["<script>alert(1)</script>", "b & c"], interactive=False)
    assert "<script>" not in view.summary.value
    assert "&lt;script&gt;" in view.summary.value and "b &amp; c" in view.summary.value
    texts = [a.text for a in view.diagram.figure.layout.annotations]
    assert not any("<script>" in t for t in texts)


def test_one_name_per_circuit():
    circuits = [random_circuit({(0, 1)}), random_circuit({(0, 2)})]
    with pytest.raises(ValueError, match="one name per circuit"):
        VennController(circuits, names=["only one"])
