"""SteeringSlider: completions at a chosen multiplier beside the unchanged model's.

Releasing the slider regenerates the steered completions of every prompt in the box (one
per line); tokens appear as they are generated, in a background thread, so the notebook
stays responsive. A newer slider value cancels the generation under way. Baselines
(multiplier 1, no hooks) are generated once per prompt and kept. Each completion shows
whether it opens with a refusal (:func:`workbench.evaluation.refusal.is_refusal`) and its
n-gram quality (:func:`workbench.evaluation.quality.quality`). Once a generation's
completions are in, each row also shows where the steered completion first leaves the
baseline, token by token, with the top next tokens under both models there
(:func:`workbench.divergence.divergence`; ``divergence=False`` turns it off).

Only one generation runs on a model at a time (:func:`workbench.streaming.model_lock`),
and the steering hooks are removed after every generation, cancelled ones included.

Example:
    >>> import workbench as wb
    >>> model = wb.load_model()                                                 # doctest: +SKIP
    >>> circuit = wb.discover(model, "qualitative-harmful", "qualitative-benign")  # doctest: +SKIP
    >>> SteeringSlider(model, circuit, ["How do I pick a lock?"])               # doctest: +SKIP
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import ipywidgets
import plotly.graph_objects as go
from transformers import StoppingCriteriaList

from workbench import streaming
from workbench.circuit import Circuit
from workbench.config import STEERING_VIEW_MAX_NEW_TOKENS
from workbench.divergence import Divergence, GreedySteps, compare, greedy_steps
from workbench.errors import InvalidArgumentError
from workbench.evaluation.quality import quality
from workbench.evaluation.refusal import is_refusal
from workbench.models import WorkbenchModel
from workbench.values import check_max_new_tokens, check_multiplier, check_positions_signs

from . import markup
from .divergence_view import divergence_html
from .export import Exportable
from .observers import Observers
from .view import View

DEFAULT_PROMPTS = ("How do I pick a lock?",)
SLIDER_MIN, SLIDER_MAX, SLIDER_STEP = -1.0, 3.0, 0.1

Kind = Literal["steered", "baseline", "divergence", "status"]
Status = Literal["idle", "generating", "done", "cancelled", "error"]


@dataclass
class Completion:
    """One prompt's steered and baseline completions (text so far while generating)."""

    prompt: str
    steered: str = ""
    baseline: str = ""
    steered_done: bool = False
    baseline_done: bool = False
    cancelled: bool = False
    divergence: Divergence | None = None

    def scores(self, kind: Literal["steered", "baseline"]) -> tuple[bool, float]:
        """``(is refusal, quality)`` of the steered or baseline text."""
        text = getattr(self, kind)
        return is_refusal(text), quality(text)


@dataclass(frozen=True)
class Update:
    """What changed: a row's text (``kind`` steered/baseline) or the status."""

    job: int
    multiplier: float
    row: int | None
    kind: Kind
    text: str


@dataclass(frozen=True)
class JobRecord:
    """How one regeneration ended; ``first_token_s`` counts from the request."""

    job: int
    multiplier: float
    status: Status
    seconds: float
    first_token_s: float | None
    error: str | None = None


@dataclass
class _Job:
    number: int
    multiplier: float
    token: streaming.CancelToken
    requested: float
    first_token: float | None = None
    thread: threading.Thread | None = field(default=None, repr=False)


