"""Activation sites: the one module that reads or changes activations inside a model.

A *site* is a tensor that flows through every block ``layer`` of the model:

- ``"input"``: the MLP down-projection's input, ``[batch, pos, d_mlp]``: CNA's neurons;
- ``"output"``: the down-projection's output, ``[batch, pos, d_model]``: the MLP's write
  into the residual stream, which CAA shifts;
- ``"residual"``: the residual stream entering the block, ``[batch, pos, d_model]``.

**Reading** always goes through an nnsight trace (:func:`read_last_token`, or
:func:`read_last_positions` for the last few positions, :func:`read_neurons` for a
few neurons at every position), so the same
code reads a model in memory, the serialised local simulation of NDIF
(``remote="local"``) and a model hosted on NDIF (``remote=True``).

**Changing** is described once, as an :class:`Edit`: per-layer factors on the
down-projection input and per-layer vectors added to its output, at some token
positions. :func:`edited` applies an edit for the duration of a ``with`` block, in one
of two ways, decided here and nowhere else:

- a model in this process gets PyTorch forward hooks. They act on every forward pass,
  whoever makes it: :func:`workbench.generate`, a user's ``hf_model.generate``, a plain
  forward call, an nnsight trace, a widget's streaming generation.
- a remote model (``remote=True`` or ``"local"``) gets no hooks, which could not run on a
  server. The edit is recorded on the model, and every traced call made inside the block
  (:func:`read_last_token`, :func:`traced_generate`) carries it as nnsight interventions
  (``down_proj.input[:] *= factor``), in the order the hooks would apply it.

Both ways scale with the same factor tensors and the same multiplication, so a remote run
and a hooked run of one edit give the same numbers. Other edits of the residual stream
(:mod:`workbench.ablation`) register their hooks through :func:`hooked`.

Example:
    >>> import torch
    >>> edit = Edit(scales={1: torch.tensor([1.0, 0.0, 1.0])})
    >>> edit.layers(), edit.applies_at(step=0), edit.positions
    ([1], True, 'all')
"""

from __future__ import annotations

import contextlib
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import nnsight
import torch
from transformers import Cache

from . import remote as remote_runs
from .errors import SteeringError
from .locks import model_lock
from .models import WorkbenchModel
from .values import POSITIONS as POSITIONS  # re-exported: workbench.sites.POSITIONS
from .values import Positions, check_positions

Site = Literal["input", "output", "residual"]
SITES: tuple[Site, ...] = ("input", "output", "residual")

#: nnsight warns when an open ``tracer.all()`` loop outlives the generation; by design.
_OPEN_LOOP_WARNING = ".*was never reached.*"


@dataclass(frozen=True, eq=False)  # compared by identity: tensors have no truth value
class Edit:
    """A change to every forward pass: scale down-projection inputs, add to its outputs.

    Attributes:
        scales: layer -> factor ``[d_mlp]`` that multiplies the down-projection input
            (1 leaves a neuron unchanged, 0 ablates it).
        additions: layer -> vector ``[d_model]`` added to the down-projection output.
        positions: which token positions: ``"all"``, the ``"prompt"`` only, or the
            ``"generated"`` tokens only (see :class:`Phase`).

    Example:
        >>> edit = Edit(scales={0: torch.ones(4)}, positions="generated")
        >>> edit.applies_at(step=0), edit.applies_at(step=3)
        (False, True)
    """

    scales: Mapping[int, torch.Tensor] = field(default_factory=dict)
    additions: Mapping[int, torch.Tensor] = field(default_factory=dict)
    positions: Positions = "all"

    def __post_init__(self) -> None:
        check_positions(self.positions)

    def layers(self) -> list[int]:
        """The layers this edit touches, ascending."""
        return sorted(set(self.scales) | set(self.additions))

    def applies_at(self, step: int) -> bool:
        """Whether the edit acts in generation step ``step`` (0 is the prompt pass)."""
        if self.positions == "all":
            return True
        return (step == 0) == (self.positions == "prompt")


