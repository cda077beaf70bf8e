"""The fixed probe that fingerprints weights: the same vector every call, per width and dtype."""

import torch

from workbench.probe import fixed_probe


def test_the_probe_is_fixed_per_width_and_dtype():
    assert torch.equal(fixed_probe(7), fixed_probe(7))
    assert fixed_probe(7, torch.float64).dtype == torch.float64
    assert fixed_probe(7).shape == (7,) and fixed_probe(9).shape == (9,)
    assert not torch.equal(fixed_probe(7), torch.zeros(7))


def test_a_changed_weight_changes_its_fingerprint():
    weight = torch.randn(5, 7)
    before = weight @ fixed_probe(7)  # [5]
    weight[2, 3] += 1e-3
    after = weight @ fixed_probe(7)  # [5]
    assert torch.equal(before[[0, 1, 3, 4]], after[[0, 1, 3, 4]]) and before[2] != after[2]
