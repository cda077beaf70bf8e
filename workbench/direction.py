"""The refusal direction (Arditi et al., 2024): a difference of means in the residual stream.

A positive control for CNA: "Refusal in language models is mediated by a single
direction" finds, for chat models, one residual-stream direction whose ablation removes
refusal. :func:`refusal_direction` finds it the way their code does
(``pipeline/submodules/generate_directions.py`` and ``select_direction.py`` of
andyrdt/refusal_direction), or by a cheaper criterion.

**Candidates.** The residual stream entering every block (layer 0: the embeddings) is
recorded at the last few prompt tokens of both prompt sets, formatted as
:func:`workbench.discover` formats them (chat template, system prompt) and left-padded,
so position ``-k`` is every prompt's ``k``-th last token. Under a chat template these are
the *post-instruction* tokens, the same in every prompt (for ChatML
``<|im_end|>\\n<|im_start|>assistant\\n``). At each position ``p`` and layer ``l``::

    delta[p, l] = mean_positive[p, l] - mean_negative[p, l]        (float64)

**Selection by ablation** (``criterion="ablation"``, the default; Arditi et al.'s
``select_direction``). Held-out *validation* prompts of both sets (given, or every 4th
prompt of each set) score every candidate ``(p, l)`` with ``r = delta[p, l] / |delta[p, l]|``:

- the *refusal score* of a next-token distribution is the log-odds of the refusal tokens
  (by default the first tokens of "I", "As", "Sorry", "I'm" as a reply starts)::

      s = log(P_refusal + 1e-8) - log(1 - P_refusal + 1e-8),  P_refusal = sum_t p(t)

  at the last prompt position, computed in float64;
- ``ablation_score``: the mean refusal score of the validation *positive* (harmful) prompts
  with ``r`` projected out of every residual write at every layer and position
  (:func:`workbench.ablation.scale_direction` at 0). Low: ablating it removes refusal;
- ``induce_score``: the mean refusal score of the validation *negative* (harmless)
  prompts with the unnormalised ``delta[p, l]`` added to the residual stream entering
  block ``l`` (every position, that block only). High: adding it induces refusal;
- ``kl``: the mean over validation negative prompts of ``KL(baseline || ablated)`` of the
  last position's next-token distribution (probabilities plus 1e-6 inside the logs).

A candidate is *filtered* when it comes from the last 20% of the layers
(``l >= floor(0.8 * n_layers)``), when ``kl > 0.1``, when ``induce_score < 0``, or when
its direction is zero (e.g. layer 0 under a chat template: the same token everywhere).
Among the rest the lowest ``ablation_score`` wins (ties: the earlier position, then the
earlier layer). When none is left (Arditi et al.'s code stops there), the filters are
relaxed one at a time until some candidate passes, first ``induce_score``, then ``kl``,
then the last 20% of the layers (only scored in that last case), and the lowest
``ablation_score`` of those wins, with a warning, ``fallback=True`` and
``selection["relaxed_filters"]`` on the result. (Dropping all filters at once would pick
directions that wreck the model: on Qwen2.5-Coder-0.5B-Instruct with JBB prompts no
candidate induces refusal, and the lowest ablation score overall has ``kl`` 7.8.)

Arditi et al.'s pipeline also first keeps only the positive prompts the model refuses and
the negative ones it answers (refusal score above / below 0, unablated): pass
``filter_prompts=True`` for that (off by default).

Cost: one forward pass per batch of prompts to collect, one baseline pass per validation
set, then per candidate three passes over the validation prompts (ablated positive,
ablated negative, steered negative): for 24 layers and 5 positions, 95 candidates. Each
of those passes computes the prompts' shared opening (the chat template's system prompt)
once and continues every batch from it (:class:`workbench.prefix.Prefix`).

**Selection by separation** (``criterion="cohen_d"``): the last token only, computed on
the given prompts only, no validation passes. Among layers ``l < 0.8 * n_layers`` the
largest Cohen's d of the projections ``x . r_l`` (``r_l`` the unit ``delta[-1, l]``)
wins::

    score[l] = |delta[l]| / sqrt((var_pos(x . r_l) + var_neg(x . r_l)) / 2)

(population variances; 0 where the sets do not differ; ties: the earlier layer). Cheap,
but the separation of the two sets need not say what ablating the direction does.

Either way the direction is ``r = delta[position, layer] / |delta[position, layer]|``
(float32, unit length); ablate it with :func:`workbench.ablation.ablate_direction`.

Example:
    >>> from workbench import load_model, refusal_direction
    >>> model = load_model()                                                  # doctest: +SKIP
    >>> found = refusal_direction(model, "jbb-harmful", "jbb-benign")  # doctest: +SKIP
    >>> found.layer in found.candidates, found.position in (-5, -4, -3, -2, -1)  # doctest: +SKIP
    (True, True)
    >>> table = found.candidate_table()                                       # doctest: +SKIP
    >>> table[table.passed].sort_values("ablation_score").head()              # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from .ablation import scale_direction
from .activations import collect, length_order
from .cna import check_balance
from .config import FORWARD_BATCH_SIZE, DiscoverConfig
from .errors import InvalidArgumentError
from .locks import model_lock
from .models import WorkbenchModel
from .prefix import Prefix, unpadded
from .prompts import ChatTemplateChoice, Prompting, PromptSet, format_prompts
from .sites import Edit, edited, read_last_positions

PromptsLike = PromptSet | str | Sequence[str]
Criterion = Literal["ablation", "cohen_d"]
CRITERIA: tuple[Criterion, ...] = ("ablation", "cohen_d")

#: Arditi et al. discard candidate directions from the last 20% of the layers.
CANDIDATE_SHARE = 0.8
#: The default criterion of :func:`refusal_direction`.
CRITERION: Criterion = "ablation"
#: Defaults of the ablation criterion, as in Arditi et al.'s ``select_direction``.
POSITIONS = 5
KL_THRESHOLD = 0.1
INDUCE_THRESHOLD = 0.0
#: Without ``validation=``, every 4th prompt of each set (the 4th, 8th, ...) validates.
VALIDATION_EVERY = 4
#: Words whose first reply token counts as refusal by default.
REFUSAL_WORDS = ("I", "As", "Sorry", "I'm")
#: Epsilons inside the logs, as in Arditi et al.'s ``refusal_score`` and ``kl_div_fn``.
REFUSAL_EPSILON = 1e-8
KL_EPSILON = 1e-6

#: Why a candidate was filtered (the entries of ``filtered_by``).
ZERO, PRUNED, NOT_FINITE = "zero direction", "last 20% of layers", "score not finite"

#: Columns of :meth:`RefusalDirection.candidate_table` under each criterion.
_COLUMNS = {
    "ablation": ["position", "layer", "norm", "ablation_score", "induce_score", "kl",
                 "passed", "filtered_by", "chosen"],
    "cohen_d": ["position", "layer", "norm", "cohen_d", "passed", "filtered_by", "chosen"],
}


@dataclass(frozen=True, eq=False)
class RefusalDirection:
    """A unit residual-stream direction, where it was read, how it was chosen, provenance.

    Attributes:
        direction: float32 ``[d_model]``, unit length, pointing from the negative towards
            the positive prompts' mean.
        layer: the block whose *input* residual stream it was read from.
        scores: one float per layer (``len == n_layers``): under ``"cohen_d"`` the
            separation; under ``"ablation"`` the ablation refusal score of the candidate
            at ``position`` (NaN where not scored).
        candidates: the layers the choice was made among (the first 80%, or the given one).
        norm: ``|mean_positive - mean_negative|`` at ``(position, layer)``, before
            normalising.
        chosen: ``"auto"`` or ``"given"`` (``layer=`` was given).
        model, prompting, prompts: as a circuit records them (``prompts`` holds the name,
            size and sha256 of the positive and negative sets).
        criterion: ``"ablation"`` or ``"cohen_d"``.
        position: the token position it was read at, from the end (-1: the last token).
        fallback: True when no candidate passed all the filters and some were relaxed
            (``selection["relaxed_filters"]`` says which; a warning says so too).
        refusal_tokens: the token ids whose probability is the refusal score (ablation).
        validation: which prompts made the directions and which scored them (ablation):
            ``{"source": "split" | "given", "positive": {"directions": ref,
            "validation": ref}, "negative": {...}}``, each ``ref`` a name, size and
            sha256, plus the row ``indices`` into the given set when split.
        candidate_scores: one dict per candidate, in order of position then layer (see
            :meth:`candidate_table`).
        selection: the settings and baselines of the selection (ablation): thresholds,
            positions tried and their tokens, refusal token strings, the unablated
            validation refusal scores, seconds taken.
    """

    direction: torch.Tensor = field(repr=False)
    layer: int
    scores: tuple[float, ...] = field(repr=False)
    candidates: tuple[int, ...] = field(repr=False)
    norm: float
    chosen: str
    model: dict[str, Any] = field(repr=False)
    prompting: dict[str, Any] = field(repr=False)
    prompts: dict[str, Any] = field(repr=False)
    criterion: str = "cohen_d"
    position: int = -1
    fallback: bool = False
    refusal_tokens: tuple[int, ...] = field(default=(), repr=False)
    validation: dict[str, Any] = field(default_factory=dict, repr=False)
    candidate_scores: tuple[dict[str, Any], ...] = field(default=(), repr=False)
    selection: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        positive = self.prompts.get("positive", {}).get("name")
        negative = self.prompts.get("negative", {}).get("name")
        where = f"layer {self.layer}" if self.position == -1 and self.criterion == "cohen_d" \
            else f"layer {self.layer}, position {self.position}"
        return f"{positive} vs {negative} ({where})"

    def candidate_table(self) -> Any:
        """Every candidate's scores as a pandas DataFrame, one row per (position, layer).

        Columns under ``"ablation"``: ``position``, ``layer``, ``norm`` (of the mean
        difference), ``ablation_score``, ``induce_score``, ``kl`` (NaN where not scored),
        ``passed`` (no filter applies), ``filtered_by`` (the filters that apply, joined
        by ``"; "``, empty when passed) and ``chosen``. Under ``"cohen_d"``: ``cohen_d``
        instead of the three scores.

        Example:
            >>> table = found.candidate_table()                          # doctest: +SKIP
            >>> table[table.passed].sort_values("ablation_score").head(3)  # doctest: +SKIP
        """
        import pandas as pd

        columns = _COLUMNS.get(self.criterion, _COLUMNS["ablation"])
        return pd.DataFrame([dict(row) for row in self.candidate_scores], columns=columns)


def candidate_layers(n_layers: int) -> list[int]:
    """Layers the separation criterion chooses among: ``l < 0.8 * n_layers``.

    Example:
        >>> candidate_layers(30)[-1], candidate_layers(18)[-1], candidate_layers(2)
        (23, 14, [0, 1])
    """
    return [layer for layer in range(n_layers) if 5 * layer < 4 * n_layers]


def pruned_from(n_layers: int) -> int:
    """First layer of the last 20% that the ablation criterion discards.

    As Arditi et al.: ``layer >= int(n_layers * (1 - 0.2))`` is discarded.

    Example:
        >>> pruned_from(24), pruned_from(30), pruned_from(2), pruned_from(1)
        (19, 24, 1, 0)
    """
    return (4 * n_layers) // 5


def separation(positive: torch.Tensor, negative: torch.Tensor,
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-layer mean difference and its Cohen's d along its own direction.

    Args:
        positive: ``[n_pos, n_layers, d_model]`` activations; negative likewise.

    Returns:
        ``delta`` float64 ``[n_layers, d_model]`` and ``scores`` float64 ``[n_layers]``
        (0 where the means are equal; ``inf`` where they differ but neither set varies
        along the direction).

    Example:
        >>> pos = torch.tensor([[[2.0, 0.0]], [[4.0, 1.0]]])   # 2 prompts, 1 layer
        >>> neg = torch.tensor([[[0.0, 0.0]], [[2.0, 1.0]]])
        >>> delta, scores = separation(pos, neg)
        >>> delta.tolist(), scores.tolist()
        ([[2.0, 0.0]], [2.0])
    """
    pos = positive.to(torch.float64)  # [n_pos, n_layers, d_model]
    neg = negative.to(torch.float64)  # [n_neg, n_layers, d_model]
    delta = pos.mean(dim=0) - neg.mean(dim=0)  # [n_layers, d_model]
    norm = delta.norm(dim=1)  # [n_layers]
    unit = delta / norm.clamp(min=torch.finfo(torch.float64).tiny).unsqueeze(1)
    spread = ((pos * unit).sum(-1).var(dim=0, unbiased=False)  # [n_layers]
              + (neg * unit).sum(-1).var(dim=0, unbiased=False)) / 2
    scores = norm / spread.sqrt()
    scores = torch.where(norm == 0, torch.zeros_like(scores), scores)
    return delta, scores


