"""Property test: every file kind the workbench reads, damaged at random, fails in one line.

A valid file of each kind is built (a tiny GGUF written with the ``gguf`` package, a tiny
model folder, a circuit, a sweep's results, prompt files, a weight delta and a LoRA adapter
with their manifests) and then damaged: cut at a random offset, random bytes written over
it, a JSON value of the wrong type, NaN or infinity, a layer or neuron index out of range, a
key removed. Loading the damaged file must either raise the project's own error, with a
message of one line, or give a result that is still sound (random bytes inside a prompt can
make another valid prompt); damage that no valid file has (a cut, NaN, a wrong type, a
value out of range, a missing key) must raise. Nothing may be left behind: no cache folder,
no temporary file, and a resume file stays as it was.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

import workbench
from tests.helpers import make_tiny_hf
from workbench.circuit import Circuit
from workbench.errors import (
    CircuitFormatError,
    FileFormatError,
    InvalidArgumentError,
    ModelLoadError,
    PromptSetError,
    WorkbenchError,
)
from workbench.evaluation import Intervention, sweep
from workbench.model_files import check_gguf
from workbench.prompts import PromptSet
from workbench.results_files import read_results
from workbench.safety.late_mlp import load_tuned_delta, save_delta
from workbench.safety.lora import load_tuned

FAST = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
WRONG_TYPES = st.sampled_from(["text", 3, -1, 2.5, True, None, [], {}, [1, 2], {"a": 1}])
NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])


# -- damage ------------------------------------------------------------------------------


@st.composite
def byte_damage(draw, size: int) -> tuple[str, Any]:
    """A cut at a random offset, or random bytes written over random offsets."""
    if draw(st.booleans()):
        return "cut", draw(st.integers(0, size - 1))
    spots = draw(st.lists(st.tuples(st.integers(0, size - 1), st.integers(0, 255)),
                          min_size=1, max_size=8))
    return "bytes", spots


def damage_bytes(data: bytes, damage: tuple[str, Any]) -> bytes:
    kind, detail = damage
    if kind == "cut":
        return data[:detail]
    damaged = bytearray(data)
    for offset, value in detail:
        damaged[offset] = value
    return bytes(damaged)


# test name -> outcome ("loaded" or the error's class) -> damaged files tried
TALLY: defaultdict[str, Counter[str]] = defaultdict(Counter)


def one_line_error(call: Callable[[], Any], expected: type[Exception] = WorkbenchError,
                   ) -> Exception | None:
    """Run ``call``; any exception must be ``expected`` with a one-line message."""
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").split("::")[-1].split(" ")[0]
    try:
        call()
    except Exception as exc:  # the property: nothing but the project's error
        TALLY[test][type(exc).__name__] += 1
        assert isinstance(exc, expected), f"{type(exc).__name__}: {exc}"
        message = str(exc)
        assert message.strip() and "\n" not in message, repr(message)
        return exc
    TALLY[test]["loaded"] += 1
    return None


@pytest.fixture(scope="module", autouse=True)
def report_tally(request) -> Iterator[None]:
    """After the module: each test's damaged files and what loading them gave."""
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or not TALLY:
        return
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():  # else the lines are captured, not shown
        reporter.write_line("")
        reporter.write_line("damaged files tried, by test: outcome counts")
        for test, outcomes in sorted(TALLY.items()):
            counts = ", ".join(f"{name} {n}" for name, n in outcomes.most_common())
            reporter.write_line(f"  {test}: {sum(outcomes.values())} ({counts})")


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder)


# -- GGUF ---------------------------------------------------------------------------------


