"""The checks of a parsed circuit file: field types, finite numbers, ranges, saved config.

:meth:`Circuit.from_dict <workbench.circuit.Circuit.from_dict>` calls
:func:`check_circuit_data` before it builds anything, so a circuit file edited by hand or
damaged on disk is refused with one line naming the field, never carried into a ranking
(a NaN score would sort anywhere). Duplicates are refused by the
:class:`~workbench.circuit.Circuit` constructor, which every circuit passes through.

Example:
    >>> data = {"model": {"name": "m", "architecture": "A", "n_layers": 2, "d_mlp": 4},
    ...         "neurons": [{"layer": 1, "index": 3, "score": float("nan")}]}
    >>> check_circuit_data(data, "c.json")
    Traceback (most recent call last):
    ...
    workbench.errors.CircuitFormatError: c.json: neurons[0].score is nan, not a finite ...
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

from .config import DiscoverConfig
from .errors import CircuitFormatError, InvalidArgumentError

_AGAIN = "the file is damaged: discover the circuit again"
_MODEL_KEYS = ("name", "architecture", "n_layers", "d_mlp")


def check_circuit_data(data: Mapping[str, Any], source: str = "circuit") -> None:
    """Refuse a parsed circuit whose fields have the wrong type or are out of range.

    Checks: ``model`` and ``neurons`` are present; the model's name and architecture are
    text and its ``n_layers`` and ``d_mlp`` positive integers; every neuron is an object
    with an integer ``layer`` and ``index`` inside the model and a finite number
    ``score``; no number anywhere in the file is NaN or infinite; the optional sections
    have their documented types; and the discovery config saved in
    ``selection.config`` is one :class:`~workbench.config.DiscoverConfig` accepts, its
    excluded layers inside the model. Format and version are checked by the caller.

    Example:
        >>> model = {"name": "m", "architecture": "A", "n_layers": 2, "d_mlp": 4}
        >>> check_circuit_data({"model": model, "neurons": [
        ...     {"layer": 1, "index": 3, "score": 0.5}]})
        >>> check_circuit_data({"model": model, "neurons": [
        ...     {"layer": 2, "index": 0, "score": 0.5}]})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        workbench.errors.CircuitFormatError: circuit: neuron (layer 2, index 0) is outside ...
    """
    _check_finite(data, source)
    for key in ("model", "neurons"):
        if key not in data:
            raise CircuitFormatError(f"{source}: the circuit is missing its {key!r} section; "
                                     f"{_AGAIN}")
    n_layers, d_mlp = _check_model(data["model"], source)
    _check_neurons(data["neurons"], n_layers, d_mlp, source)
    for key in ("site", "token_position", "created_by"):
        if key in data and not isinstance(data[key], str):
            raise _wrong(source, key, data[key], "text")
    prompting = _section(data, "prompting", source)
    if "chat_template" in prompting and not isinstance(prompting["chat_template"],
                                                       (bool, type(None))):
        raise _wrong(source, "prompting.chat_template", prompting["chat_template"],
                     "true, false or null")
    if "system_prompt" in prompting and not isinstance(prompting["system_prompt"],
                                                       (str, type(None))):
        raise _wrong(source, "prompting.system_prompt", prompting["system_prompt"],
                     "text or null")
    for role, ref in _section(data, "prompts", source).items():
        if not isinstance(ref, Mapping):
            raise _wrong(source, f"prompts.{role}", ref, "an object")
        if "name" in ref and not isinstance(ref["name"], str):
            raise _wrong(source, f"prompts.{role}.name", ref["name"], "text")
        if "sha256" in ref and not isinstance(ref["sha256"], (str, type(None))):
            raise _wrong(source, f"prompts.{role}.sha256", ref["sha256"], "text")
        if "n" in ref and not _count(ref["n"], 0):
            raise _wrong(source, f"prompts.{role}.n", ref["n"], "an integer >= 0")
    _check_selection(_section(data, "selection", source), n_layers, source)


def _check_model(model: Any, source: str) -> tuple[int, int]:
    if not isinstance(model, Mapping):
        raise _wrong(source, "model", model, "an object")
    for key in _MODEL_KEYS:
        if key not in model:
            raise CircuitFormatError(f"{source}: circuit 'model' is missing {key!r}; {_AGAIN}")
    for key in ("name", "architecture"):
        if not isinstance(model[key], str) or not model[key]:
            raise _wrong(source, f"model.{key}", model[key], "non-empty text")
    for key in ("n_layers", "d_mlp"):
        if not _count(model[key], 1):
            raise _wrong(source, f"model.{key}", model[key], "a positive integer")
    return model["n_layers"], model["d_mlp"]


def _check_neurons(neurons: Any, n_layers: int, d_mlp: int, source: str) -> None:
    if not isinstance(neurons, list):
        raise _wrong(source, "neurons", neurons, "a list")
    for i, neuron in enumerate(neurons):
        where = f"neurons[{i}]"
        if not isinstance(neuron, Mapping):
            raise _wrong(source, where, neuron, "an object with layer, index and score")
        for key in ("layer", "index", "score"):
            if key not in neuron:
                raise CircuitFormatError(f"{source}: {where} is missing {key!r}; {_AGAIN}")
        for key in ("layer", "index"):
            if not _count(neuron[key], None):
                raise CircuitFormatError(f"{source}: neuron {key} must be an integer, not "
                                         f"{neuron[key]!r} ({where}); {_AGAIN}")
        score = neuron["score"]
        if isinstance(score, bool) or not isinstance(score, numbers.Real):
            raise _wrong(source, f"{where}.score", score, "a number")
        layer, index = neuron["layer"], neuron["index"]
        if not (0 <= layer < n_layers and 0 <= index < d_mlp):
            raise CircuitFormatError(
                f"{source}: neuron (layer {layer}, index {index}) is outside the model's "
                f"{n_layers} layers x {d_mlp} neurons ({where}); {_AGAIN}")


def _check_selection(selection: Mapping[str, Any], n_layers: int, source: str) -> None:
    if "top_k" in selection and selection["top_k"] is not None \
            and not _count(selection["top_k"], 1):
        raise _wrong(source, "selection.top_k", selection["top_k"], "a positive integer or null")
    for key in ("fraction", "universal_threshold"):
        value = selection.get(key)
        if value is not None and not (_number(value) and 0 < value <= 1):
            raise _wrong(source, f"selection.{key}", value, "a number in (0, 1] or null")
    if "n_universal_excluded" in selection and not _count(selection["n_universal_excluded"], 0):
        raise _wrong(source, "selection.n_universal_excluded",
                     selection["n_universal_excluded"], "an integer >= 0")
    excluded = selection.get("excluded_layers", [])
    if not isinstance(excluded, list) or not all(
            _count(layer, 0) and layer < n_layers for layer in excluded):
        raise _wrong(source, "selection.excluded_layers", excluded,
                     f"a list of layers in [0, {n_layers})")
    if "config" in selection:
        _check_config(selection["config"], n_layers, source)


def _check_config(config: Any, n_layers: int, source: str) -> None:
    """The :class:`~workbench.config.DiscoverConfig` saved in ``selection.config``."""
    if not isinstance(config, Mapping):
        raise _wrong(source, "selection.config", config, "an object")
    layers = config.get("exclude_layers", [])
    if not isinstance(layers, list) or not all(
            _count(layer, None) and -n_layers <= layer < n_layers for layer in layers):
        raise _wrong(source, "selection.config.exclude_layers", layers,
                     f"a list of layers in [-{n_layers}, {n_layers})")
    for key in ("top_k", "batch_size"):
        if config.get(key) is not None and not _count(config[key], 1):
            raise _wrong(source, f"selection.config.{key}", config[key], "a positive integer")
    chat_template = config.get("chat_template", "auto")
    if not isinstance(chat_template, bool) and chat_template != "auto":
        raise _wrong(source, "selection.config.chat_template", chat_template,
                     "true, false or 'auto'")
    if not isinstance(config.get("system_prompt"), (str, type(None))):
        raise _wrong(source, "selection.config.system_prompt", config["system_prompt"],
                     "text or null")
    try:
        DiscoverConfig.from_dict(config)
    except (InvalidArgumentError, TypeError) as exc:
        raise CircuitFormatError(f"{source}: selection.config is not a valid discovery "
                                 f"config ({exc}); {_AGAIN}") from None


def _check_finite(data: Any, source: str) -> None:
    """Refuse NaN and infinities anywhere (JSON has none; Python's reader accepts them)."""
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            shown = where.lstrip(".") or "the file"
            raise CircuitFormatError(f"{source}: {shown} is {value}, not a finite number; "
                                     f"{_AGAIN}")
        if isinstance(value, Mapping):
            stack.extend((f"{where}.{key}", item) for key, item in value.items())
        elif isinstance(value, (list, tuple)):
            stack.extend((f"{where}[{i}]", item) for i, item in enumerate(value))


def _section(data: Mapping[str, Any], key: str, source: str) -> Mapping[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _wrong(source, key, value, "an object")
    return value


def _count(value: Any, lowest: int | None) -> bool:
    """Whether ``value`` is an int (not a bool) of at least ``lowest`` (None: any)."""
    return (isinstance(value, int) and not isinstance(value, bool)
            and (lowest is None or value >= lowest))


def _number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _wrong(source: str, field: str, value: Any, expected: str) -> CircuitFormatError:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return CircuitFormatError(f"{source}: {field} must be {expected}, not {shown} "
                              f"({type(value).__name__}); {_AGAIN}")
