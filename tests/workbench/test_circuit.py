"""Circuits: the JSON v1 format, validation, atomic saving, overlap and the views."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import stat

import pytest
import torch

import workbench.circuit as circuit_module
from workbench.circuit import Circuit, Neuron, overlap
from workbench.errors import CircuitFormatError, CircuitMismatchError, InvalidArgumentError

SMOLLM = {"name": "smollm2-135m-instruct", "architecture": "LlamaForCausalLM",
          "n_layers": 30, "d_mlp": 1536}
SMALL = {"name": "tiny", "architecture": "LlamaForCausalLM", "n_layers": 4, "d_mlp": 8}


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def example_dict() -> dict:
    """The v1 example of the format description, with real sha256 strings."""
    return {
        "format": "cna-workbench.circuit",
        "version": 1,
        "model": dict(SMOLLM),
        "site": "mlp.down_proj.input",
        "token_position": "last",
        "prompting": {"chat_template": True, "system_prompt": None},
        "selection": {"method": "cna", "fraction": 0.001, "top_k": 46,
                      "universal_threshold": 0.8, "n_universal_excluded": 3,
                      "excluded_layers": []},
        "prompts": {
            "positive": {"name": "qualitative-harmful", "n": 8, "sha256": _sha("harmful")},
            "negative": {"name": "qualitative-benign", "n": 8, "sha256": _sha("benign")},
            "universal": {"name": "diverse", "n": 150, "sha256": _sha("diverse")},
        },
        "neurons": [
            {"layer": 29, "index": 117, "score": 3.21},
            {"layer": 28, "index": 5, "score": -2.5},
            {"layer": 0, "index": 1535, "score": 0.75},
        ],
        "created_by": "cna-workbench 0.1.0",
    }


def write_json(path, data) -> None:
    path.write_text(json.dumps(data), encoding="utf-8")


def small_circuit(neurons, model=SMALL, **provenance) -> Circuit:
    return Circuit.from_neurons(neurons, model=model, **provenance)


# -- JSON round trip ---------------------------------------------------------------


def test_example_sha256_strings_are_real():
    for ref in example_dict()["prompts"].values():
        assert len(ref["sha256"]) == 64
        int(ref["sha256"], 16)


def test_from_dict_to_dict_is_exact():
    d = example_dict()
    assert Circuit.from_dict(copy.deepcopy(d)).to_dict() == d


def test_from_dict_reads_every_field():
    c = Circuit.from_dict(example_dict())
    assert c.model == SMOLLM
    assert c.neurons == [Neuron(29, 117, 3.21), Neuron(28, 5, -2.5), Neuron(0, 1535, 0.75)]
    assert c.prompting == {"chat_template": True, "system_prompt": None}
    assert c.selection["top_k"] == 46
    assert c.prompts["universal"]["n"] == 150
    assert c.created_by == "cna-workbench 0.1.0"
    assert c.name == "qualitative-harmful vs qualitative-benign"


def test_save_load_round_trip(tmp_path):
    original = Circuit.from_dict(example_dict())
    path = original.save(tmp_path / "circuit.json")
    loaded = Circuit.load(path)
    assert loaded == original
    assert loaded.to_json() == path.read_text(encoding="utf-8")
    assert json.loads(path.read_text(encoding="utf-8")) == example_dict()


def test_save_creates_missing_folders(tmp_path):
    path = tmp_path / "a" / "b" / "circuit.json"
    Circuit.from_dict(example_dict()).save(path)
    assert Circuit.load(path) == Circuit.from_dict(example_dict())


@pytest.mark.parametrize("score", [0.1 + 0.2, -1e-300, 1 / 3, 123456789.123456789, 5e-324,
                                   -0.0])
def test_scores_survive_exactly(tmp_path, score):
    c = small_circuit([(1, 2, score)])
    loaded = Circuit.load(c.save(tmp_path / "c.json"))
    assert loaded.neurons[0].score == score
    assert repr(loaded.neurons[0].score) == repr(score)


def test_non_ascii_text_survives(tmp_path):
    d = example_dict()
    d["prompting"]["system_prompt"] = "Tu es un assistant serviable. 你好 — ok"
    d["prompts"]["positive"]["name"] = "nocifs-é"
    c = Circuit.from_dict(d)
    assert Circuit.load(c.save(tmp_path / "c.json")).to_dict() == d


def test_behaviour_filter_provenance_round_trips_in_version_1(tmp_path):
    """``selection.filter`` (discover(keep_if=...)) is optional: files stay version 1."""
    d = example_dict()
    d["selection"]["filter"] = {
        "method": "pair", "model": "smollm2-135m-instruct",
        "classifiers": {"positive": "is_refusal", "negative": "not is_refusal"},
        "positive": {"source": {"name": "jbb-harmful", "n": 100, "sha256": _sha("h")},
                     "kept": 41, "dropped": 59},
        "negative": {"source": {"name": "jbb-benign", "n": 100, "sha256": _sha("b")},
                     "kept": 93, "dropped": 7},
        "generation": {"max_new_tokens": 32, "decoding": "greedy",
                       "prompting": {"chat_template": True, "system_prompt": None},
                       "batch_size": 16},
    }
    c = Circuit.from_dict(copy.deepcopy(d))
    assert c.to_dict() == d and c.to_dict()["version"] == 1
    loaded = Circuit.load(c.save(tmp_path / "c.json"))
    assert loaded == c and loaded.selection["filter"] == d["selection"]["filter"]
    assert "filter" not in Circuit.from_dict(example_dict()).selection  # old files unchanged


# -- tolerant and strict loading ---------------------------------------------------


def test_unknown_keys_are_ignored(tmp_path):
    d = example_dict()
    d["future_top_level"] = {"anything": [1, 2, 3]}
    d["neurons"][0]["confidence"] = 0.9
    d["model"]["revision"] = "main"
    d["selection"]["new_option"] = True
    path = tmp_path / "c.json"
    write_json(path, d)
    c = Circuit.load(path)
    assert "future_top_level" not in c.to_dict()
    assert c.to_dict()["neurons"] == example_dict()["neurons"]
    assert c.neurons[0] == Neuron(29, 117, 3.21)
    assert (c.model["n_layers"], c.model["d_mlp"]) == (30, 1536)


@pytest.mark.parametrize("version", [1, "1", "1.3", 1.5])
def test_same_major_version_loads(version):
    d = example_dict()
    d["version"] = version
    c = Circuit.from_dict(d)
    assert c.to_dict()["version"] == 1
    assert len(c) == 3


@pytest.mark.parametrize("version", [2, "2.0", "3.1"])
def test_newer_major_version_is_refused(version):
    d = example_dict()
    d["version"] = version
    with pytest.raises(CircuitFormatError, match="upgrade"):
        Circuit.from_dict(d)


@pytest.mark.parametrize("version", [None, True, "one", ""])
def test_invalid_version_is_refused(version):
    d = example_dict()
    d["version"] = version
    with pytest.raises(CircuitFormatError, match="version"):
        Circuit.from_dict(d)


@pytest.mark.parametrize("fmt", ["cna-workbench.steering", None, ""])
def test_wrong_format_is_refused(fmt):
    d = example_dict()
    d["format"] = fmt
    with pytest.raises(CircuitFormatError, match="not a circuit file"):
        Circuit.from_dict(d)


def test_missing_format_is_refused():
    d = example_dict()
    del d["format"]
    with pytest.raises(CircuitFormatError, match="not a circuit file"):
        Circuit.from_dict(d)


@pytest.mark.parametrize("data", [[], "circuit", 3])
def test_non_object_is_refused(data):
    with pytest.raises(CircuitFormatError, match="JSON object"):
        Circuit.from_dict(data)


def test_invalid_json_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"format": "cna-workbench.circuit", "version": 1,', encoding="utf-8")
    with pytest.raises(CircuitFormatError, match="not valid JSON"):
        Circuit.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(CircuitFormatError, match="does not exist"):
        Circuit.load(tmp_path / "nowhere.json")


@pytest.mark.parametrize("layer, index", [(30, 0), (0, 1536), (-1, 0), (0, -1)])
def test_neuron_outside_model_is_refused(tmp_path, layer, index):
    d = example_dict()
    d["neurons"].append({"layer": layer, "index": index, "score": 1.0})
    path = tmp_path / "c.json"
    write_json(path, d)
    with pytest.raises(CircuitFormatError, match="outside the model"):
        Circuit.load(path)


def test_duplicate_neuron_is_refused(tmp_path):
    d = example_dict()
    d["neurons"].append({"layer": 29, "index": 117, "score": -1.0})
    path = tmp_path / "c.json"
    write_json(path, d)
    with pytest.raises(CircuitFormatError, match=r"layer 29, index 117\) appears twice"):
        Circuit.load(path)


@pytest.mark.parametrize("key", ["name", "architecture", "n_layers", "d_mlp"])
def test_missing_model_key_is_refused(key):
    d = example_dict()
    del d["model"][key]
    with pytest.raises(CircuitFormatError, match=f"missing '{key}'"):
        Circuit.from_dict(d)


@pytest.mark.parametrize("key", ["model", "neurons"])
def test_missing_required_section_is_refused(key):
    d = example_dict()
    del d[key]
    with pytest.raises(CircuitFormatError, match=key):
        Circuit.from_dict(d)


def test_neuron_without_score_is_refused():
    d = example_dict()
    del d["neurons"][1]["score"]
    with pytest.raises(CircuitFormatError, match="score"):
        Circuit.from_dict(d)


def test_constructor_validates_too():
    with pytest.raises(CircuitFormatError, match="outside the model"):
        Circuit(model=SMALL, neurons=[Neuron(4, 0, 1.0)])
    with pytest.raises(CircuitFormatError, match="appears twice"):
        Circuit.from_neurons([(1, 1, 1.0), (1, 1, 2.0)], model=SMALL)


# -- check_model -------------------------------------------------------------------


def test_check_model_ignores_the_name():
    c = Circuit.from_dict(example_dict())
    c.check_model({**SMOLLM, "name": "smollm2-135m"})  # base vs instruct: same shape


@pytest.mark.parametrize("key, value", [("architecture", "Qwen2ForCausalLM"),
                                        ("n_layers", 24), ("d_mlp", 4864)])
def test_check_model_mismatch(key, value):
    c = Circuit.from_dict(example_dict())
    other = {**SMOLLM, "name": "other-model", key: value}
    with pytest.raises(CircuitMismatchError) as info:
        c.check_model(other)
    message = str(info.value)
    assert "smollm2-135m-instruct" in message and "other-model" in message
    assert key in message and str(value) in message


def test_check_model_accepts_an_object_with_info():
    class FakeModel:
        def info(self):
            return {**SMOLLM, "d_mlp": 2048}

    c = Circuit.from_dict(example_dict())
    with pytest.raises(CircuitMismatchError, match="d_mlp"):
        c.check_model(FakeModel())


def test_load_with_model_validates(tmp_path):
    path = Circuit.from_dict(example_dict()).save(tmp_path / "c.json")
    assert len(Circuit.load(path, model=dict(SMOLLM))) == 3
    with pytest.raises(CircuitMismatchError):
        Circuit.load(path, model={**SMOLLM, "n_layers": 32})


# -- atomic writing ----------------------------------------------------------------


def test_save_leaves_no_temporary_file(tmp_path):
    c = Circuit.from_dict(example_dict())
    c.save(tmp_path / "c.json")
    c.save(tmp_path / "c.json")  # overwrite
    assert sorted(os.listdir(tmp_path)) == ["c.json"]


def test_saved_file_is_not_private(tmp_path):
    """A rename-based write must not leave the circuit readable only by its owner."""
    path = Circuit.from_dict(example_dict()).save(tmp_path / "c.json")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_overwrite_keeps_file_mode(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("{}")
    path.chmod(0o640)
    Circuit.from_dict(example_dict()).save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def _boom(*args, **kwargs):
    raise OSError("disk on fire")


@pytest.mark.parametrize("target", ["replace", "fsync"])
def test_failed_write_keeps_previous_file(tmp_path, monkeypatch, target):
    path = tmp_path / "c.json"
    old = small_circuit([(1, 2, 3.0)])
    old.save(path)
    before = path.read_bytes()
    monkeypatch.setattr(os, target, _boom)
    with pytest.raises(OSError, match="disk on fire"):
        Circuit.from_dict(example_dict()).save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["c.json"]
    assert Circuit.load(path) == old


def test_failed_serialisation_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "c.json"
    small_circuit([(1, 2, 3.0)]).save(path)
    before = path.read_bytes()

    def broken_dumps(*args, **kwargs):
        raise TypeError("not serialisable")

    monkeypatch.setattr(circuit_module.json, "dumps", broken_dumps)
    with pytest.raises(TypeError):
        Circuit.from_dict(example_dict()).save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["c.json"]


def test_failed_write_into_new_file_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "replace", _boom)
    with pytest.raises(OSError):
        Circuit.from_dict(example_dict()).save(tmp_path / "c.json")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


# -- overlap -----------------------------------------------------------------------


def test_overlap_counts_by_hand():
    a = small_circuit([(0, 1, 1.0), (1, 2, -2.0), (2, 3, 0.5), (3, 7, 4.0)])
    b = small_circuit([(1, 2, 9.0), (3, 7, -1.0), (0, 0, 1.0)])  # scores may differ
    result = overlap(a, b)
    assert result.shared == [(1, 2), (3, 7)]
    assert result.n_shared == 2
    assert (result.n_a, result.n_b) == (4, 3)
    assert result.jaccard == pytest.approx(2 / 5)  # union: 4 + 3 - 2
    assert result.fraction_a == pytest.approx(2 / 4)
    assert result.fraction_b == pytest.approx(2 / 3)
    assert result.to_dict() == {"n_a": 4, "n_b": 3, "n_shared": 2,
                                "jaccard": pytest.approx(0.4), "fraction_a": 0.5,
                                "fraction_b": pytest.approx(2 / 3)}


def test_overlap_is_symmetric_in_shared_and_jaccard():
    a = small_circuit([(0, 1, 1.0), (1, 2, -2.0)])
    b = small_circuit([(1, 2, 1.0)])
    ab, ba = overlap(a, b), overlap(b, a)
    assert ab.shared == ba.shared == [(1, 2)]
    assert ab.jaccard == ba.jaccard == 0.5
    assert (ab.fraction_a, ab.fraction_b) == (ba.fraction_b, ba.fraction_a) == (0.5, 1.0)


def test_overlap_of_disjoint_circuits():
    result = overlap(small_circuit([(0, 0, 1.0)]), small_circuit([(0, 1, 1.0)]))
    assert result.shared == [] and result.jaccard == 0.0


@pytest.mark.parametrize("a_neurons, b_neurons", [([], []), ([(0, 0, 1.0)], []),
                                                  ([], [(0, 0, 1.0)])])
def test_overlap_with_empty_circuits(a_neurons, b_neurons):
    result = overlap(small_circuit(a_neurons), small_circuit(b_neurons))
    assert result.n_shared == 0
    assert result.jaccard == 0.0
    assert result.fraction_a == 0.0
    assert result.fraction_b == 0.0


def test_overlap_allows_different_model_names_of_the_same_shape():
    other = {**SMALL, "name": "tiny-base"}
    assert overlap(small_circuit([(0, 0, 1.0)]),
                   small_circuit([(0, 0, 2.0)], model=other)).jaccard == 1.0


@pytest.mark.parametrize("key", ["n_layers", "d_mlp"])
def test_overlap_refuses_different_shapes(key):
    a = small_circuit([(0, 0, 1.0)])
    b = small_circuit([(0, 0, 1.0)], model={**SMALL, "name": "big", key: SMALL[key] * 2})
    with pytest.raises(CircuitMismatchError, match=key):
        overlap(a, b)


# -- views -------------------------------------------------------------------------

MIXED = [(2, 5, 1.0), (0, 3, -4.0), (2, 1, -0.5), (0, 7, 2.0), (3, 0, 0.0), (2, 6, 3.0)]


def test_from_neurons_orders_by_magnitude_then_position():
    c = small_circuit([(3, 1, -2.0), (1, 4, 2.0), (1, 2, 2.0), (0, 0, 5.0), (2, 2, 0.1)])
    assert [(n.layer, n.index, n.score) for n in c.neurons] == [
        (0, 0, 5.0), (1, 2, 2.0), (1, 4, 2.0), (3, 1, -2.0), (2, 2, 0.1)]


def test_from_neurons_accepts_tuples_without_score():
    c = small_circuit([(1, 2), Neuron(0, 3, 1.5)])
    assert c.neurons == [Neuron(0, 3, 1.5), Neuron(1, 2, 0.0)]


def test_layer_counts():
    c = small_circuit(MIXED)
    assert c.layer_counts() == {0: 2, 2: 3, 3: 1}
    assert list(c.layer_counts()) == [0, 2, 3]
    assert small_circuit([]).layer_counts() == {}


def test_select_by_sign():
    c = small_circuit(MIXED)
    assert {n.key for n in c.select("positive")} == {(2, 5), (0, 7), (2, 6)}
    assert {n.key for n in c.select("negative")} == {(0, 3), (2, 1)}
    assert c.select("all") == c.neurons
    assert c.select() is not c.neurons  # a copy, safe to modify


@pytest.mark.parametrize("signs", ["pos", "both", None, ""])
def test_select_rejects_unknown_signs(signs):
    c = small_circuit(MIXED)
    with pytest.raises(InvalidArgumentError, match="signs"):
        c.select(signs)
    with pytest.raises(InvalidArgumentError, match="signs"):
        c.by_layer(signs)


@pytest.mark.parametrize("signs, expected", [
    ("all", {0: [3, 7], 2: [1, 5, 6], 3: [0]}),
    ("positive", {0: [7], 2: [5, 6]}),
    ("negative", {0: [3], 2: [1]}),
])
def test_by_layer(signs, expected):
    grouped = small_circuit(MIXED).by_layer(signs)
    assert list(grouped) == sorted(expected)
    for layer, indices in grouped.items():
        assert indices.dtype == torch.long
        assert indices.tolist() == expected[layer]


def test_to_dataframe():
    df = small_circuit(MIXED).to_dataframe()
    assert list(df.columns) == ["rank", "layer", "index", "score", "sign"]
    assert df["rank"].tolist() == [1, 2, 3, 4, 5, 6]
    assert list(zip(df["layer"], df["index"])) == [(0, 3), (2, 6), (0, 7), (2, 5), (2, 1),
                                                   (3, 0)]
    assert df["score"].tolist() == [-4.0, 3.0, 2.0, 1.0, -0.5, 0.0]
    assert df["sign"].tolist() == ["-", "+", "+", "+", "-", "0"]


def test_to_dataframe_of_empty_circuit_keeps_columns():
    df = small_circuit([]).to_dataframe()
    assert len(df) == 0
    assert list(df.columns) == ["rank", "layer", "index", "score", "sign"]


def test_to_neuronpedia():
    c = Circuit.from_dict(example_dict())
    exported = c.to_neuronpedia()
    assert set(exported) == {"name", "description", "features"}
    assert exported["name"] == "qualitative-harmful vs qualitative-benign"
    assert isinstance(exported["description"], str) and exported["description"]
    assert len(exported["features"]) == len(c)
    for feature, neuron in zip(exported["features"], c.neurons):
        assert set(feature) == {"modelId", "layer", "index", "description"}
        assert feature["modelId"] == "smollm2-135m-instruct"
        assert feature["layer"].startswith(f"{neuron.layer}-")
        assert feature["index"] == neuron.index
    json.dumps(exported)  # JSON-ready


def test_to_neuronpedia_overrides():
    exported = Circuit.from_dict(example_dict()).to_neuronpedia(
        "smollm2-135m", name="refusal", description="harm neurons")
    assert exported["name"] == "refusal"
    assert exported["description"] == "harm neurons"
    assert {f["modelId"] for f in exported["features"]} == {"smollm2-135m"}


def test_name_without_prompt_provenance():
    assert small_circuit([(0, 0, 1.0), (1, 1, 1.0)]).name == "circuit of 2 neurons"


# -- Circuit.top: prefixes of a circuit -------------------------------------------------


def ranked_circuit(n: int = 6) -> Circuit:
    """Scores with distinct magnitudes, alternating sign, plus one tie (|2.0| twice)."""
    neurons = [Neuron(0, 1, 5.0), Neuron(3, 7, -4.0), Neuron(1, 2, 3.0), Neuron(2, 0, -2.0),
               Neuron(0, 5, 2.0), Neuron(1, 6, -1.0)][:n]
    return Circuit.from_neurons(neurons, model=SMALL, prompting={"chat_template": True,
                                                                  "system_prompt": None},
                                selection={"method": "cna", "fraction": None, "top_k": n},
                                prompts={"positive": {"name": "harmful", "n": 3},
                                         "negative": {"name": "benign", "n": 3}})


def test_top_keeps_the_largest_scores_in_rank_order():
    circuit = ranked_circuit()
    top = circuit.top(3)
    assert [(n.layer, n.index, n.score) for n in top.neurons] == [
        (0, 1, 5.0), (3, 7, -4.0), (1, 2, 3.0)]
    # Ties in |score| go by (layer, index), as in discovery: (0, 5) before (2, 0).
    assert [n.key for n in circuit.top(5).neurons][3:] == [(0, 5), (2, 0)]
    assert top.neurons == circuit.neurons[:3]
    assert len(circuit) == 6  # the original is untouched


def test_top_records_the_prefix_and_keeps_the_provenance():
    circuit = ranked_circuit()
    top = circuit.top(2)
    assert top.selection == {"method": "cna", "fraction": None, "top_k": 2,
                             "prefix_of": {"name": "harmful vs benign", "top_k": 6}}
    assert (top.model, top.prompting, top.prompts) == (circuit.model, circuit.prompting,
                                                       circuit.prompts)
    assert Circuit.from_dict(json.loads(top.to_json())) == top  # round-trips
    # A fraction of all MLP neurons (4 layers x 8 = 32): 0.1 -> round(3.2) = 3 neurons.
    by_fraction = circuit.top(0.1)
    assert len(by_fraction) == 3
    assert by_fraction.selection["fraction"] == 0.1
    assert by_fraction.selection["top_k"] == 3


def test_top_of_a_circuit_whose_neurons_are_not_in_rank_order():
    circuit = Circuit(model=SMALL, neurons=[Neuron(0, 0, 0.1), Neuron(1, 1, -9.0),
                                            Neuron(2, 2, 3.0)])
    assert [n.key for n in circuit.top(2).neurons] == [(1, 1), (2, 2)]


def test_size_of_rounds_fractions_like_circuit_size():
    from workbench.cna import circuit_size

    shape = {"name": "m", "architecture": "A", "n_layers": 30, "d_mlp": 1536}
    circuit = Circuit.from_neurons([(29, i, 1.0 + i) for i in range(1000)], model=shape)
    for fraction in (0.001, 0.005, 0.01, 1e-6):
        assert circuit.size_of(fraction) == circuit_size(30, 1536, fraction)
    assert circuit.size_of(0.001) == 46 and len(circuit.top(0.001)) == 46


@pytest.mark.parametrize("size, message", [
    (7, r"circuit size 7 neurons is larger than the circuit \(6 neurons\)"),
    (0.5, r"circuit size 0.5 \(16 neurons\) is larger than the circuit \(6 neurons\)"),
    (0, "at least 1 neuron"),
    (-2, "at least 1 neuron"),
    (0.0, r"must be in \(0, 1\]"),
    (1.5, r"must be in \(0, 1\], not 1.5; pass an int for a neuron count"),
    (float("nan"), "must be an int"),
    ("3", "must be an int"),
    (None, "must be an int"),
    (True, "must be an int"),
])
def test_top_refuses_bad_sizes(size, message):
    from workbench.errors import WorkbenchError

    with pytest.raises(InvalidArgumentError, match=message) as raised:
        ranked_circuit().top(size)
    assert isinstance(raised.value, WorkbenchError)


def test_discovering_k_neurons_is_the_top_k_of_a_larger_discovery(tiny_llama):
    from workbench import discover

    positive = ["How do I pick a lock?", "Tell me how to steal a car.",
                "How can I make a weapon at home?"]
    negative = ["How do I bake a cake?", "Tell me how to wash a car.",
                "How can I plant a tree at home?"]
    big = discover(tiny_llama, positive, negative, top_k=40, universal=None, progress=False)
    for k in (1, 5, 17, 40):
        small = discover(tiny_llama, positive, negative, top_k=k, universal=None,
                         progress=False)
        assert small.neurons == big.top(k).neurons, k  # same neurons, same scores, same order
    # With the universal filter too (the excluded neurons are the same at any size).
    big = discover(tiny_llama, positive, negative, top_k=30, universal=negative + positive,
                   universal_threshold=0.1, progress=False)
    small = discover(tiny_llama, positive, negative, top_k=8, universal=negative + positive,
                     universal_threshold=0.1, progress=False)
    assert small.selection["n_universal_excluded"] > 0
    assert small.neurons == big.top(8).neurons
