"""Token view: controllers without a browser, the heatmap's and the explorer's entries."""

from __future__ import annotations

import html
import re
import time

import numpy as np
import pandas as pd
import pytest

import workbench as wb
from tests.helpers import PROMPTS, hooks_left
from tests.widgets import widget_fixtures
from tests.widgets.widget_fixtures import NEGATIVE, POSITIVE
from widgets.explorer import CircuitExplorer, ExplorerController
from widgets.heatmap import DifferenceHeatmap, HeatmapController
from widgets.token_view import SUM, TokenView, TokenViewController
from workbench.circuit import Circuit, Neuron
from workbench.errors import InvalidArgumentError

tiny_circuit = widget_fixtures.tiny_circuit
no_widgets = widget_fixtures.no_widgets

SPAN = re.compile(r'<span class="cna-token" style="([^"]*)" title="([^"]*)">([^<]*)</span>')


def spans(markup: str) -> list[tuple[str, str, str]]:
    return SPAN.findall(markup)


@pytest.mark.usefixtures("no_widgets")
def test_the_controller_colours_each_token_by_the_chosen_neuron(tiny_llama, tiny_circuit):
    c = TokenViewController.read(tiny_llama, PROMPTS[:2], tiny_circuit)
    frame = wb.token_activations(tiny_llama, PROMPTS[:2], tiny_circuit)
    assert c.colour_by == SUM and c.options()[0][1] == SUM
    neuron = tiny_circuit.neurons[3].key
    c.set_colour(neuron)
    drawn = spans(c.html())
    picked = frame[(frame.layer == neuron[0]) & (frame.neuron == neuron[1])]
    assert len(drawn) == len(picked)
    # the strongest prompt token is drawn at full strength, with its own sign's colour
    own = picked[~picked.in_template]
    strongest = own.activation.abs().idxmax()
    i = list(picked.index).index(strongest)
    colour = "192,57,43" if picked.activation[strongest] >= 0 else "44,127,184"
    assert f"rgba({colour},1.00)" in drawn[i][0]
    # template tokens are outlined, the others are not
    assert [("dashed" in style) for style, _, _ in drawn] == picked.in_template.tolist()
    # hovering shows every neuron's value at that token (up to MAX_HOVER)
    title = html.unescape(drawn[i][1])
    at = frame[(frame.prompt == picked.prompt[strongest])
               & (frame.position == picked.position[strongest])]
    for _, row in at.head(16).iterrows():
        assert f"layer {row.layer} neuron {row.neuron}: {row.activation:+.4g}" in title
    assert "more neurons" in title  # 20 neurons, 16 listed
    assert hooks_left(tiny_llama.hf_model) == []


def test_the_signed_sum_weights_by_score(tiny_llama, tiny_circuit):
    c = TokenViewController.read(tiny_llama, PROMPTS[:1], tiny_circuit)
    row = c.rows[0]
    scores = np.array([n.score for n in tiny_circuit.neurons])
    np.testing.assert_allclose(c.values(row), row.values.astype(np.float64) @ scores)
    summed = wb.tokens.signed_sum(wb.token_activations(tiny_llama, PROMPTS[:1], tiny_circuit),
                                  tiny_circuit)
    np.testing.assert_allclose(c.values(row), summed.value, rtol=1e-5)
    with pytest.raises(InvalidArgumentError, match="not one of the neurons"):
        c.set_colour((0, 0) if (0, 0) not in tiny_circuit.keys() else (1, 95))


def test_text_is_escaped_and_the_figure_holds_the_same_values(tiny_llama):
    prompt = "<script>alert('x')</script> & more"
    c = TokenViewController.read(tiny_llama, [prompt], [(1, 3)], labels=["<b>label</b>"])
    markup = c.html()
    assert "<script>" not in markup and "<b>label" not in markup
    assert "&lt;script&gt;" in "".join(text for _, _, text in spans(markup))
    row = c.rows[0]
    figure = c.figure(per_row=8, template=True)
    values = [v for line in figure.data[0].z for v in line if v is not None]
    np.testing.assert_allclose(values, c.values(row), rtol=1e-6)
    assert len(figure.data[1].x) == int(row.in_template.sum()) > 0
    own = c.figure(per_row=8)  # by default the prompt's own tokens only
    values = [v for line in own.data[0].z for v in line if v is not None]
    np.testing.assert_allclose(values, c.values(row)[~row.in_template], rtol=1e-6)
    assert len(own.data[1].x) == 0 and "template left out" in own.layout.title.text


