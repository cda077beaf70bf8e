"""Complete prompts, greedy by default, optionally with a circuit scaled.

The dispatcher of every generation the workbench makes: greedy calls on a model in this
process decode with continuous batching (:mod:`workbench.decoding`) on packed linears
(:mod:`workbench.packing`); sampling, extra ``generate`` keywords and sliding-window
caches go through transformers' ``generate``; a remote model generates through an nnsight
trace that carries its edits (:func:`workbench.sites.traced_generate`).

Example:
    >>> from workbench import load_model, generate
    >>> model = load_model()                                                   # doctest: +SKIP
    >>> generate(model, "How do I pick a lock?", max_new_tokens=20)            # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, cast

import torch
from tqdm.auto import tqdm

from .circuit import Circuit
from .config import GENERATION_BATCH_SIZE, GENERATION_MAX_NEW_TOKENS
from .decoding import greedy_continuous, supports_continuous
from .locks import model_lock
from .models import WorkbenchModel
from .packing import packed_linears
from .prefix import unpadded
from .prompts import ChatTemplateChoice, Prompting, PromptSet
from .sites import traced_generate
from .steering import steer
from .values import Positions, Signs, check_max_new_tokens, check_multiplier

__all__ = ["generate"]


def generate(model: WorkbenchModel, prompts: str | Sequence[str] | PromptSet, *,
             circuit: Circuit | None = None, multiplier: float = 1.0,
             positions: Positions = "all", signs: Signs = "all",
             max_new_tokens: int = GENERATION_MAX_NEW_TOKENS,
             chat_template: ChatTemplateChoice = "auto", system_prompt: str | None = None,
             batch_size: int = GENERATION_BATCH_SIZE, progress: bool = False, seed: int = 0,
             **generate_kwargs: Any) -> list[str]:
    """Complete prompts (greedy by default), optionally with a circuit scaled.

    Prompts run in left-padded batches; each row stops at its end-of-sequence token.
    Returns only the new text of each completion, in the prompts' order. Extra keyword
    arguments go to ``transformers``' ``generate`` (e.g. ``do_sample=True``, which then
    seeds torch's generator with ``seed``).

    Example:
        >>> generate(model, ["How do I bake a cake?"], max_new_tokens=20)  # doctest: +SKIP
        ['Baking a cake is ...']
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    prompt_list = list(prompts)
    if not prompt_list:
        return []
    check_max_new_tokens(max_new_tokens)
    value = check_multiplier(multiplier)
    prompting = model.prompting(chat_template, system_prompt)
    options = {"do_sample": False, "max_new_tokens": max_new_tokens,
               "pad_token_id": model.tokenizer.pad_token_id, **generate_kwargs}
    if not options["do_sample"]:
        # Greedy: silence sampling settings a checkpoint's generation config may carry.
        options.update(temperature=None, top_p=None, top_k=None)
    if options["do_sample"]:
        torch.manual_seed(seed)
    context = (steer(model, circuit, multiplier=value, positions=positions, signs=signs)
               if circuit is not None else contextlib.nullcontext())
    if supports_continuous(model, options):
        with model_lock(model), context, packed_linears(model):
            return _generate_continuous(model, prompt_list, prompting, max_new_tokens,
                                        batch_size, progress)
    # Batch prompts of similar length together (less padding), then restore the order.
    order = sorted(range(len(prompt_list)), key=lambda i: (len(prompt_list[i]), i))
    completions: list[str] = [""] * len(prompt_list)
    with model_lock(model), context, packed_linears(model), torch.no_grad():
        for start in tqdm(range(0, len(order), batch_size), disable=not progress,
                          desc="generating", unit="batch", leave=False):
            rows = order[start:start + batch_size]
            inputs = model.encode([prompt_list[i] for i in rows], prompting)
            inputs.pop("position_ids", None)  # generate() derives them from the mask
            if model.remote:  # edits travel as nnsight interventions
                output = traced_generate(model, inputs, options,
                                         seed=seed if options["do_sample"] else None)
            else:
                generate_ids = cast(Any, model.hf_model).generate  # a GenerationMixin method
                output = generate_ids(**inputs, **options)  # [batch, pos + new]
            new_tokens = output[:, inputs["input_ids"].shape[1]:]
            texts = model.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            for row, text in zip(rows, texts):
                completions[row] = text
    return completions


def _generate_continuous(model: WorkbenchModel, prompts: list[str], prompting: Prompting,
                         max_new_tokens: int, batch_size: int, progress: bool) -> list[str]:
    """Greedy completions through :func:`workbench.decoding.greedy_continuous`."""
    encoded = model.encode(prompts, prompting)  # checks every prompt's length first
    ids = unpadded(encoded)
    order = sorted(range(len(ids)), key=lambda i: (len(ids[i]), i))
    with tqdm(total=len(ids), disable=not progress, desc="generating", unit="prompt",
              leave=False) as bar:
        tokens = greedy_continuous(model, [ids[i] for i in order],
                                   max_new_tokens=max_new_tokens, batch_size=batch_size,
                                   on_finished=bar.update)
    completions: list[str] = [""] * len(ids)
    for row, new in zip(order, tokens):
        completions[row] = model.tokenizer.decode(new, skip_special_tokens=True)
    return completions
