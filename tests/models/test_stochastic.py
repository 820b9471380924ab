"""Per-sample keyed random draws: stochastic depth that does not depend on how a batch is split."""

import pytest
import torch

from openjepa.models.layers import DropPath
from openjepa.models.stochastic import sample_keys, sample_uniform


def test_draws_depend_on_the_sample_not_on_the_batch_split():
    slots = torch.arange(8)
    with sample_keys(3, 11, slots):
        whole = sample_uniform(8, torch.device("cpu"))
        second_call = sample_uniform(8, torch.device("cpu"))
    halves = []
    for part in (slots[:4], slots[4:]):
        with sample_keys(3, 11, part):
            halves.append(sample_uniform(4, torch.device("cpu")))
    torch.testing.assert_close(torch.cat(halves), whole, rtol=0, atol=0)
    assert not torch.equal(whole, second_call)  # each call of the step draws anew
    with sample_keys(3, 12, slots):
        assert not torch.equal(sample_uniform(8, torch.device("cpu")), whole)  # and each step
    assert whole.min() >= 0 and whole.max() < 1


def test_repeated_rows_get_their_own_draws_and_bad_shapes_fail():
    with sample_keys(0, 0, torch.tensor([5, 9])):
        u = sample_uniform(6, torch.device("cpu"))  # each sample repeated 3 times (sample-major)
        assert len(set(u.tolist())) == 6
        with pytest.raises(ValueError, match="multiple"):
            sample_uniform(5, torch.device("cpu"))


def test_keyed_draws_are_uniform():
    with sample_keys(1, 2, torch.arange(20000)):
        u = sample_uniform(20000, torch.device("cpu"))
    counts = torch.histc(u, bins=10, min=0, max=1)
    assert (counts - 2000).abs().max() < 200  # ~4.5 sigma for a binomial(20000, 0.1)


def test_drop_path_keeps_the_expected_fraction_and_rescales():
    drop = DropPath(0.25).train()
    x = torch.ones(4000, 3, 2)
    with sample_keys(0, 0, torch.arange(4000)):
        y = drop(x)
    kept = (y[:, 0, 0] > 0).float().mean()
    assert abs(kept - 0.75) < 0.03
    assert torch.allclose(y[y > 0], torch.tensor(1 / 0.75))
    assert torch.equal(drop.eval()(x), x)
