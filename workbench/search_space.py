"""What a gate search may choose: contrast, circuit size, layer band, signs, multiplier.

Kept apart from :mod:`workbench.search` (which runs the study) so that the command line
can show the defaults without importing torch.

Example:
    >>> SearchSpace(bands=("last-25%", "all")).bands
    ('last-25%', 'all')
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import InvalidArgumentError

#: The contrasts built in: the paper's pair and the pair filtered by the model's behaviour.
BUILTIN_CONTRASTS = ("jbb-pair", "refusal-filtered")
#: Layer bands: the share of the last layers a circuit may use (1.0: all layers).
BANDS = {"last-10%": 0.10, "last-25%": 0.25, "last-50%": 0.50, "all": 1.0}


@dataclass(frozen=True)
class SearchSpace:
    """What a trial may choose.

    Args:
        contrasts: names of the contrasts to try (built in: :data:`BUILTIN_CONTRASTS`; a
            user's pair is named by the key it is passed under).
        min_fraction, max_fraction: circuit size as a share of all MLP neurons, searched
            on a log scale.
        bands: keys of :data:`BANDS`.
        signs: ``"all"`` and/or ``"positive"`` (neurons of positive delta only).
        min_multiplier, max_multiplier: the multiplier range; equal values fix it (default
            0, ablation). A negative minimum lets trials flip the circuit.

    Example:
        >>> SearchSpace(max_fraction=0.01).max_fraction
        0.01
    """

    contrasts: tuple[str, ...] = BUILTIN_CONTRASTS
    min_fraction: float = 0.0005
    max_fraction: float = 0.05
    bands: tuple[str, ...] = tuple(BANDS)
    signs: tuple[str, ...] = ("all", "positive")
    min_multiplier: float = 0.0
    max_multiplier: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "contrasts", tuple(self.contrasts))
        object.__setattr__(self, "bands", tuple(self.bands))
        object.__setattr__(self, "signs", tuple(self.signs))
        for name, values, allowed in (("bands", self.bands, tuple(BANDS)),
                                      ("signs", self.signs, ("all", "positive"))):
            if not values or set(values) - set(allowed):
                raise InvalidArgumentError(
                    f"{name} must be a non-empty choice of {allowed}, not {list(values)}")
        if not self.contrasts:
            raise InvalidArgumentError("contrasts must name at least one contrast")
        if not 0 < self.min_fraction <= self.max_fraction <= 1:
            raise InvalidArgumentError(
                f"fractions must satisfy 0 < min_fraction <= max_fraction <= 1, not "
                f"{self.min_fraction} and {self.max_fraction}")
        if not (math.isfinite(self.min_multiplier) and math.isfinite(self.max_multiplier)
                and self.min_multiplier <= self.max_multiplier < 1):
            raise InvalidArgumentError(
                f"multipliers must be finite with min_multiplier <= max_multiplier < 1 (the "
                f"search removes a behaviour), not {self.min_multiplier} and "
                f"{self.max_multiplier}")

    def suggest(self, trial: Any) -> dict[str, Any]:
        """One trial's choice of every axis (Optuna's ``suggest_*`` calls)."""
        choice = {
            "contrast": trial.suggest_categorical("contrast", list(self.contrasts)),
            "fraction": trial.suggest_float("fraction", self.min_fraction, self.max_fraction,
                                            log=self.min_fraction < self.max_fraction),
            "band": trial.suggest_categorical("band", list(self.bands)),
            "signs": trial.suggest_categorical("signs", list(self.signs)),
        }
        choice["multiplier"] = (trial.suggest_float("multiplier", self.min_multiplier,
                                                    self.max_multiplier)
                                if self.min_multiplier < self.max_multiplier
                                else self.min_multiplier)
        return choice

    def admits(self, params: Mapping[str, Any]) -> bool:
        """Whether a choice (such as :data:`PAPER_TRIAL`) lies inside this space."""
        return (params["contrast"] in self.contrasts and params["band"] in self.bands
                and params["signs"] in self.signs
                and self.min_fraction <= params["fraction"] <= self.max_fraction
                and self.min_multiplier <= params["multiplier"] <= self.max_multiplier)


def band_start(n_layers: int, band: str) -> int:
    """The first layer of ``band``: the last ``ceil(share * n_layers)`` layers.

    Example:
        >>> [band_start(24, band) for band in BANDS]
        [21, 18, 12, 0]
    """
    if band not in BANDS:
        raise InvalidArgumentError(f"band must be one of {tuple(BANDS)}, not {band!r}")
    return n_layers - math.ceil(BANDS[band] * n_layers)
