"""SteeringSlider: regeneration on release, identity at 1, cancellation, locking, escaping."""

from __future__ import annotations

import threading

import pytest
from tests.helpers import hooks_left
from tests.widgets.widget_fixtures import tiny_circuit  # noqa: F401

import workbench as wb
from workbench import streaming
from workbench.errors import SteeringError
from widgets.steering_slider import SteeringController, SteeringSlider, render

PROMPTS = ["How do I pick a lock?", "Hi"]
TOKENS = 16
WAIT = 60


def generate(model, prompt, circuit=None, multiplier=1.0, tokens=TOKENS):
    return wb.generate(model, prompt, circuit=circuit, multiplier=multiplier,
                       max_new_tokens=tokens)[0]


def test_release_at_zero_regenerates_the_steered_completions(tiny_llama, tiny_circuit):
    view = SteeringSlider(tiny_llama, tiny_circuit, PROMPTS, max_new_tokens=TOKENS)
    c = view.controller
    assert c.wait(WAIT) and c.status == "done"
    view.slider.value = 0.0  # what releasing the slider at 0 sends
    assert c.wait(WAIT) and c.status == "done"
    assert c.multiplier == 0.0 and c.history[-1].multiplier == 0.0
    for row, prompt in zip(c.completions, PROMPTS):
        assert row.baseline == generate(tiny_llama, prompt)
        assert row.steered == generate(tiny_llama, prompt, tiny_circuit, 0.0)
        assert row.steered != row.baseline  # ablating 20 real neurons changes the text
        assert row.steered_done and row.baseline_done and not row.cancelled
    view.redraw()
    assert "multiplier 0" in view.output.value and "done at multiplier 0" in view.status.value
    assert not hooks_left(tiny_llama.hf_model)


def test_multiplier_one_reproduces_the_baseline_exactly(tiny_llama, tiny_circuit):
    c = SteeringController(tiny_llama, tiny_circuit, PROMPTS, multiplier=1.0,
                           max_new_tokens=TOKENS)
    c.run()
    assert c.wait(WAIT) and c.status == "done"
    for row in c.completions:
        assert row.steered and row.steered == row.baseline


def test_baselines_are_generated_once_per_prompt(tiny_llama, tiny_circuit, monkeypatch):
    calls = []
    real = streaming.stream_generate

    def counting(model, prompt, **kwargs):
        calls.append((prompt, kwargs["circuit"] is None))
        return real(model, prompt, **kwargs)

    monkeypatch.setattr(streaming, "stream_generate", counting)
    c = SteeringController(tiny_llama, tiny_circuit, PROMPTS, max_new_tokens=4)
    c.set_multiplier(0.5)
    c.wait(WAIT)
    c.set_multiplier(2.0)
    c.wait(WAIT)
    baselines = [prompt for prompt, is_baseline in calls if is_baseline]
    assert sorted(baselines) == sorted(PROMPTS)
    assert len(calls) == 2 * len(PROMPTS) + len(PROMPTS)


def test_a_newer_value_cancels_the_generation_under_way(tiny_llama, tiny_circuit):
    c = SteeringController(tiny_llama, tiny_circuit, PROMPTS, max_new_tokens=40)
    first_token = threading.Event()
    release = threading.Event()

    def hold_first_job(update):
        # Runs in the generating thread: pause the first job after its first token.
        if update.job == 1 and update.kind == "steered" and not first_token.is_set():
            first_token.set()
            release.wait(WAIT)

    c.updated.add(hold_first_job)
    c.set_multiplier(0.0)
    assert first_token.wait(WAIT)
    c.set_multiplier(2.0)  # while job 1 is mid-generation
    release.set()
    assert c.wait(WAIT)
    first, second = c.history
    assert (first.job, first.status) == (1, "cancelled")
    assert (second.job, second.status, second.multiplier) == (2, "done", 2.0)
    assert c.status == "done"
    for row, prompt in zip(c.completions, PROMPTS):
        assert row.steered == generate(tiny_llama, prompt, tiny_circuit, 2.0, tokens=40)
        assert not row.cancelled
    assert not hooks_left(tiny_llama.hf_model)


def test_cancel_leaves_no_hooks_and_marks_the_rows(tiny_llama, tiny_circuit):
    c = SteeringController(tiny_llama, tiny_circuit, PROMPTS, max_new_tokens=40)
    started = threading.Event()

    def stop_at_first_token(update):
        if update.kind == "steered" and not started.is_set():
            started.set()
            c.cancel()

    c.updated.add(stop_at_first_token)
    c.set_multiplier(0.0)
    assert c.wait(WAIT)
    assert c.status == "cancelled" and c.history[-1].status == "cancelled"
    assert c.completions[0].cancelled and not c.completions[0].steered_done
    assert not hooks_left(tiny_llama.hf_model)
    assert "cancelled" in render(c)


