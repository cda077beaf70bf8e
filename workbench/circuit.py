"""Circuits: the selected neurons, their signed scores, and where they came from.

A :class:`Circuit` round-trips exactly through the JSON format ``cna-workbench.circuit``
version 1 (see the README). Loading ignores unknown keys, refuses files from a newer
major version, and can check the circuit against a model.

Example:
    >>> from workbench.circuit import Circuit, Neuron, overlap
    >>> a = Circuit.from_neurons([Neuron(29, 117, 3.2), Neuron(28, 5, -1.0)],
    ...                          model={"name": "m", "architecture": "LlamaForCausalLM",
    ...                                 "n_layers": 30, "d_mlp": 1536})
    >>> a.layer_counts()
    {28: 1, 29: 1}
    >>> overlap(a, a).jaccard
    1.0
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from .circuit_checks import check_circuit_data
from .contrast import Contrast
from .errors import CircuitFormatError, CircuitMismatchError, InvalidArgumentError
from .io import atomic_write_text
from .outputs import check_output
from .values import Signs, check_signs, fraction_size
from .version import __version__

FORMAT_NAME = "cna-workbench.circuit"
FORMAT_VERSION = 1
DEFAULT_SITE = "mlp.down_proj.input"


class ModelInfo(Protocol):
    """What a circuit needs of a model: its identity, as a
    :class:`~workbench.models.WorkbenchModel` gives it.

    ``info()`` returns ``{"name", "architecture", "n_layers", "d_mlp"}``.
    """

    def info(self) -> dict[str, Any]: ...


def _created_by() -> str:
    return f"cna-workbench {__version__}"


@dataclass(frozen=True, order=True)
class Neuron:
    """One MLP neuron: block ``layer``, coordinate ``index`` of the down-projection input.

    ``score`` is the signed difference of means (positive minus negative prompts).
    """

    layer: int
    index: int
    score: float = 0.0

    @property
    def key(self) -> tuple[int, int]:
        return (self.layer, self.index)


@dataclass
class Circuit:
    """A set of neurons with provenance. Field names mirror the JSON format."""

    model: dict[str, Any]
    neurons: list[Neuron]
    prompting: dict[str, Any] = field(
        default_factory=lambda: {"chat_template": None, "system_prompt": None})
    selection: dict[str, Any] = field(default_factory=dict)
    prompts: dict[str, Any] = field(default_factory=dict)
    site: str = DEFAULT_SITE
    token_position: str = "last"
    created_by: str = field(default_factory=_created_by)
    #: In-memory statistics behind the circuit (deltas, means); never serialised.
    contrast: Contrast | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        for key in ("name", "architecture", "n_layers", "d_mlp"):
            if key not in self.model:
                raise CircuitFormatError(f"circuit 'model' is missing {key!r}")
        seen: set[tuple[int, int]] = set()
        for neuron in self.neurons:
            if not (0 <= neuron.layer < self.model["n_layers"]
                    and 0 <= neuron.index < self.model["d_mlp"]):
                raise CircuitFormatError(
                    f"neuron (layer {neuron.layer}, index {neuron.index}) is outside the "
                    f"model's {self.model['n_layers']} layers x {self.model['d_mlp']} neurons"
                )
            if neuron.key in seen:
                raise CircuitFormatError(
                    f"neuron (layer {neuron.layer}, index {neuron.index}) appears twice"
                )
            seen.add(neuron.key)

    @classmethod
    def from_neurons(cls, neurons: Iterable[Neuron | tuple], *,
                     model: ModelInfo | dict[str, Any], **provenance: Any) -> Circuit:
        """A circuit from neurons (or ``(layer, index[, score])`` tuples) for a model.

        ``model`` is a :class:`~workbench.models.WorkbenchModel` or its ``info()`` dict.
        Neurons are ordered by ``|score|``, largest first, ties by (layer, index).
        """
        info = model if isinstance(model, dict) else model.info()
        items = [n if isinstance(n, Neuron) else Neuron(int(n[0]), int(n[1]),
                                                         float(n[2]) if len(n) > 2 else 0.0)
                 for n in neurons]
        items.sort(key=lambda n: (-abs(n.score), n.layer, n.index))
        return cls(model=dict(info), neurons=items, **provenance)

    # -- views -------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.neurons)

    @property
    def name(self) -> str:
        positive = self.prompts.get("positive", {}).get("name")
        negative = self.prompts.get("negative", {}).get("name")
        if positive and negative:
            return f"{positive} vs {negative}"
        return f"circuit of {len(self)} neurons"

    @property
    def n_model_neurons(self) -> int:
        """All MLP neurons of the circuit's model: ``n_layers * d_mlp``."""
        return int(self.model["n_layers"]) * int(self.model["d_mlp"])

    def size_of(self, size: int | float) -> int:
        """The neuron count that ``size`` stands for: an int count, or a float fraction.

        A fraction is of *all* MLP neurons of the model, rounded as
        :func:`workbench.cna.circuit_size` does (``round(fraction * n_layers * d_mlp)``,
        at least 1: :func:`workbench.values.fraction_size`). Raises
        :class:`InvalidArgumentError` for a non-number, a count below 1, a fraction outside
        (0, 1], or more neurons than the circuit holds.

        Example:
            >>> shape = {"name": "m", "architecture": "A", "n_layers": 10, "d_mlp": 100}
            >>> c = Circuit.from_neurons([(0, i, float(i)) for i in range(20)], model=shape)
            >>> c.size_of(5), c.size_of(0.01)
            (5, 10)
        """
        if isinstance(size, bool) or not isinstance(size, numbers.Real) \
                or isinstance(size, float) and not math.isfinite(size):
            raise InvalidArgumentError(
                f"circuit size must be an int (a neuron count) or a float (a fraction of all "
                f"{self.n_model_neurons} MLP neurons), not {size!r}")
        if isinstance(size, numbers.Integral):
            count = int(size)
            if count < 1:
                raise InvalidArgumentError(
                    f"circuit size must be at least 1 neuron, not {count}")
        else:
            if not 0 < size <= 1:
                raise InvalidArgumentError(
                    f"a float circuit size is a fraction of all MLP neurons and must be in "
                    f"(0, 1], not {size!r}; pass an int for a neuron count")
            count = fraction_size(float(size), int(self.model["n_layers"]),
                                  int(self.model["d_mlp"]))
        if count > len(self):
            shown = (f"{count} neurons" if isinstance(size, numbers.Integral)
                     else f"{size!r} ({count} neurons)")
            raise InvalidArgumentError(
                f"circuit size {shown} is larger than the circuit ({len(self)} neurons); "
                "discover a larger circuit (top_k= or fraction=) and take prefixes of it")
        return count

    def top(self, size: int | float) -> Circuit:
        """The ``size`` neurons of largest ``|score|``, as a new circuit.

        ``size`` is an int count or a float fraction of all MLP neurons (see
        :meth:`size_of`). CNA ranks all neurons together by ``|delta|``, so the top ``k`` of
        a circuit of ``K >= k`` neurons is exactly the circuit ``discover(..., top_k=k)``
        would return: a size sweep needs one discovery. Ties are broken by (layer, index),
        as in discovery. The selection provenance records the prefix.

        Example:
            >>> shape = {"name": "m", "architecture": "A", "n_layers": 2, "d_mlp": 8}
            >>> c = Circuit.from_neurons([(0, 1, 3.0), (1, 2, -5.0), (1, 4, 1.0)], model=shape)
            >>> [(n.layer, n.index, n.score) for n in c.top(2).neurons]
            [(1, 2, -5.0), (0, 1, 3.0)]
            >>> c.top(2).selection["prefix_of"]
            {'name': 'circuit of 3 neurons', 'top_k': 3}
        """
        count = self.size_of(size)
        ranked = sorted(self.neurons, key=lambda n: (-abs(n.score), n.layer, n.index))
        selection = dict(self.selection)
        selection.update(
            top_k=count,
            fraction=float(size) if not isinstance(size, numbers.Integral) else None,
            prefix_of={"name": self.name, "top_k": len(self)},
        )
        return Circuit(model=dict(self.model), neurons=ranked[:count],
                       prompting=dict(self.prompting), selection=selection,
                       prompts={k: dict(v) for k, v in self.prompts.items()}, site=self.site,
                       token_position=self.token_position, created_by=self.created_by,
                       contrast=self.contrast)

    def keys(self) -> set[tuple[int, int]]:
        """The ``(layer, index)`` pairs of the circuit."""
        return {n.key for n in self.neurons}

    def select(self, signs: Signs = "all") -> list[Neuron]:
        """Neurons with positive score, negative score, or all of them.

        An unknown ``signs`` raises :class:`~workbench.errors.SteeringError` (an
        :class:`~workbench.errors.InvalidArgumentError`), as steering does.
        """
        check_signs(signs)
        if signs == "all":
            return list(self.neurons)
        if signs == "positive":
            return [n for n in self.neurons if n.score > 0]
        return [n for n in self.neurons if n.score < 0]

    def by_layer(self, signs: Signs = "all") -> dict[int, torch.Tensor]:
        """Layer -> int64 tensor of neuron indices, for the chosen signs."""
        grouped: dict[int, list[int]] = {}
        for neuron in self.select(signs):
            grouped.setdefault(neuron.layer, []).append(neuron.index)
        return {layer: torch.tensor(sorted(idx), dtype=torch.long)
                for layer, idx in sorted(grouped.items())}

    def layer_counts(self) -> dict[int, int]:
        """Layer -> number of circuit neurons in it (layers with none are left out)."""
        counts: dict[int, int] = {}
        for neuron in self.neurons:
            counts[neuron.layer] = counts.get(neuron.layer, 0) + 1
        return dict(sorted(counts.items()))

    def to_dataframe(self):
        """A pandas DataFrame with columns rank, layer, index, score, sign."""
        import pandas as pd

        return pd.DataFrame(
            [{"rank": rank, "layer": n.layer, "index": n.index, "score": n.score,
              "sign": "+" if n.score > 0 else "-" if n.score < 0 else "0"}
             for rank, n in enumerate(self.neurons, 1)],
            columns=["rank", "layer", "index", "score", "sign"],
        )

    # -- JSON ----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The circuit as a JSON-ready dict (format ``cna-workbench.circuit`` v1)."""
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "model": dict(self.model),
            "site": self.site,
            "token_position": self.token_position,
            "prompting": dict(self.prompting),
            "selection": dict(self.selection),
            "prompts": {k: dict(v) for k, v in self.prompts.items()},
            "neurons": [{"layer": n.layer, "index": n.index, "score": n.score}
                        for n in self.neurons],
            "created_by": self.created_by,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "circuit") -> Circuit:
        """Build a circuit from a parsed JSON object; unknown keys are ignored."""
        if not isinstance(data, dict):
            raise CircuitFormatError(f"{source}: a circuit must be a JSON object")
        if data.get("format") != FORMAT_NAME:
            raise CircuitFormatError(
                f"{source}: not a circuit file (format is {data.get('format')!r}, "
                f"expected {FORMAT_NAME!r})"
            )
        major = _major_version(data.get("version"), source)
        if major > FORMAT_VERSION:
            raise CircuitFormatError(
                f"{source} uses circuit format version {data['version']}, newer than this "
                f"cna-workbench can read (version {FORMAT_VERSION}); upgrade with "
                "`pip install -U cna-workbench`"
            )
        check_circuit_data(data, source)  # types, finite numbers, ranges, saved config
        try:
            neurons = [Neuron(_whole(n["layer"], "layer"), _whole(n["index"], "index"),
                              float(n["score"])) for n in data["neurons"]]
            return cls(
                model=dict(data["model"]),
                neurons=neurons,
                prompting=dict(data.get("prompting") or {}),
                selection=dict(data.get("selection") or {}),
                prompts={k: dict(v) for k, v in (data.get("prompts") or {}).items()},
                site=data.get("site", DEFAULT_SITE),
                token_position=data.get("token_position", "last"),
                created_by=data.get("created_by", "unknown"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, CircuitFormatError):
                raise
            raise CircuitFormatError(f"{source}: malformed circuit ({exc!r})") from None

    def save(self, path: str | Path) -> Path:
        """Write the circuit JSON atomically (temporary file, then rename).

        An existing file at ``path`` is replaced. A path that cannot be written (a folder,
        a parent that is a file) raises :class:`~workbench.errors.OutputPathError` first.
        """
        path = check_output(path, what="circuit path")
        atomic_write_text(path, self.to_json())
        return path

    @classmethod
    def load(cls, path: str | Path,
             model: ModelInfo | dict[str, Any] | None = None) -> Circuit:
        """Read a circuit file; with ``model``, also check it was made for that shape.

        Example:
            >>> Circuit.load("circuit.json")  # doctest: +SKIP
        """
        path = Path(path)
        if path.is_dir():
            raise CircuitFormatError(f"circuit file {str(path)!r} is a folder; give the "
                                     "circuit's .json file")
        if not path.is_file():
            raise CircuitFormatError(f"circuit file {str(path)!r} does not exist")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CircuitFormatError(f"{path} is not valid JSON ({exc}); the file is "
                                     "truncated or damaged: discover the circuit again"
                                     ) from None
        except RecursionError:
            raise CircuitFormatError(f"{path} is nested too deeply to be a circuit file"
                                     ) from None
        except OSError as exc:
            raise CircuitFormatError(f"circuit file {str(path)!r} cannot be read "
                                     f"({exc.strerror or exc})") from None
        circuit = cls.from_dict(data, source=str(path))
        if model is not None:
            circuit.check_model(model)
        return circuit

    def check_model(self, model: ModelInfo | dict[str, Any]) -> None:
        """Raise :class:`CircuitMismatchError` unless ``model`` has this circuit's shape.

        Architecture, number of layers and MLP width must match; the model *name* may
        differ (circuits transfer between base and instruct variants on purpose).
        """
        info = model if isinstance(model, dict) else model.info()
        wrong = [f"{key} {self.model[key]!r} vs {info.get(key)!r}"
                 for key in ("architecture", "n_layers", "d_mlp")
                 if self.model[key] != info.get(key)]
        if wrong:
            raise CircuitMismatchError(
                f"this circuit was discovered on {self.model['name']!r} and does not fit "
                f"{info.get('name')!r} ({'; '.join(wrong)}); discover a new circuit on this model"
            )

    # -- exports -------------------------------------------------------------

    def to_neuronpedia(self, model_id: str | None = None, *, name: str | None = None,
                       description: str | None = None) -> dict[str, Any]:
        """A Neuronpedia-style list: ``{"name", "description", "features": [...]}``."""
        model_id = model_id or self.model["name"]
        return {
            "name": name or self.name,
            "description": description or (
                f"CNA circuit of {len(self)} MLP neurons ({self.site}), "
                f"discovered with cna-workbench"),
            "features": [
                {"modelId": model_id, "layer": f"{n.layer}-mlp", "index": n.index,
                 "description": f"delta={n.score:+.4g}"}
                for n in self.neurons
            ],
        }


def _whole(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CircuitFormatError(f"neuron {what} must be an integer, not {value!r}")
    return value


def _major_version(version: Any, source: str) -> int:
    if isinstance(version, bool) or version is None:
        raise CircuitFormatError(f"{source}: missing or invalid 'version'")
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        raise CircuitFormatError(f"{source}: invalid version {version!r}") from None


@dataclass(frozen=True)
class Overlap:
    """Shared neurons of two circuits."""

    shared: list[tuple[int, int]]
    n_a: int
    n_b: int

    @property
    def n_shared(self) -> int:
        return len(self.shared)

    @property
    def jaccard(self) -> float:
        union = self.n_a + self.n_b - self.n_shared
        return self.n_shared / union if union else 0.0

    @property
    def fraction_a(self) -> float:
        """Share of circuit A's neurons that are also in B."""
        return self.n_shared / self.n_a if self.n_a else 0.0

    @property
    def fraction_b(self) -> float:
        """Share of circuit B's neurons that are also in A."""
        return self.n_shared / self.n_b if self.n_b else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"n_a": self.n_a, "n_b": self.n_b, "n_shared": self.n_shared,
                "jaccard": self.jaccard, "fraction_a": self.fraction_a,
                "fraction_b": self.fraction_b}


def overlap(a: Circuit, b: Circuit) -> Overlap:
    """Shared ``(layer, neuron)`` pairs, Jaccard index and the share of each circuit.

    The circuits must come from models of the same shape (e.g. base and instruct).
    """
    for key in ("n_layers", "d_mlp"):
        if a.model[key] != b.model[key]:
            raise CircuitMismatchError(
                f"cannot compare circuits of differently shaped models: {key} "
                f"{a.model[key]} ({a.model['name']}) vs {b.model[key]} ({b.model['name']})"
            )
    shared = sorted(a.keys() & b.keys())
    return Overlap(shared=shared, n_a=len(a), n_b=len(b))