# -- hooks (models in this process) --------------------------------------------


class Phase:
    """Tells, for each forward pass, which of its token positions belong to the prompt.

    A forward pre-hook on the whole model sees every pass, whoever makes it (our
    :func:`workbench.generate`, a user's ``hf_model.generate``, a plain forward call). It
    places the pass's ``n`` tokens at absolute positions ``offset .. offset + n - 1`` from
    two facts that do not depend on how ``generate`` names or passes its private
    arguments:

    - a KV cache handed to the model (any :class:`transformers.Cache` argument, whatever
      the keyword) already holds ``cache.get_seq_length()`` positions: ``offset`` is that;
    - without a cache (``use_cache=False``), a pass whose token ids extend the previous
      pass's ids re-reads that sequence plus the tokens generated since.

    A pass that starts a new sequence (empty or no cache, ids that do not extend the last
    pass) is a prompt pass, and its length is the prompt length. A pass on a cache inside
    :func:`continuing_prompt` (the rest of prompts after a shared prefix) extends the
    prompt. Positions at or beyond the prompt length are generated tokens. Known limit: a
    ``generate`` call that continues a cache returned by an earlier call counts its new
    prompt tokens as generated.

    Example:
        >>> phase = Phase()
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

    def hook(self, _module: torch.nn.Module | None, args: tuple, kwargs: dict) -> None:
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
        elif cache is not None and cache in _CONTINUING_PROMPTS:
            self.prompt_length = offset + n
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
        """Which positions of the current pass to edit: True (all), False (none) or a mask.

        The mask is ``[pos]`` bool. Before any whole-model pass has been seen (a submodule
        called on its own), every position counts as prompt.
        """
        if positions == "all":
            return True
        if self.generated is None:
            return positions == "prompt"
        return self.generated if positions == "generated" else ~self.generated


#: Caches whose next passes continue the prompt (see :func:`continuing_prompt`).
_CONTINUING_PROMPTS: weakref.WeakSet[Cache] = weakref.WeakSet()


@contextlib.contextmanager
def continuing_prompt(cache: Cache) -> Iterator[None]:
    """Passes on ``cache`` inside the block add prompt tokens, not generated ones.

    For a decoder that prefills a shared prompt prefix once and then the rest of each
    prompt on a copy of its cache: without this, :class:`Phase` would count the rest as
    generated, since the cache already holds positions.

    Example:
        >>> from transformers import DynamicCache
        >>> cache = DynamicCache()
        >>> with continuing_prompt(cache):
        ...     cache in _CONTINUING_PROMPTS
        True
    """
    _CONTINUING_PROMPTS.add(cache)
    try:
        yield
    finally:
        _CONTINUING_PROMPTS.discard(cache)


Hook = tuple[torch.nn.Module, Callable[..., Any]]


@contextlib.contextmanager
def hooked(model: WorkbenchModel, *, pre: Sequence[Hook] = (), post: Sequence[Hook] = (),
           pre_with_kwargs: Sequence[Hook] = ()) -> Iterator[None]:
    """Register forward hooks on submodules of ``model`` for the block; always remove them.

    ``pre`` are forward pre-hooks ``hook(module, args)``, ``pre_with_kwargs`` pre-hooks
    ``hook(module, args, kwargs)``, ``post`` forward hooks ``hook(module, args, output)``;
    they are registered in that order. The model's lock is held while they are in place,
    so a widget's background generation never runs with (or under) a cell's
    ``with steer(...)`` block. A remote model cannot run hooks: it is refused.
    """
    if model.remote:
        raise SteeringError(
            f"{model.name} runs remotely (remote={model.remote!r}), where PyTorch hooks cannot "
            "run; this edit has no nnsight form yet: load the model locally for it")
    handles = []
    with model_lock(model):
        try:
            for module, hook in pre:
                handles.append(module.register_forward_pre_hook(hook))
            for module, hook in pre_with_kwargs:
                handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
            for module, hook in post:
                handles.append(module.register_forward_hook(hook))
            yield
        finally:
            for handle in handles:
                handle.remove()


def _scale_hook(factor: torch.Tensor, phase: Phase, positions: Positions) -> Callable:
    """A pre-hook multiplying the down-projection input by ``factor`` ``[d_mlp]``."""

    def scale_input(_module: torch.nn.Module, args: tuple) -> tuple | None:
        hidden = args[0]  # [batch, pos, d_mlp]
        scale = factor.to(hidden.dtype)  # [d_mlp]
        selected = phase.selected(positions)  # True, False or [pos] bool
        if selected is False:
            return None
        if isinstance(selected, torch.Tensor):
            if selected.shape[0] != hidden.shape[1]:
                raise SteeringError(
                    f"positions={positions!r}: this pass has {hidden.shape[1]} positions "
                    f"but the model call had {selected.shape[0]}; call the whole model "
                    "(not a submodule), or use positions='all'")
            scale = torch.where(selected.to(hidden.device)[:, None], scale,
                                torch.ones_like(scale))  # [pos, d_mlp]
        return (hidden * scale,) + tuple(args[1:])

    return scale_input


def _add_hook(delta: torch.Tensor) -> Callable:
    """A forward hook adding ``delta`` ``[d_model]`` to the down-projection output."""

    def add(_module: torch.nn.Module, _args: tuple, output: torch.Tensor) -> torch.Tensor:
        return output + delta.to(output.dtype)

    return add


@contextlib.contextmanager
def edited(model: WorkbenchModel, edit: Edit) -> Iterator[None]:
    """Apply ``edit`` to every forward pass of ``model`` made inside the block.

    A model in this process gets hooks (removed when the block exits, whatever the
    reason); a remote model records the edit for the traced calls of the block.

    Example:
        >>> with edited(model, Edit(scales={29: factor})):            # doctest: +SKIP
        ...     logits = model.hf_model(**inputs).logits
    """
    if model.remote:
        with model_lock(model):
            model.edits.append(edit)
            try:
                yield
            finally:
                model.edits.remove(edit)
        return
    phase = Phase()
    pre, post, whole = [], [], []
    if edit.positions != "all":
        whole.append((model.hf_model, phase.hook))
    for layer in edit.layers():
        module = model.down_proj(layer)
        device = next(module.parameters()).device  # a layer of a model spread over devices
        if layer in edit.scales:
            factor = edit.scales[layer].to(device)
            pre.append((module, _scale_hook(factor, phase, edit.positions)))
        if layer in edit.additions:
            post.append((module, _add_hook(edit.additions[layer].to(device))))
    with hooked(model, pre_with_kwargs=whole, pre=pre, post=post):
        yield


# -- nnsight (reading everywhere, editing remote models) ------------------------


def _plan(model: WorkbenchModel, step: int) -> dict[int, tuple[list, list]]:
    """layer -> (factors, deltas) of the model's recorded edits that act in ``step``."""
    plan: dict[int, tuple[list, list]] = {}
    for edit in model.edits if model.remote else ():
        if not edit.applies_at(step):
            continue
        for layer in edit.layers():
            factors, deltas = plan.setdefault(layer, ([], []))
            if layer in edit.scales:
                factors.append(edit.scales[layer].to(model.dtype))
            if layer in edit.additions:
                deltas.append(edit.additions[layer].to(model.dtype))
    return plan


