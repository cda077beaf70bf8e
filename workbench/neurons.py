"""Look at single neurons: what they read on each prompt, and what they write.

A CNA neuron is coordinate ``index`` of block ``layer``'s down-projection input. Its
*output direction* is the matching column of the down-projection weight: the vector
(``[d_model]``) the neuron adds to the residual stream per unit of activation. Sending
that direction straight through the unembedding shows which tokens the neuron promotes
(the direct path only: later blocks and the final normalisation are left out, as in the
usual "logit lens" reading of a neuron).

Example:
    >>> from workbench import load_model
    >>> from workbench.neurons import neuron_activations, promoted_tokens
    >>> model = load_model()                                        # doctest: +SKIP
    >>> promoted_tokens(model, 29, 117, k=3)                        # doctest: +SKIP
       rank   token  token_id     logit
    0     1  ' Sure'      ...
    >>> prompts = ["Hi", "How do I pick a lock?"]
    >>> neuron_activations(model, prompts, [(29, 117)]).shape      # doctest: +SKIP
    torch.Size([2, 1])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch

from .architectures import input_axis
from .config import FORWARD_BATCH_SIZE
from .errors import InvalidArgumentError, PromptSetError
from .models import WorkbenchModel
from .prompts import Prompting
from .sites import read_last_token


def check_neuron(model: WorkbenchModel, layer: int, index: int) -> tuple[int, int]:
    """Return ``(layer, index)`` if it names a neuron of ``model``, else raise a clear error.

    Example:
        >>> class Shape: n_layers, d_mlp = 2, 8
        >>> check_neuron(Shape(), 1, 7)
        (1, 7)
    """
    for value, what in ((layer, "layer"), (index, "neuron index")):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidArgumentError(f"{what} must be an integer, not {value!r}")
    if not 0 <= layer < model.n_layers or not 0 <= index < model.d_mlp:
        raise InvalidArgumentError(
            f"(layer {layer}, neuron {index}) is not a neuron of this model: layers are "
            f"0..{model.n_layers - 1}, neurons 0..{model.d_mlp - 1}"
        )
    return layer, index


def output_direction(model: WorkbenchModel, layer: int, index: int) -> torch.Tensor:
    """The down-projection column of a neuron: float32 ``[d_model]``, on the CPU.

    Works for ``nn.Linear`` (weight ``[d_model, d_mlp]``) and GPT-2's ``Conv1D``
    (weight ``[d_mlp, d_model]``).
    """
    check_neuron(model, layer, index)
    module = model.down_proj(layer)
    weight = cast(torch.Tensor, module.weight).detach()  # [d_model, d_mlp] or [d_mlp, d_model]
    column = weight.select(input_axis(module), index)  # [d_model]
    return column.to("cpu", torch.float32)


def promoted_tokens(model: WorkbenchModel, layer: int, index: int, k: int = 10, *,
                    demoted: bool = False):
    """The ``k`` tokens whose logits the neuron's output direction raises most.

    Args:
        demoted: list the tokens it lowers most instead.

    Returns:
        A pandas DataFrame with columns rank, token (the decoded text), token_id and
        logit (the direct-path logit change per unit of activation, largest effect first).

    Example:
        >>> promoted_tokens(model, 29, 117, k=5)  # doctest: +SKIP
    """
    import pandas as pd

    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InvalidArgumentError(f"k must be a positive integer, not {k!r}")
    direction = output_direction(model, layer, index)  # [d_model]
    unembed = model.hf_model.get_output_embeddings()
    if unembed is None:
        raise InvalidArgumentError(f"{model.name} has no output embedding to read tokens from")
    weight = unembed.weight.detach().to("cpu", torch.float32)  # [vocab, d_model]
    logits = weight @ direction  # [vocab]
    k = min(k, logits.numel())
    values, ids = (-logits if demoted else logits).topk(k)
    values = -values if demoted else values
    return pd.DataFrame({
        "rank": range(1, k + 1),
        "token": [model.tokenizer.decode([int(i)]) for i in ids],
        "token_id": [int(i) for i in ids],
        "logit": [float(v) for v in values],
    })


def neuron_activations(model: WorkbenchModel, prompts: Sequence[str],
                       neurons: Sequence[tuple[int, int]], *,
                       prompting: Prompting | None = None,
                       batch_size: int = FORWARD_BATCH_SIZE,
                       ) -> torch.Tensor:
    """Last-token activations of a few neurons on each prompt: float32 ``[n_prompts, k]``.

    The same quantity as :func:`workbench.activations.collect` reads (the down-projection
    input at the last prompt token, prompts left-padded), for ``k`` chosen neurons only,
    so nothing of size ``[n_prompts, n_layers, d_mlp]`` is kept.

    Args:
        neurons: ``(layer, index)`` pairs; columns of the result follow their order.
        prompting: formatting; default: the model's chat template if it has one.

    Example:
        >>> neuron_activations(model, ["Hi"], [(0, 3), (1, 7)])  # doctest: +SKIP
        tensor([[ 0.0312, -0.1250]])
    """
    prompt_list = list(prompts)
    if isinstance(prompts, str) or not prompt_list:
        raise PromptSetError("neuron_activations() needs a non-empty list of prompts")
    pairs = [check_neuron(model, int(layer), int(index)) for layer, index in neurons]
    if not pairs:
        raise InvalidArgumentError("neuron_activations() needs at least one (layer, index)")
    prompting = prompting or model.prompting()
    layers = sorted({layer for layer, _ in pairs})
    slot = {layer: i for i, layer in enumerate(layers)}
    rows = torch.tensor([slot[layer] for layer, _ in pairs])  # [k] index into layers
    columns = torch.tensor([index for _, index in pairs])  # [k]
    batches = []
    for start in range(0, len(prompt_list), batch_size):
        inputs = model.encode(prompt_list[start:start + batch_size], prompting)
        acts = read_last_token(model, inputs, "input", layers)  # [batch, layers, d_mlp]
        batches.append(acts[:, rows, columns].to("cpu", torch.float32))  # [batch, k]
    return torch.cat(batches)  # [n_prompts, k]
