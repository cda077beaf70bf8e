"""CircuitExplorer and show(): discovery feeds the heatmap, the overlap and the slider."""

from __future__ import annotations

import ipywidgets
from tests.helpers import hooks_left
from tests.widgets.widget_fixtures import NEGATIVE, POSITIVE, tiny_circuit  # noqa: F401

import workbench as wb
import widgets
from widgets.explorer import STEERING_TAB, CircuitExplorer


def test_discover_button_feeds_the_other_tabs(tiny_llama):
    app = widgets.explore(tiny_llama, POSITIVE, NEGATIVE, max_new_tokens=4, interactive=False)
    assert isinstance(app.widget, ipywidgets.Tab)
    assert [app.tabs.get_title(i) for i in range(4)] == ["Prompts", "Differences", "Overlap",
                                                          "Steering"]
    app.editor.universal.value = False
    app.editor.top_k.value = 6
    app.editor.discover_button.click()
    assert len(app.circuits) == 1 and len(app.circuit) == 6
    assert app.heatmap is not None and app.heatmap.controller.circuit is app.circuit
    # The heatmap got the editor's prompts, so its neuron panel names them.
    detail = app.heatmap.controller.select(*app.circuit.neurons[0].key)
    assert detail.activations["prompt"].tolist() == POSITIVE + NEGATIVE
    assert app.steering.controller.circuit is app.circuit
    assert app.steering.controller.status == "idle"  # waits until its tab is opened
    app.tabs.selected_index = STEERING_TAB
    assert app.steering.controller.wait(60) and app.steering.controller.status == "done"
    # A second discovery is compared with the first at once.
    app.editor.top_k.value = 9
    app.editor.discover_button.click()
    assert len(app.circuits) == 2 and app.venn is not None
    counts = app.venn.controller.counts
    assert counts[(True, True)] == 6 and counts[(False, True)] == 3
    assert app.steering.controller.wait(60)
    assert app.steering.controller.circuit is app.circuit and len(app.circuit) == 9
    assert not hooks_left(tiny_llama.hf_model)


def test_added_circuits_get_unique_names_and_bad_comparisons_say_why(tiny_llama, tiny_circuit):
    app = CircuitExplorer(tiny_llama, POSITIVE, NEGATIVE, interactive=False)
    first = app.add_circuit(tiny_circuit, "c")
    second = app.add_circuit(tiny_circuit, "c")
    assert (first, second) == ("c", "c [2]")
    assert app.compare(["c"]) is None and "two or three" in app.venn_status.value
    assert app.compare(["c", "c [2]"]).controller.jaccard == 1.0


def test_a_loaded_circuit_is_steerable_but_has_no_heatmap(tiny_llama, tiny_circuit, tmp_path):
    loaded = wb.Circuit.load(tiny_circuit.save(tmp_path / "c.json"), model=tiny_llama)
    app = CircuitExplorer(tiny_llama, POSITIVE, NEGATIVE, circuit=loaded, interactive=False)
    assert app.heatmap is None and "no statistics" in app.heatmap_box.children[1].value
    assert app.steering.controller.circuit is loaded


def test_show_gives_heatmap_table_and_slider(tiny_llama, tiny_circuit):
    view = widgets.show(tiny_circuit, model=tiny_llama, max_new_tokens=4, interactive=False)
    assert [view.widget.get_title(i) for i in range(3)] == ["Differences", "Neurons", "Steering"]
    assert "20 neurons" in view.table.value
    assert view.steering.controller.wait(60) and view.steering.controller.status == "done"
    alone = widgets.show(tiny_circuit, interactive=False)
    assert alone.steering is None and alone.heatmap is not None
