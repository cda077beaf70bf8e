"""CircuitExplorer: the four widgets wired together for one model, and two shortcuts.

* :func:`explore` (or :class:`CircuitExplorer`): tabs Prompts, Differences, Overlap and
  Steering. "Discover" in the Prompts tab hands the new circuit to the heatmap and the
  steering slider, and adds it to the circuits the Overlap tab can compare. Under the
  heatmap, "Where does the circuit fire?" colours every token of the discover prompts by
  the circuit's signed sum, or by one of its neurons (:mod:`widgets.token_view`).
* :func:`show` (or :class:`CircuitView`): one circuit's heatmap, neuron table and (given
  a model) steering slider.

As every widget here, each is a plain controller (:class:`ExplorerController`,
:class:`CircuitController`) that owns the state and the controllers of the widgets it
links, and a view that draws the widgets' views from those controllers.

Example:
    >>> import workbench as wb, widgets
    >>> model = wb.load_model()                                         # doctest: +SKIP
    >>> widgets.explore(model)                                          # doctest: +SKIP
    >>> circuit = wb.discover(model, "qualitative-harmful", "qualitative-benign")  # doctest: +SKIP
    >>> widgets.show(circuit, model=model)                              # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import ipywidgets

from workbench.circuit import Circuit
from workbench.config import STEERING_VIEW_MAX_NEW_TOKENS, DiscoverConfig
from workbench.errors import InvalidArgumentError
from workbench.models import WorkbenchModel

from . import markup
from .editor import EditorController, PromptSetEditor, PromptsSpec
from .heatmap import DifferenceHeatmap, HeatmapController, NeuronDetail, _prompt_set
from .observers import Observers
from .steering_slider import DEFAULT_PROMPTS, SteeringController, SteeringSlider
from .token_view import TokenView, TokenViewController
from .venn import CircuitVenn, VennController
from .view import View

if TYPE_CHECKING:  # pandas loads on first use
    import pandas as pd

TABS = ("Prompts", "Differences", "Overlap", "Steering")
STEERING_TAB = TABS.index("Steering")

#: Why a circuit has no heatmap.
NO_STATISTICS = ("this circuit has no statistics (loaded from a file?): discover it in this "
                 "session to see its differences")


def heatmap_for(circuit: Circuit, model: WorkbenchModel | None, positive: PromptsSpec,
                negative: PromptsSpec) -> tuple[HeatmapController | None, str | None]:
    """A heatmap controller for ``circuit``, or None and the reason it cannot have one."""
    if circuit.contrast is None:
        return None, NO_STATISTICS
    return HeatmapController(circuit, model=model, positive=positive, negative=negative), None


class ExplorerController:
    """The state of a :class:`CircuitExplorer`, and what links its four tabs.

    It holds the circuits discovered or added (``circuits``, by name), the one in use
    (``name``, ``circuit``), the open tab (``tab``), the neuron last chosen in the
    heatmap (``neuron``) and the circuits the next comparison takes (``chosen``). It
    owns one controller per tab: ``editor`` (always), ``heatmap`` and ``steering`` for
    the circuit in use, ``venn`` for the last comparison. A discovery in the editor adds
    the circuit and uses it, and compares it with the previous ones at once; using a
    circuit gives the heatmap and the slider that circuit and opens the chosen neuron
    in the new heatmap; the slider generates only while its tab is open.

    Args:
        model: the model to discover and steer with.
        positive, negative: the starting prompt sets (bundled names, files, lists).
        circuit: a circuit to start with (e.g. loaded from JSON).
        prompts: the steering slider's prompts.
        max_new_tokens: tokens per steering completion.
        max_imbalance: largest allowed size ratio of the prompt sets (None: any).

    Example:
        >>> explorer = ExplorerController(model, "qualitative-harmful",
        ...                               "qualitative-benign")            # doctest: +SKIP
        >>> circuit = explorer.editor.discover(top_k=50)                  # doctest: +SKIP
        >>> explorer.heatmap.circuit is explorer.steering.circuit is circuit  # doctest: +SKIP
        True
        >>> explorer.select_tab("Steering")    # generates the completions  # doctest: +SKIP
    """

    def __init__(self, model: WorkbenchModel, positive: PromptsSpec = "qualitative-harmful",
                 negative: PromptsSpec = "qualitative-benign", *,
                 circuit: Circuit | None = None, prompts: Sequence[str] = DEFAULT_PROMPTS,
                 max_new_tokens: int = STEERING_VIEW_MAX_NEW_TOKENS,
                 max_imbalance: float | None = DiscoverConfig.max_imbalance) -> None:
        self.model = model
        self.steering_prompts = list(prompts)
        self.max_new_tokens = max_new_tokens
        self.editor = EditorController(positive, negative, model=model,
                                       max_imbalance=max_imbalance)
        self.circuits: dict[str, Circuit] = {}
        self._prompt_sets: dict[str, tuple[PromptsSpec, PromptsSpec]] = {}
        self.name: str | None = None
        self.tab = 0
        self.neuron: tuple[int, int] | None = None
        self.chosen: list[str] = []
        self.heatmap: HeatmapController | None = None
        self.heatmap_note: str | None = None  # why the circuit in use has no heatmap
        self.steering: SteeringController | None = None
        self.venn: VennController | None = None
        self.tokens: TokenViewController | None = None  # the circuit in use, token by token
        self._steered: Circuit | None = None  # the circuit the slider last generated for
        self.added = Observers()        # (name) after a circuit is added
        self.used = Observers()         # (name) after the heatmap and slider take a circuit
        self.compared = Observers()     # (VennController) after a comparison
        self.tab_changed = Observers()  # (index) after another tab is opened
        self.choice_changed = Observers()  # () after the circuits to compare change
        self.tokens_read = Observers()  # (TokenViewController) after circuit_tokens()
        self.editor.discovered.add(self._discovered)
        if circuit is not None:
            self.add_circuit(circuit)

    @property
    def circuit(self) -> Circuit | None:
        """The circuit in use (plotted and steered), if any."""
        return None if self.name is None else self.circuits[self.name]

    def add_circuit(self, circuit: Circuit, name: str | None = None, *,
                    positive: PromptsSpec = None, negative: PromptsSpec = None,
                    use: bool = True) -> str:
        """Add a circuit to compare (and, with ``use``, to plot and steer); returns its name.

        A name already taken gets a number (``"c [2]"``). The last three circuits added
        become the ones to compare. ``positive`` and ``negative`` are the prompt sets the
        circuit was discovered on, for the heatmap's neuron panel.
        """
        circuit.check_model(self.model)
        base = name or f"{circuit.name} ({len(circuit)} neurons)"
        name, k = base, 2
        while name in self.circuits:
            name, k = f"{base} [{k}]", k + 1
        self.circuits[name] = circuit
        self._prompt_sets[name] = (positive, negative)
        self.chosen = list(self.circuits)[-3:]
        self.added(name)
        self.choice_changed()
        if use:
            self.use(name)
        return name

    def use(self, name: str) -> None:
        """Plot and steer the circuit called ``name``; the chosen neuron stays chosen."""
        circuit = self._named(name)
        positive, negative = self._prompt_sets[name]
        heatmap, note = heatmap_for(circuit, self.model, positive, negative)
        if self.heatmap is not None:  # choices in the old map no longer count
            self.heatmap.selected.remove(self._neuron_selected)
        self.name, self.heatmap, self.heatmap_note = name, heatmap, note
        self.tokens = None
        if heatmap is not None:
            heatmap.selected.add(self._neuron_selected)
        if self.steering is None:
            self.steering = SteeringController(self.model, circuit, self.steering_prompts,
                                               max_new_tokens=self.max_new_tokens)
        else:
            self.steering.cancel()  # the rows still to come would steer the new circuit
            self.steering.set_circuit(circuit, regenerate=False)
        self.used(name)
        if self.heatmap is not None and self.neuron is not None:
            self.heatmap.select(*self.neuron)  # before the slider takes the model
        if self.tab == STEERING_TAB:
            self._steer()

    def _steer(self) -> None:
        assert self.steering is not None
        self._steered = self.circuit
        self.steering.run()

    def choose(self, names: Sequence[str]) -> None:
        """Choose the circuits the next :meth:`compare` takes."""
        for name in names:
            self._named(name)
        self.chosen = list(names)
        self.choice_changed()

    def compare(self, names: Sequence[str] | None = None) -> VennController:
        """Compare two or three of the added circuits (default: the chosen ones)."""
        names = self.chosen if names is None else list(names)
        venn = VennController([self._named(n) for n in names], names=names)
        self.venn = venn
        self.compared(venn)
        return venn

    def select_tab(self, tab: int | str) -> None:
        """Open a tab, by index or title.

        Opening Steering generates the completions unless they are already those of the
        circuit in use (the slider generates only while its tab is open).
        """
        if isinstance(tab, str):
            if tab not in TABS:
                raise InvalidArgumentError(f"there is no tab {tab!r}; the tabs are "
                                           f"{', '.join(TABS)}")
            tab = TABS.index(tab)
        if isinstance(tab, bool) or not isinstance(tab, int) or not 0 <= tab < len(TABS):
            raise InvalidArgumentError(f"tab must be 0..{len(TABS) - 1} or one of "
                                       f"{', '.join(TABS)}, not {tab!r}")
        if tab != self.tab:
            self.tab = tab
            self.tab_changed(tab)
        if tab == STEERING_TAB and self.steering is not None and self._steered is not self.circuit:
            self._steer()

    def select_neuron(self, layer: int, index: int) -> NeuronDetail:
        """Choose a neuron in the heatmap of the circuit in use (kept for later circuits)."""
        if self.heatmap is None:
            raise InvalidArgumentError(
                "no heatmap to choose a neuron in: " + (self.heatmap_note or
                                                        "discover or add a circuit first"))
        return self.heatmap.select(layer, index)

    def circuit_tokens(self) -> TokenViewController:
        """The circuit in use on every token of the prompts it was discovered on.

        Coloured by the circuit's signed sum (score-weighted), or by the neuron last chosen
        in the heatmap when it is one of the circuit's.

        Example:
            >>> explorer.circuit_tokens().html()  # doctest: +SKIP
        """
        circuit = self.circuit
        if circuit is None or self.name is None:
            raise InvalidArgumentError("discover or add a circuit first")
        given = self._prompt_sets[self.name]
        sets = [("positive", _prompt_set(given[0], circuit, "positive")),
                ("negative", _prompt_set(given[1], circuit, "negative"))]
        missing = [side for side, prompts in sets if prompts is None]
        if missing:
            raise InvalidArgumentError(
                f"the {' and '.join(missing)} prompts of this circuit are unknown; add it with "
                "add_circuit(circuit, positive=..., negative=...)")
        texts = [p for _, prompts in sets if prompts for p in prompts.prompts]
        labels = [f"{side} {i + 1}" for side, prompts in sets if prompts
                  for i in range(len(prompts))]
        colour = self.neuron if self.neuron in circuit.keys() else None
        prompting = circuit.prompting.get("chat_template")
        self.tokens = TokenViewController.read(
            self.model, texts, circuit, labels=labels, colour_by=colour,
            prompting=None if prompting is None else self.model.prompting(
                bool(prompting), circuit.prompting.get("system_prompt")))
        self.tokens_read(self.tokens)
        return self.tokens

    def _named(self, name: str) -> Circuit:
        if name not in self.circuits:
            known = ", ".join(repr(n) for n in self.circuits) or "none yet"
            raise InvalidArgumentError(f"no circuit is called {name!r}; the circuits are "
                                       f"{known}")
        return self.circuits[name]

    def _neuron_selected(self, detail: NeuronDetail) -> None:
        self.neuron = (detail.layer, detail.index)

    def _discovered(self, circuit: Circuit) -> None:
        e = self.editor
        self.add_circuit(circuit, f"#{len(self.circuits) + 1}: {circuit.name} "
                                  f"({len(circuit)} neurons)",
                         positive=e.prompt_set("positive"), negative=e.prompt_set("negative"))
        if len(self.circuits) >= 2:
            self.compare()


class CircuitExplorer(View):
    """Prompt editor, difference heatmap, circuit overlap and steering for one model.

    The state lives in ``controller`` (an :class:`ExplorerController`); ``editor``,
    ``heatmap``, ``venn`` and ``steering`` are the views of its controllers.

    Args:
        model, positive, negative, circuit, prompts, max_new_tokens: see
            :class:`ExplorerController`.
        interactive: live or static figures (default: see :mod:`widgets.environment`).
        discover_options: defaults for :func:`workbench.discover` (``top_k=``...);
            ``max_imbalance`` and ``filter_tokens`` as in :class:`PromptSetEditor`.

    Example:
        >>> app = CircuitExplorer(model, "jbb-harmful", "jbb-benign", top_k=100)  # doctest: +SKIP
        >>> app.controller.select_tab("Differences")                             # doctest: +SKIP
    """

    def __init__(self, model: WorkbenchModel, positive: PromptsSpec = "qualitative-harmful",
                 negative: PromptsSpec = "qualitative-benign", *,
                 circuit: Circuit | None = None, prompts: Sequence[str] = DEFAULT_PROMPTS,
                 max_new_tokens: int = STEERING_VIEW_MAX_NEW_TOKENS,
                 interactive: bool | None = None, **discover_options: Any) -> None:
        max_imbalance = discover_options.pop("max_imbalance", DiscoverConfig.max_imbalance)
        controller = ExplorerController(model, positive, negative, circuit=circuit,
                                        prompts=prompts, max_new_tokens=max_new_tokens,
                                        max_imbalance=max_imbalance)
        self._build(controller, interactive, discover_options)

    @classmethod
    def from_controller(cls, controller: ExplorerController, *,
                        interactive: bool | None = None,
                        **discover_options: Any) -> CircuitExplorer:
        """The view of an existing controller; it shows the controller's state as it is."""
        view = cls.__new__(cls)
        view._build(controller, interactive, discover_options)
        return view

    def _build(self, controller: ExplorerController, interactive: bool | None,
               discover_options: dict[str, Any]) -> None:
        super().__init__()
        self.controller = c = controller
        self.interactive = interactive
        self.editor = PromptSetEditor.from_controller(c.editor, **discover_options)
        self.heatmap: DifferenceHeatmap | None = None
        self.venn: CircuitVenn | None = None
        self.steering: SteeringSlider | None = None
        self.token_view: TokenView | None = None
        waiting = "discover a circuit in the Prompts tab first"
        self.heatmap_box = ipywidgets.VBox([ipywidgets.HTML(markup.message("info", waiting))])
        self.steering_box = ipywidgets.VBox([ipywidgets.HTML(markup.message("info", waiting))])
        self.venn_choice = ipywidgets.SelectMultiple(options=[], rows=5, description="circuits",
                                                     layout={"width": "520px"})
        self.compare_button = ipywidgets.Button(description="Compare")
        self.venn_status = self.status  # the explorer's status line sits in the Overlap tab
        self.say("info", "discover or add two or three circuits, choose them, then Compare")
        self.venn_area = ipywidgets.VBox()
        self._syncing = False
        self.compare_button.on_click(lambda _b: self.compare(list(self.venn_choice.value)))
        self.venn_choice.observe(self._choice_edited, "value")
        self.tabs = ipywidgets.Tab(children=[
            self.editor.widget, self.heatmap_box,
            ipywidgets.VBox([ipywidgets.HBox([self.venn_choice, self.compare_button]),
                             self.status, self.venn_area]),
            self.steering_box,
        ], titles=TABS, selected_index=c.tab)
        self.tabs.observe(self._tab_opened, "selected_index")
        self.widget = self.tabs
        c.choice_changed.add(self._show_choice)
        c.used.add(self._show_used)
        c.compared.add(self._show_comparison)
        c.tab_changed.add(self._show_tab)
        self._show_choice()
        if c.name is not None:
            self._show_used(c.name)
        if c.venn is not None:
            self._show_comparison(c.venn)

    # -- the controller's state, as before the split ------------------------------

    @property
    def model(self) -> WorkbenchModel:
        return self.controller.model

    @property
    def circuits(self) -> dict[str, Circuit]:
        """The added circuits by name (see :attr:`ExplorerController.circuits`)."""
        return self.controller.circuits

    @property
    def circuit(self) -> Circuit | None:
        """The circuit in use."""
        return self.controller.circuit

    def add_circuit(self, circuit: Circuit, name: str | None = None, *,
                    positive: PromptsSpec = None, negative: PromptsSpec = None,
                    use: bool = True) -> str:
        """See :meth:`ExplorerController.add_circuit`."""
        return self.controller.add_circuit(circuit, name, positive=positive,
                                           negative=negative, use=use)

    def use(self, name: str) -> None:
        """See :meth:`ExplorerController.use`."""
        self.controller.use(name)

    def compare(self, names: Sequence[str]) -> CircuitVenn | None:
        """Show the Venn diagram of two or three of the added circuits (None: see status)."""
        if self.act(lambda: self.controller.compare(names)) is None:
            return None
        return self.venn

    # -- drawing ---------------------------------------------------------------------

    def _show_choice(self) -> None:
        c = self.controller
        self._syncing = True
        try:
            self.venn_choice.options = list(c.circuits)
            self.venn_choice.value = tuple(c.chosen)
        finally:
            self._syncing = False

    def _show_used(self, name: str) -> None:
        c = self.controller
        if c.heatmap is not None:
            self.heatmap = DifferenceHeatmap.from_controller(c.heatmap,
                                                             interactive=self.interactive)
            shown = self.heatmap.widget
        else:
            self.heatmap = None
            shown = ipywidgets.HTML(markup.message("info", c.heatmap_note or NO_STATISTICS))
        self.fires_button = ipywidgets.Button(description="Where does the circuit fire?",
                                              layout={"width": "240px"})
        self.fires_button.on_click(lambda _b: self.circuit_tokens())
        self.fires_area = ipywidgets.VBox()
        self.heatmap_box.children = [ipywidgets.HTML(f"<b>{markup.escape(name)}</b>"), shown,
                                     ipywidgets.VBox([self.fires_button, self.fires_area])]
        if c.steering is None:
            return
        if self.steering is None:
            self.steering = SteeringSlider.from_controller(c.steering)
            self.steering_box.children = [self.steering.widget]
        else:
            self.steering.redraw()

    def circuit_tokens(self) -> TokenView | None:
        """Show the circuit in use token by token under the heatmap (None: see status)."""
        controller = self.act(self.controller.circuit_tokens)
        if controller is None:
            return None
        self.token_view = TokenView.from_controller(controller)
        self.fires_area.children = [self.token_view.widget]
        return self.token_view

    def _show_comparison(self, venn: VennController) -> None:
        self.venn = CircuitVenn.from_controller(venn, interactive=self.interactive)
        self.venn_area.children = [self.venn.widget]
        self.clear_status()

    def _show_tab(self, index: int) -> None:
        self.tabs.selected_index = index

    def _tab_opened(self, change: dict) -> None:
        self.act(lambda: self.controller.select_tab(change["new"]))

    def _choice_edited(self, change: dict) -> None:
        if not self._syncing:
            self.act(lambda: self.controller.choose(list(change["new"])))


