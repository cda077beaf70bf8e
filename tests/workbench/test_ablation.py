"""Directional ablation: the residual stream loses the direction everywhere, for every
architecture; multipliers scale each write's component; hooks are always removed."""

from __future__ import annotations

import threading

import pytest
import torch
from tests.helpers import PROMPTS, hooks_left

from workbench import ablate_direction, generate, scale_direction
from workbench.ablation import residual_writers, unit_direction
from workbench.direction import RefusalDirection
from workbench.errors import SteeringError
from workbench.locks import model_lock


def random_direction(model, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    vector = torch.randn(model.d_model, generator=generator)  # [d_model]
    return vector / vector.norm()


def forward(model) -> torch.Tensor:
    inputs = model.encode(PROMPTS, model.prompting())
    with torch.no_grad():
        return model.hf_model(**inputs).logits  # [batch, pos, vocab]


def read_residual(model, run) -> dict[str, list[torch.Tensor]]:
    """Run ``run()``; return every block's input and output residual stream, per pass.

    The reading hooks are registered last, so they see what the ablation hooks produced.
    """
    seen: dict[str, list[torch.Tensor]] = {}

    def keep(name: str, tensor: torch.Tensor) -> None:
        seen.setdefault(name, []).append(tensor.detach().clone())

    handles = []
    for layer, block in enumerate(model.layers):
        handles.append(block.register_forward_pre_hook(
            lambda _m, args, kwargs, layer=layer: keep(
                f"input {layer}", args[0] if args else kwargs["hidden_states"]),
            with_kwargs=True))
        handles.append(block.register_forward_hook(
            lambda _m, _args, output, layer=layer: keep(
                f"output {layer}", output[0] if isinstance(output, tuple) else output)))
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return seen


def largest_projection(streams: dict[str, list[torch.Tensor]], r: torch.Tensor) -> float:
    """max |x . r| / max |x| over every stream, pass, row and position."""
    worst = 0.0
    for tensors in streams.values():
        for x in tensors:  # [batch, pos, d_model]
            projection = (x.double() @ r.double()).abs().max()
            worst = max(worst, float(projection / x.double().norm(dim=-1).max()))
    return worst


def randomise_norm_weights(model, seed: int = 0) -> None:
    """Give every norm a random per-coordinate scale (random init leaves them uniform).

    A uniform norm only rescales its input, so projecting *before* Gemma-2/3's or OLMo-2's
    post-branch norms would look right; a trained norm's per-coordinate weights rotate
    the write off the projected subspace, and so do these.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, module in model.hf_model.named_modules():
            weight = getattr(module, "weight", None)
            if "norm" in type(module).__name__.lower() and isinstance(weight, torch.Tensor):
                weight.copy_(0.5 + torch.rand(weight.shape, generator=generator))


def test_ablation_leaves_no_component_along_the_direction_anywhere(tiny_model):
    randomise_norm_weights(tiny_model)
    r = random_direction(tiny_model)
    plain = read_residual(tiny_model, lambda: forward(tiny_model))
    assert largest_projection(plain, r) > 0.05  # the direction is there to begin with
    with ablate_direction(tiny_model, r):
        ablated = read_residual(tiny_model, lambda: forward(tiny_model))
    assert set(ablated) == {f"{side} {layer}" for side in ("input", "output")
                            for layer in range(tiny_model.n_layers)}
    assert largest_projection(ablated, r) < 1e-5, tiny_model.name
    assert hooks_left(tiny_model.hf_model) == []


def test_ablation_changes_the_logits_and_restores_them(tiny_model):
    reference = forward(tiny_model)
    with ablate_direction(tiny_model, random_direction(tiny_model)):
        assert not torch.allclose(forward(tiny_model), reference)
    assert torch.equal(forward(tiny_model), reference)


def test_ablation_holds_at_generated_positions(tiny_llama):
    r = random_direction(tiny_llama, seed=3)
    with ablate_direction(tiny_llama, r):
        streams = read_residual(tiny_llama, lambda: generate(tiny_llama, PROMPTS[:2],
                                                             max_new_tokens=4, batch_size=2))
    # The prompt passes (the shared prefix, then the rest), then one pass of a single
    # position per generated token after the first (KV cache).
    widths = [stream.shape[1] for stream in streams["output 1"]]
    assert len(widths) == 5 and widths[-3:] == [1, 1, 1]
    assert widths[0] > 1 and widths[1] > 1
    assert largest_projection(streams, r) < 1e-5


@pytest.mark.parametrize("multiplier", [0.5, 2.0, -1.0])
def test_each_write_keeps_m_times_its_component(tiny_model, multiplier):
    """The first block's input (the embedding output) is a write no earlier hook changes."""
    r = random_direction(tiny_model, seed=1)
    x = read_residual(tiny_model, lambda: forward(tiny_model))["input 0"][0]
    with scale_direction(tiny_model, r, multiplier):
        scaled = read_residual(tiny_model, lambda: forward(tiny_model))["input 0"][0]
    expected = x - (1 - multiplier) * (x @ r).unsqueeze(-1) * r
    torch.testing.assert_close(scaled, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(scaled @ r, multiplier * (x @ r), rtol=1e-4, atol=1e-5)


def test_multiplier_one_is_the_unchanged_model(tiny_llama):
    reference = forward(tiny_llama)
    with scale_direction(tiny_llama, random_direction(tiny_llama), 1.0):
        assert hooks_left(tiny_llama.hf_model)
        assert torch.equal(forward(tiny_llama), reference)


def test_the_direction_is_normalised_and_may_be_a_refusal_direction(tiny_llama):
    r = random_direction(tiny_llama, seed=2)
    with ablate_direction(tiny_llama, 7.5 * r.double()):
        scaled = forward(tiny_llama)
    found = RefusalDirection(direction=r, layer=1, scores=(0.0, 1.0), candidates=(0, 1),
                             norm=1.0, chosen="given", model=tiny_llama.info(),
                             prompting={}, prompts={})
    with ablate_direction(tiny_llama, found):
        torch.testing.assert_close(forward(tiny_llama), scaled)
    assert torch.allclose(unit_direction(tiny_llama, 7.5 * r).norm(), torch.tensor(1.0))


def test_writers_are_what_each_family_adds_to_the_residual_stream(tiny_model):
    paths = [path for path, _ in residual_writers(tiny_model)]
    assert len(paths) == 2 * tiny_model.n_layers
    family = tiny_model.adapter.name
    expected = {"gemma2": ("post_attention_layernorm", "post_feedforward_layernorm"),
                "gemma3": ("post_attention_layernorm", "post_feedforward_layernorm"),
                "olmo2": ("post_attention_layernorm", "post_feedforward_layernorm"),
                "gpt2": ("attn", "mlp"), "gpt_neox": ("attention", "mlp")}
    attn, mlp = expected.get(family, ("self_attn", "mlp"))
    assert paths[:2] == [f"{tiny_model.layers_path}.0.{attn}",
                         f"{tiny_model.layers_path}.0.{mlp}"]


def test_hooks_are_removed_after_an_exception(tiny_llama):
    with pytest.raises(KeyboardInterrupt):
        with ablate_direction(tiny_llama, random_direction(tiny_llama)):
            assert len(hooks_left(tiny_llama.hf_model)) == 1 + 2 * tiny_llama.n_layers
            raise KeyboardInterrupt
    assert hooks_left(tiny_llama.hf_model) == []
    with pytest.raises(RuntimeError, match="boom"):
        with scale_direction(tiny_llama, random_direction(tiny_llama), 2.0):
            raise RuntimeError("boom")
    assert hooks_left(tiny_llama.hf_model) == []


def test_the_model_lock_is_held_while_the_hooks_are_in_place(tiny_llama):
    lock = model_lock(tiny_llama)
    got: list[bool] = []

    def try_lock() -> None:
        acquired = lock.acquire(blocking=False)
        got.append(acquired)
        if acquired:
            lock.release()

    with ablate_direction(tiny_llama, random_direction(tiny_llama)):
        thread = threading.Thread(target=try_lock)
        thread.start()
        thread.join()
    thread = threading.Thread(target=try_lock)
    thread.start()
    thread.join()
    assert got == [False, True]


@pytest.mark.parametrize("bad, message", [
    (torch.ones(65), r"shape \[d_model\] = \[64\] for this model, not \[65\]"),
    (torch.ones(2, 64), r"not \[2, 64\]"),
    (torch.ones(64, dtype=torch.long), "float tensor"),
    ([1.0] * 64, "not list"),
    (torch.zeros(64), "finite and non-zero"),
    (torch.full((64,), float("nan")), "finite and non-zero"),
])
def test_a_wrong_direction_is_refused(tiny_llama, bad, message):
    with pytest.raises(SteeringError, match=message):
        with ablate_direction(tiny_llama, bad):
            pass
    assert hooks_left(tiny_llama.hf_model) == []


def test_a_bad_multiplier_is_refused(tiny_llama):
    with pytest.raises(SteeringError, match="multiplier must be"):
        with scale_direction(tiny_llama, random_direction(tiny_llama), "0"):
            pass
    assert hooks_left(tiny_llama.hf_model) == []
