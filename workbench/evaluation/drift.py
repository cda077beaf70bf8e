"""Damage a repetition score cannot see: the KL divergence of the next-token distribution
on harmless prompts, between the unchanged model and the changed one.

A changed model can write text that never repeats a 4-gram and still be broken (a run of
commas is one "word" to :func:`~workbench.evaluation.quality.quality`). Like heretic's
``KLDivergence`` scorer, :class:`HarmlessDrift` compares next-token distributions on a
fixed set of harmless prompts; it does so at the first generated position *and* along the
unchanged model's own greedy continuation (teacher-forced, ``tokens`` positions in all),
which is cheap: two forward passes per batch and no generation.

For each prompt and position ``t`` it computes ``KL(p_unchanged(. | x, y<t) || p_changed(.
| x, y<t))`` in nats, where ``y`` is the unchanged model's greedy continuation; a prompt's
value is the mean over its positions (positions after an end-of-sequence token do not
count), and :meth:`HarmlessDrift.kl` is the mean over prompts. 0 means the same
distributions; an intervention that leaves harmless prompts alone stays near 0; collapsed
text scores several nats.

The continuation is fed as generated tokens (the prompt in one pass, the continuation in a
second pass on its KV cache), so interventions limited to ``positions="generated"`` or
``"prompt"`` are measured where they act.

Example:
    >>> import workbench as wb                                             # doctest: +SKIP
    >>> from workbench.evaluation import HarmlessDrift, Intervention       # doctest: +SKIP
    >>> drift = HarmlessDrift(model)      # the unchanged model, once  # doctest: +SKIP
    >>> with Intervention.cna(circuit).apply(model, 0.0):                  # doctest: +SKIP
    ...     drift.kl()                                                     # doctest: +SKIP
    0.031
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from transformers import DynamicCache

from ..config import FORWARD_BATCH_SIZE
from ..decoding import eos_ids
from ..errors import InvalidArgumentError
from ..locks import model_lock
from ..models import WorkbenchModel
from ..prefix import cache_argument
from ..prompts import PromptSet

#: The bundled harmless prompts the drift is measured on (``prompts/diverse.txt``: varied,
#: neutral prompts, never used as a discovery contrast by the workbench).
HARMLESS_PROMPTS = "diverse"
#: How many of them (a seeded sample), and how many positions each.
DRIFT_PROMPTS = 32
DRIFT_TOKENS = 4


@dataclass(frozen=True)
class _Batch:
    """One batch of prompts with the unchanged model's continuation, ready to re-run."""

    inputs: dict[str, torch.Tensor]  # the encoded prompts: input_ids etc. [batch, pos]
    continuation: torch.Tensor  # [batch, tokens - 1] greedy tokens fed after the prompt
    counted: torch.Tensor  # [batch, tokens] bool: positions inside the continuation
    baseline: torch.Tensor  # [batch, tokens, vocab] float32 log-probabilities, unchanged


