"""Steering: exact ablation, identity at 1, positions, signs, CAA, hook cleanup, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.helpers import PROMPTS, hooks_left

from workbench import Circuit, Neuron, add_vector, caa_vector, generate, steer
from workbench.streaming import stream_generate
from workbench.activations import collect
from workbench.errors import CircuitMismatchError, SteeringError


def make_circuit(model, neurons) -> Circuit:
    return Circuit.from_neurons([Neuron(*n) for n in neurons], model=model)


@pytest.fixture
def circuit(tiny_model):
    return make_circuit(tiny_model, [(0, 3, 2.0), (1, 7, -1.5), (1, 50, 0.5)])


def read_down_proj_inputs(model, run) -> list[dict[int, torch.Tensor]]:
    """Run ``run()`` and return, per forward call, layer -> down-projection input.

    The recording hooks are registered last, so they see what steering hooks produced.
    """
    calls: list[dict[int, torch.Tensor]] = []

    def record(layer):
        def hook(_module, args):
            if layer == 0:
                calls.append({})
            calls[-1][layer] = args[0].detach().clone()
        return hook

    handles = [model.down_proj(layer).register_forward_pre_hook(record(layer))
               for layer in range(model.n_layers)]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return calls


def forward(model):
    inputs = model.encode(PROMPTS, model.prompting())
    with torch.no_grad():
        return model.hf_model(**inputs).logits


def test_multiplier_zero_makes_circuit_inputs_exactly_zero(tiny_model, circuit):
    plain = read_down_proj_inputs(tiny_model, lambda: forward(tiny_model))[0]
    with steer(tiny_model, circuit, multiplier=0.0):
        ablated = read_down_proj_inputs(tiny_model, lambda: forward(tiny_model))[0]
    for neuron in circuit.neurons:
        assert plain[neuron.layer][..., neuron.index].abs().max() > 0
        assert torch.equal(ablated[neuron.layer][..., neuron.index],
                           torch.zeros_like(ablated[neuron.layer][..., neuron.index]))
    others = torch.ones(tiny_model.d_mlp, dtype=torch.bool)
    others[[3]] = False
    assert torch.equal(ablated[0][..., others], plain[0][..., others])
    assert not hooks_left(tiny_model.hf_model)


def test_multiplier_scales_and_one_is_identity(tiny_llama):
    circuit = make_circuit(tiny_llama, [(0, 3, 2.0), (1, 7, -1.5)])
    plain = read_down_proj_inputs(tiny_llama, lambda: forward(tiny_llama))[0]
    with steer(tiny_llama, circuit, multiplier=2.5):
        scaled = read_down_proj_inputs(tiny_llama, lambda: forward(tiny_llama))[0]
    # Layer 0 is the first steered layer, so its other inputs are unchanged.
    torch.testing.assert_close(scaled[0][..., 3], 2.5 * plain[0][..., 3])
    assert torch.equal(scaled[0][..., :3], plain[0][..., :3])
    reference = forward(tiny_llama)
    with steer(tiny_llama, circuit, multiplier=1):
        assert torch.equal(forward(tiny_llama), reference)


def test_multiplier_one_generates_identical_tokens(tiny_model, circuit):
    baseline = generate(tiny_model, PROMPTS, max_new_tokens=8, batch_size=2)
    same = generate(tiny_model, PROMPTS, circuit=circuit, multiplier=1.0, max_new_tokens=8,
                    batch_size=2)
    assert same == baseline
    assert len(baseline) == len(PROMPTS)


def test_ablation_changes_the_model(tiny_llama):
    circuit = make_circuit(tiny_llama, [(layer, i, 1.0) for layer in range(2)
                                        for i in range(0, 96, 2)])
    reference = forward(tiny_llama)
    with steer(tiny_llama, circuit, multiplier=0):
        assert not torch.allclose(forward(tiny_llama), reference)


NEW_TOKENS = 4


def run_generation(model, driver: str, prompts: list[str], use_cache: bool) -> list:
    """Generate NEW_TOKENS greedy tokens for ``prompts`` the way ``driver`` does."""
    options = dict(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, use_cache=use_cache)
    if driver == "workbench":
        return generate(model, prompts, batch_size=len(prompts), **options)
    if driver == "stream":
        assert len(prompts) == 1
        return [stream_generate(model, prompts[0], **options).text]
    # A user's own call of transformers' generate inside ``with steer(...)``.
    inputs = model.encode(prompts, model.prompting())
    inputs.pop("position_ids", None)
    return model.hf_model.generate(**inputs, do_sample=False,
                                   pad_token_id=model.tokenizer.pad_token_id,
                                   **options).tolist()


def check_positions(model, positions: str, driver: str, prompts: list[str],
                    use_cache: bool) -> None:
    """Neuron (1, 7) is zeroed at exactly the prompt or exactly the generated positions."""
    circuit = make_circuit(model, [(1, 7, 1.0)])
    with steer(model, circuit, multiplier=0.0, positions=positions):
        calls = read_down_proj_inputs(
            model, lambda: run_generation(model, driver, prompts, use_cache))
    lengths = [call[1].shape[1] for call in calls]
    prompt_length = lengths[0]
    steps = range(NEW_TOKENS)
    if use_cache:  # the prompt once, then one new token per pass
        assert lengths == [prompt_length] + [1] * (NEW_TOKENS - 1)
    else:  # every pass re-reads the prompt and what was generated so far
        assert lengths == [prompt_length + step for step in steps]
    for step, call in zip(steps, calls):
        values = call[1][..., 7]  # [batch, pos]
        start = prompt_length + step - 1 if use_cache and step else 0
        absolute = torch.arange(start, start + values.shape[1])  # [pos]
        generated = absolute >= prompt_length
        zeroed = generated if positions == "generated" else ~generated
        assert bool((values[:, zeroed] == 0).all()), (step, positions)
        # Left padding can leave a short row's pad positions at zero: ask for each other
        # position to be non-zero in some row.
        assert bool((values[:, ~zeroed] != 0).any(dim=0).all()), (step, positions)
    assert not hooks_left(model.hf_model)


@pytest.mark.parametrize("positions", ["prompt", "generated"])
@pytest.mark.parametrize("driver, batch", [("workbench", 1), ("workbench", 2), ("user", 1),
                                           ("user", 2), ("stream", 1)])
@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "no-cache"])
def test_positions_select_prompt_or_generated_tokens(tiny_llama, positions, driver, batch,
                                                     use_cache):
    check_positions(tiny_llama, positions, driver, PROMPTS[:batch], use_cache)


@pytest.mark.parametrize("positions", ["prompt", "generated"])
def test_positions_hold_for_every_architecture(tiny_model, positions):
    check_positions(tiny_model, positions, "workbench", PROMPTS[:2], use_cache=True)


@pytest.mark.parametrize("positions", ["prompt", "generated"])
def test_positions_steer_the_same_with_and_without_a_kv_cache(tiny_llama, positions):
    circuit = make_circuit(tiny_llama, [(layer, i, 1.0) for layer in range(2)
                                        for i in range(0, 96, 3)])
    plain = generate(tiny_llama, PROMPTS, max_new_tokens=6, batch_size=2)
    with steer(tiny_llama, circuit, multiplier=0.0, positions=positions):
        cached = generate(tiny_llama, PROMPTS, max_new_tokens=6, batch_size=2)
        uncached = generate(tiny_llama, PROMPTS, max_new_tokens=6, batch_size=2,
                            use_cache=False)
    assert cached == uncached
    assert cached != plain  # the steering took effect


def test_positions_are_decided_per_pass_for_plain_forward_calls(tiny_llama):
    """A forward call on its own is a prompt: "prompt" steers it, "generated" does not."""
    circuit = make_circuit(tiny_llama, [(1, 7, 1.0)])
    for positions, zeroed in (("prompt", True), ("generated", False)):
        with steer(tiny_llama, circuit, multiplier=0.0, positions=positions):
            first = read_down_proj_inputs(tiny_llama, lambda: forward(tiny_llama))[0]
            again = read_down_proj_inputs(tiny_llama, lambda: forward(tiny_llama))[0]
        for call in (first, again):
            assert bool((call[1][..., 7] == 0).all()) is zeroed


@pytest.mark.parametrize("signs, zeroed, kept", [("positive", (0, 3), (1, 7)),
                                                 ("negative", (1, 7), (0, 3))])
def test_signs_pick_neurons_by_sign_of_delta(tiny_llama, signs, zeroed, kept):
    circuit = make_circuit(tiny_llama, [(0, 3, 2.0), (1, 7, -1.5)])
    with steer(tiny_llama, circuit, multiplier=0.0, signs=signs):
        inputs = read_down_proj_inputs(tiny_llama, lambda: forward(tiny_llama))[0]
    assert (inputs[zeroed[0]][..., zeroed[1]] == 0).all()
    assert (inputs[kept[0]][..., kept[1]] != 0).any()


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_hooks_are_removed_after_an_exception(tiny_llama, error):
    circuit = make_circuit(tiny_llama, [(0, 3, 2.0), (1, 7, -1.5)])
    vector = torch.ones(tiny_llama.n_layers, 64)
    with pytest.raises(type(error)):
        with steer(tiny_llama, circuit, multiplier=0.0, positions="prompt"):
            assert hooks_left(tiny_llama.hf_model)
            raise error
    assert not hooks_left(tiny_llama.hf_model)
    with pytest.raises(type(error)):
        with add_vector(tiny_llama, vector, 1.0):
            raise error
    assert not hooks_left(tiny_llama.hf_model)


def test_hooks_are_removed_when_generation_fails(tiny_llama):
    circuit = make_circuit(tiny_llama, [(0, 3, 2.0)])
    with pytest.raises(ValueError, match="no_such_option"):
        generate(tiny_llama, PROMPTS, circuit=circuit, multiplier=0, no_such_option=object())
    assert not hooks_left(tiny_llama.hf_model)


@pytest.mark.parametrize("bad", ["0.5", None, True, float("nan"), float("inf"), [1.0]])
def test_multiplier_must_be_a_finite_number(tiny_llama, bad):
    circuit = make_circuit(tiny_llama, [(0, 3, 2.0)])
    with pytest.raises(SteeringError, match="multiplier"):
        with steer(tiny_llama, circuit, multiplier=bad):
            pass
    assert not hooks_left(tiny_llama.hf_model)


def test_numpy_and_tensor_multipliers_are_accepted(tiny_llama):
    circuit = make_circuit(tiny_llama, [(0, 3, 2.0)])
    for value in (np.float32(0.0), torch.tensor(0.0), 0):
        with steer(tiny_llama, circuit, multiplier=value):
            inputs = read_down_proj_inputs(tiny_llama, lambda: forward(tiny_llama))[0]
        assert (inputs[0][..., 3] == 0).all()


def test_bad_positions_signs_and_foreign_circuits_are_refused(tiny_llama):
    circuit = make_circuit(tiny_llama, [(0, 3, 2.0)])
    with pytest.raises(SteeringError, match="positions"):
        with steer(tiny_llama, circuit, multiplier=0, positions="end"):
            pass
    with pytest.raises(SteeringError, match="signs"):
        with steer(tiny_llama, circuit, multiplier=0, signs="up"):
            pass
    foreign = Circuit.from_neurons([Neuron(0, 3, 1.0)], model={
        "name": "big", "architecture": "LlamaForCausalLM", "n_layers": 30, "d_mlp": 1536})
    with pytest.raises(CircuitMismatchError, match="big"):
        with steer(tiny_llama, foreign, multiplier=0):
            pass
    with pytest.raises(SteeringError, match="max_new_tokens"):
        generate(tiny_llama, "hi", max_new_tokens=0)


def test_generate_is_deterministic_and_stops_rows_at_eos(tiny_llama):
    first = generate(tiny_llama, PROMPTS, max_new_tokens=6, batch_size=3)
    assert first == generate(tiny_llama, PROMPTS, max_new_tokens=6, batch_size=3)
    assert generate(tiny_llama, "Hi", max_new_tokens=6) == generate(tiny_llama, ["Hi"],
                                                                     max_new_tokens=6)
    assert generate(tiny_llama, [], max_new_tokens=3) == []


def test_caa_vector_is_the_difference_of_mean_mlp_outputs(tiny_model):
    positive, negative = PROMPTS[:2], PROMPTS[2:]
    vector = caa_vector(tiny_model, positive, negative, progress=False)
    prompting = tiny_model.prompting()
    expected = (collect(tiny_model, positive, site="output", prompting=prompting,
                        progress=False).mean
                - collect(tiny_model, negative, site="output", prompting=prompting,
                          progress=False).mean)
    assert vector.shape == (tiny_model.n_layers, tiny_model.d_model)
    torch.testing.assert_close(vector, expected)


def test_add_vector_adds_alpha_times_vector_to_mlp_output(tiny_llama):
    vector = torch.randn(tiny_llama.n_layers, 64, generator=torch.Generator().manual_seed(0))
    outputs = {}
    handle = tiny_llama.down_proj(1).register_forward_hook(
        lambda _m, _a, out: outputs.__setitem__(len(outputs), out.detach().clone()))
    try:
        forward(tiny_llama)
        with add_vector(tiny_llama, vector, 0.0):
            same = forward(tiny_llama)
        with add_vector(tiny_llama, vector, 2.0):
            forward(tiny_llama)
    finally:
        handle.remove()
    assert torch.equal(same, forward(tiny_llama))
    # Output 0: plain; 1: alpha 0; 2: alpha 2 — but its input already changed through
    # layer 0, so compare layer 1's increment against a run with only layer 1 steered.
    assert not torch.allclose(outputs[2], outputs[0])
    only_last = vector.clone()
    only_last[0] = 0
    with add_vector(tiny_llama, only_last, 2.0):
        handle = tiny_llama.down_proj(1).register_forward_hook(
            lambda _m, _a, out: outputs.__setitem__("last", out.detach().clone()))
        try:
            forward(tiny_llama)
        finally:
            handle.remove()
    torch.testing.assert_close(outputs["last"] - outputs[0],
                               (2.0 * only_last[1]).float().expand_as(outputs[0]))


def test_add_vector_checks_the_shape(tiny_llama):
    with pytest.raises(SteeringError, match=r"\[n_layers, d_model\]"):
        with add_vector(tiny_llama, torch.zeros(3, 64), 1.0):
            pass
    with pytest.raises(SteeringError, match="alpha"):
        with add_vector(tiny_llama, torch.zeros(2, 64), "strong"):
            pass


@pytest.mark.parametrize("context", ["steer", "add_vector"])
def test_another_threads_generation_waits_for_an_open_steering_block(tiny_llama, context):
    """A widget's background generation must not run under a cell's ``with steer(...)``."""
    import threading

    circuit = make_circuit(tiny_llama, [(0, 3, 1.0)])
    vector = torch.zeros(tiny_llama.n_layers, tiny_llama.d_model)
    block = (steer(tiny_llama, circuit, multiplier=0.0) if context == "steer"
             else add_vector(tiny_llama, vector, 1.0))
    done = threading.Event()
    with block:
        worker = threading.Thread(
            target=lambda: (generate(tiny_llama, PROMPTS[0], max_new_tokens=2), done.set()))
        worker.start()
        assert not done.wait(1.0)  # blocked while the hooks are registered
    worker.join(60)
    assert done.is_set() and not hooks_left(tiny_llama.hf_model)
