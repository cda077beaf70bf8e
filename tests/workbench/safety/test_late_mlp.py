"""The late-MLP recipe, reduced: a few full fine-tuning steps of a tiny model's last MLP."""

from __future__ import annotations

import json

import pytest
import torch
from tests.helpers import hooks_left

from workbench.errors import WorkbenchError
from workbench.safety import safety_tune
from workbench.safety.late_mlp import (DELTA_FILE, LateMlpRecipe, apply_delta, load_delta,
                                       neuron_norms, save_delta)
from workbench.safety.lora import load_tuned

#: a few steps on a tiny model, unconfined unless a test says otherwise (the shipped
#: recipe's confinement runs CNA on the training prompts, beyond a tiny model's context)
REDUCED = dict(n_harmful=4, n_benign=4, batch_size=4, epochs=2, max_steps=3, max_length=96,
               benign_new_tokens=4, learning_rate=1e-2, neurons=None)


def changed_parameters(before: dict[str, torch.Tensor], model) -> set[str]:
    return {name for name, value in model.hf_model.named_parameters()
            if not torch.equal(value, before[name])}


@pytest.mark.parametrize("matrices", [("gate", "up", "down"), ("down",)])
def test_only_the_allowed_weights_change(tiny_llama, tmp_path, matrices):
    before = {name: p.detach().clone() for name, p in tiny_llama.hf_model.named_parameters()}
    recipe = LateMlpRecipe(layers=1, matrices=matrices, **REDUCED)
    manifest = safety_tune(tmp_path, model=tiny_llama, recipe=recipe, evaluate=False,
                           progress=False)
    attributes = {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"}
    allowed = {f"{tiny_llama.layers_path}.1.mlp.{attributes[m]}.weight" for m in matrices}
    tuned = load_tuned(tiny_llama, tmp_path)
    assert changed_parameters(before, tuned) == allowed
    assert changed_parameters(before, tiny_llama) == set()  # the caller's model is unchanged
    assert set(load_delta(tmp_path)) == allowed
    assert all(t.dtype == torch.float16 for t in load_delta(tmp_path).values())
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk == manifest and manifest["recipe"] == "late-mlp"
    assert manifest["training"]["steps"] == 3
    assert manifest["hyperparameters"]["matrices"] == list(matrices)
    assert manifest["weight_change"]["n_tuned_weights"] == sum(
        tuned.hf_model.get_parameter(name).numel() for name in allowed)
    assert not hooks_left(tiny_llama.hf_model) and not hooks_left(tuned.hf_model)


def test_the_recipe_is_deterministic(tiny_llama, tmp_path):
    recipe = LateMlpRecipe(layers=2, **REDUCED)
    for run in ("a", "b"):
        safety_tune(tmp_path / run, model=tiny_llama, recipe=recipe, evaluate=False,
                    progress=False)
    first, second = load_delta(tmp_path / "a"), load_delta(tmp_path / "b")
    assert set(first) == set(second)
    for name, delta in first.items():  # bit-identical tensors (the header's key order may vary)
        assert torch.equal(delta, second[name]), name


def test_group_sparsity_returns_weakly_changed_neurons_to_their_weights(tiny_llama, tmp_path):
    """The proximal step leaves many neurons exactly untouched; without it none are."""
    unchanged = []
    for strength in (0.0, 10.5):
        recipe = LateMlpRecipe(layers=1, group_sparsity=strength,
                               **{**REDUCED, "max_steps": 6})
        out = tmp_path / str(strength)
        safety_tune(out, model=tiny_llama, recipe=recipe, evaluate=False, progress=False)
        norms = neuron_norms(load_delta(out), tiny_llama.layers_path, [1]).flatten()  # [d_mlp]
        unchanged.append(int((norms == 0).sum()))
    print("neurons left exactly unchanged without / with the penalty:", unchanged)
    assert unchanged[0] == 0
    assert 0 < unchanged[1] < tiny_llama.d_mlp


def test_a_confined_recipe_changes_only_the_neurons_cna_ranks_highest(tiny_llama, tmp_path):
    tiny_llama.hf_model.config.max_position_embeddings = 512  # CNA reads whole prompts
    recipe = LateMlpRecipe(layers=1, **{**REDUCED, "neurons": 3})
    manifest = safety_tune(tmp_path, model=tiny_llama, recipe=recipe, evaluate=False,
                           progress=False)
    confined = {tuple(neuron) for neuron in manifest["confined_to"]}
    assert len(confined) == 3 and {layer for layer, _ in confined} == {1}
    norms = neuron_norms(load_delta(tmp_path), tiny_llama.layers_path, [1]).flatten()  # [d_mlp]
    assert {(1, int(i)) for i in norms.nonzero().flatten()} == confined


def test_the_delta_file_holds_only_changed_neurons_and_loads_back_exactly(tmp_path):
    from safetensors.torch import load_file

    generator = torch.Generator().manual_seed(0)
    d_model, d_mlp = 8, 12
    changed = torch.tensor([1, 5, 6])
    deltas = {}
    for attribute in ("gate_proj", "up_proj", "down_proj"):
        shape = (d_model, d_mlp) if attribute == "down_proj" else (d_mlp, d_model)
        delta = torch.zeros(shape)
        values = torch.randn(shape, generator=generator)
        if attribute == "down_proj":
            delta[:, changed] = values[:, changed]
        else:
            delta[changed] = values[changed]
        deltas[f"model.layers.3.mlp.{attribute}.weight"] = delta
    deltas["model.layers.3.mlp.up_proj.weight"][9, 0] = 0.5  # changed in one matrix only
    save_delta(deltas, tmp_path, {})
    stored = load_file(tmp_path / DELTA_FILE)
    assert stored["model.layers.3.mlp.neurons"].tolist() == [1, 5, 6, 9]
    assert stored["model.layers.3.mlp.down_proj.weight"].shape == (d_model, 4)
    assert stored["model.layers.3.mlp.gate_proj.weight"].shape == (4, d_model)
    loaded = load_delta(tmp_path)
    assert set(loaded) == set(deltas)
    for name, delta in deltas.items():
        assert torch.equal(loaded[name], delta.to(torch.float16)), name


def test_bad_recipes_and_foreign_deltas_are_refused(tiny_llama):
    with pytest.raises(WorkbenchError, match="matrices"):
        LateMlpRecipe(matrices=("gate", "attn"))
    with pytest.raises(WorkbenchError, match="layers"):
        LateMlpRecipe(layers=0)
    with pytest.raises(WorkbenchError, match="tunes 3 layers"):
        LateMlpRecipe(layers=3).tuned_layers(tiny_llama.n_layers)
    with pytest.raises(WorkbenchError, match="another model"):
        apply_delta(tiny_llama.hf_model, {"model.layers.9.mlp.up_proj.weight": torch.zeros(1)})
    name = f"{tiny_llama.layers_path}.0.mlp.up_proj.weight"
    with pytest.raises(WorkbenchError, match="delta of"):
        apply_delta(tiny_llama.hf_model, {name: torch.zeros(3, 3)})
