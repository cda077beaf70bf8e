"""A circuit's figures, written to a folder without Jupyter (``cna figures``).

:func:`circuit_figures` draws with the widgets' own controllers and writes each figure
with :func:`widgets.export.export_all` (HTML and, when a browser is found, PNG, all with
the circuit's provenance):

- ``circuit``: the circuit's neurons, layer against index, coloured by score (always);
- ``venn``: the circuit against one or two others (``compare=``);
- ``dose-response``: a size sweep's summary table (``summary=``, a DataFrame or CSV);
- with ``model=``: ``heatmap`` (the contrast is read again on the circuit's prompt sets),
  ``tokens`` (the discover prompts coloured by the circuit's signed sum) and
  ``steering`` (each steering prompt at ``multiplier`` beside the baseline, with the
  first divergent token).

Example:
    >>> from workbench.circuit import Circuit, Neuron
    >>> c = Circuit.from_neurons([Neuron(1, 3, 0.5), Neuron(0, 2, -0.2)],
    ...     model={"name": "m", "architecture": "LlamaForCausalLM", "n_layers": 2, "d_mlp": 8})
    >>> [trace.type for trace in circuit_map(c).data]
    ['scatter']
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import plotly.graph_objects as go

from workbench.circuit import Circuit
from workbench.config import FIGURE_MAX_NEW_TOKENS
from workbench.errors import InvalidArgumentError
from workbench.models import WorkbenchModel
from workbench.prompts import PromptSet

from . import markup
from .export import Exportable, export_all

if TYPE_CHECKING:
    import pandas as pd

#: Prompts per side drawn in the token figure at most.
TOKEN_PROMPTS = 12


def circuit_map(circuit: Circuit) -> go.Figure:
    """The circuit's neurons as points (neuron index, layer), coloured by signed score."""
    neurons = circuit.neurons
    largest = max((abs(n.score) for n in neurons), default=1.0) or 1.0
    figure = go.Figure(go.Scatter(
        x=[n.index for n in neurons], y=[n.layer for n in neurons], mode="markers",
        customdata=[n.score for n in neurons],
        marker={"color": [n.score for n in neurons], "colorscale": "RdBu", "reversescale": True,
                "cmid": 0, "cmin": -largest, "cmax": largest, "size": 8,
                "line": {"width": 0.5, "color": "#333333"},
                "colorbar": {"title": {"text": "score"}}},
        hovertemplate="layer %{y}, neuron %{x}<br>score %{customdata:+.4g}<extra></extra>"))
    n_layers, d_mlp = int(circuit.model["n_layers"]), int(circuit.model["d_mlp"])
    figure.update_layout(
        title={"text": markup.escape(f"{circuit.name}: {len(circuit)} neurons of "
                                     f"{circuit.model['name']}")},
        xaxis={"title": {"text": "neuron"}, "range": [-0.5, d_mlp - 0.5]},
        yaxis={"title": {"text": "layer"}, "range": [-0.5, n_layers - 0.5]},
        height=max(320, min(820, 10 * n_layers + 160)), width=1000, plot_bgcolor="white",
        margin={"l": 60, "r": 20, "t": 50, "b": 60})
    return figure


