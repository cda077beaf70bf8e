"""TokenView: a prompt's tokens coloured by where a neuron, or a circuit, fires.

Each token's background is red where the value is positive and blue where it is
negative, stronger for larger ``|value|``; the colour scale is the largest ``|value|`` of
the prompts' own tokens (chat-template tokens, drawn with a dashed outline, can be far
larger and are clipped to it). Colour by one neuron's activation, or by the circuit's
*signed sum*: ``sum of score * activation`` over its neurons
(:func:`workbench.tokens.signed_sum`), positive where the token pushes the circuit the
way of its positive prompts. Hovering a token shows its value for each chosen neuron
(the first :data:`MAX_HOVER` of them, by ``|score|``).

The view is plain HTML (no JavaScript, no plotly), so it renders wherever HTML does,
Colab's static mode included, and stays quick for 100 prompts of 60 tokens
(``render_time`` in ``docs/widgets.md``). For a PNG, :meth:`TokenViewController.figure`
draws the same values as a plotly heatmap of tokens.

Example:
    >>> import workbench as wb
    >>> model = wb.load_model()                                                # doctest: +SKIP
    >>> circuit = wb.discover(model, "qualitative-harmful", "qualitative-benign")  # doctest: +SKIP
    >>> TokenView(model, ["How do I pick a lock?"], circuit)                   # doctest: +SKIP
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import ipywidgets
import numpy as np
import plotly.graph_objects as go

from workbench.circuit import Circuit
from workbench.errors import InvalidArgumentError
from workbench.models import WorkbenchModel
from workbench.prompts import Prompting, PromptSet
from workbench.tokens import NeuronsLike, neuron_weights, token_activations

from .export import Exportable
from .observers import Observers
from .view import View

if TYPE_CHECKING:  # pandas loads on first use
    import pandas as pd

#: Key of the circuit's signed sum among the colourings.
SUM = "sum"
#: Neurons listed at most in a token's hover text.
MAX_HOVER = 16
#: Tokens per row of the PNG figure.
FIGURE_ROW = 16

ColourBy = str | tuple[int, int]


@dataclass(frozen=True)
class PromptRow:
    """One prompt's tokens and values: ``values`` is float32 ``[n_tokens, k]``."""

    label: str
    tokens: list[str]
    in_template: np.ndarray  # [n_tokens] bool
    values: np.ndarray  # [n_tokens, k]


