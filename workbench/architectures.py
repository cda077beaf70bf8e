"""Architecture adapters: where each model family keeps its MLP down-projection.

CNA reads and scales the *input* of the MLP down-projection, i.e. the post-activation
hidden vector of width ``d_mlp`` (``act_fn(gate_proj(x)) * up_proj(x)`` for gated MLPs,
``act(c_fc(x))`` for GPT-2). An adapter only needs two dotted paths: the list of
transformer blocks, and the down-projection module inside one block. Everything else
(reading, steering) is generic.

Directional ablation (:mod:`workbench.ablation`) also needs the two modules of a block
whose outputs are *added to the residual stream*: ``attn_out`` and ``mlp_out``. For most
families these are the attention and the MLP themselves; Gemma-2/3 and OLMo-2 normalise
each branch after it (``post_attention_layernorm``, ``post_feedforward_layernorm``), so
there the norm's output is what the residual stream receives.

Example:
    >>> from workbench.architectures import adapter_for_model_type
    >>> adapter_for_model_type("llama").down_proj
    'mlp.down_proj'

To support a new family, register an adapter before loading the model:

    >>> from workbench.architectures import ArchitectureAdapter, register_adapter
    >>> register_adapter(ArchitectureAdapter(            # doctest: +SKIP
    ...     name="my-arch", model_types=("my_arch",),
    ...     layers=("model.layers",), down_proj="mlp.down_proj",
    ...     attn_out="self_attn", mlp_out="mlp"))   # the defaults; needed for ablation only
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .errors import UnsupportedArchitectureError


@dataclass(frozen=True)
class ArchitectureAdapter:
    """Names the blocks and the MLP down-projection of one model family.

    Attributes:
        name: short family name shown to users.
        model_types: ``config.model_type`` values this adapter serves.
        layers: candidate dotted paths (from the top-level model) to the block list;
            the first that exists is used (multimodal wrappers nest the text model).
        down_proj: dotted path from one block to its down-projection module.
        attn_out: dotted path from one block to the module whose output is the attention
            branch's contribution to the residual stream (a tensor, or a tuple whose first
            element is that tensor).
        mlp_out: the same for the MLP branch.
        attn_proj: dotted path from one block to the attention's output projection, the
            linear layer whose output the attention returns (baking a direction
            projection changes its weights; the MLP's is ``down_proj``).
    """

    name: str
    model_types: tuple[str, ...]
    layers: tuple[str, ...]
    down_proj: str
    attn_out: str = "self_attn"
    mlp_out: str = "mlp"
    attn_proj: str = "self_attn.o_proj"


_GATED = ("model.layers", "model.language_model.layers", "language_model.model.layers")

ADAPTERS: dict[str, ArchitectureAdapter] = {}


def register_adapter(adapter: ArchitectureAdapter) -> ArchitectureAdapter:
    """Add (or replace) an adapter for each of its ``model_types``."""
    for model_type in adapter.model_types:
        ADAPTERS[model_type] = adapter
    return adapter


# Gemma-2/3 and OLMo-2 normalise each branch before adding it to the residual stream.
_POST_NORMS = dict(attn_out="post_attention_layernorm", mlp_out="post_feedforward_layernorm")

for _adapter in (
    ArchitectureAdapter("llama", ("llama",), _GATED, "mlp.down_proj"),
    ArchitectureAdapter("mistral", ("mistral",), _GATED, "mlp.down_proj"),
    ArchitectureAdapter("qwen2", ("qwen2",), _GATED, "mlp.down_proj"),
    ArchitectureAdapter("qwen3", ("qwen3",), _GATED, "mlp.down_proj"),
    ArchitectureAdapter("gemma", ("gemma",), _GATED, "mlp.down_proj"),
    ArchitectureAdapter("gemma2", ("gemma2",), _GATED, "mlp.down_proj", **_POST_NORMS),
    ArchitectureAdapter("gemma3", ("gemma3", "gemma3_text"), _GATED, "mlp.down_proj",
                        **_POST_NORMS),
    ArchitectureAdapter("phi3", ("phi3",), _GATED, "mlp.down_proj"),
    ArchitectureAdapter("olmo", ("olmo",), _GATED, "mlp.down_proj"),
    ArchitectureAdapter("olmo2", ("olmo2",), _GATED, "mlp.down_proj", **_POST_NORMS),
    ArchitectureAdapter("gpt2", ("gpt2",), ("transformer.h",), "mlp.c_proj", attn_out="attn",
                        attn_proj="attn.c_proj"),
    ArchitectureAdapter("gpt_neox", ("gpt_neox",), ("gpt_neox.layers",), "mlp.dense_4h_to_h",
                        attn_out="attention", attn_proj="attention.dense"),
):
    register_adapter(_adapter)


def supported_model_types() -> list[str]:
    """The ``config.model_type`` values that have an adapter."""
    return sorted(ADAPTERS)


def adapter_for_model_type(model_type: str, model_class: str | None = None) -> ArchitectureAdapter:
    """The adapter for ``model_type``; a helpful error if there is none."""
    try:
        return ADAPTERS[model_type]
    except KeyError:
        shown = model_class or model_type
        raise UnsupportedArchitectureError(
            f"{shown} (model_type {model_type!r}) is not supported: CNA needs to know where its "
            f"MLP down-projection is. Supported model types: {', '.join(supported_model_types())}. "
            "To add one, call workbench.register_adapter(ArchitectureAdapter(name=..., "
            f"model_types=({model_type!r},), layers=('model.layers',), "
            "down_proj='mlp.down_proj')) with the paths of your model's blocks and down-projection."
        ) from None


def get_path(root: Any, dotted: str) -> Any:
    """Follow a dotted attribute path; numeric parts index into lists."""
    obj = root
    for part in dotted.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


def find_layers_path(model: torch.nn.Module, adapter: ArchitectureAdapter) -> str:
    """The first of the adapter's candidate block-list paths that exists in ``model``."""
    for path in adapter.layers:
        try:
            layers = get_path(model, path)
        except AttributeError:
            continue
        if isinstance(layers, torch.nn.ModuleList):
            return path
    raise UnsupportedArchitectureError(
        f"{type(model).__name__}: none of the block paths {adapter.layers} of the "
        f"{adapter.name!r} adapter exists in this model; register an adapter with the right path"
    )


def input_axis(linear: torch.nn.Module) -> int:
    """The weight axis of a linear layer's input features, for ``nn.Linear`` and GPT-2's
    ``Conv1D``: 1 for ``nn.Linear`` (weight ``[out, in]``), 0 for ``Conv1D``, which stores
    its weight transposed (``[in, out]``). For a down-projection the inputs are the MLP's
    neurons; the other axis is the residual stream.

    Example:
        >>> input_axis(torch.nn.Linear(8, 4)), torch.nn.Linear(8, 4).weight.shape[1]
        (1, 8)
    """
    if isinstance(linear, torch.nn.Linear):
        return 1
    if type(linear).__name__ == "Conv1D" and hasattr(linear, "nx"):
        return 0
    raise UnsupportedArchitectureError(
        f"cannot tell which weight axis of {type(linear).__name__} holds its inputs; only "
        "nn.Linear and GPT-2's Conv1D are known")


def mlp_width(down_proj: torch.nn.Module) -> int:
    """Width of the down-projection's input (``d_mlp``), for Linear and GPT-2 Conv1D."""
    # Plain int attributes, which torch types as Tensor | Module (as any attribute of a Module).
    width = down_proj.in_features if input_axis(down_proj) == 1 else down_proj.nx
    return int(width)  # type: ignore[arg-type]
