import math

import torch

from clrepro.analysis.representation import fraction_inactive, french_overlap, hoyer_sparsity, mean_pairwise_cosine


def test_mean_pairwise_cosine_matches_a_hand_computed_example():
    codes = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0], [3.0, 0.0]])
    groups = torch.tensor([0, 0, 1, 1])
    # cross-group pairs: (0,2) 0, (0,3) 1, (1,2) 1/√2, (1,3) 1/√2
    expected = (0 + 1 + 2 / math.sqrt(2)) / 4
    assert math.isclose(mean_pairwise_cosine(codes, groups), expected, rel_tol=1e-9)
    # one group only: no pair to average
    assert math.isnan(mean_pairwise_cosine(codes, torch.zeros(4)))


def test_french_overlap_matches_a_hand_computed_example():
    codes = torch.tensor([[1.0, 0.5, 0.0], [0.2, 0.8, 0.4], [0.6, 0.6, 0.6]])
    groups = torch.tensor([0, 1, 1])
    # pairs (0,1): min = (0.2, 0.5, 0) → 0.7/3 ; (0,2): (0.6, 0.5, 0) → 1.1/3
    assert math.isclose(french_overlap(codes, groups), (0.7 / 3 + 1.1 / 3) / 2, rel_tol=1e-6)


def test_hoyer_sparsity_is_one_for_one_hot_and_zero_for_uniform_codes():
    assert math.isclose(hoyer_sparsity(torch.eye(4)), 1.0)
    assert math.isclose(hoyer_sparsity(torch.full((3, 4), 0.7)), 0.0, abs_tol=1e-12)
    # [1, 1, 0, 0]: (2 − 2/√2) / (2 − 1) = 2 − √2
    assert math.isclose(hoyer_sparsity(torch.tensor([[1.0, 1.0, 0.0, 0.0]])), 2 - math.sqrt(2))


def test_fraction_inactive():
    codes = torch.tensor([[0.0, 0.5], [0.05, 0.0]])
    assert fraction_inactive(codes) == 0.5
    assert fraction_inactive(codes, threshold=0.1) == 0.75
