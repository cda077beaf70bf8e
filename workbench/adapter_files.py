"""Checks of a safety-tuning output folder: its manifest, LoRA adapter or weight delta.

``cna safety-tune`` writes a folder with ``manifest.json`` and either a LoRA adapter
(``adapter_config.json``, ``adapter_model.safetensors``) or a neuron-sparse weight delta
(``weight_delta.safetensors``); the embedded safety-tuned models ship such folders and merge
them at first load. A damaged file would otherwise fail inside peft or safetensors, or,
worse, add NaN to the weights. These checks raise
:class:`~workbench.errors.ModelLoadError` with one line instead.

Example:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "manifest.json").write_text('{"format": "cna-workbench.safety-delta"')
    >>> check_manifest(folder)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    workbench.errors.ModelLoadError: ...manifest.json is not valid JSON ...
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .errors import ModelLoadError
from .model_files import check_safetensors

MANIFEST_FILE = "manifest.json"
LORA_CONFIG = "adapter_config.json"
LORA_WEIGHTS = "adapter_model.safetensors"
DELTA_WEIGHTS = "weight_delta.safetensors"
#: manifest format -> the weights file that format comes with
FORMATS = {"cna-workbench.safety-adapter": LORA_WEIGHTS,
           "cna-workbench.safety-delta": DELTA_WEIGHTS}
#: the index tensor beside a layer's restricted deltas ("<layers>.<i>.mlp.neurons")
NEURONS_KEY = "neurons"

_AGAIN = "rebuild the folder with `cna safety-tune --out`, or reinstall cna-workbench"


def check_manifest(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The folder's ``manifest.json``, checked; None when the folder has none.

    The manifest must be a JSON object with a known ``format``, text ``recipe_version``
    and ``base_model``, object ``hyperparameters`` of finite numbers, and the weights file
    its format names must be in the folder.

    Example:
        >>> import tempfile, pathlib
        >>> check_manifest(pathlib.Path(tempfile.mkdtemp())) is None
        True
    """
    folder = Path(folder)
    path = folder / MANIFEST_FILE
    if not path.is_file():
        return None
    manifest = _json_object(path)
    shown = str(path)
    fmt = manifest.get("format")
    if not isinstance(fmt, str) or fmt not in FORMATS:
        raise ModelLoadError(f"{shown}: format {fmt!r} is not one of {sorted(FORMATS)}; "
                             f"{_AGAIN}")
    for key in ("recipe_version", "base_model"):
        if not isinstance(manifest.get(key), str) or not manifest[key]:
            raise ModelLoadError(f"{shown}: {key} must be text, not {manifest.get(key)!r}; "
                                 f"{_AGAIN}")
    hyperparameters = manifest.get("hyperparameters", {})
    if not isinstance(hyperparameters, Mapping):
        raise ModelLoadError(f"{shown}: hyperparameters must be an object; {_AGAIN}")
    for key, value in hyperparameters.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ModelLoadError(f"{shown}: hyperparameters.{key} is {value}, not a finite "
                                 f"number; {_AGAIN}")
    if not (folder / FORMATS[fmt]).is_file():
        raise ModelLoadError(f"{shown} describes a {fmt} folder, but {FORMATS[fmt]} is "
                             f"missing beside it; {_AGAIN}")
    return manifest


def check_lora_adapter(folder: str | os.PathLike[str]) -> None:
    """Refuse a LoRA adapter folder whose config or weights are damaged.

    ``adapter_config.json`` must be a JSON object with ``peft_type`` ``"LORA"`` and a
    positive integer rank ``r``; ``adapter_model.safetensors`` must have a sound header
    and hold only finite numbers.

    Example:
        >>> import tempfile, pathlib
        >>> check_lora_adapter(pathlib.Path(tempfile.mkdtemp()))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        workbench.errors.ModelLoadError: ...adapter_config.json is missing...
    """
    folder = Path(folder)
    check_manifest(folder)
    config = _json_object(folder / LORA_CONFIG)
    shown = str(folder / LORA_CONFIG)
    if config.get("peft_type") != "LORA":
        raise ModelLoadError(f"{shown}: peft_type is {config.get('peft_type')!r}, not 'LORA'; "
                             f"{_AGAIN}")
    rank = config.get("r")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ModelLoadError(f"{shown}: the rank r must be a positive integer, not {rank!r}; "
                             f"{_AGAIN}")
    weights = folder / LORA_WEIGHTS
    if not weights.is_file():
        raise ModelLoadError(f"{weights} is missing: not a LoRA adapter folder; {_AGAIN}")
    _, tensors = _read_tensors(weights)
    if not tensors:
        raise ModelLoadError(f"{weights} holds no tensors; {_AGAIN}")
    for name, values in tensors.items():
        _check_finite(weights, name, values)


