"""Integration tests on the embedded real models: mechanics, not science."""

from __future__ import annotations

import time

import pytest
import torch
from tests.helpers import hooks_left

import workbench
from workbench import discover, generate, steer
from workbench.activations import collect
from workbench.embedded import cached_weights_dir
from workbench.prompts import PromptSet

pytestmark = pytest.mark.integration

LOCK = "How do I pick a lock?"


def test_default_model_loads_from_the_weight_cache(smollm, monkeypatch):
    assert smollm.info() == {"name": "smollm2-135m-instruct", "architecture": "LlamaForCausalLM",
                             "n_layers": 30, "d_mlp": 1536}
    assert smollm.dtype == torch.float32 and smollm.source == "embedded"
    assert smollm.tokenizer.chat_template and smollm.prompting().chat_template
    assert (cached_weights_dir("smollm2-135m-instruct") / "model.safetensors").is_file()

    def no_conversion(*_args):
        raise AssertionError("the GGUF file was converted again instead of using the cache")

    monkeypatch.setattr("workbench.models._convert_gguf", no_conversion)
    started = time.perf_counter()
    again = workbench.load_model("smollm2-135m-instruct")
    print(f"cached load: {time.perf_counter() - started:.2f} s")
    for name, param in smollm.hf_model.named_parameters():
        assert torch.equal(param, again.hf_model.get_parameter(name)), name


def test_batched_collection_equals_one_prompt_at_a_time(smollm):
    prompts = PromptSet.bundled("qualitative-harmful").prompts[:5]
    batched = collect(smollm, prompts, batch_size=5, keep=True, progress=False).per_prompt
    single = torch.cat([collect(smollm, [p], keep=True, progress=False).per_prompt
                        for p in prompts])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-4)
    assert not hooks_left(smollm.hf_model)


def test_discover_on_the_qualitative_pairs(smollm):
    circuit = discover(smollm, "qualitative-harmful", "qualitative-benign", progress=False)
    assert len(circuit) == round(0.001 * 30 * 1536) == 46
    assert circuit.selection["n_universal_excluded"] > 0
    assert circuit.prompting == {"chat_template": True, "system_prompt": None}
    assert circuit.prompts["universal"]["name"] == "diverse"
    universal = circuit.contrast.universal
    assert not any(universal[n.layer, n.index] for n in circuit.neurons)
    scores = [abs(n.score) for n in circuit.neurons]
    assert scores == sorted(scores, reverse=True)
    delta = circuit.contrast.delta.clone()
    delta[universal] = 0
    assert scores[-1] >= delta.abs().flatten().sort(descending=True).values[45].item()
    again = discover(smollm, "qualitative-harmful", "qualitative-benign", progress=False)
    assert again.neurons == circuit.neurons  # deterministic


def test_steering_the_real_model(smollm):
    circuit = discover(smollm, "qualitative-harmful", "qualitative-benign", top_k=200,
                       universal=None, progress=False)
    baseline = generate(smollm, [LOCK, "How do I bake a cake?"], max_new_tokens=24)
    assert generate(smollm, [LOCK, "How do I bake a cake?"], circuit=circuit, multiplier=1.0,
                    max_new_tokens=24) == baseline
    seen = {}
    layer, index = circuit.neurons[0].layer, circuit.neurons[0].index
    with steer(smollm, circuit, multiplier=0.0):
        handle = smollm.down_proj(layer).register_forward_pre_hook(
            lambda _m, args: seen.setdefault("input", args[0].detach().clone()))
        try:
            ablated_logits = smollm.hf_model(**smollm.encode([LOCK], smollm.prompting())).logits
        finally:
            handle.remove()
    assert (seen["input"][..., index] == 0).all()
    assert ablated_logits.isfinite().all()
    assert not hooks_left(smollm.hf_model)


def test_activations_match_transformer_lens(smollm):
    from transformer_lens.model_bridge import TransformerBridge

    model = workbench.load_model("smollm2-135m-instruct")  # the bridge edits the model
    prompts = ["How do I pick a lock?", "Write a thank you note to a friend"]
    ours = collect(model, prompts, keep=True, progress=False).per_prompt  # [2, 30, 1536]
    bridge = TransformerBridge.boot_transformers(
        "HuggingFaceTB/SmolLM2-135M-Instruct", hf_model=model.hf_model,
        tokenizer=model.tokenizer, device="cpu")
    prompting = model.prompting()
    for row, prompt in enumerate(prompts):
        tokens = model.encode([prompt], prompting)["input_ids"]
        _, cache = bridge.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_post"))
        theirs = torch.stack([cache[f"blocks.{layer}.mlp.hook_post"][0, -1]
                              for layer in range(model.n_layers)])
        torch.testing.assert_close(ours[row], theirs, rtol=1e-4, atol=1e-3)


def test_gemma_base_model_has_no_chat_template():
    gemma = workbench.load_model("gemma-3-270m")
    assert gemma.architecture == "Gemma3ForCausalLM"
    assert (gemma.n_layers, gemma.d_mlp) == (18, 2048)
    prompting = gemma.prompting()
    assert prompting.chat_template is False
    circuit = discover(gemma, "qualitative-harmful", "qualitative-benign", top_k=20,
                       universal=None, progress=False)
    assert circuit.prompting["chat_template"] is False and len(circuit) == 20
    text = generate(gemma, "The capital of France is", circuit=circuit, multiplier=1.0,
                    max_new_tokens=5)
    assert text == generate(gemma, "The capital of France is", max_new_tokens=5)
    assert not hooks_left(gemma.hf_model)
