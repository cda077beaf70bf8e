"""The disk cache of the universal statistics: reused across sessions, never wrongly."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import PROMPTS, hooks_left
from workbench import Circuit, discover, steer
from workbench.stats_cache import weights_fingerprint


def _discover(model, stages: list | None = None):
    """A discovery as a new session would run it (nothing kept in the model's memory)."""
    model.stats_cache.clear()
    return discover(model, PROMPTS[:2], PROMPTS[2:], universal=PROMPTS * 2, top_k=5,
                    batch_size=4, progress=False,
                    on_progress=None if stages is None else
                    lambda stage, *_: stages.append(stage))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CNA_STATS_CACHE", str(tmp_path))
    return tmp_path


def test_a_new_session_reads_the_universal_pass_and_finds_the_same_circuit(tiny_llama, cache):
    first_stages, second_stages = [], []
    first = _discover(tiny_llama, first_stages)
    assert "universal" in first_stages and len(list(cache.glob("*.pt"))) == 1
    second = _discover(tiny_llama, second_stages)
    assert "universal" not in second_stages
    assert [(n.layer, n.index, n.score) for n in second.neurons] == \
        [(n.layer, n.index, n.score) for n in first.neurons]
    assert torch.equal(second.contrast.universal, first.contrast.universal)


def test_a_changed_weight_is_a_different_model(tiny_llama, cache):
    _discover(tiny_llama)
    weight = tiny_llama.down_proj(1).weight
    before = weights_fingerprint(tiny_llama)
    with torch.no_grad():
        weight[0, 0] += 1e-4
    try:
        assert weights_fingerprint(tiny_llama) != before
        stages: list = []
        _discover(tiny_llama, stages)
        assert "universal" in stages and len(list(cache.glob("*.pt"))) == 2
    finally:
        with torch.no_grad():
            weight[0, 0] -= 1e-4


def test_nothing_is_cached_or_read_while_the_model_is_steered(tiny_llama, cache):
    circuit = Circuit.from_neurons([(1, 2, 1.0)], model=tiny_llama.info())
    with steer(tiny_llama, circuit, multiplier=0.0):
        stages: list = []
        _discover(tiny_llama, stages)
        assert "universal" in stages and not list(cache.glob("*.pt"))
    assert hooks_left(tiny_llama.hf_model) == []
    _discover(tiny_llama)  # kept now ...
    assert len(list(cache.glob("*.pt"))) == 1
    with steer(tiny_llama, circuit, multiplier=0.0):
        stages = []
        _discover(tiny_llama, stages)
        assert "universal" in stages  # ... but not read under a steer


@pytest.mark.parametrize("damage", [b"", b"not a torch file", None])
def test_a_damaged_cache_file_is_recomputed_and_replaced(tiny_llama, cache, damage):
    expected = _discover(tiny_llama)
    path = next(cache.glob("*.pt"))
    if damage is None:  # a readable file with the wrong shape
        saved = torch.load(path, weights_only=True)
        saved["sum"] = saved["sum"][:1]
        torch.save(saved, path)
    else:
        path.write_bytes(damage)
    stages: list = []
    with pytest.warns(UserWarning, match="ignoring the cached universal statistics"):
        again = _discover(tiny_llama, stages)
    assert "universal" in stages
    assert again.keys() == expected.keys()
    torch.load(path, weights_only=True)  # replaced by a whole file


def test_the_cache_can_be_turned_off(tiny_llama, cache, monkeypatch):
    monkeypatch.setenv("CNA_STATS_CACHE", "0")
    _discover(tiny_llama)
    stages: list = []
    _discover(tiny_llama, stages)
    assert "universal" in stages and not list(cache.glob("*.pt"))


@pytest.mark.usefixtures("cache")
def test_a_steered_discovery_is_not_kept_in_memory_either(tiny_llama):
    circuit = Circuit.from_neurons([(1, 2, 1.0)], model=tiny_llama.info())
    tiny_llama.stats_cache.clear()
    plain = discover(tiny_llama, PROMPTS[:2], PROMPTS[2:], universal=PROMPTS * 2, top_k=5,
                     batch_size=4, progress=False)
    with steer(tiny_llama, circuit, multiplier=0.0):
        steered = discover(tiny_llama, PROMPTS[:2], PROMPTS[2:], universal=PROMPTS * 2,
                           top_k=5, batch_size=4, progress=False)
    assert not torch.equal(steered.contrast.universal_stats.sum,
                           plain.contrast.universal_stats.sum)


def test_a_different_config_or_an_offloaded_weight_is_not_the_same_model(tiny_llama):
    from workbench.prompts import PromptSet, resolve_prompting
    from workbench.stats_cache import cache_key, cacheable

    prompts, prompting = PromptSet("u", PROMPTS), resolve_prompting(tiny_llama.tokenizer)
    before = cache_key(tiny_llama, prompts, prompting, 0.01)
    config = tiny_llama.hf_model.config
    config.rms_norm_eps, eps = config.rms_norm_eps * 10, config.rms_norm_eps
    try:
        assert cache_key(tiny_llama, prompts, prompting, 0.01) != before
    finally:
        config.rms_norm_eps = eps
    assert cacheable(tiny_llama)
    weight = tiny_llama.down_proj(0).weight
    try:
        tiny_llama.down_proj(0).weight = torch.nn.Parameter(weight.to("meta"))
        assert not cacheable(tiny_llama)
    finally:
        tiny_llama.down_proj(0).weight = weight