def read_last_token(model: WorkbenchModel, inputs: dict[str, torch.Tensor], site: Site,
                    layers: Sequence[int] | None = None) -> torch.Tensor:
    """The activations at ``site`` at each row's last position, for ``layers`` (default all).

    ``inputs`` come from :meth:`WorkbenchModel.encode` (left-padded, so position ``-1``
    is every row's last real token). The pass runs where the model runs (in memory, or
    remotely), with the edits active on the model.

    Returns:
        ``[batch, len(layers), width]`` in the model's dtype, on the CPU for a remote
        model; ``width`` is ``d_mlp`` for ``"input"``, ``d_model`` otherwise.
    """
    return torch.stack(_read(model, inputs, site, layers, -1), dim=1)  # [batch, layers, width]


def read_last_positions(model: WorkbenchModel, inputs: dict[str, torch.Tensor], site: Site,
                        n_positions: int, layers: Sequence[int] | None = None) -> torch.Tensor:
    """The activations at ``site`` at each row's last ``n_positions`` positions.

    As :func:`read_last_token`, which is this function at ``n_positions=1``. ``inputs``
    are left-padded (:meth:`WorkbenchModel.encode`), so position ``-k`` is every row's
    ``k``-th last real token as long as every row has at least ``n_positions`` tokens
    (the caller's to check: shorter rows read padding).

    Returns:
        ``[batch, n_positions, len(layers), width]``: index ``j`` along the second axis is
        position ``j - n_positions`` (the last one is ``[:, -1]``).

    Example:
        >>> inputs = model.encode(["Hi", "Hello there"], model.prompting())  # doctest: +SKIP
        >>> read_last_positions(model, inputs, "residual", 5).shape          # doctest: +SKIP
        torch.Size([2, 5, 30, 576])
    """
    if isinstance(n_positions, bool) or not isinstance(n_positions, int) or n_positions < 1:
        raise SteeringError(f"n_positions must be a positive int, not {n_positions!r}")
    read = _read(model, inputs, site, layers, slice(-n_positions, None))
    return torch.stack(read, dim=2)  # [batch, n_positions, layers, width]


