"""LiveFigure: plotly's ``FigureWidget`` with a front-end that starts within anywidget's limit.

anywidget allows a widget's front-end module 2 s to load; if it takes longer, every later
message from Python to that widget is dropped for good. plotly's module is 5 MB, and on a
busy machine it often takes longer (the first figures of a page, while the kernel
computes): the figure is drawn empty and never updates, so a zoom of the difference
heatmap is never re-binned on screen. ``LiveFigure`` sends a small module
(``live_figure.js``) instead, which starts at once and loads plotly's in the background;
the figure is drawn when that has loaded. Python and the figure's data work as in
``FigureWidget``.

Example:
    >>> import plotly.graph_objects as go
    >>> figure = LiveFigure(go.Figure(go.Bar(y=[1, 2])))
    >>> isinstance(figure, go.FigureWidget), list(figure.data[0].y)
    (True, [1, 2])
"""

from __future__ import annotations

from copy import deepcopy
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import traitlets


class LiveFigure(go.FigureWidget):
    """A ``go.FigureWidget`` whose front-end loads plotly's module in the background."""

    _esm = Path(__file__).with_name("live_figure.js")
    #: plotly's own front-end module, which ``live_figure.js`` loads and hands over to.
    _plotly_esm = traitlets.Unicode().tag(sync=True)
    #: Counts the full re-sends of the figure that the front-end asked for.
    _synced = traitlets.Int(0).tag(sync=True)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_msg(self._front_end_message)

    @traitlets.default("_plotly_esm")
    def _default_plotly_esm(self) -> str:
        return str(go.FigureWidget._esm)

    def _front_end_message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "resync":
            self.resync()

    def resync(self) -> None:
        """Send the whole figure to the front-end again, in one message.

        The front-end asks for this when an update reached it before plotly's module had
        loaded: plotly's copy of the figure there would lack it.
        """
        with self.hold_sync():
            # As FigureWidget does when it is displayed.
            self._widget_layout = deepcopy(self._layout_obj._props)
            self._widget_data = deepcopy(self._data)
            self._synced += 1
