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
accumulated in another order: outputs differ from ``sgemm``'s in the last bits (the
tests hold logits within 1e-4), which can flip a greedy token where two logits almost tie.

- It applies to float32 models on CPU that run in this process (not ``remote=``, whose
  calls are nnsight traces), to the plain ``nn.Linear`` layers that run their class's
  ``forward`` (nnsight's pass-through one included, see :func:`_runs_class_forward`);
  anything else runs unchanged. Nothing inside the block may start an nnsight trace.
- The packed layout is laid out for decode steps (a few dozen rows of one position each);
  a pass over several positions (a prefill) or of more than :data:`PLAIN_ABOVE_ROWS` rows
  runs on the plain layer (see :func:`takes_plain_path`). So does each layer's first
  decode-sized call in a block: the language-model head's part of a prefill (its last
  position only) is one, so the first token never waits for the weights to be checked.
- Each packed weight is kept for the next block (as much memory again as the linear
  weights, for as long as the model lives) with a fingerprint of the weight: its product
  with a fixed random vector, one read of the weight at its first packed call in a
  block. A weight whose fingerprint changed is packed again, so an edit between blocks is
  seen however it was made (``.data`` and peft's merges included); only a change that leaves that
  product's float32 value as it was (one below its rounding, or exactly orthogonal to
  the vector) could go unseen. The weights must not change inside the block.
- The packed copies cost as much memory again as the float32 linear weights (measured on
  SmolLM2-135M-Instruct: resident memory 927 MB after a greedy ``generate`` unpacked,
  1,442 MB packed). Before packing, a block checks that the copies it would add fit in the
  memory available (``MemAvailable``) with :data:`MEMORY_HEADROOM` of the machine's
  memory left over; if not, the layers run unpacked and a warning says so, once per model.
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
import warnings
import weakref
from collections.abc import Iterator
from typing import Any, TypeGuard

import torch
from torch import nn

from .probe import fixed_probe
from .sites import replaced_forwards

#: Each layer's packed weight, with the fingerprint of the weight it was packed from.
_PACKED: weakref.WeakKeyDictionary[nn.Linear, tuple[torch.Tensor, torch.Tensor]] = \
    weakref.WeakKeyDictionary()

__all__ = ["ENV_SWITCH", "MEMORY_HEADROOM", "PACKED_FOR_ROWS", "PLAIN_ABOVE_ROWS",
           "available_memory", "enabled", "kernel_works", "packed_linears", "takes_plain_path"]

#: Share of the machine's memory that packing leaves free: a block packs only if the
#: copies it adds fit in the available memory minus this share of the total.
MEMORY_HEADROOM = 0.15

#: Models already warned that their packed copies would not fit.
_WARNED: weakref.WeakSet[Any] = weakref.WeakSet()

#: Environment variable that turns packing off when set to ``0`` (or ``false``, ``no``, ``off``).
ENV_SWITCH = "CNA_PACKED_LINEARS"

#: Rows the packed layout is tuned for (a decode step at batch size 32; it works for any).
PACKED_FOR_ROWS = 32
#: Inputs with more rows than this (prefill of a batch) run on the plain layer: from about
#: 128 rows on, ``sgemm`` is as fast or faster than the layout packed for decode steps.
PLAIN_ABOVE_ROWS = 128


def enabled() -> bool:
    """Whether :func:`packed_linears` packs (``CNA_PACKED_LINEARS`` is not ``0``) and can."""
    switch = os.environ.get(ENV_SWITCH, "1").strip().lower()
    return switch not in ("0", "false", "no", "off") \
        and bool(torch.backends.mkldnn.enabled) and kernel_works()


def available_memory() -> tuple[int, int] | None:
    """``(available, total)`` bytes of memory on this machine, from ``/proc/meminfo``
    (Linux); None where it cannot be read.

    Example:
        >>> info = available_memory()
        >>> info is None or 0 < info[0] <= info[1]
        True
    """
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            fields = dict(line.split(":", 1) for line in handle if ":" in line)
        kib = {key: int(fields[key].split()[0]) for key in ("MemAvailable", "MemTotal")}
    except (OSError, KeyError, ValueError, IndexError):
        return None
    return kib["MemAvailable"] * 1024, kib["MemTotal"] * 1024


