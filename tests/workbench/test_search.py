"""The gate search: trial circuits are discovery's with a layer band, scores are a separate
evaluation's, a study resumes and extends without discovering again, and it refuses
other settings, in-sample contrasts and bad spaces."""

from __future__ import annotations

import pandas as pd
import pytest
from tests.helpers import PROMPTS, hooks_left, make_tiny_hf

import workbench
from workbench.errors import FileFormatError, InvalidArgumentError, OutputPathError
from workbench.evaluation import load_benchmark, random_control
from workbench.evaluation.drift import HarmlessDrift
from workbench.evaluation.refusal import refusal_rate
from workbench.search import PAPER_TRIAL, GateSearch
from workbench.search_space import BANDS, SearchSpace, band_start

OPTIONS = dict(heldout_n=3, max_new_tokens=3, progress=False)
SPACE = SearchSpace(contrasts=("jbb-pair",), min_fraction=0.001, max_fraction=0.05)


@pytest.fixture(scope="module")
def model(tiny_tokenizer):
    # JBB prompts run past the tiny config's 128 positions
    return workbench.from_hf(make_tiny_hf("llama", max_position_embeddings=512),
                             tiny_tokenizer, name="tiny-llama")


@pytest.fixture(scope="module")
def drift(model):
    return HarmlessDrift(model, PROMPTS, tokens=2)


@pytest.fixture(scope="module")
def searched(model, drift, tmp_path_factory):
    storage = tmp_path_factory.mktemp("search") / "gate.db"
    return GateSearch(model, storage, SPACE, drift=drift, **OPTIONS).run(3)


def test_the_first_trial_is_the_papers_setting_scored_like_a_separate_evaluation(
        searched, model, drift):
    trials = searched.trials()
    assert len(trials) == 3 and list(trials["trial"]) == [0, 1, 2]
    first = trials.iloc[0]
    assert {k: first[k] for k in PAPER_TRIAL} == PAPER_TRIAL
    circuit = searched.circuit(0)
    assert len(circuit) == first["size"] == max(1, round(0.001 * model.n_neurons))
    harmful = load_benchmark("jbb-harmful", split="heldout", n=3, seed=0)
    for kind, chosen in (("", circuit), ("random_", random_control(circuit, seed=0))):
        texts = workbench.generate(model, harmful, circuit=chosen, multiplier=0.0,
                                   max_new_tokens=3)
        assert first[f"{kind}refusal"] == refusal_rate(texts)
        with workbench.steer(model, chosen, multiplier=0.0):
            assert first[f"{kind}kl"] == pytest.approx(drift.kl())
    assert first["removed_beyond_random"] == first["random_refusal"] - first["refusal"]
    assert first["kl"] > 0 and hooks_left(model.hf_model) == []


def test_each_trial_records_where_its_time_went(searched, drift):
    trials = searched.trials()
    assert (trials["kl_seconds"] > 0).all() and (trials["seconds"] > trials["kl_seconds"]).all()
    before = drift.seconds
    drift.kl()
    assert drift.seconds > before


def test_a_trials_circuit_is_discoverys_with_the_layers_outside_its_band_excluded(
        searched, model):
    ranking = searched.ranking("jbb-pair")
    for band in BANDS:
        first = band_start(model.n_layers, band)
        cut = ranking.cut(0.01, band, "all")
        found = workbench.discover(model, load_benchmark("jbb-harmful", split="discover"),
                                   load_benchmark("jbb-benign", split="discover"),
                                   fraction=0.01, exclude_layers=list(range(first)),
                                   progress=False)
        assert [n.key for n in cut.neurons] == [n.key for n in found.neurons]
        assert cut.selection["band"] == band
    positive = ranking.cut(0.05, "all", "positive")
    assert positive.neurons and all(n.score > 0 for n in positive.neurons)


def test_a_study_resumes_and_extends_without_discovering_again(searched, model, drift,
                                                               monkeypatch):
    def no_discovery(*_args, **_kwargs):
        raise AssertionError("discovered again")

    monkeypatch.setattr("workbench.search.discover", no_discovery)
    again = GateSearch(model, searched.storage, SPACE, drift=drift, **OPTIONS)
    before = searched.trials()
    again.run(1)
    after = again.trials()
    assert len(after) == len(before) + 1
    assert after.iloc[:len(before)].equals(before)
    pareto = again.pareto()
    assert len(pareto) >= 1 and set(pareto["trial"]) <= set(after["trial"])
    for _, row in pareto.iterrows():  # no trial beats a Pareto trial on both objectives
        assert not ((after["removed_beyond_random"] >= row["removed_beyond_random"])
                    & (after["kl"] <= row["kl"])
                    & ((after["removed_beyond_random"] > row["removed_beyond_random"])
                       | (after["kl"] < row["kl"]))).any()