def explore(model: WorkbenchModel, positive: PromptsSpec = "qualitative-harmful",
            negative: PromptsSpec = "qualitative-benign", **options: Any) -> CircuitExplorer:
    """The whole workbench for ``model`` in one widget (see :class:`CircuitExplorer`).

    Example:
        >>> explore(model, "jbb-harmful", "jbb-benign", top_k=100)  # doctest: +SKIP
    """
    return CircuitExplorer(model, positive, negative, **options)


class CircuitController:
    """One circuit: its heatmap controller, neuron table and (given a model) steering.

    It holds the open tab (``tab``) and the neuron last chosen (``neuron``), and links
    the neuron table to the heatmap: :meth:`select_neuron` opens a circuit neuron's panel
    and the Differences tab. A circuit without statistics has no heatmap
    (``heatmap_note`` says why).

    Args:
        circuit: the circuit to show.
        model: the model, to steer and to read activations in the heatmap.
        positive, negative: the prompt sets the circuit was discovered on.
        prompts: the steering slider's prompts.
        max_new_tokens: tokens per steering completion.

    Example:
        >>> from workbench.circuit import Circuit, Neuron
        >>> shape = {"name": "m", "architecture": "LlamaForCausalLM", "n_layers": 2,
        ...          "d_mlp": 8}
        >>> c = CircuitController(Circuit.from_neurons([Neuron(1, 3, 0.5), Neuron(0, 2, -0.2)],
        ...                                            model=shape))
        >>> c.tabs, c.layer_summary
        (['Differences', 'Neurons'], '2 neurons; per layer 0: 1, 1: 1')
        >>> c.heatmap is None and c.heatmap_note == NO_STATISTICS
        True
    """

    def __init__(self, circuit: Circuit, *, model: WorkbenchModel | None = None,
                 positive: PromptsSpec = None, negative: PromptsSpec = None,
                 prompts: Sequence[str] = DEFAULT_PROMPTS,
                 max_new_tokens: int = STEERING_VIEW_MAX_NEW_TOKENS) -> None:
        if model is not None:
            circuit.check_model(model)
        self.circuit = circuit
        self.model = model
        self.heatmap, self.heatmap_note = heatmap_for(circuit, model, positive, negative)
        self.steering = None if model is None else SteeringController(
            model, circuit, prompts, max_new_tokens=max_new_tokens)
        self.tabs = ["Differences", "Neurons"] + ([] if self.steering is None else ["Steering"])
        self.tab = 0
        self.neuron: tuple[int, int] | None = None
        self.tab_changed = Observers()  # (index) after another tab is opened
        if self.heatmap is not None:
            self.heatmap.selected.add(self._neuron_selected)

    @property
    def layer_summary(self) -> str:
        """The circuit's size and neurons per layer, in one line."""
        counts = ", ".join(f"{layer}: {n}" for layer, n in self.circuit.layer_counts().items())
        return f"{len(self.circuit)} neurons; per layer {counts}"

    def neurons(self) -> pd.DataFrame:
        """The neuron table (rank, layer, index, score, sign)."""
        return self.circuit.to_dataframe()

    def select_tab(self, tab: int | str) -> None:
        """Open a tab, by index or title (see ``tabs``)."""
        if isinstance(tab, str) and tab in self.tabs:
            tab = self.tabs.index(tab)
        if isinstance(tab, bool) or not isinstance(tab, int) or not 0 <= tab < len(self.tabs):
            raise InvalidArgumentError(f"tab must be 0..{len(self.tabs) - 1} or one of "
                                       f"{', '.join(self.tabs)}, not {tab!r}")
        if tab != self.tab:
            self.tab = tab
            self.tab_changed(tab)

    def select_neuron(self, layer: int, index: int) -> NeuronDetail:
        """Open a neuron's panel in the heatmap, and the Differences tab."""
        if self.heatmap is None:
            raise InvalidArgumentError(f"no heatmap to show the neuron in: {self.heatmap_note}")
        detail = self.heatmap.select(layer, index)
        self.select_tab("Differences")
        return detail

    def _neuron_selected(self, detail: NeuronDetail) -> None:
        self.neuron = (detail.layer, detail.index)