def read_neurons(model: WorkbenchModel, inputs: dict[str, torch.Tensor],
                 neurons: Sequence[tuple[int, int]]) -> torch.Tensor:
    """The down-projection input of a few neurons at every position of every row.

    One traced pass, as :func:`read_last_token`, but at all positions and for the chosen
    neurons only: inside the pass each layer's ``[batch, pos, d_mlp]`` input is cut down to
    its chosen columns, so what is kept (and, for a remote model, what comes back) is
    ``[batch, pos, k]``. ``inputs`` are left-padded (:meth:`WorkbenchModel.encode`):
    a row of ``n`` real tokens holds them at positions ``-n:``.

    Args:
        neurons: ``(layer, index)`` pairs; the last axis of the result follows their order.

    Returns:
        ``[batch, pos, len(neurons)]`` in the model's dtype, on the CPU for a remote model.

    Example:
        >>> inputs = model.encode(["Hi"], model.prompting())          # doctest: +SKIP
        >>> read_neurons(model, inputs, [(29, 117), (3, 5)]).shape    # doctest: +SKIP
        torch.Size([1, 9, 2])
    """
    pairs = [(int(layer), int(index)) for layer, index in neurons]
    if not pairs:
        raise SteeringError("read_neurons() needs at least one (layer, index)")
    layers = sorted({layer for layer, _ in pairs})
    columns = {layer: sorted({index for lay, index in pairs if lay == layer}) for layer in layers}
    read = _read(model, inputs, "input", layers, slice(None), columns)  # [batch, pos, k_layer]
    where = {(layer, index): (i, columns[layer].index(index))
             for i, layer in enumerate(layers) for index in columns[layer]}
    return torch.stack([read[where[pair][0]][:, :, where[pair][1]] for pair in pairs],
                       dim=-1)  # [batch, pos, k]