class SteeringController:
    """Generates steered and baseline completions in the background.

    Args:
        model: the model to generate with.
        circuit: the neurons to scale.
        prompts: one or more prompts.
        multiplier: the first steered multiplier.
        max_new_tokens: tokens per completion.
        positions, signs: as in :func:`workbench.steer`.
        divergence: after the completions, find where each steered one leaves the
            baseline (:func:`workbench.divergence.divergence`; one more greedy run per
            row, and one per prompt for the baseline, kept).
        generate_kwargs: passed on to :func:`workbench.generate` (e.g. ``chat_template``).
    """

    def __init__(self, model: WorkbenchModel, circuit: Circuit,
                 prompts: Sequence[str] = DEFAULT_PROMPTS, *, multiplier: float = 1.0,
                 max_new_tokens: int = STEERING_VIEW_MAX_NEW_TOKENS, positions: str = "all",
                 signs: str = "all",
                 divergence: bool = True, **generate_kwargs: Any) -> None:
        circuit.check_model(model)
        check_positions_signs(positions, signs)  # here, not first in the generating thread
        check_max_new_tokens(max_new_tokens)
        self.model = model
        self.circuit = circuit
        self.multiplier = check_multiplier(multiplier)
        self.options = {"max_new_tokens": max_new_tokens, "positions": positions,
                        "signs": signs, **generate_kwargs}
        self.completions: list[Completion] = []
        self.status: Status = "idle"
        self.error: str | None = None
        self.history: list[JobRecord] = []
        self.updated = Observers()  # (Update), called from the generating thread too
        self._lock = threading.RLock()
        self._baselines: dict[str, str] = {}
        self.divergence = bool(divergence) and not model.remote
        self._baseline_steps: dict[str, GreedySteps] = {}
        self._job: _Job | None = None
        self._set_rows(prompts)

    def snapshot(self) -> tuple[list[Completion], float]:
        """Copies of the completions and the multiplier, taken together under the lock."""
        with self._lock:
            return [Completion(**vars(c)) for c in self.completions], self.multiplier

    # -- requests ----------------------------------------------------------------

    def set_multiplier(self, multiplier: float) -> int:
        """Regenerate the steered completions at ``multiplier``; returns the job number."""
        value = check_multiplier(multiplier)
        with self._lock:
            self.multiplier = value
        return self.run()

    def set_prompts(self, prompts: Sequence[str] | str) -> int:
        """New prompts (a list, or text with one prompt per line); regenerates."""
        with self._lock:
            self._set_rows(prompts)
        return self.run()

    def set_circuit(self, circuit: Circuit, *, multiplier: float | None = None,
                    regenerate: bool = True) -> int | None:
        """Steer another circuit (of the same model), at ``multiplier`` when given;
        regenerates unless told not to."""
        circuit.check_model(self.model)
        value = None if multiplier is None else check_multiplier(multiplier)
        with self._lock:
            self.circuit = circuit
            if value is not None:
                self.multiplier = value
        return self.run() if regenerate else None

    def run(self) -> int:
        """Cancel the generation under way, if any, and start a new one."""
        with self._lock:
            if self._job is not None:
                self._job.token.cancel()
            number = self._job.number + 1 if self._job else 1
            job = _Job(number, self.multiplier, streaming.CancelToken(), time.perf_counter())
            self._job = job
            for row in self.completions:
                row.steered, row.steered_done, row.cancelled = "", False, False
                row.divergence = None
                row.baseline = self._baselines.get(row.prompt, "")
                row.baseline_done = row.prompt in self._baselines
            self.status, self.error = "generating", None
            rows = [row.prompt for row in self.completions]
            job.thread = threading.Thread(target=self._work, args=(job, rows), daemon=True,
                                          name=f"cna-steering-{number}")
        self.updated(Update(job.number, job.multiplier, None, "status", "generating"))
        job.thread.start()
        return job.number

    def cancel(self) -> None:
        """Stop the generation under way (its partial text stays, marked cancelled)."""
        with self._lock:
            if self._job is not None:
                self._job.token.cancel()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the newest generation ends; False if ``timeout`` seconds passed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                job = self._job
            if job is None or job.thread is None:
                return True
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            job.thread.join(remaining)
            if job.thread.is_alive():
                return False
            with self._lock:
                if self._job is job:
                    return True

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._job is not None and self._job.thread is not None \
                and self._job.thread.is_alive()

    # -- the generating thread -------------------------------------------------------

    def _work(self, job: _Job, prompts: list[str]) -> None:
        status: Status = "done"
        error = None
        try:
            for row, prompt in enumerate(prompts):
                result = self._stream(job, row, prompt, "steered")
                if result.cancelled or job.token.cancelled:
                    status = "cancelled"
                    break
                if prompt not in self._baselines:
                    result = self._stream(job, row, prompt, "baseline")
                    if result.cancelled:
                        status = "cancelled"
                        break
                    self._baselines[prompt] = result.text
            if status == "done" and self.divergence:
                for row, prompt in enumerate(prompts):
                    if not self._diverge(job, row, prompt):
                        status = "cancelled"
                        break
        except Exception as exc:  # noqa: BLE001 - shown in the widget, not lost in a thread
            status, error = "error", f"{type(exc).__name__}: {exc}"
        self._end(job, status, error)

    def _stream(self, job: _Job, row: int, prompt: str, kind: Literal["steered", "baseline"]):
        options = dict(self.options)
        circuit = self.circuit if kind == "steered" else None
        result = streaming.stream_generate(
            self.model, prompt, circuit=circuit,
            multiplier=job.multiplier if kind == "steered" else 1.0,
            on_text=partial(self._text, job, row, kind), cancel=job.token, **options)
        with self._lock:
            if self._job is job:
                completion = self.completions[row]
                setattr(completion, kind, result.text)
                setattr(completion, f"{kind}_done", not result.cancelled)
                completion.cancelled = completion.cancelled or result.cancelled
        self.updated(Update(job.number, job.multiplier, row, kind, result.text))
        return result

    def _diverge(self, job: _Job, row: int, prompt: str) -> bool:
        """Compare row ``row``'s steered and baseline completions token by token.

        Returns False when the job was cancelled meanwhile (nothing is kept then).
        """
        options = dict(self.options)
        steering = {"positions": options.pop("positions"), "signs": options.pop("signs")}
        options["stopping_criteria"] = StoppingCriteriaList([streaming.CancelCriteria(job.token)])
        baseline = self._baseline_steps.get(prompt)
        if baseline is None:
            baseline = greedy_steps(self.model, prompt, **options)
            if job.token.cancelled:
                return False
            self._baseline_steps[prompt] = baseline
        steered = baseline if job.multiplier == 1.0 else greedy_steps(
            self.model, prompt, circuit=self.circuit, multiplier=job.multiplier, **steering,
            **options)
        if job.token.cancelled:
            return False
        found = compare(self.model.tokenizer, prompt, job.multiplier, baseline, steered)
        with self._lock:
            if self._job is not job:
                return False
            self.completions[row].divergence = found
        self.updated(Update(job.number, job.multiplier, row, "divergence", ""))
        return True

    def exportable(self) -> Exportable:
        """The completions (and divergences) as HTML, and a table figure of them for PNGs."""
        rows, multiplier = self.snapshot()
        return Exportable("steering slider", slider_figure(rows, multiplier), html=render(self),
                          circuit=self.circuit, extra={"multiplier": multiplier,
                                                       "options": {k: str(v) for k, v in
                                                                   self.options.items()}})

    def _text(self, job: _Job, row: int, kind: Literal["steered", "baseline"], text: str) -> None:
        with self._lock:
            if self._job is not job:
                return
            if job.first_token is None and kind == "steered":
                job.first_token = time.perf_counter()
            setattr(self.completions[row], kind, text)
        self.updated(Update(job.number, job.multiplier, row, kind, text))

    def _end(self, job: _Job, status: Status, error: str | None) -> None:
        now = time.perf_counter()
        first = None if job.first_token is None else job.first_token - job.requested
        record = JobRecord(job.number, job.multiplier, status, now - job.requested, first, error)
        with self._lock:
            self.history.append(record)
            current = self._job is job
            if current:
                self.status, self.error = status, error
        if current:
            self.updated(Update(job.number, job.multiplier, None, "status", status))

    def _set_rows(self, prompts: Sequence[str] | str) -> None:
        if isinstance(prompts, str):
            prompts = prompts.splitlines()
        prompts = list(prompts)
        wrong = [p for p in prompts if not isinstance(p, str)]
        if wrong:
            raise InvalidArgumentError(f"prompts must be strings, not {wrong[0]!r}")
        cleaned = [p.strip() for p in prompts if p.strip()]
        if not cleaned:
            raise InvalidArgumentError("give at least one prompt (one per line)")
        self.completions = [Completion(p) for p in cleaned]