class CircuitView(View):
    """One circuit: its difference heatmap, neuron table and (with a model) steering.

    The state lives in ``controller`` (a :class:`CircuitController`). The Neurons tab
    opens a circuit neuron in the heatmap; the steering slider generates at once.

    Example:
        >>> CircuitView(circuit, model=model)  # doctest: +SKIP
    """

    def __init__(self, circuit: Circuit, *, model: WorkbenchModel | None = None,
                 positive: PromptsSpec = None, negative: PromptsSpec = None,
                 prompts: Sequence[str] = DEFAULT_PROMPTS,
                 max_new_tokens: int = STEERING_VIEW_MAX_NEW_TOKENS,
                 interactive: bool | None = None) -> None:
        self._build(CircuitController(circuit, model=model, positive=positive,
                                      negative=negative, prompts=prompts,
                                      max_new_tokens=max_new_tokens), interactive)

    @classmethod
    def from_controller(cls, controller: CircuitController, *,
                        interactive: bool | None = None) -> CircuitView:
        """The view of an existing controller."""
        view = cls.__new__(cls)
        view._build(controller, interactive)
        return view

    def _build(self, controller: CircuitController, interactive: bool | None) -> None:
        super().__init__()
        self.controller = c = controller
        self.circuit = c.circuit
        self.heatmap: DifferenceHeatmap | None = None
        if c.heatmap is None:
            differences: Any = ipywidgets.HTML(markup.message("info", c.heatmap_note or ""))
        else:
            self.heatmap = DifferenceHeatmap.from_controller(c.heatmap, interactive=interactive)
            differences = self.heatmap.widget
        self.table = ipywidgets.HTML(
            f"<div><b>{markup.escape(c.circuit.name)}</b>: {markup.escape(c.layer_summary)}"
            f"</div>" + markup.table(c.neurons()))
        self.neuron_choice = ipywidgets.Dropdown(
            options=[(f"layer {n.layer}, neuron {n.index} (score {n.score:+.4g})", n.key)
                     for n in c.circuit.neurons], description="neuron",
            layout={"width": "420px"})
        self.show_button = ipywidgets.Button(description="Show in heatmap",
                                             disabled=c.heatmap is None or not c.circuit.neurons)
        self.show_button.on_click(lambda _b: self.show_neuron(*self.neuron_choice.value))
        children = [differences, ipywidgets.VBox([
            ipywidgets.HBox([self.neuron_choice, self.show_button]), self.status, self.table])]
        self.steering: SteeringSlider | None = None
        if c.steering is not None:
            self.steering = SteeringSlider.from_controller(c.steering, autorun=True)
            children.append(self.steering.widget)
        self.widget = ipywidgets.Tab(children=children, titles=c.tabs, selected_index=c.tab)
        self.widget.observe(lambda change: self.act(lambda: c.select_tab(change["new"])),
                            "selected_index")
        c.tab_changed.add(self._show_tab)

    def show_neuron(self, layer: int, index: int) -> None:
        """Open a neuron of the circuit in the heatmap, as the Neurons tab's button does."""
        self.act(lambda: self.controller.select_neuron(layer, index))

    def _show_tab(self, index: int) -> None:
        self.widget.selected_index = index


def show(circuit: Circuit, *, model: WorkbenchModel | None = None, **options: Any) -> CircuitView:
    """A circuit's heatmap, neuron table and, given ``model``, its steering slider.

    Example:
        >>> show(circuit, model=model)  # doctest: +SKIP
    """
    return CircuitView(circuit, model=model, **options)
