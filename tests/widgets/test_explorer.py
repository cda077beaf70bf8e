"""CircuitExplorer and show(): discovery feeds the heatmap, the overlap and the slider."""

from __future__ import annotations

import ipywidgets
import pytest
from tests.helpers import hooks_left
from tests.widgets.widget_fixtures import (  # noqa: F401
    NEGATIVE,
    POSITIVE,
    no_widgets,
    random_circuit,
    synthetic_circuit,
    tiny_circuit,
)

import workbench as wb
import widgets
from workbench.errors import CircuitMismatchError, InvalidArgumentError
from widgets.explorer import (
    NO_STATISTICS,
    STEERING_TAB,
    CircuitController,
    CircuitExplorer,
    CircuitView,
    ExplorerController,
)


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


# -- the controllers, without widgets ------------------------------------------------


def test_explorer_controller_links_the_tabs_without_widgets(tiny_llama, no_widgets):
    c = ExplorerController(tiny_llama, POSITIVE, NEGATIVE, max_new_tokens=4)
    used, compared, tabs = [], [], []
    c.used.add(used.append)
    c.compared.add(compared.append)
    c.tab_changed.add(tabs.append)
    assert c.circuit is None and c.tab == 0
    first = c.editor.discover(top_k=6, universal=None)
    name = f"#1: {first.name} (6 neurons)"
    assert list(c.circuits) == [name] and c.name == name and c.circuit is first
    assert used == [name] and c.chosen == [name]
    assert c.heatmap.circuit is first
    assert c.heatmap.prompts["positive"].prompts == POSITIVE
    assert c.heatmap.prompts["negative"].prompts == NEGATIVE
    assert c.steering.circuit is first and c.steering.status == "idle"  # tab not open
    assert c.venn is None and compared == []  # one circuit: nothing to compare yet
    c.select_tab("Steering")
    assert tabs == [STEERING_TAB] and c.tab == STEERING_TAB
    assert c.steering.wait(60) and c.steering.status == "done"
    assert len(c.steering.history) == 1
    # A second discovery is compared with the first, and the open slider steers it.
    second = c.editor.discover(top_k=9, universal=None)
    assert c.circuit is second and c.chosen == list(c.circuits) and len(c.circuits) == 2
    assert compared == [c.venn] and c.venn.names == list(c.circuits)
    assert c.venn.counts[(True, True)] == 6 and c.venn.counts[(False, True)] == 3
    assert c.steering.wait(60) and c.steering.circuit is second
    assert [r.status for r in c.steering.history] == ["done", "done"]
    c.select_tab(STEERING_TAB)  # already open and generated: nothing runs again
    assert tabs == [STEERING_TAB] and len(c.steering.history) == 2
    # With its tab closed the slider takes the next circuit but waits to be opened.
    c.select_tab("Prompts")
    third = c.editor.discover(top_k=4, universal=None)
    assert c.steering.circuit is third and len(c.steering.history) == 2
    assert len(c.venn.circuits) == 3 and c.chosen == list(c.circuits)
    c.select_tab("Steering")
    assert tabs == [STEERING_TAB, 0, STEERING_TAB]
    assert c.steering.wait(60) and [r.status for r in c.steering.history][-1] == "done"
    assert len(c.steering.history) == 3
    assert c.steering.completions[0].steered == wb.generate(
        tiny_llama, c.steering.completions[0].prompt, circuit=third, max_new_tokens=4)[0]
    assert not hooks_left(tiny_llama.hf_model)


def test_the_chosen_neuron_follows_the_circuit_in_use(tiny_llama, tiny_circuit, no_widgets):
    c = ExplorerController(tiny_llama, POSITIVE, NEGATIVE, circuit=tiny_circuit)
    layer, index = tiny_circuit.neurons[3].key
    detail = c.select_neuron(layer, index)
    assert (detail.layer, detail.index) == (layer, index) and c.neuron == (layer, index)
    first_map = c.heatmap
    other = wb.discover(tiny_llama, POSITIVE, NEGATIVE, top_k=5, universal=None,
                        progress=False)
    assert c.add_circuit(other, "five") == "five"
    assert c.heatmap is not first_map and c.heatmap.circuit is other
    assert (c.heatmap.detail.layer, c.heatmap.detail.index) == (layer, index)
    c.heatmap.select(0, 1)  # what a click in the new heatmap does
    assert c.neuron == (0, 1)
    first_map.select(1, 2)  # the heatmap of a circuit no longer in use changes nothing
    assert c.neuron == (0, 1)
    c.use(list(c.circuits)[0])
    assert c.circuit is tiny_circuit
    assert (c.heatmap.detail.layer, c.heatmap.detail.index) == (0, 1)


