"""Greedy decoding with continuous batching: finished rows leave, waiting prompts join.

Plain ``generate`` on a batch keeps computing every row until the longest one ends, and
on a small model on CPU each decode step costs mostly the reading of all the weights, not
the rows. Refusals are short, so in a refusal sweep most of a batch's rows are finished
long before the batch is. :func:`greedy_continuous` keeps up to ``batch_size`` rows in
flight instead:

- a row that emits an end-of-sequence token or reaches ``max_new_tokens`` leaves the
  batch, its rows of the KV cache are dropped (``DynamicCache.batch_select_indices``);
- when a quarter of the batch is free (:data:`REFILL_DIVISOR`) and prompts wait, the next are
  prefilled as a left-padded group and joined to the batch: the shorter of the two caches
  is left-padded with zeros under a zero attention mask, so every row keeps attending to
  exactly its own tokens at its own positions;
- when the prompts open with the same tokens (the chat template's system prompt, about
  half of each JBB prompt's tokens on SmolLM2), that prefix is prefilled once
  (:class:`workbench.prefix.Prefix`) and each group's prefill computes only the rest of
  its prompts, on copies of the prefix's cache (padding then sits between the prefix and
  the rest, under a zero mask, and stays).
  Hooks see two prompt passes, the prefix's and the rest's; steering counts both as
  prompt (:func:`workbench.sites.continuing_prompt`);
- leading cache columns that no row attends to any more are cropped, but never
  below the widest prefill so far: :class:`workbench.sites.Phase` places a decode pass's
  token at the cache's length, which must stay at or beyond every prompt's length.

Each pass is an ordinary forward call of the transformers model, so steering hooks act on
it as on ``generate`` (and :class:`workbench.sites.Phase` sees a prompt pass for each
prefill and generated positions for each decode step). Results are the greedy tokens of
plain ``generate`` up to floating-point rounding: a row's batch neighbours and padding
differ, which can move a logit in its last bits.

:func:`supports_continuous` says when it applies: greedy decoding with no logits
processors, a model whose cache layers are plain :class:`transformers.DynamicLayer`
(sliding-window layers are not joined) and that takes ``position_ids``.

Example:
    >>> ids = greedy_continuous(model, [[1, 5, 9], [1, 7]], max_new_tokens=4,  # doctest: +SKIP
    ...                         batch_size=2)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from .models import WorkbenchModel, position_ids
from .prefix import Prefix, cache_argument, check_plain, pad_id, supports_prefix
from .sites import continuing_prompt

#: Generation-config fields that add logits processors or stopping rules when set to
#: anything but these values; the continuous path then leaves the call to ``generate``.
_NEUTRAL = {
    "repetition_penalty": (None, 1.0), "no_repeat_ngram_size": (None, 0),
    "encoder_no_repeat_ngram_size": (None, 0), "bad_words_ids": (None,),
    "min_length": (None, 0), "min_new_tokens": (None, 0), "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,), "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,), "sequence_bias": (None,), "guidance_scale": (None, 1.0),
    "exponential_decay_length_penalty": (None,), "num_beams": (None, 1),
    "num_return_sequences": (None, 1), "stop_strings": (None,), "max_time": (None,),
    "renormalize_logits": (None, False),
}


#: Waiting prompts join once ``batch_size // REFILL_DIVISOR`` rows are free: a join costs a
#: prefill pass and a copy of the cache, a free row a wasted share of every decode step.
REFILL_DIVISOR = 4


def supports_continuous(model: WorkbenchModel, options: dict[str, Any]) -> bool:
    """Whether a ``generate`` call with ``options`` can run as :func:`greedy_continuous`.

    ``options`` are the keyword arguments :func:`workbench.generate` would pass to
    ``generate``; only ``max_new_tokens``, ``do_sample=False``, ``pad_token_id`` and the
    silenced sampling settings are allowed, and the model's generation config must add no
    logits processor.
    """
    allowed = {"max_new_tokens", "do_sample", "pad_token_id", "temperature", "top_p", "top_k"}
    if options.get("do_sample") or set(options) - allowed or not supports_prefix(model):
        return False
    config = model.hf_model.generation_config
    return all(getattr(config, name, None) in neutral for name, neutral in _NEUTRAL.items())


def eos_ids(model: WorkbenchModel) -> set[int]:
    """The token ids that end a row (the generation config's, else the tokenizer's)."""
    eos = model.hf_model.generation_config.eos_token_id
    if eos is None:
        eos = model.tokenizer.eos_token_id
    return set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}


class _Batch:
    """The rows in flight: their cache, mask, last token and the tokens generated so far."""

    def __init__(self) -> None:
        self.cache: DynamicCache | None = None
        self.mask = torch.zeros(0, 0, dtype=torch.long)  # [rows, cache length]
        self.last = torch.zeros(0, 1, dtype=torch.long)  # [rows, 1] the token to feed next
        self.rows: list[int] = []  # prompt index of each row
        self.tokens: list[list[int]] = []  # tokens generated by each row
        self.floor = 0  # the widest prefill: the cache is never cropped below it

    def __len__(self) -> int:
        return len(self.rows)

    def join(self, cache: DynamicCache, mask: torch.Tensor, last: torch.Tensor,
             rows: list[int]) -> None:
        """Add a prefilled group: left-pad the shorter cache so both have one length."""
        self.tokens += [[int(token)] for token in last[:, 0]]
        self.floor = max(self.floor, mask.shape[1])
        if self.cache is None or not self.rows:
            self.cache, self.mask, self.last, self.rows = cache, mask, last, list(rows)
            return
        length = max(self.mask.shape[1], mask.shape[1])
        for mine, theirs in zip(self.cache.layers, cache.layers):
            for name in ("keys", "values"):
                a, b = getattr(mine, name), getattr(theirs, name)  # [rows, heads, len, dim]
                setattr(mine, name, torch.cat([_pad_left(a, length, dim=2),
                                               _pad_left(b, length, dim=2)]))
        self.mask = torch.cat([_pad_left(self.mask, length, dim=1),
                               _pad_left(mask, length, dim=1)])
        self.last = torch.cat([self.last, last])
        self.rows += rows

    def keep(self, indices: list[int]) -> None:
        """Keep only the rows at ``indices``; crop cache columns no row attends to."""
        assert self.cache is not None
        index = torch.tensor(indices, dtype=torch.long)
        self.cache.batch_select_indices(index.to(self.mask.device))
        self.mask, self.last = self.mask[index], self.last[index]
        self.rows = [self.rows[i] for i in indices]
        self.tokens = [self.tokens[i] for i in indices]
        if not indices:
            return
        unused = int((self.mask.sum(dim=0) == 0).int().cumprod(dim=0).sum())  # leading pad
        unused = min(unused, self.mask.shape[1] - self.floor)
        if unused:
            for layer in self.cache.layers:
                plain = cast(DynamicLayer, layer)
                plain.keys = cast(torch.Tensor, plain.keys)[:, :, unused:]
                plain.values = cast(torch.Tensor, plain.values)[:, :, unused:]
            self.mask = self.mask[:, unused:]


def _pad_left(tensor: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    missing = length - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def greedy_continuous(model: WorkbenchModel, prompts: Sequence[Sequence[int]], *,
                      max_new_tokens: int, batch_size: int,
                      on_finished: Callable[[int], None] | None = None) -> list[list[int]]:
    """Greedy new tokens of each prompt (token ids), with continuous batching.

    Args:
        prompts: token ids of each formatted prompt, in the order to prefill them (sort
            them by length to keep padding small).
        max_new_tokens: the most tokens each row generates; a row also ends at an
            end-of-sequence token, which its tokens include.
        batch_size: the most rows in flight at once.
        on_finished: called with the number of rows that finished at each step (for a
            progress bar).

    Returns:
        The generated token ids of each prompt, in the prompts' order.

    Example:
        >>> greedy_continuous(model, [[1, 5, 9]], max_new_tokens=3, batch_size=8)  # doctest: +SKIP
        [[17, 2]]
    """
    hf = cast(Any, model.hf_model)
    cache_name = cache_argument(model)
    last_only = model.last_position_only()
    stop = eos_ids(model)
    pad = pad_id(model)
    done: dict[int, list[int]] = {}
    waiting = list(range(len(prompts)))
    batch = _Batch()
    device = model.device
    with torch.no_grad():
        prefix = Prefix.prefill(model, prompts)
        while waiting or len(batch):
            free = batch_size - len(batch)
            if waiting and (not len(batch) or free >= max(1, batch_size // REFILL_DIVISOR)):
                group, waiting = waiting[:free], waiting[free:]
                ids, mask = prefix.left_padded(  # [group, width], [group, prefix + width]
                    [prompts[i][len(prefix):] for i in group], pad, device)
                cache = prefix.cache(model, len(group))  # a copy of the prefix per row
                with continuing_prompt(cache):  # the rest of the prompts, after the prefix
                    out = hf(input_ids=ids, attention_mask=mask,
                             position_ids=position_ids(mask)[:, len(prefix):], use_cache=True,
                             **{cache_name: cache}, **last_only)
                check_plain(cache)
                batch.join(cache, mask, out.logits[:, -1].argmax(dim=-1, keepdim=True), group)
            else:
                mask = torch.cat([batch.mask, batch.mask.new_ones(len(batch), 1)], dim=1)
                out = hf(input_ids=batch.last, attention_mask=mask,
                         position_ids=position_ids(mask)[:, -1:], use_cache=True,
                         **{cache_name: batch.cache}, **last_only)
                batch.mask = mask
                batch.last = out.logits[:, -1].argmax(dim=-1, keepdim=True)  # [rows, 1]
                for row, token in enumerate(batch.last[:, 0].tolist()):
                    batch.tokens[row].append(int(token))
            keep = []
            for row, tokens in enumerate(batch.tokens):
                if tokens[-1] in stop or len(tokens) >= max_new_tokens:
                    done[batch.rows[row]] = tokens
                else:
                    keep.append(row)
            if len(keep) < len(batch):
                if on_finished is not None:
                    on_finished(len(batch) - len(keep))
                batch.keep(keep)
    return [done[i] for i in range(len(prompts))]