def _read(model: WorkbenchModel, inputs: dict[str, torch.Tensor], site: Site,
          layers: Sequence[int] | None, last: int | slice,
          columns: Mapping[int, list[int]] | None = None) -> list[torch.Tensor]:
    """One traced pass reading ``site`` at token index ``last`` of each wanted layer.

    Returns one tensor per layer (ascending): ``[batch, width]`` for an int index,
    ``[batch, n, width]`` for a slice. With ``columns`` (``"input"`` only), each layer
    keeps only its listed columns of ``d_mlp`` (``width`` becomes their number).
    """
    if site not in SITES:
        raise SteeringError(f"site must be one of {SITES}, not {site!r}")
    wanted = list(range(model.n_layers)) if layers is None else sorted(set(layers))
    plan = _plan(model, step=0)
    touched = sorted(set(wanted) | set(plan))
    blocks = {layer: model.envoy(f"{model.layers_path}.{layer}")
              for layer in (wanted if site == "residual" else ())}  # only the blocks read
    downs = {layer: model.envoy(model.down_proj_path(layer)) for layer in touched}
    arguments = dict(inputs)
    input_ids = arguments.pop("input_ids")
    saved = None  # written by the trace (a job on NDIF returns it from result())
    with model_lock(model), torch.no_grad(), remote_runs.reported(model), model.nnsight.trace(
            input_ids, **arguments, **model.last_position_only(),
            **remote_runs.trace_options(model)) as tracer:
        # Touch the modules in execution order: block input, then the down-projection's
        # input, then its output. As with hooks (nnsight's own hook sees a module's output
        # before a forward hook changes it), the input is read after its edit and the
        # output before the addition.
        read = []
        for layer in touched:
            factors, deltas = plan.get(layer, ([], []))
            if site == "residual" and layer in wanted:
                read.append(blocks[layer].input[:, last, :])
            for factor in factors:
                downs[layer].input[:] *= factor
            if site == "input" and layer in wanted:
                value = downs[layer].input[:, last, :]
                read.append(value if columns is None else value[..., columns[layer]])
            if site == "output" and layer in wanted:
                read.append(downs[layer].output[:, last, :].clone())
            for delta in deltas:
                downs[layer].output[:] += delta
        saved = nnsight.save(read)
    saved = remote_runs.result(model, tracer, "saved", saved)
    return list(saved)


def traced_generate(model: WorkbenchModel, inputs: dict[str, torch.Tensor],
                    options: dict[str, Any], seed: int | None = None) -> torch.Tensor:
    """``generate`` through nnsight, with the model's recorded edits as interventions.

    The path of remote models (:func:`workbench.generate` takes it for them). Step 0 is
    the prompt pass, later steps each add one token: an edit with ``positions="prompt"``
    acts in step 0 only, one with ``"generated"`` in the later steps.

    Args:
        inputs: ``input_ids`` and ``attention_mask`` ``[batch, pos]``, left-padded.
        options: keyword arguments of ``transformers``' ``generate``.
        seed: seeds torch's generator where the model runs (for sampling).

    Returns:
        token ids ``[batch, pos + new]``.
    """
    first, later = _plan(model, step=0), _plan(model, step=1)
    touched = sorted(set(first) | set(later))
    downs = {layer: model.envoy(model.down_proj_path(layer)) for layer in touched}
    ids = None  # written by the trace (a job on NDIF returns it from result())
    with model_lock(model), torch.no_grad(), warnings.catch_warnings(), \
            remote_runs.reported(model):
        warnings.filterwarnings("ignore", message=_OPEN_LOOP_WARNING)
        with model.nnsight.generate(**options, **remote_runs.trace_options(model)) as tracer:
            with tracer.invoke(inputs["input_ids"], attention_mask=inputs["attention_mask"]):
                if seed is not None:
                    torch.manual_seed(seed)
                if touched:
                    for step in tracer.all():
                        plan = first if step == 0 else later
                        if not plan:  # a step with nothing to change still waits for its pass
                            downs[touched[0]].input  # noqa: B018 - the read is the wait
                        for layer in touched:
                            factors, deltas = plan.get(layer, ([], []))
                            for factor in factors:
                                downs[layer].input[:] *= factor
                            for delta in deltas:
                                downs[layer].output[:] += delta
            with tracer.invoke():
                ids = tracer.result.save()
    return remote_runs.result(model, tracer, "ids", ids)  # [batch, pos + new]
