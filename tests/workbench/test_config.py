"""DiscoverConfig: validated once, the one place of each discovery default, saved in circuits."""

from __future__ import annotations

import pytest

import workbench
from tests.helpers import PROMPTS
from workbench.circuit import Circuit
from workbench.cli import build_parser
from workbench.config import DiscoverConfig
from workbench.errors import InvalidArgumentError


@pytest.mark.parametrize("bad, message", [
    (dict(fraction=0), "fraction must be a number in \\(0, 1\\]"),
    (dict(fraction=True), "fraction"),
    (dict(top_k=0), "top_k must be a positive integer"),
    (dict(top_k=2.5), "top_k"),
    (dict(universal_threshold=1.5), "universal_threshold must be in \\(0, 1\\]"),
    (dict(max_imbalance=0.5), "max_imbalance must be a ratio >= 1 or None"),
    (dict(batch_size=0), "batch_size must be a positive integer"),
    (dict(exclude_layers=3), "exclude_layers must be a list"),
])
def test_bad_settings_are_refused_when_the_config_is_made(bad, message):
    with pytest.raises(InvalidArgumentError, match=message):
        DiscoverConfig(**bad)


def test_top_k_makes_the_fraction_irrelevant_and_unknown_names_are_listed():
    assert DiscoverConfig(fraction=None, top_k=5).top_k == 5
    with pytest.raises(InvalidArgumentError, match="unknown discovery setting.*'topk'.*'top_k'"):
        DiscoverConfig().replace(topk=5)


def test_the_command_line_shows_the_config_defaults():
    args = build_parser().parse_args(["discover", "--positive", "a", "--negative", "b",
                                      "--out", "c.json"])
    defaults = DiscoverConfig()
    assert (args.fraction, args.universal_threshold, args.batch_size) == (
        defaults.fraction, defaults.universal_threshold, defaults.batch_size)


def test_discover_saves_its_config_and_the_saved_config_rediscovers_the_circuit(tiny_llama,
                                                                              tmp_path):
    positive, negative = PROMPTS[:2], PROMPTS[2:]
    circuit = workbench.discover(tiny_llama, positive, negative, top_k=7, exclude_layers=[-1],
                                 universal=None, progress=False)
    saved = Circuit.load(circuit.save(tmp_path / "c.json"))
    config = DiscoverConfig.from_dict(saved.selection["config"])
    assert config == DiscoverConfig(top_k=7, exclude_layers=(-1,))
    again = workbench.discover(tiny_llama, positive, negative, config, universal=None,
                               progress=False)
    assert again.neurons == circuit.neurons and {n.layer for n in again.neurons} == {0}
    overridden = workbench.discover(tiny_llama, positive, negative, config, top_k=3,
                                    universal=None, progress=False)
    assert overridden.neurons == circuit.neurons[:3]
    by_fraction = workbench.discover(tiny_llama, positive, negative, config, fraction=0.02,
                                     universal=None, progress=False)  # 0.02 * 192 neurons
    assert len(by_fraction) == 4 and by_fraction.selection["config"]["top_k"] is None
    with pytest.raises(InvalidArgumentError, match="unknown discovery setting"):
        workbench.discover(tiny_llama, positive, negative, fractoin=0.1)


def test_discover_takes_a_saved_config_dict_and_refuses_anything_else(tiny_llama):
    positive, negative = PROMPTS[:2], PROMPTS[2:]
    circuit = workbench.discover(tiny_llama, positive, negative, top_k=4, universal=None,
                                 progress=False)
    again = workbench.discover(tiny_llama, positive, negative, circuit.selection["config"],
                               universal=None, progress=False)
    assert again.neurons == circuit.neurons
    with pytest.raises(InvalidArgumentError, match="config must be a DiscoverConfig"):
        workbench.discover(tiny_llama, positive, negative, "diverse")
