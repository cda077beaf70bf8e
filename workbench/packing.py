"""Linear layers through oneDNN with prepacked weights, for generation on CPU.

On CPU, PyTorch runs a float32 ``nn.Linear`` as a BLAS ``sgemm`` (MKL in the PyPI wheels).
A decode step multiplies a few dozen rows by every weight matrix, and there oneDNN's
matmul on a weight reordered once into its blocked layout is faster, most of all for a
wide language-model head (``benchmarks/bench_linear.py`` measures each layer,
``benchmarks/bench_generation.py`` what it does to generation; figures in
``docs/benchmarks.md``). It is the kernel that ``torch.compile``'s CPU backend
emits for a frozen linear layer (``torch.ops.mkldnn._linear_pointwise`` on a weight from
``torch.ops.mkldnn._reorder_linear_weight``), called here without compiling anything.

:func:`packed_linears` swaps it in for the duration of a ``with`` block, by giving each
plain ``nn.Linear`` of the model an instance ``forward`` (and deleting it afterwards), so
module hooks, steering included, act exactly as before. The sums are the same products
accumulated in another order: outputs differ from ``sgemm``'s in the last bits (about
1e-6 relative), which can flip a greedy token where two logits almost tie.

- It applies to float32 models on CPU that run in this process (not ``remote=``, whose
  calls are nnsight traces), to the plain ``nn.Linear`` layers that run their class's
  ``forward`` (nnsight's pass-through one included, see :func:`_runs_class_forward`);
  anything else runs unchanged. Nothing inside the block may start an nnsight trace.
- The packed layout is laid out for decode steps (a few dozen rows); an input of more than
  :data:`PLAIN_ABOVE_ROWS` rows (a batch's prefill) runs on the plain layer, which is as
  fast there.
- Each packed weight is kept (as much memory again as the linear weights) and re-packed
  when the weight changes (its version counter or storage), so edits of the weights are
  never missed.
- ``CNA_PACKED_LINEARS=0`` in the environment turns it off (read at each block).
- On its first use it checks the kernel against ``torch.nn.functional.linear`` on a small
  random layer, and if the kernel is missing or disagrees it stays off.

Example:
    >>> import torch
    >>> layer = torch.nn.Linear(8, 4)
    >>> x = torch.randn(3, 8)
    >>> with packed_linears(layer), torch.no_grad():
    ...     y = layer(x)
    >>> bool(torch.allclose(y, torch.nn.functional.linear(x, layer.weight, layer.bias),
    ...                     atol=1e-5))
    True
    >>> "forward" in vars(layer)
    False
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import weakref
from collections.abc import Iterator
from typing import Any, TypeGuard

import torch
from torch import nn

__all__ = ["ENV_SWITCH", "PACKED_FOR_ROWS", "PLAIN_ABOVE_ROWS", "enabled", "kernel_works",
           "packed_linears"]

#: Environment variable that turns packing off when set to ``0`` (or ``false``, ``no``, ``off``).
ENV_SWITCH = "CNA_PACKED_LINEARS"

#: Packed weight of each layer, with the weight's (storage, version) it was packed from.
_PACKED: weakref.WeakKeyDictionary[nn.Linear, tuple[tuple[int, int], torch.Tensor]] = \
    weakref.WeakKeyDictionary()
_GUARD = threading.Lock()

#: Rows the packed layout is tuned for (a decode step at batch size 32; it works for any).
PACKED_FOR_ROWS = 32
#: Inputs with more rows than this (prefill of a batch) run on the plain layer: from about
#: 128 rows on, ``sgemm`` is as fast or faster than the layout packed for decode steps.
PLAIN_ABOVE_ROWS = 128


def enabled() -> bool:
    """Whether :func:`packed_linears` packs (``CNA_PACKED_LINEARS`` is not ``0``) and can."""
    switch = os.environ.get(ENV_SWITCH, "1").strip().lower()
    return switch not in ("0", "false", "no", "off") and kernel_works()


@functools.cache
def kernel_works() -> bool:
    """Whether oneDNN's packed linear exists here and agrees with ``F.linear`` (checked once)."""
    if not torch.backends.mkldnn.is_available():
        return False
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(24, 16, generator=generator)  # [out, in]
    bias = torch.randn(24, generator=generator)
    x = torch.randn(2, 5, 16, generator=generator)  # [batch, pos, in]
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(weight, 10)
        y = torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")
    except (AttributeError, RuntimeError):
        return False
    expected = torch.nn.functional.linear(x, weight, bias)
    return y.shape == expected.shape and bool(torch.allclose(y, expected, atol=1e-4))


