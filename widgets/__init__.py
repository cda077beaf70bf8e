"""Jupyter front-end of CNA Workbench (ipywidgets + plotly).

Each widget is a plain-Python controller that owns its state (``widget.controller``,
usable and testable without a browser) and a view drawn with ipywidgets and plotly
(``widget.widget``; the object itself displays in a notebook):

* :class:`PromptSetEditor`: edit, load, save and check the two prompt sets; "Discover".
* :class:`DifferenceHeatmap`: the layer x neuron delta map, zoomable, with a neuron panel.
* :class:`CircuitVenn`: overlap of two or three circuits, region by region.
* :class:`SteeringSlider`: streamed completions at a multiplier beside the baseline.
* :class:`CircuitExplorer` / :func:`explore`: all four for one model; :func:`show`: one
  circuit at a glance.
* :func:`dose_response`: refusal and quality against circuit size (a size sweep's summary).

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
from .explorer import CircuitExplorer, CircuitView, explore, show
from .heatmap import DifferenceHeatmap, HeatmapController
from .steering_slider import SteeringController, SteeringSlider
from .venn import CircuitVenn, VennController

__all__ = [
    "CircuitExplorer",
    "CircuitVenn",
    "CircuitView",
    "DifferenceHeatmap",
    "EditorController",
    "HeatmapController",
    "PromptSetEditor",
    "SteeringController",
    "SteeringSlider",
    "VennController",
    "dose_response",
    "explore",
    "frontend",
    "interactive_figures",
    "show",
]
