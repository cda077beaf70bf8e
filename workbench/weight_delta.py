"""The weight-delta file of the late-MLP recipe: write, read and add a saved weight change.

A late-MLP folder (``cna safety-tune --recipe late-mlp``, and the embedded
``smollm2-135m-safety-late``) holds ``weight_delta.safetensors``: per tuned matrix
``tuned - untuned`` in float16, restricted to the neurons whose change is not zero, with
an index tensor ``<layers>.<i>.mlp.neurons`` per layer and the full ``d_mlp`` in the
header. :func:`save_delta` writes it, :func:`load_delta` reads it back at full shape
(checked by :func:`~workbench.adapter_files.read_weight_delta`), :func:`apply_delta` adds
it to a model's weights.

This module is the file format only: loading a model (:mod:`workbench.models`) applies a
shipped delta with it, and the recipe (:mod:`workbench.safety.late_mlp`, which re-exports
these names) writes one.

Example:
    >>> import tempfile, pathlib, torch
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> down = torch.zeros(2, 4)  # [d_model, d_mlp]
    >>> down[:, 1] = 0.5
    >>> _ = save_delta({"m.0.mlp.down_proj.weight": down}, folder, {})
    >>> loaded = load_delta(folder)["m.0.mlp.down_proj.weight"]
    >>> loaded.dtype, loaded.shape, bool(loaded.float().eq(down).all())
    (torch.float16, torch.Size([2, 4]), True)
"""

from __future__ import annotations

from pathlib import Path

import torch

from .adapter_files import DELTA_WEIGHTS, NEURONS_KEY, check_manifest, read_weight_delta
from .errors import WorkbenchError
from .io import atomic_write_bytes

#: the weights file of a late-MLP folder
DELTA_FILE = DELTA_WEIGHTS

__all__ = ["DELTA_FILE", "NEURONS_KEY", "apply_delta", "load_delta", "neuron_axis",
           "save_delta"]


def neuron_axis(name: str) -> int:
    """The axis of a tuned matrix that indexes MLP neurons (down: columns; gate/up: rows).

    Example:
        >>> neuron_axis("model.layers.3.mlp.down_proj.weight")
        1
    """
    return 1 if name.endswith("down_proj.weight") else 0


def save_delta(deltas: dict[str, torch.Tensor], out_dir: Path, metadata: dict[str, str]) -> Path:
    """Write ``deltas`` as float16 safetensors into ``out_dir``, only the changed neurons.

    Per tuned layer, ``<layers>.<i>.mlp.neurons`` (int64 ``[k]``) lists the neurons whose
    change is not zero in any tuned matrix, and each matrix holds only those: gate/up rows
    ``[k, d_model]``, down columns ``[d_model, k]``. With group sparsity this is a small
    file; without, ``k = d_mlp``. The full ``d_mlp`` is in the header metadata.
    """
    from safetensors.torch import save

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / DELTA_FILE
    half = {name: d.to(torch.float16) for name, d in deltas.items()}
    tensors: dict[str, torch.Tensor] = {}
    d_mlp = 0
    for prefix in sorted({name.rsplit(".", 2)[0] for name in half}):  # "<layers>.<i>.mlp"
        names = sorted(n for n in half if n.rsplit(".", 2)[0] == prefix)
        d_mlp = half[names[0]].shape[neuron_axis(names[0])]
        changed = torch.zeros(d_mlp, dtype=torch.bool)  # [d_mlp]
        for name in names:
            other = 1 - neuron_axis(name)
            changed |= half[name].ne(0).any(dim=other)
        kept = changed.nonzero().flatten()  # [k]
        tensors[f"{prefix}.{NEURONS_KEY}"] = kept
        for name in names:
            tensors[name] = half[name].index_select(neuron_axis(name), kept).contiguous()
    atomic_write_bytes(path, save(tensors, metadata={"format": "pt", "d_mlp": str(d_mlp),
                                                     **metadata}))
    return path


def load_delta(folder: str | Path) -> dict[str, torch.Tensor]:
    """The float16 deltas of a late-MLP folder, by parameter name, at full shape.

    The folder's manifest (if any) and the delta file are checked first
    (:func:`~workbench.adapter_files.read_weight_delta`): a damaged file raises
    :class:`~workbench.errors.ModelLoadError`.
    """
    check_manifest(folder)
    d_mlp, tensors = read_weight_delta(Path(folder) / DELTA_FILE)
    deltas = {}
    for name, values in tensors.items():
        if name.endswith(f".{NEURONS_KEY}"):
            continue
        kept = tensors[f"{name.rsplit('.', 2)[0]}.{NEURONS_KEY}"]  # [k]
        axis = neuron_axis(name)
        shape = list(values.shape)
        shape[axis] = d_mlp
        full = torch.zeros(shape, dtype=values.dtype)
        full.index_copy_(axis, kept, values)
        deltas[name] = full
    return deltas


def apply_delta(hf_model: torch.nn.Module, deltas: dict[str, torch.Tensor]) -> None:
    """Add each delta to the parameter of the same name, in place (float32 arithmetic)."""
    with torch.no_grad():
        for name, delta in deltas.items():
            try:
                parameter = hf_model.get_parameter(name)
            except AttributeError:
                raise WorkbenchError(f"the weight delta names {name}, which this model "
                                     "lacks: it was made for another model") from None
            if parameter.shape != delta.shape:
                raise WorkbenchError(f"the delta of {name} is {list(delta.shape)}; the model's "
                                     f"weight is {list(parameter.shape)}")
            parameter.add_(delta.to(parameter.device, torch.float32).to(parameter.dtype))