def test_the_same_seed_proposes_the_same_trials(model, drift, tmp_path):
    runs = [GateSearch(model, tmp_path / f"{i}.db", SPACE, drift=drift, **OPTIONS).run(2)
            for i in range(2)]
    columns = ["contrast", "fraction", "band", "signs", "multiplier"]
    assert runs[0].trials()[columns].equals(runs[1].trials()[columns])


def test_a_study_refuses_other_settings(searched, model, drift):
    with pytest.raises(InvalidArgumentError, match="other settings.*max_new_tokens"):
        GateSearch(model, searched.storage, SPACE, drift=drift,
                   **{**OPTIONS, "max_new_tokens": 4})


def test_a_users_contrast_may_not_hold_the_prompts_it_is_scored_on(model, drift, tmp_path):
    heldout = load_benchmark("jbb-harmful", split="heldout", n=3, seed=0)
    search = GateSearch(model, tmp_path / "mine.db", SearchSpace(contrasts=("mine",)),
                        pairs={"mine": (heldout.prompts, ["Hello there", "Hi"])},
                        drift=drift, **OPTIONS)
    with pytest.raises(InvalidArgumentError, match="held-out prompts"):
        search.run(1)


@pytest.mark.parametrize("bad", [
    dict(bands=("last-5%",)), dict(signs=("negative",)), dict(min_fraction=0.0),
    dict(min_fraction=0.1, max_fraction=0.01), dict(max_multiplier=1.5),
    dict(min_multiplier=float("nan")), dict(contrasts=())])
def test_a_bad_space_is_refused(bad):
    with pytest.raises(InvalidArgumentError):
        SearchSpace(**bad)


def test_unknown_contrasts_and_storage_paths_are_refused(model, drift, tmp_path):
    with pytest.raises(InvalidArgumentError, match="unknown contrasts"):
        GateSearch(model, tmp_path / "a.db", SearchSpace(contrasts=("nope",)), drift=drift)
    with pytest.raises(OutputPathError):
        GateSearch(model, tmp_path, SPACE, drift=drift)
    with pytest.raises(InvalidArgumentError, match="SQLite"):
        GateSearch(model, tmp_path / "study.json", SPACE, drift=drift)


def test_a_file_that_is_not_a_study_is_refused_and_kept(model, drift, tmp_path):
    bad = tmp_path / "notes.db"
    bad.write_bytes(b"these are my notes, not a database" * 20)
    with pytest.raises(FileFormatError, match="not a gate-search study"):
        GateSearch(model, bad, SPACE, drift=drift, **OPTIONS)
    assert bad.read_bytes() == b"these are my notes, not a database" * 20


