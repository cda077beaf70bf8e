"""Packed oneDNN linears: same outputs as the plain layers, every forward restored, opt-outs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import pytest
import torch
from tests.helpers import PROMPTS, hooks_left
from torch import nn
from transformers import DynamicCache

from workbench import Circuit, Neuron, generate, steer
from workbench.activations import collect
from workbench import packing
from workbench.packing import (ENV_SWITCH, PLAIN_ABOVE_ROWS, enabled, kernel_works,
                                packed_linears, takes_plain_path)
from workbench.streaming import stream_generate
from workbench.prefix import cache_argument

pytestmark = pytest.mark.skipif(not kernel_works(), reason="oneDNN packed linear unavailable")


def logits(model) -> torch.Tensor:
    """Logits of the second decode step after the prompts.

    The prefill and each layer's first decode step run on the plain layers.
    """
    inputs = model.encode(PROMPTS, model.prompting())
    inputs.pop("position_ids", None)
    cache = DynamicCache(config=model.config)
    cache_name = cache_argument(model)
    mask = inputs["attention_mask"]
    with torch.no_grad():
        out = model.hf_model(**inputs, use_cache=True, **{cache_name: cache}).logits
        for _ in range(2):
            step = out[:, -1:].argmax(dim=-1)  # [batch, 1]
            mask = torch.cat([mask, torch.ones_like(step)], dim=1)
            out = model.hf_model(input_ids=step, attention_mask=mask, use_cache=True,
                                 **{cache_name: cache}).logits  # [batch, 1, vocab]
    return out


def own_forwards(module: nn.Module) -> dict[str, object]:
    """Each submodule's instance ``forward`` (absent for those that run their class's)."""
    return {name: vars(sub)["forward"] for name, sub in module.named_modules()
            if "forward" in vars(sub)}


def linears(module: nn.Module) -> list[nn.Linear]:
    return [sub for sub in module.modules() if type(sub) is nn.Linear]


def count_packed_calls(monkeypatch) -> list[int]:
    """Count the calls that run on the packed kernel."""
    calls = [0]
    original = packing._kernel

    def counting(*args):
        calls[0] += 1
        return original(*args)

    monkeypatch.setattr(packing, "_kernel", counting)
    return calls


def test_logits_match_the_plain_layers_on_every_architecture(tiny_model, monkeypatch):
    plain = logits(tiny_model)
    calls = count_packed_calls(monkeypatch)
    with packed_linears(tiny_model):
        packed = logits(tiny_model)
    assert calls[0] >= 1  # at least the language-model head (GPT-2's blocks use Conv1D)
    assert torch.allclose(packed, plain, atol=1e-4, rtol=1e-4)
    assert own_forwards(tiny_model.hf_model) == {}
    assert hooks_left(tiny_model.hf_model) == []


def test_every_plain_linear_is_swapped_and_restored(tiny_llama):
    layers = linears(tiny_llama.hf_model)
    with packed_linears(tiny_llama):
        assert all("forward" in vars(layer) for layer in layers)
    assert not any("forward" in vars(layer) for layer in layers)


def test_forwards_are_restored_when_the_block_raises(tiny_llama):
    with pytest.raises(RuntimeError, match="inside"):
        with packed_linears(tiny_llama):
            raise RuntimeError("inside")
    assert own_forwards(tiny_llama.hf_model) == {}


def test_nnsight_pass_through_forwards_are_packed_then_put_back(tiny_llama):
    collect(tiny_llama, PROMPTS, progress=False)  # a trace installs nnsight's forwards
    before = own_forwards(tiny_llama.hf_model)
    traced = [layer for layer in linears(tiny_llama.hf_model) if "forward" in vars(layer)]
    assert traced, "expected nnsight to leave its pass-through forward on traced layers"
    plain = logits(tiny_llama)
    with packed_linears(tiny_llama):
        assert all(isinstance(vars(layer)["forward"], packing._PackedForward)
                   for layer in traced)
        packed = logits(tiny_llama)
    assert own_forwards(tiny_llama.hf_model) == before  # the very same objects
    assert torch.allclose(packed, plain, atol=1e-4, rtol=1e-4)
    collect(tiny_llama, PROMPTS, progress=False)  # and tracing still works afterwards


def test_steering_hooks_act_on_packed_layers(tiny_model):
    circuit = Circuit.from_neurons([Neuron(0, 3, 2.0), Neuron(1, 7, -1.5)], model=tiny_model)
    with steer(tiny_model, circuit, multiplier=0.0):
        plain = logits(tiny_model)
        with packed_linears(tiny_model):
            packed = logits(tiny_model)
    assert torch.allclose(packed, plain, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(plain, logits(tiny_model), atol=1e-4)  # the ablation did act
    assert hooks_left(tiny_model.hf_model) == []


def test_greedy_completions_match_unpacked_generation(tiny_llama, monkeypatch):
    calls = count_packed_calls(monkeypatch)
    packed = generate(tiny_llama, PROMPTS, max_new_tokens=8)
    assert calls[0] > 0  # generate ran on the packed kernel
    monkeypatch.setenv(ENV_SWITCH, "0")
    assert generate(tiny_llama, PROMPTS, max_new_tokens=8) == packed
    assert hooks_left(tiny_llama.hf_model) == []


def test_the_first_token_never_waits_for_a_weight_check(tiny_llama, monkeypatch):
    checked: list[nn.Linear] = []
    check = packing._packed_weight
    monkeypatch.setattr(packing, "_packed_weight",
                        lambda layer: checked.append(layer) or check(layer))
    stream_generate(tiny_llama, PROMPTS[0], max_new_tokens=1)  # a prefill, nothing after
    assert checked == []
    stream_generate(tiny_llama, PROMPTS[0], max_new_tokens=3)
    assert set(checked) == set(linears(tiny_llama.hf_model))  # from the second decode call on
    assert own_forwards(tiny_llama.hf_model) == {}


@pytest.mark.parametrize("value", ["0", "false", "Off", " no "])
def test_environment_switch_turns_packing_off(tiny_llama, monkeypatch, value):
    monkeypatch.setenv(ENV_SWITCH, value)
    assert not enabled()
    with packed_linears(tiny_llama):
        assert own_forwards(tiny_llama.hf_model) == {}


def double_in_place(layer: nn.Linear) -> None:
    layer.weight.mul_(2.0)


def replace_the_parameter(layer: nn.Linear) -> None:
    layer.weight = nn.Parameter(torch.randn(8, 16))


def zero_a_column_through_data(layer: nn.Linear) -> None:
    layer.weight.data[:, 3] = 0.0  # no version bump: as peft's merge_adapter edits


@pytest.mark.parametrize("edit", [double_in_place, replace_the_parameter,
                                  zero_a_column_through_data])
def test_a_weight_edited_between_blocks_is_packed_again(edit, monkeypatch):
    torch.manual_seed(0)
    layer = nn.Linear(16, 8)
    x = torch.randn(4, 16)  # [rows, in]
    calls = count_packed_calls(monkeypatch)
    with torch.no_grad():
        with packed_linears(layer):
            first = [layer(x) for _ in range(2)][-1]  # the first call runs plain
        edit(layer)
        with packed_linears(layer):
            second = [layer(x) for _ in range(2)][-1]
        expected = nn.functional.linear(x, layer.weight, layer.bias)
    assert calls[0] == 2  # both on the kernel
    assert torch.allclose(second, expected, atol=1e-5)
    assert not torch.allclose(second, first, atol=1e-3)


def test_prefills_and_many_rows_run_on_the_plain_layer(monkeypatch):
    torch.manual_seed(0)
    layer = nn.Linear(256, 64)
    calls = count_packed_calls(monkeypatch)
    many = torch.randn(2, PLAIN_ABOVE_ROWS // 2 + 1, 256)  # [batch, pos, in]: over the limit
    few = many[:, :PLAIN_ABOVE_ROWS // 2].reshape(PLAIN_ABOVE_ROWS, 1, 256)  # at the limit
    with torch.no_grad():
        assert takes_plain_path(many) and not takes_plain_path(few)
        assert takes_plain_path(few.reshape(1, PLAIN_ABOVE_ROWS, 256))  # a prefill
        with packed_linears(layer):
            assert torch.equal(layer(many), nn.functional.linear(many, layer.weight, layer.bias))
            assert calls[0] == 0
            for expected_calls in (0, 1):  # the first call that could take the kernel does not
                assert torch.allclose(layer(few), nn.functional.linear(few, layer.weight,
                                                                       layer.bias), atol=1e-5)
                assert calls[0] == expected_calls


def test_a_kernel_error_inside_the_block_leaves_every_layer_plain(tiny_llama, monkeypatch):
    def failing(*args):
        raise RuntimeError("kernel failed")

    monkeypatch.setattr(packing, "_kernel", failing)
    with pytest.raises(RuntimeError, match="kernel failed"):
        with packed_linears(tiny_llama):
            logits(tiny_llama)
    assert own_forwards(tiny_llama.hf_model) == {}


def test_a_forward_replaced_inside_the_block_is_left_in_place():
    layer = nn.Linear(8, 4)
    replacement = lambda x: x  # noqa: E731
    with packed_linears(layer):
        layer.forward = replacement
    assert vars(layer)["forward"] is replacement


def test_a_remote_model_is_left_alone(tiny_llama):
    remote = types.SimpleNamespace(hf_model=tiny_llama.hf_model, remote=True)
    with packed_linears(remote):
        assert own_forwards(tiny_llama.hf_model) == {}


def test_gradients_flow_through_the_plain_path():
    torch.manual_seed(0)
    layer = nn.Linear(16, 8)
    x = torch.randn(4, 16, requires_grad=True)  # [rows, in]
    with packed_linears(layer):
        layer(x).sum().backward()
    assert layer.weight.grad is not None and x.grad is not None
    expected = torch.ones(4, 8) @ layer.weight  # d(sum)/dx
    assert torch.allclose(x.grad, expected.detach(), atol=1e-6)


def test_other_dtypes_and_subclasses_and_foreign_forwards_run_unchanged():
    class Scaled(nn.Linear):
        pass

    half = nn.Linear(8, 4).to(torch.bfloat16)
    sub = Scaled(8, 4)
    wrapped = nn.Linear(8, 4)
    foreign = lambda x: torch.zeros(x.shape[0], 4)  # noqa: E731 - e.g. an offload wrapper
    wrapped.forward = foreign
    model = nn.Sequential(half, sub, wrapped)
    with packed_linears(model):
        assert "forward" not in vars(half) and "forward" not in vars(sub)
        assert vars(wrapped)["forward"] is foreign
    assert vars(wrapped)["forward"] is foreign


def test_an_input_of_another_dtype_fails_as_the_plain_layer_does():
    layer = nn.Linear(8, 4)
    x = torch.randn(3, 8, dtype=torch.float64)
    with torch.no_grad():
        with pytest.raises(RuntimeError) as plain:
            layer(x)
        with packed_linears(layer), pytest.raises(RuntimeError) as packed:
            layer(x)
    assert str(packed.value) == str(plain.value)


def test_nested_blocks_restore_the_outer_swap_then_the_class_forward(tiny_llama):
    with packed_linears(tiny_llama):
        outer = own_forwards(tiny_llama.hf_model)
        with packed_linears(tiny_llama):  # inner sees the partials: not its class's forward
            assert own_forwards(tiny_llama.hf_model) == outer
        assert own_forwards(tiny_llama.hf_model) == outer
    assert own_forwards(tiny_llama.hf_model) == {}


# -- memory -------------------------------------------------------------------------------


#: Run in a fresh interpreter: in this long-lived test process the allocator reuses pages
#: that earlier tests freed, and the resident size would not grow with the packed copies.
MEASURE_RESIDENT = """
import json, os, torch
from torch import nn
from workbench.packing import packed_linears

