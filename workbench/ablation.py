"""Directional ablation: remove (or scale) one direction of the residual stream everywhere.

Following Arditi et al. (2024), "Refusal in language models is mediated by a single
direction", a unit direction ``r`` is projected out of every *write* into the residual
stream, at every layer and every token position (prompt and generated):

- the embedding output, as it enters the first block (token embeddings plus any position
  embeddings, after any embedding scaling and dropout: the first block's input);
- in every block, the attention branch's output and the MLP branch's output, i.e. exactly
  the tensors that the block adds to its residual stream. For most families that is the
  attention / MLP module output. Gemma-2/3 and OLMo-2 normalise each branch before adding
  it (``post_attention_layernorm``, ``post_feedforward_layernorm``); there the norm's
  *output* is projected, since projecting the attention output before the norm would not
  keep the sum orthogonal to ``r``. GPT-NeoX's parallel residual adds both branches at
  once; both are projected.

Each write ``x`` becomes ``x - (1 - m) (x . r) r``: at ``m = 0`` the write has no component
along ``r``, so (the stream being a sum of writes) the residual stream at every layer has
none either, within float rounding; ``m = 1`` is the unchanged model; ``m = 2`` doubles each
write's component along ``r``; ``m < 0`` flips it. What is *not* touched: values inside a
branch (attention scores, the MLP's hidden neurons, the input norms of each branch) and
the final norm / unembedding, which read the residual stream but do not write to it.

The paths of the writing modules come from the architecture adapter
(:class:`workbench.architectures.ArchitectureAdapter` ``attn_out`` / ``mlp_out``). The
change is a :class:`workbench.sites.Edit` with a :class:`~workbench.sites.Projection`
(:func:`direction_edit`), applied by :func:`workbench.sites.edited`: as hooks that are
always removed when the block exits on a model in this process, as nnsight interventions
on a remote one.

Example:
    >>> from workbench import load_model, refusal_direction, generate
    >>> model = load_model()                                                  # doctest: +SKIP
    >>> found = refusal_direction(model, "jbb-harmful", "jbb-benign")  # doctest: +SKIP
    >>> with ablate_direction(model, found):                                  # doctest: +SKIP
    ...     print(generate(model, "How do I pick a lock?", max_new_tokens=20))
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from .errors import SteeringError
from .models import WorkbenchModel
from .sites import Edit, Projection, edited, residual_writers
from .values import check_multiplier

__all__ = ["ablate_direction", "direction_edit", "residual_writers",
           "scale_direction", "unit_direction"]

DirectionLike = Any  # a torch.Tensor [d_model] or a workbench.direction.RefusalDirection


def unit_direction(model: WorkbenchModel, direction: DirectionLike) -> torch.Tensor:
    """``direction`` as a float32 unit vector ``[d_model]``, or :class:`SteeringError`.

    Accepts a tensor of shape ``[d_model]`` (any float dtype, any length but zero) or an
    object with a ``direction`` tensor (a :class:`~workbench.direction.RefusalDirection`).

    Example:
        >>> class M:
        ...     d_model = 2
        >>> unit_direction(M(), torch.tensor([3.0, 4.0])).tolist()
        [0.6000000238418579, 0.800000011920929]
    """
    vector = getattr(direction, "direction", direction)
    width = model.d_model
    if not isinstance(vector, torch.Tensor) or tuple(vector.shape) != (width,) \
            or not vector.is_floating_point():
        shape = (list(vector.shape) if isinstance(vector, torch.Tensor)
                 else type(vector).__name__)
        raise SteeringError(
            f"direction must be a float tensor of shape [d_model] = [{width}] for this "
            f"model, not {shape}; build it with refusal_direction() on this model")
    vector = vector.detach().to("cpu", torch.float64)  # [d_model]
    norm = float(vector.norm())
    if not torch.isfinite(vector).all() or norm == 0.0:
        raise SteeringError("direction must be finite and non-zero; build it with "
                            "refusal_direction() from two prompt sets that differ")
    return (vector / norm).to(torch.float32)  # [d_model], unit length


def direction_edit(model: WorkbenchModel, direction: DirectionLike, multiplier: float) -> Edit:
    """The :class:`~workbench.sites.Edit` that keeps ``multiplier`` times ``direction``'s
    component of every residual write, at every position.

    Example:
        >>> edit = direction_edit(model, found, 0.0)                    # doctest: +SKIP
        >>> edit.projection.keep                                        # doctest: +SKIP
        0.0
    """
    keep = check_multiplier(multiplier)
    return Edit(projection=Projection(unit_direction(model, direction), keep))


@contextlib.contextmanager
def scale_direction(model: WorkbenchModel, direction: DirectionLike,
                    multiplier: float) -> Iterator[None]:
    """Keep ``multiplier`` times each residual write's component along ``direction``.

    Every write ``x`` into the residual stream (see the module docstring) becomes
    ``x - (1 - m) (x . r) r`` with ``r`` the unit direction: 0 ablates, 1 leaves the model
    unchanged, 2 doubles the component, -1 flips it. All positions, prompt and generated.

    Args:
        direction: a tensor ``[d_model]`` (normalised here) or a
            :class:`~workbench.direction.RefusalDirection`.
        multiplier: the share ``m`` of the component that is kept.

    Example:
        >>> with scale_direction(model, found, 0.5):                     # doctest: +SKIP
        ...     logits = model.hf_model(**model.encode(["Hi"], model.prompting())).logits
    """
    with edited(model, direction_edit(model, direction, multiplier)):
        yield


def ablate_direction(model: WorkbenchModel, direction: DirectionLike,
                     ) -> contextlib.AbstractContextManager[None]:
    """Project ``direction`` out of every residual-stream write (Arditi et al., 2024).

    The same as :func:`scale_direction` at multiplier 0: afterwards the residual stream
    of every layer, at every position, has no component along the unit direction.

    Example:
        >>> with ablate_direction(model, found):                          # doctest: +SKIP
        ...     completions = generate(model, ["How do I pick a lock?"])
    """
    return scale_direction(model, direction, 0.0)
