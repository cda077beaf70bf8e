"""Sweeps: completions and metrics for every intervention x multiplier x benchmark.

One row per prompt and condition, completion text included. With ``out=`` the rows are
written to a parquet file as each batch finishes; running the same sweep again reads that
file and only generates what is missing, so an interrupted sweep resumes where it stopped.

With ``sizes=`` circuit size becomes an axis too: every CNA intervention runs at each size
as a prefix of its circuit (:meth:`~workbench.circuit.Circuit.top`: discovery ranks all
neurons together, so the top ``k`` of a larger circuit *is* the size-``k`` circuit), and
every random control is re-drawn, with its seed, for each prefix. Rows then carry ``size``
(neurons) and ``fraction`` (of all MLP neurons); size-free interventions (baseline, CAA,
direction) run once, with both left empty.

Example:
    >>> from workbench.evaluation import Intervention, sweep, summary     # doctest: +SKIP
    >>> rows = sweep(model, [Intervention.baseline(), Intervention.cna(circuit),
    ...                      Intervention.random(circuit, seed=0)],
    ...              multipliers=[0, 1, 2], benchmarks=["jbb-harmful"],
    ...              out="results.parquet")                               # doctest: +SKIP
    >>> summary(rows)                                                     # doctest: +SKIP
    >>> rows = sweep(model, [Intervention.baseline(), Intervention.cna(big_circuit),
    ...                      Intervention.random(big_circuit, seed=0)], multipliers=[0],
    ...              benchmarks=["jbb-harmful"], sizes=[0.001, 0.005, 0.01, 0.02],
    ...              out="sizes.parquet")                                 # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import cast

import pandas as pd
from tqdm.auto import tqdm

from ..config import EVALUATION_BATCH_SIZE, EVALUATION_MAX_NEW_TOKENS
from ..errors import InvalidArgumentError
from ..generation import generate
from ..io import atomic_write_bytes
from ..models import WorkbenchModel
from ..outputs import check_output
from ..prompts import PromptSet
from ..results_files import read_results
from ..values import check_multiplier
from .benchmarks import load_benchmark
from .drift import HarmlessDrift
from .interventions import Intervention
from .quality import quality
from .refusal import is_refusal, refusal_match

METRICS = ("refusal", "quality")
#: Every metric a sweep can add: ``"kl"`` is the drift on harmless prompts
#: (:class:`~workbench.evaluation.drift.HarmlessDrift`), one value per condition.
ALL_METRICS = (*METRICS, "kl")
KEY = ["benchmark", "intervention", "multiplier", "prompt_index"]
#: The row key of a sweep over circuit sizes.
SIZE_KEY = ["benchmark", "intervention", "size", "multiplier", "prompt_index"]

Size = int | float


def conditions(interventions: Sequence[Intervention],
               multipliers: Sequence[float]) -> list[tuple[Intervention, float]]:
    """(intervention, multiplier) pairs; the baseline runs once, at multiplier 1.

    Multipliers are converted to floats and repeats dropped, so each condition runs once.
    """
    names = [i.name for i in interventions]
    if len(set(names)) != len(names):
        raise InvalidArgumentError(f"intervention names must be unique, got {names}")
    # Repeated multipliers (e.g. 0 and 0.0) would run a condition twice: keep the first.
    values = list(dict.fromkeys(check_multiplier(m) for m in multipliers))
    pairs = []
    for intervention in interventions:
        for m in ([1.0] if intervention.runs_once else values):
            pairs.append((intervention, m))
    return pairs


def sized_conditions(interventions: Sequence[Intervention], multipliers: Sequence[float],
                     sizes: Sequence[Size] | None,
                     ) -> list[tuple[Intervention, int | None, float]]:
    """(intervention, size, multiplier) triples: :func:`conditions` with a size axis.

    With ``sizes``, each CNA and random intervention is taken at every size
    (:meth:`Intervention.at_size`; ints are neuron counts, floats fractions of all MLP
    neurons); sizes naming the same count run once. Other interventions, and all of them
    when ``sizes`` is None, get size None. Every size is checked here, so a size larger
    than a circuit fails before anything is generated.

    Example:
        >>> from workbench.circuit import Circuit
        >>> shape = {"name": "m", "architecture": "A", "n_layers": 2, "d_mlp": 16}
        >>> c = Circuit.from_neurons([(0, 1, 3.0), (1, 2, -5.0), (1, 4, 1.0)], model=shape)
        >>> [(i.name, k, m) for i, k, m in sized_conditions(
        ...     [Intervention.baseline(), Intervention.cna(c)], [0], sizes=[1, 3])]
        [('baseline', None, 1.0), ('cna', 1, 0.0), ('cna', 3, 0.0)]
    """
    if sizes is not None and not isinstance(sizes, (str, bytes)):
        sizes = list(sizes)
    if sizes is not None and (isinstance(sizes, (str, bytes)) or not sizes):
        raise InvalidArgumentError(
            f"sizes must be a non-empty list of neuron counts (ints) or fractions of all MLP "
            f"neurons (floats), e.g. [0.001, 0.005], not {sizes!r}")
    multipliers_of: dict[str, tuple[Intervention, list[float]]] = {}
    for intervention, multiplier in conditions(interventions, multipliers):
        multipliers_of.setdefault(intervention.name, (intervention, []))[1].append(multiplier)
    triples = []
    for intervention, values in multipliers_of.values():
        for resized, size in _at_sizes(intervention, sizes):
            triples += [(resized, size, multiplier) for multiplier in values]
    return triples


def _at_sizes(intervention: Intervention, sizes: Sequence[Size] | None,
              ) -> list[tuple[Intervention, int | None]]:
    if sizes is None or not intervention.sized:
        return [(intervention, None)]
    resized: dict[int, Intervention] = {}
    for size in sizes:
        cut = intervention.at_size(size)
        count = cut.size()
        assert count is not None  # a sized kind
        resized.setdefault(count, cut)  # 0.001 and 46 may name the same count
    return [(cut, count) for count, cut in resized.items()]


def sweep(model: WorkbenchModel, interventions: Sequence[Intervention],
          multipliers: Sequence[float], benchmarks: Sequence[str | PromptSet], *,
          metrics: Sequence[str] = METRICS, sizes: Sequence[Size] | None = None,
          max_new_tokens: int = EVALUATION_MAX_NEW_TOKENS,
          batch_size: int = EVALUATION_BATCH_SIZE, out: str | Path | None = None,
          progress: bool = True, drift: HarmlessDrift | None = None,
          **generate_kwargs) -> pd.DataFrame:
    """Generate and score completions for every condition; resume from ``out`` if present.

    Args:
        interventions: e.g. ``[Intervention.baseline(), Intervention.cna(circuit),
            Intervention.caa(vector), Intervention.random(circuit)]``.
        multipliers: shared strength axis (1 = unchanged; see
            :mod:`workbench.evaluation.interventions`).
        benchmarks: benchmark names (see :func:`load_benchmark`) or PromptSets.
        metrics: any of ``"refusal"`` (plus the matched phrase), ``"quality"`` and
            ``"kl"``: the condition's KL divergence on harmless prompts (nats, the same
            value on each of its rows; 0 for the baseline), which sees broken text that
            the repetition score rates fluent. Rows resumed without it get it filled in.
        drift: the harmless-prompt reference for ``"kl"`` (built with defaults when None;
            pass one to share it between sweeps).
        sizes: circuit sizes to sweep (ints: neuron counts; floats: fractions of all MLP
            neurons, e.g. ``[0.001, 0.005, 0.01, 0.02]``); each CNA intervention runs at
            every size as a prefix of its circuit, each random control is re-drawn (same
            seed) at every size. None: circuits run at their full size, no size columns.
        out: parquet file written after every batch and read back to resume. A sweep
            with sizes resumes only from a file written with sizes, and one without only
            from a file without.

    Returns:
        DataFrame with columns benchmark, intervention, kind, [size, fraction,]
        multiplier, strength, prompt_index, prompt, completion and one column per metric.
        ``size`` (nullable int) and ``fraction`` (of all MLP neurons) come with
        ``sizes``; they are empty for interventions without a circuit.
    """
    unknown = sorted(set(metrics) - set(ALL_METRICS))
    if unknown:
        raise InvalidArgumentError(f"unknown metrics {unknown}; choose from {ALL_METRICS}")
    runs = sized_conditions(interventions, multipliers, sizes)  # checks every size first
    # Names are prompt benchmarks here: MMLU is scored by mmlu(), not by sweeps.
    sets = [b if isinstance(b, PromptSet) else cast(PromptSet, load_benchmark(b))
            for b in benchmarks]
    key = KEY if sizes is None else SIZE_KEY
    done = _read(out)
    _check_same_prompts(done, sets, out)
    _check_same_axes(done, sizes is not None, out)
    finished = _keys(done, key)
    kl = _Drifts(model, drift) if "kl" in metrics else None
    if kl is not None and len(done) and kl.fill(done, runs, sized=sizes is not None) \
            and out is not None:
        _write(done, out)
    frames = [done] if len(done) else []
    total = sum(len(s) for s in sets) * len(runs)
    with tqdm(total=total, initial=len(finished), desc="sweep", unit="completion",
              disable=not progress) as bar:
        for prompts in sets:
            for intervention, size, multiplier in runs:
                ident = ((prompts.name, intervention.name, multiplier) if sizes is None
                         else (prompts.name, intervention.name, size, multiplier))
                todo = [i for i in range(len(prompts)) if ident + (i,) not in finished]
                for start in range(0, len(todo), batch_size):
                    rows = todo[start:start + batch_size]
                    texts = [prompts.prompts[i] for i in rows]
                    with intervention.apply(model, multiplier):
                        completions = generate(model, texts, max_new_tokens=max_new_tokens,
                                               batch_size=batch_size, **generate_kwargs)
                    frame = pd.DataFrame({
                        "benchmark": prompts.name, "intervention": intervention.name,
                        "kind": intervention.kind, "multiplier": multiplier,
                        "strength": intervention.strength(multiplier), "prompt_index": rows,
                        "prompt": texts, "completion": completions,
                    })
                    if sizes is not None:
                        _add_size(frame, intervention, size)
                    _score(frame, metrics)
                    if kl is not None:
                        frame["kl"] = kl.of(intervention, size, multiplier)
                    frames.append(frame)
                    if out is not None:
                        _write(pd.concat(frames, ignore_index=True), out)
                    bar.update(len(rows))
    if not frames:
        return pd.DataFrame(columns=key)
    return pd.concat(frames, ignore_index=True)


class _Drifts:
    """The KL of each condition of a sweep, measured once (the reference built lazily)."""

    def __init__(self, model: WorkbenchModel, drift: HarmlessDrift | None) -> None:
        self.model = model
        self.drift = drift
        self.values: dict[tuple, float] = {}

    def of(self, intervention: Intervention, size: int | None, multiplier: float) -> float:
        key = (intervention.name, size, multiplier)
        if key not in self.values:
            if intervention.runs_once or multiplier == 1.0:
                self.values[key] = 0.0  # the unchanged model
            else:
                if self.drift is None:
                    self.drift = HarmlessDrift(self.model)
                with intervention.apply(self.model, multiplier):
                    self.values[key] = self.drift.kl()
        return self.values[key]

    def fill(self, done: pd.DataFrame, runs: Sequence[tuple[Intervention, int | None, float]],
             *, sized: bool) -> bool:
        """Add the KL of resumed rows that lack it (a file written without ``"kl"``);
        whether any did."""
        if "kl" not in done.columns:
            done["kl"] = float("nan")
        missing = bool(done["kl"].isna().any())
        for intervention, size, multiplier in runs:
            rows = ((done["intervention"] == intervention.name)
                    & (done["multiplier"] == multiplier) & done["kl"].isna())
            if sized:
                rows &= (done["size"] == size) if size is not None else done["size"].isna()
            if rows.any():
                done.loc[rows, "kl"] = self.of(intervention, size, multiplier)
        return missing


def _add_size(frame: pd.DataFrame, intervention: Intervention, size: int | None) -> None:
    """Insert ``size`` (neurons) and ``fraction`` (of all MLP neurons) after ``kind``."""
    n = len(frame)
    fraction = float("nan")
    if size is not None:
        fraction = intervention.fraction_of_model() or float("nan")
    frame.insert(3, "size", pd.array([size] * n, dtype="Int64"))
    frame.insert(4, "fraction", [fraction] * n)


def _keys(done: pd.DataFrame, key: Sequence[str]) -> set[tuple]:
    """The finished rows' keys, with missing values (an empty size) as None."""
    if not len(done):
        return set()
    values = done[list(key)].astype(object)
    values = values.where(values.notna(), None)
    return set(map(tuple, values.itertuples(index=False)))