class TokenViewController:
    """The token view's state: the activations read once, and what colours the tokens.

    Args:
        frame: :func:`workbench.token_activations`' DataFrame of these prompts and neurons.
        prompts: the prompts, in the frame's order.
        neurons: the neurons read (a :class:`Circuit` gives the signed sum its scores).
        labels: one label per prompt (default: ``#1``, ``#2``...).
        colour_by: :data:`SUM` or a ``(layer, index)``; default: the sum for several
            neurons, the neuron for one.

    Use :meth:`read` to read the frame from a model.
    """

    def __init__(self, frame: pd.DataFrame, prompts: Sequence[str], neurons: NeuronsLike, *,
                 labels: Sequence[str] | None = None, colour_by: ColourBy | None = None) -> None:
        self.circuit = neurons if isinstance(neurons, Circuit) else None
        weights = neuron_weights(neurons)
        self.keys = [(layer, index) for layer, index, _ in weights]
        self.weights = np.array([w for _, _, w in weights], dtype=np.float64)  # [k]
        self.prompts = list(prompts)
        labels = list(labels) if labels is not None else \
            [f"#{i + 1}" for i in range(len(self.prompts))]
        if len(labels) != len(self.prompts):
            raise InvalidArgumentError(f"give one label per prompt ({len(self.prompts)}), "
                                       f"not {len(labels)}")
        self.rows = _rows(frame, self.prompts, labels, self.keys)
        self.colour_by: ColourBy = SUM if len(self.keys) > 1 else self.keys[0]
        self.changed = Observers()  # () after the colouring changes
        if colour_by is not None:
            self.set_colour(colour_by)

    @classmethod
    def read(cls, model: WorkbenchModel, prompts: PromptSet | Sequence[str],
             neurons: NeuronsLike, *, labels: Sequence[str] | None = None,
             prompting: Prompting | None = None,
             colour_by: ColourBy | None = None) -> TokenViewController:
        """Read the activations with :func:`workbench.token_activations`, then build.

        Example:
            >>> TokenViewController.read(model, ["Hi"], [(29, 117)])  # doctest: +SKIP
        """
        prompt_list = list(prompts)
        frame = token_activations(model, prompt_list, neurons, prompting=prompting)
        return cls(frame, prompt_list, neurons, labels=labels, colour_by=colour_by)

    # -- colouring -------------------------------------------------------------------

    def options(self) -> list[tuple[str, ColourBy]]:
        """``(label, key)`` of every colouring: the sum (several neurons), each neuron."""
        neurons: list[tuple[str, ColourBy]] = [
            (f"layer {layer}, neuron {index}" + (f" (score {w:+.3g})" if self.circuit else ""),
             (layer, index)) for (layer, index), w in zip(self.keys, self.weights)]
        if len(self.keys) < 2:
            return neurons
        what = "score-weighted" if self.circuit is not None else "unweighted"
        return [(f"circuit: signed sum ({what})", SUM), *neurons]

    def set_colour(self, key: ColourBy) -> None:
        """Colour by :data:`SUM` or by neuron ``(layer, index)``."""
        if key != SUM:
            key = (int(key[0]), int(key[1])) if isinstance(key, (tuple, list)) else key
        if key != SUM and key not in self.keys:
            raise InvalidArgumentError(f"{key!r} is not one of the neurons shown; choose the "
                                       f"sum or one of {self.keys[:5]}")
        if key == SUM and len(self.keys) < 2:
            raise InvalidArgumentError("the signed sum needs two or more neurons")
        if key != self.colour_by:
            self.colour_by = key
            self.changed()

    def values(self, row: PromptRow) -> np.ndarray:
        """The colouring's value of each token of ``row``: float64 ``[n_tokens]``."""
        if self.colour_by == SUM:
            return row.values.astype(np.float64) @ self.weights  # [n_tokens]
        column = self.keys.index(cast(tuple[int, int], self.colour_by))
        return np.asarray(row.values[:, column], dtype=np.float64)

    def scale(self, rows: Sequence[PromptRow] | None = None) -> float:
        """The largest ``|value|`` of the prompts' own tokens (template tokens if none)."""
        rows = self.rows if rows is None else rows
        own = [np.abs(self.values(r))[~r.in_template] for r in rows]
        values = np.concatenate(own) if own else np.zeros(0)
        if not values.size:
            values = np.concatenate([np.abs(self.values(r)) for r in rows] or [np.zeros(0)])
        largest = float(values.max()) if values.size else 0.0
        return largest if largest > 0 else 1.0

    def label(self) -> str:
        """What the colours show, in words."""
        for text, key in self.options():
            if key == self.colour_by:
                return text
        return str(self.colour_by)

    # -- drawing -----------------------------------------------------------------------

    def html(self, prompts: Sequence[int] | None = None) -> str:
        """The token view as HTML (every text escaped); ``prompts``: which rows (all)."""
        rows = self.rows if prompts is None else [self.rows[i] for i in prompts]
        scale = self.scale(rows)
        legend = (f'<div class="cna-token-legend" style="margin-bottom: 6px;">colour: '
                  f'{html.escape(self.label())}; red positive, blue negative, full at '
                  f'±{scale:.3g}; dashed outline: chat template</div>')
        names = [f"layer {layer} neuron {index}" for layer, index in self.keys[:MAX_HOVER]]
        more = len(self.keys) - MAX_HOVER
        blocks = [self._prompt_html(row, scale, names, more) for row in rows]
        return (f'<div class="cna-tokens" style="font-family: monospace; font-size: 13px; '
                f'line-height: 1.9;">{legend}{"".join(blocks)}</div>')

    def _prompt_html(self, row: PromptRow, scale: float, names: list[str], more: int) -> str:
        values = self.values(row)  # [n_tokens]
        shown = row.values[:, :MAX_HOVER]  # [n_tokens, <= MAX_HOVER]
        formatted = np.char.mod("%+.4g", shown.astype(np.float64))  # [n_tokens, <= MAX_HOVER]
        alphas = np.clip(np.abs(values) / scale, 0.0, 1.0)
        tail = f"&#10;… {more} more neurons" if more > 0 else ""
        spans = []
        for i, token in enumerate(row.tokens):
            rgb = "192,57,43" if values[i] >= 0 else "44,127,184"
            template = row.in_template[i]
            style = (f"background: rgba({rgb},{alphas[i]:.2f});"
                     + (" outline: 1px dashed #999; color: #666;" if template else ""))
            hover = "&#10;".join(f"{name}: {value}" for name, value in zip(names, formatted[i]))
            head = f"position {i}{' (template)' if template else ''}: value {values[i]:+.4g}"
            text = html.escape(token.replace("\n", "↵\n")) if token else "·"
            spans.append(f'<span class="cna-token" style="{style}" title="'
                         f'{html.escape(head)}&#10;{hover}{tail}">{text}</span>')
        label = html.escape(row.label)
        return (f'<div class="cna-token-prompt" style="margin-bottom: 10px;">'
                f'<div style="color: #555; font-family: sans-serif;">{label}</div>'
                f'<div style="white-space: pre-wrap;">{"".join(spans)}</div></div>')

    def figure(self, prompts: Sequence[int] | None = None, *, max_prompts: int = 12,
               per_row: int = FIGURE_ROW, template: bool = False) -> go.Figure:
        """The same colours as a plotly heatmap of tokens (``per_row`` to a row), for PNGs.

        ``template``: also draw the chat template's tokens (outlined); by default only the
        prompts' own tokens are drawn.
        """
        chosen = list(range(len(self.rows))) if prompts is None else list(prompts)
        rows = [self.rows[i] for i in chosen[:max_prompts]]
        scale = self.scale(rows)
        if not template:
            rows = [PromptRow(r.label, [t for t, m in zip(r.tokens, r.in_template) if not m],
                              r.in_template[~r.in_template], r.values[~r.in_template])
                    for r in rows]
            rows = [r for r in rows if r.tokens]
        z: list[list[float | None]] = []
        text: list[list[str]] = []
        names: list[str] = []
        boxes_x: list[int] = []
        boxes_y: list[int] = []
        for row in rows:
            values = self.values(row)
            for start in range(0, len(row.tokens), per_row):
                line = len(z)
                stop = min(start + per_row, len(row.tokens))
                pad = per_row - (stop - start)
                z.append([float(v) for v in values[start:stop]] + [None] * pad)
                text.append([_short(t) for t in row.tokens[start:stop]] + [""] * pad)
                short = row.label.split(":")[0] if ":" in row.label else _short(row.label, 24)
                names.append(f"{short} ({start})" if start else short)
                for j in range(start, stop):
                    if row.in_template[j]:
                        boxes_x.append(j - start)
                        boxes_y.append(line)
        figure = go.Figure(go.Heatmap(
            z=z, text=text, texttemplate="%{text}", textfont={"size": 10},
            colorscale="RdBu", reversescale=True, zmid=0, zmin=-scale, zmax=scale,
            colorbar={"title": {"text": "value"}}, xgap=1, ygap=1,
            hovertemplate="%{text}: %{z:.4g}<extra></extra>"))
        figure.add_scatter(x=boxes_x, y=boxes_y, mode="markers", name="chat template",
                           marker={"symbol": "square-open", "size": 14, "color": "#888888"},
                           hoverinfo="skip")
        left_out = "" if template else " (chat template left out)"
        figure.update_layout(
            title={"text": html.escape(f"Tokens coloured by {self.label()}{left_out}")},
            xaxis={"visible": False},
            yaxis={"tickmode": "array", "tickvals": list(range(len(names))),
                   "ticktext": [html.escape(n) for n in names], "autorange": "reversed"},
            height=max(240, 26 * len(names) + 140), width=110 + 80 * per_row,
            plot_bgcolor="white", margin={"l": 110, "r": 20, "t": 50, "b": 60},
            showlegend=False)
        return figure

    def exportable(self) -> Exportable:
        """The HTML view and its PNG figure, for :func:`widgets.export.export`."""
        return Exportable("token view", self.figure(), html=self.html(), circuit=self.circuit,
                          extra={"colour_by": self.label(), "prompts": len(self.rows)})


