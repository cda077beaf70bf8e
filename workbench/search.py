"""Find the gate instead of guessing it: a resumable multi-objective search over the
contrast, circuit size, layer band, signs and multiplier of a CNA intervention.

Every trial builds one circuit from the ranking of one contrast (the JBB pair, the
refusal-filtered pair or a pair of the user's), keeps the top ``fraction`` of all MLP
neurons inside a band of late layers, optionally only those of positive delta, and
applies it at a multiplier. It is scored on prompts it was not discovered on (the JBB
``heldout`` halves):

- ``refusal``: held-out harmful refusal with the circuit applied;
- ``benign_refusal``: over-refusal of held-out benign prompts;
- ``kl``: KL divergence on harmless prompts (:class:`~workbench.evaluation.drift.HarmlessDrift`);
- the same three for a random circuit of the same per-layer shape (seeded), so that a
  trial's effect can be told from the effect of touching that many neurons at all.

The two objectives are ``removed_beyond_random`` (the random control's harmful refusal
minus the circuit's: refusal removed that a same-shape random circuit does not remove;
maximised) and ``kl`` (minimised). Optuna's TPE sampler explores them, as heretic does for
its abliteration search; :meth:`GateSearch.pareto` lists the trials no other beats on both.

Discovery statistics are computed once per contrast and kept beside the study, so a trial
costs only its generations. The study lives in a SQLite file: running again with the same
file resumes it, ``run(20)`` adds 20 trials, and Optuna's own tools (``optuna-dashboard``,
``optuna.load_study``) open it. A study remembers its settings and refuses to continue under
others. The paper's setting (the JBB pair, 0.1%, all layers, all signs, x0) is the first
trial of a new study.

Example:
    >>> from workbench.search import GateSearch                               # doctest: +SKIP
    >>> search = GateSearch(model, "gate.db", heldout_n=20)                   # doctest: +SKIP
    >>> search.run(12)                                                        # doctest: +SKIP
    >>> search.pareto()[["contrast", "fraction", "band", "refusal", "kl"]]    # doctest: +SKIP
"""

from __future__ import annotations

import json
import pickle
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from .circuit import Circuit
from .cna import select_top
from .config import EVALUATION_BATCH_SIZE, SEARCH_MAX_NEW_TOKENS
from .discovery import discover
from .errors import FileFormatError, InvalidArgumentError
from .evaluation.benchmarks import load_benchmark
from .evaluation.drift import HarmlessDrift, describe_drift, drift_prompts
from .evaluation.interventions import Intervention
from .evaluation.sweep import summary, sweep
from .filtering import filter_by_behaviour
from .io import atomic_write_bytes
from .models import WorkbenchModel
from .outputs import check_output
from .prompts import PromptSet
from .search_space import BUILTIN_CONTRASTS, SearchSpace, band_start
from .values import Signs

#: The paper's setting, the first trial of every new study.
PAPER_TRIAL = {"contrast": "jbb-pair", "fraction": 0.001, "band": "all", "signs": "all",
               "multiplier": 0.0}
OBJECTIVES = ("removed_beyond_random", "kl")
#: The study's name inside its SQLite file (``optuna.load_study(study_name=...)``).
STUDY_NAME = "cna-gate-search"