def refusal_score(logits: torch.Tensor, tokens: Sequence[int]) -> torch.Tensor:
    """Log-odds of the refusal tokens in each row's next-token distribution.

    ``log(P + 1e-8) - log(1 - P + 1e-8)`` with ``P`` the summed probability of ``tokens``,
    in float64 (Arditi et al.'s ``refusal_score``).

    Args:
        logits: ``[batch, vocab]`` next-token logits.
        tokens: the refusal token ids.

    Returns:
        float64 ``[batch]``.

    Example:
        >>> logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]))
        >>> [round(s, 4) for s in refusal_score(logits, [0]).tolist()]
        [0.0, -2.1972]
    """
    probs = logits.to(torch.float64).softmax(dim=-1)  # [batch, vocab]
    refusing = probs[:, list(tokens)].sum(dim=-1)  # [batch]
    return torch.log(refusing + REFUSAL_EPSILON) - torch.log(1 - refusing + REFUSAL_EPSILON)


def kl_divergence(baseline: torch.Tensor, changed: torch.Tensor) -> torch.Tensor:
    """``KL(baseline || changed)`` of each row's next-token distribution, in float64.

    ``sum p (log(p + 1e-6) - log(q + 1e-6))`` as Arditi et al.'s ``kl_div_fn``, so that
    their direction selection is reproduced; the workbench's own KL metric (the harmless
    drift) is the exact one, :func:`workbench.evaluation.drift.kl_rows`.

    Args:
        baseline, changed: ``[batch, vocab]`` logits.

    Returns:
        float64 ``[batch]``.

    Example:
        >>> p = torch.log(torch.tensor([[0.5, 0.5], [0.9, 0.1]]))
        >>> [round(v, 4) for v in kl_divergence(p, p.flip(-1)).tolist()]
        [0.0, 1.7578]
    """
    p = baseline.to(torch.float64).softmax(dim=-1)  # [batch, vocab]
    q = changed.to(torch.float64).softmax(dim=-1)  # [batch, vocab]
    return (p * (torch.log(p + KL_EPSILON) - torch.log(q + KL_EPSILON))).sum(dim=-1)


