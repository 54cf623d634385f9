"""Membership-inference scoring (cardiolab.privacy.mia): ROC, AUC, low-FPR rule, DP bound, v -> eps."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cardiolab.core import CardiolabError
from cardiolab.privacy.mia import (N_TOO_SMALL, attack_summary, auc, balanced_accuracy, bootstrap_interval,
                                   dp_tpr_bound, plot_roc, roc_curve, tpr_at_fpr, v_to_epsilon)


def _labels(n_members, n_non):
    return np.r_[np.ones(n_members, bool), np.zeros(n_non, bool)]


def test_perfect_attack_has_auc_one():
    members = _labels(50, 150)
    scores = np.where(members, 1.0, 0.0) + np.linspace(0, 0.5, 200)
    assert auc(scores, members) == 1.0
    assert balanced_accuracy(scores, members) == 1.0
    assert tpr_at_fpr(scores, members)["1%"] == 1.0


def test_inverted_attack_has_auc_zero():
    members = _labels(10, 10)
    assert auc(np.where(members, 0.0, 1.0), members) == 0.0


def test_random_attack_has_auc_near_half():
    rng = np.random.default_rng(0)
    members = _labels(500, 500)
    a = auc(rng.normal(size=1000), members)
    assert abs(a - 0.5) < 0.05


def test_ties_count_one_half():
    assert auc(np.zeros(6), _labels(3, 3)) == 0.5


def test_roc_curve_runs_from_origin_to_one():
    rng = np.random.default_rng(1)
    fpr, tpr, _ = roc_curve(rng.normal(size=30), _labels(10, 20))
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0)


@pytest.mark.parametrize("n_non, expect_1, expect_01", [(99, False, False), (100, True, False),
                                                         (999, True, False), (1000, True, True)])
def test_low_fpr_only_with_enough_non_members(n_non, expect_1, expect_01):
    rng = np.random.default_rng(2)
    members = _labels(20, n_non)
    out = tpr_at_fpr(rng.normal(size=len(members)) + members, members)
    assert (out["1%"] != N_TOO_SMALL) == expect_1
    assert (out["0.1%"] != N_TOO_SMALL) == expect_01


def test_bootstrap_interval_is_seeded_and_brackets_the_auc():
    rng = np.random.default_rng(3)
    members = _labels(40, 40)
    scores = rng.normal(size=80) + members
    a = bootstrap_interval(scores, members, n_boot=200, seed=7)
    assert a == bootstrap_interval(scores, members, n_boot=200, seed=7)
    assert a[0] <= auc(scores, members) <= a[1]


def test_attack_summary_keys():
    members = _labels(5, 5)
    out = attack_summary(np.arange(10.0), members, n_boot=20)
    assert set(out) == {"auc", "auc_ci95", "tpr_at_fpr", "balanced_accuracy", "n_members", "n_nonmembers"}


def test_one_class_is_rejected():
    with pytest.raises(CardiolabError, match="non-members"):
        auc(np.arange(3.0), np.ones(3, bool))


def test_dp_bound():
    np.testing.assert_allclose(dp_tpr_bound(0.01, 1.0, 1e-5), np.e * 0.01 + 1e-5)
    assert dp_tpr_bound(0.5, 3.0) == 1.0
    assert dp_tpr_bound(0.2, 0.0) == pytest.approx(0.2)
    with pytest.raises(CardiolabError, match="epsilon"):
        dp_tpr_bound(0.1, -1.0)


def test_plot_roc_is_log_log():
    fig = plot_roc({"loss": (np.array([0, 0.5, 1.0]), np.array([0, 0.7, 1.0]))}, dp=(1.0, 1e-5))
    ax = fig.axes[0]
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")


def test_v_to_epsilon_edge_cases():
    v, x_t = torch.randn(2, 3), torch.randn(2, 3)
    torch.testing.assert_close(v_to_epsilon(v, x_t, 1.0), v)       # no noise yet: v = eps
    torch.testing.assert_close(v_to_epsilon(v, x_t, 0.0), x_t)     # pure noise: x_t = eps


def test_v_to_epsilon_inverts_the_scheduler():
    from cardiolab.diffusion import create_scheduler, training_target

    sch = create_scheduler()
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 2, 2, 4, 4, 2, generator=g), torch.randn(3, 2, 2, 4, 4, 2, generator=g)
    t = torch.tensor([10, 150, 290])
    x_t = sch.add_noise(x0, noise, t)
    v = training_target(sch, x0, noise, t)
    torch.testing.assert_close(v_to_epsilon(v, x_t, sch.alphas_cumprod[t]), noise, atol=1e-5, rtol=1e-5)