def _copies_fit(model: Any, layers: list[nn.Linear]) -> bool:
    """Whether the packed copies ``layers`` still need fit in memory; warns once if not."""
    needed = sum(layer.weight.numel() * layer.weight.element_size() for layer in layers
                 if layer not in _PACKED)
    memory = available_memory()
    if not needed or memory is None:
        return True
    available, total = memory
    if needed <= available - MEMORY_HEADROOM * total:
        return True
    try:
        first_time = model not in _WARNED
        _WARNED.add(model)
    except TypeError:  # not weak-referenceable: warn every time
        first_time = True
    if first_time:
        name = getattr(model, "name", type(model).__name__)
        warnings.warn(
            f"packing the float32 linear layers of {name} for generation would add "
            f"{needed / 2**30:.2f} GiB and {available / 2**30:.2f} GiB of "
            f"{total / 2**30:.1f} GiB are available: they run unpacked (decoding is slower; "
            f"free memory, or set {ENV_SWITCH}=0 to turn packing off)", stacklevel=4)
    return False


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
    if type(module) is not nn.Linear:  # first: the attribute lookups below are slow
        return False
    weight = getattr(module, "weight", None)
    return (_runs_class_forward(module)
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


def takes_plain_path(input: torch.Tensor) -> bool:
    """Whether a packed layer hands ``input`` to the plain ``nn.Linear.forward``.

    It does with gradients enabled (the kernel tracks none), under CPU autocast, for
    inputs that are not float32 on CPU, for more than :data:`PLAIN_ABOVE_ROWS` rows, and
    for passes over several positions (``[batch, pos > 1, in]``: a prefill, where the
    packed layout gains little, and whose first token then never waits for packing).

    Example:
        >>> with torch.no_grad():
        ...     [takes_plain_path(torch.zeros(shape)) for shape in [(32, 1, 8), (1, 45, 8)]]
        [False, True]
    """
    return (torch.is_grad_enabled() or torch.is_autocast_enabled("cpu")
            or input.dtype != torch.float32 or input.device.type != "cpu"
            or (input.dim() == 3 and input.shape[1] > 1)
            or input.numel() > PLAIN_ABOVE_ROWS * input.shape[-1])


def _kernel(input: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(input, packed, bias, "none", [], "")


def _packed_weight(layer: nn.Linear) -> torch.Tensor:
    """The layer's weight in oneDNN's blocked layout, packed again if the weight changed."""
    weight = layer.weight.detach()  # [out, in]
    fingerprint = weight @ fixed_probe(weight.shape[1])  # [out]
    cached = _PACKED.get(layer)
    if cached is None or not torch.equal(cached[0], fingerprint):
        cached = _PACKED[layer] = (fingerprint, torch.ops.mkldnn._reorder_linear_weight(
            weight, PACKED_FOR_ROWS))
    return cached[1]


class _PackedForward:
    """A layer's ``forward`` inside the block: ``nn.Linear.forward`` on the packed weight.

    The first call that could use the kernel runs on the plain layer (it may be the one
    a first token waits for); the weight is checked, and packed if needed, at the second.
    """

    def __init__(self, layer: nn.Linear) -> None:
        self.layer = layer
        self.packed: torch.Tensor | None = None
        self.deferred = False  # whether the first kernel-sized call has run (plainly)

    def __call__(self, input: torch.Tensor) -> torch.Tensor:  # nn.Linear.forward's name
        if takes_plain_path(input):
            return nn.Linear.forward(self.layer, input)
        if not self.deferred:
            self.deferred = True
            return nn.Linear.forward(self.layer, input)
        if self.packed is None:
            self.packed = _packed_weight(self.layer)
        bias = self.layer.bias.detach() if self.layer.bias is not None else None
        return _kernel(input, self.packed, bias)


@contextlib.contextmanager
def packed_linears(model: nn.Module | Any) -> Iterator[None]:
    """Run ``model``'s float32 CPU linear layers on packed oneDNN weights inside the block.

    ``model`` is an ``nn.Module`` or anything with an ``hf_model`` (a
    :class:`workbench.models.WorkbenchModel`). Layers keep their hooks; the block restores
    every layer's ``forward`` when it exits, whatever the reason. Weights are packed at
    their first packed call in the block, or taken from an earlier block when unchanged;
    they must not change inside.
    Without :func:`enabled` (or with nothing to pack, or when the packed copies would not
    fit in memory: a warning says so once per model) it changes nothing. The inputs of
    :func:`takes_plain_path` (with gradients enabled, for instance), and each layer's first
    input that could take the kernel, run on the plain layer.

    Example:
        >>> layer = torch.nn.Linear(8, 4)
        >>> with packed_linears(layer):
        ...     type(vars(layer)["forward"]).__name__
        '_PackedForward'
        >>> "forward" in vars(layer)
        False
    """
    module = getattr(model, "hf_model", model)
    if not isinstance(module, nn.Module) or getattr(model, "remote", False) or not enabled():
        yield
        return
    layers = [layer for layer in module.modules() if _packable(layer)]
    if not _copies_fit(model, layers):
        yield
        return
    ours: dict[nn.Module, Any] = {layer: _PackedForward(layer) for layer in layers}
    # the hooked runs of other threads wait for the block (replaced_forwards holds the lock)
    with replaced_forwards(model, ours):
        yield
