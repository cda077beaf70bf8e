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
down-projection input, per-layer vectors added to its output or to the residual stream
entering a block, and a :class:`Projection` that scales one direction of every write into
the residual stream, at some token positions. Every change the workbench makes to a
running model (steering a circuit, a CAA vector, directional ablation, activation
addition, the interventions of an evaluation) is an edit. :func:`edited` applies an edit
for the duration of a ``with`` block, in one of two ways, decided here and nowhere else:

- a model in this process gets PyTorch forward hooks. They act on every forward pass,
  whoever makes it: :func:`workbench.generate`, a user's ``hf_model.generate``, a plain
  forward call, an nnsight trace, a widget's streaming generation.
- a remote model (``remote=True`` or ``"local"``) gets no hooks, which could not run on a
  server. The edit is recorded on the model, and every traced call made inside the block
  (:func:`read_last_token`, :func:`traced_generate`) carries it as nnsight interventions
  (``down_proj.input[:] *= factor``), in the order the hooks would apply it.

Both ways scale with the same factor tensors and the same multiplication, so a remote run
and a hooked run of one edit give the same numbers. Code that must replace a module's
``forward`` for a while (:mod:`workbench.packing`) does it through
:func:`replaced_forwards`, also here.

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
from .architectures import get_path
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
class Projection:
    """Keep ``keep`` times the component along ``direction`` of every residual-stream write.

    Each write ``x`` (see :func:`residual_writers`) becomes ``x - (1 - keep) (x . r) r``
    with ``r`` the unit ``direction``: 0 removes the component (Arditi et al., 2024), 1
    leaves the model unchanged, 2 doubles it, -1 flips it.

    Attributes:
        direction: a unit vector ``[d_model]`` (float32).
        keep: the share of the component that is kept.

    Example:
        >>> p = Projection(torch.tensor([0.0, 1.0]), keep=0.0)
        >>> p.apply(torch.tensor([[3.0, 4.0]])).tolist()
        [[3.0, 0.0]]
    """

    direction: torch.Tensor
    keep: float

    def __post_init__(self) -> None:
        norm = float(self.direction.detach().double().norm())
        if self.direction.dim() != 1 or not abs(norm - 1.0) < 1e-3:
            raise SteeringError(
                f"a projection's direction must be a unit vector [d_model], not shape "
                f"{tuple(self.direction.shape)} with norm {norm:.4g}: divide it by its norm "
                "(workbench.ablation.unit_direction does)")

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``[..., d_model]`` with its component along the direction scaled, computed
        in at least float32 and returned in ``x``'s dtype."""
        dtype = torch.promote_types(x.dtype, torch.float32)
        xc = x.to(dtype)  # [..., d_model]
        r = self.direction.to(device=x.device, dtype=dtype)  # [d_model]
        return (xc - (1.0 - self.keep) * (xc @ r).unsqueeze(-1) * r).to(x.dtype)


@dataclass(frozen=True, eq=False)  # compared by identity: tensors have no truth value
class Edit:
    """A change to every forward pass: scale down-projection inputs, add to its outputs.

    Attributes:
        scales: layer -> factor ``[d_mlp]`` that multiplies the down-projection input
            (1 leaves a neuron unchanged, 0 ablates it).
        additions: layer -> vector ``[d_model]`` added to the down-projection output.
        residual_additions: layer -> vector ``[d_model]`` added to the residual stream
            entering block ``layer`` (activation addition, Arditi et al.).
        projection: a direction scaled in every write into the residual stream (all
            layers), or None.
        positions: which token positions: ``"all"``, the ``"prompt"`` only, or the
            ``"generated"`` tokens only (see :class:`Phase`).

    Example:
        >>> edit = Edit(scales={0: torch.ones(4)}, positions="generated")
        >>> edit.applies_at(step=0), edit.applies_at(step=3)
        (False, True)
    """

    scales: Mapping[int, torch.Tensor] = field(default_factory=dict)
    additions: Mapping[int, torch.Tensor] = field(default_factory=dict)
    residual_additions: Mapping[int, torch.Tensor] = field(default_factory=dict)
    projection: Projection | None = None
    positions: Positions = "all"

    def __post_init__(self) -> None:
        check_positions(self.positions)

    def layers(self) -> list[int]:
        """The layers whose blocks this edit touches, ascending (a projection touches every
        layer's residual writes besides)."""
        return sorted(set(self.scales) | set(self.additions) | set(self.residual_additions))

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
        # an empty cache starts a sequence; without one, ids that extend the last pass's
        # re-read it (an empty cache's ids may start with the last pass's token by chance)
        if offset == 0 and (cache is not None or not self._extends_last(ids)):
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
            "run: change it with sites.edited(model, edit), which has an nnsight form, or "
            "load the model locally")
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