def refusal_direction(model: WorkbenchModel, positive: PromptsLike, negative: PromptsLike,
                      *, criterion: Criterion = CRITERION, layer: int | None = None,
                      position: int | None = None, positions: int | None = None,
                      validation: tuple[PromptsLike, PromptsLike] | None = None,
                      refusal_tokens: Sequence[int | str] | None = None,
                      kl_threshold: float | None = None,
                      induce_threshold: float | None = None,
                      filter_prompts: bool | None = None,
                      chat_template: ChatTemplateChoice = "auto",
                      system_prompt: str | None = None,
                      batch_size: int = FORWARD_BATCH_SIZE,
                      max_imbalance: float | None = DiscoverConfig.max_imbalance,
                      progress: bool = True) -> RefusalDirection:
    """Difference of the two sets' mean residual streams, at the chosen layer and position.

    Args:
        positive, negative: PromptSets, bundled names, files or lists (e.g. harmful and
            benign requests: the direction points towards refusal).
        criterion: ``"ablation"`` (Arditi et al.'s selection by what ablating and adding
            each candidate does) or ``"cohen_d"`` (separation at the last token); see the
            module docstring.
        layer: the block whose input residual stream to use (negative indices allowed);
            None chooses it. A given layer is never discarded as one of the last 20%.
        position: ablation only: the token position to use, from the end (-1: the last
            prompt token); None chooses it among the last ``positions``. With both
            ``layer`` and ``position`` given nothing is scored.
        positions: ablation only: how many last prompt positions to try (default 5,
            ChatML's post-instruction tokens; 1: the last token only).
        validation: ablation only: ``(positive, negative)`` prompts that score the
            candidates; None takes every 4th prompt of each set (the 4th, 8th, ...; the
            last one of a set of 2 or 3) and makes the directions from the rest.
        refusal_tokens: ablation only: token ids or strings (a string counts by its first
            token as a reply starts); default: those of "I", "As", "Sorry", "I'm".
        kl_threshold: ablation only: discard candidates whose ablation moves the negative
            prompts' next-token distribution by a larger KL (default 0.1).
        induce_threshold: ablation only: discard candidates whose addition gives the
            negative prompts a lower refusal score (default 0.0).
        filter_prompts: ablation only: first keep only the positive prompts the model
            refuses (refusal score > 0, unablated) and the negative prompts it does not
            (< 0), in both the direction and the validation prompts, as Arditi et al.'s
            pipeline does (``filter_train``, ``filter_val``); default False.
        chat_template, system_prompt: prompt formatting, as in :func:`workbench.discover`.
        batch_size: prompts per forward pass.
        max_imbalance: refuse sets whose sizes differ by more than this ratio (None: allow).
        progress: show progress bars.

    Returns:
        A frozen :class:`RefusalDirection` (unit ``direction`` float32 ``[d_model]``).

    Raises:
        InvalidArgumentError: a bad argument, a remote model under ``"ablation"`` (it
            hooks the model), or sets with the same mean everywhere.

    Example:
        >>> found = refusal_direction(model, "jbb-harmful", "jbb-benign")  # doctest: +SKIP
        >>> found.layer in found.candidates, found.fallback                # doctest: +SKIP
        (True, False)
        >>> cheap = refusal_direction(model, "jbb-harmful", "jbb-benign",  # doctest: +SKIP
        ...                           criterion="cohen_d")
    """
    if criterion not in CRITERIA:
        raise InvalidArgumentError(f"criterion must be one of {CRITERIA}, not {criterion!r}")
    _check_batch_size(batch_size)
    n_layers = model.n_layers
    given = _check_layer(layer, n_layers)
    positive = PromptSet.resolve(positive, name="positive")
    negative = PromptSet.resolve(negative, name="negative")
    prompting = model.prompting(chat_template, system_prompt)
    if criterion == "cohen_d":
        options = {"position": position, "positions": positions, "validation": validation,
                   "refusal_tokens": refusal_tokens, "kl_threshold": kl_threshold,
                   "induce_threshold": induce_threshold, "filter_prompts": filter_prompts}
        extra = [name for name, value in options.items() if value is not None]
        if extra:
            raise InvalidArgumentError(
                f"{', '.join(extra)} only apply to criterion='ablation', not 'cohen_d'")
        check_balance(positive, negative, max_imbalance)
        return _by_separation(model, positive, negative, given, prompting, batch_size,
                              progress)
    return _by_ablation(
        model, positive, negative, given=given, prompting=prompting,
        position=position, positions=positions, validation=validation,
        refusal_tokens=refusal_tokens, kl_threshold=kl_threshold,
        induce_threshold=induce_threshold, filter_prompts=bool(filter_prompts),
        batch_size=batch_size, max_imbalance=max_imbalance, progress=progress)


