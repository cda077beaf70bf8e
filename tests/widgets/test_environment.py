"""Front-end detection and the figure mode it implies."""

from __future__ import annotations

import sys
import types

import plotly.graph_objects as go
import pytest

from widgets.environment import FIGURES_VARIABLE, frontend, interactive_figures
from widgets.figures import FigureView


@pytest.fixture(autouse=True)
def plain_environment(monkeypatch):
    for name in ("VSCODE_PID", "VSCODE_CWD", FIGURES_VARIABLE):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)


def test_outside_a_kernel():
    assert frontend() == "none"
    assert interactive_figures() is True  # anywidget is installed with the jupyter extra


def test_colab_falls_back_to_static_figures(monkeypatch):
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    assert frontend() == "colab"
    assert interactive_figures() is False
    view = FigureView(go.Figure(go.Bar(y=[1])))
    assert not view.interactive and not isinstance(view.figure, go.FigureWidget)


def test_vscode_keeps_live_figures(monkeypatch):
    monkeypatch.setenv("VSCODE_PID", "123")
    assert frontend() == "vscode"
    assert interactive_figures() is True
    assert isinstance(FigureView(go.Figure()).figure, go.FigureWidget)


def test_missing_anywidget_means_static(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "anywidget" else real(name, *a))
    assert interactive_figures() is False


def test_the_variable_and_the_argument_override(monkeypatch):
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setenv(FIGURES_VARIABLE, "interactive")
    assert interactive_figures() is True
    assert interactive_figures("static") is False
    monkeypatch.setenv(FIGURES_VARIABLE, "fancy")
    with pytest.raises(ValueError, match="'interactive' or 'static'"):
        interactive_figures()