def _packable(module: nn.Module) -> TypeGuard[nn.Linear]:
    weight = getattr(module, "weight", None)
    return (type(module) is nn.Linear and _runs_class_forward(module)
            and isinstance(weight, torch.Tensor) and weight.device.type == "cpu"
            and weight.dtype == torch.float32 and weight.dim() == 2)


def _runs_class_forward(module: nn.Module) -> bool:
    """No ``forward`` of its own, or one that only wraps ``nn.Linear.forward``.

    nnsight installs a pass-through ``forward`` on every module it has traced (it calls
    the class's ``forward`` when no trace runs, and names it as ``__wrapped__``); a
    ``forward`` that wraps anything else (accelerate's offload hooks wrap the bound
    method) is left alone.
    """
    own = vars(module).get("forward")
    return own is None or getattr(own, "__wrapped__", None) is nn.Linear.forward


def _packed_weight(module: nn.Linear) -> torch.Tensor:
    weight = module.weight.detach()  # [out, in]
    stamp = (weight.untyped_storage().data_ptr(), module.weight._version)
    with _GUARD:
        cached = _PACKED.get(module)
        if cached is None or cached[0] != stamp:
            cached = _PACKED[module] = (stamp, torch.ops.mkldnn._reorder_linear_weight(
                weight, PACKED_FOR_ROWS))
    return cached[1]


def _forward(module: nn.Linear, packed: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if (torch.is_grad_enabled() or x.dtype != torch.float32 or x.device.type != "cpu"
            or x.numel() > PLAIN_ABOVE_ROWS * x.shape[-1]):
        return nn.Linear.forward(module, x)  # autograd, other dtypes, prefill: the plain path
    bias = module.bias.detach() if module.bias is not None else None
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


@contextlib.contextmanager
def packed_linears(model: nn.Module | Any) -> Iterator[None]:
    """Run ``model``'s float32 CPU linear layers on packed oneDNN weights inside the block.

    ``model`` is an ``nn.Module`` or anything with an ``hf_model`` (a
    :class:`workbench.models.WorkbenchModel`). Layers keep their hooks; the block restores
    every layer's ``forward`` when it exits, whatever the reason. Weights are packed on
    entry (or taken from the cache when unchanged since), so they must not change inside. Without
    :func:`enabled` (or with nothing to pack) it changes nothing. Gradients are not tracked
    through the kernel: a call with gradients enabled takes the plain path.

    Example:
        >>> with packed_linears(torch.nn.Linear(8, 4)):  # doctest: +SKIP
        ...     ...
    """
    module = getattr(model, "hf_model", model)
    swapped: list[tuple[nn.Linear, Any]] = []  # each layer with its own forward, if any
    try:
        if isinstance(module, nn.Module) and not getattr(model, "remote", False) \
                and enabled():
            for layer in module.modules():
                if _packable(layer):
                    swapped.append((layer, vars(layer).get("forward")))
                    layer.forward = functools.partial(  # type: ignore[method-assign]
                        _forward, layer, _packed_weight(layer))
        yield
    finally:
        for layer, own in swapped:
            if own is None:
                del layer.forward
            else:
                layer.forward = own  # type: ignore[method-assign]