def test_explorer_controller_refuses_bad_requests_with_reasons(tiny_llama, tiny_circuit,
                                                               tmp_path, no_widgets):
    c = ExplorerController(tiny_llama, POSITIVE, NEGATIVE)
    with pytest.raises(InvalidArgumentError, match="discover or add a circuit first"):
        c.select_neuron(0, 0)
    only = c.add_circuit(tiny_circuit, "only")
    with pytest.raises(InvalidArgumentError, match="two or three"):
        c.compare([only])
    assert c.venn is None
    with pytest.raises(InvalidArgumentError, match="no circuit is called 'missing'.*'only'"):
        c.use("missing")
    with pytest.raises(InvalidArgumentError, match="no circuit is called 'nope'"):
        c.choose(["only", "nope"])
    assert c.chosen == ["only"] and c.name == "only"
    for tab in ("Settings", 4, -1, True):
        with pytest.raises(InvalidArgumentError, match="tab"):
            c.select_tab(tab)
    assert c.tab == 0
    other_shape = random_circuit({(0, 1)})
    with pytest.raises(CircuitMismatchError):
        c.add_circuit(other_shape)
    assert list(c.circuits) == ["only"]
    loaded = wb.Circuit.load(tiny_circuit.save(tmp_path / "c.json"), model=tiny_llama)
    c.add_circuit(loaded, "loaded")
    assert c.heatmap is None and c.heatmap_note == NO_STATISTICS
    with pytest.raises(InvalidArgumentError, match="no statistics"):
        c.select_neuron(0, 0)
    assert c.steering.circuit is loaded  # steerable all the same


def test_the_explorer_view_follows_its_controller(tiny_llama, tiny_circuit):
    c = ExplorerController(tiny_llama, POSITIVE, NEGATIVE, circuit=tiny_circuit)
    other = wb.discover(tiny_llama, POSITIVE, NEGATIVE, top_k=5, universal=None,
                        progress=False)
    c.add_circuit(other, "five")
    c.select_neuron(*other.neurons[0].key)
    c.compare()
    c.venn.select((True, True))
    # A view drawn later shows the state the controller holds.
    app = CircuitExplorer.from_controller(c, interactive=False)
    assert app.controller is c and app.editor.controller is c.editor
    assert app.heatmap.controller is c.heatmap and app.steering.controller is c.steering
    assert (app.heatmap.layer.value, app.heatmap.neuron.value) == other.neurons[0].key
    assert app.venn.controller is c.venn and "A ∩ B</b>: 5 neurons" in app.venn.listing.value
    assert app.venn_choice.value == tuple(c.chosen) == tuple(c.circuits)
    # Tabs are linked both ways.
    c.select_tab("Differences")
    assert app.tabs.selected_index == 1
    app.tabs.selected_index = 2
    assert c.tab == 2
    # Errors show in the status line; choosing in the list tells the controller.
    app.venn_choice.value = (list(c.circuits)[0],)
    assert c.chosen == [list(c.circuits)[0]]
    app.compare_button.click()
    assert "error" in app.status.value and "two or three" in app.status.value
    assert app.venn_status is app.status
    app.venn_choice.value = tuple(c.circuits)
    app.compare_button.click()
    assert app.status.value == "" and app.venn.controller is c.venn
    assert app.venn.controller.region is None  # a new comparison
    c.use(list(c.circuits)[0])  # from code: the view follows
    assert app.heatmap.controller is c.heatmap and app.heatmap.controller.circuit is tiny_circuit
    assert list(c.circuits)[0] in app.heatmap_box.children[0].value


def test_circuit_controller_links_the_neuron_table_to_the_heatmap(no_widgets):
    circuit = synthetic_circuit(3, 40, n_neurons=5)
    c = CircuitController(circuit)
    assert c.tabs == ["Differences", "Neurons"] and c.steering is None
    assert c.heatmap.circuit is circuit and c.heatmap_note is None
    assert c.layer_summary.startswith("5 neurons; per layer ")
    assert c.neurons()[["layer", "index"]].values.tolist() == [list(n.key)
                                                               for n in circuit.neurons]
    tabs = []
    c.tab_changed.add(tabs.append)
    c.select_tab("Neurons")
    key = circuit.neurons[2].key
    detail = c.select_neuron(*key)
    assert (detail.layer, detail.index) == key and c.heatmap.detail is detail
    assert c.neuron == key and c.tab == 0 and tabs == [1, 0]
    c.heatmap.select(0, 0)  # a click in the heatmap
    assert c.neuron == (0, 0)
    with pytest.raises(InvalidArgumentError, match="tab"):
        c.select_tab("Steering")  # no model, no slider
    loaded = CircuitController(wb.Circuit.from_dict(circuit.to_dict()))
    assert loaded.heatmap is None and loaded.heatmap_note == NO_STATISTICS
    with pytest.raises(InvalidArgumentError, match="no statistics"):
        loaded.select_neuron(*key)


def test_circuit_view_opens_a_table_neuron_in_the_heatmap():
    circuit = synthetic_circuit(3, 40, n_neurons=5)
    view = widgets.show(circuit, interactive=False)
    assert isinstance(view, CircuitView) and view.heatmap.controller is view.controller.heatmap
    view.widget.selected_index = 1
    assert view.controller.tab == 1
    key = circuit.neurons[1].key
    view.neuron_choice.value = key
    view.show_button.click()
    assert view.widget.selected_index == 0 and view.controller.neuron == key
    assert f"layer {key[0]}, neuron {key[1]}" in view.heatmap.tokens.value
    loaded = widgets.show(wb.Circuit.from_dict(circuit.to_dict()), interactive=False)
    assert loaded.heatmap is None and loaded.show_button.disabled
    assert "no statistics" in loaded.widget.children[0].value
    loaded.show_neuron(*key)
    assert "error" in loaded.status.value and "no statistics" in loaded.status.value
