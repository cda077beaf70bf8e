"""The gate search's Pareto front as a figure: refusal removed against KL, CNA beside random.

:func:`pareto_figure` draws every finished trial of a :class:`~workbench.search.GateSearch`
(its ``trials()`` frame): the refusal it removes from held-out harmful prompts
(``baseline_refusal - refusal``, a share of the prompts) across, the KL divergence it causes
on harmless prompts (nats, log scale) up. Each trial's random control (a random circuit of
the same per-layer shape: ``baseline_refusal - random_refusal`` against ``random_kl``) is a
second, faded trace, so the distance between a CNA point and the grey cloud is what the
circuit does beyond touching that many neurons at all. The search's Pareto trials (on its
objectives: refusal removed beyond random, maximised, and KL, minimised) are ringed and
joined by a step line; the paper's setting (trial 0 when it is
:data:`~workbench.search.PAPER_TRIAL`) is a star. Hovering a point lists the trial's
settings and scores.

:class:`ParetoExplorer` shows the figure in a notebook: clicking a point (or choosing a trial
in the list, on Colab's static figures) selects the trial and loads its circuit and
multiplier into a :class:`~widgets.SteeringSlider`, given or made on the first choice.
:class:`ParetoController` holds the state without any widget.

Example:
    >>> import pandas as pd
    >>> trials = pd.DataFrame({
    ...     "trial": [0, 1], "contrast": ["jbb-pair"] * 2, "fraction": [0.001, 0.01],
    ...     "band": ["all", "last-25%"], "signs": ["all", "positive"], "multiplier": [0.0, 0.0],
    ...     "size": [46, 460], "layers": [[3, 20], [18, 21]], "refusal": [0.6, 0.2],
    ...     "benign_refusal": [0.1, 0.05], "kl": [0.004, 0.3], "quality": [0.98, 0.9],
    ...     "random_refusal": [0.9, 0.85], "random_benign_refusal": [0.1, 0.1],
    ...     "random_kl": [0.001, 0.02], "removed_beyond_random": [0.3, 0.65],
    ...     "baseline_refusal": [0.9, 0.9], "baseline_benign_refusal": [0.1, 0.1]})
    >>> figure = pareto_figure(trials)
    >>> cna = figure.data[1]
    >>> cna.meta, [round(x, 2) for x in cna.x], list(cna.y)
    ('cna', [0.3, 0.7], [0.004, 0.3])
    >>> pareto_trials(trials)
    {0, 1}
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral
from typing import TYPE_CHECKING, Any

import ipywidgets
import pandas as pd
import plotly.graph_objects as go

from workbench.circuit import Circuit
from workbench.config import STEERING_VIEW_MAX_NEW_TOKENS
from workbench.errors import InvalidArgumentError
from workbench.search import PAPER_TRIAL

from . import markup
from .export import Exportable
from .figures import FigureView
from .observers import Observers
from .steering_slider import DEFAULT_PROMPTS, SteeringSlider
from .view import View

if TYPE_CHECKING:  # the search module loads optuna on first use
    from workbench.search import GateSearch

#: The columns of ``GateSearch.trials()`` the figure reads.
COLUMNS = ("trial", "contrast", "fraction", "band", "signs", "multiplier", "size", "refusal",
           "benign_refusal", "kl", "random_refusal", "random_benign_refusal", "random_kl",
           "removed_beyond_random", "baseline_refusal")
#: KL values below this (zero included) are drawn at it on the log axis; hover shows them exact.
KL_FLOOR = 1e-5
COLOURS = {"cna": "#c0392b", "random": "#7f8c8d", "pareto": "#7b241c", "paper": "#d4ac0d",
           "selected": "#1f618d"}
#: The trace kinds, in the order the figure holds them (clicks map a trace to its points).
TRACES = ("random", "cna", "front", "pareto", "paper", "selected")


def pareto_trials(trials: pd.DataFrame) -> set[int]:
    """The trials no other trial beats on both of the search's objectives.

    Beating means at least as much ``removed_beyond_random`` and at most as much ``kl``,
    strictly better on one; this is the set :meth:`GateSearch.pareto` lists.

    Example:
        >>> frame = pd.DataFrame({"trial": [0, 1, 2], "removed_beyond_random": [0.2, 0.5, 0.1],
        ...                       "kl": [0.01, 0.2, 0.3]})
        >>> sorted(pareto_trials(frame))
        [0, 1]
    """
    if trials.empty:
        return set()
    gain = trials["removed_beyond_random"].astype(float).tolist()
    cost = trials["kl"].astype(float).tolist()
    front = set()
    for i, number in enumerate(trials["trial"]):
        beaten = any(g >= gain[i] and c <= cost[i] and (g > gain[i] or c < cost[i])
                     for g, c in zip(gain, cost))
        if not beaten:
            front.add(int(number))
    return front


def is_paper_trial(row: pd.Series | dict[str, Any]) -> bool:
    """Whether a trial's settings are the paper's (:data:`~workbench.search.PAPER_TRIAL`).

    Example:
        >>> is_paper_trial({"contrast": "jbb-pair", "fraction": 0.001, "band": "all",
        ...                 "signs": "all", "multiplier": 0.0})
        True
    """
    for key, value in PAPER_TRIAL.items():
        if isinstance(value, float):
            if not math.isclose(float(row[key]), value, rel_tol=1e-9, abs_tol=1e-12):
                return False
        elif row[key] != value:
            return False
    return True


def removed(trials: pd.DataFrame, kind: str = "cna") -> list[float]:
    """Refusal removed by each trial's circuit (``kind="cna"``) or its random control:
    the unchanged model's held-out refusal minus the refusal with the circuit applied.

    Example:
        >>> removed(pd.DataFrame({"baseline_refusal": [0.8], "refusal": [0.3],
        ...                       "random_refusal": [0.4]}), "random")
        [0.4]
    """
    column = "refusal" if kind == "cna" else "random_refusal"
    return (trials["baseline_refusal"].astype(float) - trials[column].astype(float)).tolist()


def hover_text(row: pd.Series, kind: str = "cna") -> str:
    """Every setting and score of one trial, as plotly hover HTML (texts escaped).

    Example:
        >>> row = pd.Series({"trial": 3, "contrast": "mine", "fraction": 0.002, "band": "all",
        ...     "signs": "all", "multiplier": 0.0, "size": 12, "refusal": 0.4, "kl": 0.02})
        >>> "contrast mine" in hover_text(row)
        True
    """
    def get(key: str) -> Any:
        return row[key] if key in row.index else None

    def share(key: str) -> str:
        value = get(key)
        return "–" if value is None or pd.isna(value) else f"{float(value):.0%}"

    def number(key: str, spec: str) -> str:
        value = get(key)
        return "–" if value is None or pd.isna(value) else format(float(value), spec)

    title = (f"<b>random control of trial {int(row['trial'])}</b>" if kind == "random"
             else f"<b>trial {int(row['trial'])}</b>")
    layers = get("layers")
    lines = [
        title,
        f"contrast {markup.escape(get('contrast'))} · band {markup.escape(get('band'))} · "
        f"signs {markup.escape(get('signs'))}",
        f"fraction {number('fraction', '.3%')} · size {number('size', '.0f')} neurons · "
        f"multiplier ×{number('multiplier', 'g')}",
    ]
    if layers is not None and not (isinstance(layers, float) and pd.isna(layers)):
        lines.append(f"layers {markup.escape(', '.join(str(x) for x in layers))}")
    lines += [
        f"refusal {share('refusal')} (random {share('random_refusal')}, "
        f"unchanged {share('baseline_refusal')})",
        f"benign refusal {share('benign_refusal')} (random {share('random_benign_refusal')}, "
        f"unchanged {share('baseline_benign_refusal')})",
        f"KL {number('kl', '.4g')} nats (random {number('random_kl', '.4g')})",
        f"quality {number('quality', '.3f')} · removed beyond random "
        f"{share('removed_beyond_random')}",
    ]
    return "<br>".join(lines)


def pareto_figure(trials: pd.DataFrame, pareto_trials: set[int] | None = None, *,
                  selected: int | None = None) -> go.Figure:
    """Refusal removed (x) against KL on harmless prompts (y, log), CNA beside random.

    Args:
        trials: :meth:`GateSearch.trials() <workbench.search.GateSearch.trials>`.
        pareto_trials: the trial numbers to highlight (default: computed from the frame
            with :func:`pareto_trials`, as :meth:`GateSearch.pareto` does).
        selected: a trial to ring in blue (the one chosen in :class:`ParetoExplorer`).

    Returns:
        A figure with the traces of :data:`TRACES`, in that order, always all present
        (empty when they have nothing to show): the random controls (faded), the CNA
        trials, the step line joining the Pareto trials, the Pareto trials ringed, the
        paper's setting (a star) and the selected trial. Each trace's ``meta`` names its
        kind; ``customdata`` holds the trial numbers of its points.

    Example:
        >>> search = GateSearch(model, "gate.db").run(20)                  # doctest: +SKIP
        >>> pareto_figure(search.trials()).show()                         # doctest: +SKIP
    """
    frame = _check_trials(trials)
    front = _pareto(frame) if pareto_trials is None else {int(t) for t in pareto_trials}
    cna_x, random_x = removed(frame, "cna"), removed(frame, "random")
    cna_y, random_y = _kl(frame["kl"]), _kl(frame["random_kl"])
    numbers = [int(t) for t in frame["trial"]]
    cna_hover = [hover_text(row) for _, row in frame.iterrows()]
    random_hover = [hover_text(row, "random") for _, row in frame.iterrows()]

    def subset(chosen: Sequence[int], xs: list[float], ys: list[float],
               texts: list[str]) -> dict[str, list[Any]]:
        at = [numbers.index(t) for t in chosen]
        return {"x": [xs[i] for i in at], "y": [ys[i] for i in at],
                "customdata": [numbers[i] for i in at], "hovertext": [texts[i] for i in at]}

    on_front = sorted((t for t in numbers if t in front),
                      key=lambda t: (cna_x[numbers.index(t)], cna_y[numbers.index(t)]))
    paper = [t for t, (_, row) in zip(numbers, frame.iterrows())
             if t == 0 and is_paper_trial(row)]
    chosen = [selected] if selected is not None and selected in numbers else []
    hover = "%{hovertext}<extra></extra>"
    figure = go.Figure()
    figure.add_scatter(x=random_x, y=random_y, customdata=numbers, hovertext=random_hover,
                       name="random control", meta="random", mode="markers",
                       hovertemplate=hover, opacity=0.45,
                       marker={"color": COLOURS["random"], "size": 8, "symbol": "circle-open"})
    figure.add_scatter(x=cna_x, y=cna_y, customdata=numbers, hovertext=cna_hover,
                       name="CNA trial", meta="cna", mode="markers", hovertemplate=hover,
                       marker={"color": COLOURS["cna"], "size": 9, "opacity": 0.8})
    figure.add_scatter(**subset(on_front, cna_x, cna_y, cna_hover), name="Pareto front",
                       meta="front", mode="lines", line={"color": COLOURS["pareto"],
                                                         "shape": "vh", "width": 1.5},
                       hovertemplate=hover, showlegend=False)
    figure.add_scatter(**subset(on_front, cna_x, cna_y, cna_hover), name="Pareto trial",
                       meta="pareto", showlegend=bool(on_front), mode="markers",
                       hovertemplate=hover,
                       marker={"color": COLOURS["cna"], "size": 13,
                               "line": {"color": COLOURS["pareto"], "width": 2.5}})
    figure.add_scatter(**subset(paper, cna_x, cna_y, cna_hover), name="paper's setting",
                       meta="paper", showlegend=bool(paper), mode="markers",
                       hovertemplate=hover,
                       marker={"color": COLOURS["paper"], "size": 18, "symbol": "star",
                               "line": {"color": "#222222", "width": 1}})
    figure.add_scatter(**subset(chosen, cna_x, cna_y, cna_hover), name="selected",
                       meta="selected", showlegend=bool(chosen), mode="markers",
                       hovertemplate=hover,
                       marker={"color": "rgba(0, 0, 0, 0)", "size": 22,
                               "line": {"color": COLOURS["selected"], "width": 3}})
    title = (f"Gate search: {len(numbers)} trials, {len(on_front)} on the Pareto front"
             if numbers else "Gate search: no finished trials yet")
    figure.update_layout(
        title={"text": title}, plot_bgcolor="white", width=900, height=560,
        hovermode="closest", legend={"orientation": "h", "y": -0.18},
        xaxis={"title": {"text": "refusal removed on held-out harmful prompts "
                                 "(unchanged − steered)"},
               "tickformat": ".0%", "zeroline": True, "zerolinecolor": "#bbbbbb",
               "gridcolor": "#eeeeee"},
        yaxis={"title": {"text": "KL on harmless prompts (nats, log scale)"}, "type": "log",
               "gridcolor": "#eeeeee"},
        margin={"l": 70, "r": 20, "t": 60, "b": 110})
    return figure


def _check_trials(trials: Any) -> pd.DataFrame:
    if not isinstance(trials, pd.DataFrame):
        raise InvalidArgumentError(
            f"pareto_figure() needs the DataFrame of GateSearch.trials(), not "
            f"{type(trials).__name__}")
    if trials.empty:
        return pd.DataFrame({column: [] for column in COLUMNS})
    missing = [c for c in COLUMNS if c not in trials.columns]
    if missing:
        raise InvalidArgumentError(
            f"the trials lack the columns {missing}; pass GateSearch.trials()")
    return trials.reset_index(drop=True)


def _pareto(frame: pd.DataFrame) -> set[int]:
    # pareto_figure's argument of the same name hides the function there
    return pareto_trials(frame)


def _number(trial: Any) -> int:
    if isinstance(trial, bool) or not isinstance(trial, Integral):
        raise InvalidArgumentError(f"a trial is given by its number, not {trial!r}")
    return int(trial)


def _kl(values: pd.Series) -> list[float]:
    """KL values for the log axis: those below :data:`KL_FLOOR` (or missing) at it."""
    return [float(v) if pd.notna(v) and float(v) > KL_FLOOR else KL_FLOOR for v in values]


class ParetoController:
    """A gate search's trials, its Pareto set and the trial chosen in them.

    Args:
        search: the search whose study to show (``trials()``, ``pareto()`` and
            ``circuit(trial)`` are read from it).

    Example:
        >>> c = ParetoController(search)                               # doctest: +SKIP
        >>> circuit = c.select(int(c.pareto[0]))                      # doctest: +SKIP
    """

    def __init__(self, search: GateSearch) -> None:
        self.search = search
        self.trials = pd.DataFrame()
        self.pareto: list[int] = []  # most refusal removed beyond random first
        self.selected: int | None = None
        self.circuit: Circuit | None = None
        self.chosen = Observers()  # (trial, circuit) after a trial is selected
        self.changed = Observers()  # () after the trials were read again
        self._read()

    def refresh(self) -> None:
        """Read the study's trials again (after more ``search.run(n)``)."""
        self._read()
        self.changed()

    def _read(self) -> None:
        self.trials = self.search.trials()
        pareto = self.search.pareto()
        self.pareto = [int(t) for t in pareto["trial"]] if len(pareto) else []

    def row(self, trial: int) -> pd.Series:
        """The settings and scores of trial number ``trial``."""
        trial = _number(trial)
        rows = self.trials[self.trials["trial"] == trial] if len(self.trials) else self.trials
        if not len(rows):
            known = [int(t) for t in self.trials["trial"]] if len(self.trials) else []
            raise InvalidArgumentError(
                f"trial {trial} is not a finished trial of this study (finished: {known})")
        return rows.iloc[0]

    def multiplier(self, trial: int) -> float:
        """The multiplier trial ``trial`` applied its circuit at."""
        return float(self.row(trial)["multiplier"])

    def select(self, trial: int) -> Circuit:
        """Choose trial number ``trial``: returns its circuit (``search.circuit(trial)``)
        and notifies ``chosen``."""
        trial = _number(trial)
        self.row(trial)
        circuit = self.search.circuit(trial)
        self.selected, self.circuit = trial, circuit
        self.chosen(trial, circuit)
        return circuit

    def trial_at(self, kind: str, x: float, y: float) -> int:
        """The trial whose point of trace ``kind`` (see :data:`TRACES`) lies nearest to
        (x, y) of the figure (y on its log scale)."""
        if not len(self.trials):
            raise InvalidArgumentError("the study has no finished trials yet")
        kind = "random" if kind == "random" else "cna"
        xs = removed(self.trials, kind)
        ys = _kl(self.trials["kl" if kind == "cna" else "random_kl"])
        log_y = math.log10(max(float(y), KL_FLOOR))
        distances = [(xi - float(x)) ** 2 + (math.log10(yi) - log_y) ** 2
                     for xi, yi in zip(xs, ys)]
        return int(self.trials["trial"].iloc[distances.index(min(distances))])

    def figure(self) -> go.Figure:
        """:func:`pareto_figure` of the trials, the search's Pareto set and the choice."""
        return pareto_figure(self.trials, set(self.pareto), selected=self.selected)

    def exportable(self) -> Exportable:
        """The figure, with the chosen trial's circuit and the study's settings."""
        settings = self.search.study.user_attrs.get("settings")
        extra: dict[str, Any] = {"study": str(self.search.storage), "trials": len(self.trials),
                                 "pareto_trials": list(self.pareto),
                                 "settings": settings}
        if self.selected is not None:
            extra["selected_trial"] = self.selected
        return Exportable("gate search pareto front", self.figure(), circuit=self.circuit,
                          extra=extra)

    def options(self) -> list[tuple[str, int]]:
        """(label, trial) for a list of the trials: the Pareto trials first."""
        if not len(self.trials):
            return []
        order = self.pareto + [int(t) for t in self.trials["trial"] if int(t) not in self.pareto]
        labels = []
        for trial in order:
            row = self.row(trial)
            removed_share = float(row["baseline_refusal"]) - float(row["refusal"])
            mark = " · Pareto" if trial in self.pareto else ""
            labels.append((f"trial {trial}: removes {removed_share:.0%}, "
                           f"KL {float(row['kl']):.3g}{mark}", trial))
        return labels


