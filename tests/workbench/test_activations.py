"""Activation collection: hand-computed values, batching, streaming, out-of-memory, hooks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from tests.helpers import PROMPTS, hooks_left

from workbench import prefix as prefixes
from workbench.activations import collect
from workbench.errors import PromptSetError, PromptTooLongError
from workbench.prompts import Prompting


def _gelu_new(h: torch.Tensor) -> torch.Tensor:
    return 0.5 * h * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (h + 0.044715 * h.pow(3))))


def mlp_hidden_by_hand(model_type: str, mlp: torch.nn.Module, x: torch.Tensor,
                       config) -> torch.Tensor:
    """The down-projection input computed from the MLP's weights. x: [pos, d_model]."""
    if model_type == "gpt2":
        return _gelu_new(x @ mlp.c_fc.weight + mlp.c_fc.bias)  # Conv1D weight is [in, out]
    if model_type == "gpt_neox":
        h = x @ mlp.dense_h_to_4h.weight.T + mlp.dense_h_to_4h.bias
        return F.gelu(h)
    if model_type == "phi3":
        gate, up = (x @ mlp.gate_up_proj.weight.T).chunk(2, dim=-1)
        return up * F.silu(gate)
    act_name = getattr(config, "hidden_activation", None) or config.hidden_act
    act = {"silu": F.silu, "gelu_pytorch_tanh": lambda h: F.gelu(h, approximate="tanh")}[act_name]
    return act(x @ mlp.gate_proj.weight.T) * (x @ mlp.up_proj.weight.T)


def expected_last_token(model, prompts: list[str], prompting: Prompting) -> torch.Tensor:
    """[n, n_layers, d_mlp] computed one prompt at a time, by hand from each MLP's input."""
    model_type = model.config.model_type
    rows = []
    for prompt in prompts:
        captured = {}
        handles = [
            block.mlp.register_forward_pre_hook(
                lambda _m, args, layer=layer: captured.__setitem__(layer, args[0][0, -1]))
            for layer, block in enumerate(model.layers)
        ]
        try:
            with torch.no_grad():
                model.hf_model(**model.encode([prompt], prompting))
        finally:
            for handle in handles:
                handle.remove()
        rows.append(torch.stack([
            mlp_hidden_by_hand(model_type, block.mlp, captured[layer][None], model.text_config)[0]
            for layer, block in enumerate(model.layers)]))
    return torch.stack(rows)


@pytest.mark.parametrize("chat_template", [False, True])
def test_batched_collection_matches_hand_computation(tiny_model, chat_template, monkeypatch):
    # whole prompts, as the hand computation reads them; the shared opening of the chat
    # template is compared with this path in test_prefix.py (float32 rounding apart)
    monkeypatch.setattr(prefixes, "MIN_SHARED_PREFIX", 10**6)
    prompting = Prompting(chat_template=chat_template)
    stats = collect(tiny_model, PROMPTS, prompting=prompting, batch_size=3, keep=True,
                    progress=False)
    expected = expected_last_token(tiny_model, PROMPTS, prompting)
    assert stats.per_prompt.shape == (len(PROMPTS), tiny_model.n_layers, tiny_model.d_mlp)
    assert expected.abs().max() > 1e-3  # the comparison is not between zeros
    torch.testing.assert_close(stats.per_prompt, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(stats.mean, expected.double().mean(0), rtol=1e-4, atol=1e-6)
    assert not hooks_left(tiny_model.hf_model)


def test_statistics_are_float64_and_fixed_size(tiny_llama):
    stats = collect(tiny_llama, PROMPTS * 3, batch_size=2, progress=False)
    assert stats.n == 12
    assert stats.sum.dtype == torch.float64 and stats.sum.shape == (2, tiny_llama.d_mlp)
    assert stats.per_prompt is None  # nothing per prompt is retained unless asked


def test_collection_of_a_bfloat16_model_accumulates_in_float64(tiny_tokenizer):
    from tests.helpers import make_tiny_hf

    import workbench

    model = workbench.from_hf(make_tiny_hf("llama").to(torch.bfloat16), tiny_tokenizer)
    stats = collect(model, PROMPTS, batch_size=2, keep=True, progress=False)
    assert stats.sum.dtype == torch.float64
    torch.testing.assert_close(stats.mean, stats.per_prompt.double().mean(0))


def test_output_site_has_model_width(tiny_model):
    stats = collect(tiny_model, PROMPTS[:2], site="output", progress=False)
    assert stats.mean.shape == (tiny_model.n_layers, tiny_model.d_model)


def test_batch_is_halved_on_out_of_memory(tiny_llama, monkeypatch):
    import workbench.activations as activations

    reference = collect(tiny_llama, PROMPTS, batch_size=4, keep=True, progress=False)
    real = activations._last_token_batch
    sizes = []

    def flaky(model, prompts, *args):
        sizes.append(len(prompts))
        if len(prompts) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model, prompts, *args)

    monkeypatch.setattr(activations, "_last_token_batch", flaky)
    with pytest.warns(UserWarning, match="out of memory"):
        stats = collect(tiny_llama, PROMPTS, batch_size=4, keep=True, progress=False)
    assert sizes[:3] == [4, 2, 1]
    torch.testing.assert_close(stats.per_prompt, reference.per_prompt, rtol=1e-4, atol=1e-5)


def test_other_errors_are_not_swallowed(tiny_llama, monkeypatch):
    import workbench.activations as activations

    def broken(*_args):
        raise RuntimeError("something else")

    monkeypatch.setattr(activations, "_last_token_batch", broken)
    with pytest.raises(RuntimeError, match="something else"):
        collect(tiny_llama, PROMPTS, progress=False)


def test_empty_and_too_long_prompts_are_refused(tiny_llama):
    with pytest.raises(PromptSetError):
        collect(tiny_llama, [], progress=False)
    with pytest.raises(PromptTooLongError, match="context window of 128 tokens"):
        collect(tiny_llama, ["fine", "word " * 400], progress=False)


def test_on_batch_reports_progress(tiny_llama):
    calls = []
    collect(tiny_llama, PROMPTS, batch_size=3, progress=False,
            on_batch=lambda done, total: calls.append((done, total)))
    assert calls == [(3, 4), (4, 4)]


def test_discover_reports_each_stage(tiny_llama, monkeypatch):
    from workbench import discover

    monkeypatch.setenv("CNA_STATS_CACHE", "0")  # the universal pass runs, not a cached one
    calls = []
    discover(tiny_llama, PROMPTS[:2], PROMPTS[2:], universal=PROMPTS, top_k=3, batch_size=2,
             progress=False, on_progress=lambda *args: calls.append(args))
    assert calls == [("positive", 2, 2), ("negative", 2, 2), ("universal", 2, 4),
                     ("universal", 4, 4)]


def test_collection_waits_for_a_run_holding_the_model_lock(tiny_llama):
    import threading

    from workbench.locks import model_lock

    done = threading.Event()
    with model_lock(tiny_llama):  # e.g. a widget's background generation
        worker = threading.Thread(
            target=lambda: (collect(tiny_llama, PROMPTS, progress=False), done.set()))
        worker.start()
        assert not done.wait(1.0)  # blocked: nnsight must not trace during another run
    worker.join(60)
    assert done.is_set()