def render(controller: SteeringController) -> str:
    """The completions table as HTML; every prompt and completion is escaped."""
    return render_rows(*controller.snapshot())


def render_rows(rows: Sequence[Completion], multiplier: float) -> str:
    """:func:`render` of completions at hand (e.g. made without a controller)."""
    head = (f'<tr><th style="text-align:left">prompt</th>'
            f'<th style="text-align:left">multiplier {multiplier:g}</th>'
            f'<th style="text-align:left">baseline (multiplier 1)</th></tr>')
    body = []
    for row in rows:
        cells = [markup.text_block(row.prompt)]
        for kind in ("steered", "baseline"):
            done = getattr(row, f"{kind}_done")
            cells.append(_cell(getattr(row, kind), done, row.cancelled and not done,
                               *(row.scores(kind) if done else (False, 1.0))))
        body.append("<tr>" + "".join(f'<td style="vertical-align:top; padding:4px 8px; '
                                     f'max-width:420px">{cell}</td>' for cell in cells)
                    + "</tr>")
        if row.divergence is not None:
            body.append(f'<tr><td></td><td colspan="2" style="padding:0 8px 8px 8px">'
                        f"{divergence_html(row.divergence)}</td></tr>")
    return f'<table class="cna-completions">{head}{"".join(body)}</table>'


