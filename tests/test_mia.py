"""Membership-inference scoring (cardiolab.metrics.privacy): ROC, AUC, low-FPR rule, DP bound, v -> eps."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cardiolab.core import CardiolabError
from cardiolab.diffusion import v_to_epsilon
from cardiolab.metrics.privacy import (N_TOO_SMALL, attack_summary, auc, balanced_accuracy, bootstrap_interval,
                                       clopper_pearson, dp_bound_check, dp_tpr_bound, one_run_epsilon,
                                       one_run_p_value, operating_points, roc_curve, tpr_at_fpr)
from cardiolab.plots.audits import plot_mia_roc


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
    assert set(out) == {"auc", "auc_ci95", "tpr_at_fpr", "operating_points_ci95", "balanced_accuracy", "n_members",
                        "n_nonmembers"}
    assert {"exceeds_dp_bound", "epsilon_lower_bound"} <= set(attack_summary(np.arange(10.0), members, n_boot=20,
                                                                              dp=(1.0, 1e-5)))


def test_clopper_pearson_is_the_exact_binomial_interval():
    from scipy.stats import binom

    assert clopper_pearson(0, 100) == (0.0, pytest.approx(1 - 0.025 ** (1 / 100)))
    assert clopper_pearson(50, 50) == (pytest.approx(0.025 ** (1 / 50)), 1.0)
    lo, hi = clopper_pearson(5, 100)
    assert binom.sf(4, 100, lo) == pytest.approx(0.025)      # P(X >= 5 | lo) = 2.5 %
    assert binom.cdf(5, 100, hi) == pytest.approx(0.025)     # P(X <= 5 | hi) = 2.5 %
    with pytest.raises(CardiolabError, match="Clopper-Pearson"):
        clopper_pearson(3, 2)


def test_operating_points_need_enough_non_members_and_bracket_the_rates():
    rng = np.random.default_rng(0)
    members = _labels(100, 1000)
    scores = rng.normal(size=1100) + 2 * members
    points = operating_points(scores, members)
    for key in ("1%", "0.1%"):
        p = points[key]
        assert p["fpr"] <= float(key[:-1]) / 100
        assert p["tpr_ci"][0] <= p["tpr"] <= p["tpr_ci"][1]
        assert p["fpr_ci"][0] <= p["fpr"] <= p["fpr_ci"][1]
        assert p["tpr"] == tpr_at_fpr(scores, members)[key]
    assert operating_points(scores[:150], members[:150])["1%"] == N_TOO_SMALL   # 50 non-members


def test_dp_bound_is_checked_on_the_intervals_not_the_point_estimates():
    members = _labels(100, 100)
    few = np.r_[np.full(5, 10.0), np.zeros(95), np.zeros(100)]      # 5 members above every non-member
    points = operating_points(few, members)
    assert points["1%"]["tpr"] > float(dp_tpr_bound(points["1%"]["fpr"], 0.5, 1e-5))   # the point beats the bound
    assert not dp_bound_check(points, 0.5, 1e-5)["exceeds_dp_bound"]                   # its interval does not
    perfect = operating_points(np.r_[np.ones(100), np.zeros(1000)], _labels(100, 1000))
    check = dp_bound_check(perfect, 1.0, 1e-5)
    assert check["exceeds_dp_bound"]
    lower = np.log((0.025 ** (1 / 100) - 1e-5) / (1 - 0.025 ** (1 / 1000)))          # TPR_lo / FPR_hi
    assert check["epsilon_lower_bound"] == pytest.approx(lower)
    assert not dp_bound_check(perfect, lower + 0.1, 1e-5)["exceeds_dp_bound"]


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
    fig = plot_mia_roc({"loss": (np.array([0, 0.5, 1.0]), np.array([0, 0.7, 1.0]))}, dp=(1.0, 1e-5))
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


def test_one_run_p_value_is_the_binomial_tail_at_delta_zero_and_grows_with_delta():
    assert one_run_p_value(100, 10, 10, 0.0, 0.0) == pytest.approx(0.5 ** 10)
    assert one_run_p_value(100, 10, 8, 1.0, 1e-3) > one_run_p_value(100, 10, 8, 1.0, 0.0)
    with pytest.raises(CardiolabError, match="one-run"):
        one_run_p_value(10, 20, 5, 1.0, 0.0)


def test_one_run_epsilon_of_perfect_random_and_dp_guesses():
    rng = np.random.default_rng(0)
    included = rng.random(1000) < 0.5
    perfect = one_run_epsilon(included.astype(float), included, k_pos=100)
    assert perfect["correct"] == 100
    p = 0.05 ** (1 / 100)                                   # P[Bin(100, p) = 100] = 0.05
    assert perfect["epsilon_lower_bound"] == pytest.approx(np.log(p / (1 - p)), abs=1e-3)
    assert one_run_epsilon(rng.random(1000), included, k_pos=100, k_neg=100)["epsilon_lower_bound"] == 0.0
    # randomized response at epsilon 1: each canary's score says the truth with probability e / (1 + e)
    truth = rng.random(2000) < np.e / (1 + np.e)
    member = rng.random(2000) < 0.5
    scores = np.where(truth, member, ~member) + 1e-3 * rng.random(2000)   # the reported bit, ties broken at random
    audit = one_run_epsilon(scores, member, k_pos=1000, k_neg=1000, delta=1e-5)
    assert 0.5 < audit["epsilon_lower_bound"] <= 1.0          # close to, and never above, the true epsilon
