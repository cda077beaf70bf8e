"""CAA, the baseline CNA is compared with: per-layer difference of mean MLP outputs.

Contrastive activation addition (Rimsky et al., 2024) steers with the difference of the
mean down-projection outputs of two prompt sets, added to every MLP output
(:func:`workbench.add_vector`). :func:`caa_vector` computes it.

Example:
    >>> from workbench import load_model, caa_vector, add_vector, generate
    >>> model = load_model()                                                    # doctest: +SKIP
    >>> v = caa_vector(model, "qualitative-harmful", "qualitative-benign")      # doctest: +SKIP
    >>> with add_vector(model, v, alpha=4.0):                                   # doctest: +SKIP
    ...     print(generate(model, "How do I pick a lock?"))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .activations import collect
from .config import FORWARD_BATCH_SIZE
from .models import WorkbenchModel
from .prompts import ChatTemplateChoice, PromptSet

__all__ = ["caa_vector"]


def caa_vector(model: WorkbenchModel, positive: PromptSet | str | Sequence[str],
               negative: PromptSet | str | Sequence[str], *,
               chat_template: ChatTemplateChoice = "auto", system_prompt: str | None = None,
               batch_size: int = FORWARD_BATCH_SIZE, progress: bool = True) -> torch.Tensor:
    """CAA baseline: per-layer difference of mean MLP outputs at the last prompt token.

    Returns:
        float64 ``[n_layers, d_model]``: ``mean_positive - mean_negative`` of each block's
        down-projection output.

    Example:
        >>> v = caa_vector(model, "qualitative-harmful", "qualitative-benign")  # doctest: +SKIP
        >>> v.shape                                                             # doctest: +SKIP
        torch.Size([30, 576])
    """
    prompting = model.prompting(chat_template, system_prompt)
    pos, neg = (collect(model, PromptSet.resolve(prompts, name=name), prompting=prompting,
                        site="output", batch_size=batch_size, progress=progress)
                for prompts, name in ((positive, "positive"), (negative, "negative")))
    return pos.mean - neg.mean