@dataclass
class Ranking:
    """One contrast's discovery statistics, from which every trial's circuit is cut.

    ``delta`` and ``excluded`` are ``[n_layers, d_mlp]`` (float64 signed mean difference;
    bool universal neurons), ``circuit`` the contrast's own top circuit (its provenance).
    """

    name: str
    delta: torch.Tensor
    excluded: torch.Tensor
    circuit: Circuit
    prompts: set[str] = field(default_factory=set)

    def cut(self, fraction: float, band: str, signs: Signs) -> Circuit:
        """The top ``fraction`` of all MLP neurons inside ``band`` (of positive delta only
        when ``signs`` is ``"positive"``).

        With all signs, the neurons :func:`~workbench.discover` keeps with the layers
        outside the band excluded.
        """
        n_layers, d_mlp = self.delta.shape
        k = max(1, round(fraction * n_layers * d_mlp))
        first = band_start(n_layers, band)
        excluded = self.excluded.clone()
        excluded[:first] = True
        if signs == "positive":
            excluded |= self.delta <= 0
        elif signs != "all":
            raise InvalidArgumentError(f"signs must be 'all' or 'positive', not {signs!r}")
        available = int((~excluded).sum())
        if available < k:
            raise InvalidArgumentError(
                f"{self.name} has {available} neurons in {band} with signs {signs!r}, fewer "
                f"than the {k} asked for; choose a smaller fraction or a wider band")
        neurons = select_top(self.delta, k, excluded)
        base = self.circuit
        selection = {**base.selection, "method": "cna", "fraction": fraction, "top_k": k,
                     "band": band, "first_layer": first, "signs": signs,
                     "contrast": self.name}
        return Circuit.from_neurons(neurons, model=base.model, prompting=dict(base.prompting),
                                    selection=selection, prompts=dict(base.prompts))

    def save(self, path: Path) -> None:
        import io

        buffer = io.BytesIO()
        torch.save({"delta": self.delta, "excluded": self.excluded,
                    "circuit": self.circuit.to_dict(), "prompts": sorted(self.prompts)}, buffer)
        atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, name: str, path: Path) -> Ranking:
        saved = torch.load(path, weights_only=True)
        return cls(name, saved["delta"], saved["excluded"],
                   Circuit.from_dict(saved["circuit"], source=str(path)), set(saved["prompts"]))


def _open_study(storage: Path, seed: int, attempts: int = 3) -> Any:
    """The study in ``storage`` (created when the file is new), refusing a file that is not
    an Optuna SQLite study.

    Optuna creates a new SQLite study's tables without a lock, so another process opening
    the same new file at that moment (a second search, a dashboard) can make the creation
    fail once; it is tried again before the file is called damaged."""
    import sqlite3

    import optuna
    from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

    def another_process_is_creating_it(exc: Exception) -> bool:
        return isinstance(exc, IntegrityError) or (isinstance(exc, OperationalError) and any(
            sign in str(exc) for sign in ("already exists", "database is locked")))

    failure: Exception | None = None
    for attempt in range(attempts):
        if attempt:
            time.sleep(0.5)
        try:
            study = optuna.create_study(
                study_name=STUDY_NAME, storage=f"sqlite:///{storage.resolve()}",
                directions=["maximize", "minimize"], load_if_exists=True)
        except (SQLAlchemyError, sqlite3.Error, optuna.exceptions.OptunaError, ValueError,
                KeyError, TypeError) as exc:
            failure = exc
            if another_process_is_creating_it(exc):
                continue
            break
        # Seeded by the study's history too: a resumed study goes on deterministically
        # instead of proposing its first trials again.
        study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials),
                                                   multivariate=True, n_startup_trials=8)
        return study
    reason = " ".join(str(failure).split())[:200]
    raise FileFormatError(
        f"{storage} is not a gate-search study ({type(failure).__name__}: {reason}); give a "
        "new file name, or the .db file a search wrote")