def test_processes_opening_a_new_study_at_once_all_open_it(tmp_path):
    """Optuna creates a new SQLite study's tables without a lock; a second process (another
    search, a dashboard) opening the file at that moment must not make either one fail."""
    import subprocess
    import sys

    # each process imports first, says so, and opens the study when told: all at once
    opener = ("import sys; from pathlib import Path; from workbench.search import _open_study; "
              "print('ready', flush=True); sys.stdin.readline(); _open_study(Path(sys.argv[1]), 0)")
    for round_ in range(4):
        study = tmp_path / f"gate{round_}.db"
        processes = [subprocess.Popen([sys.executable, "-c", opener, str(study)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True) for _ in range(3)]
        for process in processes:
            assert process.stdout.readline() == "ready\n"
        for process in processes:
            process.stdin.write("go\n")
            process.stdin.flush()
        failures = [p.communicate()[1] for p in processes if p.wait() != 0]
        assert not failures, failures[0][-600:]


def test_damaged_contrast_statistics_are_refused_with_the_fix(searched, model, drift,
                                                              tmp_path):
    import shutil

    storage = tmp_path / "copy.db"
    shutil.copy(searched.storage, storage)
    folder = storage.with_name(storage.name + ".contrasts")
    folder.mkdir()
    (folder / "jbb-pair.pt").write_bytes(b"\x80\x02garbage")
    search = GateSearch(model, storage, SPACE, drift=drift, **OPTIONS)
    with pytest.raises(FileFormatError, match="delete it"):
        search.ranking("jbb-pair")


def test_best_returns_a_circuit_with_its_whole_search_provenance(searched, tmp_path):
    chosen = searched.best()
    record = chosen.selection["search"]
    trials = searched.trials()
    top = trials.sort_values(["removed_beyond_random", "kl", "size"],
                             ascending=[False, True, True]).iloc[0]
    assert record["trial"] == int(top["trial"])
    assert record["scores"]["kl"] == top["kl"] and record["params"]["multiplier"] == 0.0
    assert record["settings"]["max_new_tokens"] == 3
    loaded = workbench.Circuit.load(chosen.save(tmp_path / "best.json"))
    assert loaded.selection["search"] == record and loaded.keys() == chosen.keys()
    least = searched.best(max_kl=float(trials["kl"].min()))
    assert least.selection["search"]["scores"]["kl"] == trials["kl"].min()
    with pytest.raises(InvalidArgumentError, match="no finished trial with kl"):
        searched.best(max_kl=-0.0 if trials["kl"].min() > 0 else -1.0)


class PlantedGate:
    """A fake measurement in place of generation: refusal falls only as far as the planted
    neurons are ablated, and KL grows with the number of neurons touched and jumps when a
    layer outside the gate is touched."""

    def __init__(self, planted: set[tuple[int, int]]):
        self.planted = planted

    def __call__(self, search: GateSearch, interventions, multiplier: float):
        rows = []
        for intervention in interventions:
            circuit = getattr(intervention, "circuit", None)  # the baseline has none
            keys = circuit.keys() if circuit is not None else set()
            covered = len(keys & self.planted) / len(self.planted)
            kl = 0.0 if intervention.kind == "baseline" else (
                0.01 * len(keys) + (5.0 if any(layer == 0 for layer, _ in keys) else 0.0))
            for prompts, refused in ((search.harmful, 0.9 * (1 - covered)),
                                     (search.benign, 0.1)):
                rows.append({"benchmark": prompts.name, "intervention": intervention.name,
                             "kind": intervention.kind, "multiplier": multiplier,
                             "strength": multiplier, "completion": "",
                             "refusal": refused, "quality": 1.0, "kl": kl})
        return pd.DataFrame(rows)


def test_the_search_finds_a_planted_gate(model, drift, tmp_path, monkeypatch):
    space = SearchSpace(contrasts=("jbb-pair",), min_fraction=0.005, max_fraction=0.2,
                        bands=("last-50%", "all"), signs=("all", "positive"))
    search = GateSearch(model, tmp_path / "planted.db", space, drift=drift, **OPTIONS)
    ranking = search.ranking("jbb-pair")
    gate = ranking.cut(5 / model.n_neurons, "last-50%", "positive")  # 5 neurons, layer 1
    planted = gate.keys()
    fake = PlantedGate(planted)
    monkeypatch.setattr(GateSearch, "_sweep", lambda self, interventions, multiplier: fake(
        self, interventions, multiplier))
    search.run(30)
    best = search.best(max_kl=1.0)
    assert planted <= best.keys() and set(best.layer_counts()) == {1}
    paper = search.trials().iloc[0]
    assert paper["removed_beyond_random"] < best.selection["search"]["scores"][
        "removed_beyond_random"]


def test_an_interrupted_study_resumes_without_repeating_finished_trials(model, drift, tmp_path,
                                                                       monkeypatch):
    storage = tmp_path / "interrupted.db"
    first = GateSearch(model, storage, SPACE, drift=drift, **OPTIONS)
    real = GateSearch.evaluate
    calls = []

    def interrupt_third(self, choice):
        calls.append(choice)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, choice)

    monkeypatch.setattr(GateSearch, "evaluate", interrupt_third)
    with pytest.raises(KeyboardInterrupt):
        first.run(5)
    monkeypatch.setattr(GateSearch, "evaluate", real)
    finished = first.trials()
    assert len(finished) == 2
    again = GateSearch(model, storage, SPACE, drift=drift, **OPTIONS).run(2)
    trials = again.trials()
    assert len(trials) == 4 and trials.iloc[:2].equals(finished)
    # the resumed sampler goes on rather than proposing the first trials again
    def chosen(frame):
        return set(frame[["contrast", "fraction", "band", "signs"]].itertuples(index=False))

    assert not chosen(trials.iloc[2:]) & chosen(finished)


def test_opening_a_study_with_the_default_drift_runs_no_forward_pass(model, tmp_path,
                                                                    monkeypatch):
    """Reading a finished study (its trials, front and circuits) costs no forward pass: the
    default KL reference is described for the settings check, and built only for a trial."""
    storage = tmp_path / "default-drift.db"
    calls = []
    original = HarmlessDrift.__init__

    def counted(self, *args, **kwargs):
        calls.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(HarmlessDrift, "__init__", counted)
    first = GateSearch(model, storage, SPACE, **OPTIONS)
    described = first.settings()["drift"]
    assert calls == []
    assert first.drift.describe() == described and calls == [1]
    reopened = GateSearch(model, storage, SPACE, **OPTIONS)  # the stored settings match
    assert reopened.settings() == first.settings() and calls == [1]