def circuit_figures(circuit: Circuit, out: str | os.PathLike, *,
                    model: WorkbenchModel | None = None,
                    positive: PromptSet | None = None, negative: PromptSet | None = None,
                    compare: Sequence[Circuit] = (), names: Sequence[str] | None = None,
                    summary: pd.DataFrame | str | os.PathLike | None = None,
                    steer_prompts: Sequence[str] = (), multiplier: float = 0.0,
                    max_new_tokens: int = FIGURE_MAX_NEW_TOKENS,
                    token_prompts: int = TOKEN_PROMPTS,
                    png: bool | None = None) -> list[Path]:
    """Write a circuit's figures to the folder ``out``; returns the files written.

    Args:
        model: the model, for the heatmap, token and steering figures (skipped without).
        positive, negative: the prompt sets the circuit was discovered on (needed with
            ``model`` for the heatmap and tokens).
        compare: one or two other circuits for a Venn diagram; ``names`` names all of
            them (this circuit first).
        summary: :func:`workbench.evaluation.summary` of a size sweep (or its CSV).
        steer_prompts, multiplier, max_new_tokens: the steering figure's prompts.
        token_prompts: prompts per side in the token figure.
        png: as in :func:`widgets.export.export`.

    Example:
        >>> circuit_figures(circuit, "figs", model=model,                     # doctest: +SKIP
        ...                 positive=pos, negative=neg, steer_prompts=["Hi"])
    """
    folder = Path(out)
    items: list[Exportable] = [Exportable("circuit map", circuit_map(circuit), circuit=circuit)]
    stems = ["circuit"]
    if compare:
        from .venn import VennController

        circuits = [circuit, *compare]
        labels = list(names) if names is not None else [c.name for c in circuits]
        venn = VennController(circuits, labels).exportable()
        venn.circuit = circuit
        items.append(venn)
        stems.append("venn")
    if summary is not None:
        from .dose_response import dose_response

        table = _table(summary)
        items.append(Exportable("dose-response", dose_response(table, multiplier=multiplier),
                                circuit=circuit))
        stems.append("dose-response")
    if model is not None:
        circuit.check_model(model)
        if positive is not None and negative is not None:
            items.extend(_model_figures(model, circuit, positive, negative, token_prompts))
            stems.extend(["heatmap", "tokens"])
        if steer_prompts:
            items.append(_steering(model, circuit, steer_prompts, multiplier, max_new_tokens))
            stems.append("steering")
    return export_all(items, [folder / stem for stem in stems], png=png)


def _table(summary: pd.DataFrame | str | os.PathLike) -> pd.DataFrame:
    import pandas as pd

    if isinstance(summary, pd.DataFrame):
        return summary
    path = Path(summary)
    if not path.is_file():
        raise InvalidArgumentError(f"summary table {str(path)!r} does not exist")
    return pd.read_csv(path)


def _model_figures(model: WorkbenchModel, circuit: Circuit, positive: PromptSet,
                   negative: PromptSet, token_prompts: int) -> list[Exportable]:
    """The heatmap (the contrast read again) and the token view of the discover prompts."""
    from workbench.discovery import discover

    from .heatmap import HeatmapController, _prompting
    from .token_view import TokenViewController

    prompting = _prompting(circuit, model)
    found = discover(model, positive, negative, top_k=max(1, len(circuit)), universal=None,
                     chat_template=prompting.chat_template,
                     system_prompt=prompting.system_prompt, max_imbalance=None, progress=False)
    circuit.contrast = found.contrast
    heatmap = HeatmapController(circuit, model=model, positive=positive, negative=negative)
    texts = positive.prompts[:token_prompts] + negative.prompts[:token_prompts]
    labels = [f"positive {i + 1}" for i in range(min(token_prompts, len(positive)))] + \
        [f"negative {i + 1}" for i in range(min(token_prompts, len(negative)))]
    tokens = TokenViewController.read(model, texts, circuit, labels=labels, prompting=prompting)
    return [heatmap.exportable(), tokens.exportable()]


def _steering(model: WorkbenchModel, circuit: Circuit, prompts: Sequence[str],
              multiplier: float, max_new_tokens: int) -> Exportable:
    """Each prompt's steered and baseline completions, and where they part."""
    from workbench.divergence import divergence

    from .steering_slider import Completion, render_rows, slider_figure

    rows = []
    for prompt in prompts:
        d = divergence(model, prompt, circuit, multiplier=multiplier,
                       max_new_tokens=max_new_tokens)
        decode = model.tokenizer.decode
        rows.append(Completion(prompt, steered=decode(list(d.steered_ids),
                                                      skip_special_tokens=True),
                               baseline=decode(list(d.baseline_ids), skip_special_tokens=True),
                               steered_done=True, baseline_done=True, divergence=d))
    return Exportable("steering slider", slider_figure(rows, multiplier),
                      html=render_rows(rows, multiplier), circuit=circuit,
                      extra={"multiplier": multiplier, "max_new_tokens": max_new_tokens})