class ParetoExplorer(View):
    """The Pareto figure of a gate search; choosing a trial steers its circuit.

    Clicking a point (a CNA trial or its random control) or choosing a trial in the list
    and pressing *Steer* selects it and loads its circuit and multiplier into the
    steering slider under the figure: ``slider`` when given, else one made on the first
    choice (on ``search.model``, with ``prompts`` and ``max_new_tokens``).

    Args:
        search: a :class:`~workbench.search.GateSearch`.
        slider: a :class:`~widgets.SteeringSlider` on the search's model to load trials
            into (it is shown under the figure too).
        prompts, max_new_tokens, generate_kwargs: for a slider made here.
        interactive: live ``FigureWidget`` (True) or static figures (False); default
            from :func:`widgets.environment.interactive_figures`.

    Example:
        >>> explorer = ParetoExplorer(search)                          # doctest: +SKIP
        >>> explorer.choose(explorer.controller.pareto[0])             # doctest: +SKIP
    """

    def __init__(self, search: GateSearch, slider: SteeringSlider | None = None, *,
                 prompts: Sequence[str] = DEFAULT_PROMPTS,
                 max_new_tokens: int = STEERING_VIEW_MAX_NEW_TOKENS,
                 interactive: bool | None = None, **generate_kwargs: Any) -> None:
        self._build(ParetoController(search), slider, interactive,
                    {"prompts": list(prompts), "max_new_tokens": max_new_tokens,
                     **generate_kwargs})

    @classmethod
    def from_controller(cls, controller: ParetoController,
                        slider: SteeringSlider | None = None, *,
                        interactive: bool | None = None) -> ParetoExplorer:
        """The view of an existing controller.

        Example:
            >>> ParetoExplorer.from_controller(ParetoController(search))  # doctest: +SKIP
        """
        view = cls.__new__(cls)
        view._build(controller, slider, interactive, {"prompts": list(DEFAULT_PROMPTS)})
        return view

    def _build(self, controller: ParetoController, slider: SteeringSlider | None,
               interactive: bool | None, slider_options: dict[str, Any]) -> None:
        super().__init__()
        self.controller = c = controller
        self.slider = slider
        self._slider_options = slider_options
        self.plot = FigureView(c.figure(), interactive)
        self.plot.on_click(self._clicked)
        self.picker = ipywidgets.Dropdown(options=c.options(), description="trial",
                                          layout={"width": "420px"})
        self.steer_button = ipywidgets.Button(description="Steer")
        self.steer_button.on_click(lambda _b: self.choose(self.picker.value))
        self.refresh_button = ipywidgets.Button(description="Refresh")
        self.refresh_button.on_click(lambda _b: self.act(c.refresh))
        self.details = ipywidgets.HTML()
        self.steering = ipywidgets.VBox([slider.widget] if slider is not None else [])
        c.chosen.add(self._chosen)
        c.changed.add(self._redraw)
        self.widget = ipywidgets.VBox([
            self.plot.widget,
            ipywidgets.HBox([self.picker, self.steer_button, self.refresh_button]),
            self.status, self.details, self.steering,
        ])
        if c.selected is not None:  # the controller may hold a choice made before this view
            self._show(c.selected)

    def choose(self, trial: int | None) -> Circuit | None:
        """Select trial number ``trial`` and steer its circuit, as a click on it would."""
        if trial is None:
            self.say("error", "choose a trial first")
            return None
        return self.act(lambda: self.controller.select(trial))

    def _clicked(self, trace: int, x: float, y: float) -> None:
        kind = self.plot.figure.data[trace].meta
        trial = self.act(lambda: self.controller.trial_at(str(kind), x, y))
        if trial is not None:
            self.choose(trial)

    def _chosen(self, trial: int, circuit: Circuit) -> None:
        c = self.controller
        multiplier = c.multiplier(trial)
        if self.slider is None:
            options = dict(self._slider_options)
            self.slider = SteeringSlider(c.search.model, circuit, options.pop("prompts"),
                                         multiplier=multiplier, **options)
            self.steering.children = [self.slider.widget]
        else:
            self.slider.load(circuit, multiplier)
        self._show(trial)

    def _show(self, trial: int) -> None:
        self.picker.value = trial
        self.plot.update(self.controller.figure())
        self.details.value = hover_text(self.controller.row(trial))
        self.clear_status()

    def _redraw(self) -> None:
        c = self.controller
        self.picker.options = c.options()
        self.plot.update(c.figure())
        self.say("info", f"{len(c.trials)} trials, {len(c.pareto)} on the Pareto front")
