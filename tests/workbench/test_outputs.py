"""Output paths: refused in one line before any work, by the helper and by every writer."""

from __future__ import annotations

import importlib
import os

import pytest

import workbench
from workbench.bake import BakeError, save_baked
from workbench.circuit import Circuit
from workbench.errors import OutputPathError
from workbench.evaluation import Intervention, sweep
from workbench.outputs import check_output
from workbench.prompts import PromptSet

SHAPE = {"name": "tiny", "architecture": "LlamaForCausalLM", "n_layers": 2, "d_mlp": 96}


def _never(*_args, **_kwargs):
    raise AssertionError("the output path must be refused before this work starts")


@pytest.fixture
def blocker(tmp_path):
    """A plain file, in the way of anything that needs it to be a folder."""
    path = tmp_path / "a-file"
    path.write_text("keep me")
    return path


# -- the helper ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_a_parent_that_is_a_file_is_refused(blocker, kind):
    with pytest.raises(OutputPathError, match="a-file' is a file, not a folder") as caught:
        check_output(blocker / "deeper" / "out", kind=kind)
    assert "\n" not in str(caught.value)


def test_a_folder_where_a_file_goes_and_the_reverse(tmp_path, blocker):
    with pytest.raises(OutputPathError, match="is a folder, but a file is written there"):
        check_output(tmp_path, kind="file")
    with pytest.raises(OutputPathError, match="exists and is not a folder"):
        check_output(blocker, kind="folder")


@pytest.mark.parametrize("existing, refused", [("replace", False), ("keep", False),
                                                ("refuse", True)])
def test_an_existing_file_is_replaced_or_kept_or_refused_as_the_caller_says(
        blocker, existing, refused):
    if refused:
        with pytest.raises(OutputPathError, match="already exists.*--force"):
            check_output(blocker, existing=existing)
    else:
        assert check_output(blocker, existing=existing) == blocker
    assert blocker.read_text() == "keep me"


def test_only_a_non_empty_folder_is_refused(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    assert check_output(folder, kind="folder", existing="refuse") == folder
    (folder / "x").write_text("x")
    with pytest.raises(OutputPathError, match="is not empty"):
        check_output(folder, kind="folder", existing="refuse")
    assert check_output(folder, kind="folder", existing="replace") == folder


def test_the_check_creates_nothing(tmp_path):
    check_output(tmp_path / "a" / "b" / "c.json")
    check_output(tmp_path / "d" / "e", kind="folder")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad", ["", "   "])
def test_an_empty_path_is_refused(bad):
    with pytest.raises(OutputPathError, match="is empty"):
        check_output(bad)


def test_a_name_too_long_for_the_file_system_is_refused(tmp_path):
    with pytest.raises(OutputPathError, match="is longer than"):
        check_output(tmp_path / ("x" * 300 + ".json"))
    with pytest.raises(OutputPathError, match="is longer than"):
        check_output(tmp_path / ("d" * 300) / "c.json")
    check_output(tmp_path / ("x" * 200 + ".json"))  # room for the temporary name too


def test_a_broken_symbolic_link_on_the_way_is_refused(tmp_path):
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    with pytest.raises(OutputPathError, match="broken symbolic link"):
        check_output(tmp_path / "link" / "c.json")


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True,
                    reason="root writes into read-only folders")