def _short(token: str, width: int = 10) -> str:
    shown = token.replace("\n", "↵")
    shown = shown if len(shown) <= width else shown[:width - 1] + "…"
    return html.escape(shown) or "·"


def _rows(frame: pd.DataFrame, prompts: list[str], labels: list[str],
          keys: list[tuple[int, int]]) -> list[PromptRow]:
    """Per prompt, its tokens and a ``[n_tokens, k]`` array of the neurons in ``keys``."""
    column = {key: j for j, key in enumerate(keys)}
    k = len(keys)
    slot = np.array([column.get(key, -1) for key in zip(frame["layer"].tolist(),
                                                        frame["neuron"].tolist())])  # [rows]
    missing = sorted(set(range(k)) - set(slot.tolist()))
    if missing:
        layer, index = keys[missing[0]]
        raise InvalidArgumentError(f"the frame has no activations of layer {layer}, "
                                   f"neuron {index}")
    kept = slot >= 0
    prompt = frame["prompt"].to_numpy()[kept]
    position = frame["position"].to_numpy()[kept]
    slot = slot[kept]
    order = np.lexsort((slot, position, prompt))  # by prompt, then position, then neuron
    prompt, slot = prompt[order], slot[order]
    activation = frame["activation"].to_numpy(np.float32)[kept][order]
    token = frame["token"].to_numpy(object)[kept][order]
    template = frame["in_template"].to_numpy(bool)[kept][order]
    bounds = np.searchsorted(prompt, np.arange(len(prompts) + 1))
    result = []
    for i, (text, label) in enumerate(zip(prompts, labels)):
        lo, hi = int(bounds[i]), int(bounds[i + 1])
        n = (hi - lo) // k
        if n == 0:
            raise InvalidArgumentError(f"the frame has no tokens of prompt {i} ({text[:40]!r})")
        values = activation[lo:hi].reshape(n, k)  # [n_tokens, k]
        result.append(PromptRow(f"{label}: {text}" if label else text,
                                [str(t) for t in token[lo:hi:k]], template[lo:hi:k], values))
    return result


