"""dose_response: one line per circuit intervention over size, references, bad tables."""

from __future__ import annotations

import pandas as pd
import pytest

from widgets import dose_response
from workbench.errors import InvalidArgumentError
from workbench.evaluation.sweep import summary

N_NEURONS = 1000


def results() -> pd.DataFrame:
    """Per-prompt rows as a size sweep writes them (2 prompts per condition)."""
    rows = []

    def add(intervention, kind, size, multiplier, refusals, qualities, benchmark="jbb"):
        for refusal, quality in zip(refusals, qualities):
            rows.append({"benchmark": benchmark, "intervention": intervention, "kind": kind,
                         "size": size, "fraction": None if size is None else size / N_NEURONS,
                         "multiplier": multiplier,
                         "strength": multiplier - 1.0 if kind == "caa" else multiplier,
                         "completion": "x", "refusal": refusal, "quality": quality})

    add("baseline", "baseline", None, 1.0, [True, True], [1.0, 1.0])
    for size, cna, random in ((1, [True, True], [True, True]), (5, [True, False], [True, True]),
                              (20, [False, False], [True, False])):
        add("cna", "cna", size, 0.0, cna, [1.0, 0.9])
        add("random(seed=0)", "random", size, 0.0, random, [1.0, 1.0])
        add("cna", "cna", size, 2.0, [True, True], [0.5, 0.5])
    add("refusal-direction", "direction", None, 0.0, [False, True], [0.8, 0.6])
    add("refusal-direction", "direction", None, 2.0, [True, True], [0.4, 0.4])
    frame = pd.DataFrame(rows)
    frame["size"] = frame["size"].astype("Int64")
    return frame


@pytest.fixture
def table() -> pd.DataFrame:
    return summary(results())


def traces(figure) -> dict[tuple[str, str], tuple[list, list]]:
    """(trace name, x axis) -> (x, y)."""
    return {(t.name, t.xaxis): (list(t.x), list(t.y)) for t in figure.data}


def test_one_line_per_circuit_and_panel_per_metric(table):
    figure = dose_response(table)
    got = traces(figure)
    # Refusal panel (x) and quality panel (x2).
    assert got[("cna", "x")] == ([1, 5, 20], [1.0, 0.5, 0.0])
    assert got[("random(seed=0)", "x")] == ([1, 5, 20], [1.0, 1.0, 0.5])
    assert got[("cna", "x2")] == ([1, 5, 20], pytest.approx([0.95, 0.95, 0.95]))
    assert got[("random(seed=0)", "x2")] == ([1, 5, 20], [1.0, 1.0, 1.0])
    # References: the baseline (multiplier 1) and the direction at the same multiplier.
    assert got[("baseline", "x")] == ([1.0, 20.0], [1.0, 1.0])
    assert got[("refusal-direction ×0", "x")] == ([1.0, 20.0], [0.5, 0.5])
    assert got[("refusal-direction ×0", "x2")] == ([1.0, 20.0], pytest.approx([0.7, 0.7]))
    assert len(figure.data) == 2 * 4
    # One legend entry per line, colours shared across the panels.
    assert [t.name for t in figure.data if t.showlegend] == [
        "cna", "random(seed=0)", "baseline", "refusal-direction ×0"]
    by_name = {}
    for trace in figure.data:
        by_name.setdefault(trace.name, set()).add(trace.line.color)
    assert all(len(colours) == 1 for colours in by_name.values())
    assert by_name["cna"] != by_name["random(seed=0)"]
    assert figure.layout.xaxis.type == "log" and figure.layout.xaxis2.type == "log"
    assert [a.text for a in figure.layout.annotations] == ["refusal rate", "quality"]
    assert "multiplier 0" in figure.layout.title.text and "jbb" in figure.layout.title.text


def test_hover_shows_the_fraction(table):
    cna = next(t for t in dose_response(table).data if t.name == "cna")
    assert list(cna.customdata) == [0.001, 0.005, 0.02]
    assert "neurons" in cna.hovertemplate


def test_another_multiplier(table):
    got = traces(dose_response(table, multiplier=2.0))
    assert got[("cna", "x2")] == ([1, 5, 20], [0.5, 0.5, 0.5])
    assert ("random(seed=0)", "x") not in got  # no random control at x2 in this table
    assert got[("refusal-direction ×2", "x")] == ([1.0, 20.0], [1.0, 1.0])


def test_a_single_metric_gives_a_single_panel():
    table = summary(results().drop(columns=["quality"]))
    figure = dose_response(table)
    assert {t.xaxis for t in figure.data} == {"x"}
    assert [a.text for a in figure.layout.annotations] == ["refusal rate"]


def test_choosing_a_benchmark():
    two = pd.concat([results(), results().assign(benchmark="other")], ignore_index=True)
    with pytest.raises(InvalidArgumentError, match=r"several benchmarks \['jbb', 'other'\]"):
        dose_response(summary(two))
    assert "other" in dose_response(summary(two), benchmark="other").layout.title.text
    with pytest.raises(InvalidArgumentError, match="'nope' is not in the table"):
        dose_response(summary(two), benchmark="nope")


def test_bad_tables_are_refused(table):
    with pytest.raises(InvalidArgumentError, match="no 'size' column"):
        dose_response(table.drop(columns=["size"]))
    with pytest.raises(InvalidArgumentError, match=r"at multiplier 3; .* \[0.0, 2.0\]"):
        dose_response(table, multiplier=3.0)
    with pytest.raises(InvalidArgumentError, match="neither refusal_rate nor quality"):
        dose_response(table.drop(columns=["refusal_rate", "quality"]))
    with pytest.raises(InvalidArgumentError, match="DataFrame of workbench.evaluation"):
        dose_response([1, 2])
