"""Benchmark data shipped with the package: one loader, deterministic sub-sampling.

| name | rows | what |
|---|---|---|
| ``jbb-harmful`` / ``jbb-benign`` | 100 / 100 | JBB-Behaviors, paired by index |
| ``advbench`` | 520 | AdvBench harmful behaviours |
| ``strongreject`` | 313 | StrongREJECT forbidden prompts (with ``category`` metadata) |
| ``mmlu`` | 14,042 test / 285 dev | MMLU questions (returns :class:`MMLUQuestion` rows) |

Splits: ``split="discover"`` and ``split="heldout"`` cut a prompt benchmark into two fixed
halves by a seeded permutation of row indices. Both JBB files have the same rows in the
same order, so the same seed puts each harmful behaviour and its benign twin in the same
half. For MMLU, ``split`` is ``"test"`` (default) or ``"dev"`` (the few-shot exemplars).

Example:
    >>> from workbench.evaluation.benchmarks import load_benchmark
    >>> held_out = load_benchmark("jbb-harmful", split="heldout")
    >>> len(held_out), len(load_benchmark("jbb-harmful", n=10, seed=1))
    (50, 10)
    >>> load_benchmark("mmlu", n=3)[0].subject
    'human_aging'
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, overload

from ..errors import InvalidArgumentError
from ..prompts import PromptSet, bundled_dir

#: The names of the benchmarks that load as a :class:`PromptSet`.
PromptBenchmark = Literal["jbb-harmful", "jbb-benign", "advbench", "strongreject"]
PROMPT_BENCHMARKS: tuple[PromptBenchmark, ...] = ("jbb-harmful", "jbb-benign", "advbench",
                                                  "strongreject")
BENCHMARKS = PROMPT_BENCHMARKS + ("mmlu",)
PROMPT_SPLITS = ("discover", "heldout")
MMLU_SPLITS = ("test", "dev")


@dataclass(frozen=True)
class MMLUQuestion:
    """One MMLU item; ``answer`` is the index (0-3) of the right choice."""

    subject: str
    question: str
    choices: tuple[str, str, str, str]
    answer: int


@overload
def load_benchmark(name: PromptBenchmark, split: str | None = None, n: int | None = None,
                   seed: int = 0, subjects: None = None) -> PromptSet: ...


@overload  # a half: only prompt benchmarks have them
def load_benchmark(name: str, split: Literal["discover", "heldout"], n: int | None = None,
                   seed: int = 0, subjects: None = None) -> PromptSet: ...


@overload
def load_benchmark(name: Literal["mmlu"], split: Literal["test", "dev"] | None = None,
                   n: int | None = None, seed: int = 0,
                   subjects: Sequence[str] | None = None) -> list[MMLUQuestion]: ...


@overload
def load_benchmark(name: str, split: str | None = None, n: int | None = None, seed: int = 0,
                   subjects: Sequence[str] | None = None) -> PromptSet | list[MMLUQuestion]: ...


def load_benchmark(name: str, split: str | None = None, n: int | None = None, seed: int = 0,
                   subjects: Sequence[str] | None = None) -> PromptSet | list[MMLUQuestion]:
    """Load a bundled benchmark, optionally one half of it and a seeded sample of ``n`` rows.

    Args:
        name: one of :data:`BENCHMARKS`.
        split: for prompt benchmarks ``None`` (all), ``"discover"`` or ``"heldout"``;
            for ``"mmlu"``, ``"test"`` (default) or ``"dev"``.
        n: keep a random sample of ``n`` rows (in original order); None keeps all.
        seed: seed of the sample (the halves always use seed 0, so they never overlap).
        subjects: MMLU only: keep these subjects.
    """
    if name == "mmlu":
        return _mmlu(split or "test", n, seed, subjects)
    if name not in PROMPT_BENCHMARKS:
        raise InvalidArgumentError(f"unknown benchmark {name!r}; choose one of {BENCHMARKS}")
    if subjects is not None:
        raise InvalidArgumentError("subjects= only applies to the mmlu benchmark")
    prompts = PromptSet.bundled(name)
    indices = list(range(len(prompts)))
    label: str = name
    if split is not None:
        if split not in PROMPT_SPLITS:
            raise InvalidArgumentError(f"split must be one of {PROMPT_SPLITS} or None, "
                                       f"not {split!r}")
        indices = half(len(prompts), split)
        label = f"{name}:{split}"
    if n is not None:
        indices = _sample(indices, n, seed, label)
        label = f"{label}[n={n},seed={seed}]"
    rows = prompts.metadata.get("rows")
    return PromptSet(label, [prompts.prompts[i] for i in indices],
                     {"benchmark": name, "split": split, "seed": seed, "indices": indices,
                      "rows": [rows[i] for i in indices] if rows else None})


def half(n_rows: int, split: str) -> list[int]:
    """Row indices of one fixed half (``"discover"`` or ``"heldout"``), in ascending order."""
    order = list(range(n_rows))
    random.Random(0).shuffle(order)
    cut = n_rows // 2
    return sorted(order[:cut] if split == "discover" else order[cut:])


def _sample(indices: list[int], n: int, seed: int, label: str) -> list[int]:
    if isinstance(n, bool) or not isinstance(n, int) or not 0 < n <= len(indices):
        raise InvalidArgumentError(f"n must be an integer in 1..{len(indices)} for {label}, "
                                   f"not {n!r}")
    return sorted(random.Random(seed).sample(indices, n))


@lru_cache(maxsize=2)
def _mmlu_rows(split: str) -> tuple[MMLUQuestion, ...]:
    path = bundled_dir() / f"mmlu_{split}.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return tuple(MMLUQuestion(row["subject"], row["question"], tuple(row["choices"]),
                                  int(row["answer"]))
                     for row in map(json.loads, handle))


def mmlu_subjects() -> list[str]:
    """The 57 MMLU subjects."""
    return sorted({q.subject for q in _mmlu_rows("dev")})


def _mmlu(split: str, n: int | None, seed: int,
          subjects: Sequence[str] | None) -> list[MMLUQuestion]:
    if split not in MMLU_SPLITS:
        raise InvalidArgumentError(f"mmlu split must be one of {MMLU_SPLITS}, not {split!r}")
    rows = list(_mmlu_rows(split))
    if isinstance(subjects, str):
        subjects = [subjects]
    if subjects is not None:
        unknown = sorted(set(subjects) - set(mmlu_subjects()))
        if unknown:
            raise InvalidArgumentError(f"unknown MMLU subjects {unknown}; see mmlu_subjects()")
        rows = [q for q in rows if q.subject in set(subjects)]
    if n is not None:
        rows = [rows[i] for i in _sample(list(range(len(rows))), n, seed, "mmlu")]
    return rows
