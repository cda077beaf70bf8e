"""CircuitExplorer: the four widgets wired together for one model, and two shortcuts.

* :func:`explore` (or :class:`CircuitExplorer`): tabs Prompts, Differences, Overlap and
  Steering. "Discover" in the Prompts tab hands the new circuit to the heatmap and the
  steering slider, and adds it to the circuits the Overlap tab can compare.
* :func:`show`: one circuit's heatmap, neuron table and (given a model) steering slider.

Example:
    >>> import workbench as wb, widgets
    >>> model = wb.load_model()                                         # doctest: +SKIP
    >>> widgets.explore(model)                                          # doctest: +SKIP
    >>> circuit = wb.discover(model, "qualitative-harmful", "qualitative-benign")  # doctest: +SKIP
    >>> widgets.show(circuit, model=model)                              # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ipywidgets

from workbench.circuit import Circuit
from workbench.errors import WorkbenchError
from workbench.models import WorkbenchModel

from . import markup
from .editor import PromptSetEditor, PromptsSpec
from .heatmap import DifferenceHeatmap
from .steering_slider import DEFAULT_PROMPTS, SteeringSlider
from .venn import CircuitVenn
from .view import View

TABS = ("Prompts", "Differences", "Overlap", "Steering")
STEERING_TAB = TABS.index("Steering")


def _heatmap_or_message(circuit: Circuit, model: WorkbenchModel | None,
                        positive: PromptsSpec, negative: PromptsSpec,
                        interactive: bool | None) -> tuple[DifferenceHeatmap | None, Any]:
    if circuit.contrast is None:
        return None, ipywidgets.HTML(markup.message(
            "info", "this circuit has no statistics (loaded from a file?): discover it in this "
                    "session to see its differences"))
    heatmap = DifferenceHeatmap(circuit, model=model, positive=positive, negative=negative,
                                interactive=interactive)
    return heatmap, heatmap.widget


class CircuitExplorer(View):
    """Prompt editor, difference heatmap, circuit overlap and steering for one model.

    Args:
        model: the model to discover and steer with.
        positive, negative: the starting prompt sets (bundled names, files, lists).
        circuit: a circuit to start with (e.g. loaded from JSON).
        prompts: the steering slider's prompts.
        max_new_tokens: tokens per steering completion.
        interactive: live or static figures (default: see :mod:`widgets.environment`).
        discover_options: defaults for :func:`workbench.discover` (``top_k=``...).
    """

    def __init__(self, model: WorkbenchModel, positive: PromptsSpec = "qualitative-harmful",
                 negative: PromptsSpec = "qualitative-benign", *,
                 circuit: Circuit | None = None, prompts: Sequence[str] = DEFAULT_PROMPTS,
                 max_new_tokens: int = 48, interactive: bool | None = None,
                 **discover_options: Any) -> None:
        self.model = model
        self.interactive = interactive
        self.steering_prompts = list(prompts)
        self.max_new_tokens = max_new_tokens
        self.editor = PromptSetEditor(positive, negative, model=model, **discover_options)
        self.circuits: dict[str, Circuit] = {}
        self._prompt_sets: dict[str, tuple[PromptsSpec, PromptsSpec]] = {}
        self.circuit: Circuit | None = None
        self.heatmap: DifferenceHeatmap | None = None
        self.venn: CircuitVenn | None = None
        self.steering: SteeringSlider | None = None
        waiting = "discover a circuit in the Prompts tab first"
        self.heatmap_box = ipywidgets.VBox([ipywidgets.HTML(markup.message("info", waiting))])
        self.steering_box = ipywidgets.VBox([ipywidgets.HTML(markup.message("info", waiting))])
        self.venn_choice = ipywidgets.SelectMultiple(options=[], rows=5, description="circuits",
                                                     layout={"width": "520px"})
        self.compare_button = ipywidgets.Button(description="Compare")
        self.venn_status = ipywidgets.HTML(markup.message(
            "info", "discover or add two or three circuits, choose them, then Compare"))
        self.venn_area = ipywidgets.VBox()
        self.compare_button.on_click(lambda _b: self.compare(list(self.venn_choice.value)))
        self.tabs = ipywidgets.Tab(children=[
            self.editor.widget, self.heatmap_box,
            ipywidgets.VBox([ipywidgets.HBox([self.venn_choice, self.compare_button]),
                             self.venn_status, self.venn_area]),
            self.steering_box,
        ], titles=TABS)
        self.tabs.observe(self._tab_changed, "selected_index")
        self.editor.controller.discovered.add(self._discovered)
        self.widget = self.tabs
        if circuit is not None:
            self.add_circuit(circuit)

    def add_circuit(self, circuit: Circuit, name: str | None = None, *,
                    positive: PromptsSpec = None, negative: PromptsSpec = None,
                    use: bool = True) -> str:
        """Add a circuit to compare (and, with ``use``, to plot and steer); returns its name."""
        circuit.check_model(self.model)
        base = name or f"{circuit.name} ({len(circuit)} neurons)"
        name, k = base, 2
        while name in self.circuits:
            name, k = f"{base} [{k}]", k + 1
        self.circuits[name] = circuit
        self._prompt_sets[name] = (positive, negative)
        self.venn_choice.options = list(self.circuits)
        self.venn_choice.value = tuple(list(self.circuits)[-3:])
        if use:
            self.use(name)
        return name

    def use(self, name: str) -> None:
        """Plot and steer the circuit called ``name``."""
        circuit = self.circuits[name]
        positive, negative = self._prompt_sets[name]
        self.circuit = circuit
        self.heatmap, shown = _heatmap_or_message(circuit, self.model, positive, negative,
                                                  self.interactive)
        self.heatmap_box.children = [ipywidgets.HTML(f"<b>{markup.escape(name)}</b>"), shown]
        steering_visible = self.tabs.selected_index == STEERING_TAB
        if self.steering is None:
            self.steering = SteeringSlider(self.model, circuit, self.steering_prompts,
                                           max_new_tokens=self.max_new_tokens,
                                           autorun=steering_visible)
            self.steering_box.children = [self.steering.widget]
        else:
            self.steering.controller.set_circuit(circuit, regenerate=steering_visible)

    def compare(self, names: Sequence[str]) -> CircuitVenn | None:
        """Show the Venn diagram of two or three of the added circuits."""
        try:
            self.venn = CircuitVenn([self.circuits[n] for n in names], names=list(names),
                                    interactive=self.interactive)
        except WorkbenchError as error:
            self.venn_status.value = markup.message("error", str(error))
            return None
        self.venn_status.value = ""
        self.venn_area.children = [self.venn.widget]
        return self.venn

    def _discovered(self, circuit: Circuit) -> None:
        c = self.editor.controller
        self.add_circuit(circuit, f"#{len(self.circuits) + 1}: {circuit.name} "
                                  f"({len(circuit)} neurons)",
                         positive=c.prompt_set("positive"), negative=c.prompt_set("negative"))
        if len(self.circuits) >= 2:
            self.compare(list(self.venn_choice.value))

    def _tab_changed(self, change: dict) -> None:
        if change["new"] == STEERING_TAB and self.steering is not None \
                and self.steering.controller.status == "idle":
            self.steering.controller.run()


def explore(model: WorkbenchModel, positive: PromptsSpec = "qualitative-harmful",
            negative: PromptsSpec = "qualitative-benign", **options: Any) -> CircuitExplorer:
    """The whole workbench for ``model`` in one widget (see :class:`CircuitExplorer`).

    Example:
        >>> explore(model, "jbb-harmful", "jbb-benign", top_k=100)  # doctest: +SKIP
    """
    return CircuitExplorer(model, positive, negative, **options)


class CircuitView(View):
    """One circuit: its difference heatmap, neuron table and (with a model) steering."""

    def __init__(self, circuit: Circuit, *, model: WorkbenchModel | None = None,
                 positive: PromptsSpec = None, negative: PromptsSpec = None,
                 prompts: Sequence[str] = DEFAULT_PROMPTS, max_new_tokens: int = 48,
                 interactive: bool | None = None) -> None:
        self.circuit = circuit
        self.heatmap, heatmap_widget = _heatmap_or_message(circuit, model, positive, negative,
                                                           interactive)
        counts = ", ".join(f"{layer}: {n}" for layer, n in circuit.layer_counts().items())
        self.table = ipywidgets.HTML(
            f"<div><b>{markup.escape(circuit.name)}</b>: {len(circuit)} neurons; per layer "
            f"{markup.escape(counts)}</div>" + markup.table(circuit.to_dataframe()))
        children, titles = [heatmap_widget, self.table], ["Differences", "Neurons"]
        self.steering = None
        if model is not None:
            self.steering = SteeringSlider(model, circuit, prompts, max_new_tokens=max_new_tokens)
            children.append(self.steering.widget)
            titles.append("Steering")
        self.widget = ipywidgets.Tab(children=children, titles=titles)


def show(circuit: Circuit, *, model: WorkbenchModel | None = None, **options: Any) -> CircuitView:
    """A circuit's heatmap, neuron table and, given ``model``, its steering slider.

    Example:
        >>> show(circuit, model=model)  # doctest: +SKIP
    """
    return CircuitView(circuit, model=model, **options)
