"""The gate search's Pareto figure: points are the trials' numbers, the Pareto set and the
paper's setting are marked, hover lists the settings; choosing a trial gives its circuit,
and clicking a point steers it in a slider (given, or made on the first click)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import pytest

import workbench
from tests.helpers import PROMPTS, make_tiny_hf
from tests.widgets import widget_fixtures
from widgets.export import export, read_html_provenance
from widgets.pareto import (
    KL_FLOOR,
    TRACES,
    ParetoController,
    ParetoExplorer,
    pareto_figure,
    pareto_trials,
)
from widgets.steering_slider import SteeringSlider
from workbench.errors import InvalidArgumentError
from workbench.evaluation.drift import HarmlessDrift
from workbench.search import GateSearch
from workbench.search_space import SearchSpace

OPTIONS = dict(heldout_n=3, max_new_tokens=3, progress=False)
# multipliers vary, so that loading a trial's multiplier is seen
SPACE = SearchSpace(contrasts=("jbb-pair",), min_fraction=0.001, max_fraction=0.05,
                    min_multiplier=-0.5, max_multiplier=0.5)
WAIT = 60

no_widgets = widget_fixtures.no_widgets


@pytest.fixture(scope="module")
def model(tiny_tokenizer):
    # JBB prompts run past the tiny config's 128 positions
    return workbench.from_hf(make_tiny_hf("llama", max_position_embeddings=512),
                             tiny_tokenizer, name="tiny-llama")


@pytest.fixture(scope="module")
def search(model, tmp_path_factory):
    storage = tmp_path_factory.mktemp("pareto") / "gate.db"
    drift = HarmlessDrift(model, PROMPTS, tokens=2)
    return GateSearch(model, storage, SPACE, drift=drift, **OPTIONS).run(3)


def trace(figure: go.Figure, kind: str) -> go.Scatter:
    [found] = [t for t in figure.data if t.meta == kind]
    return found


def click(view: ParetoExplorer, kind: str, x: float, y: float) -> None:
    """What the browser sends when a point of trace ``kind`` is clicked."""
    live = view.plot.figure
    assert isinstance(live, go.FigureWidget)
    index = [t.meta for t in live.data].index(kind)
    live._js2py_pointsCallback = {"event_type": "plotly_click",
                                  "points": {"xs": [x], "ys": [y], "point_indexes": [0],
                                             "trace_indexes": [index]}}


def test_the_points_are_the_trials_numbers_cna_beside_random(search):
    trials = search.trials()
    figure = pareto_figure(trials)
    assert [t.meta for t in figure.data] == list(TRACES)
    cna, random = trace(figure, "cna"), trace(figure, "random")
    assert list(cna.customdata) == list(random.customdata) == list(trials["trial"])
    assert list(cna.x) == pytest.approx(list(trials["baseline_refusal"] - trials["refusal"]))
    assert list(random.x) == pytest.approx(
        list(trials["baseline_refusal"] - trials["random_refusal"]))
    assert (trials["kl"] > KL_FLOOR).all() and (trials["random_kl"] > KL_FLOOR).all()
    assert list(cna.y) == list(trials["kl"]) and list(random.y) == list(trials["random_kl"])
    assert figure.layout.yaxis.type == "log"
    assert random.opacity < 1 and cna.marker.color != random.marker.color
    # the tiny model refuses nothing; other refusal rates move the points across
    moved = trials.assign(baseline_refusal=0.9, refusal=[0.1, 0.5, 0.7],
                          random_refusal=[0.8, 0.9, 0.6])
    figure = pareto_figure(moved)
    assert list(trace(figure, "cna").x) == pytest.approx([0.8, 0.4, 0.2])
    assert list(trace(figure, "random").x) == pytest.approx([0.1, 0.0, 0.3])


def synthetic(removed: list[float], kl: list[float]) -> pd.DataFrame:
    """Trials with the given refusal removed (random controls remove nothing) and KL."""
    n = len(removed)
    return pd.DataFrame({
        "trial": list(range(n)), "contrast": ["jbb-pair"] * n, "fraction": [0.001] * n,
        "band": ["all"] * n, "signs": ["all"] * n, "multiplier": [0.0] * n, "size": [4] * n,
        "refusal": [1 - r for r in removed], "benign_refusal": [0.0] * n, "kl": kl,
        "random_refusal": [1.0] * n, "random_benign_refusal": [0.0] * n,
        "random_kl": [k / 2 for k in kl], "removed_beyond_random": removed,
        "baseline_refusal": [1.0] * n})


def test_the_front_is_a_step_line_through_the_pareto_trials_by_refusal_removed():
    trials = synthetic([0.5, 0.1, 0.9, 0.4, 0.2], [0.05, 0.001, 2.0, 0.5, 0.002])
    assert pareto_trials(trials) == {0, 1, 2, 4}  # trial 3 removes less than 0 at more KL
    figure = pareto_figure(trials)
    line = trace(figure, "front")
    assert list(line.customdata) == [1, 4, 0, 2] and line.line.shape == "vh"
    assert list(line.x) == pytest.approx([0.1, 0.2, 0.5, 0.9])
    assert list(line.y) == [0.001, 0.002, 0.05, 2.0]
    assert set(trace(figure, "pareto").customdata) == {0, 1, 2, 4}


def test_the_pareto_set_is_highlighted_and_joined_and_the_papers_setting_marked(search):
    trials = search.trials()
    best = set(search.pareto()["trial"])
    assert pareto_trials(trials) == best  # the figure's own front is the search's
    for given in (None, best):
        figure = pareto_figure(trials, given)
        marked, line = trace(figure, "pareto"), trace(figure, "front")
        assert set(marked.customdata) == best and list(line.customdata) == list(
            marked.customdata)
        assert list(line.x) == sorted(line.x) and line.line.shape == "vh"
        rows = trials.set_index("trial")
        for number, x, y in zip(marked.customdata, marked.x, marked.y):
            assert x == pytest.approx(rows.loc[number, "baseline_refusal"]
                                      - rows.loc[number, "refusal"])
            assert y == rows.loc[number, "kl"]
    other = pareto_figure(trials, {2})
    assert list(trace(other, "pareto").customdata) == [2]
    paper = trace(figure, "paper")
    assert list(paper.customdata) == [0]  # trial 0 is the paper's setting
    moved = trials.assign(fraction=[0.002] + list(trials["fraction"][1:]))
    assert len(trace(pareto_figure(moved), "paper").x) == 0


def test_hover_text_lists_every_setting_and_score(search):
    trials = search.trials()
    figure = pareto_figure(trials)
    for kind in ("cna", "random"):
        for text, (_, row) in zip(trace(figure, kind).hovertext, trials.iterrows()):
            assert f"trial {row['trial']}" in text
            assert f"contrast {row['contrast']}" in text and f"band {row['band']}" in text
            assert f"signs {row['signs']}" in text
            assert f"fraction {row['fraction']:.3%}" in text
            assert f"multiplier ×{row['multiplier']:g}" in text
            assert f"size {row['size']} neurons" in text
            assert f"KL {row['kl']:.4g} nats (random {row['random_kl']:.4g})" in text
            assert f"refusal {row['refusal']:.0%} (random {row['random_refusal']:.0%}" in text
    assert trace(figure, "random").hovertext[0].startswith("<b>random control of trial 0")


def test_kl_at_or_below_zero_stays_on_the_log_axis_and_columns_are_checked(search):
    trials = search.trials().assign(kl=[0.0, 0.5, -1e-9])
    figure = pareto_figure(trials)
    assert list(trace(figure, "cna").y) == [KL_FLOOR, 0.5, KL_FLOOR]
    assert "KL 0 nats" in trace(figure, "cna").hovertext[0]
    with pytest.raises(InvalidArgumentError, match="random_kl"):
        pareto_figure(trials.drop(columns=["random_kl"]))
    empty = pareto_figure(pd.DataFrame())
    assert [len(t.x) for t in empty.data] == [0] * len(TRACES)
    assert "no finished trials" in empty.layout.title.text


@pytest.mark.usefixtures("no_widgets")
def test_select_returns_the_trials_circuit(search):
    c = ParetoController(search)
    assert c.pareto == list(search.pareto()["trial"])
    seen = []
    c.chosen.add(lambda trial, circuit: seen.append((trial, circuit)))
    for number in (0, 2):
        circuit = c.select(number)
        assert [n.key for n in circuit.neurons] == [n.key for n in search.circuit(number).neurons]
        assert len(circuit) == c.row(number)["size"]
        assert c.selected == number and seen[-1][0] == number
    assert list(trace(c.figure(), "selected").customdata) == [2]
    with pytest.raises(InvalidArgumentError, match="not a finished trial"):
        c.select(7)
    with pytest.raises(InvalidArgumentError, match="its number"):
        c.select("1")  # type: ignore[arg-type]
    trials = search.trials()
    for number in (0, 1, 2):
        row = trials[trials["trial"] == number].iloc[0]
        x = row["baseline_refusal"] - row["random_refusal"]
        assert c.trial_at("random", x, row["random_kl"]) == number


def test_clicking_a_point_loads_its_circuit_and_multiplier_into_the_slider(search, model):
    first = search.circuit(0)
    slider = SteeringSlider(model, first, ["Hi"], max_new_tokens=2, autorun=False,
                            divergence=False)
    view = ParetoExplorer(search, slider, interactive=True)
    trials = search.trials()
    number = 1 if trials.loc[1, "multiplier"] != 0 else 2
    row = trials[trials["trial"] == number].iloc[0]
    assert row["multiplier"] != 0
    click(view, "cna", row["baseline_refusal"] - row["refusal"], row["kl"])
    c = slider.controller
    assert view.controller.selected == number and view.picker.value == number
    assert [n.key for n in c.circuit.neurons] == [n.key for n in search.circuit(number).neurons]
    assert c.multiplier == row["multiplier"]
    assert slider.slider.value == row["multiplier"]
    assert c.wait(WAIT) and c.status == "done" and c.history[-1].multiplier == row["multiplier"]
    assert f"trial {number}" in view.details.value
    assert list(trace(view.plot.figure, "selected").customdata) == [number]
    assert slider.widget in view.steering.children


def test_a_slider_is_made_on_the_first_choice_and_the_list_works_without_clicks(
        search, model, tmp_path):
    view = ParetoExplorer(search, prompts=["Hi"], max_new_tokens=2, divergence=False,
                          interactive=False)
    assert view.slider is None and view.steering.children == ()
    assert [trial for _, trial in view.picker.options][:len(view.controller.pareto)] == \
        view.controller.pareto
    view.picker.value = 0
    view.steer_button.click()
    assert isinstance(view.slider, SteeringSlider)
    c = view.slider.controller
    assert c.model is model and view.steering.children == (view.slider.widget,)
    assert [n.key for n in c.circuit.neurons] == [n.key for n in search.circuit(0).neurons]
    assert c.multiplier == 0.0 and c.wait(WAIT) and c.status == "done"
    view.choose(99)
    assert "not a finished trial" in view.status.value
    [path] = export(view, tmp_path / "pareto", png=False)
    record = read_html_provenance(path)
    assert record["figure"] == "gate search pareto front" and record["selected_trial"] == 0
    assert record["circuit"]["neurons"] == len(search.circuit(0))
    assert record["trials"] == 3 and record["settings"]["max_new_tokens"] == 3
