"""Jupyter front-end of CNA Workbench (ipywidgets + plotly).

Each widget is a plain-Python controller that owns its state (``widget.controller``,
usable and testable without a browser or any ipywidgets object) and a view drawn with
ipywidgets and plotly (``widget.widget``; the object itself displays in a notebook).
Every view derives from :class:`widgets.view.View` (its status line, the one handler
that shows a :class:`~workbench.errors.WorkbenchError` there, the display hook) and can
be drawn from an existing controller (``from_controller``): the explorer owns the
controllers of its tabs and composes their views so.

* :class:`PromptSetEditor`: edit, load, save and check the two prompt sets; "Discover".
* :class:`DifferenceHeatmap`: the layer x neuron delta map, zoomable, with a neuron panel.
* :class:`CircuitVenn`: overlap of two or three circuits, region by region.
* :class:`SteeringSlider`: streamed completions at a multiplier beside the baseline.
* :class:`CircuitExplorer` / :func:`explore`: all four for one model
  (:class:`ExplorerController`); :func:`show`: one circuit at a glance
  (:class:`CircuitView`, :class:`CircuitController`).
* :func:`dose_response`: refusal and quality against circuit size (a size sweep's summary).
* :class:`TokenView`: a prompt's tokens coloured by a neuron or the circuit's signed sum.
* :func:`pareto_figure` / :class:`ParetoExplorer`: a gate search's trials, refusal removed
  against KL beside their random controls; clicking a trial steers its circuit
  (:class:`ParetoController`).
* :func:`export`: any widget (or figure) as a self-contained HTML file and a PNG.

The widgets use the :mod:`workbench` library and never reach into model internals except
through it.

Example:
    >>> import workbench as wb, widgets
    >>> model = wb.load_model()                                         # doctest: +SKIP
    >>> widgets.explore(model)                                          # doctest: +SKIP
"""

from .dose_response import dose_response
from .editor import EditorController, PromptSetEditor
from .environment import frontend, interactive_figures
from .explorer import (
    CircuitController,
    CircuitExplorer,
    CircuitView,
    ExplorerController,
    explore,
    show,
)
from .export import export
from .heatmap import DifferenceHeatmap, HeatmapController
from .pareto import ParetoController, ParetoExplorer, pareto_figure
from .steering_slider import SteeringController, SteeringSlider
from .token_view import TokenView, TokenViewController
from .venn import CircuitVenn, VennController

__all__ = [
    "CircuitController",
    "CircuitExplorer",
    "CircuitVenn",
    "CircuitView",
    "DifferenceHeatmap",
    "EditorController",
    "ExplorerController",
    "HeatmapController",
    "ParetoController",
    "ParetoExplorer",
    "PromptSetEditor",
    "SteeringController",
    "SteeringSlider",
    "TokenView",
    "TokenViewController",
    "VennController",
    "dose_response",
    "explore",
    "export",
    "frontend",
    "interactive_figures",
    "pareto_figure",
    "show",
]
