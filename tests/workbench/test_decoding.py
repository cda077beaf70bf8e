"""Continuous batching gives plain ``generate``'s greedy tokens, with and without steering."""

from __future__ import annotations

import pytest
import torch

import workbench
from tests.helpers import TINY_ARCHITECTURES, hooks_left, make_tiny_hf, pass_shapes
from workbench import prefix as prefixes
from workbench.decoding import greedy_continuous, supports_continuous

PROMPTS = ["Hi", "How do I bake a cake?", "Write code to sort a list in Python, please.",
           "Explain how to change a tire on a bicycle", "Go", "Tell me a story about a cat",
           "What is two plus two?", "Sing a song of the sea and the sky"]
NEW_TOKENS = 10
GREEDY = {"max_new_tokens": NEW_TOKENS, "do_sample": False}


@pytest.fixture(params=sorted(TINY_ARCHITECTURES))
def any_model(request, tiny_tokenizer):
    return workbench.from_hf(make_tiny_hf(request.param), tiny_tokenizer,
                             name=f"tiny-{request.param}")


def prompt_ids(model) -> list[list[int]]:
    encoded = model.encode(PROMPTS, model.prompting())
    return [row[mask.bool()].tolist()
            for row, mask in zip(encoded["input_ids"], encoded["attention_mask"])]


def plain_generate(model, max_new_tokens=NEW_TOKENS) -> list[list[int]]:
    """transformers' generate on the whole left-padded batch, cut after each row's EOS."""
    encoded = model.encode(PROMPTS, model.prompting())
    encoded.pop("position_ids", None)
    with torch.no_grad():
        output = model.hf_model.generate(**encoded, max_new_tokens=max_new_tokens,
                                         do_sample=False, pad_token_id=0)
    rows = []
    for row in output[:, encoded["input_ids"].shape[1]:].tolist():
        cut = row.index(2) + 1 if 2 in row else len(row)  # eos_token_id of the tiny models
        rows.append(row[:cut])
    return rows


def test_the_greedy_tokens_of_generate_with_rows_leaving_and_joining(any_model):
    if not supports_continuous(any_model, GREEDY):
        pytest.skip(f"{any_model.name}: sliding-window caches are left to generate")
    expected = plain_generate(any_model)
    for batch_size in (1, 3, 8):  # 3: rows leave and the waiting prompts join mid-way
        assert greedy_continuous(any_model, prompt_ids(any_model), max_new_tokens=NEW_TOKENS,
                                 batch_size=batch_size) == expected, batch_size
    assert hooks_left(any_model.hf_model) == []


@pytest.mark.parametrize("positions", ["all", "prompt", "generated"])
def test_steering_hooks_act_as_under_generate(tiny_llama, positions):
    circuit = workbench.discover(tiny_llama, PROMPTS[:4], PROMPTS[4:], universal=None,
                                 top_k=20, progress=False)
    for multiplier in (0.0, 3.0):
        with workbench.steer(tiny_llama, circuit, multiplier=multiplier, positions=positions):
            expected = plain_generate(tiny_llama)
            got = greedy_continuous(tiny_llama, prompt_ids(tiny_llama),
                                    max_new_tokens=NEW_TOKENS, batch_size=3)
        assert got == expected
    assert hooks_left(tiny_llama.hf_model) == []


def test_generate_takes_the_continuous_path_and_reports_each_row(tiny_llama, monkeypatch):
    expected = workbench.generate(tiny_llama, PROMPTS, max_new_tokens=NEW_TOKENS,
                                  output_scores=False)  # a keyword left to generate()
    finished = []
    original = greedy_continuous

    def counting(*args, **kwargs):
        kwargs["on_finished"] = lambda n, inner=kwargs["on_finished"]: (finished.append(n),
                                                                         inner(n))
        return original(*args, **kwargs)

    monkeypatch.setattr(workbench.generation, "greedy_continuous", counting)
    assert workbench.generate(tiny_llama, PROMPTS, max_new_tokens=NEW_TOKENS,
                              batch_size=3) == expected
    assert sum(finished) == len(PROMPTS)


def test_what_is_left_to_generate(tiny_llama, tiny_tokenizer):
    assert supports_continuous(tiny_llama, GREEDY)
    assert not supports_continuous(tiny_llama, {**GREEDY, "do_sample": True})
    assert not supports_continuous(tiny_llama, {**GREEDY, "streamer": object()})
    gemma3 = workbench.from_hf(make_tiny_hf("gemma3_text"), tiny_tokenizer)
    assert not supports_continuous(gemma3, GREEDY)  # sliding-window layers
    simulated = workbench.from_hf(tiny_llama.hf_model, tiny_tokenizer, remote="local")
    assert not supports_continuous(simulated, GREEDY)
    tiny_llama.hf_model.generation_config.repetition_penalty = 1.3
    assert not supports_continuous(tiny_llama, GREEDY)


@pytest.mark.integration
def test_smollm2_completions_match_generate_at_x0_and_x1():
    model = workbench.load_model("smollm2-135m-safety-late")
    from workbench.evaluation import load_benchmark

    prompts = load_benchmark("jbb-harmful", split="heldout", n=25, seed=0).prompts
    circuit = workbench.discover(model, "qualitative-harmful", "qualitative-benign",
                                 progress=False)
    options = {"max_new_tokens": 32, "batch_size": 16}
    for multiplier in (0.0, 1.0):
        fast = workbench.generate(model, prompts, circuit=circuit, multiplier=multiplier,
                                  **options)
        # a generate() keyword the continuous path leaves to transformers' generate
        plain = workbench.generate(model, prompts, circuit=circuit, multiplier=multiplier,
                                   output_scores=False, **options)
        same = sum(a == b for a, b in zip(fast, plain))
        assert same >= len(prompts) - 1, (multiplier, same)  # one near-tie may flip


def test_a_shared_prompt_prefix_is_prefilled_once(tiny_llama, monkeypatch):
    ids = prompt_ids(tiny_llama)
    prefix = prefixes.shared_prefix(ids)
    assert len(prefix) >= prefixes.MIN_SHARED_PREFIX  # the chat template's opening
    shapes = pass_shapes(tiny_llama, lambda: greedy_continuous(
        tiny_llama, ids, max_new_tokens=NEW_TOKENS, batch_size=3))
    assert shapes[0] == (1, len(prefix))
    assert shapes[1] == (3, max(len(row) for row in ids[:3]) - len(prefix))
    shared = greedy_continuous(tiny_llama, ids, max_new_tokens=NEW_TOKENS, batch_size=3)
    monkeypatch.setattr(prefixes, "MIN_SHARED_PREFIX", 10**6)  # never share
    shapes = pass_shapes(tiny_llama, lambda: greedy_continuous(
        tiny_llama, ids, max_new_tokens=NEW_TOKENS, batch_size=3))
    assert shapes[0] == (3, max(len(row) for row in ids[:3]))
    assert greedy_continuous(tiny_llama, ids, max_new_tokens=NEW_TOKENS,
                             batch_size=3) == shared == plain_generate(tiny_llama)


def test_prompts_without_a_shared_prefix_are_prefilled_whole(tiny_llama):
    ids = [[5, 6, 7], [8, 9], [5, 6, 7, 8, 9]]
    assert prefixes.shared_prefix(ids) == []
    shapes = pass_shapes(tiny_llama, lambda: greedy_continuous(
        tiny_llama, ids, max_new_tokens=3, batch_size=8))
    assert shapes[0] == (3, 5)