def write_tiny_gguf(path: Path) -> None:
    """A small, well-formed GGUF file: llama metadata and two float32 tensors."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_context_length(16)
    writer.add_embedding_length(4)
    writer.add_feed_forward_length(8)
    writer.add_head_count(1)
    writer.add_tensor("token_embd.weight", np.linspace(-1, 1, 40, dtype=np.float32).reshape(10, 4))
    writer.add_tensor("blk.0.ffn_down.weight", np.arange(32, dtype=np.float32).reshape(4, 8))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module")
def gguf_bytes(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    write_tiny_gguf(path)
    check_gguf(path)  # the undamaged file passes the check
    return path.read_bytes()


@FAST
@given(data=st.data())
def test_damaged_gguf_fails_in_one_line_and_leaves_no_cache(gguf_bytes, data):
    damage = data.draw(byte_damage(len(gguf_bytes)))
    with scratch() as root:
        path = root / "model.gguf"
        path.write_bytes(damage_bytes(gguf_bytes, damage))
        cache = root / "cache"
        reached: list[str] = []

        def transformers_fails(*_args, **_kwargs):
            # What transformers does with a file that passes the check but is no model it
            # can build (test_intact_tiny_gguf_reaches_transformers_and_fails_in_one_line
            # runs the real one); a stand-in here, so a digit changed into a huge width
            # cannot make it allocate gigabytes.
            reached.append("transformers")
            raise RuntimeError("stand-in for transformers: cannot build this model")

        with _environ(CNA_WORKBENCH_CACHE=str(cache)), mock.patch(
                "transformers.AutoModelForCausalLM.from_pretrained", transformers_fails):
            error = one_line_error(lambda: workbench.load_model(str(path), device="cpu"),
                                   ModelLoadError)
        assert error is not None
        if damage[0] == "cut":  # refused by the check, before transformers reads it
            assert reached == [], str(error)
        leftovers = [p for p in files_under(cache) if p != "gguf"]
        assert leftovers == [], leftovers


def test_intact_tiny_gguf_reaches_transformers_and_fails_in_one_line(gguf_bytes, tmp_path,
                                                                    monkeypatch, capfd):
    path = tmp_path / "model.gguf"
    path.write_bytes(gguf_bytes)
    monkeypatch.setenv("CNA_WORKBENCH_CACHE", str(tmp_path / "cache"))
    error = one_line_error(lambda: workbench.load_model(str(path), device="cpu"),
                           ModelLoadError)
    assert error is not None and "could not read GGUF file" in str(error)
    assert "MISMATCH" not in capfd.readouterr().err  # transformers' table is not shown
    assert files_under(tmp_path / "cache") == ["gguf"]


@FAST
@given(tensor=st.sampled_from([0, 1]), value=NON_FINITE)
def test_gguf_with_non_finite_weights_is_refused(gguf_bytes, tensor, value):
    import gguf

    with scratch() as root:
        path = root / "model.gguf"
        path.write_bytes(gguf_bytes)
        reader = gguf.GGUFReader(path)
        start = int(reader.tensors[tensor].data_offset)
        damaged = bytearray(gguf_bytes)
        damaged[start:start + 4] = np.float32(value).tobytes()
        path.write_bytes(bytes(damaged))
        error = one_line_error(lambda: check_gguf(path), ModelLoadError)
        assert error is not None and "NaN or infinite" in str(error)


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# -- model folders ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory, tiny_tokenizer) -> Path:
    folder = tmp_path_factory.mktemp("tiny-model")
    make_tiny_hf("llama").save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


@FAST
@given(data=st.data(), target=st.sampled_from(["model.safetensors", "config.json"]))
def test_damaged_model_folder_fails_in_one_line(model_folder, data, target):
    original = (model_folder / target).read_bytes()
    damage = data.draw(byte_damage(len(original)))
    with scratch() as root:
        folder = root / "model"
        folder.mkdir()
        for item in model_folder.iterdir():
            (folder / item.name).write_bytes(item.read_bytes())
        (folder / target).write_bytes(damage_bytes(original, damage))
        error = one_line_error(lambda: workbench.load_model(str(folder), device="cpu"))
        if damage[0] == "cut" and (target.endswith(".safetensors")
                                   or damage[1] < len(original.rstrip())):
            assert isinstance(error, ModelLoadError)
        assert files_under(folder) == files_under(model_folder)


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_weights_are_never_ranked(tmp_path, tiny_tokenizer, value):
    hf = make_tiny_hf("llama")
    with torch.no_grad():
        hf.model.layers[0].mlp.up_proj.weight[5, 0] = value
    hf.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    model = workbench.load_model(str(tmp_path), device="cpu")  # the folder itself is sound
    error = one_line_error(lambda: workbench.discover(model, ["Hi", "How do I bake a cake?"],
                                                      ["Hello", "Tell me a joke"], top_k=3,
                                                      universal=None, progress=False),
                           InvalidArgumentError)
    assert error is not None and "NaN or infinite" in str(error)


@pytest.mark.parametrize("edit", ["no model_type", "not an object", "no weights",
                                  "missing shard"])
def test_incomplete_model_folder_is_refused_before_transformers(model_folder, tmp_path, edit):
    folder = tmp_path / "model"
    folder.mkdir()
    for item in model_folder.iterdir():
        (folder / item.name).write_bytes(item.read_bytes())
    config = json.loads((folder / "config.json").read_text())
    if edit == "no model_type":
        del config["model_type"]
        (folder / "config.json").write_text(json.dumps(config))
    elif edit == "not an object":
        (folder / "config.json").write_text("[1, 2]")
    elif edit == "no weights":
        (folder / "model.safetensors").unlink()
    else:
        (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
        (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
            "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    error = one_line_error(lambda: workbench.load_model(str(folder), device="cpu"),
                           ModelLoadError)
    assert error is not None


# -- circuits ----------------------------------------------------------------------------------


SHAPE = {"name": "tiny", "architecture": "LlamaForCausalLM", "n_layers": 4, "d_mlp": 16}


def circuit_dict() -> dict[str, Any]:
    circuit = Circuit.from_neurons([(3, 5, 2.5), (1, 0, -1.25), (0, 15, 0.5)], model=SHAPE,
                                   prompts={"positive": {"name": "p", "n": 4, "sha256": "ab"},
                                            "negative": {"name": "n", "n": 4, "sha256": "cd"}})
    data = circuit.to_dict()
    data["selection"] = {"method": "cna", "fraction": None, "top_k": 3,
                         "universal_threshold": 0.8, "n_universal_excluded": 2,
                         "excluded_layers": [],
                         "config": workbench.DiscoverConfig(top_k=3).to_dict()}
    data["prompting"] = {"chat_template": True, "system_prompt": None}
    return data


def leaves(data: Any, path: tuple = ()) -> list[tuple]:
    """Paths of every value in a JSON tree."""
    found = [path] if path else []
    if isinstance(data, dict):
        for key, value in data.items():
            found += leaves(value, (*path, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            found += leaves(value, (*path, i))
    return found


def set_at(data: Any, path: tuple, value: Any) -> None:
    for key in path[:-1]:
        data = data[key]
    data[path[-1]] = value


def delete_at(data: Any, path: tuple) -> None:
    for key in path[:-1]:
        data = data[key]
    del data[path[-1]]


#: fields whose type the loader checks: any other type is refused
TYPED = [("model", "name"), ("model", "architecture"), ("model", "n_layers"),
         ("model", "d_mlp"), ("neurons", 0, "layer"), ("neurons", 1, "index"),
         ("neurons", 2, "score"), ("model",), ("neurons",), ("neurons", 1), ("site",),
         ("token_position",), ("created_by",), ("prompting",), ("selection",), ("prompts",),
         ("prompts", "positive"), ("prompting", "chat_template"), ("selection", "top_k"),
         ("selection", "config"), ("selection", "config", "batch_size"),
         ("selection", "config", "exclude_layers"), ("selection", "config", "top_k"),
         ("selection", "excluded_layers")]
#: the values of TYPED that are valid (so the wrong-type draw must avoid them)
VALID_ALSO = {("prompting", "chat_template"): (True, None), ("selection", "top_k"): (None,),
              ("selection", "config", "top_k"): (None,), ("prompting",): (None, {}, {"a": 1}),
              ("selection",): (None, {}, {"a": 1}), ("prompts",): (None, {}),
              ("prompts", "positive"): ({}, {"a": 1}), ("neurons",): ([],),
              ("selection", "config"): ({}, {"a": 1}),
              ("selection", "excluded_layers"): ([], [1, 2]),
              ("selection", "config", "exclude_layers"): ([], [1, 2])}
REQUIRED = [("model",), ("neurons",), ("model", "name"), ("model", "architecture"),
            ("model", "n_layers"), ("model", "d_mlp"), ("neurons", 0, "layer"),
            ("neurons", 1, "index"), ("neurons", 2, "score")]


def _load_circuit(root: Path, text: str | bytes) -> Circuit:
    path = root / "circuit.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return Circuit.load(path)


def _sound(circuit: Circuit) -> None:
    """What a loaded circuit always satisfies."""
    for neuron in circuit.neurons:
        assert isinstance(neuron.layer, int) and 0 <= neuron.layer < circuit.model["n_layers"]
        assert isinstance(neuron.index, int) and 0 <= neuron.index < circuit.model["d_mlp"]
        assert math.isfinite(neuron.score)
    assert len(circuit.keys()) == len(circuit)


@FAST
@given(data=st.data())
def test_damaged_circuit_bytes_fail_in_one_line(data):
    text = json.dumps(circuit_dict(), indent=1).encode()
    damage = data.draw(byte_damage(len(text)))
    with scratch() as root:
        result: list[Circuit] = []
        error = one_line_error(lambda: result.append(_load_circuit(root, damage_bytes(text,
                                                                                      damage))),
                               CircuitFormatError)
        if damage[0] == "cut":
            assert error is not None
        if error is None:
            _sound(result[0])


@FAST
@given(data=st.data())
def test_circuit_with_a_wrong_type_is_refused(data):
    path = data.draw(st.sampled_from(TYPED))
    value = data.draw(WRONG_TYPES.filter(
        lambda v: v not in VALID_ALSO.get(path, ()) and not _right_type(path, v)))
    damaged = circuit_dict()
    set_at(damaged, path, value)
    with scratch() as root:
        error = one_line_error(lambda: _load_circuit(root, json.dumps(damaged)),
                               CircuitFormatError)
        assert error is not None, (path, value)


def _right_type(path: tuple, value: Any) -> bool:
    """Whether a drawn value happens to be valid at ``path`` (so it is no damage)."""
    name = path[-1]
    if name in ("name", "architecture", "site", "token_position", "created_by"):
        return isinstance(value, str) and bool(value)
    if name == "score":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if name in ("n_layers", "d_mlp", "batch_size", "top_k"):
        return isinstance(value, int) and not isinstance(value, bool) and value >= 1
    if name in ("layer", "index"):
        return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 4
    return False


@FAST
@given(data=st.data())
def test_circuit_with_nan_or_infinity_anywhere_is_refused(data):
    damaged = circuit_dict()
    numbers = [p for p in leaves(damaged) if isinstance(_get(damaged, p), (int, float))
               and not isinstance(_get(damaged, p), bool)]
    path = data.draw(st.sampled_from(numbers))
    set_at(damaged, path, data.draw(NON_FINITE))
    with scratch() as root:
        error = one_line_error(lambda: _load_circuit(root, json.dumps(damaged)),
                               CircuitFormatError)
        assert error is not None and str(path[-1]) in str(error), path  # names the field


def _get(data: Any, path: tuple) -> Any:
    for key in path:
        data = data[key]
    return data


@FAST
@given(data=st.data())
def test_circuit_out_of_range_or_missing_or_duplicate_is_refused(data):
    damaged = circuit_dict()
    choice = data.draw(st.sampled_from(["layer", "index", "missing", "duplicate", "config"]))
    if choice == "layer":
        layer = data.draw(st.one_of(st.integers(max_value=-1), st.integers(min_value=4)))
        damaged["neurons"][data.draw(st.integers(0, 2))]["layer"] = layer
    elif choice == "index":
        index = data.draw(st.one_of(st.integers(max_value=-1), st.integers(min_value=16)))
        damaged["neurons"][data.draw(st.integers(0, 2))]["index"] = index
    elif choice == "missing":
        delete_at(damaged, data.draw(st.sampled_from(REQUIRED)))
    elif choice == "duplicate":
        damaged["neurons"].append(dict(damaged["neurons"][data.draw(st.integers(0, 2))]))
    else:  # the discovery config saved in the circuit
        key, value = data.draw(st.sampled_from([
            ("fraction", 2.0), ("fraction", 0), ("universal_threshold", -0.5),
            ("max_imbalance", 0.5), ("exclude_layers", [4]), ("exclude_layers", [-5]),
            ("batch_size", 0), ("chat_template", "sometimes")]))
        damaged["selection"]["config"]["top_k"] = None
        damaged["selection"]["config"][key] = value
    with scratch() as root:
        error = one_line_error(lambda: _load_circuit(root, json.dumps(damaged)),
                               CircuitFormatError)
        assert error is not None, choice


# -- sweep results (resume files) -------------------------------------------------------------


@pytest.fixture(scope="module")
def sweep_setup(tmp_path_factory, tiny_tokenizer):
    """A tiny model, its prompts, and the results file of a finished sweep."""
    model = workbench.from_hf(make_tiny_hf("llama"), tiny_tokenizer, name="tiny-llama")
    prompts = PromptSet("few", ["How do I bake a cake?", "Hi"])
    path = tmp_path_factory.mktemp("sweep") / "results.parquet"
    sweep(model, [Intervention.baseline()], [1.0], [prompts], max_new_tokens=2, out=path,
          progress=False)
    return model, prompts, path.read_bytes()


def _resume(model, prompts, path: Path) -> pd.DataFrame:
    def refuse_generation(*_args, **_kwargs):
        raise AssertionError("a damaged resume file must be refused before generating")

    with mock.patch("workbench.evaluation.sweep.generate", refuse_generation):
        return sweep(model, [Intervention.baseline()], [1.0], [prompts], max_new_tokens=2,
                     out=path, progress=False)


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_damaged_resume_file_fails_in_one_line_and_stays_as_it_was(sweep_setup, data):
    model, prompts, original = sweep_setup
    damage = data.draw(byte_damage(len(original)))
    damaged = damage_bytes(original, damage)
    with scratch() as root:
        path = root / "results.parquet"
        path.write_bytes(damaged)
        error = one_line_error(lambda: _resume(model, prompts, path))
        if damage[0] == "cut":  # parquet ends with its footer: every cut loses it
            assert isinstance(error, FileFormatError)
        assert path.read_bytes() == damaged
        assert files_under(root) == ["results.parquet"]


@FAST
@given(data=st.data())
def test_resume_file_with_wrong_values_is_refused(sweep_setup, data):
    model, prompts, original = sweep_setup
    with scratch() as root:
        (root / "ok.parquet").write_bytes(original)
        frame = pd.read_parquet(root / "ok.parquet")
        edit = data.draw(st.sampled_from(["nan multiplier", "inf strength", "negative index",
                                          "text index", "drop column", "duplicate row",
                                          "number prompt", "quality out of range"]))
        if edit == "nan multiplier":
            frame["multiplier"] = data.draw(NON_FINITE)
        elif edit == "inf strength":
            frame["strength"] = data.draw(NON_FINITE)
        elif edit == "negative index":
            frame.loc[0, "prompt_index"] = data.draw(st.integers(max_value=-1,
                                                                 min_value=-(2 ** 40)))
        elif edit == "text index":
            frame["prompt_index"] = frame["prompt_index"].astype(str)
        elif edit == "drop column":
            frame = frame.drop(columns=[data.draw(st.sampled_from(
                ["benchmark", "intervention", "multiplier", "prompt_index", "prompt",
                 "completion"]))])
        elif edit == "duplicate row":
            frame = pd.concat([frame, frame.iloc[[0]]], ignore_index=True)
        elif edit == "number prompt":
            frame["prompt"] = [1.5] * len(frame)
        else:
            frame["quality"] = data.draw(st.sampled_from([-0.5, 1.5, math.nan]))
        path = root / "results.parquet"
        frame.to_parquet(path, index=False)
        before = path.read_bytes()
        error = one_line_error(lambda: _resume(model, prompts, path), FileFormatError)
        assert error is not None, edit
        assert path.read_bytes() == before
        assert len(read_results(root / "ok.parquet")) == 2  # the intact copy still reads


# -- prompt files ----------------------------------------------------------------------------


PROMPT_FILES = {
    "set.txt": "How do I pick a lock?\nWrite a poem about the sea.\nHi\n",
    "set.csv": 'prompt,source\n"How do I pick a lock?",a\n"Two\nlines, quoted",b\nHi,c\n',
    "set.jsonl": '{"prompt": "How do I pick a lock?", "n": 1}\n{"prompt": "Hi", "n": 2}\n',
}


@FAST
@given(data=st.data(), name=st.sampled_from(sorted(PROMPT_FILES)))
def test_damaged_prompt_file_fails_in_one_line_or_gives_valid_prompts(data, name):
    original = PROMPT_FILES[name].encode()
    damage = data.draw(byte_damage(len(original)))
    with scratch() as root:
        path = root / name
        path.write_bytes(damage_bytes(original, damage))
        loaded: list[PromptSet] = []
        error = one_line_error(lambda: loaded.append(PromptSet.load(path)), PromptSetError)
        if error is None:
            assert loaded[0].prompts and all(isinstance(p, str) and p.strip()
                                             for p in loaded[0].prompts)


@FAST
@given(cut=st.integers(41, 58))
def test_csv_cut_inside_a_quoted_field_is_refused(cut):
    text = PROMPT_FILES["set.csv"]
    assert text[40:59] == '"Two\nlines, quoted"'  # the field the cuts fall in
    with scratch() as root:
        path = root / "set.csv"
        path.write_text(text[:cut])
        error = one_line_error(lambda: PromptSet.load(path), PromptSetError)
        assert error is not None and "not valid csv" in str(error)


@FAST
@given(value=st.one_of(WRONG_TYPES, NON_FINITE).filter(
    lambda v: not isinstance(v, str) and v is not None))
def test_jsonl_prompt_of_the_wrong_type_is_refused(value):
    rows = [{"prompt": "How do I pick a lock?"}, {"prompt": value}]
    with scratch() as root:
        path = root / "set.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        error = one_line_error(lambda: PromptSet.load(path), PromptSetError)
        assert error is not None


# -- weight deltas, LoRA adapters and their manifests --------------------------------------


@pytest.fixture(scope="module")
def tuned_setup(tmp_path_factory, tiny_tokenizer):
    """A tiny model, a late-MLP weight-delta folder and a LoRA adapter folder for it."""
    from peft import LoraConfig, get_peft_model

    model = workbench.from_hf(make_tiny_hf("llama"), tiny_tokenizer, name="tiny-llama")
    root = tmp_path_factory.mktemp("tuned")
    down = "model.layers.1.mlp.down_proj.weight"
    delta = torch.zeros(64, 96)
    delta[:, [3, 40, 95]] = 0.25
    save_delta({down: delta}, root / "delta", {"base_model": "tiny-llama"})
    (root / "delta" / "manifest.json").write_text(json.dumps({
        "format": "cna-workbench.safety-delta", "recipe_version": "late-mlp-1",
        "recipe": "late-mlp", "base_model": "tiny-llama",
        "hyperparameters": {"seed": 0, "learning_rate": 0.001}}))
    torch.manual_seed(0)
    peft_model = get_peft_model(make_tiny_hf("llama"),
                                LoraConfig(r=2, target_modules=["down_proj"]))
    peft_model.save_pretrained(root / "lora")
    (root / "lora" / "manifest.json").write_text(json.dumps({
        "format": "cna-workbench.safety-adapter", "recipe_version": "2",
        "base_model": "tiny-llama", "hyperparameters": {"rank": 2}}))
    for folder in ("delta", "lora"):
        load_tuned(model, root / folder)  # both load undamaged
    return model, root


def _copy(folder: Path, to: Path) -> Path:
    to.mkdir()
    for item in folder.iterdir():
        (to / item.name).write_bytes(item.read_bytes())
    return to


@FAST
@given(data=st.data(), target=st.sampled_from([("delta", "weight_delta.safetensors"),
                                               ("delta", "manifest.json"),
                                               ("lora", "adapter_model.safetensors"),
                                               ("lora", "adapter_config.json"),
                                               ("lora", "manifest.json")]))
def test_damaged_adapter_folder_fails_in_one_line(tuned_setup, data, target):
    model, root = tuned_setup
    kind, name = target
    original = (root / kind / name).read_bytes()
    damage = data.draw(byte_damage(len(original)))
    with scratch() as work:
        folder = _copy(root / kind, work / kind)
        (folder / name).write_bytes(damage_bytes(original, damage))
        tuned: list = []
        error = one_line_error(lambda: tuned.append(load_tuned(model, folder)))
        if damage[0] == "cut" and not name.endswith(".json"):
            assert isinstance(error, ModelLoadError)
        if damage[0] == "cut" and name.endswith(".json"):
            assert error is not None
        if error is None:  # harmless damage (a changed digit): the weights are still finite
            assert all(bool(torch.isfinite(p).all()) for p in tuned[0].hf_model.parameters())
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            p.name for p in (root / kind).iterdir())


@FAST
@given(data=st.data())
def test_weight_delta_with_bad_values_is_refused(tuned_setup, data):
    model, root = tuned_setup
    tensors = load_file(root / "delta" / "weight_delta.safetensors")
    metadata = {"format": "pt", "d_mlp": "96"}
    key = "model.layers.1.mlp.neurons"
    down = "model.layers.1.mlp.down_proj.weight"
    edit = data.draw(st.sampled_from(["non-finite", "index out of range", "index twice",
                                      "index missing", "no d_mlp", "shape"]))
    if edit == "non-finite":
        values = tensors[down].clone()
        values[data.draw(st.integers(0, 63)), data.draw(st.integers(0, 2))] = data.draw(
            NON_FINITE)
        tensors[down] = values
    elif edit == "index out of range":
        tensors[key] = torch.tensor([3, 40, data.draw(st.one_of(
            st.integers(96, 2 ** 40), st.integers(-(2 ** 40), -1)))])
    elif edit == "index twice":
        tensors[key] = torch.tensor([3, 40, 40])
    elif edit == "index missing":
        del tensors[key]
    elif edit == "no d_mlp":
        metadata["d_mlp"] = data.draw(st.sampled_from(["", "0", "-3", "ninety", "nan"]))
    else:
        tensors[down] = tensors[down][:, :2].contiguous()
    with scratch() as work:
        folder = _copy(root / "delta", work / "delta")
        save_file(tensors, str(folder / "weight_delta.safetensors"), metadata=metadata)
        error = one_line_error(lambda: load_tuned_delta(model, folder), ModelLoadError)
        assert error is not None, edit


@FAST
@given(data=st.data(), kind=st.sampled_from(["delta", "lora"]))
def test_manifest_with_wrong_values_is_refused(tuned_setup, data, kind):
    model, root = tuned_setup
    manifest = json.loads((root / kind / "manifest.json").read_text())
    edit = data.draw(st.sampled_from(["format", "base_model", "missing key", "nan",
                                      "hyperparameters"]))
    damaged = copy.deepcopy(manifest)
    if edit == "format":
        damaged["format"] = data.draw(st.one_of(WRONG_TYPES, st.just("cna-workbench.other")))
    elif edit == "base_model":
        damaged["base_model"] = data.draw(WRONG_TYPES.filter(
            lambda v: not (isinstance(v, str) and v)))
    elif edit == "missing key":
        del damaged[data.draw(st.sampled_from(["format", "recipe_version", "base_model"]))]
    elif edit == "nan":
        damaged["hyperparameters"]["learning_rate"] = data.draw(NON_FINITE)
    else:
        damaged["hyperparameters"] = data.draw(WRONG_TYPES.filter(
            lambda v: not isinstance(v, dict)))
    with scratch() as work:
        folder = _copy(root / kind, work / kind)
        (folder / "manifest.json").write_text(json.dumps(damaged))
        error = one_line_error(lambda: load_tuned(model, folder), ModelLoadError)
        assert error is not None, edit


def test_the_shipped_adapter_folders_pass_their_checks():
    from workbench.adapter_files import check_lora_adapter, check_manifest, read_weight_delta
    from workbench.embedded import ADAPTERS_DIR

    check_lora_adapter(ADAPTERS_DIR / "smollm2-135m-safety")
    late = ADAPTERS_DIR / "smollm2-135m-safety-late"
    assert check_manifest(late)["format"] == "cna-workbench.safety-delta"
    d_mlp, tensors = read_weight_delta(late / "weight_delta.safetensors")
    assert d_mlp == 1536 and tensors


# -- gate-search studies ------------------------------------------------------------------


@pytest.fixture(scope="module")
def study_setup(tmp_path_factory, tiny_tokenizer):
    """A tiny model and the SQLite file of a finished one-trial gate search."""
    from workbench.evaluation.drift import HarmlessDrift
    from workbench.search import GateSearch
    from workbench.search_space import SearchSpace

    model = workbench.from_hf(make_tiny_hf("llama", max_position_embeddings=512),
                              tiny_tokenizer, name="tiny-llama")
    drift = HarmlessDrift(model, ["How do I bake a cake?", "Hi"], tokens=1)
    space = SearchSpace(contrasts=("jbb-pair",), min_fraction=0.001, max_fraction=0.02)
    options = dict(heldout_n=2, max_new_tokens=2, progress=False, drift=drift)
    path = tmp_path_factory.mktemp("study") / "gate.db"
    GateSearch(model, path, space, **options).run(1)
    return model, space, options, path.read_bytes()


@FAST
@given(data=st.data())
def test_damaged_study_file_fails_in_one_line(study_setup, data):
    from workbench.search import GateSearch

    model, space, options, original = study_setup
    damage = data.draw(byte_damage(len(original)))
    with scratch() as root:
        path = root / "gate.db"
        path.write_bytes(damage_bytes(original, damage))

        def reopen() -> None:
            GateSearch(model, path, space, **options).trials()

        one_line_error(reopen)
        assert set(files_under(root)) <= {"gate.db", "gate.db-journal"}


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9])
def test_a_cut_study_file_is_refused(study_setup, keep):
    from workbench.search import GateSearch

    model, space, options, original = study_setup
    with scratch() as root:
        path = root / "gate.db"
        path.write_bytes(original[:int(keep * len(original))])
        error = one_line_error(lambda: GateSearch(model, path, space, **options).trials())
        assert isinstance(error, FileFormatError), error
