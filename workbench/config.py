"""The settings of circuit discovery, as one frozen, validated record.

:class:`DiscoverConfig` holds every setting of :func:`~workbench.discover` that shapes the
circuit. It is validated when it is made, saved into the circuit
(``circuit.selection["config"]``), and its field defaults are the defaults of the
library, the ``cna`` command and the widgets: each default lives here once. This module
imports nothing heavy, so the command line can read the defaults before loading torch.

Example:
    >>> config = DiscoverConfig(top_k=200, exclude_layers=[-1])
    >>> config.exclude_layers, config.fraction
    ((-1,), 0.001)
    >>> DiscoverConfig(fraction=2.0)
    Traceback (most recent call last):
    ...
    workbench.errors.InvalidArgumentError: fraction must be a number in (0, 1], not 2.0
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .errors import InvalidArgumentError

#: Share of all MLP neurons kept in a circuit (the paper's 0.1%).
DEFAULT_FRACTION = 0.001


@dataclass(frozen=True)
class DiscoverConfig:
    """Every setting of :func:`~workbench.discover` that shapes the circuit.

    Attributes:
        fraction: circuit size as a share of all MLP neurons.
        top_k: explicit circuit size; overrides ``fraction`` when given.
        universal_threshold: share of the universal prompts on which a neuron must be in
            the top 0.1% by ``|activation|`` to be excluded.
        exclude_layers: layers whose neurons are never selected (negative indices allowed).
        chat_template: ``"auto"`` (the tokenizer's template if it has one), True or False.
        system_prompt: a system message for the chat template, or None.
        max_imbalance: refuse prompt sets whose sizes differ by more than this ratio
            (None: allow any ratio).
        batch_size: prompts per forward pass (does not change the circuit beyond float
            rounding).
    """

    fraction: float | None = DEFAULT_FRACTION
    top_k: int | None = None
    universal_threshold: float = 0.8
    exclude_layers: tuple[int, ...] = ()
    chat_template: bool | Literal["auto"] = "auto"
    system_prompt: str | None = None
    max_imbalance: float | None = 4.0
    batch_size: int = 16

    def __post_init__(self) -> None:
        object.__setattr__(self, "exclude_layers", _layers(self.exclude_layers))
        if self.top_k is not None:
            if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) \
                    or self.top_k < 1:
                raise InvalidArgumentError(
                    f"top_k must be a positive integer, not {self.top_k!r}")
        elif isinstance(self.fraction, bool) or not isinstance(self.fraction, (int, float)) \
                or not 0 < self.fraction <= 1:
            raise InvalidArgumentError(
                f"fraction must be a number in (0, 1], not {self.fraction!r}")
        if isinstance(self.universal_threshold, bool) \
                or not isinstance(self.universal_threshold, (int, float)) \
                or not 0 < self.universal_threshold <= 1:
            raise InvalidArgumentError(f"universal_threshold must be in (0, 1], not "
                                       f"{self.universal_threshold!r}")
        if self.max_imbalance is not None and (
                isinstance(self.max_imbalance, bool)
                or not isinstance(self.max_imbalance, (int, float)) or self.max_imbalance < 1):
            raise InvalidArgumentError(f"max_imbalance must be a ratio >= 1 or None, not "
                                       f"{self.max_imbalance!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) \
                or self.batch_size < 1:
            raise InvalidArgumentError(
                f"batch_size must be a positive integer, not {self.batch_size!r}")

    def replace(self, **overrides: Any) -> DiscoverConfig:
        """A copy with some fields changed; an unknown name is an error that lists them.

        Example:
            >>> DiscoverConfig().replace(top_k=10).top_k
            10
        """
        unknown = sorted(set(overrides) - set(FIELDS))
        if unknown:
            raise InvalidArgumentError(f"unknown discovery setting(s) {unknown}; the settings "
                                       f"are {list(FIELDS)}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (``exclude_layers`` as a list)."""
        data = dataclasses.asdict(self)
        data["exclude_layers"] = list(self.exclude_layers)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DiscoverConfig:
        """The config saved by :meth:`to_dict`; unknown keys are ignored.

        Example:
            >>> DiscoverConfig.from_dict({"top_k": 5, "later": 1}).top_k
            5
        """
        return cls(**{k: v for k, v in data.items() if k in FIELDS})


FIELDS = tuple(f.name for f in dataclasses.fields(DiscoverConfig))


def _layers(layers: Any) -> tuple[int, ...]:
    if isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__"):
        raise InvalidArgumentError(f"exclude_layers must be a list of layer indices, not "
                                   f"{layers!r}")
    return tuple(layers)
