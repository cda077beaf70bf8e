"""A prompt prefix that every prompt of a call opens with, computed once.

A chat template opens every prompt with the same tokens (the system prompt: 24 of the 45
tokens of a JBB prompt on SmolLM2, about 30 of 50 on Qwen2.5). :class:`Prefix` runs those
tokens through the model once and hands each batch a copy of their keys and values, so a
batch's pass computes only the rest of each prompt. Decoding
(:mod:`workbench.decoding`) and activation collection (:mod:`workbench.activations`)
share it.

Layout of a continued batch: the prefix's cache columns, then left padding (masked), then
each row's own tokens, at the positions they would have in the whole prompt. Results
equal a pass over the whole prompts up to floating-point rounding. The rest of the
prompts runs inside :func:`workbench.sites.continuing_prompt`, so steering treats it as
prompt, as it does the prefix's own pass (an ordinary forward call: the model's hooks act
on both).

Example:
    >>> shared_prefix([[1, 5, 9, 4], [1, 5, 9], [1, 5, 7]])
    [1, 5]
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from .models import WorkbenchModel, position_ids
from .sites import continuing_prompt

#: A shared prefix is computed once only when it has at least this many tokens.
MIN_SHARED_PREFIX = 4


def shared_prefix(prompts: Sequence[Sequence[int]]) -> list[int]:
    """The tokens all prompts open with, leaving each at least one token of its own.

    Example:
        >>> shared_prefix([[1, 5, 9, 4], [1, 5, 9], [1, 5, 7]])
        [1, 5]
        >>> shared_prefix([[1, 2, 3]])
        []
    """
    if len(prompts) < 2:
        return []
    first, most = list(prompts[0]), min(len(p) for p in prompts) - 1
    length = 0
    while length < most and all(p[length] == first[length] for p in prompts):
        length += 1
    return first[:length]


def supports_prefix(model: WorkbenchModel) -> bool:
    """Whether ``model`` can continue a cached prefix: a local model that takes
    ``position_ids`` and whose cache layers are plain (no sliding-window attention)."""
    if model.remote or not model.accepts("position_ids"):
        return False
    text = model.text_config
    layer_types = getattr(text, "layer_types", None) or ()
    return not any("sliding" in str(kind) for kind in layer_types) \
        and not getattr(text, "sliding_window", None)


def cache_argument(model: WorkbenchModel) -> str:
    """The forward's keyword for a KV cache (``past_key_values``; ``cache`` in later
    transformers versions)."""
    return "cache" if model.accepts("cache") else "past_key_values"


def pad_id(model: WorkbenchModel) -> int:
    """The token that pads rows (the tokenizer's pad token, else 0: the mask hides it)."""
    pad = model.tokenizer.pad_token_id
    return 0 if pad is None else int(pad)


def unpadded(inputs: dict[str, torch.Tensor]) -> list[list[int]]:
    """Each row's token ids without its padding, from encoded ``input_ids`` and
    ``attention_mask`` (:meth:`WorkbenchModel.encode`)."""
    return [row[keep.bool()].tolist()
            for row, keep in zip(inputs["input_ids"], inputs["attention_mask"])]


def check_plain(cache: DynamicCache) -> None:
    """Refuse a cache whose layers are not plain :class:`DynamicLayer` (they cannot be
    copied, joined or cropped as :mod:`workbench.decoding` does)."""
    if not all(type(layer) is DynamicLayer for layer in cache.layers):
        raise RuntimeError("a shared prefix needs plain DynamicLayer caches")


@dataclass
class Prefix:
    """The shared prefix of some prompts and its keys and values (empty: nothing shared).

    Example:
        >>> prefix = Prefix.prefill(model, token_lists)               # doctest: +SKIP
        >>> ids, mask = prefix.left_padded([t[len(prefix):] for t in token_lists],
        ...                                pad=0, device="cpu")        # doctest: +SKIP
    """

    tokens: list[int] = field(default_factory=list)
    kv: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    """Each layer's keys and values, ``[1, kv_heads, len(tokens), head_dim]`` each."""

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def prefill(cls, model: WorkbenchModel, prompts: Sequence[Sequence[int]]) -> Prefix:
        """Compute the shared prefix of ``prompts`` (token ids) once; empty when shorter
        than :data:`MIN_SHARED_PREFIX` or when ``model`` cannot continue a cached prefix
        (:func:`supports_prefix`). The caller holds ``torch.no_grad``."""
        tokens = shared_prefix(prompts) if supports_prefix(model) else []
        if len(tokens) < MIN_SHARED_PREFIX:
            return cls()
        cache = DynamicCache(config=model.config)
        ids = torch.tensor([tokens], device=model.device)  # [1, prefix]
        cast(Any, model.hf_model)(
            input_ids=ids, attention_mask=torch.ones_like(ids),
            position_ids=torch.arange(len(tokens), device=model.device)[None],
            use_cache=True, **{cache_argument(model): cache}, **model.last_position_only())
        check_plain(cache)
        return cls(tokens, [(cast(torch.Tensor, layer.keys), cast(torch.Tensor, layer.values))
                            for layer in cast(list[DynamicLayer], cache.layers)])

    def cache(self, model: WorkbenchModel, rows: int) -> DynamicCache:
        """A fresh cache holding a copy of the prefix for each of ``rows`` rows."""
        cache = DynamicCache(self.kv or None, config=model.config)
        cache.batch_repeat_interleave(rows)
        return cache

    def left_padded(self, rests: Sequence[Sequence[int]], pad: int,
                    device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows' own tokens left-padded, and the mask over prefix and rows.

        Returns:
            ``input_ids`` ``[rows, width]`` and ``attention_mask``
            ``[rows, len(prefix) + width]``.
        """
        width = max(len(tokens) for tokens in rests)
        ids = torch.tensor([[pad] * (width - len(tokens)) + list(tokens) for tokens in rests],
                           device=device)  # [rows, width]
        mask = torch.tensor([[1] * len(self) + [0] * (width - len(tokens)) + [1] * len(tokens)
                             for tokens in rests], device=device)  # [rows, prefix + width]
        return ids, mask

    @contextlib.contextmanager
    def continuing(self, model: WorkbenchModel,
                   inputs: dict[str, torch.Tensor]) -> Iterator[dict[str, Any]]:
        """Turn left-padded whole-prompt ``inputs`` (:meth:`WorkbenchModel.encode`) into
        inputs that continue this prefix; passes on them inside the block count as prompt.

        Every row must open with the prefix (true when the prefix came from these prompts).
        """
        rests = [tokens[len(self):] for tokens in unpadded(inputs)]
        ids, joined = self.left_padded(rests, pad_id(model), inputs["attention_mask"].device)
        cache = self.cache(model, len(rests))
        with continuing_prompt(cache):
            yield {"input_ids": ids, "attention_mask": joined,
                   "position_ids": position_ids(joined)[:, len(self):],
                   cache_argument(model): cache}