def _add_hook(delta: torch.Tensor, phase: Phase, positions: Positions) -> Callable:
    """A forward hook adding ``delta`` ``[d_model]`` to the down-projection output at the
    selected positions."""

    def add(_module: torch.nn.Module, _args: tuple, output: torch.Tensor) -> torch.Tensor:
        return _only_selected(output + delta.to(output.dtype), output,
                              phase.selected(positions))

    return add


def residual_writers(model: WorkbenchModel) -> list[tuple[str, torch.nn.Module]]:
    """``(dotted path, module)`` of every block's attention and MLP residual writes.

    In execution order: block 0 attention, block 0 MLP, block 1 attention, ... The paths
    come from the architecture adapter (``attn_out``, ``mlp_out``): for most families the
    attention and MLP modules themselves; for Gemma-2/3 and OLMo-2 the norms after them.

    Example:
        >>> [path for path, _ in residual_writers(model)][:2]  # doctest: +SKIP
        ['model.layers.0.self_attn', 'model.layers.0.mlp']
    """
    writers = []
    for layer in range(model.n_layers):
        block = model.layers[layer]
        for relative in (model.adapter.attn_out, model.adapter.mlp_out):
            try:
                module = get_path(block, relative)
            except (AttributeError, IndexError):
                raise SteeringError(
                    f"{model.architecture} block {layer} has no module {relative!r}, which "
                    f"the {model.adapter.name!r} adapter names as a residual-stream write; "
                    "register an adapter with the right attn_out / mlp_out paths") from None
            writers.append((f"{model.layers_path}.{layer}.{relative}", module))
    return writers