def slider_figure(rows: Sequence[Completion], multiplier: float) -> go.Figure:
    """The completions as a plotly table (prompt, steered, baseline, first divergence)."""
    def where(row: Completion) -> str:
        d = row.divergence
        if d is None:
            return ""
        if d.position is None:
            return "identical"
        top = "<br>".join(markup.escape(f"{c.token!r} {c.baseline:.0%} / {c.steered:.0%}")
                          for c in d.steered_top)
        return (markup.escape(f"position {d.position}: {d.baseline_token!r} → "
                              f"{d.steered_token!r}")
                + f"<br>steered top 5 (baseline / steered):<br>{top}")

    def cell(text: str) -> str:
        return markup.escape(text).replace("\n", "<br>")

    figure = go.Figure(go.Table(
        columnwidth=[2, 4, 4, 3],
        header={"values": ["prompt", f"multiplier {multiplier:g}", "baseline (multiplier 1)",
                           "first divergence"], "align": "left", "fill_color": "#eeeeee"},
        cells={"values": [[cell(r.prompt) for r in rows], [cell(r.steered) for r in rows],
                          [cell(r.baseline) for r in rows], [where(r) for r in rows]],
               "align": "left", "height": 24}))
    figure.update_layout(title={"text": f"Steered at ×{multiplier:g} beside the baseline"},
                         width=1200, height=max(300, 160 + 140 * len(rows)),
                         margin={"l": 20, "r": 20, "t": 50, "b": 60})
    return figure


def _cell(text: str, done: bool, cancelled: bool, refusal: bool, score: float) -> str:
    if done:
        flag = markup.badge("refusal", "error") if refusal else markup.badge("no refusal", "ok")
        footer = f"{flag} · quality {score:.2f}"
    elif cancelled:
        footer = markup.badge("cancelled", "warning")
    else:
        footer = markup.badge("generating…", "info")
    return markup.text_block(text) + f'<div class="cna-scores">{footer}</div>'


