"""The dose-response figure: refusal and quality against circuit size, CNA vs random.

It reads the table of :func:`workbench.evaluation.summary` of a size sweep
(``sweep(..., sizes=[...])``): one line per circuit intervention (the CNA circuit and its
random control) over circuit size, at one multiplier (default 0, ablation), one panel
per metric. Interventions without a size (the baseline at multiplier 1, a refusal
direction or CAA vector at the chosen multiplier) are drawn as dashed horizontal lines
for reference.

Example:
    >>> import pandas as pd
    >>> table = pd.DataFrame({
    ...     "benchmark": ["b"] * 5, "intervention": ["baseline", "cna", "cna", "random", "random"],
    ...     "kind": ["baseline", "cna", "cna", "random", "random"],
    ...     "size": [None, 46, 230, 46, 230], "fraction": [None, .001, .005, .001, .005],
    ...     "multiplier": [1.0, 0.0, 0.0, 0.0, 0.0], "refusal_rate": [.9, .5, .2, .9, .85],
    ...     "quality": [1.0, .98, .9, .99, .97]})
    >>> figure = dose_response(table)
    >>> [(t.name, list(t.y)) for t in figure.data][:2]
    [('cna', [0.5, 0.2]), ('random', [0.9, 0.85])]
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.errors import InvalidArgumentError
from workbench.evaluation.interventions import Baseline, CnaCircuit, RandomControl

METRICS = {"refusal_rate": "refusal rate", "quality": "quality"}
CIRCUIT_KINDS = (CnaCircuit.kind, RandomControl.kind)
COLOURS = {"cna": "#c0392b", "random": "#7f8c8d", "baseline": "#222222",
           "direction": "#2471a3", "caa": "#8e44ad"}
DASHES = {"baseline": "dash", "direction": "dot", "caa": "dashdot"}


def dose_response(summary_frame: pd.DataFrame, *, multiplier: float = 0.0,
                  benchmark: str | None = None) -> go.Figure:
    """Refusal and quality (one panel each) against circuit size, one line per circuit.

    Args:
        summary_frame: :func:`workbench.evaluation.summary` of a sweep with ``sizes=``.
        multiplier: which multiplier of the circuit interventions to draw (0: ablation).
        benchmark: which benchmark to draw; may be omitted when the table holds one.

    Returns:
        A plotly figure. Circuit traces are named after their intervention, have the
        sizes (neurons) as x and the metric as y; reference traces (baseline, direction,
        CAA) are flat dashed lines over the same x range.

    Example:
        >>> dose_response(summary(rows), multiplier=0.0)  # doctest: +SKIP
    """
    table = _benchmark_rows(_check_table(summary_frame), benchmark)
    metrics = [m for m in METRICS if m in table.columns]
    circuits = table[table["kind"].isin(CIRCUIT_KINDS) & table["size"].notna()
                     & (table["multiplier"] == multiplier)]
    if circuits.empty:
        available = sorted(set(table.loc[table["kind"].isin(CIRCUIT_KINDS), "multiplier"]))
        raise InvalidArgumentError(
            f"no CNA or random-control rows at multiplier {multiplier:g}; this table has "
            f"them at {available}: pass multiplier= one of those")
    references = table[~table["kind"].isin(CIRCUIT_KINDS) & (
        (table["multiplier"] == multiplier) | (table["kind"] == Baseline.kind))]
    sizes = circuits["size"].astype(float)
    span = [float(sizes.min()), float(sizes.max())]

    figure = make_subplots(rows=1, cols=len(metrics),
                           subplot_titles=[METRICS[m] for m in metrics])
    for column, metric in enumerate(metrics, start=1):
        first = column == 1
        for name, rows in circuits.groupby("intervention", sort=False):
            rows = rows.sort_values("size")
            kind = rows["kind"].iloc[0]
            figure.add_trace(go.Scatter(
                x=rows["size"].astype(int).tolist(), y=rows[metric].tolist(), name=name,
                mode="lines+markers", legendgroup=name, showlegend=first,
                line={"color": COLOURS.get(kind)},
                customdata=_fractions(rows),
                hovertemplate=(f"{name}<br>%{{x}} neurons (%{{customdata:.3%}})<br>"
                               f"{METRICS[metric]} %{{y:.3f}}<extra></extra>")),
                row=1, col=column)
        for _, row in references.iterrows():
            name, kind = row["intervention"], row["kind"]
            label = name if kind == "baseline" else f"{name} ×{row['multiplier']:g}"
            figure.add_trace(go.Scatter(
                x=span, y=[row[metric]] * 2, name=label, mode="lines", legendgroup=label,
                showlegend=first,
                line={"color": COLOURS.get(kind, "#555555"), "dash": DASHES.get(kind, "dash")},
                hovertemplate=f"{label}<br>{METRICS[metric]} %{{y:.3f}}<extra></extra>"),
                row=1, col=column)
        figure.update_xaxes(title_text="circuit size (neurons)", type="log", row=1, col=column)
        figure.update_yaxes(range=[0, 1.02], row=1, col=column)
    title = f"Dose-response at multiplier {multiplier:g}"
    if "benchmark" in table.columns:
        title += f" on {table['benchmark'].iloc[0]}"
    figure.update_layout(title={"text": title}, plot_bgcolor="white", height=380,
                         legend={"orientation": "h", "y": -0.25})
    return figure


def _check_table(summary_frame: Any) -> pd.DataFrame:
    if not isinstance(summary_frame, pd.DataFrame):
        raise InvalidArgumentError(
            f"dose_response() needs the DataFrame of workbench.evaluation.summary(), not "
            f"{type(summary_frame).__name__}")
    missing = [c for c in ("intervention", "kind", "multiplier") if c not in summary_frame]
    if missing:
        raise InvalidArgumentError(
            f"the table lacks the columns {missing}; pass summary(sweep(...)) of a sweep")
    if "size" not in summary_frame:
        raise InvalidArgumentError(
            "the table has no 'size' column: it comes from a sweep without sizes; run "
            "sweep(..., sizes=[0.001, 0.005, 0.01, 0.02]) (CLI: cna evaluate --sizes ...)")
    if not any(m in summary_frame for m in METRICS):
        raise InvalidArgumentError(
            "the table has neither refusal_rate nor quality; sweep with "
            "metrics=('refusal', 'quality')")
    return summary_frame


def _benchmark_rows(table: pd.DataFrame, benchmark: str | None) -> pd.DataFrame:
    if "benchmark" not in table:
        return table
    names = list(dict.fromkeys(table["benchmark"]))
    if benchmark is None:
        if len(names) > 1:
            raise InvalidArgumentError(
                f"the table holds several benchmarks {names}; pass benchmark= one of them")
        return table
    if benchmark not in names:
        raise InvalidArgumentError(f"benchmark {benchmark!r} is not in the table ({names})")
    return table[table["benchmark"] == benchmark]


def _fractions(rows: pd.DataFrame) -> list[float | None]:
    if "fraction" not in rows:
        return [None] * len(rows)
    return [None if pd.isna(v) else float(v) for v in rows["fraction"]]
