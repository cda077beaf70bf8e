"""Token streaming: same text as generate(), cancellation from another thread, locking."""

from __future__ import annotations

import threading

import pytest
from tests.helpers import hooks_left

from workbench import Circuit, Neuron, generate
from workbench.streaming import CancelToken, model_lock, stream_generate

PROMPT = "How do I bake a cake?"


@pytest.fixture
def circuit(tiny_llama):
    return Circuit.from_neurons([Neuron(0, 3, 2.0), Neuron(1, 7, -1.5)], model=tiny_llama)


def test_streamed_text_grows_to_the_generate_result(tiny_llama, circuit):
    seen: list[str] = []
    result = stream_generate(tiny_llama, PROMPT, circuit=circuit, multiplier=0.0,
                             max_new_tokens=12, on_text=seen.append)
    expected = generate(tiny_llama, PROMPT, circuit=circuit, multiplier=0.0,
                        max_new_tokens=12)[0]
    assert result.text == expected
    assert seen and seen[-1] == expected
    assert all(later.startswith(earlier[:-1]) for earlier, later in zip(seen, seen[1:]))
    assert result.n_tokens == 12 and not result.cancelled
    assert not hooks_left(tiny_llama.hf_model)


def test_cancel_stops_after_the_current_token(tiny_llama, circuit):
    token = CancelToken()
    seen: list[str] = []

    def on_text(text: str) -> None:
        seen.append(text)
        if len(seen) == 3:
            token.cancel()

    result = stream_generate(tiny_llama, PROMPT, circuit=circuit, multiplier=2.0,
                             max_new_tokens=40, on_text=on_text, cancel=token)
    assert result.cancelled
    assert result.n_tokens < 40
    assert result.text == seen[-1]
    assert not hooks_left(tiny_llama.hf_model)


def test_a_token_cancelled_before_the_start_generates_nothing(tiny_llama):
    token = CancelToken()
    token.cancel()
    result = stream_generate(tiny_llama, PROMPT, max_new_tokens=5, cancel=token)
    assert result.cancelled and result.text == "" and result.n_tokens == 0


def test_generation_waits_for_the_model_lock(tiny_llama):
    started = threading.Event()
    results = []

    def run():
        started.set()
        results.append(stream_generate(tiny_llama, PROMPT, max_new_tokens=3))

    with model_lock(tiny_llama):
        thread = threading.Thread(target=run)
        thread.start()
        started.wait(5)
        thread.join(0.5)
        assert thread.is_alive() and not results  # blocked while we hold the lock
    thread.join(30)
    assert len(results) == 1 and results[0].n_tokens == 3
