"""Where neurons fire: chosen neurons' activations at every token of a prompt.

:func:`token_activations` reads the down-projection input of a few neurons (a circuit, or
any ``(layer, index)`` pairs) at every token of each prompt, the chat template's tokens
included, through :func:`workbench.sites.read_neurons` (one traced pass per batch, so a
``remote="local"`` or ``remote=True`` model is read the same way). The result is a tidy
pandas DataFrame, one row per (prompt, token, neuron):

=============  ===============================================================
prompt         the prompt's index in the list given
position       the token's index in the formatted prompt (0 is its first token)
token          the token's text (the characters it adds to the formatted prompt)
token_id       the token id
in_template    True for tokens that are not the user's text: the chat template,
               a system prompt, special tokens such as a BOS token
layer, neuron  the neuron
activation     its down-projection input at that token (float32)
=============  ===============================================================

At each prompt's last token the values equal what :func:`workbench.activations.collect`
reads there. :func:`signed_sum` adds a circuit's neurons up per token, weighted by their
scores.

Example:
    >>> from workbench import load_model, token_activations
    >>> model = load_model()                                                # doctest: +SKIP
    >>> frame = token_activations(model, ["How do I pick a lock?"], [(29, 117)])  # doctest: +SKIP
    >>> frame.columns.tolist()                                              # doctest: +SKIP
    ['prompt', 'position', 'token', 'token_id', 'in_template', 'layer', 'neuron', 'activation']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .activations import length_order
from .circuit import Circuit, Neuron
from .config import FORWARD_BATCH_SIZE
from .errors import InvalidArgumentError, PromptSetError
from .locks import model_lock
from .models import WorkbenchModel
from .neurons import check_neuron
from .prompts import Prompting, PromptSet, format_prompts
from .sites import read_neurons

if TYPE_CHECKING:  # pandas loads on first use
    import pandas as pd

__all__ = ["COLUMNS", "NeuronsLike", "PromptTokens", "neuron_weights", "prompt_tokens",
           "signed_sum", "token_activations"]

#: The columns of :func:`token_activations`' frame, in order.
COLUMNS = ("prompt", "position", "token", "token_id", "in_template", "layer", "neuron",
           "activation")

NeuronsLike = Circuit | Sequence[Neuron] | Sequence[tuple[int, int]]


@dataclass(frozen=True)
class PromptTokens:
    """The tokens of one formatted prompt, as the model reads them.

    Attributes:
        ids: token ids, in order.
        texts: each token's text: the characters of the formatted prompt it ends, so that
            ``"".join(texts)`` is the formatted prompt (a special token added by the
            tokenizer, such as BOS, shows as its own name); a token that only completes a
            character begun by the token before it has ``""``.
        in_template: per token, whether it lies outside the user's prompt text.

    Example:
        >>> t = PromptTokens(ids=[5, 6], texts=["<s>", "Hi"], in_template=[True, False])
        >>> t.prompt_positions()
        [1]
    """

    ids: list[int]
    texts: list[str]
    in_template: list[bool]

    def prompt_positions(self) -> list[int]:
        """Positions of the tokens of the user's prompt text."""
        return [i for i, template in enumerate(self.in_template) if not template]


def neuron_weights(neurons: NeuronsLike) -> list[tuple[int, int, float]]:
    """``(layer, index, weight)`` for each neuron: its score, or 1 for a plain pair.

    Example:
        >>> neuron_weights([(1, 3), Neuron(0, 2, -0.5)])
        [(1, 3, 1.0), (0, 2, -0.5)]
    """
    items = neurons.neurons if isinstance(neurons, Circuit) else neurons
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise InvalidArgumentError(
            f"neurons must be a Circuit or a list of (layer, index) pairs, not "
            f"{type(neurons).__name__}")
    result: list[tuple[int, int, float]] = []
    for item in items:
        if isinstance(item, Neuron):
            result.append((item.layer, item.index, float(item.score)))
        elif isinstance(item, Sequence) and len(item) == 2:
            result.append((item[0], item[1], 1.0))
        else:
            raise InvalidArgumentError(f"a neuron is a (layer, index) pair, not {item!r}")
    if not result:
        raise InvalidArgumentError("give at least one neuron")
    if len({(layer, index) for layer, index, _ in result}) != len(result):
        raise InvalidArgumentError("a neuron is listed twice; give each (layer, index) once")
    return result


