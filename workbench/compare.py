"""The base-vs-instruct experiment: where circuits sit, how they overlap, what steering does.

``compare_models`` runs CNA with the same contrast (JBB harmful vs benign, discovered on
the ``discover`` halves) on several models and reports:

- **location**: the fraction of each circuit's neurons in the last 3 layers, the last 10%
  of layers and the last quarter of layers;
- **overlap** of (layer, neuron) pairs between the first two models' circuits (they must
  share a shape, e.g. a model before and after safety tuning): count, Jaccard, and the
  fraction of each circuit that is shared;
- **steering**: refusal and quality under each multiplier on the held-out halves and on
  StrongREJECT, for the first ``steered`` models, with a random circuit of the same shape
  as the control (multiplier 1 is the unchanged model for both, so it runs once);
- **lock-picking**: one prompt completed at multipliers 0, 1 and 2 on every model.

Its settings are a :class:`~workbench.config.CompareConfig`, recorded as
``comparison.settings`` and in ``comparison.json``.

Example:
    >>> from workbench.compare import location
    >>> from workbench.circuit import Circuit
    >>> c = Circuit.from_neurons([(29, 0), (28, 1), (10, 2), (22, 3)], model={
    ...     "name": "m", "architecture": "A", "n_layers": 30, "d_mlp": 8})
    >>> location(c)
    {'last_3_layers': 0.5, 'last_10pct_layers': 0.5, 'last_quarter_layers': 0.75}
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .circuit import Circuit, Overlap, overlap
from .config import CompareConfig
from .discovery import discover
from .errors import FileFormatError, InvalidArgumentError
from .evaluation.benchmarks import load_benchmark
from .evaluation.interventions import Intervention
from .evaluation.sweep import summary, sweep
from .generation import generate
from .io import atomic_write_text
from .models import WorkbenchModel, load_model
from .outputs import check_output
from .results_files import read_results
from .values import check_multiplier

#: the defaults of :class:`~workbench.config.CompareConfig` (defined there, once)
DEFAULT_MODELS = CompareConfig.models
LOCKPICKING_PROMPT = CompareConfig.lockpicking_prompt
MULTIPLIERS = CompareConfig.multipliers


def _last_layers(n_layers: int, fraction: float) -> int:
    return max(1, math.ceil(fraction * n_layers))


def location(circuit: Circuit) -> dict[str, float]:
    """Fractions of the circuit's neurons in the last 3, last 10% and last 25% of layers."""
    n_layers = int(circuit.model["n_layers"])
    starts = {"last_3_layers": n_layers - 3,
              "last_10pct_layers": n_layers - _last_layers(n_layers, 0.10),
              "last_quarter_layers": n_layers - _last_layers(n_layers, 0.25)}
    total = max(len(circuit), 1)
    return {name: sum(n.layer >= start for n in circuit.neurons) / total
            for name, start in starts.items()}


@dataclass
class ModelResult:
    """One model's circuit and what steering it did."""

    name: str
    circuit: Circuit
    lockpicking: dict[float, str]
    steering: pd.DataFrame | None = None  # summary() rows, or None if not steered


