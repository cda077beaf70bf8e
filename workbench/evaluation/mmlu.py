"""MMLU accuracy, zero- or few-shot, by comparing the next-token logits of A, B, C and D.

Prompts follow the usual MMLU format (Hendrycks et al.; lm-evaluation-harness)::

    The following are multiple choice questions (with answers) about abstract algebra.

    <k dev exemplars of the same subject, each ending "Answer: X">

    <question>
    A. ...
    B. ...
    C. ...
    D. ...
    Answer:

The prediction is the letter whose token (" A", " B", ...) has the highest logit at the
last position. Prompts are fed raw (no chat template) by default, as in the paper's
harness; pass ``chat_template=True`` to wrap them.

Example:
    >>> result = mmlu(model, n=500, shots=0)                       # doctest: +SKIP
    >>> result.accuracy, result.seconds                           # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..config import MMLU_BATCH_SIZE
from ..errors import InvalidArgumentError
from ..locks import model_lock
from ..models import WorkbenchModel
from ..prompts import ChatTemplateChoice
from .benchmarks import MMLUQuestion, load_benchmark

LETTERS = ("A", "B", "C", "D")


@dataclass
class MMLUResult:
    """Accuracy and per-question predictions of one MMLU run."""

    accuracy: float
    n: int
    shots: int
    seconds: float
    rows: pd.DataFrame

    def by_subject(self) -> pd.DataFrame:
        """Accuracy per subject, sorted by subject."""
        return (self.rows.groupby("subject")["correct"].agg(["mean", "count"])
                .rename(columns={"mean": "accuracy", "count": "n"}))


def format_question(question: MMLUQuestion, with_answer: bool = False) -> str:
    """One question in MMLU format, optionally followed by its answer letter."""
    lines = [question.question.strip()]
    lines += [f"{letter}. {choice}" for letter, choice in zip(LETTERS, question.choices)]
    answer = f" {LETTERS[question.answer]}" if with_answer else ""
    return "\n".join(lines) + f"\nAnswer:{answer}"


def build_prompt(question: MMLUQuestion, exemplars: Sequence[MMLUQuestion]) -> str:
    """The full prompt: header, few-shot exemplars with answers, then the question."""
    subject = question.subject.replace("_", " ")
    header = f"The following are multiple choice questions (with answers) about {subject}.\n\n"
    shots = "".join(format_question(e, with_answer=True) + "\n\n" for e in exemplars)
    return header + shots + format_question(question)


def letter_token_ids(tokenizer) -> list[int]:
    """Token ids of " A" .. " D" (each must be a single token)."""
    ids = []
    for letter in LETTERS:
        tokens = tokenizer.encode(f" {letter}", add_special_tokens=False)
        if len(tokens) != 1:
            tokens = tokenizer.encode(letter, add_special_tokens=False)
        if len(tokens) != 1:
            raise InvalidArgumentError(
                f"the tokenizer splits the answer letter {letter!r} into {len(tokens)} tokens; "
                "MMLU scoring by next-token logits needs single-token letters")
        ids.append(tokens[0])
    return ids


def mmlu(model: WorkbenchModel, *, n: int | None = 500, shots: int = 0, seed: int = 0,
         subjects: Sequence[str] | None = None,
         intervention: contextlib.AbstractContextManager | None = None,
         batch_size: int = MMLU_BATCH_SIZE, chat_template: ChatTemplateChoice = False,
         progress: bool = True) -> MMLUResult:
    """MMLU accuracy of ``model`` on a fixed seeded sample of test questions.

    Args:
        n: questions to sample (seeded; None = all 14,042).
        shots: 0 to 5 exemplars per question, taken from the dev split of the same subject.
        subjects: restrict to these subjects.
        intervention: a context manager active during scoring, e.g.
            ``steer(model, circuit, multiplier=0)`` or
            ``Intervention.caa(v).apply(model, 0.0)``.
        chat_template: ``False`` (default, raw prompts), ``True`` or ``"auto"``.
    """
    model.require_local("MMLU scoring")
    if isinstance(shots, bool) or not isinstance(shots, int) or not 0 <= shots <= 5:
        raise InvalidArgumentError(f"shots must be an integer from 0 to 5, not {shots!r}")
    questions = load_benchmark("mmlu", split="test", n=n, seed=seed, subjects=subjects)
    dev: dict[str, list[MMLUQuestion]] = {}
    for exemplar in load_benchmark("mmlu", split="dev"):
        dev.setdefault(exemplar.subject, []).append(exemplar)
    prompts = [build_prompt(q, dev.get(q.subject, [])[:shots]) for q in questions]
    prompting = model.prompting(chat_template)
    letters = torch.tensor(letter_token_ids(model.tokenizer))
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))
    predicted = [0] * len(prompts)
    started = time.perf_counter()
    with model_lock(model), intervention or contextlib.nullcontext(), torch.no_grad():
        for start in tqdm(range(0, len(order), batch_size), disable=not progress,
                          desc=f"MMLU {shots}-shot", unit="batch", leave=False):
            rows = order[start:start + batch_size]
            inputs = model.encode([prompts[i] for i in rows], prompting)
            logits = model.hf_model(**inputs, **model.last_position_only()).logits[:, -1, :]
            choice = logits[:, letters.to(logits.device)].argmax(dim=-1)  # logits: [batch, vocab]
            for row, value in zip(rows, choice.tolist()):
                predicted[row] = value
    seconds = time.perf_counter() - started
    table = pd.DataFrame({
        "subject": [q.subject for q in questions],
        "answer": [LETTERS[q.answer] for q in questions],
        "predicted": [LETTERS[p] for p in predicted],
    })
    table["correct"] = table["answer"] == table["predicted"]
    return MMLUResult(accuracy=float(table["correct"].mean()), n=len(table), shots=shots,
                      seconds=seconds, rows=table)