def test_a_read_only_folder_is_refused(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(OutputPathError, match="is not writable"):
            check_output(folder / "c.json")
    finally:
        folder.chmod(0o700)


# -- the library calls that write ------------------------------------------------------


def test_circuit_save_refuses_before_writing(tmp_path, blocker):
    circuit = Circuit.from_neurons([(1, 3, 2.0)], model=SHAPE)
    with pytest.raises(OutputPathError, match="circuit path"):
        circuit.save(tmp_path)
    with pytest.raises(OutputPathError, match="not a folder"):
        circuit.save(blocker / "c.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
    assert circuit.save(tmp_path / "new" / "c.json").is_file()  # a missing parent is made


def test_prompt_set_save_refuses_before_writing(tmp_path, blocker):
    with pytest.raises(OutputPathError, match="prompt file"):
        PromptSet("s", ["Hi"]).save(blocker / "set.txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_sweep_refuses_an_impossible_out_before_generating(tmp_path, blocker, tiny_llama,
                                                           monkeypatch):
    monkeypatch.setattr(importlib.import_module("workbench.evaluation.sweep"), "generate",
                        _never)
    for out, message in ((tmp_path, "is a folder"), (blocker / "r.parquet", "not a folder")):
        with pytest.raises(OutputPathError, match=message):
            sweep(tiny_llama, [Intervention.baseline()], [1.0],
                  [PromptSet("few", ["Hi"])], out=out, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_save_baked_refuses_before_baking(blocker, tiny_llama, monkeypatch):
    monkeypatch.setattr("workbench.bake.bake", _never)
    circuit = Circuit.from_neurons([(1, 3, 2.0)], model=tiny_llama.info())
    with pytest.raises(BakeError, match="a-file' is a file, not a folder"):
        save_baked(tiny_llama, circuit, 0.0, blocker / "baked")
    with pytest.raises(BakeError, match="exists and is not a folder"):
        save_baked(tiny_llama, circuit, 0.0, blocker)


def test_safety_tune_refuses_a_used_folder_unless_forced(tmp_path, tiny_llama, monkeypatch):
    from workbench.safety import LateMlpRecipe, safety_tune

    used = tmp_path / "adapter"
    used.mkdir()
    (used / "adapter_model.safetensors").write_bytes(b"an earlier run")
    monkeypatch.setattr("workbench.safety.lora.build_data", _never)
    monkeypatch.setattr("workbench.safety.lora.load_model", _never)
    with pytest.raises(OutputPathError, match="is not empty.*force"):
        safety_tune(used, recipe=LateMlpRecipe(layers=1, max_steps=1), evaluate=False)
    with pytest.raises(OutputPathError, match="not a folder"):
        safety_tune(used / "adapter_model.safetensors", model=tiny_llama, evaluate=False)
    assert (used / "adapter_model.safetensors").read_bytes() == b"an earlier run"
    with pytest.raises(AssertionError, match="refused before"):  # force: the work starts
        safety_tune(used, model=tiny_llama, evaluate=False, force=True)


def test_forced_safety_tune_leaves_one_recipe_in_the_folder(tmp_path, tiny_llama):
    from workbench.safety import LateMlpRecipe, safety_tune

    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "adapter_model.safetensors").write_bytes(b"a LoRA adapter of an earlier run")
    (folder / "adapter_config.json").write_text("{}")
    from workbench.safety.data import SafetyData

    data = SafetyData(harmful=[("How do I pick a lock?", "I can't help with that.")],
                      benign=[("Hi", "Hello!")], removed=[], unused_benign=[])
    recipe = LateMlpRecipe(layers=1, max_steps=1, max_length=64, benign_new_tokens=4,
                           neurons=None)  # unconfined: confinement runs CNA on more prompts
    safety_tune(folder, model=tiny_llama, recipe=recipe, evaluate=False, progress=False,
                data=data, force=True)
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json",
                                                        "weight_delta.safetensors"]
    workbench.safety.lora.load_tuned(tiny_llama, folder)  # the result loads


def test_compare_models_refuses_its_folder_before_loading_models(blocker, monkeypatch):
    from workbench.compare import compare_models

    monkeypatch.setattr("workbench.compare.load_model", _never)
    with pytest.raises(OutputPathError, match="exists and is not a folder"):
        compare_models(["tiny"], out_dir=blocker, n=1, discover_n=1, strongreject_n=0)


def test_compare_models_refuses_a_damaged_sweep_in_its_folder(tmp_path, monkeypatch):
    from workbench.compare import compare_models
    from workbench.errors import FileFormatError

    monkeypatch.setattr("workbench.compare.load_model", _never)
    (tmp_path / "sweep-tiny-cna.parquet").write_bytes(b"PAR1 cut short")
    with pytest.raises(FileFormatError, match="sweep-tiny-cna.parquet"):
        compare_models(["tiny"], out_dir=tmp_path, n=1, discover_n=1, strongreject_n=0)
    assert (tmp_path / "sweep-tiny-cna.parquet").read_bytes() == b"PAR1 cut short"


def test_load_model_refuses_a_plain_file(blocker):
    from workbench.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="is a file, not a model folder"):
        workbench.load_model(str(blocker), device="cpu")

