"""Collect activations at the last prompt token, batched and streaming.

Sites: the MLP down-projection's input (CNA's neurons) or output (CAA), or the residual
stream entering each block (the refusal direction, :mod:`workbench.direction`).

One forward pass per batch, traced with nnsight (:func:`workbench.sites.read_last_token`),
so a remote model (``load_model(..., remote=True)``) is read the same way. On a local
model the opening all prompts share (the chat template's system prompt) is computed once
(:class:`workbench.prefix.Prefix`) and each batch's pass computes only the rest. Prompts are
left-padded, so position ``-1`` is every row's last real token. Statistics accumulate in
float64 whatever the model's dtype, in buffers of fixed size ``[n_layers, d_mlp]``: memory
does not grow with the number of prompts unless per-prompt retention is asked for.

Example:
    >>> from workbench import load_model, PromptSet
    >>> from workbench.activations import collect
    >>> model = load_model()                                             # doctest: +SKIP
    >>> stats = collect(model, PromptSet.bundled("qualitative-benign"))  # doctest: +SKIP
    >>> stats.mean.shape                                                 # doctest: +SKIP
    torch.Size([30, 1536])
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from .activation_stats import ActivationStats
from .config import FORWARD_BATCH_SIZE
from .errors import InvalidArgumentError, PromptSetError
from .locks import model_lock
from .models import WorkbenchModel
from .prefix import Prefix
from .prompts import Prompting, PromptSet, format_prompts
from .sites import SITES, Site, read_last_token


def collect(model: WorkbenchModel, prompts: PromptSet | Sequence[str], *,
            prompting: Prompting | None = None, site: Site = "input",
            batch_size: int = FORWARD_BATCH_SIZE,
            keep: bool = False, top_fraction: float = 0.001, progress: bool = True,
            on_batch: Callable[[int, int], None] | None = None) -> ActivationStats:
    """Run ``prompts`` through ``model`` and accumulate last-token down-projection statistics.

    Args:
        prompting: formatting; default: the model's chat template if it has one.
        site: ``"input"`` (the ``d_mlp`` neurons CNA uses), ``"output"`` (the MLP's
            ``d_model`` contribution to the residual stream, used by CAA) or
            ``"residual"`` (the ``d_model`` residual stream entering each block, i.e. the
            block's input: layer 0 holds the embeddings).
        batch_size: prompts per forward pass; halved automatically on out-of-memory.
        keep: also retain every prompt's activations (float32) for plots.
        top_fraction: share of all neurons that counts as "top" per prompt (universal filter).
        on_batch: called after every batch with ``(prompts done, total prompts)``, e.g. to
            drive a progress bar of one's own.

    Returns:
        :class:`ActivationStats` over all prompts.
    """
    prompt_list = list(prompts)
    if not prompt_list:
        raise PromptSetError("collect() needs at least one prompt")
    if site not in SITES:
        raise InvalidArgumentError(f"site must be one of {SITES}, not {site!r}")
    prompting = prompting or model.prompting()
    width = model.d_mlp if site == "input" else model.d_model
    n_layers = model.n_layers
    top_k = max(1, round(top_fraction * n_layers * width))
    stats = ActivationStats.empty(n_layers, width, top_k)
    kept = torch.empty(len(prompt_list), n_layers, width) if keep else None

    order, tokens = _length_order(model, prompt_list, prompting)
    start = 0
    with model_lock(model), tqdm(total=len(order), desc=f"collecting {site} activations",
                                 unit="prompt", disable=not progress, leave=False) as bar:
        with torch.no_grad():  # the chat template's opening, computed once, not per prompt
            prefix = Prefix.prefill(model, tokens)
        while start < len(order):
            rows = order[start:start + batch_size]
            try:
                acts = _last_token_batch(model, [prompt_list[i] for i in rows], prompting, site,
                                         prefix)
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled
                if not _is_out_of_memory(exc) or batch_size == 1:
                    raise
                batch_size //= 2
                warnings.warn(f"out of memory; retrying with batch_size={batch_size}",
                              stacklevel=2)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            stats.update(acts)
            if kept is not None:
                kept[rows] = acts.detach().to("cpu", torch.float32)
            start += len(rows)
            bar.update(len(rows))
            if on_batch is not None:
                on_batch(start, len(order))
    stats.per_prompt = kept
    return stats


def length_order(model: WorkbenchModel, prompts: Sequence[str],
                 prompting: Prompting) -> list[int]:
    """Prompt indices sorted by formatted token length (ties by index).

    Batching prompts in this order needs little padding; results do not depend on it.
    """
    return _length_order(model, prompts, prompting)[0]


def _length_order(model: WorkbenchModel, prompts: Sequence[str],
                  prompting: Prompting) -> tuple[list[int], list[list[int]]]:
    """:func:`length_order` and the formatted prompts' token ids."""
    texts = format_prompts(model.tokenizer, prompts, prompting)
    token_ids = model.tokenizer(texts, add_special_tokens=not prompting.chat_template)["input_ids"]
    return sorted(range(len(prompts)), key=lambda i: (len(token_ids[i]), i)), token_ids


def _last_token_batch(model: WorkbenchModel, prompts: list[str], prompting: Prompting,
                      site: Site, prefix: Prefix) -> torch.Tensor:
    """Activations ``[batch, n_layers, width]`` at each row's last real token."""
    inputs = model.encode(prompts, prompting)
    if not len(prefix):
        return read_last_token(model, inputs, site)
    with prefix.continuing(model, inputs) as continued:
        return read_last_token(model, continued, site)


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    message = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in message
                                              or "can't allocate memory" in message)
