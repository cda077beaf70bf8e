"""The widgets take their completion lengths from :mod:`workbench.config`, as the library
does (``tests/workbench/test_defaults.py``)."""

from __future__ import annotations

import inspect

import pytest

from widgets.editor import EditorController, PromptSetEditor
from widgets.explorer import CircuitController, CircuitExplorer, CircuitView, ExplorerController
from widgets.figure_set import circuit_figures
from widgets.pareto import ParetoExplorer
from widgets.steering_slider import SteeringController, SteeringSlider
from workbench.config import (
    FIGURE_MAX_NEW_TOKENS,
    FILTER_MAX_NEW_TOKENS,
    STEERING_VIEW_MAX_NEW_TOKENS,
)


@pytest.mark.parametrize(("function", "name", "expected"), [
    (SteeringController, "max_new_tokens", STEERING_VIEW_MAX_NEW_TOKENS),
    (SteeringSlider, "max_new_tokens", STEERING_VIEW_MAX_NEW_TOKENS),
    (ExplorerController, "max_new_tokens", STEERING_VIEW_MAX_NEW_TOKENS),
    (CircuitExplorer, "max_new_tokens", STEERING_VIEW_MAX_NEW_TOKENS),
    (CircuitController, "max_new_tokens", STEERING_VIEW_MAX_NEW_TOKENS),
    (CircuitView, "max_new_tokens", STEERING_VIEW_MAX_NEW_TOKENS),
    (ParetoExplorer, "max_new_tokens", STEERING_VIEW_MAX_NEW_TOKENS),
    (circuit_figures, "max_new_tokens", FIGURE_MAX_NEW_TOKENS),
    (EditorController.filter_by_behaviour, "max_new_tokens", FILTER_MAX_NEW_TOKENS),
    (PromptSetEditor, "filter_tokens", FILTER_MAX_NEW_TOKENS),
    (PromptSetEditor.from_controller, "filter_tokens", FILTER_MAX_NEW_TOKENS),
], ids=lambda value: getattr(value, "__qualname__", None) or str(value))
def test_widget_defaults_are_the_config_constants(function, name, expected):
    assert inspect.signature(function).parameters[name].default == expected
