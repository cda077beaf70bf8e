"""Steer a model: scale circuit neurons, or add a CAA vector, inside a ``with`` block.

Both describe their change as a :class:`workbench.sites.Edit` and apply it with
:func:`workbench.sites.edited`: on a model in this process as PyTorch forward hooks on the
MLP down-projections, which work around any call (``model.hf_model(...)``,
``hf_model.generate(...)``, nnsight traces, or :func:`generate` below) and are removed
when the block exits, whatever the reason (exception, ``KeyboardInterrupt``); on a remote
model (``load_model(..., remote=True)``) as nnsight interventions in the traced calls of
the block (:func:`generate`, discovery, :func:`caa_vector`).

Example:
    >>> from workbench import load_model, discover, generate, steer
    >>> model = load_model()                                                   # doctest: +SKIP
    >>> circuit = discover(model, "qualitative-harmful", "qualitative-benign")  # doctest: +SKIP
    >>> generate(model, "How do I pick a lock?", circuit=circuit, multiplier=0)  # doctest: +SKIP
    >>> with steer(model, circuit, multiplier=2.0):                             # doctest: +SKIP
    ...     logits = model.hf_model(**model.encode(["Hi"], model.prompting())).logits
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, cast

import torch
from tqdm.auto import tqdm

from .activations import collect
from .circuit import Circuit
from .config import FORWARD_BATCH_SIZE, GENERATION_BATCH_SIZE, GENERATION_MAX_NEW_TOKENS
from .decoding import greedy_continuous, supports_continuous
from .errors import SteeringError
from .locks import model_lock
from .models import WorkbenchModel
from .packing import packed_linears
from .prompts import ChatTemplateChoice, Prompting, PromptSet
from .sites import Edit, edited, traced_generate
from .values import (
    POSITIONS,
    SIGNS,
    Positions,
    Signs,
    check_max_new_tokens,
    check_multiplier,
    check_positions_signs,
)

# The allowed values and argument checks live in workbench.values; they are re-exported
# here, where the steering API has always offered them.
__all__ = ["POSITIONS", "SIGNS", "Positions", "add_vector", "caa_vector", "check_max_new_tokens",
           "check_multiplier", "check_positions_signs", "circuit_edit", "generate", "steer",
           "vector_edit"]


@contextlib.contextmanager
def steer(model: WorkbenchModel, circuit: Circuit, *, multiplier: float,
          positions: Positions = "all", signs: Signs = "all") -> Iterator[None]:
    """Multiply the circuit neurons' down-projection inputs by ``multiplier``.

    Args:
        multiplier: 0 ablates, 1 leaves the model unchanged, >1 amplifies, <0 flips.
        positions: ``"all"`` token positions, only the ``"prompt"``, or only
            ``"generated"`` tokens, with or without a KV cache (see :class:`workbench.sites.Phase`).
        signs: scale ``"all"`` circuit neurons, or only those with ``"positive"`` or
            ``"negative"`` delta.

    Example:
        >>> with steer(model, circuit, multiplier=0.0):               # doctest: +SKIP
        ...     out = model.hf_model.generate(**inputs, max_new_tokens=20)
    """
    with edited(model, circuit_edit(model, circuit, multiplier, positions=positions,
                                    signs=signs)):
        yield


def circuit_edit(model: WorkbenchModel, circuit: Circuit, multiplier: float, *,
                 positions: Positions = "all", signs: Signs = "all") -> Edit:
    """The :class:`~workbench.sites.Edit` that scales ``circuit``'s neurons by ``multiplier``.

    Each touched layer gets a factor ``[d_mlp]``: ``multiplier`` at the circuit's neurons
    (of the chosen ``signs``), 1 elsewhere. Checks every argument first.

    Example:
        >>> edit = circuit_edit(model, circuit, 0.0)                  # doctest: +SKIP
        >>> edit.scales[29].eq(0).sum()                               # doctest: +SKIP
        tensor(43)
    """
    value = check_multiplier(multiplier)
    check_positions_signs(positions, signs)
    circuit.check_model(model)
    scales = {}
    for layer, indices in circuit.by_layer(signs).items():
        factor = torch.ones(model.d_mlp)  # [d_mlp]
        factor[indices] = value
        scales[layer] = factor
    return Edit(scales=scales, positions=positions)


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


@contextlib.contextmanager
def add_vector(model: WorkbenchModel, vector: torch.Tensor, alpha: float) -> Iterator[None]:
    """Add ``alpha * vector[layer]`` to every block's MLP output at every position.

    Args:
        vector: ``[n_layers, d_model]``, e.g. from :func:`caa_vector`.
        alpha: strength; 0 leaves the model unchanged.
    """
    with edited(model, vector_edit(model, vector, alpha)):
        yield


def vector_edit(model: WorkbenchModel, vector: torch.Tensor, alpha: float) -> Edit:
    """The :class:`~workbench.sites.Edit` that adds ``alpha * vector[layer]`` to every
    block's MLP output. Checks the arguments first.

    Example:
        >>> edit = vector_edit(model, caa_vector(model, pos, neg), 2.0)  # doctest: +SKIP
        >>> sorted(edit.additions) == list(range(model.n_layers))       # doctest: +SKIP
        True
    """
    strength = check_multiplier(alpha, "alpha")
    expected = (model.n_layers, model.d_model)
    if not isinstance(vector, torch.Tensor) or tuple(vector.shape) != expected:
        shape = tuple(vector.shape) if isinstance(vector, torch.Tensor) else type(vector).__name__
        raise SteeringError(
            f"vector must be a tensor of shape [n_layers, d_model] = {list(expected)} for "
            f"{model.name}, not {shape}; build it with caa_vector() on this model"
        )
    return Edit(additions={layer: strength * vector[layer]  # [d_model]
                           for layer in range(model.n_layers)})


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
    ids = [row[mask.bool()].tolist() for row, mask
           in zip(encoded["input_ids"].cpu(), encoded["attention_mask"].cpu())]
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