def prompt_tokens(tokenizer: Any, prompt: str, prompting: Prompting,
                  ids: Sequence[int] | None = None) -> PromptTokens:
    """Tokenize a prompt as :meth:`WorkbenchModel.encode` does, and mark its template.

    A token belongs to the prompt when its characters overlap the prompt's text inside
    the formatted prompt (the last place the text occurs, after any system prompt); the
    others (chat template, system prompt, BOS) are marked ``in_template``. Character
    offsets come from a fast tokenizer; other tokenizers are decoded token by token.

    Args:
        ids: the ids the model reads (an encoded row without its padding); default: the
            tokenization of the formatted prompt.

    Example:
        >>> class Chars:  # a tokenizer with one token per character
        ...     chat_template = None
        ...     def __call__(self, text, add_special_tokens=True, return_offsets_mapping=False):
        ...         return {"input_ids": [ord(c) for c in text],
        ...                 "offset_mapping": [(i, i + 1) for i in range(len(text))]}
        >>> prompt_tokens(Chars(), "Hi", Prompting(chat_template=False)).texts
        ['H', 'i']
    """
    text = format_prompts(tokenizer, [prompt], prompting)[0]
    add_special = not prompting.chat_template
    offsets: list[tuple[int, int]] | None
    try:
        encoded = tokenizer(text, add_special_tokens=add_special, return_offsets_mapping=True)
        own_ids = [int(i) for i in encoded["input_ids"]]
        offsets = [(int(a), int(b)) for a, b in encoded["offset_mapping"]]
    except (NotImplementedError, ValueError, TypeError, KeyError):  # no offsets: slow tokenizer
        own_ids = [int(i) for i in tokenizer(text, add_special_tokens=add_special)["input_ids"]]
        offsets = None
    token_ids = own_ids if ids is None else [int(i) for i in ids]
    if offsets is None or token_ids != own_ids:
        text, offsets = _decoded_offsets(tokenizer, token_ids)
    needle = prompt
    start = text.rfind(needle)
    if start < 0:  # a template that trims the message
        needle = prompt.strip()
        start = text.rfind(needle) if needle else -1
    span = (start, start + len(needle)) if start >= 0 else (0, len(text))  # else: all prompt
    special = set(getattr(tokenizer, "all_special_ids", None) or ())
    texts: list[str] = []
    in_template: list[bool] = []
    end_so_far = 0
    for token_id, (begin, end) in zip(token_ids, offsets):
        if end <= begin:  # added by the tokenizer (BOS), or no characters of its own
            texts.append(_token_name(tokenizer, token_id) if token_id in special else "")
            in_template.append(True)
            continue
        texts.append(text[end_so_far:end] if end > end_so_far else "")
        end_so_far = max(end_so_far, end)
        in_template.append(not (begin < span[1] and end > span[0]))
    return PromptTokens(token_ids, texts, in_template)


def _decoded_offsets(tokenizer: Any, ids: list[int]) -> tuple[str, list[tuple[int, int]]]:
    """The decoded text of ``ids`` and each token's character span in it."""
    text = tokenizer.decode(ids, skip_special_tokens=False)
    offsets, previous = [], 0
    for i in range(len(ids)):
        end = min(max(len(tokenizer.decode(ids[:i + 1], skip_special_tokens=False)), previous),
                  len(text))
        offsets.append((previous, end))
        previous = end
    return text, offsets


def _token_name(tokenizer: Any, token_id: int) -> str:
    convert = getattr(tokenizer, "convert_ids_to_tokens", None)
    name = convert(token_id) if convert is not None else None
    return str(name) if name is not None else tokenizer.decode([token_id])


