"""How a :class:`workbench.divergence.Divergence` is drawn: HTML under the slider's
completions, and a plotly figure of the same for a PNG.

The HTML shows the tokens both completions share (muted), then the first token where
they part, side by side (baseline and steered), and at that position the top next tokens
under each model with their probabilities under both.

Example:
    >>> from workbench.divergence import Candidate, Divergence
    >>> d = Divergence("Hi", 0.0, (5, 6), (5, 7), ("He", "llo"), ("He", "y"), 1,
    ...                (Candidate("llo", 6, 0.7, 0.1),), (Candidate("y", 7, 0.2, 0.8),))
    >>> "first divergent token: position 1" in divergence_html(d)
    True
"""

from __future__ import annotations

import html
import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.divergence import Candidate, Divergence

_SAME = "color: #777777;"
_BASELINE = "background: rgba(44,127,184,0.25);"
_STEERED = "background: rgba(192,57,43,0.25);"


def _token(text: str | None, style: str = "") -> str:
    shown = "(ended)" if text is None else (text.replace("\n", "↵") or "·")
    return f'<span style="{style} font-family: monospace;">{html.escape(shown)}</span>'


def _percent(value: float) -> str:
    return "–" if math.isnan(value) else f"{100 * value:.1f}%"


def _table(title: str, candidates: tuple[Candidate, ...]) -> str:
    rows = "".join(
        f"<tr><td>{_token(c.token)}</td><td style='text-align:right'>{_percent(c.baseline)}"
        f"</td><td style='text-align:right'>{_percent(c.steered)}</td></tr>"
        for c in candidates)
    return (f'<table class="cna-alternatives" style="display: inline-table; margin-right: 16px;'
            f' font-size: 12px;"><caption style="text-align:left">{html.escape(title)}'
            f"</caption><tr><th>token</th><th>baseline</th><th>steered</th></tr>{rows}</table>")


def divergence_html(d: Divergence, *, context: int = 12) -> str:
    """The divergence as HTML (every token escaped); ``context``: shared tokens shown."""
    if d.position is None:
        return (f'<div class="cna-divergence" style="{_SAME}">token by token: identical at '
                f"multiplier {d.multiplier:g} ({len(d.baseline_ids)} tokens)</div>")
    shared = d.shared_tokens
    cut = shared[-context:]
    lead = ("… " if len(shared) > len(cut) else "") + "".join(
        html.escape(t.replace("\n", "↵")) for t in cut)
    return (
        f'<div class="cna-divergence" style="margin: 4px 0 8px 0;">'
        f"<div><b>first divergent token: position {d.position}</b> "
        f"(after {len(shared)} shared tokens)</div>"
        f'<div style="font-family: monospace;"><span style="{_SAME}">{lead}</span> '
        f"baseline {_token(d.baseline_token, _BASELINE)} · steered "
        f"{_token(d.steered_token, _STEERED)}</div>"
        f"<div>{_table('top next tokens, baseline', d.baseline_top)}"
        f"{_table(f'top next tokens, steered ×{d.multiplier:g}', d.steered_top)}</div></div>")


def divergence_figure(d: Divergence) -> go.Figure:
    """Both models' top next tokens at the divergence as grouped bars (one panel each)."""
    if d.position is None:
        figure = go.Figure()
        figure.update_layout(title={"text": f"Identical completions at ×{d.multiplier:g}"},
                             xaxis={"visible": False}, yaxis={"visible": False}, height=200)
        return figure
    figure = make_subplots(rows=1, cols=2, subplot_titles=[
        "top next tokens, baseline", f"top next tokens, steered ×{d.multiplier:g}"])
    for column, top in enumerate((d.baseline_top, d.steered_top), start=1):
        labels = [repr(c.token) for c in top]
        for side, colour in (("baseline", "#2c7fb8"), ("steered", "#c0392b")):
            figure.add_bar(x=labels, y=[getattr(c, side) for c in top], name=side,
                           marker_color=colour, showlegend=column == 1, row=1, col=column)
        figure.update_yaxes(range=[0, 1], title_text="probability" if column == 1 else None,
                            row=1, col=column)
    shared = "".join(d.shared_tokens[-12:]).replace("\n", "↵")
    title = (f"First divergent token at position {d.position}: baseline "
             f"{d.baseline_token!r} vs steered {d.steered_token!r} after …{shared!r}")
    figure.update_layout(title={"text": html.escape(title), "font": {"size": 13}},
                         barmode="group", height=360, width=1000, plot_bgcolor="white")
    return figure