# -- the separation criterion ------------------------------------------------------


def _by_separation(model: WorkbenchModel, positive: PromptSet, negative: PromptSet,
                   given: int | None, prompting: Prompting, batch_size: int,
                   progress: bool) -> RefusalDirection:
    """The last-token direction at the layer of largest Cohen's d (or the given layer)."""
    pos = _residuals(model, positive, prompting, batch_size, progress)  # [n_pos, n_layers, d_model]
    neg = _residuals(model, negative, prompting, batch_size, progress)  # [n_neg, n_layers, d_model]
    delta, scores = separation(pos, neg)  # [n_layers, d_model], [n_layers]
    candidates = candidate_layers(model.n_layers)
    if given is None:
        # The largest score; among equal scores, the earlier layer.
        chosen = max(candidates, key=lambda layer: (float(scores[layer]), -layer))
    else:
        chosen = given
    norm = _check_norm(float(delta[chosen].norm()), chosen, -1)
    rows = tuple({"position": -1, "layer": layer, "norm": float(delta[layer].norm()),
                  "cohen_d": float(scores[layer]), "passed": layer in candidates,
                  "filtered_by": "" if layer in candidates else PRUNED,
                  "chosen": layer == chosen} for layer in range(model.n_layers))
    return RefusalDirection(
        direction=(delta[chosen] / norm).to(torch.float32),  # [d_model]
        layer=chosen,
        scores=tuple(float(s) for s in scores),
        candidates=tuple(candidates),
        norm=norm,
        chosen="auto" if given is None else "given",
        model={**model.info(), "d_model": int(delta.shape[1])},
        prompting=prompting.to_dict(),
        prompts={"positive": _ref(positive), "negative": _ref(negative)},
        criterion="cohen_d",
        candidate_scores=rows,
    )


def _residuals(model: WorkbenchModel, prompts: PromptSet, prompting: Prompting,
               batch_size: int, progress: bool) -> torch.Tensor:
    """Every prompt's residual stream entering each block, at the last prompt token."""
    per_prompt = collect(model, prompts, prompting=prompting, site="residual",
                         batch_size=batch_size, keep=True, progress=progress).per_prompt
    assert per_prompt is not None  # kept with keep=True
    return per_prompt


# -- the ablation criterion --------------------------------------------------------