def _check_same_axes(done: pd.DataFrame, sized: bool, out) -> None:
    """Refuse to resume a sweep with sizes from one without them, or the other way round."""
    if not len(done) or ("size" in done.columns) == sized:
        return
    if sized:
        raise InvalidArgumentError(
            f"{out} holds a sweep without circuit sizes, so its rows cannot be matched to "
            "sizes; write the size sweep to a new file")
    raise InvalidArgumentError(
        f"{out} holds a sweep over circuit sizes; pass the same sizes= to resume it, or "
        "write to a new file")


def _check_same_prompts(done: pd.DataFrame, sets: Sequence[PromptSet], out) -> None:
    """Refuse to resume from a file whose rows hold other prompts under the same names."""
    if not len(done):
        return
    for prompts in sets:
        stored = done[done["benchmark"] == prompts.name]
        for index, text in zip(stored["prompt_index"], stored["prompt"]):
            if index >= len(prompts) or prompts.prompts[index] != text:
                raise InvalidArgumentError(
                    f"{out} holds results for other prompts under the name {prompts.name!r} "
                    f"(row {index} differs); write to a new file or rename the prompt set")


def _score(frame: pd.DataFrame, metrics: Sequence[str]) -> None:
    if "refusal" in metrics:
        frame["refusal"] = frame["completion"].map(is_refusal)
        frame["refusal_match"] = frame["completion"].map(refusal_match)
    if "quality" in metrics:
        frame["quality"] = frame["completion"].map(quality)


