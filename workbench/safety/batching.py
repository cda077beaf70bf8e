"""Batches of encoded training pairs, shared by both safety-tuning recipes.

The LoRA recipe (:mod:`workbench.safety.lora`) and the late-MLP recipe
(:mod:`workbench.safety.late_mlp`) train on the same encoded pairs in the same seeded,
shuffled, right-padded batches.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import torch


def batches(encoded: list[tuple[list[int], list[int]]], batch_size: int, pad_id: int,
            rng: random.Random) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The encoded pairs in shuffled, right-padded batches: ``(input_ids, mask, labels)``.

    ``encoded`` holds ``(token ids, labels)`` pairs (labels -100 where not scored, see
    :func:`~workbench.safety.lora.encode_pair`); ``rng`` shuffles their order. Each batch
    is ``[batch, pos]`` wide enough for its longest pair: ids padded with ``pad_id``,
    labels with -100, the attention mask 1 on real tokens.

    Example:
        >>> ids, mask, labels = next(batches([([5, 6, 7], [-100, 6, 7]), ([8], [8])], 2,
        ...                                  0, random.Random(0)))
        >>> ids.tolist(), mask.tolist(), labels.tolist()
        ([[5, 6, 7], [8, 0, 0]], [[1, 1, 1], [1, 0, 0]], [[-100, 6, 7], [8, -100, -100]])
    """
    order = list(range(len(encoded)))
    rng.shuffle(order)
    for start in range(0, len(order), batch_size):
        rows = [encoded[i] for i in order[start:start + batch_size]]
        width = max(len(ids) for ids, _ in rows)
        input_ids = torch.full((len(rows), width), pad_id)  # [batch, pos], right-padded
        labels = torch.full((len(rows), width), -100)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, (ids, target) in enumerate(rows):
            input_ids[row, :len(ids)] = torch.tensor(ids)
            labels[row, :len(target)] = torch.tensor(target)
            mask[row, :len(ids)] = 1
        yield input_ids, mask, labels


def total_steps(n_examples: int, batch_size: int, epochs: int, max_steps: int | None) -> int:
    """Optimiser steps of a run: ``epochs`` passes of ``ceil(n_examples / batch_size)``
    batches, capped at ``max_steps`` when given.

    Example:
        >>> total_steps(10, 4, 2, None), total_steps(10, 4, 2, 5)
        (6, 5)
    """
    total = epochs * -(-n_examples // batch_size)
    return total if max_steps is None else min(total, max_steps)