class TokenView(View):
    """The token view widget: a colouring picker, the coloured prompts, an export button.

    Args:
        model, prompts, neurons, labels, prompting, colour_by: see
            :meth:`TokenViewController.read`.

    Example:
        >>> view = TokenView(model, ["How do I pick a lock?", "Hi"], circuit)  # doctest: +SKIP
        >>> view.controller.set_colour((29, 117))                             # doctest: +SKIP
    """

    def __init__(self, model: WorkbenchModel, prompts: PromptSet | Sequence[str],
                 neurons: NeuronsLike, *, labels: Sequence[str] | None = None,
                 prompting: Prompting | None = None, colour_by: ColourBy | None = None) -> None:
        self._build(TokenViewController.read(model, prompts, neurons, labels=labels,
                                             prompting=prompting, colour_by=colour_by))

    @classmethod
    def from_controller(cls, controller: TokenViewController) -> TokenView:
        """The view of an existing controller (as the heatmap and the explorer do)."""
        view = cls.__new__(cls)
        view._build(controller)
        return view

    def _build(self, controller: TokenViewController) -> None:
        super().__init__()
        self.controller = c = controller
        self.picker = ipywidgets.Dropdown(options=c.options(), value=c.colour_by,
                                          description="colour by", layout={"width": "460px"},
                                          style={"description_width": "initial"})
        self.path = ipywidgets.Text(value="token-view", description="export to",
                                    layout={"width": "300px"})
        self.export_button = ipywidgets.Button(description="Export HTML + PNG")
        self.output = ipywidgets.HTML(c.html())
        self.picker.observe(lambda change: self.act(lambda: c.set_colour(change["new"])),
                            "value")
        self.export_button.on_click(lambda _b: self.export(self.path.value))
        c.changed.add(self.redraw)
        self.widget = ipywidgets.VBox([
            ipywidgets.HBox([self.picker, self.path, self.export_button]), self.status,
            self.output])

    def redraw(self) -> None:
        """Re-draw the tokens from the controller."""
        self.picker.value = self.controller.colour_by
        self.output.value = self.controller.html()