@dataclass
class Comparison:
    """The results of :func:`compare_models`, as tables."""

    models: list[ModelResult]
    pair_overlap: Overlap | None
    settings: dict[str, Any] = field(default_factory=dict)

    def location_table(self) -> pd.DataFrame:
        """One row per model: layers, circuit size, location fractions, neurons per layer."""
        return pd.DataFrame([{
            "model": m.name, "n_layers": m.circuit.model["n_layers"],
            "neurons": len(m.circuit), **location(m.circuit),
            "per_layer": " ".join(f"{layer}:{n}" for layer, n in m.circuit.layer_counts().items()),
        } for m in self.models])

    def overlap_table(self) -> pd.DataFrame:
        """The pair's circuit overlap (the paper's Table 8 analogue); empty without a pair."""
        if self.pair_overlap is None:
            return pd.DataFrame()
        a, b = self.models[0], self.models[1]
        o = self.pair_overlap
        return pd.DataFrame([{"model_a": a.name, "model_b": b.name, "neurons_a": len(a.circuit),
                              "neurons_b": len(b.circuit), "shared": o.n_shared,
                              "jaccard": o.jaccard, "fraction_of_a": o.fraction_a,
                              "fraction_of_b": o.fraction_b}])

    def steering_table(self) -> pd.DataFrame:
        """Refusal rate and quality per model, benchmark, intervention and multiplier."""
        frames = [m.steering.assign(model=m.name) for m in self.models
                  if m.steering is not None]
        if not frames:
            return pd.DataFrame()
        table = pd.concat(frames, ignore_index=True)
        return table[["model"] + [c for c in table.columns if c != "model"]]

    def lockpicking_table(self) -> pd.DataFrame:
        """The lock-picking completions, one row per model and multiplier."""
        return pd.DataFrame([{"model": m.name, "multiplier": k, "completion": text}
                             for m in self.models for k, text in m.lockpicking.items()])

    def to_dict(self) -> dict[str, Any]:
        """Everything as JSON-serialisable data (circuits as their JSON dicts)."""
        return {
            "settings": self.settings,
            "location": self.location_table().to_dict(orient="records"),
            "overlap": self.overlap_table().to_dict(orient="records"),
            "steering": self.steering_table().to_dict(orient="records"),
            "lockpicking": self.lockpicking_table().to_dict(orient="records"),
            "circuits": {m.name: m.circuit.to_dict() for m in self.models},
        }

    def save(self, out_dir: str | Path) -> Path:
        """Write ``comparison.json`` and each circuit's JSON into ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for m in self.models:
            m.circuit.save(out / f"circuit-{m.name}.json")
        path = out / "comparison.json"
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1, default=str) + "\n")
        return path

    def report(self) -> str:
        """The four tables as plain text."""
        fmt = {"float_format": lambda v: f"{v:.3f}", "index": False}
        parts = ["Where the circuits sit", self.location_table().to_string(**fmt)]
        if self.pair_overlap is not None:
            parts += ["", "Overlap of the pair's circuits", self.overlap_table().to_string(**fmt)]
        steering = self.steering_table()
        if len(steering):
            parts += ["", "Steering (refusal rate and quality)", steering.to_string(**fmt)]
        prompt = self.settings.get("lockpicking_prompt", LOCKPICKING_PROMPT)
        parts += ["", f"Lock-picking: {prompt!r}"]
        for row in self.lockpicking_table().itertuples():
            text = " ".join(row.completion.split())
            parts.append(f"  {row.model} x{row.multiplier:g}: {text[:160]}")
        return "\n".join(parts)


def compare_models(models: Sequence[str | WorkbenchModel] | None = None,
                   config: CompareConfig | Mapping[str, Any] | None = None, *,
                   out_dir: str | Path | None = None, progress: bool = True,
                   **overrides: Any) -> Comparison:
    """Run the experiment (see the module docstring) and return its tables.

    Args:
        models: embedded names, hub ids or loaded models; the first two form the pair
            whose circuits are overlapped when their shapes agree. None: the config's
            ``models`` (by default :data:`DEFAULT_MODELS`).
        config: the settings (:class:`~workbench.config.CompareConfig`, or the dict of a
            saved comparison's ``settings``): ``steered``, ``positive``/``negative``,
            ``fraction`` (default 0.1%) or ``top_k``, ``multipliers``, ``n``,
            ``discover_n``, ``strongreject_n``, ``max_new_tokens``, ``batch_size``,
            ``seed``, ``lockpicking_prompt``.
        **overrides: any of those settings by name, over ``config`` (or the defaults),
            e.g. ``compare_models(n=10)``; ``fraction=`` alone also clears the config's
            ``top_k``.
        out_dir: where to keep sweep results (parquet, resumable) and the JSON outputs.

    Returns:
        A :class:`Comparison`; its ``settings`` are ``dataclasses.asdict`` of the config
        that ran: ``models`` are the models' names and ``steered`` is resolved to a count.

    Example:
        >>> comparison = compare_models(n=10, strongreject_n=10)  # doctest: +SKIP
        >>> print(comparison.report())                            # doctest: +SKIP
        >>> again = compare_models(config=comparison.settings)    # doctest: +SKIP
    """
    if isinstance(config, Mapping):  # e.g. the settings of a saved comparison
        config = CompareConfig.from_dict(config)
    elif config is not None and not isinstance(config, CompareConfig):
        raise InvalidArgumentError(f"config must be a CompareConfig (or its dict), not "
                                   f"{config!r}; the models are the first argument")
    loaded: dict[str, WorkbenchModel] = {}
    if models is not None:
        if isinstance(models, (str, bytes, WorkbenchModel)) or not hasattr(models, "__iter__"):
            overrides["models"] = models  # refused by CompareConfig, which says why
        else:
            specs = list(models)
            loaded = {spec.name: spec for spec in specs if isinstance(spec, WorkbenchModel)}
            overrides["models"] = tuple(
                spec.name if isinstance(spec, WorkbenchModel)
                else os.fspath(spec) if isinstance(spec, os.PathLike) else spec
                for spec in specs)  # a local folder may be given as a Path
    if "fraction" in overrides and "top_k" not in overrides:
        overrides["top_k"] = None  # a size given as a fraction replaces the config's top_k
    config = (config or CompareConfig()).replace(**overrides)
    config = config.replace(steered=config.n_steered)  # the record says how many ran
    discover_positive = load_benchmark(config.positive, split="discover", n=config.discover_n,
                                       seed=config.seed)
    discover_negative = load_benchmark(config.negative, split="discover", n=config.discover_n,
                                       seed=config.seed)
    held_out = [load_benchmark(name, split="heldout", n=config.n, seed=config.seed)
                for name in (config.positive, config.negative)]
    if config.strongreject_n != 0:
        held_out.append(load_benchmark("strongreject", n=config.strongreject_n,
                                       seed=config.seed))
    out = check_comparison_folder(out_dir) if out_dir is not None else None
    results = []
    for position, name in enumerate(config.models):
        model = loaded[name] if name in loaded else load_model(name)
        circuit = discover(model, discover_positive, discover_negative, config.discovery,
                           progress=progress)
        lockpicking = dict(zip((0.0, 1.0, 2.0), (
            generate(model, config.lockpicking_prompt, circuit=circuit, multiplier=k,
                     max_new_tokens=config.max_new_tokens)[0] for k in (0.0, 1.0, 2.0))))
        steering = None
        if position < config.n_steered:
            steering = steering_summary(model, circuit, config.multipliers, held_out,
                                        seed=config.seed, max_new_tokens=config.max_new_tokens,
                                        batch_size=config.batch_size, out=out,
                                        progress=progress)
        results.append(ModelResult(model.name, circuit, lockpicking, steering))
    pair = None
    if len(results) >= 2 and _same_shape(results[0].circuit, results[1].circuit):
        pair = overlap(results[0].circuit, results[1].circuit)
    comparison = Comparison(results, pair, settings=dataclasses.asdict(config))
    if out is not None:
        comparison.save(out)
    return comparison


def check_comparison_folder(out_dir: str | Path, *, what: str = "out_dir") -> Path:
    """Refuse a comparison folder that cannot be written or holds damaged sweeps, up front.

    The folder is kept and resumed: its ``sweep-*.parquet`` files are read back by the
    sweeps, so each is checked here (:func:`~workbench.results_files.read_results`) before
    a model is loaded; ``comparison.json`` and the circuit files are replaced at the end.

    Example:
        >>> import tempfile, pathlib
        >>> check_comparison_folder(pathlib.Path(tempfile.mkdtemp()) / "new").name
        'new'
    """
    out = check_output(out_dir, kind="folder", existing="keep", what=what)
    if out.is_dir():
        for sweep_file in sorted(out.glob("sweep-*.parquet")):
            read_results(sweep_file)
    return out


def load_config(path: str | Path) -> CompareConfig:
    """The settings of a saved comparison (``comparison.json`` or the folder holding it).

    Files written before the settings named their models and ``steered`` get them from
    their tables: the circuits' models in order, and the models with steering rows.

    Example:
        >>> config = load_config("comparison")                 # doctest: +SKIP
        >>> compare_models(config=config, out_dir="comparison")  # doctest: +SKIP
    """
    path = Path(path)
    if path.is_dir():
        path = path / "comparison.json"
    if not path.is_file():
        raise FileFormatError(f"{str(path)!r} does not exist; give a comparison folder or "
                              "its comparison.json")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        settings = dict(data.get("settings", {}))
        settings.setdefault("models", list(data.get("circuits", {})))
        settings.setdefault("steered", len({row["model"] for row in data.get("steering", [])}))
        return CompareConfig.from_dict(settings)
    # JSONDecodeError is a ValueError; a value of the wrong type or a key that is missing
    # fails as AttributeError, TypeError or KeyError, and CompareConfig's own checks say
    # which setting is wrong (an InvalidArgumentError, a ValueError too).
    except (ValueError, UnicodeDecodeError, AttributeError, TypeError, KeyError,
            RecursionError) as exc:
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise FileFormatError(f"{path} is not a valid comparison file ({reason}); run "
                              "compare_models again to write it") from None


def steering_summary(model: WorkbenchModel, circuit: Circuit, multipliers: Sequence[float],
                     prompt_sets: Sequence, *, seed: int = 0, out: Path | None = None,
                     **options: Any) -> pd.DataFrame:
    """Summary rows of the circuit and its random control at every multiplier.

    At multiplier 1 both are the unchanged model, so the control skips it and the
    circuit's row at 1 is the baseline. ``options`` go to
    :func:`~workbench.evaluation.sweep` (``max_new_tokens``, ``batch_size``...).

    Example:
        >>> steering_summary(model, circuit, [0, 1], ["jbb-harmful"])  # doctest: +SKIP
    """
    multipliers = [check_multiplier(m) for m in multipliers]
    runs = [(Intervention.cna(circuit), multipliers),
            (Intervention.random(circuit, seed=seed), [m for m in multipliers if m != 1.0])]
    frames = [sweep(model, [intervention], values, prompt_sets,
                    out=out / f"sweep-{model.name}-{intervention.name}.parquet" if out else None,
                    **options)
              for intervention, values in runs if values]
    return summary(pd.concat(frames, ignore_index=True))


def _same_shape(a: Circuit, b: Circuit) -> bool:
    """Whether two circuits index the same neurons (same architecture and shape)."""
    return all(a.model[k] == b.model[k] for k in ("architecture", "n_layers", "d_mlp"))