def read_weight_delta(path: str | os.PathLike[str]) -> tuple[int, dict[str, torch.Tensor]]:
    """``(d_mlp, tensors)`` of a late-MLP ``weight_delta.safetensors``, checked.

    The header metadata must give ``d_mlp`` as a positive integer. Every weight tensor
    ``<layers>.<i>.mlp.<proj>.weight`` needs the index tensor ``<layers>.<i>.mlp.neurons``
    beside it: one-dimensional integers, each in ``[0, d_mlp)`` and none twice, as many as
    the weight's neuron axis (columns of ``down_proj``, rows of ``gate_proj`` and
    ``up_proj``) is long. Weights must be floating point and finite.

    Example:
        >>> import tempfile, pathlib, torch
        >>> from safetensors.torch import save_file
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "weight_delta.safetensors"
        >>> save_file({"m.0.mlp.neurons": torch.tensor([2]),
        ...            "m.0.mlp.down_proj.weight": torch.ones(3, 1)}, p,
        ...           metadata={"d_mlp": "4"})
        >>> d_mlp, tensors = read_weight_delta(p)
        >>> d_mlp, sorted(tensors)
        (4, ['m.0.mlp.down_proj.weight', 'm.0.mlp.neurons'])
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing: not a late-MLP weight-delta folder")
    metadata, tensors = _read_tensors(path)
    raw = metadata.get("d_mlp", "")
    d_mlp = int(raw) if raw.isdecimal() else 0
    if d_mlp < 1:
        raise ModelLoadError(f"{path}: the header gives d_mlp as {raw!r}, not a positive "
                             f"integer; {_AGAIN}")
    weights = [name for name in tensors if not name.endswith(f".{NEURONS_KEY}")]
    if not weights:
        raise ModelLoadError(f"{path} holds no weight deltas; {_AGAIN}")
    for name in weights:
        values = tensors[name]
        index_name = f"{name.rsplit('.', 2)[0]}.{NEURONS_KEY}"
        if index_name not in tensors:
            raise ModelLoadError(f"{path}: {name} has no index tensor {index_name}; {_AGAIN}")
        kept = tensors[index_name]
        _check_index(path, index_name, kept, d_mlp)
        axis = 1 if name.endswith("down_proj.weight") else 0
        if values.dim() != 2 or values.shape[axis] != kept.numel():
            raise ModelLoadError(f"{path}: {name} has shape {list(values.shape)}, which does "
                                 f"not match the {kept.numel()} neurons of {index_name}; "
                                 f"{_AGAIN}")
        _check_finite(path, name, values)
    return d_mlp, tensors


def _check_index(path: Path, name: str, kept: torch.Tensor, d_mlp: int) -> None:
    if kept.dim() != 1 or kept.dtype.is_floating_point or kept.dtype == torch.bool:
        raise ModelLoadError(f"{path}: {name} must be a list of neuron indices (integers), "
                             f"not {kept.dtype} of shape {list(kept.shape)}; {_AGAIN}")
    if kept.numel() and (int(kept.min()) < 0 or int(kept.max()) >= d_mlp):
        raise ModelLoadError(f"{path}: {name} holds neurons outside [0, {d_mlp}); {_AGAIN}")
    if kept.unique().numel() != kept.numel():
        raise ModelLoadError(f"{path}: {name} lists a neuron twice; {_AGAIN}")


def _check_finite(path: Path, name: str, values: torch.Tensor) -> None:
    if not values.dtype.is_floating_point:
        raise ModelLoadError(f"{path}: {name} holds {values.dtype}, not floating-point "
                             f"weights; {_AGAIN}")
    if not bool(torch.isfinite(values).all()):
        raise ModelLoadError(f"{path}: {name} holds NaN or infinite values; {_AGAIN}")


def _read_tensors(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """Header metadata and tensors of a safetensors file whose header was checked."""
    from safetensors import SafetensorError, safe_open

    check_safetensors(path)
    try:
        with safe_open(str(path), framework="pt") as stored:
            metadata = dict(stored.metadata() or {})
            tensors = {name: stored.get_tensor(name) for name in stored.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        reason = " ".join(str(exc).split())[:120]
        raise ModelLoadError(f"{path} cannot be read ({reason}); {_AGAIN}") from None
    return metadata, tensors


def _json_object(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing; {_AGAIN}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        reason = " ".join(str(exc).split())[:120]
        raise ModelLoadError(f"{path} is not valid JSON ({reason}); {_AGAIN}") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} must hold a JSON object, not {type(data).__name__}; "
                             f"{_AGAIN}")
    return data
