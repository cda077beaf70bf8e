"""Sweeps: completions and metrics for every intervention x multiplier x benchmark.

One row per prompt and condition, completion text included. With ``out=`` the rows are
written to a parquet file as each batch finishes; running the same sweep again reads that
file and only generates what is missing, so an interrupted sweep resumes where it stopped.

Example:
    >>> from workbench.evaluation import Intervention, sweep, summary     # doctest: +SKIP
    >>> rows = sweep(model, [Intervention.baseline(), Intervention.cna(circuit),
    ...                      Intervention.random(circuit, seed=0)],
    ...              multipliers=[0, 1, 2], benchmarks=["jbb-harmful"],
    ...              out="results.parquet")                               # doctest: +SKIP
    >>> summary(rows)                                                     # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd
from tqdm.auto import tqdm

from ..errors import InvalidArgumentError
from ..io import atomic_write_bytes
from ..models import WorkbenchModel
from ..prompts import PromptSet
from ..steering import check_multiplier, generate
from .benchmarks import load_benchmark
from .interventions import Intervention
from .quality import quality
from .refusal import is_refusal, refusal_match

METRICS = ("refusal", "quality")
KEY = ["benchmark", "intervention", "multiplier", "prompt_index"]


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
        for m in ([1.0] if intervention.kind == "baseline" else values):
            pairs.append((intervention, m))
    return pairs


def sweep(model: WorkbenchModel, interventions: Sequence[Intervention],
          multipliers: Sequence[float], benchmarks: Sequence[str | PromptSet], *,
          metrics: Sequence[str] = METRICS, max_new_tokens: int = 64, batch_size: int = 32,
          out: str | Path | None = None, progress: bool = True, **generate_kwargs,
          ) -> pd.DataFrame:
    """Generate and score completions for every condition; resume from ``out`` if present.

    Args:
        interventions: e.g. ``[Intervention.baseline(), Intervention.cna(circuit),
            Intervention.caa(vector), Intervention.random(circuit)]``.
        multipliers: shared strength axis (1 = unchanged; see
            :mod:`workbench.evaluation.interventions`).
        benchmarks: benchmark names (see :func:`load_benchmark`) or PromptSets.
        metrics: any of ``"refusal"`` (plus the matched phrase) and ``"quality"``.
        out: parquet file written after every batch and read back to resume.

    Returns:
        DataFrame with columns benchmark, intervention, kind, multiplier, strength,
        prompt_index, prompt, completion and one column per metric.
    """
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise InvalidArgumentError(f"unknown metrics {unknown}; choose from {METRICS}")
    sets = [b if isinstance(b, PromptSet) else load_benchmark(b) for b in benchmarks]
    pairs = conditions(interventions, multipliers)
    done = _read(out)
    _check_same_prompts(done, sets, out)
    finished = set(map(tuple, done[KEY].itertuples(index=False))) if len(done) else set()
    frames = [done] if len(done) else []
    total = sum(len(s) for s in sets) * len(pairs)
    with tqdm(total=total, initial=len(finished), desc="sweep", unit="completion",
              disable=not progress) as bar:
        for prompts in sets:
            for intervention, multiplier in pairs:
                todo = [i for i in range(len(prompts))
                        if (prompts.name, intervention.name, multiplier, i) not in finished]
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
                    _score(frame, metrics)
                    frames.append(frame)
                    if out is not None:
                        _write(pd.concat(frames, ignore_index=True), out)
                    bar.update(len(rows))
    if not frames:
        return pd.DataFrame(columns=KEY)
    return pd.concat(frames, ignore_index=True)


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
    """One row per condition: n, refusal rate and mean quality (where measured)."""
    group = ["benchmark", "intervention", "kind", "multiplier", "strength"]
    aggregations = {"n": ("completion", "size")}
    if "refusal" in results:
        aggregations["refusal_rate"] = ("refusal", "mean")
    if "quality" in results:
        aggregations["quality"] = ("quality", "mean")
    return (results.groupby(group, sort=False).agg(**aggregations).reset_index()
            .sort_values(["benchmark", "kind", "intervention", "multiplier"],
                         key=lambda c: c.map(_KIND_ORDER) if c.name == "kind" else c)
            .reset_index(drop=True))


_KIND_ORDER = {"baseline": 0, "cna": 1, "random": 2, "caa": 3}


def _read(out: str | Path | None) -> pd.DataFrame:
    if out is None or not Path(out).is_file():
        return pd.DataFrame(columns=KEY)
    return pd.read_parquet(out)


def _write(frame: pd.DataFrame, out: str | Path) -> None:
    atomic_write_bytes(Path(out), frame.to_parquet(index=False))