def _by_ablation(model: WorkbenchModel, positive: PromptSet, negative: PromptSet, *,
                 given: int | None, prompting: Prompting, position: int | None,
                 positions: int | None, validation: Any, refusal_tokens: Any,
                 kl_threshold: float | None, induce_threshold: float | None,
                 filter_prompts: bool, batch_size: int, max_imbalance: float | None,
                 progress: bool) -> RefusalDirection:
    """Arditi et al.'s ``generate_directions`` + ``select_direction`` (module docstring)."""
    started = time.perf_counter()
    tried = _check_positions(positions, position)
    kl_limit = _check_threshold("kl_threshold", kl_threshold, KL_THRESHOLD, minimum=0.0)
    induce_limit = _check_threshold("induce_threshold", induce_threshold, INDUCE_THRESHOLD)
    model.require_local("refusal_direction(criterion='ablation')")
    check_balance(positive, negative, max_imbalance)
    train_pos, val_pos, train_neg, val_neg, provenance = _validation_sets(
        positive, negative, validation)
    tokens, token_strings = refusal_token_ids(model, prompting, refusal_tokens)
    if filter_prompts:
        train_pos, val_pos, train_neg, val_neg = _keep_by_refusal(
            model, prompting, tokens, batch_size, provenance,
            positive={"directions": train_pos, "validation": val_pos},
            negative={"directions": train_neg, "validation": val_neg})
    span = -min(tried)
    mean_pos, ids_pos = _mean_residuals(model, train_pos, prompting, span, batch_size,
                                        progress)  # [span, n_layers, d_model]
    mean_neg, ids_neg = _mean_residuals(model, train_neg, prompting, span, batch_size,
                                        progress)  # [span, n_layers, d_model]
    delta = mean_pos - mean_neg  # [span, n_layers, d_model] float64
    norms = delta.norm(dim=-1)  # [span, n_layers]
    scale = torch.maximum(mean_pos.norm(dim=-1), mean_neg.norm(dim=-1))  # [span, n_layers]
    zero = (norms <= 1e-6 * scale) | ~torch.isfinite(norms)  # [span, n_layers]
    shared = _shared_suffix(ids_pos + ids_neg)
    if span > len(shared):
        warnings.warn(
            f"only the last {len(shared)} tokens are the same in every prompt, so candidates "
            f"at positions -{span} to -{len(shared) + 1} read the prompts' own text, not the "
            "template's post-instruction tokens; use a chat template or fewer positions=",
            stacklevel=3)

    n_layers = model.n_layers
    layers = list(range(n_layers)) if given is None else [given]
    cut = pruned_from(n_layers) if given is None else n_layers
    grid = [(pos, layer) for pos in tried for layer in layers]  # (position, layer)
    rows: dict[tuple[int, int], dict[str, Any]] = {
        (pos, layer): {"position": pos, "layer": layer, "norm": float(norms[pos, layer]),
                       "ablation_score": math.nan, "induce_score": math.nan, "kl": math.nan,
                       "pruned": layer >= cut, "zero": bool(zero[pos, layer])}
        for pos, layer in grid}
    selection: dict[str, Any] = {
        "positions": span, "tried_positions": list(tried),
        "position_tokens": [model.tokenizer.decode([t]) for t in shared[-span:]]
        if span <= len(shared) else None,
        "refusal_token_strings": list(token_strings),
        "kl_threshold": kl_limit, "induce_threshold": induce_limit,
        "pruned_from_layer": cut if given is None else None,
    }
    fallback = False
    if given is not None and position is not None:  # nothing to choose, nothing scored
        best = (position, given)
        for row in rows.values():
            row["passed"], row["filtered_by"] = False, "not scored (layer and position given)"
    else:
        with model_lock(model), torch.no_grad():
            scorer = _Scorer(model, val_pos, val_neg, prompting, tokens, batch_size)
            selection["baseline"] = {"ablation_score": scorer.baseline_positive,
                                     "induce_score": scorer.baseline_negative}
            scorer.score_rows([rows[key] for key in grid
                               if not rows[key]["pruned"] and not rows[key]["zero"]],
                              delta, progress)
            _apply_filters(rows.values(), kl_limit, induce_limit)
            passing = [key for key in grid if rows[key]["passed"]]
            relaxed: list[str] = []
            if not passing:  # relax the filters one at a time, see the module docstring
                fallback = True
                for relax in ("induce_score", "kl", "layers"):
                    relaxed.append(relax)
                    if relax == "layers":
                        scorer.score_rows([rows[key] for key in grid
                                           if rows[key]["pruned"] and not rows[key]["zero"]],
                                          delta, progress)
                        _apply_filters(rows.values(), kl_limit, induce_limit)
                    passing = [key for key in grid if _passes(rows[key], kl_limit, relaxed)]
                    if passing:
                        break
                if not passing:
                    raise InvalidArgumentError(
                        "the positive and negative prompts have the same mean residual "
                        f"stream at every layer and position tried ({len(grid)} candidates), "
                        "so there is no direction to take; use prompt sets that differ")
            selection["relaxed_filters"] = relaxed
        best = min(passing, key=lambda key: (rows[key]["ablation_score"], key[0], key[1]))
        if fallback:
            warnings.warn(
                f"no candidate direction passed the filters (last 20% of the layers, kl > "
                f"{kl_limit:g}, induce_score < {induce_limit:g}); fell back to the lowest "
                f"ablation_score with the {', '.join(relaxed)} filter(s) relaxed: layer "
                f"{best[1]}, position {best[0]} (see found.candidate_table())", stacklevel=3)
    chosen_position, chosen_layer = best
    norm = _check_norm(float(norms[best]), chosen_layer, chosen_position)
    for key, row in rows.items():
        row["chosen"] = key == best
    selection["seconds"] = round(time.perf_counter() - started, 3)
    table = tuple(_public(rows[key]) for key in grid)
    return RefusalDirection(
        direction=(delta[best] / norm).to(torch.float32),  # [d_model]
        layer=chosen_layer,
        scores=tuple(rows[(chosen_position, layer)]["ablation_score"]
                     if (chosen_position, layer) in rows else math.nan
                     for layer in range(n_layers)),
        candidates=tuple(layer for layer in layers if layer < cut),
        norm=norm,
        chosen="auto" if given is None else "given",
        model={**model.info(), "d_model": int(delta.shape[-1])},
        prompting=prompting.to_dict(),
        prompts={"positive": _ref(positive), "negative": _ref(negative)},
        criterion="ablation",
        position=chosen_position,
        fallback=fallback,
        refusal_tokens=tuple(tokens),
        validation=provenance,
        candidate_scores=table,
        selection=selection,
    )