def resident():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

torch.manual_seed(0)
stack = nn.Sequential(*[nn.Linear(1024, 1024) for _ in range(8)]).eval()  # 32 MiB
x = torch.randn(16, 1024)
with torch.no_grad():
    warm = nn.Linear(1024, 1024).eval()  # loads oneDNN's kernels, which are not the copies
    with packed_linears(warm):
        for _call in range(3):
            warm(x)
    stack(x)  # the plain pass: its buffers are not the packing's
    sizes = [resident()]
    for _block in range(2):
        with packed_linears(stack):
            for _call in range(3):  # the first decode-sized call runs plain, then packed
                stack(x)
        sizes.append(resident())
print(json.dumps({"weights": sum(layer.weight.numel() * 4 for layer in stack), "sizes": sizes}))
"""


@pytest.mark.skipif(packing.available_memory() is None, reason="no /proc/meminfo")
def test_a_packed_block_adds_one_copy_of_the_linear_weights_and_keeps_it():
    """The stated cost: one packed copy of the float32 linear weights (within 25%), made
    once and reused by the next block."""
    env = {**os.environ, ENV_SWITCH: "1"}
    done = subprocess.run([sys.executable, "-c", MEASURE_RESIDENT], env=env, check=True,
                          capture_output=True, text=True)
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    weights, (before, after_first, after_second) = measured["weights"], measured["sizes"]
    grown = after_first - before
    assert 0.5 * weights < grown < 1.25 * weights, (grown, weights)
    assert after_second - after_first < 0.1 * weights  # the second block reuses them


def test_packing_is_skipped_with_one_warning_when_the_copies_would_not_fit(monkeypatch):
    stack = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 64)).eval()
    monkeypatch.setattr(packing, "available_memory", lambda: (40_000, 1_000_000))
    with pytest.warns(UserWarning, match="run unpacked"):
        with packed_linears(stack):
            assert all("forward" not in vars(layer) for layer in stack)
    with packed_linears(stack):  # warned once per model
        assert all("forward" not in vars(layer) for layer in stack)
    monkeypatch.setattr(packing, "available_memory", lambda: (10**12, 10**12))
    with packed_linears(stack):
        assert all("forward" in vars(layer) for layer in stack)
