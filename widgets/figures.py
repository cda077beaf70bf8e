"""One place that shows a plotly figure inside an ipywidgets layout, live or static.

A :class:`FigureView` takes ``go.Figure`` objects built by the controllers. In live mode
it holds a ``go.FigureWidget`` (a :class:`widgets.live_figure.LiveFigure`, whose front-end
starts in time on a busy machine) and updates its traces and layout in place (zoom, clicks
and hover stay live); in static mode (Colab, see :mod:`widgets.environment`) it re-draws
each new figure into an ``ipywidgets.Output``. Click and x-range callbacks are only
called in live mode; the widgets offer controls that do the same in both modes.

Example:
    >>> import plotly.graph_objects as go
    >>> view = FigureView(go.Figure(go.Bar(y=[1, 2])), interactive=False)
    >>> view.interactive
    False
    >>> view.update(go.Figure(go.Bar(y=[3, 4])))
    >>> list(view.figure.data[0].y)
    [3, 4]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets
import plotly.graph_objects as go

from .environment import FigureMode, in_kernel, interactive_figures

ClickCallback = Callable[[int, float, float], None]
RangeCallback = Callable[[float | None, float | None], None]


class FigureView:
    """A plotly figure in a widget, updated in place.

    Args:
        figure: the first figure to show.
        interactive: True for a live ``FigureWidget``, False for static re-drawing;
            None (or a mode name) decides with :func:`interactive_figures`.
    """

    def __init__(self, figure: go.Figure, interactive: bool | FigureMode | None = None) -> None:
        if interactive is None or isinstance(interactive, str):
            interactive = interactive_figures(interactive)
        self.interactive = bool(interactive)
        self._clicks: list[ClickCallback] = []
        self._ranges: list[RangeCallback] = []
        self._updating = False
        if self.interactive:
            from .live_figure import LiveFigure  # plotly's FigureWidget needs anywidget

            self.figure: go.Figure = LiveFigure(figure)
            self.widget: ipywidgets.Widget = self.figure
            self._attach()
            self.figure.layout.on_change(self._ranged, "xaxis.range", "xaxis.autorange")
        else:
            self.figure = go.Figure(figure)
            self.widget = ipywidgets.Output()
            self._draw()

    # -- updates -------------------------------------------------------------

    def update(self, figure: go.Figure) -> None:
        """Show ``figure`` instead of the current one (same trace types: updated in place)."""
        if not self.interactive:
            self.figure = go.Figure(figure)
            self._draw()
            return
        live = self.figure
        self._updating = True
        try:
            same_shape = len(live.data) == len(figure.data) and all(
                old.type == new.type for old, new in zip(live.data, figure.data))
            with live.batch_update():
                if same_shape:
                    for old, new in zip(live.data, figure.data):
                        old.update(new.to_plotly_json(), overwrite=True)
                else:
                    live.data = ()
                    live.add_traces(list(figure.data))
                live.layout.update(figure.layout.to_plotly_json(), overwrite=True)
            if not same_shape:
                self._attach()
        finally:
            self._updating = False

    def _draw(self) -> None:
        if not in_kernel():
            return  # nothing would show the output area; keep the figure for inspection
        from IPython.display import display

        self.widget.clear_output(wait=True)
        with self.widget:
            display(self.figure)

    # -- callbacks (live mode only) -------------------------------------------

    def on_click(self, callback: ClickCallback) -> None:
        """Call ``callback(trace_index, x, y)`` when a point of any trace is clicked."""
        self._clicks.append(callback)

    def on_xrange(self, callback: RangeCallback) -> None:
        """Call ``callback(x0, x1)`` when the user zooms the x axis (None, None: reset)."""
        self._ranges.append(callback)

    def _attach(self) -> None:
        for trace_index, trace in enumerate(self.figure.data):
            trace.on_click(self._clicked(trace_index))

    def _clicked(self, trace_index: int) -> Callable[..., None]:
        def handler(_trace: Any, points: Any, _state: Any) -> None:
            if not points.xs:
                return
            for callback in self._clicks:
                callback(trace_index, points.xs[0], points.ys[0])
        return handler

    def _ranged(self, _layout: Any, xrange: Any, autorange: Any) -> None:
        if self._updating:
            return
        if autorange is True or xrange is None:
            bounds: tuple[float | None, float | None] = (None, None)
        else:
            bounds = (float(xrange[0]), float(xrange[1]))
        for callback in self._ranges:
            callback(*bounds)