def summary(results: pd.DataFrame) -> pd.DataFrame:
    """One row per condition: n, refusal rate, mean quality and KL (where measured).

    A sweep over sizes keeps its ``size`` and ``fraction`` columns (empty for
    size-free interventions) and has one row per size too.
    """
    sized = "size" in results
    axes = ["size", "fraction"] if sized else []
    group = ["benchmark", "intervention", "kind", *axes, "multiplier", "strength"]
    aggregations = {"n": ("completion", "size")}
    if "refusal" in results:
        aggregations["refusal_rate"] = ("refusal", "mean")
    if "quality" in results:
        aggregations["quality"] = ("quality", "mean")
    if "kl" in results:
        aggregations["kl"] = ("kl", "mean")
    order = ["benchmark", "kind", "intervention", *axes[:1], "multiplier"]
    return (results.groupby(group, sort=False, dropna=False).agg(**aggregations).reset_index()
            .sort_values(order, key=lambda c: c.map(_KIND_ORDER) if c.name == "kind" else c)
            .reset_index(drop=True))


_KIND_ORDER = {"baseline": 0, "cna": 1, "random": 2, "caa": 3, "direction": 4}


def _read(out: str | Path | None) -> pd.DataFrame:
    """The rows already in ``out``, checked; refuses an unwritable ``out`` before any work."""
    if out is None:
        return pd.DataFrame(columns=KEY)
    check_output(out, existing="keep")  # a resume file: an existing one is read, not replaced
    if not Path(out).is_file():
        return pd.DataFrame(columns=KEY)
    return read_results(out)


def _write(frame: pd.DataFrame, out: str | Path) -> None:
    atomic_write_bytes(Path(out), frame.to_parquet(index=False))
