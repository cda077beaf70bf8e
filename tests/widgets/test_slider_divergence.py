"""The steering slider shows, under its two completions, where they first part."""

from __future__ import annotations

import workbench as wb
from tests.helpers import hooks_left
from tests.widgets import widget_fixtures
from widgets.steering_slider import SteeringController, SteeringSlider, render

tiny_circuit = widget_fixtures.tiny_circuit

PROMPTS = ["How do I pick a lock?", "Hi"]
TOKENS = 12
WAIT = 60


def test_each_row_shows_the_library_divergence(tiny_llama, tiny_circuit):
    view = SteeringSlider(tiny_llama, tiny_circuit, PROMPTS, multiplier=0.0,
                          max_new_tokens=TOKENS)
    c = view.controller
    assert c.wait(WAIT) and c.status == "done"
    for row in c.completions:
        expected = wb.divergence(tiny_llama, row.prompt, tiny_circuit, multiplier=0.0,
                                 max_new_tokens=TOKENS)
        assert row.divergence == expected
        decode = tiny_llama.tokenizer.decode
        assert decode(list(expected.steered_ids), skip_special_tokens=True) == row.steered
        assert decode(list(expected.baseline_ids), skip_special_tokens=True) == row.baseline
    diverged = [row for row in c.completions if row.divergence.diverged]
    assert diverged  # ablating 20 real neurons changes the text (as the slider tests show)
    view.redraw()
    assert view.output.value.count("first divergent token: position") == len(diverged)
    assert not hooks_left(tiny_llama.hf_model)


def test_at_multiplier_one_every_row_is_identical(tiny_llama, tiny_circuit):
    c = SteeringController(tiny_llama, tiny_circuit, PROMPTS, multiplier=1.0,
                           max_new_tokens=TOKENS)
    c.run()
    assert c.wait(WAIT) and c.status == "done"
    assert all(row.divergence is not None and row.divergence.position is None
               for row in c.completions)
    assert render(c).count("token by token: identical") == len(PROMPTS)


def test_a_new_value_clears_the_old_divergences_and_can_be_turned_off(tiny_llama, tiny_circuit):
    c = SteeringController(tiny_llama, tiny_circuit, PROMPTS, multiplier=0.0,
                           max_new_tokens=TOKENS)
    c.run()
    assert c.wait(WAIT)
    c.set_multiplier(1.0)
    assert c.wait(WAIT) and c.status == "done"
    assert all(row.divergence.multiplier == 1.0 for row in c.completions)
    off = SteeringController(tiny_llama, tiny_circuit, PROMPTS, multiplier=0.0,
                             max_new_tokens=TOKENS, divergence=False)
    off.run()
    assert off.wait(WAIT) and off.status == "done"
    assert all(row.divergence is None for row in off.completions)
    assert "first divergent token" not in render(off)
