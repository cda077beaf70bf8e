"""Interventions: random controls, and what each kind does to the model at a multiplier."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from tests.helpers import PROMPTS, hooks_left

from workbench import Circuit, Neuron
from workbench.errors import InvalidArgumentError, SteeringError
from workbench.evaluation.interventions import Intervention, RandomControl, random_control

MODEL = {"name": "m", "architecture": "LlamaForCausalLM", "n_layers": 3, "d_mlp": 32}


def make_circuit(neurons, model=MODEL, **provenance) -> Circuit:
    return Circuit.from_neurons([Neuron(*n) for n in neurons], model=model, **provenance)


@pytest.fixture
def real() -> Circuit:
    return make_circuit([(0, 1, 3.0), (0, 4, -2.0), (0, 9, 0.5), (2, 0, 1.0), (2, 31, -0.25)],
                        prompts={"positive": {"name": "harmful"},
                                 "negative": {"name": "benign"}})


# -- random_control ---------------------------------------------------------------


def scores_by_layer(circuit: Circuit) -> dict[int, Counter]:
    grouped: dict[int, Counter] = {}
    for neuron in circuit.neurons:
        grouped.setdefault(neuron.layer, Counter())[neuron.score] += 1
    return grouped


def test_random_control_matches_size_and_layer_counts(real):
    control = random_control(real, seed=0)
    assert len(control) == len(real)
    assert control.layer_counts() == real.layer_counts() == {0: 3, 2: 2}
    assert not control.keys() & real.keys()
    assert control.model == real.model


def test_random_control_inherits_scores_per_layer(real):
    control = random_control(real, seed=0)
    assert scores_by_layer(control) == scores_by_layer(real)
    # So sign filtering picks as many neurons per layer as in the real circuit.
    for signs in ("positive", "negative"):
        assert {layer: len(idx) for layer, idx in control.by_layer(signs).items()} \
            == {layer: len(idx) for layer, idx in real.by_layer(signs).items()}


def test_random_control_is_deterministic_per_seed(real):
    assert random_control(real, seed=3).keys() == random_control(real, seed=3).keys()
    assert random_control(real, seed=3).neurons == random_control(real, seed=3).neurons
    assert random_control(real, seed=3).keys() != random_control(real, seed=4).keys()


def test_random_control_never_overlaps_for_many_seeds(real):
    for seed in range(50):
        control = random_control(real, seed=seed)
        assert not control.keys() & real.keys()
        assert control.layer_counts() == real.layer_counts()


def test_random_control_selection_metadata(real):
    control = random_control(real, seed=7)
    assert control.selection == {"method": "random-control", "seed": 7, "top_k": 5,
                                 "control_of": "harmful vs benign"}
    assert control.prompts == real.prompts
    assert control.prompting == real.prompting


def test_random_control_fills_a_layer_exactly():
    # Layer 0 of a 4-neuron model: 2 in the circuit, exactly 2 free.
    small = dict(MODEL, d_mlp=4)
    circuit = make_circuit([(0, 0, 1.0), (0, 1, 2.0)], model=small)
    control = random_control(circuit, seed=0)
    assert control.keys() == {(0, 2), (0, 3)}


def test_random_control_too_few_free_neurons():
    # 3 of 4 neurons of layer 1 are in the circuit: only 1 is left for 3 random ones.
    small = dict(MODEL, d_mlp=4)
    circuit = make_circuit([(0, 0, 1.0), (1, 0, 1.0), (1, 2, -1.0), (1, 3, 0.5)], model=small)
    with pytest.raises(InvalidArgumentError, match="layer 1 has too few neurons outside"):
        random_control(circuit, seed=0)


def test_random_intervention_wraps_the_control(real):
    intervention = Intervention.random(real, seed=2)
    assert intervention.kind == "random"
    assert intervention.name == "random(seed=2)"
    assert intervention.circuit.keys() == random_control(real, seed=2).keys()
    assert Intervention.random(real, seed=2, name="ctl").name == "ctl"
    assert intervention.describe() == {"intervention": "random(seed=2)", "kind": "random",
                                       "n_neurons": 5, "seed": 2}


# -- strength and description ------------------------------------------------------


def test_strength_mapping(real):
    caa = Intervention.caa(torch.zeros(3, 8))
    cna = Intervention.cna(real)
    for m in (0.0, 1.0, 2.5, -1.0):
        assert caa.strength(m) == m - 1.0
        assert cna.strength(m) == m
        assert Intervention.random(real).strength(m) == m
        assert Intervention.baseline().strength(m) == m


def test_constructors_and_describe(real):
    assert Intervention.baseline().kind == "baseline"
    assert Intervention.baseline().describe() == {"intervention": "baseline",
                                                  "kind": "baseline"}
    cna = Intervention.cna(real, "mine", positions="prompt", signs="positive")
    assert (cna.name, cna.kind, cna.positions, cna.signs) == ("mine", "cna", "prompt",
                                                              "positive")
    assert cna.describe()["n_neurons"] == 5
    assert Intervention.caa(torch.zeros(3, 8)).describe() == {"intervention": "caa",
                                                              "kind": "caa"}


# -- apply on a real (tiny) model -------------------------------------------------


def forward(model) -> torch.Tensor:
    inputs = model.encode(PROMPTS, model.prompting())
    with torch.no_grad():
        return model.hf_model(**inputs).logits


def record(module: torch.nn.Module, *, pre: bool, run) -> torch.Tensor:
    """Run ``run()`` with a hook on ``module`` and return its input (pre) or output.

    Registered after any steering hooks, so it sees what they produced.
    """
    seen: list[torch.Tensor] = []
    if pre:
        handle = module.register_forward_pre_hook(
            lambda _m, args: seen.append(args[0].detach().clone()))
    else:
        handle = module.register_forward_hook(
            lambda _m, _args, output: seen.append(output.detach().clone()))
    try:
        run()
    finally:
        handle.remove()
    assert len(seen) == 1
    return seen[0]


@pytest.fixture
def llama_circuit(tiny_llama) -> Circuit:
    return make_circuit([(0, 3, 2.0), (0, 10, -1.0), (1, 7, 0.5)], model=tiny_llama)


@pytest.fixture
def vector(tiny_llama) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(tiny_llama.n_layers, tiny_llama.d_model,
                       generator=generator, dtype=torch.float64)


def all_interventions(circuit, vector) -> list[Intervention]:
    return [Intervention.baseline(), Intervention.cna(circuit), Intervention.random(circuit),
            Intervention.caa(vector)]


@pytest.mark.parametrize("multiplier", [0.0, 2.0])
def test_baseline_changes_nothing_at_any_multiplier(tiny_llama, multiplier):
    reference = forward(tiny_llama)
    with Intervention.baseline().apply(tiny_llama, multiplier):
        assert hooks_left(tiny_llama.hf_model) == []
        assert torch.equal(forward(tiny_llama), reference)


def test_multiplier_one_is_a_no_op_without_hooks(tiny_llama, llama_circuit, vector):
    reference = forward(tiny_llama)
    for intervention in all_interventions(llama_circuit, vector):
        for one in (1, 1.0, torch.tensor(1.0)):
            with intervention.apply(tiny_llama, one):
                assert hooks_left(tiny_llama.hf_model) == [], intervention.name
                assert torch.equal(forward(tiny_llama), reference), intervention.name


def test_cna_at_zero_zeroes_the_circuit_neurons(tiny_llama, llama_circuit):
    module = tiny_llama.down_proj(0)
    plain = record(module, pre=True, run=lambda: forward(tiny_llama))
    with Intervention.cna(llama_circuit).apply(tiny_llama, 0.0):
        assert hooks_left(tiny_llama.hf_model)
        ablated = record(module, pre=True, run=lambda: forward(tiny_llama))
    for index in (3, 10):
        assert plain[..., index].abs().max() > 0
        assert torch.equal(ablated[..., index], torch.zeros_like(ablated[..., index]))
    others = torch.ones(tiny_llama.d_mlp, dtype=torch.bool)
    others[[3, 10]] = False
    # Layer 0 is the first layer, so everything else reaching it is unchanged.
    assert torch.equal(ablated[..., others], plain[..., others])
    assert hooks_left(tiny_llama.hf_model) == []


def test_cna_scales_by_the_multiplier(tiny_llama, llama_circuit):
    module = tiny_llama.down_proj(0)
    plain = record(module, pre=True, run=lambda: forward(tiny_llama))
    with Intervention.cna(llama_circuit).apply(tiny_llama, 3.0):
        scaled = record(module, pre=True, run=lambda: forward(tiny_llama))
    torch.testing.assert_close(scaled[..., 3], 3.0 * plain[..., 3])
    assert hooks_left(tiny_llama.hf_model) == []


def test_random_control_applies_its_own_neurons(tiny_llama, llama_circuit):
    intervention = Intervention.random(llama_circuit, seed=1)
    drawn = intervention.circuit.by_layer()[0].tolist()
    assert len(drawn) == 2 and not {3, 10} & set(drawn)
    module = tiny_llama.down_proj(0)
    plain = record(module, pre=True, run=lambda: forward(tiny_llama))
    with intervention.apply(tiny_llama, 0.0):
        ablated = record(module, pre=True, run=lambda: forward(tiny_llama))
    for index in drawn:
        assert plain[..., index].abs().max() > 0
        assert torch.equal(ablated[..., index], torch.zeros_like(ablated[..., index]))
    # The real circuit's neurons are left alone.
    for index in (3, 10):
        assert torch.equal(ablated[..., index], plain[..., index])
    assert hooks_left(tiny_llama.hf_model) == []


@pytest.mark.parametrize("multiplier", [0.0, 2.0, 3.5, -1.0])
def test_caa_adds_m_minus_one_times_the_vector(tiny_llama, vector, multiplier):
    module = tiny_llama.down_proj(0)
    plain = record(module, pre=False, run=lambda: forward(tiny_llama))
    with Intervention.caa(vector).apply(tiny_llama, multiplier):
        assert hooks_left(tiny_llama.hf_model)
        steered = record(module, pre=False, run=lambda: forward(tiny_llama))
    expected = plain + ((multiplier - 1.0) * vector[0]).to(plain.dtype)
    torch.testing.assert_close(steered, expected)
    assert not torch.equal(steered, plain)
    assert hooks_left(tiny_llama.hf_model) == []


def test_caa_changes_the_logits_and_restores_them(tiny_llama, vector):
    reference = forward(tiny_llama)
    with Intervention.caa(vector).apply(tiny_llama, 0.0):
        assert not torch.allclose(forward(tiny_llama), reference)
    assert torch.equal(forward(tiny_llama), reference)


def test_hooks_are_removed_after_an_exception(tiny_llama, llama_circuit, vector):
    for intervention in all_interventions(llama_circuit, vector)[1:]:
        with pytest.raises(KeyboardInterrupt):
            with intervention.apply(tiny_llama, 0.0):
                assert hooks_left(tiny_llama.hf_model)
                raise KeyboardInterrupt
        assert hooks_left(tiny_llama.hf_model) == [], intervention.name


@pytest.mark.parametrize("multiplier", ["1", None, True, float("nan")])
def test_apply_rejects_a_bad_multiplier(tiny_llama, llama_circuit, multiplier):
    with pytest.raises(SteeringError, match="multiplier must be"):
        Intervention.cna(llama_circuit).apply(tiny_llama, multiplier)
    with pytest.raises(SteeringError, match="multiplier must be"):
        Intervention.baseline().apply(tiny_llama, multiplier)


def test_caa_with_a_wrong_shape_is_rejected(tiny_llama):
    with pytest.raises(SteeringError, match=r"shape \[n_layers, d_model\]"):
        with Intervention.caa(torch.zeros(5, 3)).apply(tiny_llama, 0.0):
            pass
    assert hooks_left(tiny_llama.hf_model) == []


# -- direction interventions --------------------------------------------------------


@pytest.fixture
def direction(tiny_llama) -> torch.Tensor:
    generator = torch.Generator().manual_seed(5)
    r = torch.randn(tiny_llama.d_model, generator=generator)  # [d_model]
    return r / r.norm()


def first_block_input(model, run) -> torch.Tensor:
    """The residual stream entering block 0 (the embedding output), as hooks leave it."""
    seen: list[torch.Tensor] = []
    handle = model.layers[0].register_forward_pre_hook(
        lambda _m, args: seen.append(args[0].detach().clone()))
    try:
        run()
    finally:
        handle.remove()
    assert len(seen) == 1
    return seen[0]


@pytest.mark.parametrize("multiplier", [0.0, 0.5, 2.0, -1.0])
def test_direction_keeps_m_times_the_component(tiny_llama, direction, multiplier):
    plain = first_block_input(tiny_llama, lambda: forward(tiny_llama))
    intervention = Intervention.direction(direction)
    assert (intervention.name, intervention.kind) == ("refusal-direction", "direction")
    assert intervention.strength(multiplier) == multiplier
    with intervention.apply(tiny_llama, multiplier):
        assert hooks_left(tiny_llama.hf_model)
        steered = first_block_input(tiny_llama, lambda: forward(tiny_llama))
    torch.testing.assert_close(steered @ direction, multiplier * (plain @ direction),
                               rtol=1e-4, atol=1e-5)
    assert hooks_left(tiny_llama.hf_model) == []


def test_direction_at_one_is_a_no_op_and_at_zero_changes_the_logits(tiny_llama, direction):
    reference = forward(tiny_llama)
    intervention = Intervention.direction(direction, name="dir")
    with intervention.apply(tiny_llama, 1.0):
        assert hooks_left(tiny_llama.hf_model) == []
        assert torch.equal(forward(tiny_llama), reference)
    with intervention.apply(tiny_llama, 0.0):
        assert not torch.allclose(forward(tiny_llama), reference)
    assert torch.equal(forward(tiny_llama), reference)
    assert intervention.describe() == {"intervention": "dir", "kind": "direction"}


def test_direction_accepts_a_refusal_direction(tiny_llama):
    from workbench import refusal_direction

    found = refusal_direction(tiny_llama, PROMPTS[:2], PROMPTS[2:], progress=False)
    intervention = Intervention.direction(found)
    assert torch.equal(intervention.vector, found.direction)
    with pytest.raises(KeyboardInterrupt):
        with intervention.apply(tiny_llama, 0.0):
            raise KeyboardInterrupt
    assert hooks_left(tiny_llama.hf_model) == []


def test_direction_of_a_wrong_shape_is_refused(tiny_llama):
    with pytest.raises(SteeringError, match=r"\[d_model\] tensor or a RefusalDirection"):
        Intervention.direction(torch.ones(2, 64))
    with pytest.raises(SteeringError, match=r"shape \[d_model\] = \[64\]"):
        with Intervention.direction(torch.ones(7)).apply(tiny_llama, 0.0):
            pass
    assert hooks_left(tiny_llama.hf_model) == []


# -- at_size: circuit interventions as prefixes ------------------------------------------


def test_cna_at_size_is_the_prefix(real):
    cut = Intervention.cna(real, "mine", positions="prompt", signs="positive").at_size(2)
    assert (cut.name, cut.kind, cut.positions, cut.signs) == ("mine", "cna", "prompt",
                                                              "positive")
    assert cut.circuit.neurons == real.top(2).neurons
    assert cut.circuit.selection["prefix_of"]["top_k"] == 5


def test_random_at_size_redraws_the_control_of_the_prefix(real):
    control = Intervention.random(real, seed=4)
    assert control.control_of is real and control.seed == 4
    cut = control.at_size(3)
    assert cut.name == control.name and cut.seed == 4
    assert cut.circuit.keys() == random_control(real.top(3), seed=4).keys()
    assert cut.circuit.layer_counts() == real.top(3).layer_counts()
    assert not cut.circuit.keys() & real.top(3).keys()
    # A fraction of all 96 MLP neurons: 0.03 -> 3 neurons, the same control.
    assert control.at_size(0.03).circuit.keys() == cut.circuit.keys()


def test_at_size_leaves_size_free_interventions_alone(real):
    caa = Intervention.caa(torch.zeros(3, 8))
    assert caa.at_size(2) is caa
    assert Intervention.baseline().at_size(0.5).kind == "baseline"


def test_at_size_refuses_sizes_beyond_the_circuit(real):
    with pytest.raises(InvalidArgumentError, match=r"larger than the circuit \(5 neurons\)"):
        Intervention.cna(real).at_size(6)
    with pytest.raises(InvalidArgumentError, match=r"larger than the circuit \(5 neurons\)"):
        Intervention.random(real).at_size(6)


def test_a_random_control_without_its_circuit_cannot_be_resized(real):
    bare = RandomControl("ctl", random_control(real))  # no control_of, no seed
    with pytest.raises(InvalidArgumentError, match=r"Intervention.random\(circuit, seed\)"):
        bare.at_size(2)


# -- a new kind ---------------------------------------------------------------------------


def test_a_new_kind_is_one_small_class_that_works_everywhere(tiny_tokenizer):
    """The test of the design: a kind written as a user would (one class with an ``edit``)
    runs in this process and remotely with the same text, in a sweep, and bakes into
    weights with the hooks' logits, with no other code knowing it."""
    from dataclasses import dataclass
    from typing import ClassVar

    import workbench
    from tests.helpers import make_tiny_hf
    from workbench.bake import bake
    from workbench.evaluation.sweep import sweep
    from workbench.prompts import PromptSet
    from workbench.sites import Edit

    @dataclass(frozen=True, eq=False)
    class LayerGain(Intervention):
        """Every neuron of one layer times the multiplier."""

        layer: int = 0
        kind: ClassVar[str] = "layer-gain"

        def edit(self, model, multiplier):
            return Edit(scales={self.layer: torch.full((model.d_mlp,), float(multiplier))})

    hf = make_tiny_hf("llama")
    here = workbench.from_hf(hf, tiny_tokenizer, name="tiny-llama")
    there = workbench.from_hf(hf, tiny_tokenizer, name="tiny-llama", remote="local")
    gain = LayerGain("gain", layer=1)
    options = dict(max_new_tokens=5, batch_size=32)
    with gain.apply(here, 0.0):
        expected = workbench.generate(here, PROMPTS, **options)
    assert expected != workbench.generate(here, PROMPTS, **options)
    with gain.apply(there, 0.0):
        assert workbench.generate(there, PROMPTS, **options) == expected
    rows = sweep(here, [Intervention.baseline(), gain], [0.0], [PromptSet("tiny", PROMPTS)],
                 metrics=["refusal"], progress=False, **options)
    assert rows.loc[rows["kind"] == "layer-gain", "completion"].tolist() == expected
    ids = here.encode(PROMPTS[:1], here.prompting())["input_ids"]
    with torch.no_grad():
        with gain.apply(here, 0.0):
            hooked_logits = here.hf_model(ids).logits
        baked_logits = bake(here, gain, 0.0).hf_model(ids).logits
    torch.testing.assert_close(baked_logits, hooked_logits, rtol=1e-5, atol=1e-5)
    assert hooks_left(here.hf_model) == [] and there.edits == []