def test_a_hundred_prompts_of_sixty_tokens_render_quickly():
    rng = np.random.default_rng(0)
    n_prompts, n_tokens, keys = 100, 60, [(28, i) for i in range(46)]
    frame = pd.DataFrame({
        "prompt": np.repeat(np.arange(n_prompts), n_tokens * len(keys)),
        "position": np.tile(np.repeat(np.arange(n_tokens), len(keys)), n_prompts),
        "token": np.tile(np.repeat([f" w{i}" for i in range(n_tokens)], len(keys)), n_prompts),
        "token_id": 0, "in_template": np.tile(np.repeat(np.arange(n_tokens) < 5, len(keys)),
                                              n_prompts),
        "layer": 28, "neuron": np.tile([i for _, i in keys], n_prompts * n_tokens),
        "activation": rng.normal(size=n_prompts * n_tokens * len(keys)).astype(np.float32)})
    circuit = Circuit.from_neurons([Neuron(28, i, float(rng.normal())) for _, i in keys],
                                   model={"name": "m", "architecture": "LlamaForCausalLM",
                                          "n_layers": 30, "d_mlp": 64})
    started = time.perf_counter()
    c = TokenViewController(frame, [f"prompt {i}" for i in range(n_prompts)], circuit)
    built = time.perf_counter()
    markup = c.html()
    drawn = time.perf_counter()
    print(f"\ntoken view, 100 prompts x 60 tokens x 46 neurons: build {built - started:.3f} s, "
          f"render {drawn - built:.3f} s, {len(markup) / 1e6:.1f} MB of HTML")
    assert len(spans(markup)) == n_prompts * n_tokens
    assert drawn - built < 10  # generous: the figure printed above is the measurement


def test_the_heatmap_panel_shows_where_a_neuron_fires(tiny_llama, tiny_circuit):
    heatmap = HeatmapController(tiny_circuit, model=tiny_llama, positive=POSITIVE,
                                negative=NEGATIVE)
    with pytest.raises(InvalidArgumentError, match="choose a neuron first"):
        heatmap.where_it_fires()
    neuron = tiny_circuit.neurons[0]
    heatmap.select(*neuron.key)
    fires = heatmap.where_it_fires()
    assert fires.keys == [neuron.key] and fires.colour_by == neuron.key
    assert [r.label.split(":")[0] for r in fires.rows] == \
        ["positive 1", "positive 2", "negative 1", "negative 2"]
    frame = wb.token_activations(tiny_llama, POSITIVE + NEGATIVE, [neuron.key])
    np.testing.assert_allclose(np.concatenate([r.values[:, 0] for r in fires.rows]),
                               frame.activation, rtol=1e-6)
    view = DifferenceHeatmap.from_controller(heatmap, interactive=False)
    view.fires_button.click()
    assert view.token_view is not None and view.fires.children == (view.token_view.widget,)
    assert spans(view.token_view.output.value)
    no_prompts = HeatmapController(tiny_circuit, model=tiny_llama)
    no_prompts.select(*neuron.key)
    with pytest.raises(InvalidArgumentError, match="prompt set is unknown"):
        no_prompts.where_it_fires()


def test_the_explorer_shows_the_circuit_token_by_token(tiny_llama):
    c = ExplorerController(tiny_llama, POSITIVE, NEGATIVE)
    with pytest.raises(InvalidArgumentError, match="discover or add a circuit first"):
        c.circuit_tokens()
    circuit = c.editor.discover(top_k=8, universal=None, progress=False)
    seen = []
    c.tokens_read.add(seen.append)
    tokens = c.circuit_tokens()
    assert seen == [tokens] and tokens.circuit is circuit and tokens.colour_by == SUM
    assert len(tokens.rows) == len(POSITIVE) + len(NEGATIVE)
    c.select_neuron(*circuit.neurons[1].key)
    assert c.circuit_tokens().colour_by == circuit.neurons[1].key
    app = CircuitExplorer.from_controller(c, interactive=False)
    app.fires_button.click()
    assert app.token_view is not None and app.fires_area.children == (app.token_view.widget,)


def test_the_view_redraws_when_the_colouring_changes(tiny_llama, tiny_circuit):
    view = TokenView(tiny_llama, PROMPTS[:1], tiny_circuit)
    before = view.output.value
    view.picker.value = tiny_circuit.neurons[0].key
    assert view.controller.colour_by == tiny_circuit.neurons[0].key
    assert view.output.value != before and "layer" in view.output.value
