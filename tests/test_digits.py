"""The embedded digits benchmark: splits, corruptions and OOD are fixed by split_seed."""

import numpy as np
import pytest
import torch
from uqbench.datamodules.corruptions import TABLES, corrupt
from uqbench.datamodules.digits import Digits, to_28x28

DIGITS_CORRUPTIONS = tuple(TABLES["digits"])


@pytest.fixture(scope="module")
def digits():
    dm = Digits()
    dm.setup()
    return dm


def test_split_sizes_are_disjoint_and_stratified(digits):
    sizes = [len(digits.train_set), len(digits.dev_set), len(digits.test_set)]
    assert sizes == [1293, 144, 360]
    for split in (digits.dev_set, digits.test_set):
        counts = torch.bincount(split.tensors[1], minlength=10)
        share = counts.float() / counts.sum()
        assert share.min() > 0.08 and share.max() < 0.12  # each class ~10%
    x = [s.tensors[0].flatten(1) for s in (digits.train_set, digits.dev_set, digits.test_set)]
    rows = [set(map(tuple, t.numpy().round(5).tolist())) for t in x]
    assert not rows[1] & rows[2] and len(rows[0] & rows[2]) <= 2  # sklearn digits has duplicates


def test_shapes_and_normalization(digits):
    x, _ = digits.train_set.tensors
    assert x.shape[1:] == (1, 28, 28)
    assert abs(x.mean().item()) < 1e-4 and abs(x.std().item() - 1) < 1e-3


def test_splits_depend_on_split_seed_not_on_the_training_seed(digits):
    torch.manual_seed(123)
    again = Digits()
    again.setup()
    torch.testing.assert_close(again.test_set.tensors[0], digits.test_set.tensors[0])
    other = Digits(split_seed=1)
    other.setup()
    assert not torch.equal(other.test_set.tensors[1], digits.test_set.tensors[1])


def test_eval_sets_cover_every_corruption_and_severity(digits):
    names = [s.name for s in digits.eval_sets()]
    assert len(DIGITS_CORRUPTIONS) == 8
    assert names[0] == "id" and names[-1] == "ood/photos"
    assert len(names) == 2 + 5 * len(DIGITS_CORRUPTIONS)
    assert "cid/gaussian_noise/3" in names


@pytest.mark.parametrize("name", DIGITS_CORRUPTIONS)
def test_corruptions_are_deterministic_in_range_and_grow_with_severity(name):
    from sklearn.datasets import load_digits

    x = to_28x28(torch.tensor(load_digits().images[:32] / 16.0))
    distances = []
    for severity in range(1, 6):
        a = corrupt(x, name, severity, seed=0, table="digits")
        torch.testing.assert_close(a, corrupt(x, name, severity, seed=0, table="digits"))
        assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
        distances.append((a - x).abs().mean().item())
    assert distances[0] > 0
    assert distances[-1] > distances[0]


def test_corrupt_rejects_unknown_names_and_severities():
    with pytest.raises(ValueError, match="unknown corruption 'fog' for the digits table"):
        corrupt(torch.zeros(1, 1, 4, 4), "fog", 1, 0, table="digits")
    with pytest.raises(ValueError, match="severity must be 1-5"):
        corrupt(torch.zeros(1, 1, 4, 4), "contrast", 6, 0, table="digits")


def test_cid_and_ood_sets_are_deterministic(digits):
    a = digits.cid_set("shot_noise", 3).tensors[0]
    torch.testing.assert_close(a, digits.cid_set("shot_noise", 3).tensors[0])
    ood_x, ood_y = digits.ood_set("photos").tensors
    assert ood_x.shape == (360, 1, 28, 28) and (ood_y == -1).all()
    torch.testing.assert_close(ood_x, digits.ood_set("photos").tensors[0])
    # OOD patches are prepared like digits: 17 ink levels before the resize, same normalization.
    raw = ood_x * digits.std + digits.mean
    assert raw.min() > -1e-5 and raw.max() < 1 + 1e-5
    assert np.unique(raw[:, :, :4].numpy().round(4)).tolist() == [0.0]  # the zero-padded frame
