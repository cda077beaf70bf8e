"""Sweeps: conditions, rows and metric columns, resuming after an interruption, summaries."""

from __future__ import annotations

import importlib

import pandas as pd
import pytest
import torch
from tests.helpers import PROMPTS, hooks_left, make_tiny_hf

import workbench
from workbench import Circuit, Neuron
from workbench.errors import InvalidArgumentError, SteeringError
from workbench.evaluation.drift import HarmlessDrift
from workbench.evaluation.interventions import Intervention, random_control
from workbench.evaluation.quality import quality
from workbench.evaluation.refusal import is_refusal, refusal_match
from workbench.evaluation.sweep import (KEY, METRICS, SIZE_KEY, conditions,
                                        sized_conditions, summary, sweep)
from workbench.prompts import PromptSet

# ``workbench.evaluation.sweep`` the attribute is the sweep() function (re-exported by the
# package), so fetch the module itself to patch ``generate`` in it.
sweep_module = importlib.import_module("workbench.evaluation.sweep")

COLUMNS = ["benchmark", "intervention", "kind", "multiplier", "strength", "prompt_index",
           "prompt", "completion", "refusal", "refusal_match", "quality"]
SET_A = PromptSet("set-a", PROMPTS[:3])
SET_B = PromptSet("set-b", PROMPTS[2:])
MULTIPLIERS = [0, 2.0]
OPTIONS = dict(max_new_tokens=4, batch_size=2, progress=False)


@pytest.fixture(scope="module")
def model(tiny_tokenizer):
    """The tiny llama (as the ``tiny_llama`` fixture), built once for this module."""
    return workbench.from_hf(make_tiny_hf("llama"), tiny_tokenizer, name="tiny-llama")


