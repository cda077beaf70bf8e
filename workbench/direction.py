"""The refusal direction (Arditi et al., 2024): a difference of means in the residual stream.

A positive control for CNA: "Refusal in language models is mediated by a single
direction" finds, for chat models, one residual-stream direction whose ablation removes
refusal. Here, as there:

1. Record the residual stream entering every block (layer 0: the embeddings) at the last
   prompt token, for both prompt sets: the same batched, left-padded collection as CNA
   (:func:`workbench.activations.collect`, ``site="residual"``), formatted the same way
   (chat template and system prompt, as :func:`workbench.discover` does).
2. ``delta[l] = mean_positive[l] - mean_negative[l]`` (float64) at every layer.
3. Choose the layer. Arditi et al. skip the last 20% of the layers and keep the candidate
   whose *ablation* best removes refusal, which needs generations per candidate. This
   module uses a cheap criterion instead, computed on the given (discovery) prompts only:
   **the separation of the two sets along the candidate direction**, i.e. Cohen's d of
   the projections ``p = x . r_l`` with ``r_l = delta[l] / |delta[l]|``::

       score[l] = (mean_pos(p) - mean_neg(p)) / sqrt((var_pos(p) + var_neg(p)) / 2)
                = |delta[l]| / sqrt((var_pos(p) + var_neg(p)) / 2)

   (population variances). Unlike ``|delta[l]|`` it does not grow with the residual
   stream's norm, which rises with depth. Among layers ``l < 0.8 * n_layers`` the largest
   score wins (ties: the earlier layer). A layer where the sets do not differ scores 0.
4. The direction is ``r = delta[layer] / |delta[layer]|`` (float32, unit length); ablate it
   with :func:`workbench.ablation.ablate_direction`.

Memory: the per-prompt residual streams at the last token (float32, ``n_prompts x n_layers
x d_model``) are kept for the variances; 200 prompts of a 30-layer, 576-wide model take 14 MB.

Example:
    >>> from workbench import load_model, refusal_direction
    >>> model = load_model()                                                  # doctest: +SKIP
    >>> found = refusal_direction(model, "jbb-harmful", "jbb-benign")  # doctest: +SKIP
    >>> found.layer, found.direction.shape                                    # doctest: +SKIP
    (14, torch.Size([576]))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .activations import collect
from .cna import check_balance
from .config import DiscoverConfig
from .errors import InvalidArgumentError
from .models import WorkbenchModel
from .prompts import ChatTemplateChoice, Prompting, PromptSet

PromptsLike = PromptSet | str | Sequence[str]

#: Arditi et al. discard candidate directions from the last 20% of the layers.
CANDIDATE_SHARE = 0.8
CRITERION = "cohen_d"


@dataclass(frozen=True, eq=False)
class RefusalDirection:
    """A unit residual-stream direction, the layer it was read at, and its provenance.

    Attributes:
        direction: float32 ``[d_model]``, unit length, pointing from the negative towards
            the positive prompts' mean.
        layer: the block whose *input* residual stream it was read from.
        scores: the criterion at every layer (``len == n_layers``; see the module doc).
        candidates: the layers the choice was made among (``l < 0.8 * n_layers``).
        norm: ``|mean_positive - mean_negative|`` at ``layer``, before normalising.
        chosen: ``"auto"`` (largest score among the candidates) or ``"given"``.
        model, prompting, prompts: as a circuit records them (``prompts`` holds the name,
            size and sha256 of the positive and negative sets).
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
    criterion: str = CRITERION

    @property
    def name(self) -> str:
        positive = self.prompts.get("positive", {}).get("name")
        negative = self.prompts.get("negative", {}).get("name")
        return f"{positive} vs {negative} (layer {self.layer})"


def candidate_layers(n_layers: int) -> list[int]:
    """Layers a direction may be chosen from: the first 80% (``l < 0.8 * n_layers``).

    Example:
        >>> candidate_layers(30)[-1], candidate_layers(18)[-1], candidate_layers(2)
        (23, 14, [0, 1])
    """
    return [layer for layer in range(n_layers) if 5 * layer < 4 * n_layers]


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


def refusal_direction(model: WorkbenchModel, positive: PromptsLike, negative: PromptsLike,
                      *, layer: int | None = None, chat_template: ChatTemplateChoice = "auto",
                      system_prompt: str | None = None, batch_size: int = 16,
                      max_imbalance: float | None = DiscoverConfig.max_imbalance,
                      progress: bool = True) -> RefusalDirection:
    """Difference of the two sets' mean residual streams at the last prompt token.

    Args:
        positive, negative: PromptSets, bundled names, files or lists (e.g. harmful and
            benign requests: the direction points towards refusal).
        layer: the block whose input residual stream to use (negative indices allowed);
            None chooses it by the separation criterion among the first 80% of the layers
            (see the module docstring).
        chat_template, system_prompt: prompt formatting, as in :func:`workbench.discover`.
        max_imbalance: refuse sets whose sizes differ by more than this ratio (None: allow).

    Returns:
        A frozen :class:`RefusalDirection` (unit ``direction`` float32 ``[d_model]``).

    Example:
        >>> found = refusal_direction(model, "jbb-harmful", "jbb-benign")  # doctest: +SKIP
        >>> found.layer in found.candidates                               # doctest: +SKIP
        True
    """
    positive = PromptSet.resolve(positive, name="positive")
    negative = PromptSet.resolve(negative, name="negative")
    check_balance(positive, negative, max_imbalance)
    n_layers = model.n_layers
    given = _check_layer(layer, n_layers)
    prompting = model.prompting(chat_template, system_prompt)
    pos = _residuals(model, positive, prompting, batch_size, progress)  # [n_pos, n_layers, d_model]
    neg = _residuals(model, negative, prompting, batch_size, progress)  # [n_neg, n_layers, d_model]
    delta, scores = separation(pos, neg)  # [n_layers, d_model], [n_layers]
    candidates = candidate_layers(n_layers)
    if given is None:
        # The largest score; among equal scores, the earlier layer.
        chosen = max(candidates, key=lambda layer: (float(scores[layer]), -layer))
    else:
        chosen = given
    norm = float(delta[chosen].norm())
    if norm == 0.0 or not math.isfinite(norm):
        raise InvalidArgumentError(
            f"the positive and negative prompts have the same mean residual stream at layer "
            f"{chosen}, so there is no direction to take; use prompt sets that differ "
            "(or another layer=)")
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
    )


def _residuals(model: WorkbenchModel, prompts: PromptSet, prompting: Prompting,
               batch_size: int, progress: bool) -> torch.Tensor:
    """Every prompt's residual stream entering each block, at the last prompt token."""
    per_prompt = collect(model, prompts, prompting=prompting, site="residual",
                         batch_size=batch_size, keep=True, progress=progress).per_prompt
    assert per_prompt is not None  # kept with keep=True
    return per_prompt


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