class HarmlessDrift:
    """The unchanged model's next-token distributions on harmless prompts, to compare with.

    Built once per model (the unchanged model runs here); :meth:`kl` then measures whatever
    intervention is active around the call.

    Args:
        model: the model, unchanged while this is built.
        prompts: a PromptSet, bundled name, file or list; default :data:`HARMLESS_PROMPTS`.
        n: a seeded sample of this many prompts (None: all).
        tokens: positions per prompt: the first generated one and ``tokens - 1`` along the
            unchanged greedy continuation (1 gives heretic's first-token KL).
        seed: the sample's seed.
        batch_size: prompts per forward pass.

    Example:
        >>> drift = HarmlessDrift(model, n=8, tokens=2)                    # doctest: +SKIP
        >>> drift.kl()        # nothing changed: 0                          # doctest: +SKIP
        0.0
    """

    def __init__(self, model: WorkbenchModel, prompts: str | Sequence[str] | PromptSet = (
                 HARMLESS_PROMPTS), *, n: int | None = DRIFT_PROMPTS,
                 tokens: int = DRIFT_TOKENS, seed: int = 0,
                 batch_size: int = FORWARD_BATCH_SIZE) -> None:
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
            raise InvalidArgumentError(f"tokens must be a positive int, not {tokens!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be a positive int, not {batch_size!r}")
        model.require_local("a KL drift measurement")
        chosen = drift_prompts(prompts, n, seed)
        self.model = model
        self.prompts = chosen
        self.tokens = tokens
        self.seed = seed
        self.prompting = model.prompting()
        #: wall seconds spent measuring (every :meth:`per_prompt` call so far)
        self.seconds = 0.0
        with model_lock(model), torch.no_grad():
            self._batches = [self._prepare(chosen.prompts[start:start + batch_size])
                             for start in range(0, len(chosen), batch_size)]

    def describe(self) -> dict[str, Any]:
        """Provenance of the measurement: prompts (name, count, sha256), positions, seed."""
        return describe_drift(self.prompts, self.tokens, self.seed)

    def per_prompt(self) -> torch.Tensor:
        """``[n]`` float64: each prompt's mean KL (nats) over its counted positions."""
        started = time.perf_counter()
        values = []
        with model_lock(self.model), torch.no_grad():
            for batch in self._batches:
                changed = self._log_probs(batch.inputs, batch.continuation)  # [b, t, vocab]
                kl = kl_rows(batch.baseline, changed)  # [b, t]
                counted = batch.counted.to(kl.dtype)  # [b, t]
                values.append((kl * counted).sum(dim=1) / counted.sum(dim=1))  # [b]
        self.seconds += time.perf_counter() - started
        return torch.cat(values)

    def kl(self) -> float:
        """The mean over prompts of :meth:`per_prompt`, in nats (0: unchanged)."""
        return float(self.per_prompt().mean())

    # -- internals ----------------------------------------------------------------------
    def _prepare(self, prompts: list[str]) -> _Batch:
        model = self.model
        inputs = model.encode(prompts, self.prompting)  # [b, pos] each
        continuation = self._greedy(inputs)  # [b, tokens - 1]
        counted = torch.ones(len(prompts), self.tokens, dtype=torch.bool)  # [b, tokens]
        stop = torch.tensor(sorted(eos_ids(model)), dtype=torch.long)
        for row in range(len(prompts)):
            ended = torch.isin(continuation[row].cpu(), stop).nonzero()
            if len(ended):  # position t predicts token t: none after the first end token
                counted[row, int(ended[0]) + 1:] = False
        baseline = self._log_probs(inputs, continuation)
        return _Batch(inputs, continuation, counted, baseline)

    def _greedy(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The unchanged model's ``tokens - 1`` argmax tokens after each prompt ``[b, t-1]``."""
        cache = DynamicCache(config=self.model.config)
        logits = self._prompt_pass(inputs, cache)  # [b, 1, vocab]
        chosen: list[torch.Tensor] = []
        for _ in range(self.tokens - 1):
            chosen.append(logits[:, -1].argmax(dim=-1, keepdim=True))  # [b, 1]
            logits = self._continue(inputs, chosen[-1], len(chosen), cache)  # [b, 1, vocab]
        if not chosen:
            return torch.zeros(len(inputs["input_ids"]), 0, dtype=torch.long,
                               device=self.model.device)
        return torch.cat(chosen, dim=1)

    def _log_probs(self, inputs: dict[str, torch.Tensor],
                   continuation: torch.Tensor) -> torch.Tensor:
        """Log-probabilities ``[b, tokens, vocab]`` (float32, CPU) after the prompt and
        after each fed continuation token, with whatever intervention is active."""
        cache = DynamicCache(config=self.model.config)
        steps = [self._prompt_pass(inputs, cache)]  # [b, 1, vocab]
        if continuation.shape[1]:
            steps.append(self._continue(inputs, continuation, continuation.shape[1], cache))
        logits = torch.cat(steps, dim=1).float().cpu()  # [b, tokens, vocab]
        return logits.log_softmax(dim=-1)

    def _prompt_pass(self, inputs: dict[str, torch.Tensor],
                     cache: DynamicCache) -> torch.Tensor:
        """The prompts' pass, filling ``cache``; next-token logits ``[b, 1, vocab]``."""
        return self._forward(**inputs, cache=cache,
                             **self.model.last_position_only())[:, -1:, :]

    def _continue(self, inputs: dict[str, torch.Tensor], tokens: torch.Tensor, fed: int,
                  cache: DynamicCache) -> torch.Tensor:
        """Feed ``tokens`` ``[b, k]``, the last ``k`` of ``fed`` tokens after the prompt, on
        ``cache``; logits ``[b, k, vocab]``."""
        k = tokens.shape[1]
        before = fed - k  # continuation tokens already in the cache
        ones = torch.ones(len(tokens), fed, dtype=inputs["attention_mask"].dtype,
                          device=tokens.device)
        mask = torch.cat([inputs["attention_mask"], ones], dim=1)  # [b, pos + fed]
        offsets = torch.arange(before + 1, fed + 1, device=tokens.device)  # [k]
        positions = inputs["position_ids"][:, -1:] + offsets[None]  # [b, k]
        return self._forward(input_ids=tokens, attention_mask=mask, position_ids=positions,
                             cache=cache)

    def _forward(self, *, cache: DynamicCache, **inputs: Any) -> torch.Tensor:
        model = self.model
        return cast(Any, model.hf_model)(**inputs, use_cache=True,
                                         **{cache_argument(model): cache}).logits


def drift_prompts(prompts: str | Sequence[str] | PromptSet = HARMLESS_PROMPTS,
                  n: int | None = DRIFT_PROMPTS, seed: int = 0) -> PromptSet:
    """The prompts a :class:`HarmlessDrift` with these arguments measures on."""
    chosen = PromptSet.resolve(prompts)
    chosen.require_nonempty()
    if n is not None and n < len(chosen):
        chosen = chosen.sample(n, seed=seed)
    return chosen


def describe_drift(prompts: PromptSet, tokens: int = DRIFT_TOKENS,
                   seed: int = 0) -> dict[str, Any]:
    """:meth:`HarmlessDrift.describe` without building the reference (no forward pass).

    Example:
        >>> describe_drift(drift_prompts(n=4))["n"]
        4
    """
    return {"prompts": prompts.name, "n": len(prompts), "sha256": prompts.sha256,
            "tokens": tokens, "seed": seed}


def kl_rows(baseline: torch.Tensor, changed: torch.Tensor) -> torch.Tensor:
    """``KL(baseline || changed)`` over the last axis of two log-probability tensors, in
    float64 (nats).

    Example:
        >>> p = torch.tensor([[0.5, 0.5]]).log()
        >>> q = torch.tensor([[0.9, 0.1]]).log()
        >>> round(float(kl_rows(p, q)[0]), 4), float(kl_rows(p, p)[0])
        (0.5108, 0.0)
    """
    base = baseline.double()
    return (base.exp() * (base - changed.double())).sum(dim=-1)