def _residual_add_hook(vector: torch.Tensor, phase: Phase, positions: Positions) -> Callable:
    """A pre-hook (with kwargs) adding ``vector`` ``[d_model]`` to a block's input, cast to
    the activations' dtype first."""

    def add(_module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        selected = phase.selected(positions)
        if args:  # hidden_states [batch, pos, d_model]
            hidden = args[0]
            return (_only_selected(hidden + vector.to(hidden), hidden, selected),
                    *args[1:]), kwargs
        hidden = kwargs["hidden_states"]  # [batch, pos, d_model]
        return args, dict(kwargs, hidden_states=_only_selected(hidden + vector.to(hidden),
                                                               hidden, selected))

    return add


def _only_selected(new: torch.Tensor, old: torch.Tensor,
                   selected: torch.Tensor | bool) -> torch.Tensor:
    """``new`` at the selected positions (``[pos]`` bool, or all/none), ``old`` elsewhere."""
    if selected is True:
        return new
    if selected is False:
        return old
    return torch.where(selected.to(new.device)[:, None], new, old)  # [batch, pos, d_model]


def _projection_hooks(model: WorkbenchModel, projection: Projection, phase: Phase,
                      positions: Positions) -> tuple[list[Hook], list[Hook]]:
    """(pre-hook with kwargs on the first block, post-hooks on every residual writer)."""

    def project_input(_module: torch.nn.Module, args: tuple, kwargs: dict):
        selected = phase.selected(positions)
        if args:  # the first block's hidden_states: [batch, pos, d_model]
            hidden = args[0]
            return (_only_selected(projection.apply(hidden), hidden, selected),
                    *args[1:]), kwargs
        hidden = kwargs["hidden_states"]
        return args, dict(kwargs, hidden_states=_only_selected(projection.apply(hidden), hidden,
                                                               selected))

    def project_output(_module: torch.nn.Module, _args: tuple, output: Any):
        selected = phase.selected(positions)
        if isinstance(output, tuple):  # attention: (output [batch, pos, d_model], weights)
            return (_only_selected(projection.apply(output[0]), output[0], selected),
                    *output[1:])
        return _only_selected(projection.apply(output), output, selected)

    writers = [(module, project_output) for _path, module in residual_writers(model)]
    return [(model.layers[0], project_input)], writers


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
    pre: list[Hook] = []
    post: list[Hook] = []
    with_kwargs: list[Hook] = []
    if edit.positions != "all":
        with_kwargs.append((model.hf_model, phase.hook))
    if edit.projection is not None:  # first: the embeddings' write is projected, then added to
        first, writers = _projection_hooks(model, edit.projection, phase, edit.positions)
        with_kwargs += first
        post += writers
    for layer in edit.layers():
        module = model.down_proj(layer)
        device = next(module.parameters()).device  # a layer of a model spread over devices
        if layer in edit.residual_additions:
            vector = edit.residual_additions[layer].to(device)
            with_kwargs.append((model.layers[layer],
                                _residual_add_hook(vector, phase, edit.positions)))
        if layer in edit.scales:
            factor = edit.scales[layer].to(device)
            pre.append((module, _scale_hook(factor, phase, edit.positions)))
        if layer in edit.additions:
            post.append((module, _add_hook(edit.additions[layer].to(device), phase,
                                           edit.positions)))
    with hooked(model, pre_with_kwargs=with_kwargs, pre=pre, post=post):
        yield


@contextlib.contextmanager
def replaced_forwards(model: WorkbenchModel | torch.nn.Module,
                      forwards: Mapping[torch.nn.Module, Callable[..., Any]]) -> Iterator[None]:
    """Give each module of ``forwards`` that instance ``forward`` inside the block.

    Hooks keep acting (they wrap whatever ``forward`` runs). On exit each module gets its
    own instance ``forward`` back (or none), whatever the reason, unless something else
    replaced ours inside the block: that replacement is left. The model's lock is held
    while they are in place.

    Example:
        >>> layer = torch.nn.Linear(2, 2)
        >>> with replaced_forwards(layer, {layer: lambda x: x * 0}):
        ...     layer(torch.ones(2)).tolist()
        [0.0, 0.0]
        >>> "forward" in vars(layer)
        False
    """
    swapped: list[tuple[torch.nn.Module, Any, Any]] = []  # module, its own forward, ours
    with model_lock(model):
        try:
            for module, ours in forwards.items():
                swapped.append((module, vars(module).get("forward"), ours))
                module.forward = ours
            yield
        finally:
            for module, own, ours in swapped:
                if vars(module).get("forward") is not ours:
                    continue  # replaced inside the block: leave the replacement
                if own is None:
                    del module.forward
                else:
                    module.forward = own


# -- nnsight (reading everywhere, editing remote models) ------------------------


@dataclass
class _Plan:
    """The recorded edits of a remote model that act in one generation step, as nnsight
    will apply them: layer -> factors and vectors, and the projections of every write."""

    factors: dict[int, list[torch.Tensor]] = field(default_factory=dict)
    deltas: dict[int, list[torch.Tensor]] = field(default_factory=dict)
    residual: dict[int, list[torch.Tensor]] = field(default_factory=dict)
    projections: list[tuple[torch.Tensor, float]] = field(default_factory=list)

    def layers(self, n_layers: int) -> set[int]:
        if self.projections:
            return set(range(n_layers))
        return set(self.factors) | set(self.deltas) | set(self.residual)

    def __bool__(self) -> bool:
        return bool(self.factors or self.deltas or self.residual or self.projections)


def _plan(model: WorkbenchModel, step: int) -> _Plan:
    """The model's recorded edits that act in ``step`` (0 is the prompt pass)."""
    plan = _Plan()
    compute = torch.promote_types(model.dtype, torch.float32)  # projections' precision
    for edit in model.edits if model.remote else ():
        if not edit.applies_at(step):
            continue
        for layer, factor in edit.scales.items():
            plan.factors.setdefault(layer, []).append(factor.to(model.dtype))
        for layer, delta in edit.additions.items():
            plan.deltas.setdefault(layer, []).append(delta.to(model.dtype))
        for layer, vector in edit.residual_additions.items():
            plan.residual.setdefault(layer, []).append(vector.to(model.dtype))
        if edit.projection is not None:
            plan.projections.append((edit.projection.direction.to(compute),
                                     1.0 - float(edit.projection.keep)))
    return plan


class _Writers:
    """The envoys a plan's projections and residual additions act on."""

    def __init__(self, model: WorkbenchModel, layers: Sequence[int],
                 blocks: Sequence[int] = ()) -> None:
        self.blocks = {layer: model.envoy(f"{model.layers_path}.{layer}")
                       for layer in sorted({*blocks, *([0] if layers else [])})}
        self.attention = {layer: model.envoy(f"{model.layers_path}.{layer}."
                                             f"{model.adapter.attn_out}") for layer in layers}
        self.mlp = {layer: model.envoy(f"{model.layers_path}.{layer}.{model.adapter.mlp_out}")
                    for layer in layers}


def _edit_layer(plan: _Plan, layer: int, downs: Mapping[int, Any], writers: _Writers,
                read: Callable[[Site], None] | None = None) -> None:
    """Apply ``plan`` to one layer inside a trace, touching the modules in execution order:
    block input, attention write, the down-projection's input, then its output, then the
    MLP write. ``read(site)`` is called where that site is read: as with hooks (nnsight's
    own hook sees a module's output before a forward hook changes it), the input after its
    edit and the output before the addition."""
    if layer == 0:
        for r, drop in plan.projections:  # the embeddings' write
            hidden = writers.blocks[0].input
            wide = hidden.to(r.dtype)
            hidden[:] = wide - drop * (wide @ r).unsqueeze(-1) * r
    for vector in plan.residual.get(layer, []):
        writers.blocks[layer].input[:] += vector
    if read is not None:
        read("residual")
    for r, drop in plan.projections:
        output = writers.attention[layer].output
        written = output[0] if isinstance(output, tuple) else output
        wide = written.to(r.dtype)
        written[:] = wide - drop * (wide @ r).unsqueeze(-1) * r
    for factor in plan.factors.get(layer, []):
        downs[layer].input[:] *= factor
    if read is not None:
        read("input")
        read("output")
    for delta in plan.deltas.get(layer, []):
        downs[layer].output[:] += delta
    for r, drop in plan.projections:
        written = writers.mlp[layer].output
        wide = written.to(r.dtype)
        written[:] = wide - drop * (wide @ r).unsqueeze(-1) * r


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
    touched = sorted(set(wanted) | plan.layers(model.n_layers))
    blocks = {layer: model.envoy(f"{model.layers_path}.{layer}")
              for layer in (wanted if site == "residual" else ())}  # only the blocks read
    downs = {layer: model.envoy(model.down_proj_path(layer)) for layer in touched}
    writers = _Writers(model, touched if plan.projections else [], list(plan.residual))
    arguments = dict(inputs)
    input_ids = arguments.pop("input_ids")
    saved = None  # written by the trace (a job on NDIF returns it from result())
    with model_lock(model), torch.no_grad(), remote_runs.reported(model), model.nnsight.trace(
            input_ids, **arguments, **model.last_position_only(),
            **remote_runs.trace_options(model)) as tracer:
        read: list[torch.Tensor] = []

        def reader(layer: int) -> Callable[[Site], None]:
            def read_site(at: Site) -> None:
                if at != site or layer not in wanted:
                    return
                if site == "residual":
                    read.append(blocks[layer].input[:, last, :])
                elif site == "input":
                    value = downs[layer].input[:, last, :]
                    read.append(value if columns is None else value[..., columns[layer]])
                else:
                    read.append(downs[layer].output[:, last, :].clone())
            return read_site

        for layer in touched:
            _edit_layer(plan, layer, downs, writers, reader(layer))
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
    touched = sorted(first.layers(model.n_layers) | later.layers(model.n_layers))
    downs = {layer: model.envoy(model.down_proj_path(layer)) for layer in touched}
    writers = _Writers(model, touched if first.projections or later.projections else [],
                       [*first.residual, *later.residual])
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
                            _edit_layer(plan, layer, downs, writers)
            with tracer.invoke():
                ids = tracer.result.save()
    return remote_runs.result(model, tracer, "ids", ids)  # [batch, pos + new]
