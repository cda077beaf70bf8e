"""DifferenceHeatmap: bins in the figure, zoom to full resolution, hover data, neuron panel."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from tests.helpers import hooks_left
from tests.widgets.widget_fixtures import NEGATIVE, POSITIVE, synthetic_circuit

import workbench as wb
from workbench.activations import collect
from workbench.errors import InvalidArgumentError
from workbench.neurons import promoted_tokens
from widgets.binning import bin_max_abs
from widgets.heatmap import DifferenceHeatmap, HeatmapController


@pytest.fixture
def circuit():
    return synthetic_circuit(5, 1000, n_neurons=15)


def test_figure_draws_the_bins_and_marks_the_circuit(circuit):
    c = HeatmapController(circuit, max_bins=64)
    figure = c.figure()
    heat, marks = figure.data
    delta = circuit.contrast.delta.numpy()
    expected = bin_max_abs(delta, 64)
    np.testing.assert_array_equal(np.asarray(heat.z), expected.values)
    assert len(heat.x) == 63 and heat.zmid == 0
    assert heat.zmax == pytest.approx(np.abs(delta).max())
    assert sorted(zip(marks.y, marks.x)) == sorted(circuit.keys())
    assert [s for s in marks.customdata] == [n.score for n in circuit.neurons
                                             if (n.layer, n.index) in set(zip(marks.y, marks.x))]


def test_hover_data_names_the_neuron_and_both_means(circuit):
    c = HeatmapController(circuit, max_bins=64)
    heat = c.figure().data[0]
    custom = np.asarray(heat.customdata)  # [n_layers, n_bins, 5]
    layer, b = 3, 10
    neuron = int(custom[layer, b, 0])
    assert c.binned.starts[b] <= neuron < c.binned.stops[b]
    assert custom[layer, b, 1] == circuit.contrast.positive.mean[layer, neuron].item()
    assert custom[layer, b, 2] == circuit.contrast.negative.mean[layer, neuron].item()
    assert np.asarray(heat.z)[layer, b] == pytest.approx(custom[layer, b, 1] - custom[layer, b, 2])
    for word in ("layer", "neuron", "δ", "positive mean", "negative mean"):
        assert word in heat.hovertemplate


def test_zoom_shows_full_resolution_of_the_visible_range(circuit):
    c = HeatmapController(circuit, max_bins=64)
    calls = []
    c.changed.add(lambda: calls.append(1))
    c.zoom(100, 150)
    heat, marks = c.figure().data
    np.testing.assert_array_equal(np.asarray(heat.z), circuit.contrast.delta.numpy()[:, 100:150])
    np.testing.assert_array_equal(np.asarray(heat.x), np.arange(100, 150))
    assert "customdata[3]" not in heat.hovertemplate  # no bin range at full resolution
    assert all(100 <= x < 150 for x in marks.x)
    assert c.figure().layout.xaxis.range == (99.5, 149.5)
    c.zoom(100, 150)  # unchanged: no redraw
    assert calls == [1]
    # Axis ranges come in any order; a neuron counts when any part of its cell shows.
    c.zoom_to_axis(499.6, 300.2)
    assert (c.start, c.stop) == (300, 501)
    assert not c.binned.full_resolution and c.binned.values.shape[1] <= 64
    c.zoom_to_axis(None, None)
    assert (c.start, c.stop) == (0, 1000)


def test_bad_zoom_is_refused(circuit):
    c = HeatmapController(circuit)
    with pytest.raises(InvalidArgumentError, match="empty"):
        c.zoom(50, 50)


def test_neuron_at_picks_the_drawn_element(circuit):
    c = HeatmapController(circuit, max_bins=10)
    delta = circuit.contrast.delta.numpy()
    layer, index = c.neuron_at(2.2, c.binned.centers[4])
    lo, hi = c.binned.starts[4], c.binned.stops[4]
    assert layer == 2 and index == lo + int(np.abs(delta[2, lo:hi]).argmax())


def test_selecting_a_neuron_with_kept_activations(circuit):
    positive = ["p1", "p2 <script>", "p3"]
    c = HeatmapController(circuit, positive=positive, negative=["n1", "n2", "n3", "n4"])
    seen = []
    c.selected.add(seen.append)
    neuron = circuit.neurons[0]
    detail = c.select(neuron.layer, neuron.index)
    assert seen == [detail] and detail.score == neuron.score
    frame = detail.activations
    assert frame["set"].tolist() == ["positive"] * 3 + ["negative"] * 4
    assert frame["prompt"].tolist()[:3] == positive
    kept_pos = circuit.contrast.positive.per_prompt[:, neuron.layer, neuron.index]
    kept_neg = circuit.contrast.negative.per_prompt[:, neuron.layer, neuron.index]
    np.testing.assert_allclose(frame["activation"].to_numpy(),
                               torch.cat([kept_pos, kept_neg]).numpy())
    assert detail.tokens is None and any("model=" in note for note in detail.notes)


def test_without_kept_activations_or_model_the_panel_says_why():
    circuit = synthetic_circuit(2, 50, keep=False)
    detail = HeatmapController(circuit).select(0, 1)
    assert detail.activations is None
    assert any("keep_activations" in note for note in detail.notes)


def test_a_circuit_without_statistics_is_refused_with_advice(circuit):
    loaded = wb.Circuit.from_dict(circuit.to_dict())
    with pytest.raises(InvalidArgumentError, match="discover it again"):
        HeatmapController(loaded)


def test_activations_are_computed_on_click_through_the_library(tiny_llama):
    circuit = wb.discover(tiny_llama, POSITIVE, NEGATIVE, top_k=5, universal=None,
                          progress=False)  # keep_activations=False: nothing per prompt
    c = HeatmapController(circuit, model=tiny_llama, positive=POSITIVE, negative=NEGATIVE)
    neuron = circuit.neurons[0]
    detail = c.select(neuron.layer, neuron.index, k=4)
    expected = [collect(tiny_llama, prompts, keep=True, progress=False)
                .per_prompt[:, neuron.layer, neuron.index] for prompts in (POSITIVE, NEGATIVE)]
    np.testing.assert_allclose(detail.activations["activation"].to_numpy(),
                               torch.cat(expected).numpy(), rtol=1e-4, atol=1e-5)
    # The per-prompt means reproduce the circuit's score.
    frame = detail.activations
    means = frame.groupby("set")["activation"].mean()
    assert means["positive"] - means["negative"] == pytest.approx(neuron.score, rel=1e-4)
    assert detail.tokens.equals(promoted_tokens(tiny_llama, neuron.layer, neuron.index, k=4))
    assert not hooks_left(tiny_llama.hf_model)


def test_interactive_view_re_bins_on_zoom_and_opens_the_clicked_neuron(circuit):
    view = DifferenceHeatmap(circuit, max_bins=64, interactive=True,
                             positive=["a", "b", "c"], negative=["d", "e", "f", "g"])
    live = view.map.figure
    assert isinstance(live, go.FigureWidget)
    # What the front-end sends after a box zoom.
    live._js2py_relayout = {"relayout_data": {"xaxis.range[0]": 199.7, "xaxis.range[1]": 239.4},
                            "source_view_id": None}
    assert (view.controller.start, view.controller.stop) == (200, 240)
    np.testing.assert_array_equal(np.asarray(live.data[0].z),
                                  circuit.contrast.delta.numpy()[:, 200:240])
    assert (view.start.value, view.stop.value) == (200, 240)
    # A click on a cell at full resolution opens exactly that neuron.
    live._js2py_pointsCallback = {"event_type": "plotly_click",
                                  "points": {"xs": [217], "ys": [3], "point_indexes": [[3, 17]],
                                             "trace_indexes": [0]}}
    detail = view.controller.detail
    assert (detail.layer, detail.index) == (3, 217)
    assert (view.layer.value, view.neuron.value) == (3, 217)
    assert "layer 3, neuron 217" in view.tokens.value
    assert len(view.detail.figure.data) == 2  # positive and negative bars
    # Double-click resets the zoom.
    live._js2py_relayout = {"relayout_data": {"xaxis.autorange": True}, "source_view_id": None}
    assert (view.controller.start, view.controller.stop) == (0, 1000)


def test_static_view_uses_the_boxes(circuit, monkeypatch):
    view = DifferenceHeatmap(circuit, max_bins=64, interactive=False)
    assert not isinstance(view.map.figure, go.FigureWidget)
    view.start.value, view.stop.value = 10, 30
    view.zoom_button.click()
    np.testing.assert_array_equal(np.asarray(view.map.figure.data[0].x), np.arange(10, 30))
    view.layer.value, view.neuron.value = 4, 999
    view.show_button.click()
    assert (view.controller.detail.layer, view.controller.detail.index) == (4, 999)
    view.start.value, view.stop.value = 30, 30
    view.zoom_button.click()
    assert "empty" in view.status.value and "error" in view.status.value


def test_prompt_text_in_hover_is_escaped(circuit):
    view = DifferenceHeatmap(circuit, interactive=False, positive=["<script>x</script>", "b", "c"],
                             negative=["d", "e", "f", "g"])
    view.show_neuron(0, 0)
    hover = list(view.detail.figure.data[0].hovertext)
    assert hover[0] == "&lt;script&gt;x&lt;/script&gt;"


def test_a_view_drawn_from_a_controller_shows_its_range_and_neuron(circuit):
    c = HeatmapController(circuit, max_bins=64)
    c.zoom(100, 150)
    c.select(2, 120)
    view = DifferenceHeatmap.from_controller(c, interactive=False)
    assert view.controller is c
    assert (view.start.value, view.stop.value) == (100, 150)
    np.testing.assert_array_equal(np.asarray(view.map.figure.data[0].x), np.arange(100, 150))
    assert (view.layer.value, view.neuron.value) == (2, 120)
    assert "layer 2, neuron 120" in view.tokens.value
    c.select(0, 7)  # the view follows the controller it was given
    assert (view.layer.value, view.neuron.value) == (0, 7)
