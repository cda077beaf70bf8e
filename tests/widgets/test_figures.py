"""FigureView: in-place updates of live figures, callbacks, static re-drawing; LiveFigure."""

from __future__ import annotations

import plotly.graph_objects as go

from widgets.figures import FigureView
from widgets.live_figure import LiveFigure


def bars(values, title="t"):
    figure = go.Figure([go.Bar(y=values), go.Scatter(y=values)])
    figure.update_layout(title={"text": title}, xaxis={"range": [0, 5]})
    return figure


def test_live_update_keeps_the_widget_and_changes_the_data():
    view = FigureView(bars([1, 2]), interactive=True)
    live = view.figure
    view.update(bars([3, 4, 5], title="new"))
    assert view.figure is live and view.widget is live
    assert list(live.data[0].y) == [3, 4, 5] and live.layout.title.text == "new"


def test_a_different_trace_layout_replaces_the_traces_and_keeps_clicks():
    view = FigureView(go.Figure(), interactive=True)
    clicks = []
    view.on_click(lambda trace, x, y: clicks.append((trace, x, y)))
    view.update(bars([1, 2]))
    assert [t.type for t in view.figure.data] == ["bar", "scatter"]
    view.figure._js2py_pointsCallback = {
        "event_type": "plotly_click",
        "points": {"xs": [1], "ys": [2], "point_indexes": [1], "trace_indexes": [1]}}
    assert clicks == [(1, 1, 2)]


def test_zoom_callbacks_come_from_the_user_not_from_updates():
    view = FigureView(bars([1, 2]), interactive=True)
    ranges = []
    view.on_xrange(lambda x0, x1: ranges.append((x0, x1)))
    view.update(bars([1, 2, 3]))  # sets xaxis.range itself: not a user zoom
    assert ranges == []
    view.figure._js2py_relayout = {"relayout_data": {"xaxis.range[0]": 1, "xaxis.range[1]": 2},
                                   "source_view_id": None}
    view.figure._js2py_relayout = {"relayout_data": {"xaxis.autorange": True},
                                   "source_view_id": None}
    assert ranges[0] == (1.0, 2.0) and ranges[-1] == (None, None)


def test_static_view_keeps_the_latest_figure():
    view = FigureView(bars([1]), interactive=False)
    view.update(bars([7, 8]))
    assert list(view.figure.data[0].y) == [7, 8]
    assert not isinstance(view.figure, go.FigureWidget)


def test_live_figures_send_a_small_front_end_module_and_plotlys_beside_it():
    figure = FigureView(bars([1]), interactive=True).figure
    assert isinstance(figure, LiveFigure)
    state = figure.get_state()
    assert len(state["_esm"]) < 10_000 < len(state["_plotly_esm"])
    assert state["_plotly_esm"] == str(go.FigureWidget._esm)


def test_a_resync_request_sends_the_current_figure():
    view = FigureView(bars([1, 2]), interactive=True)
    live = view.figure
    view.update(bars([3, 4, 5], title="new"))  # sent as edits: the full state is stale
    assert list(live._widget_data[0]["y"]) == [1, 2]
    live._handle_custom_msg({"type": "resync"}, [])  # as the front-end sends it
    assert list(live._widget_data[0]["y"]) == [3, 4, 5]
    assert live._widget_layout["title"]["text"] == "new" and live._synced == 1
    live._handle_custom_msg({"type": "something else"}, [])
    assert live._synced == 1