class GateSearch:
    """A resumable Optuna study over :class:`SearchSpace`, scored on held-out prompts.

    Args:
        model: the model to search.
        storage: the study's SQLite file (created, or resumed when it exists); the
            contrasts' statistics are kept in ``<storage>.contrasts/``.
        space: what trials may choose.
        pairs: a user's contrasts by name, ``{"mine": (positive, negative)}``; name them in
            ``space.contrasts``. None of their prompts may be a scoring prompt.
        heldout_n: a seeded sample of this many prompts of each held-out half (None: all 50).
        max_new_tokens: length of each scored completion.
        seed: the sampler's, the random controls' and the samples' seed.
        drift: the harmless-prompt KL reference (built with defaults when None).

    Example:
        >>> search = GateSearch(model, "gate.db", SearchSpace(contrasts=("jbb-pair",)),
        ...                     heldout_n=10, max_new_tokens=24)          # doctest: +SKIP
        >>> search.run(5).pareto()                                        # doctest: +SKIP
    """

    def __init__(self, model: WorkbenchModel, storage: str | Path,
                 space: SearchSpace | None = None, *,
                 pairs: Mapping[str, tuple[Any, Any]] | None = None,
                 heldout_n: int | None = 25, max_new_tokens: int = SEARCH_MAX_NEW_TOKENS,
                 seed: int = 0, batch_size: int = EVALUATION_BATCH_SIZE,
                 drift: HarmlessDrift | None = None,
                 progress: bool = True) -> None:
        import optuna

        self.model = model
        self.space = space or SearchSpace()
        self.pairs = {name: (PromptSet.resolve(pos, name=f"{name}:positive"),
                             PromptSet.resolve(neg, name=f"{name}:negative"))
                      for name, (pos, neg) in (pairs or {}).items()}
        unknown = [c for c in self.space.contrasts
                   if c not in BUILTIN_CONTRASTS and c not in self.pairs]
        if unknown:
            raise InvalidArgumentError(
                f"unknown contrasts {unknown}: use {BUILTIN_CONTRASTS} or pass them in pairs=")
        self.storage = check_output(storage, existing="keep", what="the study file")
        if self.storage.suffix not in (".db", ".sqlite", ".sqlite3"):
            raise InvalidArgumentError(
                f"the study file must be a SQLite file ending in .db, not {str(storage)!r}")
        self.storage.parent.mkdir(parents=True, exist_ok=True)
        self.folder = self.storage.with_name(self.storage.name + ".contrasts")
        self.heldout_n, self.max_new_tokens = heldout_n, max_new_tokens
        self.seed, self.batch_size, self.progress = seed, batch_size, progress
        self.harmful = load_benchmark("jbb-harmful", split="heldout", n=heldout_n, seed=seed)
        self.benign = load_benchmark("jbb-benign", split="heldout", n=heldout_n, seed=seed)
        self._drift = drift
        self._rankings: dict[str, Ranking] = {}
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study = _open_study(self.storage, seed)
        self._check_settings()

    # -- settings ------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """What the study's trials depend on; stored with the study, checked on resume."""
        # described without building it: opening a study to read it runs no forward pass
        drift = (self._drift.describe() if self._drift is not None
                 else describe_drift(drift_prompts(seed=self.seed), seed=self.seed))
        return {"model": self.model.info(), "space": asdict(self.space),
                "pairs": {name: [pos.sha256, neg.sha256]
                          for name, (pos, neg) in self.pairs.items()},
                "heldout": {"harmful": self.harmful.sha256, "benign": self.benign.sha256,
                            "n": len(self.harmful)},
                "max_new_tokens": self.max_new_tokens, "seed": self.seed, "drift": drift,
                "decoding": "greedy", "objectives": list(OBJECTIVES)}

    def _check_settings(self) -> None:
        settings = json.loads(json.dumps(self.settings()))
        stored = self.study.user_attrs.get("settings")
        if stored is None:
            self.study.set_user_attr("settings", settings)
            if self.space.admits(PAPER_TRIAL):
                self.study.enqueue_trial(PAPER_TRIAL, skip_if_exists=True)
            return
        if stored != settings:
            changed = sorted(k for k in settings if stored.get(k) != settings[k])
            raise InvalidArgumentError(
                f"{self.storage} holds a study made with other settings ({', '.join(changed)} "
                "differ); use the same settings to continue it, or a new file for these")

    @property
    def drift(self) -> HarmlessDrift:
        if self._drift is None:
            self._drift = HarmlessDrift(self.model, seed=self.seed)
        return self._drift

    # -- contrasts -----------------------------------------------------------------------
    def ranking(self, name: str) -> Ranking:
        """The discovery statistics of contrast ``name`` (computed once, kept on disk)."""
        if name in self._rankings:
            return self._rankings[name]
        path = self.folder / f"{name}.pt"
        if path.is_file():
            try:
                ranking = Ranking.load(name, path)
            except (OSError, RuntimeError, KeyError, TypeError, EOFError, ValueError,
                    pickle.UnpicklingError) as exc:
                raise FileFormatError(
                    f"{path} is not a contrast's saved statistics ({type(exc).__name__}); "
                    "delete it and it is computed again") from None
        else:
            ranking = self._discover(name)
            self.folder.mkdir(parents=True, exist_ok=True)
            ranking.save(path)
        self._rankings[name] = ranking
        return ranking

    def _discover(self, name: str) -> Ranking:
        harmful = load_benchmark("jbb-harmful", split="discover")
        benign = load_benchmark("jbb-benign", split="discover")
        options: dict[str, Any] = {"fraction": self.space.max_fraction,
                                   "progress": self.progress}
        if name == "jbb-pair":
            positive, negative = harmful, benign
        elif name == "refusal-filtered":
            pair = filter_by_behaviour(self.model, harmful, benign, progress=self.progress)
            positive, negative = pair.positive, pair.negative
            options.update(keep_if=pair, max_imbalance=None)
        else:
            positive, negative = self.pairs[name]
        used = set(positive.prompts) | set(negative.prompts)
        scored = used & (set(self.harmful.prompts) | set(self.benign.prompts))
        if scored:
            raise InvalidArgumentError(
                f"the contrast {name!r} holds {len(scored)} of the held-out prompts the "
                "search scores on; discover on other prompts, or the scores are in-sample")
        circuit = discover(self.model, positive, negative, **options)
        assert circuit.contrast is not None  # discover() keeps its statistics
        return Ranking(name, circuit.contrast.delta, circuit.contrast.universal.clone(),
                       circuit, used)

    # -- trials --------------------------------------------------------------------------
    def baseline(self) -> dict[str, float]:
        """The unchanged model's held-out refusal (measured once, stored in the study)."""
        stored = self.study.user_attrs.get("baseline")
        if stored is None:
            rows = summary(self._sweep([Intervention.baseline()], 1.0))
            stored = {"refusal": self._rate(rows, "baseline", self.harmful),
                      "benign_refusal": self._rate(rows, "baseline", self.benign)}
            self.study.set_user_attr("baseline", stored)
        return stored

    def evaluate(self, choice: Mapping[str, Any]) -> dict[str, Any]:
        """Score one choice of every axis (see :class:`SearchSpace`): its circuit and its
        random control on the held-out halves and the harmless prompts."""
        circuit = self.ranking(choice["contrast"]).cut(choice["fraction"], choice["band"],
                                                       choice["signs"])
        cna = Intervention.cna(circuit, "cna")
        control = Intervention.random(circuit, seed=self.seed, name="random")
        rows = summary(self._sweep([cna, control], float(choice["multiplier"])))
        kl = {kind: float(rows[rows["intervention"] == kind]["kl"].iloc[0])
              for kind in ("cna", "random")}
        quality = rows[(rows["intervention"] == "cna") & (rows["benchmark"] == self.harmful.name)]
        scores: dict[str, Any] = {"size": len(circuit), "layers": sorted(circuit.layer_counts()),
                  "refusal": self._rate(rows, "cna", self.harmful),
                  "quality": float(quality["quality"].iloc[0]),
                  "benign_refusal": self._rate(rows, "cna", self.benign),
                  "kl": kl["cna"],
                  "random_refusal": self._rate(rows, "random", self.harmful),
                  "random_benign_refusal": self._rate(rows, "random", self.benign),
                  "random_kl": kl["random"]}
        scores["removed_beyond_random"] = float(scores["random_refusal"] - scores["refusal"])
        return scores

    def run(self, n_trials: int) -> GateSearch:
        """Run ``n_trials`` more trials (the study is saved after each)."""
        if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
            raise InvalidArgumentError(f"n_trials must be a positive int, not {n_trials!r}")
        self.baseline()

        def objective(trial: Any) -> tuple[float, float]:
            started, measuring = time.perf_counter(), self.drift.seconds
            scores = self.evaluate(self.space.suggest(trial))
            # where a trial's time goes: all of it, and the KL measurements' share
            scores["seconds"] = time.perf_counter() - started
            scores["kl_seconds"] = self.drift.seconds - measuring
            for key, value in scores.items():
                trial.set_user_attr(key, value)
            return scores["removed_beyond_random"], scores["kl"]

        with tqdm(total=n_trials, desc="gate search", unit="trial",
                  disable=not self.progress) as bar:
            self.study.optimize(objective, n_trials=n_trials,
                                callbacks=[lambda _study, _trial: bar.update(1)])
        return self

    # -- results -------------------------------------------------------------------------
    def trials(self) -> pd.DataFrame:
        """Every finished trial: its choice, its scores and its random control's."""
        import optuna

        rows = []
        for trial in self.study.get_trials(states=[optuna.trial.TrialState.COMPLETE]):
            params = {"multiplier": self.space.min_multiplier, **trial.params}
            rows.append({"trial": trial.number, **params, **trial.user_attrs})
        frame = pd.DataFrame(rows)
        if len(frame):
            baseline = self.baseline()
            frame["baseline_refusal"] = baseline["refusal"]
            frame["baseline_benign_refusal"] = baseline["benign_refusal"]
        return frame

    def pareto(self) -> pd.DataFrame:
        """The trials no other trial beats on both objectives, most refusal removed first."""
        best = {trial.number for trial in self.study.best_trials}
        frame = self.trials()
        if not len(frame):
            return frame
        return (frame[frame["trial"].isin(best)]
                .sort_values(["removed_beyond_random", "kl"], ascending=[False, True])
                .reset_index(drop=True))

    def circuit(self, trial: int) -> Circuit:
        """The circuit of trial number ``trial`` (to save, steer or bake), with the search's
        provenance in ``circuit.selection["search"]``: the study file, the trial's settings
        (its multiplier included) and scores, the baseline and the search's settings."""
        found = self.study.trials[trial]
        choice = {"multiplier": self.space.min_multiplier, **found.params}
        circuit = self.ranking(choice["contrast"]).cut(choice["fraction"], choice["band"],
                                                       choice["signs"])
        circuit.selection["search"] = json.loads(json.dumps({
            "study": str(self.storage), "study_name": STUDY_NAME, "trial": trial,
            "params": choice, "scores": dict(found.user_attrs),
            "baseline": self.study.user_attrs.get("baseline"),
            "settings": self.study.user_attrs.get("settings")}))
        return circuit

    def best(self, max_kl: float | None = None) -> Circuit:
        """The circuit of the trial that removes the most refusal beyond its random control
        among those with ``kl <= max_kl`` (ties: lower KL, then fewer neurons).

        Its multiplier is ``circuit.selection["search"]["params"]["multiplier"]``.

        Example:
            >>> circuit = search.best(max_kl=0.1)                        # doctest: +SKIP
            >>> circuit.selection["search"]["params"]                    # doctest: +SKIP
            {'multiplier': 0.0, 'contrast': 'refusal-filtered', 'fraction': 0.0093, ...}
        """
        trials = self.trials()
        if max_kl is not None:
            if not isinstance(max_kl, (int, float)) or not max_kl >= 0:
                raise InvalidArgumentError(f"max_kl must be a number >= 0, not {max_kl!r}")
            trials = trials[trials["kl"] <= max_kl] if len(trials) else trials
        if not len(trials):
            limit = "" if max_kl is None else f" with kl <= {max_kl:g}"
            raise InvalidArgumentError(
                f"the study in {self.storage} has no finished trial{limit}; run more trials "
                "or allow a larger max_kl")
        chosen = trials.sort_values(["removed_beyond_random", "kl", "size"],
                                    ascending=[False, True, True]).iloc[0]
        return self.circuit(int(chosen["trial"]))

    # -- internals -----------------------------------------------------------------------
    def _sweep(self, interventions: Sequence[Intervention], multiplier: float) -> pd.DataFrame:
        return sweep(self.model, interventions, [multiplier], [self.harmful, self.benign],
                     metrics=("refusal", "quality", "kl"), drift=self.drift,
                     max_new_tokens=self.max_new_tokens, batch_size=self.batch_size,
                     progress=False)

    @staticmethod
    def _rate(rows: pd.DataFrame, intervention: str, prompts: PromptSet) -> float:
        chosen = rows[(rows["intervention"] == intervention)
                      & (rows["benchmark"] == prompts.name)]
        return float(chosen["refusal_rate"].iloc[0])
