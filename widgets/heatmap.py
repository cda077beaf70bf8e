"""DifferenceHeatmap: the layer x neuron map of ``delta`` behind a circuit.

The map is drawn in max-``|delta|`` bins (:mod:`widgets.binning`) so that it stays quick
for very wide models (80 layers x 29,568 neurons); zooming the x axis re-bins the visible
range, down to one cell per neuron. Circuit neurons are marked with open circles. Hover
shows layer, neuron, delta and both means; clicking a cell (or naming a layer and neuron
in the boxes under the map) shows that neuron's activation on every prompt and the tokens
its down-projection column promotes through the unembedding; "Where does it fire?" then
colours every token of the discover prompts by that neuron (:mod:`widgets.token_view`).

Example:
    >>> import workbench as wb
    >>> model = wb.load_model()                                                # doctest: +SKIP
    >>> circuit = wb.discover(model, "qualitative-harmful", "qualitative-benign")  # doctest: +SKIP
    >>> DifferenceHeatmap(circuit, model=model)                                # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import ipywidgets
import numpy as np
import plotly.graph_objects as go

from workbench.circuit import Circuit, Neuron
from workbench.errors import InvalidArgumentError
from workbench.models import WorkbenchModel
from workbench.neurons import check_neuron, neuron_activations, promoted_tokens
from workbench.prompts import BUNDLED, Prompting, PromptSet
from workbench.streaming import model_lock

from . import markup
from .binning import bin_max_abs
from .export import Exportable
from .figures import FigureView
from .observers import Observers
from .token_view import TokenView, TokenViewController
from .view import View

if TYPE_CHECKING:  # pandas loads on first use
    import pandas as pd

#: Bins per layer drawn at most; a zoomed range this narrow is drawn one cell per neuron.
DEFAULT_MAX_BINS = 400

PromptsLike = PromptSet | str | os.PathLike | Sequence[str] | None


@dataclass
class NeuronDetail:
    """What the heatmap shows about one neuron.

    ``activations`` (columns set, prompt_number, prompt, activation) and ``tokens``
    (columns rank, token, token_id, logit) are pandas DataFrames, or None with the
    reason in ``notes``.
    """

    layer: int
    index: int
    delta: float
    positive_mean: float
    negative_mean: float
    score: float | None
    activations: pd.DataFrame | None = None
    tokens: pd.DataFrame | None = None
    notes: tuple[str, ...] = ()


class HeatmapController:
    """State of a DifferenceHeatmap: the visible neuron range, its bins, the chosen neuron.

    Args:
        circuit: a circuit from :func:`workbench.discover` (its ``contrast`` holds delta).
        model: the model, to read activations and promoted tokens on click.
        positive, negative: the prompt sets the circuit was discovered on; default: the
            bundled sets the circuit names, when their hashes match.
        max_bins: bins per layer drawn at most.
    """

    def __init__(self, circuit: Circuit, *, model: WorkbenchModel | None = None,
                 positive: PromptsLike = None, negative: PromptsLike = None,
                 max_bins: int = DEFAULT_MAX_BINS) -> None:
        contrast = getattr(circuit, "contrast", None)
        if contrast is None:
            raise InvalidArgumentError(
                "this circuit has no statistics to plot (circuit.contrast is empty: a circuit "
                "read from JSON keeps only its neurons); discover it again with "
                "workbench.discover(...) in this session"
            )
        if model is not None:
            circuit.check_model(model)
        self.circuit = circuit
        self.model = model
        self.max_bins = max_bins
        self.delta = contrast.delta.detach().cpu().numpy()  # [n_layers, d_mlp] float64
        self.positive_mean = contrast.positive.mean.detach().cpu().numpy()  # [n_layers, d_mlp]
        self.negative_mean = contrast.negative.mean.detach().cpu().numpy()  # [n_layers, d_mlp]
        self.n_layers, self.d_mlp = self.delta.shape
        self.scale = float(np.abs(self.delta).max()) or 1.0
        self.prompts = {"positive": _prompt_set(positive, circuit, "positive"),
                        "negative": _prompt_set(negative, circuit, "negative")}
        self.scores = {n.key: n.score for n in circuit.neurons}
        self.start, self.stop = 0, self.d_mlp
        self.binned = bin_max_abs(self.delta, self.max_bins)
        self.detail: NeuronDetail | None = None
        self.changed = Observers()   # () after a zoom
        self.selected = Observers()  # (NeuronDetail) after a neuron is chosen

    # -- zoom ------------------------------------------------------------------

    def zoom(self, start: int, stop: int) -> None:
        """Show neurons ``[start, stop)`` (clipped to the model); re-bins that range."""
        start, stop = max(0, int(start)), min(self.d_mlp, int(stop))
        if stop <= start:
            raise InvalidArgumentError(
                f"the neuron range [{start}, {stop}) is empty; give start < stop within "
                f"0..{self.d_mlp}"
            )
        if (start, stop) == (self.start, self.stop):
            return
        self.start, self.stop = start, stop
        self.binned = bin_max_abs(self.delta, self.max_bins, start, stop)
        self.changed()

    def zoom_to_axis(self, x0: float | None, x1: float | None) -> None:
        """Zoom to an x-axis range in neuron coordinates (None: show everything)."""
        if x0 is None or x1 is None:
            self.reset()
            return
        low, high = sorted((x0, x1))
        self.zoom(math.floor(low + 0.5), math.floor(high + 0.5) + 1)

    def reset(self) -> None:
        self.zoom(0, self.d_mlp)

    def neuron_at(self, layer: float, x: float) -> tuple[int, int]:
        """The neuron drawn at plot position (x, layer): the max-|delta| one of its bin."""
        row = min(max(int(round(layer)), 0), self.n_layers - 1)
        return row, int(self.binned.neurons[row, self.binned.bin_of(x)])

    # -- figure ----------------------------------------------------------------

    def figure(self) -> go.Figure:
        """The heatmap (trace 0) and the circuit markers (trace 1) for the visible range."""
        b = self.binned
        rows = np.arange(self.n_layers)[:, None]  # [n_layers, 1]
        shape = b.neurons.shape
        custom = np.stack([
            b.neurons,
            self.positive_mean[rows, b.neurons],
            self.negative_mean[rows, b.neurons],
            np.broadcast_to(b.starts, shape),
            np.broadcast_to(b.stops - 1, shape),
        ], axis=-1)  # [n_layers, n_bins, 5]
        binned_note = "" if b.full_resolution else \
            "<br>max |δ| of neurons %{customdata[3]}–%{customdata[4]}"
        heat = go.Heatmap(
            z=b.values, x=b.centers, y=np.arange(self.n_layers), customdata=custom,
            colorscale="RdBu", reversescale=True, zmid=0, zmin=-self.scale, zmax=self.scale,
            colorbar={"title": {"text": "δ"}},
            hovertemplate=("layer %{y}, neuron %{customdata[0]}<br>δ = %{z:.4g}"
                           "<br>positive mean %{customdata[1]:.4g}"
                           "<br>negative mean %{customdata[2]:.4g}" + binned_note
                           + "<extra></extra>"),
        )
        visible = [n for n in self.circuit.neurons if self.start <= n.index < self.stop]
        marks = go.Scatter(
            x=[n.index for n in visible], y=[n.layer for n in visible],
            customdata=[n.score for n in visible], mode="markers", name="circuit",
            marker={"symbol": "circle-open", "size": 9, "color": "black",
                    "line": {"width": 1.5}},
            hovertemplate="circuit neuron<br>layer %{y}, neuron %{x}<br>score %{customdata:.4g}"
                          "<extra></extra>",
        )
        resolution = "one cell per neuron" if b.full_resolution else \
            f"bins of {b.width} neurons, max |δ| shown"
        figure = go.Figure([heat, marks])
        figure.update_layout(
            title={"text": f"δ = positive mean − negative mean ({resolution})"},
            xaxis={"title": {"text": "neuron"}, "range": [self.start - 0.5, self.stop - 0.5],
                   "autorange": False},
            yaxis={"title": {"text": "layer"}, "range": [-0.5, self.n_layers - 0.5]},
            height=max(320, min(820, 10 * self.n_layers + 160)),
            margin={"l": 60, "r": 20, "t": 50, "b": 50}, showlegend=False,
        )
        return figure

    # -- one neuron --------------------------------------------------------------

    def select(self, layer: int, index: int, *, k: int = 10) -> NeuronDetail:
        """Everything shown about neuron (layer, index); also kept in ``self.detail``."""
        if self.model is not None:
            check_neuron(self.model, layer, index)
        elif not (0 <= layer < self.n_layers and 0 <= index < self.d_mlp):
            raise InvalidArgumentError(
                f"(layer {layer}, neuron {index}) is outside the map: "
                f"layers 0..{self.n_layers - 1}, neurons 0..{self.d_mlp - 1}"
            )
        notes: list[str] = []
        detail = NeuronDetail(
            layer=layer, index=index, delta=float(self.delta[layer, index]),
            positive_mean=float(self.positive_mean[layer, index]),
            negative_mean=float(self.negative_mean[layer, index]),
            score=self.scores.get((layer, index)),
        )
        detail.activations = self._activations(layer, index, notes)
        if self.model is not None:
            detail.tokens = promoted_tokens(self.model, layer, index, k=k)
        else:
            notes.append("pass model= to see the tokens this neuron promotes")
        detail.notes = tuple(notes)
        self.detail = detail
        self.selected(detail)
        return detail

    def where_it_fires(self, layer: int | None = None,
                       index: int | None = None) -> TokenViewController:
        """Every token of the discover prompts coloured by one neuron (default: the chosen).

        Needs ``model=`` and the prompt sets (given, or the bundled sets the circuit names).

        Example:
            >>> heatmap.select(29, 117); heatmap.where_it_fires().html()  # doctest: +SKIP
        """
        if layer is None or index is None:
            if self.detail is None:
                raise InvalidArgumentError("choose a neuron first (click a cell, or name a "
                                           "layer and neuron)")
            layer, index = self.detail.layer, self.detail.index
        if self.model is None:
            raise InvalidArgumentError("pass model= to read where a neuron fires")
        check_neuron(self.model, layer, index)
        sides = [(side, self.prompts[side]) for side in ("positive", "negative")]
        missing = [side for side, prompts in sides if not prompts]
        if missing:
            raise InvalidArgumentError(
                f"the {' and '.join(missing)} prompt set is unknown: pass positive= and "
                "negative= (the sets the circuit was discovered on)")
        texts = [p for _, prompts in sides for p in (prompts.prompts if prompts else [])]
        labels = [f"{side} {i + 1}" for side, prompts in sides
                  for i in range(len(prompts) if prompts else 0)]
        neuron = next((n for n in self.circuit.neurons if n.key == (layer, index)),
                      Neuron(layer, index, 1.0))
        return TokenViewController.read(self.model, texts, [neuron],
                                        labels=labels,
                                        prompting=_prompting(self.circuit, self.model))

    def exportable(self) -> Exportable:
        """The map as shown (its zoom), for :func:`widgets.export.export`."""
        return Exportable("difference heatmap", self.figure(), circuit=self.circuit,
                          extra={"neurons_shown": [self.start, self.stop]})

    def _activations(self, layer: int, index: int, notes: list[str]):
        import pandas as pd

        contrast = self.circuit.contrast
        positive, negative = self.prompts["positive"], self.prompts["negative"]
        kept = {side: getattr(contrast, side).per_prompt for side in ("positive", "negative")}
        columns: dict[str, list] = {"set": [], "prompt_number": [], "prompt": [],
                                    "activation": []}
        if all(v is not None for v in kept.values()):
            values = {side: kept[side][:, layer, index].tolist() for side in kept}
        elif self.model is not None and positive and negative:
            prompting = _prompting(self.circuit, self.model)
            with model_lock(self.model):
                values = {side: neuron_activations(self.model, prompts.prompts,
                                                   [(layer, index)],
                                                   prompting=prompting)[:, 0].tolist()
                          for side, prompts in (("positive", positive), ("negative", negative))}
        else:
            notes.append("per-prompt activations need the prompt sets and model= (or "
                         "discover(..., keep_activations=True))")
            return None
        for side in ("positive", "negative"):
            prompts = self.prompts[side]
            texts = prompts.prompts if prompts else None
            for i, value in enumerate(values[side]):
                columns["set"].append(side)
                columns["prompt_number"].append(i + 1)
                columns["prompt"].append(texts[i] if texts and i < len(texts) else f"#{i + 1}")
                columns["activation"].append(float(value))
        return pd.DataFrame(columns)


def _prompt_set(spec: PromptsLike, circuit: Circuit, side: str) -> PromptSet | None:
    """The given prompt set, or the bundled set the circuit names if its hash matches."""
    if spec is not None:
        return PromptSet.resolve(spec, name=side)
    ref = circuit.prompts.get(side) or {}
    name = ref.get("name")
    if name in BUNDLED:
        bundled = PromptSet.bundled(name)
        if bundled.sha256 == ref.get("sha256"):
            return bundled
    return None


def _prompting(circuit: Circuit, model: WorkbenchModel) -> Prompting:
    chosen = circuit.prompting.get("chat_template")
    if chosen is None:
        return model.prompting()
    return Prompting(chat_template=bool(chosen),
                     system_prompt=circuit.prompting.get("system_prompt"))


def activation_figure(detail: NeuronDetail | None) -> go.Figure:
    """Bar chart of one neuron's activation on each prompt, coloured by set."""
    figure = go.Figure()
    if detail is None:
        figure.update_layout(title={"text": "click a cell, or name a layer and neuron"},
                             xaxis={"visible": False}, yaxis={"visible": False},
                             plot_bgcolor="white", height=320,
                             margin={"l": 60, "r": 20, "t": 50, "b": 40})
        return figure
    frame = detail.activations
    if frame is not None:
        for side, colour in (("positive", "#c0392b"), ("negative", "#2c7fb8")):
            rows = frame[frame["set"] == side]
            figure.add_bar(
                x=[f"{'+' if side == 'positive' else '−'}{n}" for n in rows["prompt_number"]],
                y=rows["activation"], name=side, marker_color=colour,
                hovertext=[markup.escape(p) for p in rows["prompt"]],
                hovertemplate="%{hovertext}<br>activation %{y:.4g}<extra></extra>",
            )
    score = "" if detail.score is None else f", circuit score {detail.score:+.4g}"
    figure.update_layout(
        title={"text": f"layer {detail.layer}, neuron {detail.index}: δ = {detail.delta:+.4g}"
                       f"{score}"},
        xaxis={"title": {"text": "prompt"}}, yaxis={"title": {"text": "activation"}},
        height=320, margin={"l": 60, "r": 20, "t": 50, "b": 40}, barmode="group",
    )
    return figure