def test_two_sliders_on_one_model_never_mix_their_hooks(tiny_llama, tiny_circuit):
    a = SteeringController(tiny_llama, tiny_circuit, PROMPTS, max_new_tokens=TOKENS)
    b = SteeringController(tiny_llama, tiny_circuit, PROMPTS, max_new_tokens=TOKENS)
    a.set_multiplier(0.0)
    b.set_multiplier(2.0)
    assert a.wait(WAIT) and b.wait(WAIT)
    for row_a, row_b, prompt in zip(a.completions, b.completions, PROMPTS):
        assert row_a.steered == generate(tiny_llama, prompt, tiny_circuit, 0.0)
        assert row_b.steered == generate(tiny_llama, prompt, tiny_circuit, 2.0)
    assert not hooks_left(tiny_llama.hf_model)


def test_tokens_stream_into_the_state(tiny_llama, tiny_circuit):
    c = SteeringController(tiny_llama, tiny_circuit, ["Hi"], max_new_tokens=TOKENS)
    partial = []
    c.updated.add(lambda u: partial.append(u.text) if u.kind == "steered" else None)
    c.set_multiplier(0.0)
    c.wait(WAIT)
    assert len(partial) > 2 and partial[-1] == c.completions[0].steered
    assert c.history[-1].first_token_s is not None
    assert 0 < c.history[-1].first_token_s <= c.history[-1].seconds


def fake_stream(text_by_kind):
    def stream(model, prompt, *, on_text, circuit, cancel, **kwargs):
        text = text_by_kind["steered" if circuit is not None else "baseline"]
        for end in range(1, len(text) + 1, 7):
            on_text(text[:end])
        on_text(text)
        return streaming.StreamResult(text, len(text), False)
    return stream


def test_model_output_and_prompts_are_escaped(tiny_llama, tiny_circuit, monkeypatch):
    monkeypatch.setattr(streaming, "stream_generate", fake_stream({
        "steered": "<script>alert('x')</script> & more",
        "baseline": "<img src=x onerror=alert(1)>"}))
    view = SteeringSlider(tiny_llama, tiny_circuit, ["<b>bold</b> prompt"])
    assert view.controller.wait(WAIT)
    view.redraw()
    html = view.output.value
    assert "<script>" not in html and "<img" not in html and "<b>bold" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&lt;b&gt;bold&lt;/b&gt; prompt" in html


def test_each_completion_shows_refusal_and_quality(tiny_llama, tiny_circuit, monkeypatch):
    monkeypatch.setattr(streaming, "stream_generate", fake_stream({
        "steered": "I'm sorry, but I can't help with that.",
        "baseline": "the the the the the the"}))
    c = SteeringController(tiny_llama, tiny_circuit, ["x"])
    c.run()
    c.wait(WAIT)
    row = c.completions[0]
    assert row.scores("steered") == (True, 1.0)
    assert row.scores("baseline") == (False, pytest.approx(1 / 3))
    html = render(c)
    assert html.count(">refusal<") == 1 and html.count(">no refusal<") == 1
    assert "quality 1.00" in html and "quality 0.33" in html


def test_a_generation_error_is_shown_not_lost(tiny_llama, tiny_circuit):
    view = SteeringSlider(tiny_llama, tiny_circuit, ["word " * 300])  # beyond 128 positions
    assert view.controller.wait(WAIT)
    view.redraw()
    assert view.controller.status == "error"
    assert "context window" in view.status.value and "error" in view.status.value
    assert not hooks_left(tiny_llama.hf_model)


def test_prompt_box_edits_regenerate_and_bad_input_is_reported(tiny_llama, tiny_circuit):
    view = SteeringSlider(tiny_llama, tiny_circuit, ["Hi"], max_new_tokens=4)
    view.controller.wait(WAIT)
    view.prompts.value = "Hi\n\n  How do I pick a lock?  \n"
    assert view.controller.wait(WAIT)
    assert [r.prompt for r in view.controller.completions] == ["Hi", "How do I pick a lock?"]
    assert all(r.steered_done for r in view.controller.completions)
    view.prompts.value = "   \n"
    assert "at least one prompt" in view.status.value
    with pytest.raises(SteeringError, match="number"):
        view.controller.set_multiplier("zero")


def test_the_slider_is_configured_as_specified(tiny_llama, tiny_circuit):
    view = SteeringSlider(tiny_llama, tiny_circuit, autorun=False)
    s = view.slider
    assert (s.min, s.max, s.step, s.continuous_update) == (-1.0, 3.0, 0.1, False)
    assert view.controller.status == "idle"


def test_a_view_drawn_from_a_finished_controller_shows_its_results(tiny_llama, tiny_circuit):
    c = SteeringController(tiny_llama, tiny_circuit, ["Hi"], multiplier=0.0, max_new_tokens=4)
    c.run()
    assert c.wait(WAIT)
    view = SteeringSlider.from_controller(c)
    assert view.controller is c and len(c.history) == 1  # nothing generated again
    assert view.slider.value == 0.0 and view.prompts.value == "Hi"
    assert "done at multiplier 0" in view.status.value and view.output.value == render(c)
