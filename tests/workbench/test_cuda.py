"""The library on a GPU: loading, collection, discovery and steering on CUDA in bfloat16.

Skipped where torch sees no CUDA device (as on the 2-core CI machines). The model is a
tiny random-init llama saved to a local folder and loaded the way a hub model is, so the
GPU defaults (``device_map="auto"``, bfloat16) are the ones exercised.
"""

from __future__ import annotations

import pytest
import torch
from tests.helpers import PROMPTS, hooks_left, make_tiny_hf

import workbench
from workbench.activations import collect
from workbench.evaluation import Intervention, summary, sweep

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]


@pytest.fixture(scope="module")
def saved_llama(tmp_path_factory, tiny_tokenizer):
    folder = tmp_path_factory.mktemp("tiny-llama")
    make_tiny_hf("llama", max_position_embeddings=512).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def on_gpu(saved_llama):
    return workbench.load_model(saved_llama)


def test_load_model_defaults_to_the_gpu_in_bfloat16(on_gpu):
    assert on_gpu.device.type == "cuda" and on_gpu.dtype == torch.bfloat16


def test_gpu_activations_match_the_cpu_in_float32(on_gpu, saved_llama):
    on_cpu = workbench.load_model(saved_llama, device="cpu")
    gpu = collect(on_gpu, PROMPTS, progress=False).mean  # [n_layers, d_mlp] float64
    cpu = collect(on_cpu, PROMPTS, progress=False).mean
    assert gpu.device.type == "cpu" and gpu.dtype == torch.float64  # statistics come home
    scale = cpu.abs().max()
    assert (gpu - cpu).abs().max() <= 0.03 * scale  # bfloat16 has 8 bits of mantissa


def test_discovery_is_deterministic_on_the_gpu(on_gpu):
    first = workbench.discover(on_gpu, PROMPTS[:2], PROMPTS[2:], universal=PROMPTS, top_k=5,
                               progress=False)
    second = workbench.discover(on_gpu, PROMPTS[:2], PROMPTS[2:], universal=PROMPTS, top_k=5,
                                progress=False)
    assert first == second


def test_steering_on_the_gpu_ablates_exactly_and_leaves_no_hook(on_gpu):
    circuit = workbench.Circuit.from_neurons([(0, 3, 1.0), (1, 7, -1.0)], model=on_gpu)
    seen = []
    with workbench.steer(on_gpu, circuit, multiplier=0.0):
        # registered after the steering hook, so it reads what the down-projection gets
        handle = on_gpu.down_proj(1).register_forward_pre_hook(
            lambda _module, args: seen.append(args[0][..., 7].detach().clone()))
        try:
            on_gpu.hf_model(**on_gpu.encode(PROMPTS[:2], on_gpu.prompting()))
        finally:
            handle.remove()
    assert seen and seen[0].is_cuda and torch.count_nonzero(seen[0]) == 0
    unchanged = workbench.generate(on_gpu, PROMPTS, max_new_tokens=4)
    assert workbench.generate(on_gpu, PROMPTS, circuit=circuit, multiplier=1.0,
                              max_new_tokens=4) == unchanged
    assert not hooks_left(on_gpu.hf_model)


def test_caa_and_the_sweep_run_on_the_gpu(on_gpu):
    circuit = workbench.discover(on_gpu, PROMPTS[:2], PROMPTS[2:], top_k=5, progress=False)
    vector = workbench.caa_vector(on_gpu, PROMPTS[:2], PROMPTS[2:], progress=False)
    prompts = workbench.PromptSet("prompts", PROMPTS)
    rows = sweep(on_gpu, [Intervention.cna(circuit), Intervention.caa(vector),
                          Intervention.random(circuit)], [0.0, 2.0], [prompts],
                 max_new_tokens=4, progress=False)
    assert len(summary(rows)) == 6 and rows["completion"].map(type).eq(str).all()
    assert not hooks_left(on_gpu.hf_model)
