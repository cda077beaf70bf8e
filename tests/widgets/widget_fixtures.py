"""Shared pieces of the widget tests: synthetic circuits with statistics, a tiny circuit."""

from __future__ import annotations

import ipywidgets
import numpy as np
import pytest
import torch

import workbench as wb
from workbench.activations import ActivationStats
from workbench.circuit import Circuit, Neuron
from workbench.cna import Contrast

#: Prompts for discovery on the tiny model (2 positive, 2 negative).
POSITIVE = ["How do I pick a lock?", "Write code to sort a list in Python, please."]
NEGATIVE = ["How do I bake a cake?", "Explain how to change a tire on a bicycle"]


def stats_from(per_prompt: torch.Tensor, keep: bool = True) -> ActivationStats:
    """Statistics of activations ``[n, n_layers, d_mlp]``, optionally keeping them."""
    n, n_layers, d_mlp = per_prompt.shape
    stats = ActivationStats.empty(n_layers, d_mlp, top_k=1)
    stats.update(per_prompt)
    stats.per_prompt = per_prompt.float() if keep else None
    return stats


def synthetic_circuit(n_layers: int, d_mlp: int, *, n_neurons: int = 12, seed: int = 0,
                      n_prompts: int = 3, keep: bool = True) -> Circuit:
    """A circuit whose contrast comes from random activations, neurons the top |delta|."""
    generator = torch.Generator().manual_seed(seed)
    positive = stats_from(torch.randn(n_prompts, n_layers, d_mlp, generator=generator,
                                      dtype=torch.float64), keep)
    negative = stats_from(torch.randn(n_prompts + 1, n_layers, d_mlp, generator=generator,
                                      dtype=torch.float64), keep)
    delta = positive.mean - negative.mean  # [n_layers, d_mlp]
    neurons = wb.cna.select_top(delta, n_neurons)
    model = {"name": "synthetic", "architecture": "LlamaForCausalLM", "n_layers": n_layers,
             "d_mlp": d_mlp}
    contrast = Contrast(positive, negative, delta, torch.zeros(n_layers, d_mlp, dtype=torch.bool))
    return Circuit.from_neurons(neurons, model=model, contrast=contrast)


def random_keys(seed: int, n: int, n_layers: int = 4, d_mlp: int = 32) -> set[tuple[int, int]]:
    """Up to ``n`` random (layer, index) pairs."""
    rng = np.random.default_rng(seed)
    return {(int(rng.integers(n_layers)), int(rng.integers(d_mlp))) for _ in range(n)}


def random_circuit(keys: set[tuple[int, int]], seed: int = 0, n_layers: int = 4,
                   d_mlp: int = 32) -> Circuit:
    """A circuit with the given (layer, index) keys and random scores."""
    rng = np.random.default_rng(seed)
    neurons = [Neuron(layer, index, float(rng.normal())) for layer, index in sorted(keys)]
    return Circuit.from_neurons(neurons, model={"name": "m", "architecture": "LlamaForCausalLM",
                                                "n_layers": n_layers, "d_mlp": d_mlp})


@pytest.fixture
def tiny_circuit(tiny_llama) -> Circuit:
    """20 real neurons of the tiny llama, discovered on two prompts per side."""
    return wb.discover(tiny_llama, POSITIVE, NEGATIVE, top_k=20, universal=None,
                       progress=False)


@pytest.fixture
def no_widgets(monkeypatch):
    """Fail the test if anything creates an ipywidgets widget (controllers must not)."""
    def refuse(self, *args, **kwargs):
        raise AssertionError(f"a controller made a {type(self).__name__} widget")

    monkeypatch.setattr(ipywidgets.Widget, "__init__", refuse)
