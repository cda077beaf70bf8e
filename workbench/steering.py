"""Steer a model: scale circuit neurons, or add a CAA vector, inside a ``with`` block.

Steering uses plain PyTorch forward hooks on the MLP down-projections, so it works around
any call: ``model.hf_model(...)``, ``hf_model.generate(...)``, nnsight traces, or
:func:`generate` below. Hooks are removed when the block exits, whatever the reason
(exception, ``KeyboardInterrupt``).

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
import math
import numbers
from typing import Any, Iterator, Literal, Sequence

import torch
from tqdm.auto import tqdm
from transformers import Cache

from .activations import collect
from .circuit import Circuit, Signs
from .errors import SteeringError
from .locks import model_lock
from .models import WorkbenchModel
from .prompts import ChatTemplateChoice, PromptSet

Positions = Literal["all", "prompt", "generated"]
POSITIONS = ("all", "prompt", "generated")
SIGNS = ("all", "positive", "negative")


def check_multiplier(multiplier: Any, what: str = "multiplier") -> float:
    """Return ``multiplier`` as a float, or raise :class:`SteeringError` if it is not a number.

    Example:
        >>> check_multiplier(0)
        0.0
    """
    if isinstance(multiplier, torch.Tensor) and multiplier.numel() == 1:
        multiplier = multiplier.item()
    if isinstance(multiplier, bool) or not isinstance(multiplier, numbers.Real):
        raise SteeringError(
            f"{what} must be a number (0 ablates, 1 leaves the model unchanged, >1 amplifies), "
            f"not {multiplier!r}"
        )
    value = float(multiplier)
    if not math.isfinite(value):
        raise SteeringError(f"{what} must be finite, not {value}")
    return value


class _Phase:
    """Tells, for each forward pass, which of its token positions belong to the prompt.

    A forward pre-hook on the whole model sees every pass, whoever makes it (our
    :func:`generate`, a user's ``hf_model.generate``, a plain forward call). It places the
    pass's ``n`` tokens at absolute positions ``offset .. offset + n - 1`` from two facts
    that do not depend on how ``generate`` names or passes its private arguments:

    - a KV cache handed to the model (any :class:`transformers.Cache` argument, whatever
      the keyword) already holds ``cache.get_seq_length()`` positions: ``offset`` is that;
    - without a cache (``use_cache=False``), a pass whose token ids extend the previous
      pass's ids re-reads that sequence plus the tokens generated since.

    A pass that starts a new sequence (empty or no cache, ids that do not extend the last
    pass) is a prompt pass, and its length is the prompt length. Positions at or beyond
    the prompt length are generated tokens. Known limit: a ``generate`` call that continues
    a cache returned by an earlier call counts its new prompt tokens as generated.

    Example:
        >>> phase = _Phase()
        >>> ids = torch.tensor([[5, 6, 7]])
        >>> phase.hook(None, (), {"input_ids": ids})                 # prompt pass
        >>> phase.generated.tolist()
        [False, False, False]
        >>> phase.hook(None, (), {"input_ids": torch.tensor([[5, 6, 7, 9]])})  # no cache
        >>> phase.generated.tolist()
        [False, False, False, True]
    """

    def __init__(self) -> None:
        self.prompt_length: int | None = None
        self.generated: torch.Tensor | None = None  # [pos] bool, for the current pass
        self._last_ids: torch.Tensor | None = None  # [batch, pos] ids of the last pass

    def hook(self, module: torch.nn.Module | None, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)  # [batch, pos] or None
        embeds = kwargs.get("inputs_embeds")  # [batch, pos, d_model] or None
        tokens = ids if isinstance(ids, torch.Tensor) else embeds
        if not isinstance(tokens, torch.Tensor):
            self.generated = None
            return
        n = int(tokens.shape[1])
        cache = next((value for value in kwargs.values() if isinstance(value, Cache)), None)
        offset = int(cache.get_seq_length()) if cache is not None else 0
        if offset == 0 and not self._extends_last(ids):
            self.prompt_length = n
        elif self.prompt_length is None:  # a cache filled before steering began
            self.prompt_length = offset
        self._last_ids = ids if isinstance(ids, torch.Tensor) else None
        positions = torch.arange(offset, offset + n, device=tokens.device)  # [pos]
        self.generated = positions >= self.prompt_length

    def _extends_last(self, ids: Any) -> bool:
        last = self._last_ids
        if not isinstance(ids, torch.Tensor) or last is None or ids.ndim != 2 \
                or ids.shape[0] != last.shape[0] or ids.shape[1] <= last.shape[1]:
            return False
        return bool(torch.equal(ids[:, :last.shape[1]], last.to(ids.device)))

    def selected(self, positions: Positions) -> torch.Tensor | bool:
        """Which positions of the current pass to steer: True (all), False (none) or a mask.

        The mask is ``[pos]`` bool. Before any whole-model pass has been seen (a submodule
        called on its own), every position counts as prompt.
        """
        if positions == "all":
            return True
        if self.generated is None:
            return positions == "prompt"
        return self.generated if positions == "generated" else ~self.generated


@contextlib.contextmanager
def _hooks(model: WorkbenchModel, register: Sequence) -> Iterator[None]:
    """Register hooks from a list of zero-argument callables; always remove them.

    The model's lock is held while the hooks are in place, so a widget's background
    generation never runs with (or under) a cell's ``with steer(...)`` block.
    """
    handles = []
    with model_lock(model):
        try:
            for add in register:
                handles.append(add())
            yield
        finally:
            for handle in handles:
                handle.remove()


def check_positions_signs(positions: Any, signs: Any) -> None:
    """Refuse ``positions`` / ``signs`` values that :func:`steer` does not know."""
    if positions not in POSITIONS:
        raise SteeringError(f"positions must be one of {POSITIONS}, not {positions!r}")
    if signs not in SIGNS:
        raise SteeringError(f"signs must be one of {SIGNS}, not {signs!r}")


def check_max_new_tokens(max_new_tokens: Any) -> None:
    """Refuse a token budget that is not a positive integer (a bool is not one)."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) \
            or max_new_tokens < 1:
        raise SteeringError(f"max_new_tokens must be a positive integer, not {max_new_tokens!r}")


@contextlib.contextmanager
def steer(model: WorkbenchModel, circuit: Circuit, *, multiplier: float,
          positions: Positions = "all", signs: Signs = "all") -> Iterator[None]:
    """Multiply the circuit neurons' down-projection inputs by ``multiplier``.

    Args:
        multiplier: 0 ablates, 1 leaves the model unchanged, >1 amplifies, <0 flips.
        positions: ``"all"`` token positions, only the ``"prompt"``, or only
            ``"generated"`` tokens, with or without a KV cache (see :class:`_Phase`).
        signs: scale ``"all"`` circuit neurons, or only those with ``"positive"`` or
            ``"negative"`` delta.

    Example:
        >>> with steer(model, circuit, multiplier=0.0):               # doctest: +SKIP
        ...     out = model.hf_model.generate(**inputs, max_new_tokens=20)
    """
    value = check_multiplier(multiplier)
    check_positions_signs(positions, signs)
    circuit.check_model(model)
    phase = _Phase()
    register = []
    if positions != "all":
        register.append(lambda: model.hf_model.register_forward_pre_hook(
            phase.hook, with_kwargs=True))
    for layer, indices in circuit.by_layer(signs).items():
        module = model.down_proj(layer)
        scale = torch.ones(model.d_mlp, device=module.weight.device)  # [d_mlp]
        scale[indices.to(scale.device)] = value

        def scale_input(_module: torch.nn.Module, args: tuple, scale: torch.Tensor = scale):
            hidden = args[0]  # [batch, pos, d_mlp]
            factor = scale.to(hidden.dtype)  # [d_mlp]
            selected = phase.selected(positions)  # True, False or [pos] bool
            if selected is False:
                return None
            if isinstance(selected, torch.Tensor):
                if selected.shape[0] != hidden.shape[1]:
                    raise SteeringError(
                        f"positions={positions!r}: this pass has {hidden.shape[1]} positions "
                        f"but the model call had {selected.shape[0]}; call the whole model "
                        "(not a submodule), or use positions='all'")
                factor = torch.where(selected.to(hidden.device)[:, None], factor,
                                     torch.ones_like(factor))  # [pos, d_mlp]
            return (hidden * factor,) + tuple(args[1:])

        register.append(lambda module=module, hook=scale_input:
                        module.register_forward_pre_hook(hook))
    with _hooks(model, register):
        yield


def caa_vector(model: WorkbenchModel, positive: PromptSet | str | Sequence[str],
               negative: PromptSet | str | Sequence[str], *,
               chat_template: ChatTemplateChoice = "auto", system_prompt: str | None = None,
               batch_size: int = 16, progress: bool = True) -> torch.Tensor:
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
    common = dict(prompting=prompting, site="output", batch_size=batch_size, progress=progress)
    pos = collect(model, PromptSet.resolve(positive, name="positive"), **common)
    neg = collect(model, PromptSet.resolve(negative, name="negative"), **common)
    return pos.mean - neg.mean


@contextlib.contextmanager
def add_vector(model: WorkbenchModel, vector: torch.Tensor, alpha: float) -> Iterator[None]:
    """Add ``alpha * vector[layer]`` to every block's MLP output at every position.

    Args:
        vector: ``[n_layers, d_model]``, e.g. from :func:`caa_vector`.
        alpha: strength; 0 leaves the model unchanged.
    """
    strength = check_multiplier(alpha, "alpha")
    expected = (model.n_layers, int(model.config.hidden_size))
    if not isinstance(vector, torch.Tensor) or tuple(vector.shape) != expected:
        shape = tuple(vector.shape) if isinstance(vector, torch.Tensor) else type(vector).__name__
        raise SteeringError(
            f"vector must be a tensor of shape [n_layers, d_model] = {list(expected)} for "
            f"{model.name}, not {shape}; build it with caa_vector() on this model"
        )
    register = []
    for layer in range(model.n_layers):
        module = model.down_proj(layer)
        delta = (strength * vector[layer]).to(module.weight.device)  # [d_model]

        def add(_module: torch.nn.Module, _args: tuple, output: torch.Tensor,
                delta: torch.Tensor = delta) -> torch.Tensor:
            return output + delta.to(output.dtype)

        register.append(lambda module=module, hook=add: module.register_forward_hook(hook))
    with _hooks(model, register):
        yield


def generate(model: WorkbenchModel, prompts: str | Sequence[str] | PromptSet, *,
             circuit: Circuit | None = None, multiplier: float = 1.0,
             positions: Positions = "all", signs: Signs = "all", max_new_tokens: int = 64,
             chat_template: ChatTemplateChoice = "auto", system_prompt: str | None = None,
             batch_size: int = 8, progress: bool = False, seed: int = 0,
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
    # Batch prompts of similar length together (less padding), then restore the order.
    order = sorted(range(len(prompt_list)), key=lambda i: (len(prompt_list[i]), i))
    completions: list[str] = [""] * len(prompt_list)
    with model_lock(model), context, torch.no_grad():
        for start in tqdm(range(0, len(order), batch_size), disable=not progress,
                          desc="generating", unit="batch", leave=False):
            rows = order[start:start + batch_size]
            inputs = model.encode([prompt_list[i] for i in rows], prompting)
            inputs.pop("position_ids", None)  # generate() derives them from the mask
            output = model.hf_model.generate(**inputs, **options)  # [batch, pos + new]
            new_tokens = output[:, inputs["input_ids"].shape[1]:]
            texts = model.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            for row, text in zip(rows, texts):
                completions[row] = text
    return completions
