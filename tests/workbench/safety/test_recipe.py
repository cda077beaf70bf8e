"""The safety-tuning recipe, reduced: a few LoRA steps on a tiny model and a tiny subset."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from tests.helpers import hooks_left

from workbench.evaluation.benchmarks import load_benchmark
from workbench.evaluation.refusal import is_refusal
from workbench.prompts import bundled_dir
from workbench.safety import Recipe, build_data, jaccard_3gram, remove_overlaps, safety_tune
from workbench.safety.data import held_out_prompts, safety_file
from workbench.safety.lora import encode_pair


def test_jaccard_and_overlap_removal():
    assert jaccard_3gram("a b c d", "a b c d") == 1.0
    assert jaccard_3gram("a b c d", "b c d e") == pytest.approx(1 / 3)
    assert jaccard_3gram("a b c", "x y z") == 0.0
    kept, removed = remove_overlaps(["Write a poem about cats", "How do I bake bread?"],
                                    ["write a poem about cats!"], threshold=0.5)
    assert kept == ["How do I bake bread?"] and removed == ["Write a poem about cats"]


def test_bundled_recipe_files_are_usable():
    refusals = safety_file("refusals.txt").prompts
    benign = safety_file("benign-instructions.txt").prompts
    borderline = safety_file("benign-borderline.txt").prompts
    harmful = safety_file("harmful-requests.txt").prompts
    assert len(set(refusals)) >= 20 and all(is_refusal(r) for r in refusals)
    assert len(set(benign)) >= 500 and len(set(borderline)) >= 400
    assert not set(benign) & set(borderline)
    benign = benign + borderline
    jbb_benign = set(load_benchmark("jbb-benign").prompts)
    assert not jbb_benign & set(benign)
    assert len(harmful) >= 100


def test_training_data_is_disjoint_from_held_out_benchmarks():
    data = build_data(lambda prompts: ["Sure."] * len(prompts), seed=0)
    held_out = held_out_prompts()
    train = [p for p, _ in data.harmful + data.benign]
    assert not set(train) & set(held_out)
    _, still_overlapping = remove_overlaps(train, held_out, threshold=0.5)
    assert still_overlapping == []
    assert len(data.removed) > 0  # AdvBench shares behaviours with JBB / StrongREJECT
    refusals = set(safety_file("refusals.txt").prompts)
    assert all(response in refusals for _, response in data.harmful)
    assert data.sha256() == build_data(lambda ps: ["Sure."] * len(ps), seed=0).sha256()


def test_labels_score_only_the_response(tiny_llama):
    prompting = tiny_llama.prompting()
    ids, labels = encode_pair(tiny_llama, "How do I bake a cake?", "Mix and bake.", prompting,
                              max_length=512)
    n_prompt = labels.count(-100)
    assert n_prompt > 0 and len(ids) == len(labels)
    assert labels[n_prompt:] == ids[n_prompt:]
    assert ids[-1] == tiny_llama.tokenizer.eos_token_id


def test_reduced_recipe_writes_adapter_and_manifest(tiny_llama, tmp_path):
    before = {name: p.detach().clone() for name, p in tiny_llama.hf_model.named_parameters()}
    recipe = Recipe(n_harmful=4, n_benign=4, batch_size=4, epochs=2, max_steps=3, max_length=96,
                    benign_new_tokens=4, learning_rate=1e-2)
    manifest = safety_tune(tmp_path / "adapter", model=tiny_llama, recipe=recipe,
                           evaluate=False, progress=False)
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    on_disk = json.loads((tmp_path / "adapter" / "manifest.json").read_text())
    assert on_disk == manifest
    assert manifest["hyperparameters"]["max_steps"] == 3
    assert manifest["training"]["steps"] == 3
    assert manifest["data"]["n_harmful"] == 4 and manifest["data"]["n_benign"] == 4
    for relative, digest in manifest["data"]["files_sha256"].items():
        assert hashlib.sha256((bundled_dir() / relative).read_bytes()).hexdigest() == digest
    # The caller's model is back to its original weights and modules.
    after = dict(tiny_llama.hf_model.named_parameters())
    assert set(after) == set(before)
    for name, value in before.items():
        assert torch.equal(after[name], value), name
    assert not any("lora" in name for name, _ in tiny_llama.hf_model.named_modules())
    assert not hooks_left(tiny_llama.hf_model)


def test_adapter_is_saved_in_half_precision_and_merges_into_a_copy(tiny_llama, tmp_path):
    from safetensors.torch import load_file

    from workbench.safety.lora import load_tuned

    recipe = Recipe(n_harmful=2, n_benign=2, batch_size=4, max_steps=2, max_length=128,
                    benign_new_tokens=2, learning_rate=1e-2)
    safety_tune(tmp_path, model=tiny_llama, recipe=recipe, evaluate=False, progress=False)
    weights = load_file(tmp_path / "adapter_model.safetensors")
    assert weights and all(t.dtype == torch.float16 for t in weights.values())
    assert any(t.abs().sum() > 0 for name, t in weights.items() if "lora_B" in name)
    original = tiny_llama.down_proj(1).weight.detach().clone()
    tuned = load_tuned(tiny_llama, tmp_path)
    assert not torch.equal(tuned.down_proj(1).weight, original)  # the LoRA delta is merged
    assert torch.equal(tiny_llama.down_proj(1).weight, original)  # the caller's model is not
    assert not any("lora" in name for name, _ in tuned.hf_model.named_modules())