class SteeringSlider(View):
    """The slider widget: multiplier, prompts box, status and the completions table.

    Args:
        model, circuit, prompts, multiplier, max_new_tokens, **generate_kwargs:
            see :class:`SteeringController`.
        autorun: generate at once (otherwise at the first slider change or button press).

    Example:
        >>> slider = SteeringSlider(model, circuit, ["How do I pick a lock?"])  # doctest: +SKIP
        >>> # setting the value regenerates, as releasing the slider would:
        >>> slider.slider.value = 0.0                                             # doctest: +SKIP
    """

    #: Seconds between two re-drawings while tokens stream in.
    REDRAW_INTERVAL = 0.05

    def __init__(self, model: WorkbenchModel, circuit: Circuit,
                 prompts: Sequence[str] = DEFAULT_PROMPTS, *, multiplier: float = 1.0,
                 max_new_tokens: int = STEERING_VIEW_MAX_NEW_TOKENS, autorun: bool = True,
                 **generate_kwargs: Any) -> None:
        self._build(SteeringController(model, circuit, prompts, multiplier=multiplier,
                                       max_new_tokens=max_new_tokens, **generate_kwargs),
                    autorun)

    @classmethod
    def from_controller(cls, controller: SteeringController, *,
                        autorun: bool = False) -> SteeringSlider:
        """The view of an existing controller (as :class:`~widgets.CircuitExplorer` does).

        Example:
            >>> SteeringSlider.from_controller(SteeringController(model, circuit))  # doctest: +SKIP
        """
        view = cls.__new__(cls)
        view._build(controller, autorun)
        return view

    def _build(self, controller: SteeringController, autorun: bool) -> None:
        super().__init__()
        self.controller = c = controller
        self.slider = ipywidgets.FloatSlider(
            value=c.multiplier, min=SLIDER_MIN, max=SLIDER_MAX, step=SLIDER_STEP,
            continuous_update=False, readout_format=".1f", description="multiplier",
            style={"description_width": "initial"}, layout={"width": "420px"})
        self.prompts = ipywidgets.Textarea(
            value="\n".join(row.prompt for row in c.completions), continuous_update=False,
            placeholder="one prompt per line", description="prompts",
            layout={"width": "640px", "height": "80px"})
        self.button = ipywidgets.Button(description="Generate")
        self.stop_button = ipywidgets.Button(description="Stop")
        self.output = ipywidgets.HTML(render(c))
        self._drawn = 0.0
        self.slider.observe(self._slid, "value")
        self.prompts.observe(self._prompts_edited, "value")
        self.button.on_click(lambda _b: self.act(c.run))
        self.stop_button.on_click(lambda _b: c.cancel())
        c.updated.add(self._updated)
        self.widget = ipywidgets.VBox([
            ipywidgets.HBox([self.slider, self.button, self.stop_button]),
            self.prompts, self.status, self.output,
        ])
        if autorun:
            c.run()
        else:
            self.redraw()

    def load(self, circuit: Circuit, multiplier: float | None = None, *,
             regenerate: bool = True) -> int | None:
        """Steer another circuit, at ``multiplier`` when given (the slider moves there);
        regenerates unless told not to, and returns the job number then.

        Example:
            >>> slider.load(search.circuit(3), 0.0)                    # doctest: +SKIP
        """
        c = self.controller
        c.cancel()  # the rows still to come would steer the new circuit
        c.set_circuit(circuit, multiplier=multiplier, regenerate=False)
        self.slider.unobserve(self._slid, "value")
        try:  # the slider shows the multiplier (clipped to its range) without regenerating
            self.slider.value = c.multiplier
        finally:
            self.slider.observe(self._slid, "value")
        if regenerate:
            return c.run()
        self.redraw()
        return None

    def _slid(self, change: dict) -> None:
        self.act(lambda: self.controller.set_multiplier(change["new"]))

    def _prompts_edited(self, change: dict) -> None:
        self.act(lambda: self.controller.set_prompts(change["new"]))

    def _updated(self, update: Update) -> None:
        now = time.monotonic()
        if update.kind not in ("status", "divergence") \
                and now - self._drawn < self.REDRAW_INTERVAL:
            return
        self._drawn = now
        self.redraw()

    def redraw(self) -> None:
        """Re-draw the status line and the completions table from the controller."""
        c = self.controller
        if c.status == "error":
            self.say("error", c.error or "generation failed")
        elif c.status == "generating":
            self.say("info", f"generating at multiplier {c.multiplier:g}…")
        elif c.status == "done" and c.history:
            last = c.history[-1]
            first = "" if last.first_token_s is None else \
                f", first token after {last.first_token_s:.2f} s"
            self.say("ok", f"done at multiplier {last.multiplier:g} in {last.seconds:.1f} s{first}")
        elif c.status == "cancelled":
            self.say("warning", "stopped")
        self.output.value = render(c)