class DifferenceHeatmap(View):
    """The heatmap widget: the figure, zoom and neuron boxes, and the neuron panel.

    Args:
        circuit, model, positive, negative, max_bins: see :class:`HeatmapController`.
        interactive: live ``FigureWidget`` (True) or static figures (False); default
            from :func:`widgets.environment.interactive_figures`.

    Example:
        >>> DifferenceHeatmap(circuit, model=model)  # doctest: +SKIP
    """

    def __init__(self, circuit: Circuit, *, model: WorkbenchModel | None = None,
                 positive: PromptsLike = None, negative: PromptsLike = None,
                 max_bins: int = DEFAULT_MAX_BINS, interactive: bool | None = None) -> None:
        self._build(HeatmapController(circuit, model=model, positive=positive,
                                      negative=negative, max_bins=max_bins), interactive)

    @classmethod
    def from_controller(cls, controller: HeatmapController, *,
                        interactive: bool | None = None) -> DifferenceHeatmap:
        """The view of an existing controller (as :class:`~widgets.CircuitExplorer` does).

        Example:
            >>> DifferenceHeatmap.from_controller(HeatmapController(circuit))  # doctest: +SKIP
        """
        view = cls.__new__(cls)
        view._build(controller, interactive)
        return view

    def _build(self, controller: HeatmapController, interactive: bool | None) -> None:
        super().__init__()
        self.controller = c = controller
        self.map = FigureView(c.figure(), interactive)
        self.map.on_xrange(self._axis_zoomed)
        self.map.on_click(self._clicked)
        self.start = ipywidgets.BoundedIntText(value=c.start, min=0, max=c.d_mlp - 1,
                                               description="neurons", layout={"width": "170px"})
        self.stop = ipywidgets.BoundedIntText(value=c.stop, min=1, max=c.d_mlp,
                                              description="to", layout={"width": "170px"})
        self.zoom_button = ipywidgets.Button(description="Zoom")
        self.reset_button = ipywidgets.Button(description="Show all")
        self.layer = ipywidgets.BoundedIntText(value=0, min=0, max=c.n_layers - 1,
                                               description="layer", layout={"width": "150px"})
        self.neuron = ipywidgets.BoundedIntText(value=0, min=0, max=c.d_mlp - 1,
                                                description="neuron", layout={"width": "170px"})
        self.show_button = ipywidgets.Button(description="Show neuron")
        self.detail = FigureView(activation_figure(None), self.map.interactive)
        self.tokens = ipywidgets.HTML()
        self.fires_button = ipywidgets.Button(description="Where does it fire?",
                                              layout={"width": "180px"})
        self.fires_button.on_click(lambda _b: self.where_it_fires())
        self.fires = ipywidgets.VBox()
        self.token_view: TokenView | None = None
        self.zoom_button.on_click(lambda _b: self.act(
            lambda: c.zoom(self.start.value, self.stop.value)))
        self.reset_button.on_click(lambda _b: self.act(c.reset))
        self.show_button.on_click(lambda _b: self.show_neuron(self.layer.value,
                                                              self.neuron.value))
        c.changed.add(self._redraw)
        c.selected.add(self._show_detail)
        self.widget = ipywidgets.VBox([
            self.map.widget,
            ipywidgets.HBox([self.start, self.stop, self.zoom_button, self.reset_button]),
            ipywidgets.HBox([self.layer, self.neuron, self.show_button, self.fires_button]),
            self.status,
            ipywidgets.HBox([self.detail.widget, self.tokens]),
            self.fires,
        ])
        if c.detail is not None:  # the controller may hold a choice made before this view
            self._show_detail(c.detail)

    def show_neuron(self, layer: int, index: int) -> None:
        """Show the panel of neuron (layer, index), as a click on it would."""
        self.act(lambda: self.controller.select(int(layer), int(index)))

    def where_it_fires(self) -> TokenView | None:
        """Show the chosen neuron's token view under the panel (None: see the status)."""
        self.say("info", "reading every token of the discover prompts…")
        controller = self.act(self.controller.where_it_fires)
        if controller is None:
            return None
        self.token_view = TokenView.from_controller(controller)
        self.fires.children = [self.token_view.widget]
        self.clear_status()
        return self.token_view

    def _axis_zoomed(self, x0: float | None, x1: float | None) -> None:
        self.act(lambda: self.controller.zoom_to_axis(x0, x1))

    def _clicked(self, trace: int, x: float, y: float) -> None:
        if trace == 0:
            layer, index = self.controller.neuron_at(y, x)
        else:
            layer, index = int(round(y)), int(round(x))
        self.show_neuron(layer, index)

    def _redraw(self) -> None:
        c = self.controller
        self.start.value, self.stop.value = c.start, c.stop
        self.map.update(c.figure())
        self.clear_status()

    def _show_detail(self, detail: NeuronDetail) -> None:
        self.layer.value, self.neuron.value = detail.layer, detail.index
        self.detail.update(activation_figure(detail))
        parts = [f"<b>layer {detail.layer}, neuron {detail.index}</b>: "
                 f"positive mean {detail.positive_mean:+.4g}, negative mean "
                 f"{detail.negative_mean:+.4g}"]
        if detail.tokens is not None:
            parts.append("<div>tokens its down-projection column promotes:</div>"
                         + markup.table(detail.tokens))
        parts.append(markup.messages(("info", note) for note in detail.notes))
        self.tokens.value = "".join(parts)
        self.clear_status()