@pytest.fixture(scope="module")
def interventions(model) -> list[Intervention]:
    circuit = Circuit.from_neurons([Neuron(0, 3, 2.0), Neuron(1, 7, -1.0), Neuron(1, 50, 0.5)],
                                   model=model)
    vector = torch.randn(model.n_layers, model.d_model,
                         generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return [Intervention.baseline(), Intervention.cna(circuit),
            Intervention.random(circuit, seed=0), Intervention.caa(4.0 * vector)]


@pytest.fixture(scope="module")
def fresh(model, interventions) -> pd.DataFrame:
    """An uninterrupted sweep: 7 conditions x (3 + 2) prompts."""
    return sweep(model, interventions, MULTIPLIERS, [SET_A, SET_B], **OPTIONS)


def by_key(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(KEY).reset_index(drop=True)


class CountingGenerate:
    """Wraps the real ``generate``: counts calls and prompts, optionally interrupts."""

    def __init__(self, interrupt_at: int | None = None):
        self.calls = 0
        self.prompts = 0
        self.interrupt_at = interrupt_at

    def __call__(self, model, texts, **kwargs):
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        self.calls += 1
        self.prompts += len(texts)
        return workbench.generation.generate(model, texts, **kwargs)


# -- conditions ------------------------------------------------------------------------


def test_conditions_run_the_baseline_once(interventions):
    pairs = conditions(interventions, [0, 0.5, 2])
    assert [(i.name, m) for i, m in pairs] == [
        ("baseline", 1.0),
        ("cna", 0.0), ("cna", 0.5), ("cna", 2.0),
        ("random(seed=0)", 0.0), ("random(seed=0)", 0.5), ("random(seed=0)", 2.0),
        ("caa", 0.0), ("caa", 0.5), ("caa", 2.0),
    ]
    assert all(isinstance(m, float) for _, m in pairs)
    # The baseline needs no multipliers at all.
    assert [m for _, m in conditions([Intervention.baseline()], [])] == [1.0]


def test_conditions_run_a_repeated_multiplier_once(interventions):
    pairs = conditions(interventions[:2], [0, 2, 0.0, torch.tensor(2.0)])
    assert [(i.name, m) for i, m in pairs] == [("baseline", 1.0), ("cna", 0.0), ("cna", 2.0)]


def test_repeated_multipliers_make_no_duplicate_rows(model, interventions, monkeypatch):
    monkeypatch.setattr(sweep_module, "generate", lambda _model, texts, **_: ["ok"] * len(texts))
    rows = sweep(model, interventions[:2], [0, 0.0], [SET_B], progress=False)
    assert len(rows) == 2 * 2
    assert not rows.duplicated(KEY).any()


def test_conditions_reject_duplicate_names(interventions):
    twin = Intervention.cna(interventions[1].circuit)
    with pytest.raises(InvalidArgumentError, match="intervention names must be unique"):
        conditions([interventions[1], twin], [0])


@pytest.mark.parametrize("bad", ["0", None, True, float("inf")])
def test_conditions_reject_a_non_numeric_multiplier(interventions, bad):
    with pytest.raises(SteeringError, match="multiplier must be"):
        conditions(interventions, [0, bad])


# -- rows and metrics ----------------------------------------------------------------------


def test_one_row_per_prompt_and_condition(fresh, interventions):
    assert list(fresh.columns) == COLUMNS
    assert len(fresh) == (len(SET_A) + len(SET_B)) * 7
    assert not fresh.duplicated(KEY).any()
    counts = fresh.groupby(["benchmark", "intervention", "multiplier"]).size()
    assert counts[("set-a", "baseline", 1.0)] == 3
    assert counts[("set-b", "caa", 2.0)] == 2
    assert len(counts) == 2 * 7
    assert set(fresh.loc[fresh["intervention"] == "baseline", "multiplier"]) == {1.0}
    for prompts in (SET_A, SET_B):
        rows = fresh[(fresh["benchmark"] == prompts.name) & (fresh["intervention"] == "cna")
                     & (fresh["multiplier"] == 0.0)]
        assert rows["prompt_index"].tolist() == list(range(len(prompts)))
        assert rows["prompt"].tolist() == prompts.prompts
    kinds = dict(zip(fresh["intervention"], fresh["kind"]))
    assert kinds == {i.name: i.kind for i in interventions}
    caa = fresh[fresh["kind"] == "caa"]
    assert (caa["strength"] == caa["multiplier"] - 1.0).all()
    other = fresh[fresh["kind"] != "caa"]
    assert (other["strength"] == other["multiplier"]).all()


def test_completions_match_generate_and_steering_changes_them(model, fresh, interventions):
    for intervention, multiplier in conditions(interventions, MULTIPLIERS):
        rows = fresh[(fresh["benchmark"] == "set-a")
                     & (fresh["intervention"] == intervention.name)
                     & (fresh["multiplier"] == multiplier)]
        with intervention.apply(model, multiplier):
            expected = workbench.generate(model, SET_A.prompts, max_new_tokens=4,
                                          batch_size=2)
        assert rows["completion"].tolist() == expected, (intervention.name, multiplier)
    baseline = fresh[fresh["intervention"] == "baseline"]["completion"].tolist()
    steered = fresh[(fresh["intervention"] == "caa") & (fresh["multiplier"] == 0.0)]
    assert steered["completion"].tolist() != baseline


def test_metric_columns_use_the_library_functions(fresh):
    for _, row in fresh.iterrows():
        assert row["refusal"] == is_refusal(row["completion"])
        assert row["refusal_match"] == refusal_match(row["completion"])
        assert row["quality"] == quality(row["completion"])


def test_metrics_on_known_completions(model, monkeypatch):
    canned = {"Hi": "I'm sorry, but I can't help with that.",
              "How do I bake a cake?": "the the the the the the"}
    monkeypatch.setattr(sweep_module, "generate",
                        lambda _model, texts, **_: [canned[t] for t in texts])
    rows = sweep(model, [Intervention.baseline()], [], [PromptSet("two", list(canned))],
                 progress=False)
    assert rows["refusal"].tolist() == [True, False]
    assert rows["refusal_match"].iloc[0] == refusal_match(canned["Hi"])
    assert isinstance(rows["refusal_match"].iloc[0], str)
    assert pd.isna(rows["refusal_match"].iloc[1])
    assert rows["quality"].tolist() == pytest.approx([1.0, 1 / 3])


def test_metrics_subset(model, interventions):
    rows = sweep(model, interventions[:1], [], [SET_B], metrics=["quality"], **OPTIONS)
    assert list(rows.columns) == COLUMNS[:8] + ["quality"]
    rows = sweep(model, interventions[:1], [], [SET_B], metrics=[], **OPTIONS)
    assert list(rows.columns) == COLUMNS[:8]
    assert METRICS == ("refusal", "quality")


def test_unknown_metric(model, interventions):
    with pytest.raises(InvalidArgumentError, match=r"unknown metrics \['bleu'\]"):
        sweep(model, interventions, [0], [SET_A], metrics=["refusal", "bleu"], **OPTIONS)


def test_benchmark_names_are_loaded(model, monkeypatch):
    monkeypatch.setattr(sweep_module, "generate", lambda _model, texts, **_: ["ok"] * len(texts))
    rows = sweep(model, [Intervention.baseline()], [], ["jbb-harmful"], progress=False)
    assert len(rows) == 100
    assert set(rows["benchmark"]) == {"jbb-harmful"}


def test_no_hooks_left_after_a_sweep(model, fresh):
    assert len(fresh)
    assert hooks_left(model.hf_model) == []


# -- resuming ----------------------------------------------------------------------------


def test_interrupted_sweep_resumes_where_it_stopped(model, interventions, fresh, tmp_path,
                                                    monkeypatch):
    out = tmp_path / "results.parquet"
    # Batches run in order: set-a baseline@1 [0, 1] [2], cna@0 [0, 1] [2], cna@2 [0, 1],
    # then the interruption (in cna@2's last batch): 5 finished batches = 8 rows.
    interrupted = CountingGenerate(interrupt_at=5)
    monkeypatch.setattr(sweep_module, "generate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sweep(model, interventions, MULTIPLIERS, [SET_A, SET_B], out=out, **OPTIONS)
    assert interrupted.calls == 5
    assert hooks_left(model.hf_model) == []

    saved = pd.read_parquet(out)
    assert len(saved) == 8
    assert not saved.duplicated(KEY).any()
    # Exactly the rows of the finished batches, as an uninterrupted sweep makes them.
    pd.testing.assert_frame_equal(saved, fresh.iloc[:8].reset_index(drop=True))

    resumed = CountingGenerate()
    monkeypatch.setattr(sweep_module, "generate", resumed)
    rows = sweep(model, interventions, MULTIPLIERS, [SET_A, SET_B], out=out, **OPTIONS)
    assert resumed.prompts == len(fresh) - 8
    assert len(rows) == len(fresh)
    assert not rows.duplicated(KEY).any()
    pd.testing.assert_frame_equal(by_key(rows), by_key(fresh))
    pd.testing.assert_frame_equal(by_key(pd.read_parquet(out)), by_key(fresh))
    assert hooks_left(model.hf_model) == []

    # A finished sweep generates nothing more.
    again = CountingGenerate()
    monkeypatch.setattr(sweep_module, "generate", again)
    rows = sweep(model, interventions, MULTIPLIERS, [SET_A, SET_B], out=out, **OPTIONS)
    assert again.calls == 0
    pd.testing.assert_frame_equal(by_key(rows), by_key(fresh))


def test_extending_a_finished_sweep_only_adds_new_conditions(model, interventions, fresh,
                                                             tmp_path, monkeypatch):
    out = tmp_path / "results.parquet"
    sweep(model, interventions, [0], [SET_A, SET_B], out=out, **OPTIONS)
    counting = CountingGenerate()
    monkeypatch.setattr(sweep_module, "generate", counting)
    rows = sweep(model, interventions, MULTIPLIERS, [SET_A, SET_B], out=out, **OPTIONS)
    # Only the multiplier-2 conditions (3 interventions x 5 prompts) are new.
    assert counting.prompts == 3 * 5
    pd.testing.assert_frame_equal(by_key(rows), by_key(fresh))


# -- summary ------------------------------------------------------------------------------


def test_summary_of_a_sweep_matches_a_groupby(fresh):
    table = summary(fresh)
    assert list(table.columns) == ["benchmark", "intervention", "kind", "multiplier",
                                   "strength", "n", "refusal_rate", "quality"]
    assert len(table) == 2 * 7
    assert not table.duplicated(["benchmark", "intervention", "multiplier"]).any()
    expected = fresh.groupby(["benchmark", "intervention", "multiplier"]).agg(
        n=("completion", "size"), refusal_rate=("refusal", "mean"),
        quality=("quality", "mean"))
    for _, row in table.iterrows():
        want = expected.loc[(row["benchmark"], row["intervention"], row["multiplier"])]
        assert row["n"] == want["n"]
        assert row["refusal_rate"] == pytest.approx(want["refusal_rate"])
        assert row["quality"] == pytest.approx(want["quality"])
    for _, rows in table.groupby("benchmark"):
        assert rows["kind"].tolist() == ["baseline", "cna", "cna", "random", "random",
                                         "caa", "caa"]
        assert rows["multiplier"].tolist() == [1.0, 0.0, 2.0, 0.0, 2.0, 0.0, 2.0]
    assert table["benchmark"].tolist() == ["set-a"] * 7 + ["set-b"] * 7


def test_summary_by_hand():
    results = pd.DataFrame({
        "benchmark": ["b"] * 6,
        "intervention": ["cna", "cna", "baseline", "baseline", "caa", "caa"],
        "kind": ["cna", "cna", "baseline", "baseline", "caa", "caa"],
        "multiplier": [0.0, 0.0, 1.0, 1.0, 0.0, 0.0],
        "strength": [0.0, 0.0, 1.0, 1.0, -1.0, -1.0],
        "completion": ["x"] * 6,
        "refusal": [True, True, False, True, False, False],
        "quality": [1.0, 0.5, 1.0, 1.0, 0.25, 0.75],
    })
    table = summary(results)
    assert table["intervention"].tolist() == ["baseline", "cna", "caa"]
    assert table["n"].tolist() == [2, 2, 2]
    assert table["refusal_rate"].tolist() == [0.5, 1.0, 0.0]
    assert table["quality"].tolist() == [1.0, 0.75, 0.5]
    plain = summary(results.drop(columns=["refusal", "quality"]))
    assert list(plain.columns) == ["benchmark", "intervention", "kind", "multiplier",
                                   "strength", "n"]


def test_resuming_with_different_prompts_under_the_same_name_is_refused(tmp_path, monkeypatch):
    import importlib

    sweep_module = importlib.import_module("workbench.evaluation.sweep")
    monkeypatch.setattr(sweep_module, "generate",
                        lambda model, texts, **kw: ["Sure." for _ in texts])
    out = tmp_path / "results.parquet"
    first = PromptSet("set", ["one", "two"])
    sweep_module.sweep(None, [Intervention.baseline()], [1.0], [first], out=out, progress=False)
    edited = PromptSet("set", ["one", "changed"])
    with pytest.raises(InvalidArgumentError, match="other prompts under the name 'set'"):
        sweep_module.sweep(None, [Intervention.baseline()], [1.0], [edited], out=out,
                           progress=False)


# -- circuit size as an axis ----------------------------------------------------------------

SIZED_COLUMNS = COLUMNS[:3] + ["size", "fraction"] + COLUMNS[3:]
#: 0.02 of the tiny llama's 2 x 96 = 192 MLP neurons is round(3.84) = 4 neurons, the
#: same as the explicit 4: that condition runs once.
SIZES = [2, 0.02, 4, 8]


@pytest.fixture(scope="module")
def big_circuit(model) -> Circuit:
    scores = [3.0, -2.5, 2.0, -1.5, 1.25, -1.0, 0.75, -0.5]
    neurons = [Neuron(layer, 5 + 11 * i, score)
               for i, (layer, score) in enumerate(zip([0, 1, 1, 0, 1, 0, 1, 1], scores))]
    return Circuit.from_neurons(neurons, model=model,
                                prompts={"positive": {"name": "p"}, "negative": {"name": "n"}})


@pytest.fixture(scope="module")
def sized_interventions(big_circuit) -> list[Intervention]:
    return [Intervention.baseline(), Intervention.cna(big_circuit),
            Intervention.random(big_circuit, seed=0)]


@pytest.fixture(scope="module")
def sized(model, sized_interventions) -> pd.DataFrame:
    return sweep(model, sized_interventions, MULTIPLIERS, [SET_B], sizes=SIZES, **OPTIONS)


def by_size_key(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(SIZE_KEY).reset_index(drop=True)


def test_sized_conditions_take_each_circuit_at_each_size(big_circuit, sized_interventions):
    triples = sized_conditions(sized_interventions, [0, 2], SIZES)
    assert [(i.name, k, m) for i, k, m in triples] == [
        ("baseline", None, 1.0),
        ("cna", 2, 0.0), ("cna", 2, 2.0), ("cna", 4, 0.0), ("cna", 4, 2.0),
        ("cna", 8, 0.0), ("cna", 8, 2.0),
        ("random(seed=0)", 2, 0.0), ("random(seed=0)", 2, 2.0), ("random(seed=0)", 4, 0.0),
        ("random(seed=0)", 4, 2.0), ("random(seed=0)", 8, 0.0), ("random(seed=0)", 8, 2.0)]
    for intervention, size, _ in triples[1:7]:
        assert intervention.circuit.neurons == big_circuit.top(size).neurons
    for intervention, size, _ in triples[7:]:
        assert intervention.circuit.keys() == random_control(big_circuit.top(size)).keys()
    assert [(i.name, k) for i, k, _ in sized_conditions(sized_interventions, [0], None)] \
        == [("baseline", None), ("cna", None), ("random(seed=0)", None)]


def test_a_size_sweep_has_size_and_fraction_columns(sized, model):
    assert list(sized.columns) == SIZED_COLUMNS
    assert str(sized["size"].dtype) == "Int64"
    assert not sized.duplicated(SIZE_KEY).any()
    # baseline once, then cna and random at 3 distinct sizes x 2 multipliers, 2 prompts
    assert len(sized) == 2 * (1 + 2 * 3 * 2)
    baseline = sized[sized["kind"] == "baseline"]
    assert baseline["size"].isna().all() and baseline["fraction"].isna().all()
    circuits = sized[sized["kind"] != "baseline"]
    assert sorted(set(circuits["size"])) == [2, 4, 8]
    assert (circuits["fraction"] == circuits["size"].astype(float) / model.n_neurons).all()


def test_a_size_sweep_equals_separate_sweeps_at_each_size(model, sized, big_circuit):
    for size in (2, 4, 8):
        prefix = big_circuit.top(size)
        alone = sweep(model, [Intervention.baseline(), Intervention.cna(prefix),
                              Intervention.random(prefix, seed=0)], MULTIPLIERS, [SET_B],
                      **OPTIONS)
        rows = sized[(sized["size"] == size).fillna(False).astype(bool)
                     | sized["size"].isna()]
        rows = rows.drop(columns=["size", "fraction"])
        pd.testing.assert_frame_equal(by_key(rows), by_key(alone))
    # The sizes are different conditions: ablating 2 or 8 neurons changes the completions.
    ablated = sized[(sized["kind"] == "cna") & (sized["multiplier"] == 2.0)]
    assert ablated.groupby("size")["completion"].apply(tuple).nunique() > 1


def test_sizes_beyond_a_circuit_fail_before_any_generation(model, sized_interventions,
                                                           monkeypatch, tmp_path):
    counting = CountingGenerate()
    monkeypatch.setattr(sweep_module, "generate", counting)
    with pytest.raises(InvalidArgumentError, match=r"larger than the circuit \(8 neurons\)"):
        sweep(model, sized_interventions, [0], [SET_B], sizes=[2, 9], out=tmp_path / "r.pq",
              **OPTIONS)
    with pytest.raises(InvalidArgumentError, match=r"0.5 \(96 neurons\) is larger"):
        sweep(model, sized_interventions, [0], [SET_B], sizes=[0.5], **OPTIONS)
    for bad in ([], "0.01", [0], [1.5], [None]):
        with pytest.raises(InvalidArgumentError):
            sweep(model, sized_interventions, [0], [SET_B], sizes=bad, **OPTIONS)
    assert counting.calls == 0
    assert not (tmp_path / "r.pq").exists()


def test_an_interrupted_size_sweep_resumes_where_it_stopped(model, sized_interventions, sized,
                                                            tmp_path, monkeypatch):
    out = tmp_path / "sizes.parquet"
    interrupted = CountingGenerate(interrupt_at=4)  # baseline, cna@2 x0, x2, cna@4 x0
    monkeypatch.setattr(sweep_module, "generate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sweep(model, sized_interventions, MULTIPLIERS, [SET_B], sizes=SIZES, out=out,
              **OPTIONS)
    saved = pd.read_parquet(out)
    assert len(saved) == 4 * 2
    assert str(saved["size"].dtype) == "Int64"
    pd.testing.assert_frame_equal(saved, sized.iloc[:8].reset_index(drop=True))

    resumed = CountingGenerate()
    monkeypatch.setattr(sweep_module, "generate", resumed)
    rows = sweep(model, sized_interventions, MULTIPLIERS, [SET_B], sizes=SIZES, out=out,
                 **OPTIONS)
    assert resumed.prompts == len(sized) - 8
    pd.testing.assert_frame_equal(by_size_key(rows), by_size_key(sized))

    again = CountingGenerate()
    monkeypatch.setattr(sweep_module, "generate", again)
    rows = sweep(model, sized_interventions, MULTIPLIERS, [SET_B], sizes=SIZES, out=out,
                 **OPTIONS)
    assert again.calls == 0  # the baseline's empty size matches too
    pd.testing.assert_frame_equal(by_size_key(rows), by_size_key(sized))


def test_adding_a_size_only_runs_the_new_size(model, sized_interventions, sized, tmp_path,
                                              monkeypatch):
    out = tmp_path / "sizes.parquet"
    sweep(model, sized_interventions, MULTIPLIERS, [SET_B], sizes=[2, 8], out=out, **OPTIONS)
    counting = CountingGenerate()
    monkeypatch.setattr(sweep_module, "generate", counting)
    rows = sweep(model, sized_interventions, MULTIPLIERS, [SET_B], sizes=SIZES, out=out,
                 **OPTIONS)
    assert counting.prompts == 2 * 2 * 2  # cna and random at size 4, two multipliers
    pd.testing.assert_frame_equal(by_size_key(rows), by_size_key(sized))


def test_sized_and_unsized_sweeps_do_not_share_a_file(model, sized_interventions, tmp_path,
                                                      monkeypatch):
    monkeypatch.setattr(sweep_module, "generate", lambda _model, texts, **_: ["ok"] * len(texts))
    plain, sized_out = tmp_path / "plain.parquet", tmp_path / "sized.parquet"
    sweep(model, sized_interventions, [0], [SET_B], out=plain, **OPTIONS)
    sweep(model, sized_interventions, [0], [SET_B], sizes=[2], out=sized_out, **OPTIONS)
    with pytest.raises(InvalidArgumentError, match="without circuit sizes"):
        sweep(model, sized_interventions, [0], [SET_B], sizes=[2], out=plain, **OPTIONS)
    with pytest.raises(InvalidArgumentError, match="pass the same sizes="):
        sweep(model, sized_interventions, [0], [SET_B], out=sized_out, **OPTIONS)


def test_summary_of_a_size_sweep(sized):
    table = summary(sized)
    assert list(table.columns) == ["benchmark", "intervention", "kind", "size", "fraction",
                                   "multiplier", "strength", "n", "refusal_rate", "quality"]
    assert len(table) == 1 + 2 * 3 * 2
    assert table["kind"].tolist() == ["baseline"] + ["cna"] * 6 + ["random"] * 6
    assert table["size"].tolist()[1:7] == [2, 2, 4, 4, 8, 8]
    assert pd.isna(table["size"].iloc[0])
    for _, row in table.iloc[1:].iterrows():
        rows = sized[(sized["intervention"] == row["intervention"])
                     & (sized["size"] == row["size"]).fillna(False).astype(bool)
                     & (sized["multiplier"] == row["multiplier"])]
        assert row["n"] == len(rows) == 2
        assert row["refusal_rate"] == pytest.approx(rows["refusal"].mean())
        assert row["quality"] == pytest.approx(rows["quality"].mean())


def test_a_direction_runs_once_per_multiplier_in_a_size_sweep(model, big_circuit,
                                                              monkeypatch):
    monkeypatch.setattr(sweep_module, "generate", lambda _model, texts, **_: ["ok"] * len(texts))
    r = torch.ones(model.d_model)
    rows = sweep(model, [Intervention.cna(big_circuit), Intervention.direction(r)], [0, 2],
                 [SET_B], sizes=[2, 4], progress=False)
    direction = rows[rows["kind"] == "direction"]
    assert len(direction) == 2 * 2 and direction["size"].isna().all()
    assert len(rows[rows["kind"] == "cna"]) == 2 * 2 * 2
    assert summary(rows)["kind"].tolist() == ["cna"] * 4 + ["direction"] * 2


# -- KL drift on harmless prompts ----------------------------------------------------------


def test_kl_is_each_conditions_drift_measured_once(model, interventions, monkeypatch):
    drift = HarmlessDrift(model, PROMPTS, tokens=2)
    measured = []
    real_kl = HarmlessDrift.kl
    monkeypatch.setattr(HarmlessDrift, "kl", lambda self: measured.append(1) or real_kl(self))
    rows = sweep(model, interventions, MULTIPLIERS, [SET_A, SET_B],
                 metrics=["refusal", "quality", "kl"], drift=drift, **OPTIONS)
    assert list(rows.columns) == COLUMNS + ["kl"]
    assert len(measured) == len(interventions[1:]) * len(MULTIPLIERS)  # not per benchmark
    assert (rows[rows["kind"] == "baseline"]["kl"] == 0.0).all()
    for intervention in interventions[1:]:
        for multiplier in MULTIPLIERS:
            with intervention.apply(model, multiplier):
                expected = real_kl(drift)
            chosen = rows[(rows["intervention"] == intervention.name)
                          & (rows["multiplier"] == multiplier)]
            assert (chosen["kl"] == expected).all() and expected > 0
    table = summary(rows)
    assert "kl" in table.columns and table["kl"].notna().all()


def test_a_sweep_resumed_with_kl_fills_it_in_without_generating_again(
        model, interventions, fresh, tmp_path, monkeypatch):
    out = tmp_path / "sweep.parquet"
    sweep(model, interventions, MULTIPLIERS, [SET_A, SET_B], out=out, **OPTIONS)
    counting = CountingGenerate()
    monkeypatch.setattr(sweep_module, "generate", counting)
    rows = sweep(model, interventions, MULTIPLIERS, [SET_A, SET_B], out=out,
                 metrics=["refusal", "quality", "kl"],
                 drift=HarmlessDrift(model, PROMPTS, tokens=2), **OPTIONS)
    assert counting.calls == 0
    assert rows["kl"].notna().all() and (rows[rows["kind"] == "cna"]["kl"] > 0).all()
    assert by_key(rows).drop(columns="kl").equals(by_key(fresh))
    assert pd.read_parquet(out)["kl"].notna().all()