def token_activations(model: WorkbenchModel, prompts: PromptSet | str | Sequence[str],
                      neurons: NeuronsLike, *, prompting: Prompting | None = None,
                      batch_size: int = FORWARD_BATCH_SIZE) -> pd.DataFrame:
    """Chosen neurons' down-projection input at every token of each prompt.

    Prompts are formatted as :meth:`WorkbenchModel.encode` formats them (the chat
    template, when the model has one and ``prompting`` does not turn it off) and read in
    left-padded batches with the model's lock held; padding is left out of the result.
    Edits active on the model (inside ``with steer(...)``) act on what is read.

    Args:
        prompts: one prompt, a list, or a :class:`PromptSet`.
        neurons: a :class:`Circuit`, :class:`Neuron` objects or ``(layer, index)`` pairs.
        prompting: formatting; default: the model's chat template if it has one.
        batch_size: prompts per traced pass.

    Returns:
        A pandas DataFrame with the columns of :data:`COLUMNS`, one row per prompt, token
        and neuron, ordered by prompt, position and then the neurons' order.

    Example:
        >>> frame = token_activations(model, ["Hi", "How are you?"],        # doctest: +SKIP
        ...                           circuit)
        >>> frame[~frame.in_template].groupby("token").activation.mean()    # doctest: +SKIP
    """
    import pandas as pd

    prompt_list = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompt_list:
        raise PromptSetError("token_activations() needs at least one prompt")
    wrong = [p for p in prompt_list if not isinstance(p, str)]
    if wrong:
        raise PromptSetError(f"prompts must be strings, not {type(wrong[0]).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be a positive integer, not {batch_size!r}")
    chosen = neuron_weights(neurons)
    pairs = [check_neuron(model, layer, index) for layer, index, _ in chosen]
    prompting = prompting or model.prompting()
    layers = np.array([layer for layer, _ in pairs], dtype=np.int64)  # [k]
    indices = np.array([index for _, index in pairs], dtype=np.int64)  # [k]
    parts: list[dict[str, np.ndarray]] = [{} for _ in prompt_list]
    order = length_order(model, prompt_list, prompting)
    with model_lock(model):
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            inputs = model.encode([prompt_list[i] for i in rows], prompting)
            values = read_neurons(model, inputs, pairs)  # [batch, pos, k]
            values = values.detach().to("cpu", torch.float32)
            mask = inputs["attention_mask"].detach().cpu().bool()  # [batch, pos]
            ids = inputs["input_ids"].detach().cpu()  # [batch, pos]
            for row, i in enumerate(rows):
                real = ids[row][mask[row]].tolist()  # left-padded: the last len(real)
                tokens = prompt_tokens(model.tokenizer, prompt_list[i], prompting, ids=real)
                acts = values[row, -len(real):].numpy()  # [n_tokens, k]
                parts[i] = _rows(i, tokens, acts, layers, indices)
    columns = {name: np.concatenate([part[name] for part in parts]) for name in COLUMNS}
    return pd.DataFrame(columns)


def _rows(prompt: int, tokens: PromptTokens, acts: np.ndarray, layers: np.ndarray,
          indices: np.ndarray) -> dict[str, np.ndarray]:
    """One prompt's rows: ``acts`` is ``[n_tokens, k]``, neurons vary fastest."""
    n, k = acts.shape
    return {
        "prompt": np.full(n * k, prompt, dtype=np.int64),
        "position": np.repeat(np.arange(n, dtype=np.int64), k),
        "token": np.repeat(np.array(tokens.texts, dtype=object), k),
        "token_id": np.repeat(np.array(tokens.ids, dtype=np.int64), k),
        "in_template": np.repeat(np.array(tokens.in_template, dtype=bool), k),
        "layer": np.tile(layers, n),
        "neuron": np.tile(indices, n),
        "activation": acts.reshape(-1).astype(np.float32),
    }


def signed_sum(frame: pd.DataFrame, neurons: NeuronsLike) -> pd.DataFrame:
    """Per token, the neurons' activations weighted by their scores and summed.

    ``value = sum over neurons of score * activation``: for a circuit, positive where the
    token pushes the circuit the way of its positive prompts. Plain ``(layer, index)``
    pairs weigh 1. Neurons of ``neurons`` missing from ``frame`` are an error.

    Returns:
        A DataFrame with columns prompt, position, token, in_template, value, one row per
        token.

    Example:
        >>> import pandas as pd
        >>> frame = pd.DataFrame({"prompt": [0, 0], "position": [0, 0], "token": ["a", "a"],
        ...                       "in_template": [False, False], "layer": [1, 2],
        ...                       "neuron": [3, 4], "activation": [2.0, 1.0]})
        >>> signed_sum(frame, [Neuron(1, 3, 0.5), Neuron(2, 4, -1.0)]).value.tolist()
        [0.0]
    """
    weights = {(layer, index): weight for layer, index, weight in neuron_weights(neurons)}
    present = set(zip(frame["layer"].tolist(), frame["neuron"].tolist()))
    missing = sorted(set(weights) - present)
    if missing:
        raise InvalidArgumentError(
            f"the frame has no activations of {len(missing)} of these neurons (first: layer "
            f"{missing[0][0]}, neuron {missing[0][1]}); read them with token_activations()")
    keys = list(zip(frame["layer"].tolist(), frame["neuron"].tolist()))
    weighted = frame.assign(value=frame["activation"].to_numpy(np.float64)
                            * np.array([weights.get(key, 0.0) for key in keys]))
    grouped = weighted.groupby(["prompt", "position"], sort=True)
    result = grouped.agg(token=("token", "first"), in_template=("in_template", "first"),
                         value=("value", "sum"))
    return result.reset_index()