class _Scorer:
    """Forward passes over the validation prompts, batched once and reused per candidate.

    The baseline pass of each set runs here, once; :meth:`score` then runs, for one
    candidate, an ablated pass over the positive prompts and one over the negative
    prompts (for the KL), and a steered pass over the negative prompts.
    """

    def __init__(self, model: WorkbenchModel, positive: PromptSet, negative: PromptSet,
                 prompting: Prompting, tokens: Sequence[int], batch_size: int) -> None:
        self.model = model
        self.tokens = list(tokens)
        self.positive = _batches(model, positive, prompting, batch_size)[1]
        self.negative = _batches(model, negative, prompting, batch_size)[1]
        baseline = self._logits(self.positive)  # [n_pos, vocab]
        self.negative_logits = self._logits(self.negative)  # [n_neg, vocab]
        self.baseline_positive = float(refusal_score(baseline, self.tokens).mean())
        self.baseline_negative = float(refusal_score(self.negative_logits, self.tokens).mean())

    def _logits(self, batches: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        """Next-token logits ``[n, vocab]`` at each prompt's last position (float32, CPU).

        The prompts' shared opening (the chat template's system prompt) runs once per call,
        under whatever edit is active, and each batch continues from it
        (:class:`workbench.prefix.Prefix`): the same logits up to float rounding.
        """
        prefix = Prefix.prefill(self.model, [t for inputs in batches
                                             for t in unpadded(inputs)])
        keep_last = self.model.last_position_only()
        rows = []
        for inputs in batches:
            if len(prefix):
                with prefix.continuing(self.model, inputs) as continued:
                    logits = self.model.hf_model(**continued, **keep_last).logits
            else:
                logits = self.model.hf_model(**inputs, **keep_last).logits
            rows.append(logits[:, -1, :].float().cpu())  # [batch, vocab]
        return torch.cat(rows)

    def score(self, vector: torch.Tensor, layer: int) -> tuple[float, float, float]:
        """``(ablation_score, induce_score, kl)`` of the mean difference ``vector`` ``[d_model]``
        read at block ``layer``'s input."""
        with scale_direction(self.model, vector, 0.0):
            ablated = self._logits(self.positive)  # [n_pos, vocab]
            drifted = self._logits(self.negative)  # [n_neg, vocab]
        with added_to_residual(self.model, layer, vector):
            steered = self._logits(self.negative)  # [n_neg, vocab]
        return (float(refusal_score(ablated, self.tokens).mean()),
                float(refusal_score(steered, self.tokens).mean()),
                float(kl_divergence(self.negative_logits, drifted).mean()))

    def score_rows(self, rows: list[dict[str, Any]], delta: torch.Tensor,
                   progress: bool) -> None:
        """Fill in the three scores of each candidate row.

        ``delta``: float64 ``[span, n_layers, d_model]``, the candidates' mean differences.
        """
        for row in tqdm(rows, desc="scoring candidate directions", unit="candidate",
                        disable=not progress or not rows, leave=False):
            vector = delta[row["position"], row["layer"]]  # [d_model] float64
            row["ablation_score"], row["induce_score"], row["kl"] = self.score(
                vector, row["layer"])


@contextlib.contextmanager
def added_to_residual(model: WorkbenchModel, layer: int,
                      vector: torch.Tensor) -> Iterator[None]:
    """Add ``vector`` ``[d_model]`` to the residual stream entering block ``layer``.

    Every position of every forward pass made inside the block; only that block's input
    changes (later blocks see the change through the residual stream). The vector is cast
    to the activations' dtype first, as Arditi et al.'s activation addition does. An
    :class:`~workbench.sites.Edit` (``residual_additions``), so it runs on remote models
    too.

    Example:
        >>> with added_to_residual(model, 9, found.norm * found.direction):  # doctest: +SKIP
        ...     logits = model.hf_model(**model.encode(["Hi"], model.prompting())).logits
    """
    with edited(model, Edit(residual_additions={layer: vector})):
        yield


def _apply_filters(rows: Any, kl_limit: float, induce_limit: float) -> None:
    """Set each row's ``passed`` and ``filtered_by`` (Arditi et al.'s ``filter_fn``)."""
    for row in rows:
        reasons = []
        if row["zero"]:
            reasons.append(ZERO)
        if row["pruned"]:
            reasons.append(PRUNED)
        scores = (row["ablation_score"], row["induce_score"], row["kl"])
        if not row["zero"] and not row["pruned"] \
                and not all(math.isfinite(s) for s in scores):
            reasons.append(NOT_FINITE)
        if row["kl"] > kl_limit:
            reasons.append(f"kl > {kl_limit:g}")
        if row["induce_score"] < induce_limit:
            reasons.append(f"induce_score < {induce_limit:g}")
        row["passed"] = not reasons
        row["filtered_by"] = "; ".join(reasons)


def _passes(row: dict[str, Any], kl_limit: float, relaxed: Sequence[str]) -> bool:
    """Whether a scored row passes the filters that are not ``relaxed``."""
    if row["zero"] or not math.isfinite(row["ablation_score"]):
        return False
    if row["pruned"] and "layers" not in relaxed:
        return False
    if "kl" not in relaxed and not row["kl"] <= kl_limit:
        return False
    return "induce_score" in relaxed or row["passed"]


def _public(row: dict[str, Any]) -> dict[str, Any]:
    """A candidate row as recorded: the table's columns only."""
    return {key: row[key] for key in _COLUMNS["ablation"]}


def refusal_token_ids(model: WorkbenchModel, prompting: Prompting,
                      tokens: Sequence[int | str] | None = None,
                      ) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Refusal token ids, and how each decodes, for this model's tokenizer.

    A string counts by its first token *as a reply starts*: the token that follows the
    formatted prompt (chat template and generation prompt) when the string is appended,
    or, where appending changes the prompt's own tokens, the string's first token alone.
    Ints are taken as ids. Duplicates are dropped, keeping the first.

    Args:
        tokens: ids and/or strings; None: :data:`REFUSAL_WORDS`.

    Example:
        >>> refusal_token_ids(qwen, qwen.prompting())                # doctest: +SKIP
        ((40, 2121, 19152), ('I', 'As', 'Sorry'))
    """
    if tokens is None:
        tokens = REFUSAL_WORDS
    if isinstance(tokens, (str, int)) or not isinstance(tokens, Sequence) or not tokens:
        raise InvalidArgumentError(
            f"refusal_tokens must be a non-empty list of token ids or strings, not {tokens!r}")
    vocab = _vocab_size(model)
    tokenizer = model.tokenizer
    ids: list[int] = []
    for token in tokens:
        if isinstance(token, str) and token:
            token_id = _first_reply_token(model, prompting, token)
        elif isinstance(token, int) and not isinstance(token, bool) and 0 <= token < vocab:
            token_id = token
        else:
            raise InvalidArgumentError(
                f"refusal token {token!r} is neither a non-empty string nor a token id "
                f"of this model (0 to {vocab - 1})")
        if token_id not in ids:
            ids.append(token_id)
    return tuple(ids), tuple(tokenizer.decode([i]) for i in ids)


def _first_reply_token(model: WorkbenchModel, prompting: Prompting, text: str) -> int:
    tokenizer = model.tokenizer
    prompt = format_prompts(tokenizer, ["Hello"], prompting)[0]
    special = not prompting.chat_template
    before = tokenizer(prompt, add_special_tokens=special)["input_ids"]
    after = tokenizer(prompt + text, add_special_tokens=special)["input_ids"]
    if len(after) > len(before) and after[:len(before)] == before:
        return int(after[len(before)])
    alone = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not alone:
        raise InvalidArgumentError(f"refusal token {text!r} encodes to no token")
    return int(alone[0])


def _vocab_size(model: WorkbenchModel) -> int:
    head = model.hf_model.get_output_embeddings()
    weight = getattr(head, "weight", None)
    if isinstance(weight, torch.Tensor):
        return int(weight.shape[0])
    return int(model.text_config.vocab_size)


def _validation_sets(positive: PromptSet, negative: PromptSet, validation: Any,
                     ) -> tuple[PromptSet, PromptSet, PromptSet, PromptSet, dict[str, Any]]:
    """``(train_pos, val_pos, train_neg, val_neg, provenance)``."""
    if validation is None:
        parts: dict[str, tuple[PromptSet, PromptSet]] = {}
        record: dict[str, Any] = {"source": "split", "every": VALIDATION_EVERY}
        for role, prompts in (("positive", positive), ("negative", negative)):
            prompts.require_nonempty(role)
            train_rows, val_rows = validation_split(len(prompts))
            if not train_rows or not val_rows:
                raise InvalidArgumentError(
                    f"the {role} set {prompts.name!r} has {len(prompts)} prompt(s): too few "
                    "to split into direction and validation prompts; give at least 2, or "
                    "pass validation=(positive, negative)")
            train = PromptSet(f"{prompts.name}:directions",
                              [prompts.prompts[i] for i in train_rows])
            val = PromptSet(f"{prompts.name}:validation", [prompts.prompts[i] for i in val_rows])
            parts[role] = (train, val)
            record[role] = {"directions": {**_ref(train), "indices": train_rows},
                            "validation": {**_ref(val), "indices": val_rows}}
        return (parts["positive"][0], parts["positive"][1], parts["negative"][0],
                parts["negative"][1], record)
    if not isinstance(validation, (tuple, list)) or len(validation) != 2:
        raise InvalidArgumentError(
            "validation must be a pair (positive, negative) of prompt sets, not "
            f"{type(validation).__name__}")
    val_pos = PromptSet.resolve(validation[0], name="positive validation")
    val_neg = PromptSet.resolve(validation[1], name="negative validation")
    val_pos.require_nonempty("positive validation")
    val_neg.require_nonempty("negative validation")
    record = {"source": "given",
              "positive": {"directions": _ref(positive), "validation": _ref(val_pos)},
              "negative": {"directions": _ref(negative), "validation": _ref(val_neg)}}
    return positive, val_pos, negative, val_neg, record


def validation_split(n: int) -> tuple[list[int], list[int]]:
    """Rows that make the directions and rows that validate them, for a set of ``n``.

    Every 4th prompt (the 4th, 8th, ...) validates; a set of 2 or 3 prompts gives its last
    one; a single prompt cannot be split.

    Example:
        >>> validation_split(9)
        ([0, 1, 2, 4, 5, 6, 8], [3, 7])
        >>> validation_split(3), validation_split(1)
        (([0, 1], [2]), ([0], []))
    """
    val = [i for i in range(n) if i % VALIDATION_EVERY == VALIDATION_EVERY - 1]
    if not val and n >= 2:
        val = [n - 1]
    return [i for i in range(n) if i not in val], val


def _batches(model: WorkbenchModel, prompts: PromptSet, prompting: Prompting,
             batch_size: int) -> tuple[list[int], list[dict[str, torch.Tensor]]]:
    """Encoded, left-padded batches of ``prompts`` in order of length (little padding).

    Returns the order (prompt indices, batch after batch) and the batches.
    """
    prompt_list = list(prompts)
    order = length_order(model, prompt_list, prompting)
    return order, [model.encode([prompt_list[i] for i in order[start:start + batch_size]],
                                prompting) for start in range(0, len(order), batch_size)]


def _keep_by_refusal(model: WorkbenchModel, prompting: Prompting, tokens: Sequence[int],
                     batch_size: int, provenance: dict[str, Any],
                     **roles: dict[str, PromptSet]) -> tuple[PromptSet, ...]:
    """Keep the refused positive and the answered negative prompts (unablated model).

    ``roles`` maps ``"positive"`` / ``"negative"`` to their ``"directions"`` and
    ``"validation"`` sets. Records the kept rows (indices into each set) in
    ``provenance[role][part]["kept"]``. Returns ``(train_pos, val_pos, train_neg,
    val_neg)``.
    """
    kept_sets = []
    with model_lock(model), torch.no_grad():
        for role in ("positive", "negative"):
            for part in ("directions", "validation"):
                prompts = roles[role][part]
                order, batches = _batches(model, prompts, prompting, batch_size)
                logits = torch.cat([model.hf_model(**inputs, **model.last_position_only())
                                    .logits[:, -1, :].float().cpu() for inputs in batches])
                by_order = refusal_score(logits, tokens)  # [n] float64, in `order`
                scores = torch.empty_like(by_order)
                scores[torch.tensor(order)] = by_order  # [n], in the set's order
                keep = (scores > 0) if role == "positive" else (scores < 0)
                rows = [i for i in range(len(prompts)) if bool(keep[i])]
                if not rows:
                    wanted = "refuses" if role == "positive" else "answers"
                    raise InvalidArgumentError(
                        f"filter_prompts=True: the model {wanted} none of the {len(prompts)} "
                        f"{role} {part} prompts of {prompts.name!r} (refusal score "
                        f"{'> 0' if role == 'positive' else '< 0'}); drop filter_prompts")
                provenance[role][part]["kept"] = rows
                kept_sets.append(PromptSet(f"{prompts.name}:kept",
                                           [prompts.prompts[i] for i in rows]))
    return tuple(kept_sets)


def _mean_residuals(model: WorkbenchModel, prompts: PromptSet, prompting: Prompting,
                    span: int, batch_size: int, progress: bool,
                    ) -> tuple[torch.Tensor, list[list[int]]]:
    """Mean residual stream entering each block at the last ``span`` positions.

    Returns:
        float64 ``[span, n_layers, d_model]`` (index ``j`` is position ``j - span``) and
        each prompt's last ``span`` token ids (fewer for a shorter prompt).
    """
    total: torch.Tensor | None = None
    last_ids: list[list[int]] = []
    batches = _batches(model, prompts, prompting, batch_size)[1]
    with model_lock(model), tqdm(total=len(prompts), desc="collecting residual streams",
                                 unit="prompt", disable=not progress, leave=False) as bar:
        for inputs in batches:
            lengths = inputs["attention_mask"].sum(dim=1)  # [batch]
            ids = inputs["input_ids"].cpu()  # [batch, pos]
            last_ids += [row[-min(span, int(n)):].tolist() for row, n in zip(ids, lengths)]
            if int(lengths.min()) < span:
                raise InvalidArgumentError(
                    f"a prompt of {prompts.name!r} has {int(lengths.min())} tokens after "
                    f"formatting, fewer than the {span} positions asked for; use fewer "
                    "positions= or a chat template")
            acts = read_last_positions(model, inputs, "residual", span)
            # acts: [batch, span, n_layers, d_model]
            batch_sum = acts.detach().to("cpu", torch.float64).sum(dim=0)  # [span, layers, d]
            total = batch_sum if total is None else total + batch_sum
            bar.update(int(ids.shape[0]))
    assert total is not None  # the set is not empty
    return total / len(prompts), last_ids


def _shared_suffix(rows: list[list[int]]) -> list[int]:
    """The longest run of token ids that ends every row.

    Example:
        >>> _shared_suffix([[1, 2, 3], [9, 2, 3], [3]])
        [3]
    """
    shortest = min(len(row) for row in rows)
    k = 0
    while k < shortest and len({row[-1 - k] for row in rows}) == 1:
        k += 1
    return rows[0][len(rows[0]) - k:]


def _check_positions(positions: Any, position: Any) -> list[int]:
    """The positions to try, from the end: ``[-positions, ..., -1]`` or ``[position]``."""
    if positions is not None and (isinstance(positions, bool) or not isinstance(positions, int)
                                  or positions < 1):
        raise InvalidArgumentError(f"positions must be a positive int, not {positions!r}")
    if position is None:
        return list(range(-(positions or POSITIONS), 0))
    limit = positions or math.inf
    if isinstance(position, bool) or not isinstance(position, int) \
            or not -limit <= position <= -1:
        bound = f" (-{positions} to -1 with positions={positions})" if positions else ""
        raise InvalidArgumentError(
            f"position must be a negative int counting from the prompt's end (-1: the last "
            f"token){bound}, not {position!r}")
    return [position]


def _check_threshold(name: str, value: Any, default: float, minimum: float = -math.inf,
                     ) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) \
            or value < minimum:
        bound = f" >= {minimum:g}" if minimum > -math.inf else ""
        raise InvalidArgumentError(f"{name} must be a number{bound}, not {value!r}")
    return float(value)


def _check_batch_size(batch_size: Any) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be a positive int, not {batch_size!r}")


def _check_norm(norm: float, layer: int, position: int) -> float:
    if norm == 0.0 or not math.isfinite(norm):
        where = f"layer {layer}" if position == -1 else f"layer {layer}, position {position}"
        raise InvalidArgumentError(
            f"the positive and negative prompts have the same mean residual stream at "
            f"{where}, so there is no direction to take; use prompt sets that differ "
            "(or another layer=)")
    return norm


def _check_layer(layer: Any, n_layers: int) -> int | None:
    if layer is None:
        return None
    if isinstance(layer, bool) or not isinstance(layer, int) \
            or not -n_layers <= layer < n_layers:
        raise InvalidArgumentError(
            f"layer must be None (choose automatically) or a layer of this {n_layers}-layer "
            f"model (0 to {n_layers - 1}, or negative from the end), not {layer!r}")
    return layer % n_layers


def _ref(prompts: PromptSet) -> dict[str, Any]:
    """Name, size and sha256 of a prompt set, as :func:`workbench.discover` records them."""
    return {"name": prompts.name, "n": len(prompts), "sha256": prompts.sha256}
