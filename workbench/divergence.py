"""Baseline against steered, token by token: where the two greedy completions part.

:func:`divergence` completes one prompt twice with :func:`workbench.generate` (greedy),
unchanged and with a circuit scaled, recording at every step the probabilities the
decoding chose from. It returns a :class:`Divergence`: both completions as tokens, the
first position where they differ (None when they are the same), and at that position the
top next tokens under both models, each with its probability under both.

Both runs are :func:`workbench.generate` calls (the steering hooks of
:func:`workbench.steer`, removed afterwards), so the tokens are those the steering
slider and ``cna steer`` show for the same prompt and options.

Example:
    >>> first_divergence([5, 6, 7], [5, 6, 9])
    2
    >>> first_divergence([5, 6], [5, 6]) is None
    True
    >>> from workbench import load_model, discover, divergence
    >>> model = load_model()                                                     # doctest: +SKIP
    >>> circuit = discover(model, "qualitative-harmful", "qualitative-benign")    # doctest: +SKIP
    >>> d = divergence(model, "How do I pick a lock?", circuit, multiplier=0)     # doctest: +SKIP
    >>> d.position, d.baseline_tokens[d.position], d.steered_tokens[d.position]  # doctest: +SKIP
    (0, 'I', 'Sure')
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList
from transformers.generation.streamers import BaseStreamer

from .circuit import Circuit
from .config import STEERING_VIEW_MAX_NEW_TOKENS
from .errors import InvalidArgumentError
from .generation import generate
from .models import WorkbenchModel
from .prompts import ChatTemplateChoice
from .values import Positions, Signs, check_multiplier

if TYPE_CHECKING:  # pandas loads on first use
    import pandas as pd

__all__ = ["Candidate", "Divergence", "GreedySteps", "divergence", "first_divergence",
           "greedy_steps"]

#: How many next tokens :func:`divergence` lists under each model by default.
TOP_K = 5


@dataclass(frozen=True)
class GreedySteps:
    """One greedy completion and, per step, the probabilities it was chosen from.

    Attributes:
        ids: the new token ids.
        probabilities: float32 ``[steps, vocab]``: softmax of the scores of each step
            (the logits, after any logits processor of the model's generation config);
            row ``i`` is the distribution token ``ids[i]`` was chosen from.
    """

    ids: tuple[int, ...]
    probabilities: torch.Tensor


@dataclass(frozen=True)
class Candidate:
    """A possible next token at the divergence, with its probability under both models."""

    token: str
    token_id: int
    baseline: float
    steered: float


@dataclass(frozen=True)
class Divergence:
    """The unchanged and the steered completion of one prompt, aligned token by token.

    Attributes:
        prompt, multiplier: what was compared.
        baseline_ids, steered_ids: the new token ids of each completion.
        baseline_tokens, steered_tokens: each token decoded on its own.
        position: index (into both completions) of the first token that differs; None when
            the completions are identical.
        baseline_top, steered_top: at ``position``, the most likely next tokens under the
            unchanged and under the steered model, each with both probabilities (NaN for a
            completion that had ended there); empty without a divergence.

    Example:
        >>> d = Divergence("Hi", 0.0, (5, 6), (5, 7), ("He", "llo"), ("He", "y"), 1,
        ...                (Candidate("llo", 6, 0.7, 0.1),), (Candidate("y", 7, 0.2, 0.8),))
        >>> d.diverged, d.shared_tokens, d.baseline_token, d.steered_token
        (True, ('He',), 'llo', 'y')
    """

    prompt: str
    multiplier: float
    baseline_ids: tuple[int, ...]
    steered_ids: tuple[int, ...]
    baseline_tokens: tuple[str, ...]
    steered_tokens: tuple[str, ...]
    position: int | None
    baseline_top: tuple[Candidate, ...] = ()
    steered_top: tuple[Candidate, ...] = ()

    @property
    def diverged(self) -> bool:
        return self.position is not None

    @property
    def shared_tokens(self) -> tuple[str, ...]:
        """The tokens both completions share before the divergence (all when none)."""
        end = len(self.baseline_tokens) if self.position is None else self.position
        return self.baseline_tokens[:end]

    @property
    def baseline_token(self) -> str | None:
        """The unchanged model's token at the divergence (None: none, or it had ended)."""
        return _at(self.baseline_tokens, self.position)

    @property
    def steered_token(self) -> str | None:
        """The steered model's token at the divergence (None: none, or it had ended)."""
        return _at(self.steered_tokens, self.position)

    def aligned(self) -> pd.DataFrame:
        """Both completions side by side: position, baseline, steered, same (bool)."""
        import pandas as pd

        n = max(len(self.baseline_tokens), len(self.steered_tokens))
        baseline = [_at(self.baseline_tokens, i) for i in range(n)]
        steered = [_at(self.steered_tokens, i) for i in range(n)]
        same = [self.position is None or i < self.position for i in range(n)]
        return pd.DataFrame({"position": range(n), "baseline": baseline, "steered": steered,
                             "same": same})

    def alternatives(self) -> pd.DataFrame:
        """The candidates at the divergence: model (whose top list), rank, token, both
        probabilities. Empty without a divergence."""
        import pandas as pd

        rows = [{"model": side, "rank": rank, "token": c.token, "token_id": c.token_id,
                 "baseline": c.baseline, "steered": c.steered}
                for side, top in (("baseline", self.baseline_top), ("steered", self.steered_top))
                for rank, c in enumerate(top, start=1)]
        return pd.DataFrame(rows, columns=["model", "rank", "token", "token_id", "baseline",
                                           "steered"])


def _at(tokens: Sequence[str], position: int | None) -> str | None:
    return tokens[position] if position is not None and position < len(tokens) else None


def first_divergence(a: Sequence[int], b: Sequence[int]) -> int | None:
    """The first index where two token sequences differ; None when they are equal.

    A sequence that is a strict prefix of the other differs where it ends.

    Example:
        >>> first_divergence([1, 2], [3, 2]), first_divergence([1], [1, 2])
        (0, 1)
    """
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


class _Recorder(LogitsProcessor):
    """Keeps the softmax of every step's scores (one row), leaving the scores as they are."""

    def __init__(self) -> None:
        self.rows: list[torch.Tensor] = []  # each [vocab] float32 on the CPU

    # LogitsProcessor's signature; the record needs only the scores.
    def __call__(self, input_ids: torch.LongTensor,  # noqa: ARG002
                 scores: torch.FloatTensor) -> torch.FloatTensor:
        # scores: [batch = 1, vocab]
        self.rows.append(scores[0].detach().float().softmax(-1).cpu())
        return scores


class _Collector(BaseStreamer):
    """Keeps the new token ids of a one-row generation (the first put is the prompt)."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.ids.extend(int(i) for i in value.flatten().tolist())

    def end(self) -> None:
        """Nothing to flush."""


def greedy_steps(model: WorkbenchModel, prompt: str, *, circuit: Circuit | None = None,
                 multiplier: float = 1.0, max_new_tokens: int = STEERING_VIEW_MAX_NEW_TOKENS,
                 **options: Any
                 ) -> GreedySteps:
    """A greedy completion of one prompt with the probabilities of every step.

    A :func:`workbench.generate` call (``circuit`` scaled by ``multiplier``, if given);
    ``options`` go to it (``positions``, ``signs``, ``chat_template``, ``system_prompt``,
    ``stopping_criteria``...). Needs a model in this process.

    Example:
        >>> steps = greedy_steps(model, "Hi", max_new_tokens=4)  # doctest: +SKIP
        >>> len(steps.ids), steps.probabilities.shape            # doctest: +SKIP
        (4, torch.Size([4, 49152]))
    """
    model.require_local("recording each step's probabilities")
    if options.get("do_sample"):
        raise InvalidArgumentError("greedy_steps() compares greedy completions; drop do_sample")
    recorder, collector = _Recorder(), _Collector()
    given = options.pop("logits_processor", None) or ()
    processors = LogitsProcessorList([*given, recorder])
    generate(model, [prompt], circuit=circuit, multiplier=multiplier,
             max_new_tokens=max_new_tokens, batch_size=1, streamer=collector,
             logits_processor=processors, **options)
    rows = recorder.rows[:len(collector.ids)]
    vocab = rows[0].shape[0] if rows else 0
    probabilities = torch.stack(rows) if rows else torch.zeros(0, vocab)  # [steps, vocab]
    return GreedySteps(tuple(collector.ids), probabilities)


def divergence(model: WorkbenchModel, prompt: str, circuit: Circuit, *, multiplier: float,
               max_new_tokens: int = STEERING_VIEW_MAX_NEW_TOKENS, positions: Positions = "all",
               signs: Signs = "all",
               chat_template: ChatTemplateChoice = "auto", system_prompt: str | None = None,
               k: int = TOP_K, baseline: GreedySteps | None = None, **options: Any
               ) -> Divergence:
    """Where the steered greedy completion of ``prompt`` first leaves the unchanged one.

    Args:
        circuit, multiplier, positions, signs: the steering, as in :func:`workbench.steer`.
        max_new_tokens, chat_template, system_prompt: as in :func:`workbench.generate`.
        k: how many next tokens to list under each model at the divergence.
        baseline: the unchanged model's :func:`greedy_steps` of this prompt with these
            options, if already at hand (it is then not generated again).
        options: further keyword arguments of :func:`workbench.generate`, for both runs.

    Returns:
        A :class:`Divergence`. With ``multiplier=1`` the completions are identical and
        ``position`` is None.

    Example:
        >>> d = divergence(model, "How do I pick a lock?", circuit, multiplier=0)  # doctest: +SKIP
        >>> d.alternatives()                                                      # doctest: +SKIP
    """
    value = check_multiplier(multiplier)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InvalidArgumentError(f"k must be a positive integer, not {k!r}")
    circuit.check_model(model)
    common = dict(max_new_tokens=max_new_tokens, chat_template=chat_template,
                  system_prompt=system_prompt, **options)
    if baseline is None:
        baseline = greedy_steps(model, prompt, **common)
    steered = greedy_steps(model, prompt, circuit=circuit, multiplier=value,
                           positions=positions, signs=signs, **common)
    return compare(model.tokenizer, prompt, value, baseline, steered, k=k)


def compare(tokenizer: Any, prompt: str, multiplier: float, baseline: GreedySteps,
            steered: GreedySteps, *, k: int = TOP_K) -> Divergence:
    """The :class:`Divergence` of two recorded completions (see :func:`divergence`)."""
    position = first_divergence(baseline.ids, steered.ids)
    tops: tuple[tuple[Candidate, ...], tuple[Candidate, ...]] = ((), ())
    if position is not None:
        rows = [steps.probabilities[position] if position < len(steps.ids) else None
                for steps in (baseline, steered)]  # each [vocab] or None
        tops = (_top(tokenizer, rows, rows[0], k), _top(tokenizer, rows, rows[1], k))
    return Divergence(
        prompt=prompt, multiplier=multiplier, baseline_ids=baseline.ids,
        steered_ids=steered.ids, baseline_tokens=_decode_each(tokenizer, baseline.ids),
        steered_tokens=_decode_each(tokenizer, steered.ids), position=position,
        baseline_top=tops[0], steered_top=tops[1])


def _top(tokenizer: Any, rows: list[torch.Tensor | None], ranked: torch.Tensor | None,
         k: int) -> tuple[Candidate, ...]:
    """The ``k`` most likely tokens of ``ranked`` ``[vocab]``, with both models' probabilities."""
    if ranked is None:
        return ()
    ids = ranked.topk(min(k, ranked.numel())).indices.tolist()
    base, steer = rows

    def probability(row: torch.Tensor | None, i: int) -> float:
        return math.nan if row is None else float(row[i])

    return tuple(Candidate(tokenizer.decode([i], skip_special_tokens=False), int(i),
                           probability(base, i), probability(steer, i)) for i in ids)


def _decode_each(tokenizer: Any, ids: Sequence[int]) -> tuple[str, ...]:
    return tuple(tokenizer.decode([i], skip_special_tokens=False) for i in ids)
