"""The controlled-variant recipe: full fine-tuning of only the MLPs of the last layers.

Same data as the LoRA recipe (:mod:`workbench.safety.data`: harmful prompts -> refusals,
benign prompts -> the untuned model's own answers), but only the gate / up / down
projections of the last ``layers`` blocks are trained; every other weight stays frozen.
This confines the safety change to the late MLPs on purpose, as a teaching device: it is
a *controlled variant*, not how the paper's instruct models were aligned.

The result ships as a weight delta (``weight_delta.safetensors``, float16, one tensor
per tuned matrix, ``tuned - untuned``) with a ``manifest.json``; loading adds it to the
untuned weights (the file format: :mod:`workbench.weight_delta`). An optional
group-sparsity penalty (``group_sparsity`` = lambda > 0) is ``lambda * sum_j ||delta_j||_2``
over neurons ``j`` (gate row j, up row j, down column j of each tuned layer), applied as
a proximal step after every optimiser step (:func:`shrink_neurons`): neurons whose change
stays small return exactly to their untuned weights, so the change sits on fewer neurons.

``neurons = k`` confines the change to a fixed subset chosen before training: the ``k``
neurons of the tuned layers that CNA ranks highest on the *training* prompts (harmful vs
benign, the untuned model, :func:`confined_neurons`), i.e. neurons that already separate
harmful from benign requests. Every other neuron is returned to its untuned weights after
each step. This plants the gate where the untuned model's harm-sensitive neurons are: a
teaching device, stated as such wherever the model is used.

Example:
    >>> LateMlpRecipe(layers=6).tuned_layers(30)
    [24, 25, 26, 27, 28, 29]
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..discovery import discover
from ..errors import WorkbenchError
from ..models import WorkbenchModel, from_hf
from ..weight_delta import (  # the file format; DELTA_FILE and its functions are re-exported
    DELTA_FILE,
    NEURONS_KEY,
    apply_delta,
    load_delta,
    neuron_axis,
    save_delta,
)
from .batching import batches, total_steps
from .data import SafetyData

__all__ = ["DELTA_FILE", "LATE_MLP_RECIPE_VERSION", "MATRICES", "NEURONS_KEY", "LateMlpRecipe",
           "apply_delta", "confined_neurons", "delta_summary", "keep_only", "load_delta",
           "load_tuned_delta", "neuron_norms", "save_delta", "shrink_neurons", "train_late_mlp",
           "tuned_parameters"]

LATE_MLP_RECIPE_VERSION = "late-mlp-1"
#: recipe name of a matrix -> attribute of a gated MLP block (Llama family)
MATRICES = {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"}


@dataclass(frozen=True)
class LateMlpRecipe:
    """Hyper-parameters of the late-MLP recipe (all recorded in the manifest)."""

    seed: int = 0
    layers: int = 4
    matrices: tuple[str, ...] = ("gate", "up", "down")
    learning_rate: float = 2e-3
    group_sparsity: float = 0.0
    epochs: int = 1
    batch_size: int = 8
    max_length: int = 160
    max_steps: int | None = 150
    benign_new_tokens: int = 64
    overlap_threshold: float = 0.5
    n_harmful: int | None = 300
    n_benign: int | None = 900
    #: confine the change to this many neurons chosen by CNA on the training prompts
    neurons: int | None = 64

    def __post_init__(self) -> None:
        unknown = sorted(set(self.matrices) - set(MATRICES))
        if unknown or not self.matrices:
            raise WorkbenchError(f"matrices must be a non-empty subset of {sorted(MATRICES)}, "
                                 f"not {list(self.matrices)}")
        if self.layers < 1:
            raise WorkbenchError(f"layers must be at least 1, not {self.layers}")
        if self.neurons is not None and self.neurons < 1:
            raise WorkbenchError(f"neurons must be at least 1 (or None), not {self.neurons}")
        if self.group_sparsity < 0:
            raise WorkbenchError(f"group_sparsity must be >= 0, not {self.group_sparsity}")

    def tuned_layers(self, n_layers: int) -> list[int]:
        """Indices of the blocks whose MLP is tuned: the last ``layers`` of ``n_layers``."""
        if self.layers > n_layers:
            raise WorkbenchError(f"the recipe tunes {self.layers} layers; the model has "
                                 f"{n_layers}")
        return list(range(n_layers - self.layers, n_layers))


def tuned_parameters(model: torch.nn.Module, layers_path: str, layers: list[int],
                     matrices: tuple[str, ...]) -> dict[str, torch.nn.Parameter]:
    """``name -> weight`` of the tuned matrices, named as in ``model.state_dict()``."""
    found = {}
    for layer in layers:
        for matrix in matrices:
            name = f"{layers_path}.{layer}.mlp.{MATRICES[matrix]}.weight"
            try:
                found[name] = model.get_parameter(name)
            except AttributeError:
                raise WorkbenchError(
                    f"the late-MLP recipe needs a gated MLP ({name} is missing); it supports "
                    "the Llama family (gate_proj / up_proj / down_proj)") from None
    return found


def neuron_norms(deltas: dict[str, torch.Tensor], layers_path: str,
                 layers: list[int]) -> torch.Tensor:
    """``[len(layers), d_mlp]``: the L2 norm of each neuron's weight change.

    Neuron j's change is gate row j, up row j and down column j together.
    """
    rows = []
    for layer in layers:
        prefix = f"{layers_path}.{layer}.mlp."
        squares = None
        for attribute, axis in (("gate_proj", 1), ("up_proj", 1), ("down_proj", 0)):
            delta = deltas.get(f"{prefix}{attribute}.weight")
            if delta is None:
                continue
            # gate/up: [d_mlp, d_model] -> sum over d_model; down: [d_model, d_mlp] -> over d_model
            part = delta.float().pow(2).sum(dim=axis)  # [d_mlp]
            squares = part if squares is None else squares + part
        assert squares is not None, f"no tuned matrix of layer {layer} in deltas"
        rows.append(squares.sqrt())
    return torch.stack(rows)


def shrink_neurons(tuned: dict[str, torch.nn.Parameter], original: dict[str, torch.Tensor],
                   layers_path: str, layers: list[int], threshold: float) -> None:
    """The group-lasso proximal step: shrink each neuron's change by ``threshold`` in norm.

    Neuron j's change (gate row j, up row j, down column j) is scaled by
    ``max(0, 1 - threshold / ||change_j||)``, so a neuron whose change is smaller than the
    threshold returns exactly to its untuned weights. This is what makes the change
    sparse in neurons (a penalty added to the loss would only make it small).
    """
    with torch.no_grad():
        deltas = {name: p - original[name] for name, p in tuned.items()}
        norms = neuron_norms(deltas, layers_path, layers)  # [len(layers), d_mlp]
        factors = (1 - threshold / norms.clamp_min(1e-12)).clamp_min(0)
        for row, layer in enumerate(layers):
            prefix = f"{layers_path}.{layer}.mlp."
            for name, parameter in tuned.items():
                if not name.startswith(prefix):
                    continue
                factor = factors[row].to(parameter.dtype)  # [d_mlp]
                shaped = factor[None, :] if neuron_axis(name) == 1 else factor[:, None]
                parameter.copy_(original[name] + deltas[name] * shaped)


def confined_neurons(model: WorkbenchModel, data: SafetyData, recipe: LateMlpRecipe,
                     ) -> list[tuple[int, int]] | None:
    """``(layer, index)`` of the ``recipe.neurons`` neurons the change is confined to.

    CNA on the untuned ``model``: the training pairs' harmful prompts vs their benign
    prompts, neurons of the tuned layers only, largest ``|delta|`` first (the default
    universal-neuron filter applies). None when ``recipe.neurons`` is None (no confinement).
    """
    if recipe.neurons is None:
        return None
    layers = recipe.tuned_layers(model.n_layers)
    circuit = discover(model, [p for p, _ in data.harmful], [p for p, _ in data.benign],
                       top_k=recipe.neurons,
                       exclude_layers=[i for i in range(model.n_layers) if i not in layers],
                       progress=False)
    return [(n.layer, n.index) for n in circuit.neurons]


def keep_only(tuned: dict[str, torch.nn.Parameter], original: dict[str, torch.Tensor],
              layers_path: str, layers: list[int], allowed: list[tuple[int, int]]) -> None:
    """Return every neuron outside ``allowed`` to its untuned weights (in place)."""
    with torch.no_grad():
        for layer in layers:
            prefix = f"{layers_path}.{layer}.mlp."
            names = [name for name in tuned if name.startswith(prefix)]
            if not names:
                continue
            axis = neuron_axis(names[0])
            d_mlp = tuned[names[0]].shape[axis]
            frozen = torch.ones(d_mlp, dtype=torch.bool)  # [d_mlp]
            frozen[[index for at, index in allowed if at == layer]] = False
            for name in names:
                parameter, axis = tuned[name], neuron_axis(name)
                if axis == 0:
                    parameter[frozen] = original[name][frozen]
                else:
                    parameter[:, frozen] = original[name][:, frozen]


def train_late_mlp(model: WorkbenchModel, encoded: list[tuple[list[int], list[int]]],
                   recipe: LateMlpRecipe, progress: bool = True,
                   allowed: list[tuple[int, int]] | None = None,
                   ) -> tuple[dict[str, torch.Tensor], list[float]]:
    """Fine-tune a copy of the model's late MLPs on ``encoded`` pairs.

    ``allowed``: if given, the only ``(layer, index)`` neurons that may change (see
    :func:`confined_neurons`). Returns ``name -> tuned - untuned`` (float32) for every
    tuned matrix, and the loss of every step. ``model`` itself is left unchanged.
    """
    torch.manual_seed(recipe.seed)
    rng = random.Random(recipe.seed)
    work = copy.deepcopy(model.hf_model)
    layers = recipe.tuned_layers(model.n_layers)
    for parameter in work.parameters():
        parameter.requires_grad_(False)
    tuned = tuned_parameters(work, model.layers_path, layers, recipe.matrices)
    original = {name: p.detach().clone() for name, p in tuned.items()}
    for parameter in tuned.values():
        parameter.requires_grad_(True)
    # No weight decay: it would pull every tuned weight towards zero, a change spread over
    # all neurons, where the recipe wants the change confined.
    optimizer = torch.optim.AdamW(list(tuned.values()), lr=recipe.learning_rate,
                                  weight_decay=0.0)
    total = total_steps(len(encoded), recipe.batch_size, recipe.epochs, recipe.max_steps)
    losses: list[float] = []
    device = model.device
    work.train()
    with tqdm(total=total, desc="late-MLP safety tuning", unit="step",
              disable=not progress) as bar:
        for _epoch in range(recipe.epochs):
            for input_ids, mask, labels in batches(encoded, recipe.batch_size,
                                                    model.tokenizer.pad_token_id, rng):
                if len(losses) >= total:
                    break
                loss = work(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                            labels=labels.to(device)).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                if recipe.group_sparsity > 0:
                    shrink_neurons(tuned, original, model.layers_path, layers,
                                   recipe.learning_rate * recipe.group_sparsity)
                if allowed is not None:
                    keep_only(tuned, original, model.layers_path, layers, allowed)
                losses.append(float(loss.detach()))
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
    deltas = {name: (p.detach() - original[name]) for name, p in tuned.items()}
    del work
    return deltas, losses


def load_tuned_delta(model: WorkbenchModel, folder: str | Path, name: str | None = None,
                     ) -> WorkbenchModel:
    """A copy of ``model`` with the weight delta in ``folder`` added."""
    hf_model = copy.deepcopy(model.hf_model)
    apply_delta(hf_model, load_delta(folder))
    return from_hf(hf_model, model.tokenizer, name=name or f"{model.name}+{Path(folder).name}")


def delta_summary(deltas: dict[str, torch.Tensor], layers_path: str, layers: list[int],
                  top: tuple[int, ...] = (46, 230, 460)) -> dict[str, Any]:
    """How concentrated the change is: the share of the squared change in the top-k neurons."""
    norms = neuron_norms(deltas, layers_path, layers).flatten()  # [layers * d_mlp]
    energy = norms.pow(2)
    ranked = energy.sort(descending=True).values
    total = float(energy.sum())
    return {"n_tuned_weights": int(sum(d.numel() for d in deltas.values())),
            "n_tuned_neurons": int(norms.numel()),
            "n_changed_neurons": int((norms > 0).sum()),
            "top_neuron_share": {str(k): round(float(ranked[:k].sum()) / total, 4)
                                 if total else 0.0 for k in top}}
